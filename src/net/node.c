/*
 * The network node (design §2): libuv, TCP, TLS through memory BIOs, and a
 * cr_session per connection.
 *
 * The loop thread only moves bytes: socket -> TLS -> plaintext buffer, and
 * session output -> TLS -> socket. Everything that calls into the session
 * (cr_session_new, recv and send, which do the hashing and blinding) runs on
 * the libuv thread pool, one work item per connection at a time, so several
 * connections compute in parallel and the loop never stalls. A work item
 * feeds at most CR_NODE_WORK_INPUT bytes and makes one cr_session_send call,
 * so output streams out while the next chunk is computed. Output is
 * produced only while less than CR_NODE_MAX_UNSENT bytes wait for the
 * socket, and the socket is not read while CR_NODE_MAX_INPUT bytes of
 * plaintext wait for the session: a slow or hostile peer costs bounded
 * memory. It costs bounded time too: the node follows the peer's frame
 * lengths (never their contents), and only a whole frame, or an answer of
 * ours, restarts the idle timer, so trickling a byte at a time does not
 * keep a session open.
 *
 * Serve caps sessions in progress at max_sessions: a partner past the cap
 * completes TLS and is sent a BUSY Error frame (built with the protocol
 * layer's framing; no session is created for it) so that its `run` can say
 * "busy, retry later".
 *
 * Availability (net.h, "Connections before authentication"): strangers must
 * not be able to keep the pinned partner out. A new connection is always
 * accepted; what makes room is the OLDEST connection that has not
 * authenticated (per source address first, then overall), never the
 * newest, so a partner that connects gets its handshake whatever the number
 * of idle or failed connections held open. Those get a short deadline of
 * their own (accept_ms) and a short linger after a failed handshake, and the
 * open connections have a hard cap (conn_cap) derived from the config and
 * the fd limit, so descriptors and memory stay bounded.
 *
 * Several collaborations on one listener (cfg->route): TLS accepts any
 * certificate cfg->pinned() accepts; the session of a connection is created
 * only once its first frame (the runner's Hello) has arrived, with the
 * configuration the router picks from the partner's certificate and the
 * template hash that Hello names (cr_session_hello_template, the protocol
 * layer's: the node still never reads a frame itself). Until then nothing
 * is computed for the connection; its idle timer runs.
 *
 * Lifetime: a connection is freed only once its TCP handle and timer are
 * closed (close callbacks) and no work item or DNS request is in flight;
 * cfg->on_session is called exactly once, just before. The node runs on the
 * caller's loop and fires cfg->on_closed once its listener, its timer and
 * every connection are gone; that call is always the last thing a callback
 * does (the callee may free the node), and it never comes from inside a
 * cr_node_* call. A start that fails has opened no handle and made no
 * request, so the caller's loop closes without running.
 * Never: prints or logs (callbacks and cr_error only), reads a frame (only
 * its length prefix), blocks the loop on crypto, creates a loop, installs a
 * signal handler or changes process-wide state (SIGPIPE is the program's to
 * ignore: see net.h).
 */
#include "cleanroom/net.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#define CR_NODE_READ_BUF 65536
#define CR_NODE_MAX_UNSENT (4u << 20) /* ciphertext queued for the socket */
#define CR_NODE_MAX_INPUT (4u << 20)  /* plaintext waiting for the session */
#define CR_NODE_WORK_INPUT (1u << 20) /* plaintext fed per work item */
#define CR_NODE_DRAIN_CAP (64u << 20) /* final output of an ended session */
#define CR_NODE_LINGER_MS 5000        /* graceful close, at most */
#define CR_NODE_UNAUTH_LINGER_MS 1000 /* after a failed handshake: the alert */
/* How long a node that is stopping waits at most for the partner to close
 * after our last frame (cr_node_set_stop_linger). */
static _Atomic unsigned g_stop_linger_ms = CR_NODE_LINGER_MS;

void cr_node_set_stop_linger(unsigned ms) { g_stop_linger_ms = ms; }
#define CR_NODE_DEFAULT_HANDSHAKE_MS 10000
#define CR_NODE_DEFAULT_ACCEPT_MS 5000 /* serve: accepted connection to TLS */
#define CR_NODE_DEFAULT_MAX_PENDING 64
#define CR_NODE_KEEPALIVE_S 60
#define CR_NODE_FD_RESERVE 64 /* fds left to the process besides connections */
#define CR_NODE_DEFAULT_IDLE_MS 30000
#define CR_NODE_DEFAULT_MAX_SESSIONS 16
#define CR_NODE_BACKLOG 128
#define CR_ADDR_MAX 80

typedef struct cr_node node;
typedef struct conn conn;

enum phase { PH_RESOLVE, PH_CONNECT, PH_HANDSHAKE, PH_SESSION };

struct conn {
  node *n;
  conn *prev, *next;
  enum phase phase;

  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  uv_work_t work;
  struct addrinfo *ai, *ai_cur;
  int last_connect_err;

  /* What is alive; the connection is freed when all of it is gone. */
  int tcp_live, timer_live, gai_busy, work_busy;

  int connected;     /* TCP established */
  int reading;       /* uv_read_start active */
  int peer_eof;      /* the peer will send nothing more */
  int write_failed;  /* the socket cannot be written */
  int tls_broken;    /* no more TLS records can be produced */
  int shutdown_sent; /* uv_shutdown issued: no more writes */
  int shutdown_done;
  int closing; /* graceful close started */
  int closed;  /* handles being closed */
  int handshake_done;
  int auth_reached;  /* passed or failed certificate authentication */
  int busy;          /* past max_sessions: refused with a BUSY Error frame */
  int routed;        /* route(): the router chose this connection's session */
  int route_refused; /* route() refused it: the partner gets the fixed text */
  void *route_conn;  /* route()'s handle for it */
  unsigned idle_ms;  /* this connection's idle timeout */
  int counted;       /* counts in node.nsessions */
  int rx_any;        /* the peer has sent at least one byte */

  /* Frame boundaries in the peer's plaintext (length prefixes only; the
   * session decodes), so that the idle timer measures progress in whole
   * frames: a peer trickling a byte at a time cannot hold a session open. */
  uint8_t rx_hdr[4];
  unsigned rx_hdr_len;
  uint32_t rx_frame_len;
  uint64_t rx_left; /* payload bytes of the current frame still to come */
  int rx_untracked; /* an invalid length was announced: the session fails it */

  cr_tls *tls;
  cr_session *s;
  cr_session_config scfg;

  /* A failure noticed while a work item held the session. */
  int abort_pending, abort_code, abort_wire;
  char abort_msg[CR_ERROR_MSG_MAX];

  cr_buf in_plain; /* loop thread: plaintext from the peer */
  cr_buf work_in;  /* worker: plaintext being fed to the session */
  cr_buf work_out; /* worker: bytes the session produced */
  size_t work_budget;
  int work_rc;
  cr_error work_err;

  cr_session_result local; /* the result when there is no session */
  int have_local;

  char peer_addr[CR_ADDR_MAX];
  char peer_ip[CR_ADDR_MAX]; /* serve: the source address, for its cap */
  uint8_t peer_fp[CR_SHA256_BYTES];
  int have_peer_fp;
  uint8_t peer_pk[CR_SIGN_PK_BYTES];

  char rbuf[CR_NODE_READ_BUF];
};

struct cr_node {
  uv_loop_t *loop; /* the caller's */
  const cr_node_config *cfg;
  cr_tls_ctx *tls;
  int serving;
  const uint8_t *pin;
  const char *peer_role;
  unsigned handshake_ms, idle_ms, max_sessions;
  /* Serve, before authentication: the deadline, the caps (overall and per
   * source address) and the hard cap on open connections. */
  unsigned accept_ms, max_pending, max_pending_ip, conn_cap;

  conn *conns;
  unsigned nconns;
  unsigned nsessions; /* serve: connections past TLS running a session */

  uv_tcp_t listener;
  int listener_live;
  uv_timer_t tick; /* serve: reports listening from the loop */
  int tick_live;
  char bound[CR_ADDR_MAX];
  int stopping;
  int closed_fired; /* on_closed has been called */

  /* Serve with once: the first connection past TLS decides. */
  int once_done;
  int once_rc;
  cr_error once_err;

  /* Run: the one connection's outcome; the result's heap outputs go to
   * on_closed. */
  int run_done;
  int run_rc;
  cr_session_result run_res;
  cr_error run_err;
};

typedef struct wreq {
  uv_write_t req;
  conn *c;
  uint8_t data[];
} wreq;

static void conn_pump(conn *c);
static void conn_begin_close(conn *c);
static void conn_close_handles(conn *c);
static void conn_maybe_free(conn *c);
static void conn_fail(conn *c, int code, int wire, const char *fmt, ...) CR_PRINTF(4, 5);
static void conn_refuse_busy(conn *c);
static void node_stop(node *n);
static void node_maybe_closed(node *n);
static void on_timer(uv_timer_t *t);
static void conn_route(conn *c);
static cr_session_config node_session_config(const node *n);

/* Serve with a router: past TLS, waiting for the first frame to route. */
static int conn_awaits_route(const conn *c) {
  return c->n->cfg->route != NULL && !c->routed && !c->have_local && c->phase == PH_SESSION;
}

/* ---- helpers ------------------------------------------------------------- */

static void format_sockaddr(const struct sockaddr *sa, char *out, size_t cap) {
  char ip[64] = "?";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(out, cap, "%s:%d", ip, port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(out, cap, "[%s]:%d", ip, port);
  } else {
    snprintf(out, cap, "?");
  }
}

/* "host:port" or "[v6]:port". An empty host is allowed (serve: any). */
static int parse_hostport(const char *addr, char *host, size_t hcap, char *port, size_t pcap,
                          cr_error *err) {
  const char *colon;
  size_t hlen;
  if (addr == NULL || addr[0] == '\0')
    return cr_error_set(err, CR_EUSAGE, "no address given (expected HOST:PORT)");
  if (addr[0] == '[') {
    const char *close = strchr(addr, ']');
    if (close == NULL || close[1] != ':')
      return cr_error_set(err, CR_EUSAGE, "%s: expected [IPv6]:PORT", addr);
    hlen = (size_t)(close - addr - 1);
    if (hlen >= hcap)
      return cr_error_set(err, CR_EUSAGE, "%s: host name too long", addr);
    memcpy(host, addr + 1, hlen);
    colon = close + 1;
  } else {
    colon = strrchr(addr, ':');
    if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
      return cr_error_set(err, CR_EUSAGE,
                          "%s: expected HOST:PORT (write IPv6 addresses as [::1]:PORT)", addr);
    hlen = (size_t)(colon - addr);
    if (hlen >= hcap)
      return cr_error_set(err, CR_EUSAGE, "%s: host name too long", addr);
    memcpy(host, addr, hlen);
  }
  host[hlen] = '\0';
  const char *p = colon + 1;
  size_t plen = strlen(p);
  long v = 0;
  if (plen == 0 || plen > 5 || plen >= pcap)
    return cr_error_set(err, CR_EUSAGE, "%s: the port must be a number 0-65535", addr);
  for (size_t i = 0; i < plen; i++) {
    if (p[i] < '0' || p[i] > '9')
      return cr_error_set(err, CR_EUSAGE, "%s: the port must be a number 0-65535", addr);
    v = v * 10 + (p[i] - '0');
  }
  if (v > 65535)
    return cr_error_set(err, CR_EUSAGE, "%s: the port must be a number 0-65535", addr);
  memcpy(port, p, plen + 1);
  return 0;
}

/* The CR_E* of a socket error: fine enough to act on (nothing listens,
 * the peer reset the connection, a timeout), ENET for the rest. */
static int net_code(int uverr) {
  switch (uverr) {
  case UV_ECONNREFUSED:
    return CR_ECONNREFUSED;
  case UV_ECONNRESET:
  case UV_EPIPE:
  case UV_ECONNABORTED:
    return CR_ECONNRESET;
  case UV_ETIMEDOUT:
    return CR_ETIMEDOUT;
  case UV_ENOMEM:
    return CR_ENOMEM;
  default:
    return CR_ENET;
  }
}

/* The CR_E* of a name resolution error. */
static int dns_code(int uverr) { return uverr == UV_EAI_MEMORY ? CR_ENOMEM : CR_EDNS; }

/* Copies a message, cutting it to fit (messages are for people: a cut
 * message beats none). */
static void copy_msg(char *dst, size_t cap, const char *src) {
  size_t n = strnlen(src, cap - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static void set_local(conn *c, int code, const char *msg) {
  if (c->have_local)
    return;
  const cr_node_config *cfg = c->n->cfg;
  memset(&c->local, 0, sizeof c->local);
  c->local.status = CR_SESSION_FAILED;
  c->local.role = c->routed ? c->scfg.role : cfg->session.role;
  c->local.is_runner = !c->n->serving;
  if (!c->n->serving && cfg->session.query != NULL)
    copy_msg(c->local.query, sizeof c->local.query, cfg->session.query);
  c->local.error = code;
  copy_msg(c->local.error_msg, sizeof c->local.error_msg, msg);
  c->have_local = 1;
}

static size_t conn_unsent(const conn *c) {
  size_t q = c->tcp_live ? uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp) : 0;
  return q + (c->tls != NULL ? cr_tls_pending(c->tls) : 0);
}

static void conn_timer(conn *c, unsigned ms) {
  if (c->timer_live && !c->closed)
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static size_t node_max_frame(const node *n) {
  return n->cfg->session.max_frame ? n->cfg->session.max_frame : CR_DEFAULT_MAX_FRAME;
}

/* Follows the length prefixes of the peer's plaintext; returns how many
 * frames it completed. Reads nothing but the 4-byte lengths. */
static unsigned rx_track(conn *c, const uint8_t *p, size_t len) {
  unsigned done = 0;
  while (len > 0 && !c->rx_untracked) {
    if (c->rx_left == 0) {
      size_t take = 4 - c->rx_hdr_len < len ? 4 - c->rx_hdr_len : len;
      memcpy(c->rx_hdr + c->rx_hdr_len, p, take);
      c->rx_hdr_len += (unsigned)take;
      p += take;
      len -= take;
      if (c->rx_hdr_len < 4)
        break;
      c->rx_hdr_len = 0;
      if (cr_session_frame_length(c->rx_hdr, node_max_frame(c->n), &c->rx_frame_len) != 0) {
        c->rx_untracked = 1; /* the session refuses it: that is progress too */
        return done + 1;
      }
      c->rx_left = c->rx_frame_len;
      continue;
    }
    size_t take = c->rx_left < len ? (size_t)c->rx_left : len;
    c->rx_left -= take;
    p += take;
    len -= take;
    if (c->rx_left == 0)
      done++;
  }
  return done;
}

/* The peer is in the middle of a frame: *got of *want bytes (header
 * included) have arrived. */
static int rx_partial(const conn *c, uint64_t *got, uint64_t *want) {
  if (c->rx_untracked || (c->rx_hdr_len == 0 && c->rx_left == 0))
    return 0;
  if (c->rx_left == 0) {
    *got = c->rx_hdr_len;
    *want = 0; /* length not known yet */
  } else {
    *want = (uint64_t)c->rx_frame_len + 4;
    *got = *want - c->rx_left;
  }
  return 1;
}

/* Leaves the count of sessions in progress (serve's max_sessions). */
static void conn_uncount(conn *c) {
  if (c->counted) {
    c->counted = 0;
    c->n->nsessions--;
  }
}

/* ---- writing -------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  conn *c = w->c;
  free(w);
  if (status < 0) {
    if (status != UV_ECANCELED && !c->write_failed) {
      c->write_failed = 1;
      conn_fail(c, net_code(status), 0, "the connection to %s was lost: %s", c->peer_addr,
                uv_strerror(status));
    }
    return;
  }
  if (c->phase == PH_SESSION && !c->closing)
    conn_timer(c, c->idle_ms); /* the peer is taking our bytes: alive */
  conn_pump(c);
}

/* Moves TLS output to the socket (or drops it when it cannot be sent). */
static void conn_flush(conn *c) {
  if (c->tls == NULL)
    return;
  size_t len = cr_tls_pending(c->tls);
  if (len == 0)
    return;
  if (!c->connected || c->write_failed || c->shutdown_sent || c->closed) {
    uint8_t scratch[4096];
    while (cr_tls_take(c->tls, scratch, sizeof scratch) > 0)
      ;
    return;
  }
  wreq *w = malloc(sizeof *w + len);
  if (w == NULL) {
    conn_fail(c, CR_ENOMEM, 0, "out of memory");
    return;
  }
  w->c = c;
  len = cr_tls_take(c->tls, w->data, len);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (r < 0) {
    free(w);
    c->write_failed = 1;
    conn_fail(c, net_code(r), 0, "the connection to %s was lost: %s", c->peer_addr, uv_strerror(r));
  }
}

/* ---- the session, on the thread pool -------------------------------------- */

static void work_cb(uv_work_t *req) {
  conn *c = req->data;
  int retried = 0;
  if (c->s == NULL) {
    cr_session *s = NULL;
    c->work_rc = cr_session_new(&s, &c->scfg, &c->work_err);
    if (c->work_rc != 0)
      return;
    if (cr_session_start(s) != 0 && cr_session_status_get(s) == CR_SESSION_RUNNING)
      cr_session_abort(s, CR_EINTERNAL, CR_WIRE_INTERNAL, "cannot start the session");
    c->s = s;
  }
  if (c->work_in.len > 0) {
    (void)cr_session_recv(c->s, c->work_in.data, c->work_in.len);
    cr_buf_reset(&c->work_in);
  }
  /* While the session runs, one cr_session_send per work item: its output
   * (the Hello reply, say) goes to the peer before more blinding starts, and
   * the next chunk is computed while this one is on the wire. */
  int sends = 0;
  for (;;) {
    /* A session that has ended may still hold its last frames (Finish, or
     * the Error frame): those are drained whatever the budget. */
    int running = cr_session_status_get(c->s) == CR_SESSION_RUNNING;
    if (running ? (sends > 0 || c->work_budget == 0) : c->work_out.len >= CR_NODE_DRAIN_CAP)
      break;
    sends++;
    const uint8_t *p = NULL;
    size_t n = 0;
    int r = cr_session_send(c->s, &p, &n);
    if (n == 0) {
      if (r < 0 && !retried) { /* failed just now: its Error frame is queued */
        retried = 1;
        continue;
      }
      break;
    }
    if (cr_buf_append(&c->work_out, p, n) != 0) {
      cr_session_abort(c->s, CR_ENOMEM, CR_WIRE_INTERNAL, "out of memory");
      break;
    }
    cr_session_sent(c->s, n);
  }
}

static void after_work(uv_work_t *req, int status) {
  conn *c = req->data;
  (void)status; /* never cancelled */
  c->work_busy = 0;
  if (c->work_rc != 0) {
    set_local(c, c->work_rc, cr_error_message(&c->work_err, c->work_rc));
    c->work_rc = 0;
    cr_buf_reset(&c->work_out);
    if (c->closed)
      conn_maybe_free(c);
    else
      conn_begin_close(c);
    return;
  }
  int produced = c->work_out.len > 0;
  if (c->work_out.len > 0) {
    if (!c->closed && !c->tls_broken && !c->write_failed && !c->shutdown_sent) {
      cr_error e;
      cr_error_clear(&e);
      if (cr_tls_write(c->tls, c->work_out.data, c->work_out.len, &e) != 0) {
        c->tls_broken = 1;
        cr_buf_reset(&c->work_out);
        conn_fail(c, e.code, 0, "%s", e.msg);
        return;
      }
      conn_flush(c);
    }
    cr_buf_reset(&c->work_out);
  }
  if (c->closed) {
    conn_maybe_free(c);
    return;
  }
  /* We answered: the peer gets a full idle period for its reply. Input
   * consumed without an answer restarts nothing (whole frames restart the
   * timer as they arrive, and a timer firing while we work re-arms). */
  if (!c->closing && produced)
    conn_timer(c, c->idle_ms);
  if (c->s != NULL && c->n->cfg->on_progress != NULL) {
    cr_session_progress pr;
    cr_session_progress_get(c->s, &pr); /* no work item is in flight here */
    pr.peer_addr = c->peer_addr[0] ? c->peer_addr : NULL;
    c->n->cfg->on_progress(c->n->cfg->ctx, &pr);
  }
  conn_pump(c);
}

static void conn_dispatch(conn *c) {
  if (c->in_plain.len <= CR_NODE_WORK_INPUT) {
    cr_buf t = c->work_in; /* empty, keeps its capacity */
    c->work_in = c->in_plain;
    c->in_plain = t;
  } else {
    /* Bounded bites: the session answers between them. */
    if (cr_buf_append(&c->work_in, c->in_plain.data, CR_NODE_WORK_INPUT) != 0) {
      conn_fail(c, CR_ENOMEM, CR_WIRE_INTERNAL, "out of memory");
      return;
    }
    cr_buf_consume(&c->in_plain, CR_NODE_WORK_INPUT);
  }
  size_t unsent = conn_unsent(c);
  c->work_budget = unsent < CR_NODE_MAX_UNSENT ? CR_NODE_MAX_UNSENT - unsent : 0;
  c->work.data = c;
  c->work_busy = 1;
  int r = uv_queue_work(c->n->loop, &c->work, work_cb, after_work);
  if (r < 0) {
    c->work_busy = 0;
    conn_fail(c, CR_EINTERNAL, 0, "cannot schedule work: %s", uv_strerror(r));
    return;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(conn *c) {
  if (c->reading || c->peer_eof || c->closed || !c->connected)
    return;
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (r < 0) {
    c->peer_eof = 1;
    conn_fail(c, net_code(r), 0, "cannot read from %s: %s", c->peer_addr, uv_strerror(r));
    return;
  }
  c->reading = 1;
}

static void conn_read_stop(conn *c) {
  if (c->reading && c->tcp_live)
    uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = 0;
}

/* Decides the next step of a connection with a session. Loop thread only,
 * and only when no work item holds the session. */
static void conn_pump(conn *c) {
  if (c->phase != PH_SESSION || c->work_busy || c->closing || c->closed)
    return;
  if (c->s == NULL) {
    if (conn_awaits_route(c))
      conn_route(c); /* picks the session once the first frame is in */
    else if (!c->have_local)
      conn_dispatch(c); /* creates the session */
    return;
  }
  if (c->abort_pending) {
    c->abort_pending = 0;
    if (cr_session_status_get(c->s) == CR_SESSION_RUNNING) {
      int can_send = !c->tls_broken && !c->write_failed && !c->peer_eof;
      cr_session_abort(c->s, c->abort_code, can_send ? c->abort_wire : 0, c->abort_msg);
      if (can_send && c->abort_wire != 0) {
        cr_buf_reset(&c->in_plain);
        conn_dispatch(c); /* drains the Error frame */
        return;
      }
    }
    conn_begin_close(c);
    return;
  }
  if (cr_session_status_get(c->s) != CR_SESSION_RUNNING) {
    conn_begin_close(c);
    return;
  }
  if (c->in_plain.len > 0) {
    conn_dispatch(c);
    if (c->in_plain.len < CR_NODE_MAX_INPUT)
      conn_read_start(c);
    return;
  }
  if (c->peer_eof) {
    /* Everything the peer sent has been fed and the session still wants
     * more: it cannot complete. */
    uint64_t got, want;
    char msg[200];
    if (rx_partial(c, &got, &want) && want > 0)
      snprintf(msg, sizeof msg,
               "the partner closed the connection in the middle of a frame (%llu of its "
               "%llu bytes received) before the session completed",
               (unsigned long long)got, (unsigned long long)want);
    else if (rx_partial(c, &got, &want))
      snprintf(msg, sizeof msg,
               "the partner closed the connection in the middle of a frame header (%llu of "
               "4 bytes received) before the session completed",
               (unsigned long long)got);
    else
      snprintf(msg, sizeof msg, "the partner closed the connection before the session completed");
    cr_session_abort(c->s, CR_ECONNRESET, 0, msg);
    conn_begin_close(c);
    return;
  }
  if (cr_session_want_send(c->s) && conn_unsent(c) < CR_NODE_MAX_UNSENT) {
    conn_dispatch(c);
    return;
  }
  conn_read_start(c);
}

/* ---- failure and close ---------------------------------------------------- */

static void conn_fail(conn *c, int code, int wire, const char *fmt, ...) {
  char msg[CR_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  if (c->closing || c->closed) {
    /* Already on the way out; a dead socket ends the wait. */
    if (c->write_failed || c->peer_eof)
      conn_close_handles(c);
    return;
  }
  /* work_busy first: while a work item runs, the worker owns c->s. */
  if (c->phase != PH_SESSION || (!c->work_busy && c->s == NULL)) {
    int tell =
        wire != 0 && conn_awaits_route(c) && !c->tls_broken && !c->write_failed && !c->peer_eof;
    set_local(c, code, msg);
    if (tell) {
      /* No session yet (the router waits for the Hello): the partner is
       * told all the same, with the code's fixed text. */
      c->local.wire_error = wire;
      c->route_refused = 1;
      conn_refuse_busy(c);
      return;
    }
    conn_begin_close(c);
    return;
  }
  if (!c->abort_pending) {
    c->abort_pending = 1;
    c->abort_code = code;
    c->abort_wire = wire;
    copy_msg(c->abort_msg, sizeof c->abort_msg, msg);
  }
  conn_pump(c); /* now, or in after_work once the session is free */
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn *c = req->data;
  c->shutdown_done = 1;
  if (c->closed)
    return;
  if (status < 0 || c->peer_eof)
    conn_close_handles(c);
  /* else: wait for the peer's end of stream (or the linger timer), so that
   * unread data on our side cannot turn the close into a reset that would
   * destroy our last frames in flight. */
}

static void conn_begin_close(conn *c) {
  if (c->closing || c->closed)
    return;
  c->closing = 1;
  conn_uncount(c);
  if (c->tls != NULL && c->handshake_done && !c->tls_broken && !c->write_failed)
    cr_tls_shutdown(c->tls);
  conn_flush(c);
  if (!c->connected || c->write_failed || !c->tcp_live) {
    conn_close_handles(c);
    return;
  }
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close_handles(c);
    return;
  }
  c->shutdown_sent = 1;
  conn_read_start(c); /* to see the peer's end of stream */
  /* A connection that never authenticated gets only the time for its alert
   * to leave: a stranger cannot hold our descriptor by not closing. */
  conn_timer(c, c->phase == PH_HANDSHAKE ? CR_NODE_UNAUTH_LINGER_MS
                : c->n->stopping         ? g_stop_linger_ms
                                         : CR_NODE_LINGER_MS);
}

static void on_tcp_close(uv_handle_t *h) {
  conn *c = h->data;
  c->tcp_live = 0;
  conn_maybe_free(c);
}

static void on_timer_close(uv_handle_t *h) {
  conn *c = h->data;
  c->timer_live = 0;
  conn_maybe_free(c);
}

static void conn_close_handles(conn *c) {
  if (c->closed)
    return;
  c->closed = 1;
  c->closing = 1;
  c->reading = 0;
  conn_uncount(c);
  if (c->tcp_live && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, on_tcp_close);
  if (c->timer_live && !uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_close);
  if (c->gai_busy)
    uv_cancel((uv_req_t *)&c->gai);
  conn_maybe_free(c);
}

static void node_conn_ended(node *n, conn *c, const cr_session_result *res) {
  const cr_node_config *cfg = n->cfg;
  if (c->routed) {
    if (cfg->on_routed_session != NULL)
      cfg->on_routed_session(cfg->ctx, c->route_conn, res, c->peer_addr[0] ? c->peer_addr : NULL,
                             c->have_peer_fp ? c->peer_fp : NULL);
  } else if (cfg->on_session != NULL) {
    cfg->on_session(cfg->ctx, res, c->peer_addr[0] ? c->peer_addr : NULL,
                    c->have_peer_fp ? c->peer_fp : NULL);
  }
  int rc = res->status == CR_SESSION_DONE ? 0 : (res->error < 0 ? res->error : CR_EINTERNAL);
  if (!n->serving) {
    n->run_done = 1;
    n->run_rc = rc;
    /* The result and its heap outputs go to on_closed. */
    if (c->s != NULL && res == cr_session_result_get(c->s))
      cr_session_result_take(c->s, &n->run_res);
    else
      n->run_res = *res;
    if (rc != 0)
      cr_error_set(&n->run_err, rc, "%s", res->error_msg[0] ? res->error_msg : cr_strerror(rc));
  } else if (cfg->once && c->auth_reached && !c->busy && !n->once_done && !res->ping) {
    /* A ping does not use up a --once server: it is a check, not a session. */
    n->once_done = 1;
    n->once_rc = rc;
    if (rc != 0)
      cr_error_set(&n->once_err, rc, "%s", res->error_msg[0] ? res->error_msg : cr_strerror(rc));
    node_stop(n);
  }
}

static void conn_maybe_free(conn *c) {
  if (!c->closed || c->tcp_live || c->timer_live || c->gai_busy || c->work_busy)
    return;
  node *n = c->n;
  const cr_session_result *res;
  cr_session_result held;
  int have_held = 0;
  if (c->s != NULL) {
    if (cr_session_status_get(c->s) == CR_SESSION_RUNNING)
      cr_session_abort(c->s, CR_ENET, 0, "the connection closed before the session completed");
    res = cr_session_result_get(c->s);
    if (c->routed) {
      /* The router hears of the session once it is freed (its unload hook
       * has run), so the result moves out first. */
      cr_session_result_take(c->s, &held);
      have_held = 1;
      cr_session_free(c->s);
      c->s = NULL;
      res = &held;
    }
  } else {
    set_local(c, CR_ENET, "the connection closed before a session started");
    res = &c->local;
  }
  if (c->busy)
    res = &c->local; /* the refusal, with this node's real set size */
  node_conn_ended(n, c, res);
  if (have_held)
    cr_session_result_free_outputs(&held);

  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    n->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  n->nconns--;

  cr_session_free(c->s);
  cr_tls_free(c->tls);
  cr_buf_free(&c->in_plain);
  cr_buf_free(&c->work_in);
  cr_buf_free(&c->work_out);
  if (c->ai != NULL)
    uv_freeaddrinfo(c->ai);
  free(c);
  node_maybe_closed(n); /* last: on_closed may free the node */
}

/* ---- handshake and reading ------------------------------------------------ */

/* The session configuration of one of this node's connections (or of its
 * checks before starting): the caller's, with what the node decides. */
static cr_session_config node_session_config(const node *n) {
  const cr_node_config *cfg = n->cfg;
  cr_session_config sc = cfg->session;
  sc.is_runner = !n->serving;
  if (sc.software == NULL)
    sc.software = "cleanroom";
  if (sc.sign == NULL) {
    sc.sign = cr_identity_sign;
    sc.sign_ctx = (void *)cfg->id;
  }
  if (n->serving) {
    /* The runner names the query and its parameters. */
    sc.query = NULL;
    sc.ping = 0;
    sc.param_names = NULL;
    sc.param_values = NULL;
    sc.nparams = 0;
    if (sc.load != NULL)
      sc.data = NULL; /* loaded per session, for the query asked */
  }
  return sc;
}

/* Sends the BUSY Error frame and closes. No session is created for it
 * (that would cost a scalar and a pass over the data set): the frame comes
 * from the protocol layer (cr_session_refusal_frame). */
static void conn_refuse_busy(conn *c) {
  cr_buf b;
  cr_error err;
  cr_buf_init(&b);
  cr_error_clear(&err);
  /* The partner learns that the node is at its cap, not how many sessions
   * run (on a node serving several partners, that is the others' activity)
   * nor the cap; a router's refusal goes with the code's fixed text only.
   * The numbers are for this node (its result's error_msg). */
  const char *text = c->local.wire_error == CR_WIRE_BUSY && !c->route_refused
                         ? "busy, retry later: the node is serving as many sessions as it takes"
                         : cr_wire_error_text(c->local.wire_error);
  if (cr_session_refusal_frame(&b, c->local.wire_error, text) != 0 ||
      cr_tls_write(c->tls, b.data, b.len, &err) != 0)
    c->tls_broken = 1;
  cr_buf_free(&b);
  conn_begin_close(c); /* flushes the frame, then close_notify */
}

static void conn_handshake_done(conn *c) {
  const cr_node_config *cfg = c->n->cfg;
  c->handshake_done = 1;
  c->auth_reached = 1;
  if (cr_tls_peer(c->tls, c->peer_fp, c->peer_pk) == 0)
    c->have_peer_fp = 1;
  c->phase = PH_SESSION;
  conn_timer(c, c->idle_ms);
  if (cfg->on_connected != NULL)
    cfg->on_connected(cfg->ctx, c->peer_addr[0] ? c->peer_addr : NULL,
                      c->have_peer_fp ? c->peer_fp : NULL);

  if (cfg->route == NULL) {
    c->scfg = node_session_config(c->n);
    memcpy(c->scfg.peer_sign_pk, c->peer_pk, sizeof c->peer_pk);
    c->scfg.now_unix = (int64_t)time(NULL);
  } /* else: chosen by the router once the first frame is in (conn_route) */

  /* Past max_sessions the partner is told so (a BUSY Error frame, after
   * TLS so that only the pinned partner learns it) and the connection
   * closes; the refusal is this connection's result. */
  node *n = c->n;
  if (n->serving) {
    if (n->nsessions >= n->max_sessions) {
      char msg[160];
      c->busy = 1;
      snprintf(msg, sizeof msg, "busy, retry later: %u session(s) in progress (max_sessions = %u)",
               n->nsessions, n->max_sessions);
      set_local(c, CR_EREFUSED, msg);
      c->local.wire_error = CR_WIRE_BUSY;
      c->local.own_set_size = cfg->session.data != NULL ? cfg->session.data->n : 0;
      conn_refuse_busy(c);
    } else {
      c->counted = 1;
      n->nsessions++;
    }
  }
}

/*
 * Serve with a router: once the partner's first frame is whole, asks the
 * router which session this connection gets (from the certificate and the
 * template the Hello names), then creates it with that frame as its first
 * input. A first frame that is not a readable Hello is routed with no
 * template (the router may still know the partner's only collaboration,
 * whose session then refuses the frame with its usual message).
 */
#define CR_NODE_ROUTE_PEEK_MAX CR_NODE_WORK_INPUT /* a Hello is far smaller */
static void conn_route(conn *c) {
  node *n = c->n;
  const cr_node_config *cfg = n->cfg;
  uint8_t th[CR_SHA256_BYTES];
  const uint8_t *thp = NULL;
  uint32_t flen = 0;
  if (c->in_plain.len < CR_FRAME_HEADER_BYTES && !c->peer_eof) {
    conn_read_start(c);
    return;
  }
  if (c->in_plain.len == 0) {
    conn_fail(c, CR_ECONNRESET, 0, "the partner closed the connection before its Hello");
    return;
  }
  int len_ok = c->in_plain.len >= CR_FRAME_HEADER_BYTES &&
               cr_session_frame_length(c->in_plain.data, node_max_frame(n), &flen) == 0 &&
               flen <= CR_NODE_ROUTE_PEEK_MAX;
  if (len_ok && c->in_plain.len < CR_FRAME_HEADER_BYTES + (size_t)flen && !c->peer_eof) {
    conn_read_start(c); /* the rest of the Hello */
    return;
  }
  if (len_ok && c->in_plain.len >= CR_FRAME_HEADER_BYTES + (size_t)flen &&
      cr_session_hello_template(c->in_plain.data + CR_FRAME_HEADER_BYTES, flen, th) == 0)
    thp = th;

  cr_node_route r;
  memset(&r, 0, sizeof r);
  r.peer_fp = c->have_peer_fp ? c->peer_fp : NULL;
  r.template_sha256 = thp;
  r.peer_addr = c->peer_addr[0] ? c->peer_addr : NULL;
  int rc = cfg->route(cfg->ctx, &r);
  if (rc != 0) {
    char msg[sizeof r.msg];
    copy_msg(msg, sizeof msg, r.msg[0] ? r.msg : "refused: no collaboration for this partner");
    set_local(c, CR_EREFUSED, msg);
    c->local.wire_error = r.wire_error ? r.wire_error : CR_WIRE_NOT_ALLOWED;
    c->route_refused = 1;
    conn_refuse_busy(c);
    return;
  }
  /* The node's part of the session's configuration, as for any connection. */
  cr_session_config base = node_session_config(n);
  c->scfg = r.session;
  c->scfg.is_runner = 0;
  c->scfg.query = NULL;
  c->scfg.ping = 0;
  c->scfg.param_names = NULL;
  c->scfg.param_values = NULL;
  c->scfg.nparams = 0;
  if (c->scfg.software == NULL)
    c->scfg.software = base.software;
  if (c->scfg.sign == NULL) {
    c->scfg.sign = base.sign;
    c->scfg.sign_ctx = base.sign_ctx;
  }
  if (c->scfg.pool == NULL)
    c->scfg.pool = base.pool;
  memcpy(c->scfg.peer_sign_pk, c->peer_pk, sizeof c->peer_pk);
  c->scfg.now_unix = (int64_t)time(NULL);
  c->routed = 1;
  c->route_conn = r.conn;
  if (r.idle_timeout_ms) {
    c->idle_ms = r.idle_timeout_ms;
    conn_timer(c, c->idle_ms);
  }
  conn_dispatch(c); /* creates the session and feeds it the Hello */
}

static void conn_tls_failed(conn *c, const cr_error *e) {
  /* The alert OpenSSL queued tells the peer why; it goes out before the
   * close. */
  c->tls_broken = 1;
  if (e->code == CR_EAUTH)
    c->auth_reached = 1;
  if (cr_tls_peer(c->tls, c->peer_fp, NULL) == 0)
    c->have_peer_fp = 1;
  conn_flush(c);
  conn_fail(c, e->code, 0, "%s", e->msg);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn *c = st->data;
  cr_error e;
  (void)buf;
  if (nread == 0)
    return;
  if (nread < 0) {
    c->reading = 0;
    c->peer_eof = 1;
    if (nread != UV_EOF)
      uv_read_stop(st);
    if (c->closing) {
      if (c->shutdown_done || nread != UV_EOF)
        conn_close_handles(c);
      return;
    }
    if (nread != UV_EOF) {
      c->write_failed = 1;
      conn_fail(c, net_code((int)nread), 0, "the connection to %s was lost: %s", c->peer_addr,
                uv_strerror((int)nread));
      return;
    }
    if (c->phase == PH_HANDSHAKE) {
      conn_fail(c, CR_ETLS, 0,
                "%s closed the connection during the TLS handshake (is it a cleanroom "
                "node, and does it pin this node's certificate?)",
                c->peer_addr);
      return;
    }
    conn_pump(c); /* feeds what is buffered, then fails the session */
    return;
  }
  c->rx_any = 1;
  if (c->closing || c->tls_broken)
    return; /* draining until the peer closes */
  cr_error_clear(&e);
  if (cr_tls_feed(c->tls, (const uint8_t *)c->rbuf, (size_t)nread, &e) != 0) {
    conn_fail(c, e.code, 0, "%s", e.msg);
    return;
  }
  if (c->phase == PH_HANDSHAKE) {
    int r = cr_tls_handshake(c->tls, &e);
    if (r < 0) {
      conn_tls_failed(c, &e);
      return;
    }
    conn_flush(c);
    if (r == 0)
      return;
    conn_handshake_done(c);
    if (c->closing)
      return; /* refused busy: draining until the peer closes */
  }
  size_t before = c->in_plain.len;
  int r = cr_tls_read(c->tls, &c->in_plain, SIZE_MAX, &e);
  conn_flush(c); /* post-handshake messages may need an answer */
  /* Only whole frames restart the idle timer: bytes alone prove nothing. */
  if (c->in_plain.len > before &&
      rx_track(c, c->in_plain.data + before, c->in_plain.len - before) > 0 && !c->closing)
    conn_timer(c, c->idle_ms);
  if (r < 0) {
    conn_tls_failed(c, &e);
    return;
  }
  if (r == 1) {
    c->peer_eof = 1; /* close_notify */
    conn_read_stop(c);
  } else if (c->in_plain.len >= CR_NODE_MAX_INPUT) {
    conn_read_stop(c); /* resumed once the session has taken the input */
  }
  conn_pump(c);
}

static void on_timer(uv_timer_t *t) {
  conn *c = t->data;
  node *n = c->n;
  if (c->closing) {
    conn_close_handles(c); /* linger over */
    return;
  }
  switch (c->phase) {
  case PH_RESOLVE:
  case PH_CONNECT:
    conn_fail(c, CR_ETIMEDOUT, 0, "cannot connect to %s within %u ms", n->cfg->address,
              n->handshake_ms);
    break;
  case PH_HANDSHAKE:
    conn_fail(c, CR_ETIMEDOUT, 0, "the TLS handshake with %s did not complete within %u ms",
              c->peer_addr, n->serving ? n->accept_ms : n->handshake_ms);
    break;
  case PH_SESSION:
    if (c->work_busy || (c->s == NULL && !conn_awaits_route(c))) {
      conn_timer(c, c->idle_ms); /* we are the busy side */
      break;
    }
    {
      uint64_t got, want;
      if (rx_partial(c, &got, &want))
        conn_fail(c, CR_ETIMEDOUT, CR_WIRE_TIMEOUT,
                  "the partner at %s sent no complete frame for %u ms (%llu bytes of the "
                  "current one so far): too slow or stalled",
                  c->peer_addr, c->idle_ms, (unsigned long long)got);
      else
        conn_fail(c, CR_ETIMEDOUT, CR_WIRE_TIMEOUT,
                  "the partner at %s sent nothing for %u ms while this node waited for it",
                  c->peer_addr, c->idle_ms);
    }
    break;
  }
}

static conn *conn_new(node *n) {
  conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->n = n;
  c->idle_ms = n->idle_ms;
  cr_buf_init(&c->in_plain);
  cr_buf_init(&c->work_in);
  cr_buf_init(&c->work_out);
  c->next = n->conns;
  if (n->conns != NULL)
    n->conns->prev = c;
  n->conns = c;
  n->nconns++;
  return c;
}

/* Every connection has a timer from its first handle on (it bounds DNS,
 * connect, handshake, idleness and the graceful close). */
static void conn_timer_init(conn *c) {
  uv_timer_init(c->n->loop, &c->timer); /* cannot fail on Unix */
  c->timer.data = c;
  c->timer_live = 1;
}

/* Unlinks and frees a connection that never opened a handle. */
static void conn_discard(conn *c) {
  node *n = c->n;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    n->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  n->nconns--;
  cr_buf_free(&c->in_plain);
  cr_buf_free(&c->work_in);
  cr_buf_free(&c->work_out);
  free(c);
}

/* TCP is up: start TLS. */
static void conn_connected(conn *c) {
  cr_error e;
  struct sockaddr_storage ss;
  int len = sizeof ss;
  cr_error_clear(&e);
  c->connected = 1;
  c->phase = PH_HANDSHAKE;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
    format_sockaddr((struct sockaddr *)&ss, c->peer_addr, sizeof c->peer_addr);
  uv_tcp_nodelay(&c->tcp, 1);
  /* A peer that vanishes without a FIN or RST (a host powered off) is
   * noticed even while we are the busy side and no timer runs for it. */
  (void)uv_tcp_keepalive(&c->tcp, 1, CR_NODE_KEEPALIVE_S);
  if (!c->n->serving && c->n->cfg->on_tcp_connected != NULL)
    c->n->cfg->on_tcp_connected(c->n->cfg->ctx, c->peer_addr);
  int trc = c->n->serving && c->n->cfg->pinned != NULL
                ? cr_tls_new_pinset(&c->tls, c->n->tls, c->n->cfg->pinned, c->n->cfg->ctx,
                                    c->n->peer_role, &e)
                : cr_tls_new(&c->tls, c->n->tls, c->n->pin, c->n->peer_role, &e);
  if (trc != 0) {
    conn_fail(c, e.code, 0, "%s", e.msg);
    return;
  }
  conn_read_start(c);
  if (c->closing)
    return;
  if (!c->n->serving) {
    int r = cr_tls_handshake(c->tls, &e); /* ClientHello */
    if (r < 0) {
      conn_tls_failed(c, &e);
      return;
    }
    conn_flush(c);
  }
}

/* ---- client ---------------------------------------------------------------- */

static void connect_next(conn *c);

static void on_retry_close(uv_handle_t *h) {
  conn *c = h->data;
  c->tcp_live = 0;
  if (c->closed) {
    conn_maybe_free(c);
    return;
  }
  c->ai_cur = c->ai_cur != NULL ? c->ai_cur->ai_next : NULL;
  connect_next(c);
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  if (status == UV_ECANCELED || c->closed)
    return;
  if (status < 0) {
    c->last_connect_err = status;
    uv_close((uv_handle_t *)&c->tcp, on_retry_close);
    return;
  }
  conn_connected(c);
}

static void connect_next(conn *c) {
  node *n = c->n;
  while (c->ai_cur != NULL && c->ai_cur->ai_family != AF_INET && c->ai_cur->ai_family != AF_INET6)
    c->ai_cur = c->ai_cur->ai_next;
  if (c->ai_cur == NULL) {
    /* Every address failed: the last one's error says why. */
    int last = c->last_connect_err ? c->last_connect_err : UV_EADDRNOTAVAIL;
    conn_fail(c, net_code(last), 0, "cannot connect to %s: %s", n->cfg->address, uv_strerror(last));
    return;
  }
  c->phase = PH_CONNECT;
  uv_tcp_init(n->loop, &c->tcp);
  c->tcp.data = c;
  c->tcp_live = 1;
  c->connect_req.data = c;
  int r = uv_tcp_connect(&c->connect_req, &c->tcp, c->ai_cur->ai_addr, on_connect);
  if (r < 0) {
    c->last_connect_err = r;
    uv_close((uv_handle_t *)&c->tcp, on_retry_close);
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  conn *c = req->data;
  c->gai_busy = 0;
  if (c->closed) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    conn_maybe_free(c);
    return;
  }
  if (status < 0) {
    conn_fail(c, dns_code(status), 0, "cannot resolve the partner's address %s: %s",
              c->n->cfg->address, uv_strerror(status));
    return;
  }
  c->ai = res;
  c->ai_cur = res;
  connect_next(c);
}

/* ---- server ---------------------------------------------------------------- */

static void on_reject_close(uv_handle_t *h) { free(h); }

/* Not yet authenticated and still holding a socket: in the TLS handshake, or
 * closing after failing it. */
static int conn_pending(const conn *c) { return !c->closed && c->phase == PH_HANDSHAKE; }

/* Which pending connection goes first: one already refused (closing after
 * a failed handshake, only its alert left to deliver), then one that has
 * sent nothing, then one whose handshake is under way (a partner's, maybe). */
static int evict_rank(const conn *c) {
  if (c->closing)
    return 0;
  return c->rx_any ? 2 : 1;
}

/* The connection to close to make room, or NULL: among the open ones other
 * than except (ip set: from that address only), any 0: the pending ones;
 * any 1: all but sessions in progress (pending, busy refusals, sessions
 * finishing their graceful close). The lowest evict_rank, and the oldest of
 * those (the list is newest first). */
static conn *oldest_evictable(node *n, const conn *except, const char *ip, int any) {
  conn *found = NULL;
  int found_rank = 3;
  for (conn *o = n->conns; o != NULL; o = o->next) {
    if (o == except || o->closed)
      continue;
    if (any ? o->counted : !conn_pending(o))
      continue;
    if (ip != NULL && strcmp(o->peer_ip, ip) != 0)
      continue;
    int r = evict_rank(o);
    if (r <= found_rank) {
      found = o;
      found_rank = r;
    }
  }
  return found;
}

static unsigned count_open(const node *n, const conn *except, const char *ip, int pending_only) {
  unsigned k = 0;
  for (const conn *o = n->conns; o != NULL; o = o->next) {
    if (o == except || o->closed || (pending_only && !conn_pending(o)))
      continue;
    if (ip != NULL && strcmp(o->peer_ip, ip) != 0)
      continue;
    k++;
  }
  return k;
}

/* Closes a connection at once (no linger): its descriptor is needed. */
static void conn_evict(conn *c, const char *why) {
  char msg[CR_ERROR_MSG_MAX];
  snprintf(msg, sizeof msg, "%s closed to make room for a newer connection: %s",
           c->peer_addr[0] ? c->peer_addr : "a connection", why);
  set_local(c, CR_EREFUSED, msg);
  conn_close_handles(c);
}

/* Makes room for c (just accepted): the oldest pending connection from the
 * same address past max_pending_ip, the oldest pending one past
 * max_pending, the oldest that is not a session in progress past conn_cap.
 * 0, or -1 when nothing can go (then c itself is refused). */
static int make_room(node *n, conn *c) {
  char why[200];
  conn *o;
  while (count_open(n, c, c->peer_ip, 1) >= n->max_pending_ip &&
         (o = oldest_evictable(n, c, c->peer_ip, 0)) != NULL) {
    snprintf(why, sizeof why,
             "%u connection(s) from %s had not completed the TLS handshake "
             "(max_pending_per_ip = %u)",
             n->max_pending_ip, c->peer_ip, n->max_pending_ip);
    conn_evict(o, why);
  }
  while (count_open(n, c, NULL, 1) >= n->max_pending &&
         (o = oldest_evictable(n, c, NULL, 0)) != NULL) {
    snprintf(why, sizeof why,
             "%u connection(s) had not completed the TLS handshake (max_pending = %u)",
             n->max_pending, n->max_pending);
    conn_evict(o, why);
  }
  while (count_open(n, c, NULL, 0) >= n->conn_cap) {
    if ((o = oldest_evictable(n, c, NULL, 1)) == NULL)
      return -1;
    snprintf(why, sizeof why, "%u connection(s) open (the node's cap)", n->conn_cap);
    conn_evict(o, why);
  }
  return 0;
}

static void on_connection(uv_stream_t *server, int status) {
  node *n = server->data;
  char msg[200];
  if (n->stopping)
    return;
  if (status < 0) {
    /* Out of descriptors (EMFILE, ENFILE): libuv has already spent its
     * reserve descriptor to accept and drop what was waiting, so the
     * listener does not spin. Close the oldest connection that is not a
     * session in progress, so the next one (the partner retrying) gets a
     * descriptor. */
    if (status == UV_EMFILE || status == UV_ENFILE) {
      conn *o = oldest_evictable(n, NULL, NULL, 1);
      if (o != NULL)
        conn_evict(o, "the process ran out of file descriptors");
    }
    return;
  }
  conn *c = conn_new(n);
  if (c == NULL) {
    /* Accept and drop, or libuv stops watching the listener. */
    uv_tcp_t *t = malloc(sizeof *t);
    if (t != NULL && uv_tcp_init(n->loop, t) == 0) {
      (void)uv_accept(server, (uv_stream_t *)t);
      uv_close((uv_handle_t *)t, on_reject_close);
    } else {
      free(t);
    }
    return;
  }
  conn_timer_init(c);
  c->phase = PH_HANDSHAKE;
  uv_tcp_init(n->loop, &c->tcp);
  c->tcp.data = c;
  c->tcp_live = 1;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    set_local(c, CR_ENET, "cannot accept a connection");
    conn_close_handles(c);
    return;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    format_sockaddr((struct sockaddr *)&ss, c->peer_addr, sizeof c->peer_addr);
    char *colon = strrchr(c->peer_addr, ':');
    size_t iplen = colon != NULL ? (size_t)(colon - c->peer_addr) : strlen(c->peer_addr);
    memcpy(c->peer_ip, c->peer_addr, iplen);
    c->peer_ip[iplen] = '\0';
  }
  /* The newest connection is never the one refused while an older one that
   * has not authenticated can go instead. */
  if (make_room(n, c) != 0) {
    snprintf(msg, sizeof msg,
             "refused: %u connection(s) open, all of them sessions in progress (the node's cap)",
             n->conn_cap);
    set_local(c, CR_EREFUSED, msg);
    conn_close_handles(c);
    return;
  }
  conn_timer(c, n->accept_ms);
  conn_connected(c);
}

/* ---- node ------------------------------------------------------------------ */

/* Fires on_closed once nothing of the node is left. Called only as the last
 * step of a loop callback: the callee may free the node. */
static void node_maybe_closed(node *n) {
  if (n->closed_fired || n->conns != NULL || n->listener_live || n->tick_live)
    return;
  if (n->serving ? !n->stopping : !n->run_done)
    return;
  n->closed_fired = 1;
  const cr_node_config *cfg = n->cfg;
  if (n->serving) {
    int rc = cfg->once && n->once_done ? n->once_rc : 0;
    if (cfg->on_closed != NULL)
      cfg->on_closed(cfg->ctx, rc, rc ? &n->once_err : NULL, NULL);
    return;
  }
  if (cfg->on_closed != NULL)
    cfg->on_closed(cfg->ctx, n->run_rc, n->run_rc ? &n->run_err : NULL, &n->run_res);
  else
    cr_session_result_free_outputs(&n->run_res); /* nobody takes them */
}

static void on_plain_close(uv_handle_t *h) {
  node *n = h->data;
  if (h == (uv_handle_t *)&n->listener)
    n->listener_live = 0;
  else if (h == (uv_handle_t *)&n->tick)
    n->tick_live = 0;
  node_maybe_closed(n);
}

static void node_stop(node *n) {
  if (n->stopping)
    return;
  n->stopping = 1;
  if (n->tick_live && !uv_is_closing((uv_handle_t *)&n->tick))
    uv_close((uv_handle_t *)&n->tick, on_plain_close);
  if (n->listener_live && !uv_is_closing((uv_handle_t *)&n->listener))
    uv_close((uv_handle_t *)&n->listener, on_plain_close);
  conn *next;
  for (conn *c = n->conns; c != NULL; c = next) {
    next = c->next;
    conn_fail(c, CR_EREFUSED, CR_WIRE_ABORTED, "the node was stopped before the session completed");
  }
}

/* Serve: the first loop iteration reports the bound address. */
static void on_tick(uv_timer_t *t) {
  node *n = t->data;
  uv_close((uv_handle_t *)&n->tick, on_plain_close);
  if (!n->stopping && n->cfg->on_listening != NULL)
    n->cfg->on_listening(n->cfg->ctx, n->bound);
}

/* The session's own-side checks (query, role, set size, expiry), before any
 * byte goes out: a run that cannot succeed never bothers the partner. */
static int check_local(const node *n, cr_error *err) {
  const cr_node_config *cfg = n->cfg;
  cr_session_config sc = node_session_config(n);
  sc.data = cfg->session.data; /* serve with load: the set checked before listening */
  int data_optional = n->serving ? cfg->session.load != NULL : cfg->session.ping;
  if (sc.data == NULL && !data_optional)
    return cr_error_set(err, CR_EINVAL,
                        "node: a template, an identity and a data set are required");
  return cr_session_check_local(&sc, (int64_t)time(NULL), err);
}

/* Allocates the node and checks what needs no handle: the identity is the
 * one the template pins for our role, the own-side session checks, the TLS
 * context. */
static int node_new(node **out, uv_loop_t *loop, const cr_node_config *cfg, int serving,
                    cr_error *err) {
  int rc;
  int routed = serving && cfg->route != NULL;
  if (!serving && cfg->route != NULL)
    return cr_error_set(err, CR_EINVAL, "node: routing is for serving");
  if (routed && (cfg->pinned == NULL || cfg->id == NULL))
    return cr_error_set(err, CR_EINVAL, "node: a router needs pinned() and an identity");
  if (!routed && (cfg->session.tmpl == NULL || cfg->id == NULL))
    return cr_error_set(err, CR_EINVAL, "node: a template and an identity are required");
  if (!routed && cfg->session.role != CR_ROLE_PROVIDER && cfg->session.role != CR_ROLE_CONSUMER)
    return cr_error_set(err, CR_EINVAL, "node: invalid role");
  const cr_template *t = cfg->session.tmpl;
  const uint8_t *own = cr_identity_fingerprint(cfg->id);
  const uint8_t *want = routed ? own : t->parties[cfg->session.role].cert_sha256;
  if (memcmp(own, want, CR_SHA256_BYTES) != 0) {
    char a[CR_SHA256_HEX_BYTES], b[CR_SHA256_HEX_BYTES];
    cr_hex_encode(a, own, CR_SHA256_BYTES);
    cr_hex_encode(b, want, CR_SHA256_BYTES);
    return cr_error_set(err, CR_ECONFIG,
                        "this node's certificate %s is not the one the template pins for "
                        "the %s (%s): the partner would refuse it",
                        a, cr_role_name(cfg->session.role), b);
  }
  node *n = calloc(1, sizeof *n);
  if (n == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  n->loop = loop;
  n->cfg = cfg;
  n->serving = serving;
  if (!routed && (rc = check_local(n, err)) != 0) {
    free(n);
    return rc;
  }
  if (routed) {
    n->pin = NULL; /* cfg->pinned decides */
    n->peer_role = "partner";
  } else {
    cr_role other = cr_role_other(cfg->session.role);
    n->pin = t->parties[other].cert_sha256;
    n->peer_role = cr_role_name(other);
  }
  n->handshake_ms =
      cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : CR_NODE_DEFAULT_HANDSHAKE_MS;
  n->idle_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms : CR_NODE_DEFAULT_IDLE_MS;
  n->max_sessions = cfg->max_sessions ? cfg->max_sessions : CR_NODE_DEFAULT_MAX_SESSIONS;
  n->accept_ms = cfg->accept_timeout_ms                        ? cfg->accept_timeout_ms
                 : n->handshake_ms < CR_NODE_DEFAULT_ACCEPT_MS ? n->handshake_ms
                                                               : CR_NODE_DEFAULT_ACCEPT_MS;
  /* A partner may legitimately have max_sessions handshakes in flight from
   * its one address: the defaults leave room for that. */
  n->max_pending = cfg->max_pending ? cfg->max_pending : CR_NODE_DEFAULT_MAX_PENDING;
  if (!cfg->max_pending && n->max_pending < 4 * n->max_sessions)
    n->max_pending = 4 * n->max_sessions;
  n->max_pending_ip = cfg->max_pending_per_ip ? cfg->max_pending_per_ip : n->max_pending / 4;
  if (!cfg->max_pending_per_ip && n->max_pending_ip < n->max_sessions)
    n->max_pending_ip = n->max_sessions;
  if (n->max_pending_ip == 0)
    n->max_pending_ip = 1;
  if (n->max_pending_ip > n->max_pending)
    n->max_pending_ip = n->max_pending;
  /* Sessions in progress, as many finishing their graceful close, and the
   * pending ones; never more than the fd limit leaves room for. */
  uint64_t cap = (uint64_t)n->max_pending + 2u * (uint64_t)n->max_sessions;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    uint64_t room = rl.rlim_cur > 2 * CR_NODE_FD_RESERVE ? rl.rlim_cur - CR_NODE_FD_RESERVE
                                                         : CR_NODE_FD_RESERVE;
    if (cap > room)
      cap = room;
  }
  if (cap < (uint64_t)n->max_sessions + 1)
    cap = (uint64_t)n->max_sessions + 1; /* room for one that is not a session */
  n->conn_cap = cap > UINT32_MAX ? UINT32_MAX : (unsigned)cap;
  if ((rc = cr_tls_ctx_new(&n->tls, cfg->id, serving, err)) != 0) {
    free(n);
    return rc;
  }
  *out = n;
  return 0;
}

void cr_node_free(cr_node *n) {
  if (n == NULL)
    return;
  cr_tls_ctx_free(n->tls);
  free(n);
}

void cr_node_stop(cr_node *n) {
  if (n == NULL || n->closed_fired)
    return;
  node_stop(n);
}

int cr_node_run_start(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg, cr_error *err) {
  node *n = NULL;
  char host[256], port[8];
  int rc;
  if (out == NULL || loop == NULL || cfg == NULL)
    return cr_error_set(err, CR_EINVAL, "node: no loop or no configuration");
  *out = NULL;
  if (!cfg->session.ping && (cfg->session.query == NULL || cfg->session.query[0] == '\0'))
    return cr_error_set(err, CR_EUSAGE, "no query given to run");
  if ((rc = parse_hostport(cfg->address, host, sizeof host, port, sizeof port, err)) != 0)
    return rc;
  if (host[0] == '\0')
    return cr_error_set(err, CR_EUSAGE, "%s: no host name", cfg->address);
  if ((rc = node_new(&n, loop, cfg, 0, err)) != 0)
    return rc;

  conn *c = conn_new(n);
  if (c == NULL) {
    cr_node_free(n);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  c->phase = PH_RESOLVE;
  snprintf(c->peer_addr, sizeof c->peer_addr, "%s", cfg->address);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  c->gai.data = c;
  /* Before any handle: a request refused at once leaves nothing open. */
  int r = uv_getaddrinfo(loop, &c->gai, on_resolved, host, port, &hints);
  if (r < 0) {
    conn_discard(c);
    cr_node_free(n);
    return cr_error_set(err, dns_code(r), "cannot resolve the partner's address %s: %s",
                        cfg->address, uv_strerror(r));
  }
  c->gai_busy = 1;
  conn_timer_init(c);
  conn_timer(c, n->handshake_ms); /* bounds DNS and connect too */
  *out = n;
  return 0;
}

static void on_failed_listener_close(uv_handle_t *h) { cr_node_free(h->data); }

/* A bound, listening socket, made with plain system calls so that a failure
 * leaves no libuv handle behind (a handle, once initialised, keeps the
 * caller's loop from closing until the loop has run its close callback). */
static int listen_socket(const struct sockaddr *sa, socklen_t salen, int *fd_out) {
  int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  int on = 1;
  /* As uv_tcp_bind does: a restarted node may bind while old connections
   * are in TIME_WAIT. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 || bind(fd, sa, salen) != 0 ||
      listen(fd, CR_NODE_BACKLOG) != 0) {
    int e = uv_translate_sys_error(errno);
    close(fd);
    return e;
  }
  *fd_out = fd;
  return 0;
}

int cr_node_check_address(const char *address, cr_error *err) {
  char host[256], port[8];
  return parse_hostport(address, host, sizeof host, port, sizeof port, err);
}

int cr_node_listen(uv_loop_t *loop, const char *address, int *fd, cr_error *err) {
  char host[256], port[8];
  struct addrinfo hints;
  uv_getaddrinfo_t gai;
  int rc, r;
  if (loop == NULL || fd == NULL)
    return cr_error_set(err, CR_EINVAL, "node: no loop");
  *fd = -1;
  if ((rc = parse_hostport(address, host, sizeof host, port, sizeof port, err)) != 0)
    return rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  /* Without a callback: resolved now, and no request stays registered. */
  r = uv_getaddrinfo(loop, &gai, NULL, host[0] ? host : NULL, port, &hints);
  if (r < 0)
    return cr_error_set(err, dns_code(r), "cannot listen on %s: %s", address, uv_strerror(r));
  r = listen_socket(gai.addrinfo->ai_addr, gai.addrinfo->ai_addrlen, fd);
  uv_freeaddrinfo(gai.addrinfo);
  if (r < 0)
    return cr_error_set(err, net_code(r) == CR_ENOMEM ? CR_ENOMEM : CR_ENET,
                        "cannot listen on %s: %s", address, uv_strerror(r));
  return 0;
}

int cr_node_serve_start(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg, cr_error *err) {
  int fd = -1, rc;
  if (out == NULL || loop == NULL || cfg == NULL)
    return cr_error_set(err, CR_EINVAL, "node: no loop or no configuration");
  *out = NULL;
  if ((rc = cr_node_listen(loop, cfg->address, &fd, err)) != 0)
    return rc;
  return cr_node_serve_start_fd(out, loop, cfg, fd, err);
}

int cr_node_serve_start_fd(cr_node **out, uv_loop_t *loop, const cr_node_config *cfg, int fd,
                           cr_error *err) {
  node *n = NULL;
  int rc, r;
  if (out == NULL || loop == NULL || cfg == NULL || fd < 0) {
    if (fd >= 0)
      close(fd);
    return cr_error_set(err, CR_EINVAL, "node: no loop, configuration or socket");
  }
  *out = NULL;
  if ((rc = node_new(&n, loop, cfg, 1, err)) != 0) {
    close(fd);
    return rc;
  }

  /* From here on nothing fails in practice: uv_tcp_open and uv_listen on a
   * listening socket only register it with the loop. */
  uv_tcp_init(loop, &n->listener);
  n->listener.data = n;
  n->listener_live = 1;
  r = uv_tcp_open(&n->listener, fd);
  if (r < 0)
    close(fd); /* not the handle's */
  else
    r = uv_listen((uv_stream_t *)&n->listener, CR_NODE_BACKLOG, on_connection);
  if (r < 0) {
    /* Should it happen, the node lives until the handle has closed (on the
     * caller's next loop run) and frees itself then, reporting nothing. */
    n->closed_fired = 1;
    uv_close((uv_handle_t *)&n->listener, on_failed_listener_close);
    return cr_error_set(err, CR_ENET, "cannot listen on %s: %s", cfg->address, uv_strerror(r));
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&n->listener, (struct sockaddr *)&ss, &len) == 0)
    format_sockaddr((struct sockaddr *)&ss, n->bound, sizeof n->bound);
  else
    snprintf(n->bound, sizeof n->bound, "%s", cfg->address);
  uv_timer_init(loop, &n->tick);
  n->tick.data = n;
  n->tick_live = 1;
  uv_timer_start(&n->tick, on_tick, 0, 0);
  *out = n;
  return 0;
}
