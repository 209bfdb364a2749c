/*
 * data check: the data as serve or run would load it, printed, without the
 * partner. Flags and printing only: the loading, the checks and the audit
 * line are the party layer's (cr_party_check_data). Never prints a key:
 * only masked samples (first and last character) and counts.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"

#define MAX_PARAMS 64

static void data_help(void) {
  printf("Usage: cleanroom data check --template T --identity DIR --data SOURCE\n"
         "                            [--data-query SQL] [--delimiter D]\n"
         "                            [--query NAME [--param NAME=VALUE]...]\n"
         "                            [--max-reject-ratio R] [--samples N] [--audit FILE]\n"
         "                            [--json] [--config FILE]\n"
         "                            [--memory MiB] [--work-dir DIR] [--spill-max SIZE]\n\n"
         "A dry run of this node's data: loads it exactly as serve and run would for the\n"
         "template (and for --query: its filter, parameters and group_by), then prints\n"
         "rows read, accepted and rejected per reason with the first line (or row)\n"
         "numbers, distinct keys, what the query's filter drops, the size per group\n"
         "(those below min_count merged into (other), as a session does), a few\n"
         "normalized keys masked to their first and last character (so you can see\n"
         "normalization worked; never a whole key), and whether serve and run would\n"
         "take the data. No network: nothing is sent to the partner. The check reads\n"
         "the data, so it is recorded in the audit log as data_checked (not a session;\n"
         "it counts against no query's runs). While a node holds the audit log, give\n"
         "the check its own with --audit FILE. --config reads a serve or run config\n"
         "file (its network keys are skipped). The data loads within --memory as serve's\n"
         "and run's would (spilling to --work-dir past it).\n\n%s\n%s\n"
         "Exit: 0 the data would be taken; 3 it would be refused for its rows (too many\n"
         "rejected, none valid) or cannot be read; 4 refused by the template's limits\n"
         "(set size, expiry, a filter that keeps nothing); 2 usage; 7 local storage: the\n"
         "work directory is full or --spill-max reached, or the audit log cannot be\n"
         "written.\n\n"
         "Example:\n"
         "  cleanroom data check --template template.json --identity ./identity \\\n"
         "      --data customers.csv\n"
         "  cleanroom data check --template template.json --identity ./identity \\\n"
         "      --data postgresql://cleanroom@db.internal/crm \\\n"
         "      --data-query 'SELECT email, segment FROM customers' --query overlap_by_segment\n",
         CR_CLI_DATA_SOURCES_HELP, CR_CLI_MEMORY_HELP);
}

static const char *delim_name(char d) {
  switch (d) {
  case ',':
    return "','";
  case ';':
    return "';'";
  case '\t':
    return "tab";
  case '|':
    return "'|'";
  default:
    return "none";
  }
}

/*
 * The groups as a session sends them: a label with fewer keys than the
 * query's min_count is merged into "(other)" (its name never leaves the
 * node; a label that is itself a key, group_by on a key column, is no
 * exception), so the check lists what the partner's cells can name and
 * prints no rare value of the data. *merged_labels counts the labels
 * merged, *merged_size their keys.
 */
static int label_shown(const cr_party_data_check *c, size_t i) {
  const cr_dataset *d = c->data;
  return d->label_sizes[i] >= c->query->min_count &&
         strcmp(d->label_names[i], CR_SESSION_OTHER_LABEL) != 0;
}

static void merged_labels(const cr_party_data_check *c, size_t *labels, uint64_t *size) {
  const cr_dataset *d = c->data;
  *labels = 0;
  *size = 0;
  for (size_t i = 0; i < d->nlabels; i++) {
    if (label_shown(c, i))
      continue;
    (*labels)++;
    *size += d->label_sizes[i];
  }
}

static void print_human(const cr_party *party, const cr_party_data_check *c) {
  const cr_dataset *d = c->data;
  const cr_template *t = cr_party_template(party);
  cr_role role = cr_party_role(party);
  char hex[CR_SHA256_HEX_BYTES];
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  printf("data check: the %s (%s), template \"%s\" (%.16s...)\n", cr_role_name(role),
         cr_cli_safe(t->parties[role].org), cr_cli_safe(t->name), hex);
  cr_hex_encode(hex, d->file_sha256, CR_SHA256_BYTES);
  printf("  source:          %s (%s", cr_cli_safe(d->path), cr_source_kind_name(d->source_kind));
  if (d->source_kind == CR_SOURCE_CSV)
    printf(", delimiter %s", delim_name(d->delimiter));
  printf(", sha256 %.16s...)\n", hex);
  if (d->data_query)
    printf("  data query:      %s\n", cr_cli_safe(d->data_query));
  printf("  columns:        ");
  for (size_t i = 0; i < d->ncolumns; i++)
    printf("%s%s", i ? ", " : " ", cr_cli_safe(d->columns[i][0] ? d->columns[i] : "(unnamed)"));
  printf("\n");
  const char *unit = d->pos_unit ? d->pos_unit : "line";
  printf("  rows read:       %llu\n", (unsigned long long)d->rows_read);
  if (c->query != NULL) {
    const char *w = c->query->where[role];
    if (w != NULL)
      printf("  filtered out:    %llu by query \"%s\"'s filter (%s), %llu kept\n",
             (unsigned long long)d->rows_filtered, c->query->name, cr_cli_safe(w),
             (unsigned long long)(d->rows_read - d->rows_filtered));
    else
      printf("  filtered out:    none (query \"%s\" has no filter for the %s)\n", c->query->name,
             cr_role_name(role));
  }
  printf("  accepted:        %llu\n", (unsigned long long)d->rows_accepted);
  printf("  rejected:        %llu\n", (unsigned long long)d->rows_rejected);
  for (int r = 0; r < CR_REJECT_COUNT; r++) {
    if (d->rejected[r] == 0)
      continue;
    printf("    %-20s %llu (%s); first at %s", cr_reject_key((cr_reject_reason)r),
           (unsigned long long)d->rejected[r], cr_reject_text((cr_reject_reason)r), unit);
    uint64_t n =
        d->rejected[r] < CR_DATASET_MAX_REASON_LINES ? d->rejected[r] : CR_DATASET_MAX_REASON_LINES;
    for (uint64_t i = 0; i < n; i++)
      printf("%s %llu", i ? "," : "", (unsigned long long)d->reason_lines[r][i]);
    printf("%s\n", d->rejected[r] > n ? ", ..." : "");
  }
  printf("  distinct keys:   %zu (%llu duplicate row%s)\n", d->n, (unsigned long long)d->duplicates,
         d->duplicates == 1 ? "" : "s");
  if (d->nkeys > 1) {
    /* Several match keys: what the set is made of, and each key's skips. */
    if (cr_dataset_width(d) > 1)
      printf("  records:         %zu (%llu row%s merged into another row's record by a shared "
             "key value; %llu value%s superseded)\n",
             d->n, (unsigned long long)d->rows_merged, d->rows_merged == 1 ? "" : "s",
             (unsigned long long)d->values_unsent, d->values_unsent == 1 ? "" : "s");
    printf("  by match key:    (a row is accepted when one of its keys is valid)\n");
    for (size_t k = 0; k < d->nkeys && k < cr_template_nkeys(t); k++)
      printf("    %-20s %llu empty, %llu invalid (skipped on accepted rows)\n",
             cr_cli_safe(t->match_keys[k].name), (unsigned long long)d->key_missing[k],
             (unsigned long long)d->key_invalid[k]);
  }
  if (c->announced != UINT64_MAX)
    printf("  announced size:  %llu (the size bucket Hello carries; the partner learns this,\n"
           "                   not the exact count)\n",
           (unsigned long long)c->announced);
  if (d->nlabels > 0) {
    size_t nm;
    uint64_t msize;
    merged_labels(c, &nm, &msize);
    printf("  groups (%s):\n", cr_cli_safe(c->query->group_by[role]));
    for (size_t i = 0; i < d->nlabels; i++)
      if (label_shown(c, i))
        printf("    %-24s %llu\n", cr_cli_safe(d->label_names[i]),
               (unsigned long long)d->label_sizes[i]);
    if (nm > 0)
      printf("    %-24s %llu (%zu label%s with fewer keys each than min_count %llu, merged; "
             "their names stay on this node)\n",
             CR_SESSION_OTHER_LABEL, (unsigned long long)msize, nm, nm == 1 ? "" : "s",
             (unsigned long long)c->query->min_count);
    if (d->label_conflicts)
      printf("    (%llu key%s met with more than one label: the first row's counts)\n",
             (unsigned long long)d->label_conflicts, d->label_conflicts == 1 ? "" : "s");
  }
  if (d->nsamples > 0) {
    printf("  sample keys (normalized, masked):\n");
    for (size_t i = 0; i < d->nsamples; i++)
      printf("    %s %-8llu %s\n", unit, (unsigned long long)d->sample_pos[i],
             cr_cli_safe(d->samples[i]));
  }
  if (c->verdict == 0)
    printf("verdict: OK: serve and run would take this data\n");
  else
    printf("verdict: REFUSED: %s\n", cr_cli_safe(c->verdict_msg));
}

static json_t *lines_json(const uint64_t *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(a, json_integer((json_int_t)v[i]));
  return a;
}

static void print_json(const cr_party *party, const cr_party_data_check *c) {
  const cr_dataset *d = c->data;
  const cr_template *t = cr_party_template(party);
  cr_role role = cr_party_role(party);
  char hex[CR_SHA256_HEX_BYTES];
  json_t *o = json_object();
  json_object_set_new(o, "role", json_string(cr_role_name(role)));
  cr_hex_encode(hex, t->sha256, CR_SHA256_BYTES);
  json_object_set_new(o, "template_sha256", json_string(hex));
  json_t *src = json_object();
  json_object_set_new(src, "data", cr_cli_jtext(d->path));
  json_object_set_new(src, "kind", json_string(cr_source_kind_name(d->source_kind)));
  if (d->source_kind == CR_SOURCE_CSV) {
    char dl[2] = {d->delimiter, '\0'};
    json_object_set_new(src, "delimiter", json_string(dl));
  }
  if (d->data_query)
    json_object_set_new(src, "data_query", cr_cli_jtext(d->data_query));
  cr_hex_encode(hex, d->file_sha256, CR_SHA256_BYTES);
  json_object_set_new(src, "sha256", json_string(hex));
  json_t *cols = json_array();
  for (size_t i = 0; i < d->ncolumns; i++)
    json_array_append_new(cols, cr_cli_jtext(d->columns[i]));
  json_object_set_new(src, "columns", cols);
  json_object_set_new(o, "source", src);
  json_object_set_new(o, "unit", json_string(d->pos_unit ? d->pos_unit : "line"));
  json_object_set_new(o, "query", c->query ? cr_cli_jtext(c->query->name) : json_null());
  json_object_set_new(o, "rows_read", json_integer((json_int_t)d->rows_read));
  json_object_set_new(o, "rows_filtered", json_integer((json_int_t)d->rows_filtered));
  json_object_set_new(o, "rows_accepted", json_integer((json_int_t)d->rows_accepted));
  json_object_set_new(o, "rows_rejected", json_integer((json_int_t)d->rows_rejected));
  json_t *rej = json_object();
  for (int r = 0; r < CR_REJECT_COUNT; r++) {
    if (d->rejected[r] == 0)
      continue;
    json_t *x = json_object();
    json_object_set_new(x, "count", json_integer((json_int_t)d->rejected[r]));
    size_t n = d->rejected[r] < CR_DATASET_MAX_REASON_LINES ? (size_t)d->rejected[r]
                                                            : CR_DATASET_MAX_REASON_LINES;
    json_object_set_new(x, "first", lines_json(d->reason_lines[r], n));
    json_object_set_new(rej, cr_reject_key((cr_reject_reason)r), x);
  }
  json_object_set_new(o, "rejected", rej);
  json_object_set_new(o, "distinct_keys", json_integer((json_int_t)d->n));
  json_object_set_new(o, "duplicates", json_integer((json_int_t)d->duplicates));
  if (d->nkeys > 1) {
    if (cr_dataset_width(d) > 1) {
      json_object_set_new(o, "records", json_integer((json_int_t)d->n));
      json_object_set_new(o, "rows_merged", json_integer((json_int_t)d->rows_merged));
      json_object_set_new(o, "values_unsent", json_integer((json_int_t)d->values_unsent));
    }
    json_t *keys = json_object();
    for (size_t k = 0; k < d->nkeys && k < cr_template_nkeys(t); k++) {
      json_t *kv = json_object();
      json_object_set_new(kv, "missing", json_integer((json_int_t)d->key_missing[k]));
      json_object_set_new(kv, "invalid", json_integer((json_int_t)d->key_invalid[k]));
      json_object_set_new(keys, t->match_keys[k].name, kv);
    }
    json_object_set_new(o, "keys", keys);
  }
  json_object_set_new(o, "announced_size",
                      c->announced == UINT64_MAX ? json_null()
                                                 : json_integer((json_int_t)c->announced));
  if (d->nlabels > 0) {
    size_t nm;
    uint64_t msize;
    merged_labels(c, &nm, &msize);
    json_t *g = json_array();
    for (size_t i = 0; i < d->nlabels; i++) {
      if (!label_shown(c, i))
        continue;
      json_t *x = json_object();
      json_object_set_new(x, "label", cr_cli_jtext(d->label_names[i]));
      json_object_set_new(x, "size", json_integer((json_int_t)d->label_sizes[i]));
      json_array_append_new(g, x);
    }
    if (nm > 0) {
      json_t *x = json_object();
      json_object_set_new(x, "label", json_string(CR_SESSION_OTHER_LABEL));
      json_object_set_new(x, "size", json_integer((json_int_t)msize));
      json_object_set_new(x, "labels_merged", json_integer((json_int_t)nm));
      json_array_append_new(g, x);
    }
    json_object_set_new(o, "groups", g);
  }
  json_t *samples = json_array();
  for (size_t i = 0; i < d->nsamples; i++) {
    json_t *x = json_object();
    json_object_set_new(x, d->pos_unit ? d->pos_unit : "line",
                        json_integer((json_int_t)d->sample_pos[i]));
    json_object_set_new(x, "masked_key", cr_cli_jtext(d->samples[i]));
    json_array_append_new(samples, x);
  }
  json_object_set_new(o, "samples", samples);
  json_object_set_new(o, "verdict", json_string(c->verdict ? cr_err_name(c->verdict) : "ok"));
  if (c->verdict)
    json_object_set_new(o, "message", cr_cli_jtext(c->verdict_msg));
  /* Not about the data, but serve and run would stop on it: the text says
   * it on stderr, a script reads it here. */
  const char *note = cr_party_note(party, CR_PARTY_NOTE_SIGNATURES);
  if (note[0])
    json_object_set_new(o, "signatures_note", cr_cli_jtext(note));
  cr_cli_json_print(o);
}

/* --json: a check that could not run still prints one object, so a script
 * reads the reason from standard output as it reads a verdict. */
static void print_json_error(int rc, const cr_error *err, int code) {
  json_t *o = json_object();
  json_object_set_new(o, "verdict", json_string(cr_err_name(rc)));
  json_object_set_new(o, "message", cr_cli_jtext(cr_error_message(err, rc)));
  json_object_set_new(o, "exit", json_integer(code));
  cr_cli_json_print(o);
}

static int data_check(int argc, char **argv) {
  static const char *cmd = "data check";
  static const struct option opts[] = {{"template", required_argument, NULL, 't'},
                                       {"identity", required_argument, NULL, 'i'},
                                       {"data", required_argument, NULL, 'd'},
                                       {"data-query", required_argument, NULL, 'D'},
                                       {"delimiter", required_argument, NULL, 'L'},
                                       {"query", required_argument, NULL, 'q'},
                                       {"param", required_argument, NULL, 'P'},
                                       {"max-reject-ratio", required_argument, NULL, 'r'},
                                       {"samples", required_argument, NULL, 'S'},
                                       {"audit", required_argument, NULL, 'A'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"memory", required_argument, NULL, CR_CLI_OPT_MEMORY},
                                       {"work-dir", required_argument, NULL, CR_CLI_OPT_WORK_DIR},
                                       {"spill-max", required_argument, NULL, CR_CLI_OPT_SPILL_MAX},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *tpath = NULL, *identity = NULL, *data = NULL, *data_query = NULL, *query = NULL;
  const char *audit = NULL;
  const char *params[MAX_PARAMS];
  size_t nparams = 0;
  char delimiter = 0;
  double ratio = 0.05;
  unsigned long samples = 5;
  int json = 0, c;
  cr_cli_memory_opts mem = {0};
  if (cr_cli_config_apply(cmd, &argc, &argv) != 0)
    return EXIT_USAGE;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end = NULL;
    switch (c) {
    case 't':
      tpath = optarg;
      break;
    case 'i':
      identity = optarg;
      break;
    case 'd':
      data = optarg;
      break;
    case 'D':
      data_query = optarg;
      break;
    case 'L':
      if (cr_cli_parse_delimiter(cmd, optarg, &delimiter) != 0)
        return EXIT_USAGE;
      break;
    case 'q':
      query = optarg;
      break;
    case 'P':
      if (strchr(optarg, '=') == NULL || optarg[0] == '=' || nparams == MAX_PARAMS) {
        cr_cli_errorf(cmd, "--param takes NAME=VALUE (at most %d), got \"%s\"", MAX_PARAMS,
                      cr_cli_safe(optarg));
        return EXIT_USAGE;
      }
      params[nparams++] = optarg;
      break;
    case 'r':
      errno = 0;
      ratio = strtod(optarg, &end);
      if (errno || end == optarg || *end || !(ratio >= 0 && ratio <= 1)) {
        cr_cli_errorf(cmd, "--max-reject-ratio takes a number from 0 to 1, got \"%s\"",
                      cr_cli_safe(optarg));
        return EXIT_USAGE;
      }
      break;
    case 'S':
      if (cr_cli_parse_uint(cmd, "--samples", "a number from", optarg, 0, CR_DATASET_MAX_SAMPLES,
                            &samples) != 0)
        return EXIT_USAGE;
      break;
    case 'A':
      audit = optarg;
      break;
    case 'j':
      json = 1;
      break;
    case CR_CLI_OPT_MEMORY:
    case CR_CLI_OPT_WORK_DIR:
    case CR_CLI_OPT_SPILL_MAX:
      if (cr_cli_parse_memory_opt(cmd, c, optarg, &mem) != 0)
        return EXIT_USAGE;
      break;
    case 'h':
      data_help();
      return EXIT_OK;
    default:
      fprintf(stderr, "Run `cleanroom data check --help` for the options.\n");
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    cr_cli_errorf(cmd, "unexpected argument \"%s\"", cr_cli_safe(argv[optind]));
    return EXIT_USAGE;
  }
  const char *missing = !tpath      ? "--template FILE"
                        : !identity ? "--identity DIR"
                        : !data     ? "--data SOURCE"
                                    : NULL;
  if (missing) {
    cr_cli_errorf(cmd, "%s is required; see `cleanroom data check --help`", missing);
    return EXIT_USAGE;
  }
  if (nparams > 0 && query == NULL) {
    cr_cli_errorf(cmd, "--param goes with --query NAME");
    return EXIT_USAGE;
  }
  cr_error err;
  cr_error_clear(&err);
  cr_source_options so = {data_query, delimiter};
  int rc = cr_source_validate(data, &so, &err);
  if (rc != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    if (json)
      print_json_error(rc, &err, cr_cli_exit_code(rc, 0));
    return cr_cli_exit_code(rc, 0);
  }

  cr_party *party = NULL;
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_CHECK;
  pc.template_path = tpath;
  pc.identity_dir = identity;
  pc.audit_path = audit;
  pc.software = CR_SOFTWARE;
  pc.memory_bytes = mem.memory_bytes;
  pc.work_dir = mem.work_dir;
  pc.spill_max_bytes = mem.spill_max_bytes;
  if ((rc = cr_party_open(&party, &pc, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    if (json)
      print_json_error(rc, &err, cr_cli_exit_code(rc, 0));
    return cr_cli_exit_code(rc, 0);
  }
  {
    const char *note = cr_party_note(party, CR_PARTY_NOTE_SPILL);
    if (note[0])
      fprintf(stderr, "cleanroom data check: work directory: %s\n", cr_cli_safe(note));
  }
  cr_party_check_config cc = {0};
  cc.data = data;
  cc.data_query = data_query;
  cc.delimiter = delimiter;
  cc.query = query;
  cc.params = params;
  cc.nparams = nparams;
  /* 0 means no rejected row at all; the party's 0 is its default. */
  cc.max_reject_ratio = ratio > 0 ? ratio : -1.0;
  cc.samples = samples;
  cr_party_data_check res;
  int code;
  if (!json)
    fprintf(stderr, "cleanroom data check: reading %s ...\n", cr_cli_safe(data));
  if ((rc = cr_party_check_data(party, &cc, &res, &err)) != 0) {
    cr_cli_errorf(cmd, "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    if (json)
      print_json_error(rc, &err, code);
  } else {
    if (json)
      print_json(party, &res);
    else
      print_human(party, &res);
    const char *note = cr_party_note(party, CR_PARTY_NOTE_SIGNATURES);
    if (note[0])
      fprintf(stderr, "cleanroom data check: note: serve and run would refuse the template: %s\n",
              cr_cli_safe(note));
    code = res.verdict ? cr_cli_exit_code(res.verdict, 0) : EXIT_OK;
    cr_party_check_free(&res);
  }
  cr_party_close(party);
  return code;
}

int cr_cli_data(int argc, char **argv) {
  const char *sub = argc >= 2 ? argv[1] : NULL;
  if (sub != NULL && strcmp(sub, "check") == 0)
    return data_check(argc - 1, argv + 1);
  if (sub != NULL && (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)) {
    data_help();
    return EXIT_OK;
  }
  if (sub != NULL)
    fprintf(stderr, "cleanroom data: unknown subcommand \"%s\"\n\n", cr_cli_safe(sub));
  fprintf(stderr, "Usage: cleanroom data check --template T --identity DIR --data SOURCE ...\n"
                  "Run `cleanroom data check --help` for the options.\n");
  return EXIT_USAGE;
}
