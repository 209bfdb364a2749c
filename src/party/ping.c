/*
 * ping: is the partner's node there, and would a session with it work?
 *
 * TLS 1.3 with the certificate the template pins for the partner, then a
 * Hello exchange with no query and no data (nothing loaded on either side,
 * no set size). The report says what was found and, when something is
 * wrong, which problem it is, from error codes and structured fields: the
 * wire error, the certificate the partner presented, the template hash and
 * protocol version it sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "party/party_internal.h"

const char *cr_ping_problem_name(cr_ping_problem p) {
  if (p == CR_PING_NONE)
    return NULL;
  switch (p) {
#define CR__PING_NAME(name, text)                                                                  \
  case CR_PING_##name:                                                                             \
    return text;
    CR_PING_PROBLEM_MAP(CR__PING_NAME)
#undef CR__PING_NAME
  }
  return "error";
}

static double ms_since(uint64_t t0_ns) { return (double)(uv_hrtime() - t0_ns) / 1e6; }

static cr_ping_problem wire_problem(int wire, cr_ping_problem fallback) {
  switch (wire) {
  case CR_WIRE_TEMPLATE_MISMATCH:
    return CR_PING_TEMPLATE_MISMATCH;
  case CR_WIRE_VERSION:
    return CR_PING_PROTOCOL_VERSION;
  case CR_WIRE_ROLE:
    return CR_PING_ROLE;
  case CR_WIRE_SUITE:
    return CR_PING_SUITE;
  case CR_WIRE_BUSY:
    return CR_PING_BUSY;
  case CR_WIRE_NOT_ALLOWED:
    return CR_PING_REFUSED_BY_PEER;
  default:
    return fallback;
  }
}

/* What went wrong, from the codes, and whether TCP connected. */
static void diagnose(cr_party *p, cr_party_ping_report *r, const cr_session_result *res) {
  const uint8_t *pin = p->t->parties[cr_role_other(p->role)].cert_sha256;
  r->reachable = 1;
  if (r->rc == 0 && res != NULL && res->status == CR_SESSION_DONE && res->ping) {
    r->problem = CR_PING_NONE;
    return;
  }
  switch (r->rc) {
  case CR_EDNS:
    r->problem = CR_PING_DNS;
    r->reachable = 0;
    break;
  case CR_ECONNREFUSED:
    r->problem = CR_PING_REFUSED;
    r->reachable = 0;
    break;
  case CR_ENET:
    /* Before TLS: no route (the node names DNS and refusals itself). */
    r->problem = r->tcp_ok ? CR_PING_CONNECTION_LOST : CR_PING_UNREACHABLE;
    r->reachable = r->tcp_ok;
    break;
  case CR_ECONNRESET:
    r->problem = CR_PING_CONNECTION_LOST;
    break;
  case CR_ETIMEDOUT:
    r->problem = CR_PING_TIMEOUT;
    r->reachable = r->tcp_ok;
    break;
  case CR_ETLS:
    r->problem = CR_PING_TLS;
    break;
  case CR_EAUTH:
    /* The partner presented the pinned certificate, so it refused ours. */
    r->problem = r->have_peer_fp && memcmp(r->peer_fp, pin, CR_SHA256_BYTES) == 0
                     ? CR_PING_OUR_CERTIFICATE_REJECTED
                     : CR_PING_WRONG_CERTIFICATE;
    break;
  case CR_EPEER:
    r->problem = wire_problem(r->wire_error, CR_PING_PEER_ERROR);
    break;
  case CR_EREFUSED:
    r->problem = wire_problem(r->wire_error, CR_PING_REFUSED_BY_PEER);
    break;
  case CR_EPROTO:
    r->problem = CR_PING_PROTOCOL;
    break;
  default:
    r->problem = CR_PING_ERROR;
    break;
  }
}

static void ping_record(cr_party *p, const cr_party_ping_report *r) {
  if (!p->trail.open)
    return;
  json_t *ev = json_object();
  char hex[CR_SHA256_HEX_BYTES];
  json_object_set_new(ev, "peer", cr__jtext(p->address));
  json_object_set_new(ev, "role", cr__jtext(cr_role_name(p->role)));
  json_object_set_new(ev, "template_sha256", cr__jtext(p->trail.th));
  json_object_set_new(ev, "ok", json_boolean(r->problem == CR_PING_NONE));
  if (r->have_peer_fp) {
    cr_hex_encode(hex, r->peer_fp, CR_SHA256_BYTES);
    json_object_set_new(ev, "peer_cert_sha256", cr__jtext(hex));
  }
  if (r->have_peer_template) {
    cr_hex_encode(hex, r->peer_template, CR_SHA256_BYTES);
    json_object_set_new(ev, "peer_template_sha256", cr__jtext(hex));
  }
  if (r->peer_software[0])
    json_object_set_new(ev, "peer_software", cr__jtext(r->peer_software));
  if (r->problem != CR_PING_NONE) {
    json_object_set_new(ev, "problem", cr__jtext(cr_ping_problem_name(r->problem)));
    json_object_set_new(ev, "error", cr__jtext(cr_err_name(r->rc)));
    if (r->wire_error)
      json_object_set_new(ev, "wire_error", cr__jtext(cr_wire_error_name(r->wire_error)));
    json_object_set_new(ev, "reason", cr__jtext(r->message));
  }
  cr_error ae;
  cr_error_clear(&ae);
  if (cr__trail_event(&p->trail, "ping", ev, &ae) != 0 || cr__trail_checkpoint(&p->trail, &ae) != 0)
    snprintf(p->notes[CR_PARTY_NOTE_AUDIT], sizeof p->notes[0], "cannot write the audit log %s: %s",
             p->audit_path, ae.msg);
}

static void ping_connected(void *ctx, const char *peer_addr, const uint8_t *peer_fp) {
  cr_party *p = ctx;
  p->ping.tls_ok = 1;
  p->ping.tcp_ok = 1;
  p->ping.connect_ms = ms_since(p->ping_t0);
  p->ping_tls = uv_hrtime();
  if (peer_fp) {
    memcpy(p->ping.peer_fp, peer_fp, CR_SHA256_BYTES);
    p->ping.have_peer_fp = 1;
  }
  if (peer_addr)
    snprintf(p->ping.peer_addr, sizeof p->ping.peer_addr, "%s", peer_addr);
}

static void ping_session(void *ctx, const cr_session_result *res, const char *peer_addr,
                         const uint8_t *peer_fp) {
  cr_party *p = ctx;
  (void)res;
  if (peer_fp && !p->ping.have_peer_fp) {
    memcpy(p->ping.peer_fp, peer_fp, CR_SHA256_BYTES);
    p->ping.have_peer_fp = 1;
  }
  if (peer_addr && !p->ping.peer_addr[0])
    snprintf(p->ping.peer_addr, sizeof p->ping.peer_addr, "%s", peer_addr);
}

static void ping_tcp(void *ctx, const char *peer_addr) {
  cr_party *p = ctx;
  p->ping.tcp_ok = 1;
  if (peer_addr && !p->ping.peer_addr[0])
    snprintf(p->ping.peer_addr, sizeof p->ping.peer_addr, "%s", peer_addr);
}

static void ping_closed(void *ctx, int rc, const cr_error *err, cr_session_result *res) {
  cr_party *p = ctx;
  cr_party_ping_report *r = &p->ping;
  char *msg = p->ping_msg;
  r->total_ms = ms_since(p->ping_t0);
  r->rc = rc ? rc : (res && res->status == CR_SESSION_FAILED ? res->error : 0);
  snprintf(msg, sizeof p->ping_msg, "%s", r->rc ? cr_error_message(err, r->rc) : "");
  r->message = msg;
  if (res != NULL) {
    r->wire_error = res->wire_error;
    if (res->peer_protocol_version)
      r->peer_version = res->peer_protocol_version;
    if (res->have_peer_template) {
      memcpy(r->peer_template, res->peer_template_sha256, CR_SHA256_BYTES);
      r->have_peer_template = 1;
    }
    snprintf(r->peer_software, sizeof r->peer_software, "%s", res->peer_software);
  }
  diagnose(p, r, res);
  if (r->tls_ok && (r->rc == CR_EAUTH || r->rc == CR_ETLS))
    r->tls_ok = 0;
  r->rtt_ms =
      r->tls_ok && r->problem == CR_PING_NONE ? (double)(uv_hrtime() - p->ping_tls) / 1e6 : -1;
  if (!r->tls_ok)
    r->connect_ms = -1;
  /* Failed before anything went out (no TCP, not the network's fault). */
  r->local = r->rc != 0 && !r->tcp_ok && !r->reachable && r->problem == CR_PING_ERROR;
  ping_record(p, r);
  p->running = 0;
  if (res != NULL) /* before the node that holds it */
    cr_session_result_free_outputs(res);
  cr_node_free(p->node);
  p->node = NULL;
  if (p->on_ping_done)
    p->on_ping_done(p->ev.ctx, r);
  if (p->ev.on_closed)
    p->ev.on_closed(p->ev.ctx, rc, err, NULL);
}

int cr_party_ping(cr_party *p, uv_loop_t *loop, unsigned timeout_ms,
                  void (*on_ping_done)(void *ctx, const cr_party_ping_report *r),
                  const cr_party_events *ev, cr_error *err) {
  if (p->mode != CR_PARTY_PING || loop == NULL)
    return cr_error_set(err, CR_EINVAL, "party: ping needs a party opened to ping");
  if (p->running || p->node != NULL)
    return cr_error_set(err, CR_EINVAL, "party: already running");
  p->loop = loop;
  if (ev)
    p->ev = *ev;
  p->on_ping_done = on_ping_done;
  memset(&p->ping, 0, sizeof p->ping);
  p->ping.connect_ms = p->ping.rtt_ms = -1;
  cr__party_node_base(p, timeout_ms);
  cr_session_config *sc = &p->nc.session;
  sc->is_runner = 1;
  sc->ping = 1; /* Hello only: no query, no data, no size */
  p->nc.on_connected = ping_connected;
  p->nc.on_session = ping_session;
  p->nc.on_tcp_connected = ping_tcp;
  p->nc.on_closed = ping_closed;
  p->ping_t0 = uv_hrtime();
  int rc = cr_node_run_start(&p->node, loop, &p->nc, err);
  if (rc)
    return rc;
  p->running = 1;
  return 0;
}

const char *cr_party_ping_advice(const cr_party *p, const cr_party_ping_report *r) {
  switch (r->problem) {
  case CR_PING_NONE:
    return NULL;
  case CR_PING_TIMEOUT:
    return r->reachable
               ? "the port accepted the connection but TLS did not complete in time: is it a "
                 "cleanroom node, or is it overloaded? (raise --timeout to wait longer)"
               : "no answer to the connection in time: a firewall may drop the packets, or the "
                 "host is down; check the address and port, or raise --timeout";
  case CR_PING_DNS:
    return "check the host name (the template's parties.<role>.address or --peer)";
  case CR_PING_REFUSED:
    return "the host answered but nothing listens on that port: is the partner's "
           "`cleanroom serve` running, and on this port?";
  case CR_PING_UNREACHABLE:
    return "no route to the host: check the address, VPN and firewalls";
  case CR_PING_TLS:
    return "something answered but did not complete TLS 1.3 with us: is it a cleanroom "
           "node (not a proxy or another service)?";
  case CR_PING_WRONG_CERTIFICATE:
    return "the node that answered is not the partner this template pins: wrong address, "
           "or the partner created a new identity; compare fingerprints with the partner "
           "and re-pin the template (`cleanroom template pin`)";
  case CR_PING_OUR_CERTIFICATE_REJECTED:
    return p->role == CR_ROLE_CONSUMER
               ? "the partner's template does not pin this node's certificate for the "
                 "consumer: send it your fingerprint (`cleanroom fingerprint "
                 "DIR/identity.crt`) and agree one template"
               : "the partner's template does not pin this node's certificate for the "
                 "provider: send it your fingerprint and agree one template";
  case CR_PING_TEMPLATE_MISMATCH:
    return "the two nodes loaded different templates (or the partner's node serves no "
           "collaboration with this template for this node): compare `cleanroom template "
           "hash` on both sides and exchange the same file";
  case CR_PING_PROTOCOL_VERSION:
    return "upgrade the older node";
  case CR_PING_ROLE:
    return "both nodes claim the same role: each identity must be pinned for its own role";
  case CR_PING_BUSY:
    return "the partner's node is at its session limit; try again later";
  default:
    return NULL;
  }
}
