/* audit verify and audit show: reading a node's audit log. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"

static void audit_help(void) {
  printf("Usage: cleanroom audit verify FILE [--cert CRT] [--template T] [--json]\n"
         "       cleanroom audit show FILE [--collaboration NAME|HASH] [--json]\n\n"
         "verify  checks the log's hash chain line by line, every signed checkpoint and\n"
         "        every partner receipt (the partner's Ed25519 signature over the\n"
         "        session transcript). With --cert, the checkpoints must be signed by\n"
         "        that certificate's key (this node's identity.crt). Every receipt must\n"
         "        name this node's own certificate; with --template, receipts under that\n"
         "        template must name both certificates it pins. Reports the first\n"
         "        broken line and why. A torn last line (a crash mid-write) is reported\n"
         "        as such; the node repairs it on its next start.\n"
         "show    a table of the sessions in the log: time, status, query, role, the\n"
         "        collaboration, the partner and the template (the first 12 hex digits\n"
         "        of its hash), parameters and what was released (--json: one object per\n"
         "        session, with the data the session used and its duration). One log may\n"
         "        hold many collaborations (a node serving several, `run`s of the same\n"
         "        identity): --collaboration NAME|HASH keeps those of one, by its name\n"
         "        (the sub-directory of serve --collaborations, or the template's name)\n"
         "        or its template hash (at least 8 leading hex digits).\n\n"
         "Example:\n"
         "  cleanroom audit verify ./identity/audit.jsonl --cert ./identity/identity.crt\n"
         "  cleanroom audit show ./identity/audit.jsonl\n"
         "  cleanroom audit show ./identity/audit.jsonl --collaboration brightguard\n\n%s",
         CR_CLI_EXIT_CODES_HELP);
}

/* The receipt message of docs/protocol.md ("Finish"), rebuilt from the
 * receipt entry, so the partner's signature can be checked offline. */
int cr_cli_receipt_check(json_t *e, char *why, size_t cap) {
  const char *sid = json_string_value(json_object_get(e, "session_id"));
  const char *tr = json_string_value(json_object_get(e, "transcript_sha256"));
  const char *q = json_string_value(json_object_get(e, "query"));
  const char *pkh = json_string_value(json_object_get(e, "peer_public_key"));
  const char *sigh = json_string_value(json_object_get(e, "peer_signature"));
  json_t *nr = json_object_get(e, "n_runner"), *nresp = json_object_get(e, "n_responder");
  uint8_t sid_b[32], tr_b[32], pk[32], sig[64];
  if (!sid || !tr || !q || !pkh || !sigh || !json_is_integer(nr) || !json_is_integer(nresp) ||
      cr_hex_decode(sid_b, 32, sid) || cr_hex_decode(tr_b, 32, tr) || cr_hex_decode(pk, 32, pkh) ||
      cr_hex_decode(sig, 64, sigh)) {
    snprintf(why, cap, "receipt is missing a field or has a malformed one");
    return -1;
  }
  cr_buf m;
  cr_buf_init(&m);
  int rc;
  if (json_object_get(e, "receipt_version") != NULL) {
    /* Version 3: role, both certificates, template and both releases. */
    cr_session_receipt r;
    memset(&r, 0, sizeof r);
    const char *role = json_string_value(json_object_get(e, "signer_role"));
    const char *hx[5] = {json_string_value(json_object_get(e, "provider_cert_sha256")),
                         json_string_value(json_object_get(e, "consumer_cert_sha256")),
                         json_string_value(json_object_get(e, "template_sha256")),
                         json_string_value(json_object_get(e, "provider_released_sha256")),
                         json_string_value(json_object_get(e, "consumer_released_sha256"))};
    uint8_t *dst[5] = {r.cert_sha256[CR_ROLE_PROVIDER], r.cert_sha256[CR_ROLE_CONSUMER],
                       r.template_sha256, r.released_sha256[CR_ROLE_PROVIDER],
                       r.released_sha256[CR_ROLE_CONSUMER]};
    int bad = json_integer_value(json_object_get(e, "receipt_version")) != 3 || role == NULL ||
              cr_role_parse(role, &r.signer) != 0;
    for (int i = 0; i < 5 && !bad; i++)
      bad = hx[i] == NULL || cr_hex_decode(dst[i], 32, hx[i]) != 0;
    if (bad) {
      snprintf(why, cap, "receipt is missing a field or has a malformed one");
      cr_buf_free(&m);
      return -1;
    }
    memcpy(r.session_id, sid_b, 32);
    memcpy(r.transcript, tr_b, 32);
    r.query = q;
    r.n_runner = (uint64_t)json_integer_value(nr);
    r.n_responder = (uint64_t)json_integer_value(nresp);
    rc = cr_session_receipt_message(&m, &r);
  } else {
    rc = cr_session_receipt_message_v2(&m, sid_b, tr_b, q, (uint64_t)json_integer_value(nr),
                                       (uint64_t)json_integer_value(nresp));
  }
  int ok = rc == 0 && cr_sign_verify(pk, m.data, m.len, sig) == 0;
  cr_buf_free(&m);
  if (!ok) {
    snprintf(why, cap, "the partner's receipt signature does not verify");
    return -1;
  }
  return 0;
}

typedef struct verify_ctx {
  uint64_t line, receipts, bad_line;
  /* session_id -> {"line", "role", "sha256"}: each result_released line's
   * release hash (docs/protocol.md, "Released"), to hold against the
   * partner's receipt, which signs it. */
  json_t *released;
  char why[300];
  /* The node's own certificate and role, from its latest node_started. */
  char own_cert[CR_SHA256_HEX_BYTES], own_role[16];
  /* The node's signing key: the first node_started or checkpoint names it;
   * one log belongs to one identity, so every other must name the same. */
  char own_pk[CR_SHA256_HEX_BYTES];
  uint64_t own_pk_line;
  /* --template: its hash and pins; receipts under it must carry them. */
  const cr_template *t;
  char th[CR_SHA256_HEX_BYTES], pin[CR_ROLE_COUNT][CR_SHA256_HEX_BYTES];
  uint64_t pinned; /* receipts checked against the template's pins */
} verify_ctx;

/* A v3 receipt covers both certificates (docs/protocol.md, "Finish"):
 * this node's must be the one its node_started names, and, under the
 * template given with --template, both must be the ones it pins. */
static int receipt_pins(verify_ctx *v, json_t *e) {
  if (json_object_get(e, "receipt_version") == NULL)
    return 0; /* v2 receipts cover no certificate */
  static const char *field[CR_ROLE_COUNT] = {"provider_cert_sha256", "consumer_cert_sha256"};
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    const char *fp = json_string_value(json_object_get(e, field[r]));
    if (fp == NULL) {
      snprintf(v->why, sizeof v->why, "receipt has no %s", field[r]);
      return -1;
    }
    /* This node's role in the session is the other of the signer's (the
     * partner signed); one log may hold sessions in either role (a node
     * serving several collaborations, runs of the same identity). */
    const char *signer = json_string_value(json_object_get(e, "signer_role"));
    cr_role sr;
    int own = signer != NULL && cr_role_parse(signer, &sr) == 0
                  ? cr_role_other(sr) == (cr_role)r
                  : strcmp(v->own_role, cr_role_name((cr_role)r)) == 0;
    if (v->own_cert[0] && own && strcmp(fp, v->own_cert) != 0) {
      snprintf(v->why, sizeof v->why,
               "receipt names %s as this node's (%s) certificate, but the node started with %s", fp,
               cr_role_name((cr_role)r), v->own_cert);
      return -1;
    }
  }
  const char *th = json_string_value(json_object_get(e, "template_sha256"));
  if (v->t == NULL || th == NULL || strcmp(th, v->th) != 0)
    return 0;
  v->pinned++;
  for (int r = 0; r < CR_ROLE_COUNT; r++) {
    const char *fp = json_string_value(json_object_get(e, field[r]));
    if (strcmp(fp, v->pin[r]) != 0) {
      snprintf(v->why, sizeof v->why,
               "receipt's %s certificate %s is not the one the template pins (%s)",
               cr_role_name((cr_role)r), fp, v->pin[r]);
      return -1;
    }
  }
  return 0;
}

static int put_be(cr_buf *b, uint64_t v, int bytes) {
  uint8_t n[8];
  for (int i = 0; i < bytes; i++)
    n[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
  return cr_buf_append(b, n, (size_t)bytes);
}

/* One count of a release as the hash takes it: suppressed (0) or the
 * count; -1 when the entry holds neither. */
static int put_count(cr_buf *b, json_t *o) {
  int sup = json_is_true(json_object_get(o, "suppressed"));
  json_t *c = json_object_get(o, "count");
  if (!sup && (!json_is_integer(c) || json_integer_value(c) < 0))
    return -1;
  int rc = put_be(b, (uint64_t)sup, 1);
  return rc ? rc : put_be(b, sup ? 0 : (uint64_t)json_integer_value(c), 8);
}

/* The release hash of a result_released line (docs/protocol.md,
 * "Released"), rebuilt from its "released" object: 1 when rebuilt, 0 when
 * the line does not hold all the hash covers (a suppressed or noisy
 * release with several match keys keeps no per-key numbers), -1 when it is
 * malformed. */
static int release_hash(json_t *e, cr_role role, uint8_t out[CR_SHA256_BYTES]) {
  static const char label[] = "cleanroom/v3/released";
  const char *sid = json_string_value(json_object_get(e, "session_id"));
  json_t *rel = json_object_get(e, "released");
  uint8_t sid_b[32];
  if (sid == NULL || cr_hex_decode(sid_b, 32, sid) != 0 || rel == NULL)
    return -1;
  cr_buf b;
  cr_buf_init(&b);
  int rc = cr_buf_append(&b, label, sizeof label - 1);
  rc = rc ? rc : cr_buf_append(&b, sid_b, 32);
  rc = rc ? rc : put_be(&b, (uint64_t)role, 1);
  rc = rc ? rc : put_be(&b, json_is_object(rel), 1);
  int known = 1;
  if (rc == 0 && json_is_object(rel)) {
    json_t *cells = json_object_get(rel, "cells"), *keys = json_object_get(rel, "by_key"), *x;
    size_t i;
    rc = put_be(&b, cells != NULL, 1);
    if (rc == 0 && json_is_array(cells)) {
      rc = put_be(&b, json_array_size(cells), 4);
      json_array_foreach(cells, i, x) if (rc == 0) rc = put_count(&b, x);
    } else if (rc == 0 && cells == NULL) {
      rc = put_count(&b, rel);
      if (json_is_array(keys) && json_array_size(keys) > 1) {
        rc = rc ? rc : put_be(&b, json_array_size(keys), 1);
        json_array_foreach(keys, i, x) if (rc == 0) rc = put_count(&b, x);
      } else if (json_object_get(rel, "count_of") != NULL ||
                 json_is_true(json_object_get(rel, "suppressed"))) {
        known = 0; /* perhaps several keys, whose numbers the line does not hold */
      }
    } else if (rc == 0) {
      rc = -1;
    }
  }
  if (rc == 0)
    cr_sha256(out, b.data, b.len);
  cr_buf_free(&b);
  return rc ? -1 : known;
}

/* A result_released line: its release hash, kept for the receipt. */
static void note_release(verify_ctx *v, json_t *e) {
  const char *sid = json_string_value(json_object_get(e, "session_id"));
  const char *role = json_string_value(json_object_get(e, "role"));
  cr_role r;
  uint8_t h[CR_SHA256_BYTES];
  char hex[CR_SHA256_HEX_BYTES];
  if (sid == NULL || role == NULL || cr_role_parse(role, &r) != 0 || v->released == NULL)
    return;
  int rc = release_hash(e, r, h);
  json_t *o = json_object();
  json_object_set_new(o, "line", json_integer((json_int_t)v->line));
  json_object_set_new(o, "role", json_string(role));
  if (rc == 1) {
    cr_hex_encode(hex, h, CR_SHA256_BYTES);
    json_object_set_new(o, "sha256", json_string(hex));
  } else if (rc < 0) {
    json_object_set_new(o, "malformed", json_true());
  }
  json_object_set_new(v->released, sid, o);
}

/* A v3 receipt signs both sides' release hashes: this node's must be the
 * hash of what its result_released line says it was given, or the line
 * was edited after the partner signed (a rewrite with the node's own key
 * re-signs the checkpoints, never the partner's receipt). */
static int receipt_release(verify_ctx *v, json_t *e) {
  const char *sid = json_string_value(json_object_get(e, "session_id"));
  json_t *o = sid && v->released ? json_object_get(v->released, sid) : NULL;
  if (o == NULL || json_object_get(e, "receipt_version") == NULL)
    return 0;
  const char *role = json_string_value(json_object_get(o, "role"));
  char field[64];
  snprintf(field, sizeof field, "%s_released_sha256", role);
  const char *signed_h = json_string_value(json_object_get(e, field));
  const char *h = json_string_value(json_object_get(o, "sha256"));
  uint64_t line = (uint64_t)json_integer_value(json_object_get(o, "line"));
  if (json_is_true(json_object_get(o, "malformed")) ||
      (h != NULL && signed_h != NULL && strcmp(h, signed_h) != 0)) {
    v->bad_line = line;
    snprintf(v->why, sizeof v->why,
             "the result released (%s) is not the one the partner's receipt on line %llu signed "
             "(edited?)",
             role, (unsigned long long)v->line);
    return -1;
  }
  return 0;
}

static int verify_receipts_json(void *ctx, json_t *e);

/* The log hands over each entry's JSON text; this reads it. */
static int verify_receipts(void *ctx, const char *text, size_t len) {
  json_t *e = json_loadb(text, len, 0, NULL);
  if (e == NULL)
    return CR_EDATA;
  int rc = verify_receipts_json(ctx, e);
  json_decref(e);
  return rc;
}

static int verify_receipts_json(void *ctx, json_t *e) {
  verify_ctx *v = ctx;
  v->line++;
  const char *ev = json_string_value(json_object_get(e, "event"));
  if (ev != NULL && (strcmp(ev, "node_started") == 0 || strcmp(ev, "checkpoint") == 0)) {
    const char *pk = json_string_value(json_object_get(e, "public_key"));
    if (pk != NULL && v->own_pk[0] == 0) {
      snprintf(v->own_pk, sizeof v->own_pk, "%s", pk);
      v->own_pk_line = v->line;
    } else if (pk != NULL && strcmp(pk, v->own_pk) != 0 && v->bad_line == 0) {
      v->bad_line = v->line;
      snprintf(v->why, sizeof v->why,
               "%s names key %.16s..., but line %llu names %.16s...: one log belongs to one "
               "node (another node's lines, or a forged %s)",
               ev, pk, (unsigned long long)v->own_pk_line, v->own_pk, ev);
    }
  }
  if (ev != NULL && strcmp(ev, "node_started") == 0) {
    const char *c = json_string_value(json_object_get(e, "cert_sha256"));
    const char *r = json_string_value(json_object_get(e, "role"));
    snprintf(v->own_cert, sizeof v->own_cert, "%s", c ? c : "");
    snprintf(v->own_role, sizeof v->own_role, "%s", r ? r : "");
    return 0;
  }
  if (ev != NULL && strcmp(ev, "result_released") == 0) {
    note_release(v, e);
    return 0;
  }
  if (ev == NULL || strcmp(ev, "receipt") != 0)
    return 0;
  v->receipts++;
  if (v->bad_line == 0 &&
      (cr_cli_receipt_check(e, v->why, sizeof v->why) != 0 || receipt_pins(v, e) != 0))
    v->bad_line = v->line;
  if (v->bad_line == 0)
    (void)receipt_release(v, e);
  return 0;
}

int cr_cli_audit_receipts(const char *path, uint64_t *bad_line, char *why, size_t cap,
                          cr_error *err) {
  verify_ctx v = {0};
  v.released = json_object();
  int rc = cr_audit_foreach(path, verify_receipts, &v, err);
  json_decref(v.released);
  *bad_line = 0;
  if (rc == 0 && v.bad_line) {
    *bad_line = v.bad_line;
    snprintf(why, cap, "line %llu: %s", (unsigned long long)v.bad_line, v.why);
    return CR_EDATA;
  }
  return rc;
}

static int cmd_verify(int argc, char **argv) {
  static const struct option opts[] = {{"cert", required_argument, NULL, 'c'},
                                       {"template", required_argument, NULL, 't'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *cert = NULL, *tpath = NULL;
  int json = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'c')
      cert = optarg;
    else if (c == 't')
      tpath = optarg;
    else if (c == 'j')
      json = 1;
    else if (c == 'h') {
      audit_help();
      return EXIT_OK;
    } else
      return EXIT_USAGE;
  }
  if (optind >= argc) {
    cr_cli_errorf("audit verify", "needs FILE; see `cleanroom audit --help`");
    return EXIT_USAGE;
  }
  if (optind + 1 < argc) {
    cr_cli_errorf("audit verify", "takes one FILE, got also \"%s\"; see `cleanroom audit --help`",
                  cr_cli_safe(argv[optind + 1]));
    return EXIT_USAGE;
  }
  const char *path = argv[optind];
  cr_error err;
  cr_error_clear(&err);
  uint8_t pk[CR_SIGN_PK_BYTES], *expect = NULL;
  if (cert) {
    int rc = cr_cert_file_public_key(cert, pk, &err);
    if (rc) {
      cr_cli_errorf("audit verify", "%s: %s", cert, cr_error_message(&err, rc));
      return EXIT_USAGE;
    }
    expect = pk;
  }
  verify_ctx v = {0};
  cr_template *t = NULL;
  if (tpath) {
    int trc = cr_template_load(&t, tpath, &err);
    if (trc) {
      cr_cli_errorf("audit verify", "%s", cr_error_message(&err, trc));
      return EXIT_USAGE;
    }
    v.t = t;
    cr_hex_encode(v.th, t->sha256, CR_SHA256_BYTES);
    for (int r = 0; r < CR_ROLE_COUNT; r++)
      cr_hex_encode(v.pin[r], t->parties[r].cert_sha256, CR_SHA256_BYTES);
  }
  cr_audit_report rep;
  memset(&rep, 0, sizeof rep);
  v.released = json_object();
  int rc = cr_audit_verify(path, expect, &rep, &err);
  if (rc == 0) {
    rc = cr_audit_foreach(path, verify_receipts, &v, &err);
    if (rc == 0 && v.bad_line) {
      rc = CR_EDATA;
      rep.bad_line = v.bad_line;
      snprintf(rep.reason, sizeof rep.reason, "line %llu: %s", (unsigned long long)v.bad_line,
               v.why);
    }
  }
  if (rc == 0 && expect != NULL && rep.checkpoints == 0) {
    rc = CR_EDATA;
    snprintf(rep.reason, sizeof rep.reason,
             "no signed checkpoint: nothing in the log is signed by this node");
  }
  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "ok", json_boolean(rc == 0));
    json_object_set_new(o, "lines", json_integer((json_int_t)rep.lines));
    json_object_set_new(o, "events", json_integer((json_int_t)rep.events));
    json_object_set_new(o, "checkpoints", json_integer((json_int_t)rep.checkpoints));
    json_object_set_new(o, "receipts", json_integer((json_int_t)v.receipts));
    if (t != NULL)
      json_object_set_new(o, "receipts_pinned", json_integer((json_int_t)v.pinned));
    json_object_set_new(o, "unsigned_tail", json_integer((json_int_t)rep.unsigned_tail));
    json_object_set_new(o, "torn_tail", json_boolean(rep.torn_tail));
    json_object_set_new(o, "head", json_string(rep.head));
    if (rc) {
      json_object_set_new(o, "bad_line", json_integer((json_int_t)rep.bad_line));
      json_object_set_new(o, "reason",
                          json_string(rep.reason[0] ? rep.reason : cr_error_message(&err, rc)));
    }
    cr_cli_json_print(o);
  } else if (rc == 0) {
    printf("%s: OK: %llu lines, %llu events, %llu signed checkpoints, %llu partner receipts "
           "verified%s\n",
           path, (unsigned long long)rep.lines, (unsigned long long)rep.events,
           (unsigned long long)rep.checkpoints, (unsigned long long)v.receipts,
           rep.unsigned_tail ? " (the last entries are not yet covered by a checkpoint)" : "");
    if (t != NULL)
      printf("%s: %llu receipt(s) under template %s carry the certificates it pins\n", path,
             (unsigned long long)v.pinned, v.th);
  } else {
    /* The module's messages name the file already; the reasons do not. */
    if (rep.reason[0])
      cr_cli_errorf("audit verify", "%s: %s", path, rep.reason);
    else
      cr_cli_errorf("audit verify", "%s", cr_error_message(&err, rc));
  }
  cr_template_free(t);
  json_decref(v.released);
  return rc == 0 ? EXIT_OK : (rc == CR_EIO ? EXIT_USAGE : EXIT_DATA);
}

/* ---- show --------------------------------------------------------------- */

typedef struct show_ctx {
  int json;
  json_t *sessions; /* session_id -> summary object, in order of first sight */
  json_t *order;
} show_ctx;

static json_t *session_of(show_ctx *sc, json_t *e) {
  const char *sid = json_string_value(json_object_get(e, "session_id"));
  const char *rid = json_string_value(json_object_get(e, "run_id"));
  char key[64];
  /* The run id ties a responder's admission (no session id yet) to the
   * session's end; receipts carry only the session id. */
  if (rid != NULL) {
    json_t *s = json_object_get(sc->sessions, rid);
    if (s != NULL) {
      if (sid != NULL && json_object_get(sc->sessions, sid) == NULL)
        json_object_set(sc->sessions, sid, s);
      if (sid != NULL)
        json_object_set_new(s, "session_id", json_string(sid));
      return s;
    }
    if (sid == NULL)
      sid = rid;
  }
  if (sid == NULL) {
    /* Refused before a session id existed: a row of its own. */
    snprintf(key, sizeof key, "seq %lld", (long long)json_integer_value(json_object_get(e, "seq")));
    sid = key;
  }
  json_t *s = json_object_get(sc->sessions, sid);
  if (s == NULL) {
    s = json_object();
    json_object_set_new(s, "session_id", json_string(sid));
    json_object_set(sc->sessions, sid, s);
    json_array_append_new(sc->order, s);
  }
  if (rid != NULL && json_object_get(sc->sessions, rid) == NULL)
    json_object_set(sc->sessions, rid, s);
  return s;
}

static int show_entry_json(void *ctx, json_t *e);

/* The log hands over each entry's JSON text; this reads it. */
static int show_entry(void *ctx, const char *text, size_t len) {
  json_t *e = json_loadb(text, len, 0, NULL);
  if (e == NULL)
    return CR_EDATA;
  int rc = show_entry_json(ctx, e);
  json_decref(e);
  return rc;
}

static int show_entry_json(void *ctx, json_t *e) {
  show_ctx *sc = ctx;
  const char *ev = json_string_value(json_object_get(e, "event"));
  if (ev == NULL)
    return 0;
  if (strcmp(ev, "session_started") == 0 || strcmp(ev, "result_released") == 0 ||
      strcmp(ev, "session_aborted") == 0 || strcmp(ev, "result_withheld") == 0) {
    json_t *s = session_of(sc, e);
    if (s == NULL)
      return 0;
    const char *keys[] = {"query",
                          "role",
                          "params",
                          "own_set_size",
                          "peer_set_size",
                          "collaboration",
                          "template_sha256",
                          "partner",
                          "partner_cert_sha256",
                          "data",
                          "duration_ms"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
      json_t *v = json_object_get(e, keys[i]);
      if (v)
        json_object_set(s, keys[i], v);
    }
    if (strcmp(ev, "session_started") == 0)
      json_object_set(s, "time", json_object_get(e, "time"));
    if (strcmp(ev, "result_released") == 0) {
      json_object_set_new(s, "status", json_string("completed"));
      json_object_set(s, "released", json_object_get(e, "released"));
    }
    if (strcmp(ev, "session_aborted") == 0 || strcmp(ev, "result_withheld") == 0) {
      if (json_object_get(s, "time") == NULL)
        json_object_set(s, "time", json_object_get(e, "time"));
      json_object_set_new(s, "status", json_string(ev[7] == 'w' ? "withheld" : "aborted"));
      json_t *why = json_object_get(e, "reason");
      if (why != NULL)
        json_object_set(s, "reason", why);
    }
  } else if (strcmp(ev, "receipt") == 0) {
    json_t *s = session_of(sc, e);
    if (s && json_object_get(e, "peer_cert_sha256"))
      json_object_set(s, "partner_cert_sha256", json_object_get(e, "peer_cert_sha256"));
  }
  return 0;
}

static void released_text(json_t *rel, char *buf, size_t cap) {
  if (rel == NULL || json_is_null(rel)) {
    snprintf(buf, cap, "nothing to this side");
  } else if (json_object_get(rel, "cells")) {
    size_t n = json_array_size(json_object_get(rel, "cells")), sup = 0;
    json_t *c;
    size_t i;
    json_array_foreach(json_object_get(rel, "cells"), i, c) sup +=
        json_is_true(json_object_get(c, "suppressed"));
    snprintf(buf, cap, "%zu cells (%zu suppressed)", n, sup);
  } else if (json_is_true(json_object_get(rel, "suppressed"))) {
    snprintf(buf, cap, "suppressed (< %lld)",
             (long long)json_integer_value(json_object_get(rel, "min_count")));
  } else {
    json_t *rows = json_object_get(rel, "rows");
    long long count = (long long)json_integer_value(json_object_get(rel, "count"));
    if (rows)
      snprintf(buf, cap, "count %lld, %lld rows written", count,
               (long long)json_integer_value(rows));
    else
      snprintf(buf, cap, "count %lld", count);
  }
}

/* --collaboration X: the session's collaboration is named X, or its
 * template hash is X or starts with it (8 hex digits at least). */
static int show_keep(json_t *s, const char *want) {
  if (want == NULL)
    return 1;
  const char *name = json_string_value(json_object_get(s, "collaboration"));
  const char *th = json_string_value(json_object_get(s, "template_sha256"));
  size_t n = strlen(want);
  if (name != NULL && strcmp(name, want) == 0)
    return 1;
  return th != NULL && n >= 8 && strncasecmp(th, want, n) == 0;
}

static int cmd_show(int argc, char **argv) {
  static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                       {"collaboration", required_argument, NULL, 'C'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  show_ctx sc = {0};
  const char *want = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'j')
      sc.json = 1;
    else if (c == 'C')
      want = optarg;
    else if (c == 'h') {
      audit_help();
      return EXIT_OK;
    } else
      return EXIT_USAGE;
  }
  if (optind >= argc) {
    cr_cli_errorf("audit show", "needs FILE; see `cleanroom audit --help`");
    return EXIT_USAGE;
  }
  if (optind + 1 < argc) {
    cr_cli_errorf("audit show", "takes one FILE, got also \"%s\"; see `cleanroom audit --help`",
                  cr_cli_safe(argv[optind + 1]));
    return EXIT_USAGE;
  }
  cr_error err;
  cr_error_clear(&err);
  sc.sessions = json_object();
  sc.order = json_array();
  int rc = cr_audit_foreach(argv[optind], show_entry, &sc, &err);
  if (rc) {
    cr_cli_errorf("audit show", "%s", cr_error_message(&err, rc));
    json_decref(sc.sessions);
    json_decref(sc.order);
    return rc == CR_EIO ? EXIT_USAGE : EXIT_DATA;
  }
  size_t i;
  json_t *s;
  if (!sc.json)
    printf("%-24s %-10s %-22s %-10s %-20s %-20s %-12s %-28s %s\n", "time", "status", "query",
           "role", "collaboration", "partner", "template", "params", "released");
  json_array_foreach(sc.order, i, s) {
    if (!show_keep(s, want))
      continue;
    if (sc.json) {
      char *t = json_dumps(s, JSON_COMPACT);
      printf("%s\n", t ? t : "{}");
      free(t);
      continue;
    }
    char params[64] = "", rel[96];
    const char *k;
    json_t *v;
    size_t len = 0;
    json_object_foreach(json_object_get(s, "params"), k, v) {
      const char *pv = json_string_value(v);
      len +=
          (size_t)snprintf(params + len, len < sizeof params ? sizeof params - len : 0, "%s%s=%s",
                           len ? " " : "", cr_cli_safe(k), cr_cli_safe(pv ? pv : "?"));
      if (len >= sizeof params)
        break;
    }
    released_text(json_object_get(s, "released"), rel, sizeof rel);
    const char *status = json_string_value(json_object_get(s, "status"));
    const char *collab = json_string_value(json_object_get(s, "collaboration"));
    const char *partner = json_string_value(json_object_get(s, "partner"));
    const char *th = json_string_value(json_object_get(s, "template_sha256"));
    const char *tm = json_string_value(json_object_get(s, "time"));
    const char *qn = json_string_value(json_object_get(s, "query"));
    const char *role = json_string_value(json_object_get(s, "role"));
    const char *why = json_string_value(json_object_get(s, "reason"));
    /* Every string is shown as text: the log's strings came from the
     * partner and the template (cr_cli_safe escapes control characters). */
    printf(
        "%-24s %-10s %-22s %-10s %-20.20s %-20.20s %-12.12s %-28s %s\n", tm ? cr_cli_safe(tm) : "?",
        status ? status : "started", qn ? cr_cli_safe(qn) : "-", role ? cr_cli_safe(role) : "-",
        collab ? cr_cli_safe(collab) : "-", partner ? cr_cli_safe(partner) : "-",
        th ? cr_cli_safe(th) : "-", params[0] ? params : "-",
        status && strcmp(status, "completed") != 0 ? (why ? cr_cli_safe(why) : "no reason recorded")
                                                   : rel);
  }
  json_decref(sc.sessions);
  json_decref(sc.order);
  return EXIT_OK;
}

int cr_cli_audit_cmd(int argc, char **argv) {
  const char *sub = argc >= 2 ? argv[1] : NULL;
  if (sub && strcmp(sub, "verify") == 0)
    return cmd_verify(argc - 1, argv + 1);
  if (sub && strcmp(sub, "show") == 0)
    return cmd_show(argc - 1, argv + 1);
  if (sub && (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)) {
    audit_help();
    return EXIT_OK;
  }
  cr_cli_errorf("audit", "expected `audit verify FILE` or `audit show FILE`");
  return EXIT_USAGE;
}
