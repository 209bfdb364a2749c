/*
 * ping: is the partner's node there, and would a session with it work?
 *
 * Connects, completes TLS 1.3 with the certificate the template pins for
 * the partner, exchanges Hello with no query and no data (a ping session:
 * no set size, no point, nothing loaded on either side), and reports what
 * it found: reachable or not, whose certificate answered, whether the
 * templates agree, protocol versions, software and timings. Every failure
 * gets a diagnosis and what to do about it.
 *
 * Exit codes: 0 the partner answered and everything agrees; 5 not
 * reachable (DNS, refused, unreachable, timeout) or a TLS / protocol
 * failure; 4 a wrong certificate, a different template, or another
 * refusal; 2 a local problem (flags, template, identity).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/node_audit.h"
#include "cleanroom/template_sig.h"

typedef struct ping_ctx {
  struct timespec t0, t_tls, t_end;
  int tls_done, ended;
  uint8_t peer_fp[CR_SHA256_BYTES];
  int have_peer_fp;
  char peer_addr[128];
  /* How the node ended (on_closed). */
  int closed_rc;
  cr_error closed_err;
  cr_session_result res;
} ping_ctx;

static void ping_on_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  ping_ctx *p = ctx;
  p->closed_rc = rc;
  if (err != NULL)
    p->closed_err = *err;
  if (res != NULL)
    p->res = *res; /* its outputs are ours now */
}

static double ms_between(const struct timespec *a, const struct timespec *b) {
  return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static void ping_on_connected(void *ctx, const char *peer_addr, const uint8_t *peer_fp) {
  ping_ctx *p = ctx;
  clock_gettime(CLOCK_MONOTONIC, &p->t_tls);
  p->tls_done = 1;
  if (peer_fp) {
    memcpy(p->peer_fp, peer_fp, CR_SHA256_BYTES);
    p->have_peer_fp = 1;
  }
  if (peer_addr)
    snprintf(p->peer_addr, sizeof p->peer_addr, "%s", peer_addr);
}

static void ping_on_session(void *ctx, const cr_session_result *res, const char *peer_addr,
                            const uint8_t *peer_fp) {
  ping_ctx *p = ctx;
  (void)res;
  clock_gettime(CLOCK_MONOTONIC, &p->t_end);
  p->ended = 1;
  if (peer_fp && !p->have_peer_fp) {
    memcpy(p->peer_fp, peer_fp, CR_SHA256_BYTES);
    p->have_peer_fp = 1;
  }
  if (peer_addr && !p->peer_addr[0])
    snprintf(p->peer_addr, sizeof p->peer_addr, "%s", peer_addr);
}

static int all_zero(const uint8_t *b, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= b[i];
  return acc == 0;
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The first run of exactly 64 hex digits in msg that is not `not`: the
 * partner's template hash in a TEMPLATE_MISMATCH refusal, which names both
 * (the wire error carries no structured field for it). */
static int other_hash_in(const char *msg, const char * not, char out[CR_SHA256_HEX_BYTES]) {
  for (const char *s = msg; *s;) {
    if (!is_hex(*s)) {
      s++;
      continue;
    }
    const char *e = s;
    while (is_hex(*e))
      e++;
    if (e - s == 64 && strncasecmp(s, not, 64) != 0) {
      for (int i = 0; i < 64; i++)
        out[i] = (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 'a' : s[i]);
      out[64] = '\0';
      return 0;
    }
    s = e;
  }
  return -1;
}

/* "this node speaks N" in the partner's VERSION refusal is its version
 * (the fallback when the result carries no peer_protocol_version). */
static unsigned version_in(const char *msg) {
  const char *p = strstr(msg, "this node speaks ");
  return p ? (unsigned)strtoul(p + strlen("this node speaks "), NULL, 10) : 0;
}

/* What went wrong, in one word, and whether the TCP connection was made. */
typedef struct diagnosis {
  const char *problem; /* NULL when all is well */
  int reachable;       /* TCP connected */
} diagnosis;

/* A session refused over the wire, by either side (from_peer: the partner
 * sent the Error frame): which check failed. */
static const char *wire_problem(int wire, int from_peer) {
  switch (wire) {
  case CR_WIRE_TEMPLATE_MISMATCH:
    return "template_mismatch";
  case CR_WIRE_VERSION:
    return "protocol_version";
  case CR_WIRE_ROLE:
    return "role";
  case CR_WIRE_SUITE:
    return "suite";
  case CR_WIRE_BUSY:
    return from_peer ? "busy" : "refused_by_peer";
  case CR_WIRE_NOT_ALLOWED:
    return "refused_by_peer";
  default:
    return from_peer ? "peer_error" : "refused_by_peer";
  }
}

/* From codes and the result's fields; tls_done: the partner passed the TLS
 * handshake with the pinned certificate (on_connected fired); expected: the
 * pin, seen: the certificate it presented (NULL if none). */
static diagnosis diagnose(int rc, const cr_session_result *res, int tls_done,
                          const uint8_t *expected, const uint8_t *seen, const char *msg) {
  diagnosis d = {NULL, 1};
  if (rc == 0 && res->status == CR_SESSION_DONE && res->ping)
    return d;
  switch (rc) {
  case CR_EDNS:
    d.problem = "dns";
    d.reachable = 0;
    break;
  case CR_ECONNREFUSED:
    d.problem = "refused";
    d.reachable = 0;
    break;
  case CR_ENET:
    /* Before TLS, a network error other than the above is a failed connect
     * (no route to the host or network); after it, a lost connection. */
    d.problem = tls_done ? "connection_lost" : "unreachable";
    d.reachable = tls_done;
    break;
  case CR_ECONNRESET:
    d.problem = "connection_lost";
    break;
  case CR_ETIMEDOUT:
    d.problem = "timeout";
    /* No field says whether TCP had connected when the time ran out: the
     * node's message does ("cannot connect" while connecting). */
    d.reachable = tls_done || strstr(msg, "cannot connect") == NULL;
    break;
  case CR_ETLS:
    d.problem = "tls";
    break;
  case CR_EAUTH:
    /* The partner showed the pinned certificate, so it refused ours. */
    d.problem = seen != NULL && memcmp(seen, expected, CR_SHA256_BYTES) == 0
                    ? "our_certificate_rejected"
                    : "wrong_certificate";
    break;
  case CR_EPEER:
  case CR_EREFUSED:
    d.problem = wire_problem(res->wire_error, res->error_from_peer);
    break;
  case CR_EPROTO:
    d.problem = "protocol";
    break;
  default:
    d.problem = "error";
    break;
  }
  return d;
}

static int exit_for(const diagnosis *d, int rc, int wire) {
  if (d->problem == NULL)
    return EXIT_OK;
  if (!d->reachable || strcmp(d->problem, "timeout") == 0)
    return EXIT_NETWORK;
  if (strcmp(d->problem, "wrong_certificate") == 0 ||
      strcmp(d->problem, "our_certificate_rejected") == 0 ||
      strcmp(d->problem, "template_mismatch") == 0)
    return EXIT_REFUSED;
  return cr_cli_exit_code(rc, wire);
}

/* The advice printed under a failed ping. */
static const char *advice(const diagnosis *d, cr_role role) {
  const char *problem = d->problem;
  if (problem == NULL)
    return NULL;
  if (!strcmp(problem, "timeout") && d->reachable)
    return "the port accepted the connection but TLS did not complete in time: is it a "
           "cleanroom node, or is it overloaded? (raise --timeout to wait longer)";
  if (!strcmp(problem, "dns"))
    return "check the host name (the template's parties.provider.address or --peer)";
  if (!strcmp(problem, "refused"))
    return "the host answered but nothing listens on that port: is the partner's "
           "`cleanroom serve` running, and on this port?";
  if (!strcmp(problem, "unreachable"))
    return "no route to the host: check the address, VPN and firewalls";
  if (!strcmp(problem, "timeout"))
    return "no answer to the connection in time: a firewall may drop the packets, or the "
           "host is down; check the address and port, or raise --timeout";
  if (!strcmp(problem, "tls"))
    return "something answered but did not complete TLS 1.3 with us: is it a cleanroom "
           "node (not a proxy or another service)?";
  if (!strcmp(problem, "wrong_certificate"))
    return "the node that answered is not the partner this template pins: wrong address, "
           "or the partner created a new identity; compare fingerprints with the partner "
           "and re-pin the template (`cleanroom template pin`)";
  if (!strcmp(problem, "our_certificate_rejected"))
    return role == CR_ROLE_CONSUMER
               ? "the partner's template does not pin this node's certificate for the "
                 "consumer: send it your fingerprint (`cleanroom fingerprint "
                 "DIR/identity.crt`) and agree one template"
               : "the partner's template does not pin this node's certificate for the "
                 "provider: send it your fingerprint and agree one template";
  if (!strcmp(problem, "template_mismatch"))
    return "the two nodes loaded different templates: compare `cleanroom template hash` "
           "on both sides and exchange the same file";
  if (!strcmp(problem, "protocol_version"))
    return "upgrade the older node";
  if (!strcmp(problem, "role"))
    return "both nodes claim the same role: each identity must be pinned for its own role";
  if (!strcmp(problem, "busy"))
    return "the partner's node is at its session limit; try again later";
  return NULL;
}

static void ping_help(void) {
  printf("Usage: cleanroom ping --template T --identity DIR [--peer HOST:PORT]\n"
         "                      [--timeout SEC] [--json] [--audit FILE]\n\n"
         "Checks the way to the partner's node without running a query: connects,\n"
         "completes TLS 1.3 with the certificate the template pins for the partner,\n"
         "exchanges Hello (no data, no set size) and reports:\n"
         "  - whether the partner is reachable (DNS, connection refused, timeout),\n"
         "  - whose certificate answered (expected and seen fingerprints),\n"
         "  - whether both nodes loaded the same template (both hashes),\n"
         "  - protocol versions and the partner's software,\n"
         "  - timings: rtt_ms, from the end of TLS to the end of the session (Hello\n"
         "    out, Hello back, close), and total_ms (DNS, TCP connect, TLS\n"
         "    handshake and the rest; connect_ms is the part up to the end of TLS).\n"
         "--peer defaults to the partner's address in the template. --timeout\n"
         "(default 10) bounds connecting and the handshake. --json prints one object:\n"
         "reachable, peer, tls {expected_cert_sha256, seen_cert_sha256, ok}, template\n"
         "{ours, theirs, agree}, protocol_version {ours, theirs}, peer_software, rtt_ms,\n"
         "total_ms, and problem and error when something is wrong.\n"
         "The ping is recorded in this node's audit log (DIR/audit.jsonl, or --audit\n"
         "FILE); if that log is in use by a running node, it is skipped with a note.\n"
         "The partner's serving node answers without loading its data.\n\n"
         "Example:\n"
         "  cleanroom ping --template template.json --identity ./identity \\\n"
         "      --peer acme.example:7443\n\n"
         "Exit codes for ping:\n"
         "  0  the partner answered; certificate, template and versions agree\n"
         "  2  a local problem (flags, template, identity)\n"
         "  4  a wrong certificate (either side's), a different template, or another\n"
         "     refusal by the partner\n"
         "  5  not reachable (DNS, refused, unreachable, timeout), or a TLS or\n"
         "     protocol failure\n");
}

int cr_cli_ping(int argc, char **argv) {
  static const struct option opts[] = {
      {"template", required_argument, NULL, 't'}, {"identity", required_argument, NULL, 'i'},
      {"peer", required_argument, NULL, 'p'},     {"timeout", required_argument, NULL, 'T'},
      {"json", no_argument, NULL, 'j'},           {"audit", required_argument, NULL, 'A'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  const char *tpath = NULL, *identity = NULL, *peer = NULL, *audit_opt = NULL;
  unsigned timeout_ms = 0;
  int json = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 't':
      tpath = optarg;
      break;
    case 'i':
      identity = optarg;
      break;
    case 'p':
      peer = optarg;
      break;
    case 'j':
      json = 1;
      break;
    case 'A':
      audit_opt = optarg;
      break;
    case 'T': {
      char *end = NULL;
      errno = 0;
      unsigned long v = strtoul(optarg, &end, 10);
      if (errno || end == optarg || *end || v == 0 || v > 3600) {
        cr_cli_errorf("ping", "--timeout takes seconds from 1 to 3600, got \"%s\"", optarg);
        return EXIT_USAGE;
      }
      timeout_ms = (unsigned)v * 1000u;
      break;
    }
    case 'h':
      ping_help();
      return EXIT_OK;
    default:
      fprintf(stderr, "Run `cleanroom ping --help` for the options.\n");
      return EXIT_USAGE;
    }
  }
  if (optind < argc) {
    cr_cli_errorf("ping", "unexpected argument \"%s\"", argv[optind]);
    return EXIT_USAGE;
  }
  if (!tpath || !identity) {
    cr_cli_errorf("ping", "%s is required; see `cleanroom ping --help`",
                  !tpath ? "--template FILE" : "--identity DIR");
    return EXIT_USAGE;
  }

  int rc, code = EXIT_OK;
  cr_error err;
  cr_error_clear(&err);
  cr_template *t = NULL;
  cr_identity *id = NULL;
  cr_role role;
  cr_cli_audit audit;
  char *audit_path = NULL;
  memset(&audit, 0, sizeof audit);

  if (cr_crypto_init() != 0) {
    cr_cli_errorf("ping", "libsodium failed to initialise");
    return EXIT_INTERNAL;
  }
  if ((rc = cr_template_load(&t, tpath, &err)) != 0) {
    /* Unreadable or invalid, it is a local problem (2), never the network's. */
    cr_cli_errorf("ping", "%s", cr_error_message(&err, rc));
    return EXIT_USAGE;
  }
  if ((rc = cr_identity_load(&id, identity, &err)) != 0) {
    cr_cli_errorf("ping", "%s", cr_error_message(&err, rc));
    code = EXIT_USAGE;
    goto out;
  }
  if (cr_template_role_of(t, cr_identity_fingerprint(id), &role) != 0) {
    char own[CR_SHA256_HEX_BYTES], pp[CR_SHA256_HEX_BYTES], cc[CR_SHA256_HEX_BYTES];
    cr_hex_encode(own, cr_identity_fingerprint(id), CR_SHA256_BYTES);
    cr_hex_encode(pp, t->parties[CR_ROLE_PROVIDER].cert_sha256, CR_SHA256_BYTES);
    cr_hex_encode(cc, t->parties[CR_ROLE_CONSUMER].cert_sha256, CR_SHA256_BYTES);
    cr_cli_errorf("ping",
                  "this identity (%s, certificate %s) is not a party of template %s: the "
                  "provider pins %s and the consumer pins %s; put your fingerprint in the "
                  "template (`cleanroom template pin`) and agree it with the partner",
                  identity, own, tpath, pp, cc);
    code = EXIT_USAGE;
    goto out;
  }
  cr_role other = cr_role_other(role);
  if (peer == NULL)
    peer = t->parties[other].address;
  if (peer == NULL) {
    cr_cli_errorf("ping",
                  "--peer HOST:PORT is required: the template gives no address for "
                  "the %s (parties.%s.address)",
                  cr_role_name(other), cr_role_name(other));
    code = EXIT_USAGE;
    goto out;
  }

  /* A template serve and run would refuse for its signatures: say so, but
   * ping anyway (the ping itself does not need them). */
  char sig_note[600] = "";
  {
    char *sp = cr_template_sig_path(t);
    cr_error se;
    cr_error_clear(&se);
    int src = sp ? cr_template_require_sigs(t, sp, &se) : 0;
    if (src)
      snprintf(sig_note, sizeof sig_note, "%s", cr_error_message(&se, src));
    free(sp);
  }

  /* The audit log is this node's record; a ping is worth a line in it, but
   * never worth failing the ping (a serving node may hold the log). */
  audit_path = audit_opt ? strdup(audit_opt) : cr_cli_audit_default_path(identity);
  char audit_note[1400] = "";
  if (audit_path == NULL || (rc = cr_cli_audit_open(&audit, audit_path, id, t, &err)) != 0) {
    snprintf(audit_note, sizeof audit_note, "not recorded in the audit log %s: %s",
             audit_path ? audit_path : "", cr_error_message(&err, rc ? rc : CR_ENOMEM));
    memset(&audit, 0, sizeof audit);
  }

  ping_ctx pc;
  memset(&pc, 0, sizeof pc);
  cr_node_config nc = {0};
  nc.session.tmpl = t;
  nc.id = id;
  nc.session.data = NULL;
  nc.session.role = role;
  nc.address = peer;
  nc.session.ping = 1; /* no query, no data */
  nc.handshake_timeout_ms = timeout_ms;
  nc.idle_timeout_ms = timeout_ms;
  nc.session.software = CR_SOFTWARE;
  nc.on_session = ping_on_session;
  nc.on_connected = ping_on_connected;
  nc.on_closed = ping_on_closed;
  nc.ctx = &pc;

  if (!json)
    fprintf(stderr, "%s ping: this node is the %s (%s); pinging the %s (%s) at %s\n", CR_CLI_PROG,
            cr_role_name(role), t->parties[role].org, cr_role_name(other), t->parties[other].org,
            peer);
  cr_session_result res;
  memset(&res, 0, sizeof res);
  clock_gettime(CLOCK_MONOTONIC, &pc.t0);
  uv_loop_t loop;
  cr_node *node = NULL;
  if ((rc = uv_loop_init(&loop)) < 0) {
    cr_cli_errorf("ping", "cannot start the event loop: %s", uv_strerror(rc));
    code = EXIT_INTERNAL;
    goto out;
  }
  rc = cr_node_run_start(&node, &loop, &nc, &err);
  if (rc != 0) {
    /* Refused before anything went out (the address, the identity, the
     * template): a local problem. */
    (void)uv_loop_close(&loop);
    cr_cli_errorf("ping", "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_node_free(node);
  (void)uv_loop_close(&loop);
  rc = pc.closed_rc;
  if (rc != 0)
    err = pc.closed_err;
  res = pc.res;
  if (!pc.ended)
    clock_gettime(CLOCK_MONOTONIC, &pc.t_end);
  const char *msg = rc ? cr_error_message(&err, rc) : "";
  diagnosis d = diagnose(rc, &res, pc.tls_done, t->parties[other].cert_sha256,
                         pc.have_peer_fp ? pc.peer_fp : NULL, msg);
  code = exit_for(&d, rc, res.wire_error);

  /* What is known about the other side. */
  char ours_t[CR_SHA256_HEX_BYTES], theirs_t[CR_SHA256_HEX_BYTES] = "";
  cr_hex_encode(ours_t, t->sha256, CR_SHA256_BYTES);
  if (!all_zero(res.peer_template_sha256, CR_SHA256_BYTES))
    cr_hex_encode(theirs_t, res.peer_template_sha256, CR_SHA256_BYTES);
  else if (d.problem && !strcmp(d.problem, "template_mismatch"))
    (void)other_hash_in(msg, ours_t, theirs_t);
  int agree = d.problem == NULL                                        ? 1
              : (d.problem && !strcmp(d.problem, "template_mismatch")) ? 0
                                                                       : -1;
  unsigned their_version = res.peer_protocol_version;
  if (their_version == 0 && d.problem && !strcmp(d.problem, "protocol_version"))
    their_version = version_in(msg);
  int tls_ok = pc.tls_done && rc != CR_EAUTH && rc != CR_ETLS;
  char expect_fp[CR_SHA256_HEX_BYTES], seen_fp[CR_SHA256_HEX_BYTES] = "",
                                       own_fp[CR_SHA256_HEX_BYTES];
  cr_hex_encode(expect_fp, t->parties[other].cert_sha256, CR_SHA256_BYTES);
  cr_hex_encode(own_fp, cr_identity_fingerprint(id), CR_SHA256_BYTES);
  if (pc.have_peer_fp)
    cr_hex_encode(seen_fp, pc.peer_fp, CR_SHA256_BYTES);
  double total_ms = ms_between(&pc.t0, &pc.t_end);
  double connect_ms = pc.tls_done ? ms_between(&pc.t0, &pc.t_tls) : -1;
  double rtt_ms = pc.tls_done && d.problem == NULL ? ms_between(&pc.t_tls, &pc.t_end) : -1;

  /* The pinging node's audit line. */
  if (audit.open) {
    json_t *ev = json_object();
    json_object_set_new(ev, "peer", json_string(peer));
    json_object_set_new(ev, "role", json_string(cr_role_name(role)));
    json_object_set_new(ev, "template_sha256", json_string(ours_t));
    json_object_set_new(ev, "ok", json_boolean(d.problem == NULL));
    if (seen_fp[0])
      json_object_set_new(ev, "peer_cert_sha256", json_string(seen_fp));
    if (theirs_t[0])
      json_object_set_new(ev, "peer_template_sha256", json_string(theirs_t));
    if (res.peer_software[0])
      json_object_set_new(ev, "peer_software", json_string(res.peer_software));
    if (d.problem) {
      json_object_set_new(ev, "problem", json_string(d.problem));
      json_object_set_new(ev, "error", json_string(cr_err_name(rc ? rc : res.error)));
      if (res.wire_error)
        json_object_set_new(ev, "wire_error", json_string(cr_wire_error_name(res.wire_error)));
      json_object_set_new(ev, "reason", json_string(msg));
    }
    cr_error ae;
    cr_error_clear(&ae);
    if (cr_cli_audit_event(&audit, "ping", ev, &ae) != 0 ||
        cr_cli_audit_checkpoint(&audit, &ae) != 0)
      snprintf(audit_note, sizeof audit_note, "cannot write the audit log %s: %s", audit_path,
               ae.msg);
  }

  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "reachable", json_boolean(d.reachable));
    json_object_set_new(o, "peer", json_string(peer));
    if (pc.peer_addr[0] && strcmp(pc.peer_addr, peer) != 0)
      json_object_set_new(o, "peer_ip", json_string(pc.peer_addr));
    json_object_set_new(o, "role", json_string(cr_role_name(role)));
    json_t *tl = json_object();
    json_object_set_new(tl, "expected_cert_sha256", json_string(expect_fp));
    if (seen_fp[0])
      json_object_set_new(tl, "seen_cert_sha256", json_string(seen_fp));
    json_object_set_new(tl, "ok", json_boolean(tls_ok));
    if (d.problem && !strcmp(d.problem, "our_certificate_rejected")) {
      json_object_set_new(tl, "own_cert_sha256", json_string(own_fp));
      json_object_set_new(tl, "own_cert_rejected", json_true());
    }
    json_object_set_new(o, "tls", tl);
    json_t *tj = json_object();
    json_object_set_new(tj, "ours", json_string(ours_t));
    if (theirs_t[0])
      json_object_set_new(tj, "theirs", json_string(theirs_t));
    json_object_set_new(tj, "agree", agree < 0 ? json_null() : json_boolean(agree));
    json_object_set_new(o, "template", tj);
    json_t *pv = json_object();
    json_object_set_new(pv, "ours", json_integer(CR_PROTOCOL_VERSION));
    json_object_set_new(pv, "theirs",
                        their_version ? json_integer((json_int_t)their_version) : json_null());
    json_object_set_new(o, "protocol_version", pv);
    json_object_set_new(o, "peer_software",
                        res.peer_software[0] ? json_string(res.peer_software) : json_null());
    json_object_set_new(o, "rtt_ms", rtt_ms >= 0 ? json_real(rtt_ms) : json_null());
    json_object_set_new(o, "connect_ms", connect_ms >= 0 ? json_real(connect_ms) : json_null());
    json_object_set_new(o, "total_ms", json_real(total_ms));
    if (d.problem) {
      json_object_set_new(o, "problem", json_string(d.problem));
      json_object_set_new(o, "error", json_string(msg));
      const char *a = advice(&d, role);
      if (a)
        json_object_set_new(o, "advice", json_string(a));
    }
    if (sig_note[0])
      json_object_set_new(o, "signatures", json_string(sig_note));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
    if (s)
      printf("%s\n", s);
    free(s);
    json_decref(o);
  } else {
    const char *yes = "ok  ", *no = "FAIL", *unk = "--  ";
    int said = 0; /* the error message has been shown */
    /* reachable */
    if (d.reachable)
      printf("%s reachable: %s%s%s%s\n", yes, peer,
             pc.peer_addr[0] && strcmp(pc.peer_addr, peer) ? " (" : "",
             pc.peer_addr[0] && strcmp(pc.peer_addr, peer) ? pc.peer_addr : "",
             pc.peer_addr[0] && strcmp(pc.peer_addr, peer) ? ")" : "");
    else {
      printf("%s reachable: %s: %s\n", no, peer, msg);
      said = 1;
    }
    /* TLS and certificate */
    if (tls_ok)
      printf("%s certificate: the %s (%s) answered with the pinned certificate %s\n", yes,
             cr_role_name(other), t->parties[other].org, expect_fp);
    else if (d.problem && !strcmp(d.problem, "wrong_certificate"))
      printf("%s certificate: not the one the template pins for the %s\n"
             "       expected %s\n       seen     %s\n",
             no, cr_role_name(other), expect_fp, seen_fp[0] ? seen_fp : "(none)");
    else if (d.problem && !strcmp(d.problem, "our_certificate_rejected"))
      printf("%s certificate: the partner's node refused this node's certificate %s\n"
             "       (the %s presented %s, as pinned)\n",
             no, own_fp, cr_role_name(other), seen_fp[0] ? seen_fp : "(none)");
    else if (d.reachable && d.problem && !pc.tls_done) {
      printf("%s certificate: TLS did not complete: %s\n", no, msg);
      said = 1;
    } else
      printf("%s certificate: not checked (expected %s)\n", unk, expect_fp);
    /* template */
    if (agree == 1)
      printf("%s template: both nodes loaded %s\n", yes, ours_t);
    else if (agree == 0)
      printf("%s template: the partner loaded a different template\n"
             "       ours   %s\n       theirs %s\n",
             no, ours_t, theirs_t[0] ? theirs_t : "(unknown)");
    else
      printf("%s template: not compared (ours %s)\n", unk, ours_t);
    /* protocol */
    if (their_version)
      printf("%s protocol: version %u here, %u there%s%s\n",
             their_version == CR_PROTOCOL_VERSION ? yes : no, CR_PROTOCOL_VERSION, their_version,
             res.peer_software[0] ? "; partner runs " : "",
             res.peer_software[0] ? res.peer_software : "");
    else
      printf("%s protocol: version %u here, the partner's not known\n", unk, CR_PROTOCOL_VERSION);
    if (d.problem == NULL) {
      printf("%s round trip: %.1f ms from the end of TLS to the end of the session (Hello\n"
             "       out, Hello back, close); %.1f ms in total (DNS, TCP connect and TLS 1.3\n"
             "       handshake %.1f ms, then the Hello exchange)\n",
             yes, rtt_ms, total_ms, connect_ms);
      printf("ping OK: the %s is ready; a query can run\n", cr_role_name(other));
    } else {
      if (!said && strcmp(d.problem, "wrong_certificate") &&
          strcmp(d.problem, "our_certificate_rejected") && strcmp(d.problem, "template_mismatch"))
        printf("%s %s\n", no, msg);
      const char *a = advice(&d, role);
      printf("ping FAILED (%s)%s%s\n", d.problem, a ? ": " : "", a ? a : "");
    }
  }
  if (sig_note[0])
    fprintf(stderr, "%s ping: note: serve and run would refuse this template: %s\n", CR_CLI_PROG,
            sig_note);
  if (audit_note[0])
    fprintf(stderr, "%s ping: note: %s\n", CR_CLI_PROG, audit_note);
  cr_session_result_free_outputs(&res);

out:
  cr_cli_audit_close(&audit);
  free(audit_path);
  cr_identity_free(id);
  cr_template_free(t);
  return code;
}
