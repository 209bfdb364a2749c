/*
 * Opening a party: template, identity, role, audit log, signatures; and the
 * data loading every query goes through (filter, parameters, group_by),
 * each load recorded as a data access.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "party/party_internal.h"

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void cr__party_refusal(cr_party *p, const char *event, const char *query, const char *why) {
  json_t *ev = json_object();
  if (query)
    json_object_set_new(ev, "query", cr__jtext(query));
  json_object_set_new(ev, "reason", cr__jtext(why));
  (void)cr__trail_event(&p->trail, event, ev, NULL);
}

static const char *mode_name(cr_party_mode m) {
  return m == CR_PARTY_SERVE   ? "serve"
         : m == CR_PARTY_RUN   ? "run"
         : m == CR_PARTY_CHECK ? "check"
                               : "ping";
}

/* ---- memory and spilling (issue 17, docs/memory.md) ---------------------- */

uint64_t cr_party_sorter_budget(uint64_t memory_bytes) {
  const uint64_t reserve = (uint64_t)CR_PARTY_MEMORY_RESERVE_MIB << 20;
  if (memory_bytes == 0)
    memory_bytes = (uint64_t)CR_PARTY_MEMORY_DEFAULT_MIB << 20;
  uint64_t quarter = memory_bytes / 4;
  return memory_bytes > reserve && memory_bytes - reserve > quarter ? memory_bytes - reserve
                                                                    : quarter;
}

char *cr_party_default_work_dir(const char *identity_dir) {
  size_t n = strlen(identity_dir) + sizeof "/work";
  char *s = malloc(n);
  if (s != NULL)
    snprintf(s, n, "%s%swork", identity_dir,
             identity_dir[0] && identity_dir[strlen(identity_dir) - 1] == '/' ? "" : "/");
  return s;
}

int cr__party_spill_open(cr_spill **out, const char *work_dir, uint64_t memory_bytes,
                         uint64_t disk_max, cr_trail *trail, char *note, size_t cap,
                         cr_error *err) {
  cr_spill_config sc;
  memset(&sc, 0, sizeof sc);
  sc.work_dir = work_dir;
  sc.memory_bytes = cr_party_sorter_budget(memory_bytes);
  sc.disk_max_bytes = disk_max;
  cr_spill_recovered rec;
  memset(&rec, 0, sizeof rec);
  *out = NULL;
  int rc = cr_spill_open(out, &sc, &rec, err);
  if (rc) {
    if (trail != NULL && trail->open) {
      json_t *ev = json_object();
      json_object_set_new(ev, "work_dir", cr__jtext(work_dir));
      json_object_set_new(ev, "reason", cr__jtext(cr_error_message(err, rc)));
      (void)cr__trail_event(trail, "work_dir_refused", ev, NULL);
    }
    return rc;
  }
  if (rec.dirs > 0) {
    if (note != NULL)
      snprintf(note, cap,
               "removed %llu work director%s (%llu bytes) left in %s by a node that was "
               "killed before it could clean up",
               (unsigned long long)rec.dirs, rec.dirs == 1 ? "y" : "ies",
               (unsigned long long)rec.bytes, work_dir);
    if (trail != NULL && trail->open) {
      json_t *ev = json_object();
      json_object_set_new(ev, "work_dir", cr__jtext(work_dir));
      json_object_set_new(ev, "dirs", json_integer((json_int_t)rec.dirs));
      json_object_set_new(ev, "bytes", json_integer((json_int_t)rec.bytes));
      (void)cr__trail_event(trail, "spill_recovered", ev, NULL);
    }
  }
  return 0;
}

const char *cr_party_work_dir(const cr_party *p) { return p->work_dir; }

/* Which processes do the node's work (cleanroom-mpi): {processes, hosts}. */
static json_t *cluster_json(const cr_party *p) {
  json_t *cl = json_object(), *hosts = json_array();
  const char *h = p->cluster_hosts ? p->cluster_hosts : "";
  while (*h) {
    size_t len = strcspn(h, ",");
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(len < 255 ? len : 255), h);
    json_array_append_new(hosts, cr__jtext(name));
    h += len + (h[len] == ',');
  }
  json_object_set_new(cl, "processes", json_integer((json_int_t)p->cluster_processes));
  json_object_set_new(cl, "hosts", hosts);
  return cl;
}

json_t *cr__party_resources(const cr_party *p, cr_spill *sp) {
  json_t *o = json_object();
  if (p->cluster_processes > 0)
    json_object_set_new(o, "cluster", cluster_json(p));
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  (void)getrusage(RUSAGE_SELF, &ru);
  json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)ru.ru_maxrss * 1024));
  if (sp != NULL) {
    cr_spill_stats st;
    cr_spill_stats_get(sp, &st);
    json_t *s = json_object();
    json_object_set_new(s, "bytes_written", json_integer((json_int_t)st.disk_written));
    json_object_set_new(s, "peak_bytes", json_integer((json_int_t)st.disk_peak));
    json_object_set_new(s, "runs", json_integer((json_int_t)st.runs_written));
    json_object_set_new(o, "spill", s);
  }
  return o;
}

void cr_party_spill_stats(const cr_party *p, cr_spill_stats *st) {
  memset(st, 0, sizeof *st);
  if (p != NULL && p->spill != NULL)
    cr_spill_stats_get(p->spill, st);
}

/* The node's settings of a config: budget, work directory, disk cap. */
static int take_memory(cr_party *p, const cr_party_config *cfg, cr_error *err) {
  p->memory_bytes =
      cfg->memory_bytes ? cfg->memory_bytes : (uint64_t)CR_PARTY_MEMORY_DEFAULT_MIB << 20;
  p->spill_max_bytes = cfg->spill_max_bytes;
  p->cluster_processes = cfg->cluster_processes;
  if (cfg->cluster_hosts != NULL && (p->cluster_hosts = strdup(cfg->cluster_hosts)) == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  p->work_dir =
      cfg->work_dir ? strdup(cfg->work_dir) : cr_party_default_work_dir(cfg->identity_dir);
  return p->work_dir ? 0 : cr_error_set(err, CR_ENOMEM, "out of memory");
}

static int record_start(cr_party *p, cr_error *err) {
  char fp[CR_SHA256_HEX_BYTES], pkh[2 * CR_SIGN_PK_BYTES + 1];
  uint8_t pk[CR_SIGN_PK_BYTES];
  cr_hex_encode(fp, cr_identity_fingerprint(p->id), CR_SHA256_BYTES);
  cr_identity_public_key(p->id, pk);
  cr_hex_encode(pkh, pk, sizeof pk);
  json_t *ev = json_object();
  json_object_set_new(ev, "software", cr__jtext(p->software));
  json_object_set_new(ev, "mode", cr__jtext(mode_name(p->mode)));
  json_object_set_new(ev, "role", cr__jtext(cr_role_name(p->role)));
  json_object_set_new(ev, "cert_sha256", cr__jtext(fp));
  json_object_set_new(ev, "public_key", cr__jtext(pkh));
  if (p->t != NULL) {
    json_object_set_new(ev, "role", cr__jtext(cr_role_name(p->role)));
    json_object_set_new(ev, "template_sha256", cr__jtext(p->trail.th));
    json_object_set_new(ev, "template_file", cr__jtext(p->template_path));
  } else {
    json_object_del(ev, "role"); /* one per collaboration */
    json_object_set_new(ev, "collaborations", cr__jtext(p->collab_dir));
  }
  json_object_set_new(ev, p->mode == CR_PARTY_SERVE ? "listen" : "peer",
                      cr__jtext(p->address ? p->address : ""));
  json_object_set_new(ev, "memory_bytes", json_integer((json_int_t)p->memory_bytes));
  json_object_set_new(ev, "crypto_backend", cr__jtext(cr_crypto_backend_name()));
  if (cr_crypto_backend_note() != NULL)
    json_object_set_new(ev, "crypto_backend_note", cr__jtext(cr_crypto_backend_note()));
  json_object_set_new(ev, "work_dir", cr__jtext(p->work_dir));
  if (p->cluster_processes > 0)
    json_object_set_new(ev, "cluster", cluster_json(p));
  /* Its own error: the message below quotes it (err->msg into err->msg
   * would overlap, and came out garbled). */
  cr_error ae;
  cr_error_clear(&ae);
  int rc = cr__trail_event(&p->trail, "node_started", ev, &ae);
  if (rc)
    return cr_error_set(err, cr__trail_write_error(rc), "cannot write the audit log: %s",
                        ae.msg[0] ? ae.msg : cr_strerror(rc));
  return 0;
}

static int same_log(const cr_log *l, const char *path, int have, const struct stat *st) {
  return l != NULL &&
         (strcmp(l->path, path) == 0 || (have && l->dev == st->st_dev && l->ino == st->st_ino));
}

int cr__party_log(cr_party *p, const char *path, cr_log **out, cr_error *err) {
  struct stat st;
  int have = stat(path, &st) == 0;
  /* One handle per file: the node's own, or a collaboration's. */
  cr_log *found = same_log(p->trail.log, path, have, &st) ? p->trail.log : NULL;
  for (size_t i = 0; found == NULL && i < p->ncollabs; i++)
    if (same_log(p->collabs[i]->trail.log, path, have, &st))
      found = p->collabs[i]->trail.log;
  if (found != NULL) {
    found->refs++;
    *out = found;
    return 0;
  }
  return cr__log_open(out, path, p->id, err);
}

static int open_log(cr_party *p, cr_error *err) {
  cr_log *log = NULL;
  int rc = cr__party_log(p, p->audit_path, &log, err);
  if (rc)
    return rc;
  cr__trail_init(&p->trail, log, p->id, p->t, p->role, p->t ? p->t->name : NULL);
  cr__log_release(log); /* the trail holds it */
  return 0;
}

int cr_party_open(cr_party **out, const cr_party_config *cfg, cr_error *err) {
  int rc;
  *out = NULL;
  int dir_mode = cfg != NULL && cfg->mode == CR_PARTY_SERVE && cfg->collaborations_dir != NULL;
  if (cfg == NULL || cfg->identity_dir == NULL ||
      (cfg->mode != CR_PARTY_SERVE && cfg->mode != CR_PARTY_RUN && cfg->mode != CR_PARTY_PING &&
       cfg->mode != CR_PARTY_CHECK))
    return cr_error_set(err, CR_EINVAL, "party: a mode, a template and an identity are required");
  if (dir_mode && cfg->template_path != NULL)
    return cr_error_set(err, CR_EUSAGE,
                        "a template or a collaborations directory, not both: serve --template "
                        "T --data D serves one collaboration, --collaborations DIR many");
  if (!dir_mode && cfg->template_path == NULL)
    return cr_error_set(err, CR_EINVAL, "party: a mode, a template and an identity are required");
  if (cr_crypto_init() != 0)
    return cr_error_set(err, CR_EINTERNAL, "libsodium failed to initialise");
  cr_party *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  p->mode = cfg->mode;
  p->run_lock_fd = -1;
  p->software = cfg->software ? cfg->software : CR_PARTY_SOFTWARE;
  p->template_path = dup_or_null(cfg->template_path);
  p->collab_dir = dup_or_null(cfg->collaborations_dir);
  p->identity_dir = strdup(cfg->identity_dir);
  p->audit_path =
      cfg->audit_path ? strdup(cfg->audit_path) : cr__trail_default_path(cfg->identity_dir);
  if ((!dir_mode && p->template_path == NULL) || (dir_mode && p->collab_dir == NULL) ||
      p->identity_dir == NULL || p->audit_path == NULL) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = take_memory(p, cfg, err)) != 0)
    goto fail;
  if (dir_mode) {
    struct stat st;
    if (stat(p->collab_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      rc = cr_error_set(err, CR_ECONFIG,
                        "%s: not a directory; --collaborations takes a directory with one "
                        "sub-directory per collaboration (%s and %s in each)",
                        p->collab_dir, CR_COLLAB_TEMPLATE_FILE, CR_COLLAB_CONF_FILE);
      goto fail;
    }
  }
  if (!dir_mode && (rc = cr_template_load(&p->t, cfg->template_path, err)) != 0) {
    if (rc != CR_ENOMEM)
      rc = CR_ETEMPLATE; /* unreadable or invalid: a configuration problem */
    goto fail;
  }
  if ((rc = cr_identity_load(&p->id, cfg->identity_dir, err)) != 0) {
    if (rc != CR_ENOMEM)
      rc = CR_ECONFIG;
    goto fail;
  }
  if (!dir_mode && cr_template_role_of(p->t, cr_identity_fingerprint(p->id), &p->role) != 0) {
    char own[CR_SHA256_HEX_BYTES], pp[CR_SHA256_HEX_BYTES], cc[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(p->id), CR_SHA256_BYTES);
    cr_hex_encode(pp, p->t->parties[CR_ROLE_PROVIDER].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(cc, p->t->parties[CR_ROLE_CONSUMER].cert_sha256, CR_SHA256_BYTES);
    rc = cr_error_set(err, CR_ECONFIG,
                      "this identity (%s, certificate %s) is not a party of template %s: the "
                      "provider pins %s and the consumer pins %s; put your fingerprint in the "
                      "template (`cleanroom template pin`, parties.<role>.cert_sha256) and "
                      "agree it with the partner",
                      cfg->identity_dir, own, cfg->template_path, pp, cc);
    goto fail;
  }
  cr_role other = cr_role_other(p->role);
  p->address = dup_or_null(cfg->address                ? cfg->address
                           : p->mode == CR_PARTY_SERVE ? NULL
                                                       : p->t->parties[other].address);
  if (p->address == NULL && p->mode != CR_PARTY_CHECK) {
    rc = cfg->mode == CR_PARTY_SERVE
             ? cr_error_set(err, CR_EUSAGE, "an address to listen on (HOST:PORT) is required")
             : cr_error_set(err, CR_EUSAGE,
                            "the partner's address (HOST:PORT) is required: the template gives "
                            "none for the %s (parties.%s.address); give it with --peer",
                            cr_role_name(other), cr_role_name(other));
    goto fail;
  }

  /* A ping needs neither the signatures nor the log: it says what serve
   * and run would refuse, and pings anyway. */
  int src = 0;
  cr_error se;
  cr_error_clear(&se);
  if (!dir_mode) {
    char *sp = cr_template_sig_path(p->t);
    src = sp ? cr_template_require_sigs(p->t, sp, &se) : CR_ENOMEM;
    free(sp);
  }
  if (src && (p->mode == CR_PARTY_PING || p->mode == CR_PARTY_CHECK))
    snprintf(p->notes[CR_PARTY_NOTE_SIGNATURES], sizeof p->notes[0], "%s",
             cr_error_message(&se, src));

  cr_error ae;
  cr_error_clear(&ae);
  if ((rc = open_log(p, &ae)) != 0) {
    if (p->mode == CR_PARTY_PING) {
      snprintf(p->notes[CR_PARTY_NOTE_AUDIT], sizeof p->notes[0],
               "not recorded in the audit log %s: %s", p->audit_path, cr_error_message(&ae, rc));
      memset(&p->trail, 0, sizeof p->trail);
      cr_hex_encode(p->trail.th, p->t->sha256, CR_SHA256_BYTES);
    } else {
      /* A log that does not verify is evidence, not a setting (exit 3); one
       * that cannot be created, opened or written is local storage (exit
       * 7); one another process holds too long (CR_ETIMEDOUT), like the
       * rest, is a setting: give this node its own with --audit (exit 2). */
      rc = cr_error_set(err, rc == CR_EDATA || rc == CR_EIO ? rc : CR_ECONFIG,
                        "cannot open the audit log %s: %s%s", p->audit_path,
                        cr_error_message(&ae, rc),
                        p->mode == CR_PARTY_CHECK
                            ? " (a data check is recorded in the audit log like every data "
                              "access; while a node holds this log, give the check its own with "
                              "--audit FILE)"
                            : "");
      goto fail;
    }
  }
  if (p->mode != CR_PARTY_PING && p->mode != CR_PARTY_CHECK) {
    /* From here on every refusal and every data access is in the log. */
    if ((rc = record_start(p, err)) != 0)
      goto fail;
    if (src) {
      cr_error_set(err, src == CR_ENOMEM ? CR_ENOMEM : CR_EREFUSED, "%s",
                   cr_error_message(&se, src));
      cr__party_refusal(p, "template_refused", NULL, cr_error_message(&se, src));
      rc = src == CR_ENOMEM ? CR_ENOMEM : CR_EREFUSED;
      goto fail;
    }
  }
  /* One spill for the node: every data load and session of this process
   * shares its budget. Opening it removes what killed nodes left there;
   * that goes to the audit log (spill_recovered) and to the caller (note). */
  if (p->mode != CR_PARTY_PING &&
      (rc = cr__party_spill_open(&p->spill, p->work_dir, p->memory_bytes, p->spill_max_bytes,
                                 &p->trail, p->notes[CR_PARTY_NOTE_SPILL], sizeof p->notes[0],
                                 err)) != 0) {
    rc = rc == CR_ENOMEM ? rc : CR_ECONFIG;
    goto fail;
  }
  *out = p;
  return 0;
fail:
  cr_party_close(p);
  return rc;
}

void cr_party_close(cr_party *p) {
  if (p == NULL)
    return;
  if (p->node != NULL)
    cr_node_free(p->node);
  cr__party_collabs_free(p);
  if (p->run_lock_fd >= 0)
    cr__trail_run_unlock(&p->run_lock_fd);
  cr_dataset_free(p->data);
  p->data = NULL;
  /* Every sorter is gone (sessions, data sets, collaborations' caches):
   * the node's work directory goes too. */
  cr_spill_close(p->spill);
  p->spill = NULL;
  cr__trail_close(&p->trail);
  cr_filter_free(p->filter);
  cr_params_free(&p->params);
  free(p->param_names);
  free(p->param_values);
  free(p->out_path);
  free(p->data_path);
  free(p->data_query);
  cr_identity_free(p->id);
  cr_template_free(p->t);
  free(p->template_path);
  free(p->collab_dir);
  free(p->identity_dir);
  free(p->audit_path);
  free(p->address);
  free(p->work_dir);
  free(p->cluster_hosts);
  free(p);
}

/* ---- serve --check ------------------------------------------------------- */

static void check_report(cr_party *p, void (*report)(void *, const cr_party_collab_info *),
                         void *ctx, const char *name, const cr_collab *c, const char *error) {
  cr_party_collab_info info;
  memset(&info, 0, sizeof info);
  info.change = error ? "refused" : "loaded";
  info.name = name;
  info.error = error ? error : "";
  if (c != NULL) {
    info.dir = c->dir;
    info.template_path = c->template_path;
    info.t = c->t;
    info.role = c->role;
    info.data = c->conf.data;
    info.audit = c->conf.audit ? c->conf.audit : p->audit_path;
    info.enabled = c->conf.enabled;
    info.serving = error == NULL && c->conf.enabled;
  }
  if (report)
    report(ctx, &info);
}

int cr_party_check(const cr_party_config *cfg, const cr_party_serve_config *scfg,
                   void (*report)(void *ctx, const cr_party_collab_info *c), void *ctx,
                   cr_error *err) {
  if (cfg == NULL || cfg->identity_dir == NULL ||
      (cfg->template_path == NULL) == (cfg->collaborations_dir == NULL))
    return cr_error_set(err, CR_EUSAGE,
                        "serve --check needs an identity and either a template (with data) or "
                        "a collaborations directory");
  if (cfg->template_path != NULL && (scfg == NULL || scfg->data == NULL))
    return cr_error_set(err, CR_EUSAGE, "serve --check --template needs --data");
  if (cr_crypto_init() != 0)
    return cr_error_set(err, CR_EINTERNAL, "libsodium failed to initialise");
  cr_party *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  int rc = 0, first = 0;
  size_t bad = 0, total = 0;
  p->mode = CR_PARTY_SERVE;
  p->template_path = dup_or_null(cfg->template_path);
  p->collab_dir = dup_or_null(cfg->collaborations_dir);
  p->identity_dir = strdup(cfg->identity_dir);
  p->audit_path =
      cfg->audit_path ? strdup(cfg->audit_path) : cr__trail_default_path(cfg->identity_dir);
  p->data_path = scfg && scfg->data ? strdup(scfg->data) : NULL;
  p->data_query = scfg && scfg->data_query ? strdup(scfg->data_query) : NULL;
  p->delimiter = scfg ? scfg->delimiter : 0;
  p->max_reject_ratio = scfg ? scfg->max_reject_ratio : 0;
  if ((rc = cr_identity_load(&p->id, cfg->identity_dir, err)) != 0) {
    rc = rc == CR_ENOMEM ? rc : CR_ECONFIG;
    goto out;
  }
  /* The data loads as serve's would: within the node's budget. */
  if ((rc = take_memory(p, cfg, err)) != 0 ||
      (rc = cr__party_spill_open(&p->spill, p->work_dir, p->memory_bytes, p->spill_max_bytes, NULL,
                                 NULL, 0, err)) != 0) {
    rc = rc == CR_ENOMEM ? rc : CR_ECONFIG;
    goto out;
  }
  if (p->collab_dir != NULL) {
    struct stat st;
    if (stat(p->collab_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
      rc = cr_error_set(err, CR_ECONFIG, "%s: not a directory", p->collab_dir);
      goto out;
    }
  }
  cr_srcs srcs;
  if ((rc = cr__srcs_list(p, &srcs, err)) != 0)
    goto out;
  for (size_t i = 0; i < srcs.n; i++) {
    cr_collab *c = NULL;
    cr_error e;
    cr_error_clear(&e);
    int crc = cr__collab_prepare(p, &srcs.v[i], 1, &c, &e);
    if (crc == 0)
      crc = cr__collab_check_data(c, 1, NULL, &e);
    total++;
    if (crc != 0) {
      bad++;
      if (first == 0)
        first = crc;
      check_report(p, report, ctx, srcs.v[i].name, c, cr_error_message(&e, crc));
    } else {
      check_report(p, report, ctx, srcs.v[i].name, c, NULL);
    }
    cr__collab_unref(c);
  }
  cr__srcs_free(&srcs);
  if (bad)
    rc = cr_error_set(err, first, "%zu of %zu collaboration(s) cannot serve", bad, total);
  else if (total == 0)
    rc = cr_error_set(err, CR_ECONFIG, "%s holds no collaboration (one sub-directory each)",
                      p->collab_dir);
out:
  cr_spill_close(p->spill);
  free(p->work_dir);
  free(p->cluster_hosts);
  cr_identity_free(p->id);
  free(p->template_path);
  free(p->collab_dir);
  free(p->identity_dir);
  free(p->audit_path);
  free(p->data_path);
  free(p);
  return rc;
}

cr_role cr_party_role(const cr_party *p) { return p->role; }
const cr_template *cr_party_template(const cr_party *p) { return p->t; }
const cr_identity *cr_party_identity(const cr_party *p) { return p->id; }
const char *cr_party_address(const cr_party *p) { return p->address; }
const char *cr_party_audit_path(const cr_party *p) { return p->audit_path; }
const char *cr_party_note(const cr_party *p, int which) {
  return which >= 0 && which <= CR_PARTY_NOTE_SPILL ? p->notes[which] : "";
}

void cr__party_node_base(cr_party *p, unsigned timeout_ms) {
  memset(&p->nc, 0, sizeof p->nc);
  p->nc.session.tmpl = p->t;
  p->nc.session.role = p->role;
  p->nc.session.software = p->software;
  p->nc.id = p->id;
  p->nc.address = p->address;
  p->nc.handshake_timeout_ms = timeout_ms;
  p->nc.idle_timeout_ms = timeout_ms;
  p->nc.ctx = p;
}

/* ---- data ----------------------------------------------------------------- */

int cr__party_set_source(cr_party *p, const char *data, const char *query, char delimiter,
                         cr_error *err) {
  char *d = strdup(data), *q = query ? strdup(query) : NULL;
  if (d == NULL || (query && q == NULL)) {
    free(d);
    free(q);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  free(p->data_path);
  free(p->data_query);
  p->data_path = d;
  p->data_query = q;
  p->delimiter = delimiter;
  return 0;
}

void cr__party_load_options(const cr_party *p, cr_dataset_options *opt) {
  cr_dataset_options_init(opt);
  if (p->max_reject_ratio != 0)
    opt->max_reject_ratio = p->max_reject_ratio > 0 ? p->max_reject_ratio : 0.0;
  opt->data_query = p->data_query;
  opt->delimiter = p->delimiter;
  opt->spill = p->spill;
}

/* The data access fields of the audit log: the source, and for a database
 * the query (what was read is as much part of the access as where). */
static json_t *data_fields(const cr_party *p, const cr_dataset *d, const char *query) {
  json_t *o = cr__trail_data_fields(d, p->t, query);
  json_object_set_new(o, "source", cr__jtext(cr_source_kind_name(d->source_kind)));
  if (d->data_query != NULL)
    json_object_set_new(o, "data_query", cr__jtext(d->data_query));
  return o;
}

static int keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n) {
  return cr_filter_eval(ctx, fields, lens, n);
}

/* run: the own set for its query (filter, group_by and parameters). */
int cr__party_load_start(cr_party *p, const cr_query *q, cr_error *err) {
  int rc;
  if (q != NULL && q->where[p->role] != NULL &&
      (rc = cr_filter_parse_where(&p->filter, q, p->role, err)) != 0)
    return rc == CR_ENOMEM ? rc : CR_EUSAGE;
  cr_dataset_options dopt;
  cr__party_load_options(p, &dopt);
  dopt.group_column = q ? q->group_by[p->role] : NULL;
  dopt.filter = p->filter;
  dopt.params = &p->params;
  if ((rc = cr_dataset_load(&p->data, p->data_path, p->t, p->role, &dopt, err)) != 0) {
    json_t *ev = json_object();
    json_object_set_new(ev, "file", cr__jtext(p->data_path));
    json_object_set_new(ev, "reason", cr__jtext(cr_error_message(err, rc)));
    (void)cr__trail_event(&p->trail, "data_load_failed", ev, NULL);
    return rc; /* CR_EIO: the work directory is full (exit 7), not the data */
  }
  cr_error ae;
  if ((rc = cr__trail_event(&p->trail, "data_loaded", data_fields(p, p->data, q ? q->name : NULL),
                            &ae)) != 0)
    return cr_error_set(err, cr__trail_write_error(rc), "cannot write the audit log: %s", ae.msg);
  if (p->ev.on_data)
    p->ev.on_data(p->ev.ctx, p->data);
  return 0;
}

/* Kept for the row filter of a members release. */
int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n);
int cr__party_keep_row(void *ctx, const char *const *fields, const size_t *lens, size_t n) {
  return keep_row(ctx, fields, lens, n);
}
