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
 * refusal; 6 the partner's node is busy; 2 a local problem (flags,
 * template, identity).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "cli/cli.h"
#include "cleanroom/party.h"

typedef struct ping_ctx {
  cr_party_ping_report r;
  int done;
} ping_ctx;

static void on_ping_done(void *ctx, const cr_party_ping_report *r) {
  ping_ctx *pc = ctx;
  pc->r = *r;
  pc->done = 1;
}

/* Exit code of a ping's problem. */
static int exit_for(const cr_party_ping_report *r) {
  if (r->problem == CR_PING_NONE)
    return EXIT_OK;
  if (!r->reachable || r->problem == CR_PING_TIMEOUT)
    return EXIT_NETWORK;
  if (r->problem == CR_PING_WRONG_CERTIFICATE || r->problem == CR_PING_OUR_CERTIFICATE_REJECTED ||
      r->problem == CR_PING_TEMPLATE_MISMATCH)
    return EXIT_REFUSED;
  return cr_cli_exit_code(r->rc, r->wire_error);
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
         "FILE), which a running node of this identity may share. The partner's serving\n"
         "node answers without loading its data; a node serving many collaborations\n"
         "answers for the one whose template is this one (the ping carries its hash).\n\n"
         "Example:\n"
         "  cleanroom ping --template template.json --identity ./identity \\\n"
         "      --peer acme.example:7443\n\n"
         "Exit codes for ping:\n"
         "  0  the partner answered; certificate, template and versions agree\n"
         "  2  a local problem (flags, template, identity)\n"
         "  4  a wrong certificate (either side's), a different template, or another\n"
         "     refusal by the partner\n"
         "  5  not reachable (DNS, refused, unreachable, timeout), or a TLS or\n"
         "     protocol failure\n"
         "  6  the partner's node is busy (at its session limit): try again later\n");
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
      unsigned long v;
      if (cr_cli_parse_uint("ping", "--timeout", "seconds from", optarg, 1, 3600, &v) != 0)
        return EXIT_USAGE;
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
  cr_party *party = NULL;
  uv_loop_t loop;
  int loop_live = 0;
  cr_party_config cfg = {0};
  cfg.mode = CR_PARTY_PING;
  cfg.template_path = tpath;
  cfg.identity_dir = identity;
  cfg.audit_path = audit_opt;
  cfg.address = peer;
  cfg.software = CR_SOFTWARE;
  if ((rc = cr_party_open(&party, &cfg, &err)) != 0) {
    /* Template, identity, role or address: a local problem (2). */
    cr_cli_errorf("ping", "%s", cr_error_message(&err, rc));
    return rc == CR_ENOMEM ? EXIT_INTERNAL : EXIT_USAGE;
  }
  const cr_template *t = cr_party_template(party);
  cr_role role = cr_party_role(party), other = cr_role_other(role);
  peer = cr_party_address(party);
  const char *sig_note = cr_party_note(party, CR_PARTY_NOTE_SIGNATURES);

  if (!json)
    fprintf(stderr, "%s ping: this node is the %s (%s); pinging the %s (%s) at %s\n", CR_CLI_PROG,
            cr_role_name(role), t->parties[role].org, cr_role_name(other), t->parties[other].org,
            peer);
  if ((rc = uv_loop_init(&loop)) < 0) {
    cr_cli_errorf("ping", "cannot start the event loop: %s", uv_strerror(rc));
    code = EXIT_INTERNAL;
    goto out;
  }
  loop_live = 1;
  ping_ctx pc;
  memset(&pc, 0, sizeof pc);
  cr_party_events ev = {0};
  ev.ctx = &pc;
  if ((rc = cr_party_ping(party, &loop, timeout_ms, on_ping_done, &ev, &err)) != 0) {
    /* Failed before anything went out: a local problem. */
    cr_cli_errorf("ping", "%s", cr_error_message(&err, rc));
    code = cr_cli_exit_code(rc, 0);
    goto out;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (!pc.done) {
    cr_cli_errorf("ping", "the ping ended without a report");
    code = EXIT_INTERNAL;
    goto out;
  }
  const cr_party_ping_report *r = &pc.r;
  const char *msg = cr_cli_safe(r->message);
  const char *problem = cr_ping_problem_name(r->problem);
  code = exit_for(r);

  char ours_t[CR_SHA256_HEX_BYTES], theirs_t[CR_SHA256_HEX_BYTES] = "";
  cr_hex_encode(ours_t, t->sha256, CR_SHA256_BYTES);
  if (r->have_peer_template)
    cr_hex_encode(theirs_t, r->peer_template, CR_SHA256_BYTES);
  int agree = r->problem == CR_PING_NONE ? 1 : r->problem == CR_PING_TEMPLATE_MISMATCH ? 0 : -1;
  unsigned their_version = r->peer_version;
  int tls_ok = r->tls_ok;
  char expect_fp[CR_SHA256_HEX_BYTES], seen_fp[CR_SHA256_HEX_BYTES] = "",
                                       own_fp[CR_SHA256_HEX_BYTES];
  cr_hex_encode(expect_fp, t->parties[other].cert_sha256, CR_SHA256_BYTES);
  cr_hex_encode(own_fp, cr_identity_fingerprint(cr_party_identity(party)), CR_SHA256_BYTES);
  if (r->have_peer_fp)
    cr_hex_encode(seen_fp, r->peer_fp, CR_SHA256_BYTES);
  double total_ms = r->total_ms, connect_ms = r->connect_ms, rtt_ms = r->rtt_ms;
  const char *peer_ip = r->peer_addr;
  const char *audit_note = cr_party_note(party, CR_PARTY_NOTE_AUDIT);

  if (json) {
    json_t *o = json_object();
    json_object_set_new(o, "reachable", json_boolean(r->reachable));
    json_object_set_new(o, "peer", json_string(peer));
    if (peer_ip[0] && strcmp(peer_ip, peer) != 0)
      json_object_set_new(o, "peer_ip", json_string(peer_ip));
    json_object_set_new(o, "role", json_string(cr_role_name(role)));
    json_t *tl = json_object();
    json_object_set_new(tl, "expected_cert_sha256", json_string(expect_fp));
    if (seen_fp[0])
      json_object_set_new(tl, "seen_cert_sha256", json_string(seen_fp));
    json_object_set_new(tl, "ok", json_boolean(tls_ok));
    if (r->problem == CR_PING_OUR_CERTIFICATE_REJECTED) {
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
                        r->peer_software[0] ? cr_cli_jtext(r->peer_software) : json_null());
    json_object_set_new(o, "rtt_ms", rtt_ms >= 0 ? json_real(rtt_ms) : json_null());
    json_object_set_new(o, "connect_ms", connect_ms >= 0 ? json_real(connect_ms) : json_null());
    json_object_set_new(o, "total_ms", json_real(total_ms));
    if (problem) {
      json_object_set_new(o, "problem", json_string(problem));
      json_object_set_new(o, "error", cr_cli_jtext(msg));
      const char *a = cr_party_ping_advice(party, r);
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
    if (r->reachable)
      printf("%s reachable: %s%s%s%s\n", yes, peer,
             peer_ip[0] && strcmp(peer_ip, peer) != 0 ? " (" : "",
             peer_ip[0] && strcmp(peer_ip, peer) != 0 ? peer_ip : "",
             peer_ip[0] && strcmp(peer_ip, peer) != 0 ? ")" : "");
    else {
      printf("%s reachable: %s: %s\n", no, peer, msg);
      said = 1;
    }
    /* TLS and certificate */
    if (tls_ok)
      printf("%s certificate: the %s (%s) answered with the pinned certificate %s\n", yes,
             cr_role_name(other), t->parties[other].org, expect_fp);
    else if (r->problem == CR_PING_WRONG_CERTIFICATE)
      printf("%s certificate: not the one the template pins for the %s\n"
             "       expected %s\n       seen     %s\n",
             no, cr_role_name(other), expect_fp, seen_fp[0] ? seen_fp : "(none)");
    else if (r->problem == CR_PING_OUR_CERTIFICATE_REJECTED)
      printf("%s certificate: the partner's node refused this node's certificate %s\n"
             "       (the %s presented %s, as pinned)\n",
             no, own_fp, cr_role_name(other), seen_fp[0] ? seen_fp : "(none)");
    else if (r->reachable && problem && !r->tls_ok) {
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
             their_version == CR_PROTOCOL_VERSION ? yes : no, (unsigned)CR_PROTOCOL_VERSION,
             their_version, r->peer_software[0] ? "; partner runs " : "",
             r->peer_software[0] ? cr_cli_safe(r->peer_software) : "");
    else
      printf("%s protocol: version %u here, the partner's not known\n", unk,
             (unsigned)CR_PROTOCOL_VERSION);
    if (problem == NULL) {
      printf("%s round trip: %.1f ms from the end of TLS to the end of the session (Hello\n"
             "       out, Hello back, close); %.1f ms in total (DNS, TCP connect and TLS 1.3\n"
             "       handshake %.1f ms, then the Hello exchange)\n",
             yes, rtt_ms, total_ms, connect_ms);
      printf("ping OK: the %s is ready; a query can run\n", cr_role_name(other));
    } else {
      if (!said && strcmp(problem, "wrong_certificate") != 0 &&
          strcmp(problem, "our_certificate_rejected") != 0 &&
          strcmp(problem, "template_mismatch") != 0)
        printf("%s %s\n", no, msg);
      const char *a = cr_party_ping_advice(party, r);
      printf("ping FAILED (%s)%s%s\n", problem, a ? ": " : "", a ? a : "");
    }
  }
  if (sig_note[0])
    fprintf(stderr, "%s ping: note: serve and run would refuse this template: %s\n", CR_CLI_PROG,
            sig_note);
  if (audit_note[0])
    fprintf(stderr, "%s ping: note: %s\n", CR_CLI_PROG, audit_note);

out:
  if (loop_live && uv_loop_close(&loop) != 0)
    cr_cli_errorf("ping", "the event loop still held handles at exit");
  cr_party_close(party);
  return code;
}
