/*
 * A serving node's collaborations: one version of each (its template, the
 * template's signatures, its collaboration.conf and its data, all checked),
 * the data a session uses (a load of its own for every session: the order
 * a set is sent in is drawn per load, docs/memory.md, so two sessions never
 * share one), and which collaboration a connection belongs to.
 *
 * A version never changes once loaded: a changed directory gives a new
 * version, and the old one lives on while a session holds it. Sessions load
 * their data on worker threads; everything else here runs on the loop
 * thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "party/party_internal.h"

/* ---- files ------------------------------------------------------------------ */

void cr__file_sig(const char *path, cr_file_sig *s) {
  struct stat st;
  memset(s, 0, sizeof *s);
  if (path == NULL || stat(path, &st) != 0)
    return;
  s->exists = 1;
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  s->size = st.st_size;
  s->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  s->ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
}

int cr__file_sig_equal(const cr_file_sig *a, const cr_file_sig *b) {
  return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + 1 + strlen(name) + 1;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static char *sig_path_of(const char *template_path) {
  size_t n = strlen(template_path) + sizeof CR_TEMPLATE_SIG_SUFFIX;
  char *p = malloc(n);
  if (p != NULL)
    snprintf(p, n, "%s%s", template_path, CR_TEMPLATE_SIG_SUFFIX);
  return p;
}

void cr__collab_sigs(const cr_collab_src *src, cr_file_sig sigs[3]) {
  char *sp = sig_path_of(src->template_path);
  char *cp = src->dir ? join(src->dir, CR_COLLAB_CONF_FILE) : NULL;
  cr__file_sig(src->template_path, &sigs[0]);
  cr__file_sig(sp, &sigs[1]);
  cr__file_sig(cp, &sigs[2]);
  free(sp);
  free(cp);
}

/* ---- a version ----------------------------------------------------------------- */

void cr__collab_unref(cr_collab *c) {
  if (c == NULL || --c->refs > 0)
    return;
  if (c->owns_spill)
    cr_spill_close(c->spill); /* its sessions and data sets are gone */
  cr__trail_close(&c->trail);
  cr__collab_conf_free(&c->conf);
  if (c->owns_t)
    cr_template_free(c->t);
  free(c->name);
  free(c->dir);
  free(c->template_path);
  free(c->sig_path);
  free(c->conf_path);
  free(c);
}

/*
 * Where a version's loads and sessions spill (docs/memory.md): the node's
 * spill, or, when its conf sets memory or work_dir, a spill of its own
 * (budget: memory, at most the node's; default the node's), so that one
 * partner's large sessions cannot take the others' memory or disk.
 */
static int collab_spill(cr_party *p, cr_collab *c, cr_error *err) {
  c->spill = p->spill;
  if (c->conf.memory_mib == 0 && c->conf.work_dir == NULL)
    return 0;
  uint64_t mem = (uint64_t)c->conf.memory_mib << 20;
  if (mem > p->memory_bytes)
    return cr_error_set(err, CR_ECONFIG,
                        "%s:%lu: \"memory\" is %u MiB, more than the node's budget of %llu MiB "
                        "(--memory): a collaboration may only set a lower one",
                        c->conf_path ? c->conf_path : "collaboration.conf", c->conf.memory_line,
                        c->conf.memory_mib, (unsigned long long)(p->memory_bytes >> 20));
  if (mem == 0)
    mem = p->memory_bytes;
  const char *dir = c->conf.work_dir ? c->conf.work_dir : p->work_dir;
  int rc = cr__party_spill_open(&c->spill, dir, mem, p->spill_max_bytes,
                                c->trail.open ? &c->trail : NULL, NULL, 0, err);
  if (rc) {
    c->spill = NULL;
    return rc == CR_ENOMEM ? rc : CR_ECONFIG;
  }
  c->owns_spill = 1;
  return 0;
}

int cr__collab_prepare(cr_party *p, const cr_collab_src *src, int check_only, cr_collab **out,
                       cr_error *err) {
  int rc = 0;
  *out = NULL;
  cr_collab *c = calloc(1, sizeof *c);
  if (c == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  c->refs = 1;
  c->name = strdup(src->name);
  c->dir = src->dir ? strdup(src->dir) : NULL;
  c->template_path = strdup(src->template_path);
  c->sig_path = sig_path_of(src->template_path);
  c->conf_path = src->dir ? join(src->dir, CR_COLLAB_CONF_FILE) : NULL;
  if (c->name == NULL || (src->dir && c->dir == NULL) || c->template_path == NULL ||
      c->sig_path == NULL || (src->dir && c->conf_path == NULL)) {
    rc = cr_error_set(err, CR_ENOMEM, "out of memory");
    goto fail;
  }
  /* What the files are before they are read: a change made while they are
   * read shows at the next look. */
  cr__collab_sigs(src, c->sigs);

  if (src->dir != NULL) {
    if (!c->sigs[2].exists) {
      rc = cr_error_set(err, CR_ECONFIG,
                        "%s: missing: each collaboration needs one, with at least `data = FILE` "
                        "(the keys are: %s)",
                        c->conf_path, cr__collab_conf_keys());
      goto fail;
    }
    if ((rc = cr__collab_conf_load(c->conf_path, src->dir, &c->conf, err)) != 0)
      goto fail;
  } else {
    c->conf.enabled = 1;
    if (src->data == NULL || (c->conf.data = strdup(src->data)) == NULL ||
        (src->data_query != NULL && (c->conf.data_query = strdup(src->data_query)) == NULL)) {
      rc = cr_error_set(err, src->data ? CR_ENOMEM : CR_EINVAL, "party: serve needs data");
      goto fail;
    }
    c->conf.delimiter = src->delimiter;
  }

  if (src->t != NULL) {
    c->t = src->t;
  } else {
    if (!c->sigs[0].exists) {
      rc = cr_error_set(err, CR_ETEMPLATE,
                        "%s: missing: each collaboration needs its template (and, where it "
                        "requires signatures, %s%s)",
                        c->template_path, CR_COLLAB_TEMPLATE_FILE, CR_TEMPLATE_SIG_SUFFIX);
      goto fail;
    }
    if ((rc = cr_template_load(&c->t, c->template_path, err)) != 0) {
      if (rc != CR_ENOMEM)
        rc = CR_ETEMPLATE;
      goto fail;
    }
    c->owns_t = 1;
  }
  cr_hex_encode(c->th, c->t->sha256, CR_SHA256_BYTES);
  if (cr_template_role_of(c->t, cr_identity_fingerprint(p->id), &c->role) != 0) {
    char own[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(p->id), CR_SHA256_BYTES);
    rc = cr_error_set(err, CR_ECONFIG,
                      "this identity (%s, certificate %s) is not a party of template %s: put "
                      "its fingerprint in the template (`cleanroom template pin`) and agree it "
                      "with the partner",
                      p->identity_dir, own, c->template_path);
    goto fail;
  }
  if ((rc = cr_template_require_sigs(c->t, c->sig_path, err)) != 0) {
    if (rc != CR_ENOMEM)
      rc = CR_EREFUSED;
    goto fail;
  }
  c->max_reject_ratio =
      c->conf.max_reject_ratio != 0 ? c->conf.max_reject_ratio : p->max_reject_ratio;
  if (!check_only) {
    cr_log *log = NULL;
    const char *apath = c->conf.audit ? c->conf.audit : p->audit_path;
    cr_error ae;
    cr_error_clear(&ae);
    if ((rc = cr__party_log(p, apath, &log, &ae)) != 0) {
      rc = cr_error_set(err, rc == CR_EDATA ? CR_EDATA : CR_ECONFIG,
                        "cannot open the audit log %s: %s", apath, cr_error_message(&ae, rc));
      goto fail;
    }
    cr__trail_init(&c->trail, log, p->id, c->t, c->role, c->name);
    cr__log_release(log); /* the trail holds it */
  }
  if ((rc = collab_spill(p, c, err)) != 0)
    goto fail;
  *out = c;
  return 0;
fail:
  cr__collab_unref(c);
  return rc;
}

/* ---- data ------------------------------------------------------------------------ */

json_t *cr__data_used(const cr_dataset *d, const cr_file_sig *sig) {
  json_t *o = json_object();
  char hex[CR_SHA256_HEX_BYTES], when[64] = "";
  json_object_set_new(o, "file", cr__jtext(d->path ? d->path : ""));
  json_object_set_new(o, "size", json_integer((json_int_t)sig->size));
  time_t secs = (time_t)(sig->mtime_ns / 1000000000);
  struct tm tm;
  if (gmtime_r(&secs, &tm) != NULL) {
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%09lldZ", (long long)(sig->mtime_ns % 1000000000));
  }
  json_object_set_new(o, "mtime", cr__jtext(when));
  cr_hex_encode(hex, d->file_sha256, CR_SHA256_BYTES);
  json_object_set_new(o, "sha256", cr__jtext(hex));
  json_object_set_new(o, "rows_accepted", json_integer((json_int_t)d->rows_accepted));
  json_object_set_new(o, "distinct_keys", json_integer((json_int_t)d->n));
  return o;
}

/* What the source is now, to tell that a CSV file did not change while it
 * was read, and for the log (size, time). A database (sqlite:PATH,
 * postgresql://) gives no file signature: zeros. */
static void source_sig(const cr_collab *c, cr_file_sig *s) {
  if (cr_source_kind_of(c->conf.data) == CR_SOURCE_CSV)
    cr__file_sig(c->conf.data, s);
  else
    memset(s, 0, sizeof *s);
}

/*
 * Loads the collaboration's data file (for q: its filter, parameters and
 * group column; NULL: whole), recorded as data_loaded (with the file's
 * size and time) or data_load_failed. A file that changes while it is read
 * (its size or times differ before and after) is read again, a few times:
 * the set and its SHA-256 must be one version of the file.
 */
static int data_load(cr_collab *c, const cr_query *q, cr_filter *filter, const cr_params *params,
                     cr_dataset **out, cr_file_sig *sig, cr_error *err) {
  int rc = 0;
  *out = NULL;
  for (int attempt = 0;; attempt++) {
    cr_file_sig before, after;
    source_sig(c, &before);
    cr_dataset_options opt;
    cr_dataset_options_init(&opt);
    if (c->max_reject_ratio != 0)
      opt.max_reject_ratio = c->max_reject_ratio > 0 ? c->max_reject_ratio : 0.0;
    opt.data_query = c->conf.data_query;
    opt.delimiter = c->conf.delimiter;
    opt.group_column = q ? q->group_by[c->role] : NULL;
    opt.filter = filter;
    opt.params = params;
    opt.spill = c->spill;
    cr_dataset *d = NULL;
    rc = cr_dataset_load(&d, c->conf.data, c->t, c->role, &opt, err);
    source_sig(c, &after);
    if (rc == 0 && !cr__file_sig_equal(&before, &after) && attempt < 3) {
      cr_dataset_free(d);
      struct timespec ts = {0, 50 * 1000000L};
      (void)nanosleep(&ts, NULL);
      continue;
    }
    if (rc == 0 && !cr__file_sig_equal(&before, &after)) {
      cr_dataset_free(d);
      rc = cr_error_set(err, CR_EDATA,
                        "%s changed while it was read, %d times in a row: write it elsewhere "
                        "and rename it into place",
                        c->conf.data, attempt + 1);
    }
    if (rc != 0) {
      json_t *o = json_object();
      json_object_set_new(o, "file", cr__jtext(c->conf.data));
      if (q)
        json_object_set_new(o, "query", cr__jtext(q->name));
      json_object_set_new(o, "reason", cr__jtext(cr_error_message(err, rc)));
      (void)cr__trail_event(&c->trail, "data_load_failed", o, NULL);
      return rc; /* CR_EIO: the work directory is full (exit 7), not the data */
    }
    json_t *f = cr__trail_data_fields(d, c->t, q ? q->name : NULL);
    /* The source, and for a database the query: what was read is as much
     * part of the access as where. */
    json_object_set_new(f, "source", cr__jtext(cr_source_kind_name(d->source_kind)));
    if (d->data_query != NULL)
      json_object_set_new(f, "data_query", cr__jtext(d->data_query));
    json_t *used = cr__data_used(d, &before);
    json_object_set(f, "size", json_object_get(used, "size"));
    json_object_set(f, "mtime", json_object_get(used, "mtime"));
    json_decref(used);
    cr_error ae;
    cr_error_clear(&ae);
    if ((rc = cr__trail_event(&c->trail, "data_loaded", f, &ae)) != 0) {
      cr_dataset_free(d);
      return cr_error_set(err, cr__trail_write_error(rc),
                          "cannot record the data access in the audit log: %s", ae.msg);
    }
    *out = d;
    *sig = before;
    return 0;
  }
}

int cr__collab_load_for(cr_collab *c, const cr_query *q, const cr_params *params, cr_dataset **out,
                        cr_file_sig *sig, char *msg, size_t cap) {
  cr_error err;
  cr_error_clear(&err);
  cr_filter *filter = NULL;
  int rc = 0;
  if (q->where[c->role] != NULL && (rc = cr_filter_parse_where(&filter, q, c->role, &err)) != 0) {
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
    return rc;
  }
  rc = data_load(c, q, filter, params, out, sig, &err);
  cr_filter_free(filter);
  if (rc)
    snprintf(msg, cap, "%s", cr_error_message(&err, rc));
  return rc;
}

/*
 * The data of a new version, checked against its template before it
 * serves: the set loads (within the reject ratio), its size is within the
 * template's limits, the template has not expired, and every filter this
 * side applies finds its columns. The version keeps none of it (each
 * session loads its own); *loaded (may be NULL) gets the set, the caller's
 * to free.
 */
int cr__collab_check_data(cr_collab *c, int check_only, cr_dataset **loaded, cr_error *err) {
  cr_dataset *d = NULL;
  cr_file_sig sig;
  if (loaded != NULL)
    *loaded = NULL;
  int rc = data_load(c, NULL, NULL, NULL, &d, &sig, err);
  if (rc)
    return rc;
  cr_session_config sc;
  memset(&sc, 0, sizeof sc);
  sc.tmpl = c->t;
  sc.data = d;
  sc.role = c->role;
  if ((rc = cr_session_check_local(&sc, (int64_t)time(NULL), err)) != 0) {
    json_t *o = json_object();
    json_object_set_new(o, "reason", cr__jtext(cr_error_message(err, rc)));
    (void)cr__trail_event(&c->trail, "serve_refused", o, NULL);
    cr_dataset_free(d);
    return rc;
  }
  for (size_t i = 0; i < c->t->nqueries && rc == 0; i++) {
    const cr_query *q = &c->t->queries[i];
    cr_filter *f = NULL;
    const char *const *cols;
    if (q->where[c->role] == NULL)
      continue;
    if ((rc = cr_filter_parse_where(&f, q, c->role, err)) != 0) {
      rc = rc == CR_ENOMEM ? rc : CR_EUSAGE;
      break;
    }
    size_t nc = cr_filter_columns(f, &cols);
    for (size_t j = 0; j < nc && rc == 0; j++) {
      size_t k = 0;
      while (k < d->ncolumns && strcasecmp(d->columns[k], cols[j]) != 0)
        k++;
      if (k == d->ncolumns)
        rc = cr_error_set(err, CR_EDATA,
                          "query \"%s\" filters on column \"%s\", which %s does not have", q->name,
                          cols[j], c->conf.data);
    }
    cr_filter_free(f);
  }
  if (rc != 0 || check_only || loaded == NULL) {
    cr_dataset_free(d);
    return rc;
  }
  *loaded = d;
  return 0;
}

/* ---- routing ------------------------------------------------------------------ */

static const uint8_t *partner_pin(const cr_collab *c) {
  return c->t->parties[cr_role_other(c->role)].cert_sha256;
}

int cr__collab_pins(cr_collab *const *c, size_t n, const uint8_t *fp) {
  if (fp == NULL)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (c[i]->conf.enabled && memcmp(partner_pin(c[i]), fp, CR_SHA256_BYTES) == 0)
      return 1;
  return 0;
}

cr_collab *cr__collab_route(cr_collab *const *c, size_t n, const uint8_t *peer_fp,
                            const uint8_t *template_sha256, int *wire, char *msg, size_t cap) {
  cr_collab *only = NULL;
  size_t pinned = 0;
  char names[400] = "";
  size_t nlen = 0;
  *wire = CR_WIRE_TEMPLATE_MISMATCH;
  if (peer_fp == NULL) {
    snprintf(msg, cap, "refused: the partner presented no certificate");
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    if (!c[i]->conf.enabled || memcmp(partner_pin(c[i]), peer_fp, CR_SHA256_BYTES) != 0)
      continue;
    if (template_sha256 != NULL && memcmp(c[i]->t->sha256, template_sha256, CR_SHA256_BYTES) == 0)
      return c[i];
    only = c[i];
    pinned++;
    if (nlen < sizeof names)
      nlen +=
          (size_t)snprintf(names + nlen, sizeof names - nlen, "%s%s", nlen ? ", " : "", c[i]->name);
  }
  /* One collaboration with this partner: its session answers, and refuses
   * a different template (or anything that is not its Hello) with the usual
   * message, both hashes in it. */
  if (pinned == 1)
    return only;
  char fp[CR_SHA256_HEX_BYTES], th[CR_SHA256_HEX_BYTES];
  cr_hex_encode(fp, peer_fp, CR_SHA256_BYTES);
  if (template_sha256 != NULL)
    cr_hex_encode(th, template_sha256, CR_SHA256_BYTES);
  else
    snprintf(th, sizeof th, "(none: its first frame is not a Hello)");
  if (pinned == 0)
    snprintf(msg, cap,
             "refused: no collaboration this node serves pins the certificate %s any longer "
             "(removed or disabled since the connection began)",
             fp);
  else
    snprintf(msg, cap,
             "refused: the partner with certificate %s is pinned by collaborations %s, but asked "
             "for template %s, which none of them is",
             fp, names, th);
  return NULL;
}
