/*
 * Several match keys in the dataset layer: a row's keys normalized one by
 * one (empty or invalid keys skipped and counted, a row with none rejected),
 * the counted side's rows merged into records through shared values, the
 * other side's values flat, labels per record, and the members file with
 * the keys each record matched on. The fixture and its answers are in
 * tests/support/multikey.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sqlite3.h>

#include "cleanroom/dataset.h"
#include "support/multikey.h"

static long find(const cr_dataset *d, size_t key, const char *v) {
  return cr_dataset_find_value(d, key, (const uint8_t *)v, strlen(v));
}

static void test_counted_side_records(void **state) {
  (void)state;
  cr_template *t = mk_template("consumer", 1);
  cr_dataset *d = mk_load(t, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, NULL);
  assert_int_equal(d->nkeys, 2);
  assert_int_equal(cr_dataset_width(d), 2);
  assert_int_equal(d->rows_read, 14);
  assert_int_equal(d->rows_accepted, 12);
  assert_int_equal(d->rows_rejected, 2);
  assert_int_equal(d->rejected[CR_REJECT_EMAIL], 1);   /* c9: its first invalid key */
  assert_int_equal(d->rejected[CR_REJECT_MISSING], 1); /* c10: every key empty */
  /* c8 joins c1 (e-mail), c13 joins c12 (phone), c14 joins c13 (e-mail). */
  assert_int_equal(d->n, 9);
  assert_int_equal(d->rows_merged, 3);
  /* Superseded: c8's phone, h@x.example and c14's phone. */
  assert_int_equal(d->values_unsent, 3);
  assert_int_equal(d->key_missing[0], 1); /* c3's e-mail */
  assert_int_equal(d->key_missing[1], 1); /* c2's phone */
  assert_int_equal(d->key_invalid[0], 1); /* c11's e-mail; c9 was rejected */
  assert_int_equal(d->key_invalid[1], 0);

  /* Values: every distinct (key, value), e-mails first; records in the
   * file order of their first rows. */
  assert_int_equal(d->nvalues, 8 + 10); /* 8 e-mails, 10 phones */
  long a = find(d, 0, "a@x.example"), p01 = find(d, 1, "+15550000001");
  long p08 = find(d, 1, "+15550000008"), h = find(d, 0, "h@x.example");
  assert_true(a >= 0 && p01 >= 0 && p08 >= 0 && h >= 0);
  assert_int_equal(find(d, 1, "a@x.example"), -1); /* an e-mail is no phone */
  assert_int_equal(d->value_key[a], 0);
  assert_int_equal(d->value_key[p01], 1);
  assert_int_equal(d->slots[0], (uint32_t)a);
  assert_int_equal(d->slots[1], (uint32_t)p01);
  assert_int_equal(d->value_record[p08], 0); /* c8's phone: record 0, not sent */
  long b = find(d, 0, "b@x.example");        /* c2: e-mail lowercased, no phone */
  assert_int_equal(d->slots[2], (uint32_t)b);
  assert_int_equal(d->slots[3], CR_DATASET_NO_VALUE);
  long p03 = find(d, 1, "+15550000003"); /* c3: phone normalized, no e-mail */
  assert_int_equal(d->slots[4], CR_DATASET_NO_VALUE);
  assert_int_equal(d->slots[5], (uint32_t)p03);
  assert_int_equal(d->slots[7 * 2], CR_DATASET_NO_VALUE); /* c11: invalid e-mail skipped */
  long g = find(d, 0, "g@x.example"), p12 = find(d, 1, "+15550000012");
  assert_int_equal(d->slots[8 * 2], (uint32_t)g);
  assert_int_equal(d->slots[8 * 2 + 1], (uint32_t)p12);
  assert_int_equal(d->value_record[h], 8);
  /* Each value is sent by at most one record. */
  for (size_t i = 0; i < d->n * 2; i++)
    for (size_t j = i + 1; j < d->n * 2; j++)
      if (d->slots[i] != CR_DATASET_NO_VALUE)
        assert_int_not_equal(d->slots[i], d->slots[j]);
  mk_free(d);
  cr_template_free(t);
}

static void test_labels_per_record(void **state) {
  (void)state;
  cr_template *t = mk_template("consumer", 1);
  cr_dataset *d = mk_load(t, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, "seg");
  assert_int_equal(d->n, 9);
  assert_int_equal(d->nlabels, 2);
  assert_string_equal(d->label_names[0], "s1");
  /* A record takes its first row's label: R1 (c1 s1, c8 s2) and R12 (c14
   * s2) carry rows of two labels. */
  assert_int_equal(d->labels[0], 0);
  assert_int_equal(d->labels[8], 0);
  assert_int_equal(d->label_conflicts, 2);
  assert_int_equal(d->label_sizes[0], 5); /* R1 c2 c5 c7 R12 */
  assert_int_equal(d->label_sizes[1], 4); /* c3 c4 c6 c11 */
  mk_free(d);

  /* The side that is not counted: its values, each with its first row's
   * label. */
  d = mk_load(t, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, "tier");
  assert_int_equal(cr_dataset_width(d), 1);
  assert_null(d->slots);
  assert_int_equal(d->n, 12);
  assert_int_equal(d->nvalues, 12);
  assert_int_equal(d->duplicates, 0);
  for (size_t v = 0; v < d->n; v++)
    assert_int_equal(d->value_key[v], v < 6 ? 0 : 1); /* 6 e-mails, 6 phones */
  long p5 = find(d, 1, "+15550000099");
  assert_true(p5 >= 0);
  assert_string_equal(d->label_names[d->labels[p5]], "silver");
  assert_int_equal(d->label_conflicts, 0);
  mk_free(d);
  cr_template_free(t);
}

static void test_flat_side_duplicates(void **state) {
  (void)state;
  /* With count_of provider the consumer is the flat side: every distinct
   * value is sent, superseded or not, shared values once. */
  cr_template *t = mk_template("provider", 1);
  cr_dataset *d = mk_load(t, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, NULL);
  assert_int_equal(cr_dataset_width(d), 1);
  assert_int_equal(d->n, 8 + 10);
  assert_true(find(d, 0, "h@x.example") >= 0);
  assert_true(find(d, 1, "+15550000008") >= 0);
  /* 12 rows, 21 keys present, 18 distinct. */
  assert_int_equal(d->duplicates, 3);
  mk_free(d);
  d = mk_load(t, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, NULL);
  assert_int_equal(cr_dataset_width(d), 2);
  assert_int_equal(d->n, 8);
  assert_int_equal(d->rows_merged, 0);
  mk_free(d);
  cr_template_free(t);
}

static void test_all_keys_rejected(void **state) {
  (void)state;
  cr_template *t = mk_template("consumer", 1);
  char *path = mk_write_temp("user,email,phone,seg\nu1,,,s1\nu2,x,y,s1\n");
  cr_dataset *d = NULL;
  cr_error err;
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 1.0;
  assert_int_equal(cr_dataset_load(&d, path, t, CR_ROLE_CONSUMER, &opt, &err), CR_EDATA);
  assert_null(d);
  assert_non_null(strstr(err.msg, "no row has a valid match key"));
  assert_non_null(strstr(err.msg, "missing_value 1"));
  assert_non_null(strstr(err.msg, "invalid_email 1"));
  assert_null(strstr(err.msg, "x,y")); /* never a cell */
  unlink(path);
  free(path);
  cr_template_free(t);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void test_members_matched_on(void **state) {
  (void)state;
  cr_template *t = mk_template("consumer", 1);
  cr_dataset *d = mk_load(t, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, NULL);
  uint8_t matched[2] = {0}, on[9] = {0};
  matched[0] = 1u << 0 | 1u << 2; /* R1 on both keys, c3 on phone */
  on[0] = 3;
  on[2] = 2;
  char out[] = "/tmp/cr-members-XXXXXX";
  int fd = mkstemp(out);
  assert_true(fd >= 0);
  close(fd);
  cr_atomic_file f;
  cr_error err;
  assert_int_equal(cr_atomic_open(&f, out, 0600, &err), 0);
  const char *cols[] = {"user"};
  uint64_t rows = 0;
  assert_int_equal(
      cr_dataset_write_matches(d, t, matched, on, cols, 1, NULL, NULL, &f, &rows, NULL, &err), 0);
  assert_int_equal(cr_atomic_commit(&f, &err), 0);
  assert_int_equal(rows, 3);
  /* Every row of a matched record, in file order. */
  assert_string_equal(slurp(out), "user,matched_on\r\n"
                                  "c1,email+phone\r\n"
                                  "c3,phone\r\n"
                                  "c8,email+phone\r\n");
  /* R12: rows c13 and c14 hold only superseded values, still its rows. */
  memset(matched, 0, sizeof matched);
  memset(on, 0, sizeof on);
  matched[1] = 1; /* record 8 */
  on[8] = 1;
  assert_int_equal(cr_atomic_open(&f, out, 0600, &err), 0);
  assert_int_equal(
      cr_dataset_write_matches(d, t, matched, on, cols, 1, NULL, NULL, &f, &rows, NULL, &err), 0);
  assert_int_equal(cr_atomic_commit(&f, &err), 0);
  assert_string_equal(slurp(out), "user,matched_on\r\nc12,email\r\nc13,email\r\nc14,email\r\n");
  unlink(out);
  mk_free(d);
  cr_template_free(t);
}

/*
 * Several match keys whose columns are named per party (issue 16 with issue
 * 19): the consumer calls them Mail and Tel, the provider email and phone.
 * The consumer's rows, from a ';'-separated CSV (the separator detected)
 * and from a SQLite data query, give the same records, values and per-key
 * counts as the fixture's shared-name CSV; members from the SQLite source
 * writes every row of a matched record with its matched_on.
 */
static cr_template *party_columns_template(void) {
  char json[4096];
  snprintf(json, sizeof json,
           "{\"format\": \"cleanroom-template/1\", \"name\": \"multikey per party\","
           " \"parties\": {\"provider\": {\"org\": \"P\", \"cert_sha256\": \"%064d\"},"
           "  \"consumer\": {\"org\": \"C\", \"cert_sha256\": \"%064d\"}},"
           " \"suite\": \"ristretto255\","
           " \"match_keys\": [{\"name\": \"email\", \"columns\": {\"provider\": [\"email\"],"
           "   \"consumer\": [\"Mail\"]}, \"normalize\": [\"email\"]},"
           "  {\"name\": \"phone\", \"columns\": {\"provider\": [\"phone\"],"
           "   \"consumer\": [\"Tel\"]}, \"normalize\": [\"phone\"]}],"
           " \"match\": \"any\", \"count_of\": \"consumer\","
           " \"data\": {\"provider\": {\"required_columns\": [\"tier\"]},"
           "  \"consumer\": {\"required_columns\": [\"user\", \"seg\"]}},"
           " \"queries\": {"
           "  \"overlap\": {\"kind\": \"count\", \"run_by\": [\"consumer\"],"
           "   \"results_to\": [\"consumer\"], \"min_count\": 1},"
           "  \"mine\": {\"kind\": \"members\", \"run_by\": [\"consumer\"],"
           "   \"results_to\": [\"consumer\"], \"min_count\": 1}},"
           " \"limits\": {\"size_buckets\": {\"edges\": [4, 8, 12, 16, 24, 32]}}}",
           1, 2);
  cr_template *t = NULL;
  cr_error err;
  if (cr_template_parse(&t, json, strlen(json), "perparty.json", &err) != 0)
    fail_msg("%s", err.msg);
  return t;
}

/* Two loads of the same rows hold the same set, value for value. */
static void assert_same_set(const cr_dataset *a, const cr_dataset *b) {
  assert_int_equal(a->nkeys, b->nkeys);
  assert_int_equal(cr_dataset_width(a), cr_dataset_width(b));
  assert_int_equal(a->n, b->n);
  assert_int_equal(a->nvalues, b->nvalues);
  assert_int_equal(a->rows_read, b->rows_read);
  assert_int_equal(a->rows_accepted, b->rows_accepted);
  assert_int_equal(a->rows_rejected, b->rows_rejected);
  assert_int_equal(a->rows_merged, b->rows_merged);
  assert_int_equal(a->values_unsent, b->values_unsent);
  for (int r = 0; r < CR_REJECT_COUNT; r++)
    assert_int_equal(a->rejected[r], b->rejected[r]);
  for (size_t k = 0; k < a->nkeys; k++) {
    assert_int_equal(a->key_missing[k], b->key_missing[k]);
    assert_int_equal(a->key_invalid[k], b->key_invalid[k]);
  }
  assert_memory_equal(a->off, b->off, (a->nvalues + 1) * sizeof *a->off);
  assert_memory_equal(a->bytes, b->bytes, a->off[a->nvalues]);
  assert_memory_equal(a->value_key, b->value_key, a->nvalues);
  if (cr_dataset_width(a) > 1) {
    assert_memory_equal(a->slots, b->slots, a->n * a->width * sizeof *a->slots);
    assert_memory_equal(a->value_record, b->value_record, a->nvalues * sizeof *a->value_record);
  }
}

static void sql_exec(sqlite3 *db, const char *q) {
  char *msg = NULL;
  if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
    fail_msg("sqlite: %s: %s", q, msg ? msg : "?");
}

static void test_party_columns_any_source(void **state) {
  (void)state;
  cr_template *shared = mk_template("consumer", 1);
  cr_template *t = party_columns_template();
  cr_dataset *want = mk_load(shared, CR_ROLE_CONSUMER, MK_CONSUMER_CSV, NULL);
  assert_int_equal(want->n, 9);

  /* The consumer's CSV, ';'-separated, its key columns under its names in
   * other case and spacing (names match case-insensitively, trimmed). */
  char csv[sizeof MK_CONSUMER_CSV + 16];
  const char *body = strchr(MK_CONSUMER_CSV, '\n') + 1;
  snprintf(csv, sizeof csv, "user; MAIL ;tel;seg\n%s", body);
  for (char *c = csv; *c; c++)
    if (*c == ',')
      *c = ';';
  cr_dataset *semi = mk_load(t, CR_ROLE_CONSUMER, csv, NULL);
  assert_int_equal(semi->delimiter, ';');
  assert_same_set(want, semi);
  assert_int_equal(semi->rows_merged, 3);
  assert_int_equal(semi->key_invalid[0], 1); /* c11's e-mail, counted under key "email" */

  /* The consumer's names are its own: its CSV with the provider's names is
   * refused, naming the column it lacks. */
  char *path = mk_write_temp(MK_CONSUMER_CSV);
  cr_dataset *d = NULL;
  cr_error err;
  cr_error_clear(&err);
  assert_int_equal(cr_dataset_load(&d, path, t, CR_ROLE_CONSUMER, NULL, &err), CR_EDATA);
  assert_non_null(strstr(err.msg, "\"Mail\""));
  assert_null(d);
  unlink(path);
  free(path);

  /* The same rows in SQLite (empty cells as NULL), read by a data query. */
  char db_path[] = "/tmp/cr-multikey-db-XXXXXX";
  int fd = mkstemp(db_path);
  assert_true(fd >= 0);
  close(fd);
  unlink(db_path);
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
  sql_exec(db, "CREATE TABLE people (id INTEGER PRIMARY KEY, user TEXT, mail TEXT, tel TEXT, "
               "seg TEXT)");
  const char *line = body;
  while (*line) {
    const char *end = strchr(line, '\n');
    char row[128], *f[4];
    snprintf(row, sizeof row, "%.*s", (int)(end - line), line);
    f[0] = row;
    for (int i = 1; i < 4; i++) {
      f[i] = strchr(f[i - 1], ',');
      *f[i]++ = '\0';
    }
    char *q = sqlite3_mprintf("INSERT INTO people (user, mail, tel, seg) VALUES (%Q, %Q, %Q, %Q)",
                              f[0], *f[1] ? f[1] : NULL, *f[2] ? f[2] : NULL, f[3]);
    sql_exec(db, q);
    sqlite3_free(q);
    line = end + 1;
  }
  sqlite3_close(db);
  char data[128];
  snprintf(data, sizeof data, "sqlite:%s", db_path);
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 0.5;
  opt.data_query = "SELECT user, mail AS Mail, tel AS Tel, seg FROM people ORDER BY id";
  cr_error_clear(&err);
  if (cr_dataset_load(&d, data, t, CR_ROLE_CONSUMER, &opt, &err) != 0)
    fail_msg("%s", err.msg);
  assert_int_equal(d->source_kind, CR_SOURCE_SQLITE);
  assert_same_set(want, d);

  /* members from the database: every row of R1 (both keys) and c3 (phone),
   * with the keys they matched on, as from a CSV. */
  uint8_t matched[2] = {0}, on[9] = {0};
  matched[0] = 1u << 0 | 1u << 2;
  on[0] = 3;
  on[2] = 2;
  char out[] = "/tmp/cr-members-XXXXXX";
  fd = mkstemp(out);
  assert_true(fd >= 0);
  close(fd);
  cr_atomic_file f;
  assert_int_equal(cr_atomic_open(&f, out, 0600, &err), 0);
  const char *cols[] = {"user"};
  uint64_t rows = 0;
  assert_int_equal(
      cr_dataset_write_matches(d, t, matched, on, cols, 1, NULL, NULL, &f, &rows, NULL, &err), 0);
  assert_int_equal(cr_atomic_commit(&f, &err), 0);
  assert_int_equal(rows, 3);
  assert_string_equal(slurp(out), "user,matched_on\r\n"
                                  "c1,email+phone\r\n"
                                  "c3,phone\r\n"
                                  "c8,email+phone\r\n");
  /* All columns: the query's own, then matched_on. */
  assert_int_equal(cr_atomic_open(&f, out, 0600, &err), 0);
  assert_int_equal(
      cr_dataset_write_matches(d, t, matched, on, NULL, 0, NULL, NULL, &f, &rows, NULL, &err), 0);
  assert_int_equal(cr_atomic_commit(&f, &err), 0);
  assert_string_equal(slurp(out), "user,Mail,Tel,seg,matched_on\r\n"
                                  "c1,a@x.example,+15550000001,s1,email+phone\r\n"
                                  "c3,,+1 555 000 0003,s2,phone\r\n"
                                  "c8,a@x.example,+15550000008,s2,email+phone\r\n");
  unlink(out);
  cr_dataset_free(d);
  unlink(db_path);

  /* The provider names its columns email and phone: its file loads as is. */
  d = mk_load(t, CR_ROLE_PROVIDER, MK_PROVIDER_CSV, NULL);
  assert_int_equal(d->n, 12);
  assert_int_equal(cr_dataset_width(d), 1);
  mk_free(d);

  mk_free(semi);
  mk_free(want);
  cr_template_free(t);
  cr_template_free(shared);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counted_side_records), cmocka_unit_test(test_labels_per_record),
      cmocka_unit_test(test_flat_side_duplicates), cmocka_unit_test(test_all_keys_rejected),
      cmocka_unit_test(test_members_matched_on),   cmocka_unit_test(test_party_columns_any_source),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
