/*
 * hostile_peer: a scripted hostile partner for the end-to-end tests
 * (tests/e2e/test_hostile.sh).
 *
 * It plays the runner (--peer HOST:PORT: connects, like `cleanroom run`) or
 * the responder (--listen HOST:PORT: accepts one connection, like `cleanroom
 * serve --once`) against a real node process, completes TLS 1.3 with its
 * identity through the project's sans-I/O cr_tls_* API over plain blocking
 * sockets, and then misbehaves in one scripted way (--case NAME). Most cases
 * run an honest cr_session underneath and alter its frames on the way out
 * (a point replaced by the identity, a sequence number changed, the Finish
 * signature flipped...), so everything before the fault is a real session
 * and the node is hit exactly where the case says. The others do without a
 * session: plain TCP, no certificate, silence, one byte at a time.
 *
 * It prints on stdout, one "key: value" a line: the case, its local and peer
 * addresses (the node's log names the peer by address), what it did, and
 * the outcome: the Error frame that came back (its wire code and text), or
 * that the node closed the connection, or the TLS failure. Exit status 0
 * when the case ran (whatever the node answered), 1 when it could not (no
 * connection, bad files), 2 on usage errors.
 *
 * Never used in production; links the project libraries and reads frame.h,
 * the protocol layer's internal framing (scripted peers build frames with
 * it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cleanroom/dataset.h"
#include "cleanroom/net.h"
#include "cleanroom/protocol.h"
#include "cleanroom/template.h"
#include "protocol/frame.h"

#define HP_DEFAULT_TIMEOUT_MS 15000
#define HP_DEFAULT_DELAY_MS 50
#define HP_POINT_BYTES 32

/* ---- cases ---------------------------------------------------------------- */

typedef enum hp_case {
  HC_HONEST,
  HC_PLAIN_TCP,
  HC_TCP_SILENT,
  HC_NO_CLIENT_CERT,
  HC_UNPINNED_CERT,
  HC_SLOW_HANDSHAKE,
  HC_TRUNCATED,
  HC_ZERO_LENGTH,
  HC_OVER_MAX,
  HC_NOT_A_FRAME,
  HC_FRAME_BEFORE_HELLO,
  HC_SECOND_HELLO,
  HC_DIGESTS_BEFORE_EOS,
  HC_WRONG_SEQ,
  HC_REPEATED_SEQ,
  HC_MORE_POINTS,
  HC_FEWER_POINTS,
  HC_NONCANONICAL_POINT,
  HC_IDENTITY_POINT,
  HC_HUGE_SET_SIZE,
  HC_DIGESTS_WRONG_LENGTH,
  HC_DIGESTS_UNSORTED,
  HC_BAD_FINISH,
  HC_NO_FINISH,
  HC_ERROR_FRAME,
  HC_BUSY_ERROR,
  HC_SILENT,
  HC_CLOSE_MID_STREAM,
  HC_RESET_MID_STREAM,
  HC_SLOW,
  HC_COUNT
} hp_case;

static const struct {
  const char *name;
  const char *what;
} CASES[HC_COUNT] = {
    [HC_HONEST] = {"honest", "a correct session (checks the peer program itself)"},
    [HC_PLAIN_TCP] = {"plain_tcp", "plain TCP, no TLS: an HTTP request (or reply)"},
    [HC_TCP_SILENT] = {"tcp_silent", "TCP connection, then nothing at all"},
    [HC_NO_CLIENT_CERT] = {"no_client_cert", "TLS 1.3 without a client certificate (runner)"},
    [HC_UNPINNED_CERT] = {"unpinned_cert",
                          "a correct session with the --identity given (one the template "
                          "does not pin)"},
    [HC_SLOW_HANDSHAKE] = {"slow_handshake", "the TLS handshake one byte per --delay-ms"},
    [HC_TRUNCATED] = {"truncated", "half of the first Batch frame, then close_notify"},
    [HC_ZERO_LENGTH] = {"zero_length", "a frame announcing length 0"},
    [HC_OVER_MAX] = {"over_max", "a frame announcing 16 MiB + 1 bytes"},
    [HC_NOT_A_FRAME] = {"not_a_frame", "64 bytes that are not a protobuf Frame"},
    [HC_FRAME_BEFORE_HELLO] = {"frame_before_hello", "EndOfSet instead of Hello"},
    [HC_SECOND_HELLO] = {"second_hello", "Hello again instead of the first Batch"},
    [HC_DIGESTS_BEFORE_EOS] = {"digests_before_eos", "Digests before our EndOfSet"},
    [HC_WRONG_SEQ] = {"wrong_seq", "the first Batch numbered 7"},
    [HC_REPEATED_SEQ] = {"repeated_seq", "the first Batch split in two, both numbered 0"},
    [HC_MORE_POINTS] = {"more_points", "one point more than the Hello announced"},
    [HC_FEWER_POINTS] = {"fewer_points", "one point fewer than the Hello announced"},
    [HC_NONCANONICAL_POINT] = {"noncanonical_point",
                               "point 0 replaced by a non-canonical encoding (p)"},
    [HC_IDENTITY_POINT] = {"identity_point", "point 0 replaced by the identity"},
    [HC_HUGE_SET_SIZE] = {"huge_set_size", "a Hello announcing 2^40 elements"},
    [HC_DIGESTS_WRONG_LENGTH] = {"digests_wrong_length",
                                 "the first Digests frame, plain, one byte short"},
    [HC_DIGESTS_UNSORTED] = {"digests_unsorted",
                             "the first Digests frame, plain, in decreasing order"},
    [HC_BAD_FINISH] = {"bad_finish", "a Finish whose signature has one bit flipped"},
    [HC_NO_FINISH] = {"no_finish", "everything but Finish, then close_notify"},
    [HC_ERROR_FRAME] = {"error_frame",
                        "an Error frame (PROTOCOL, with control characters) instead of "
                        "the first Batch"},
    [HC_BUSY_ERROR] = {"busy_error", "an Error frame BUSY instead of Hello"},
    [HC_SILENT] = {"silent", "Hello, then silence (for --hold-ms, or until the node gives up)"},
    [HC_CLOSE_MID_STREAM] = {"close_mid_stream",
                             "the first Batch, then the TCP connection closed (no "
                             "close_notify)"},
    [HC_RESET_MID_STREAM] = {"reset_mid_stream", "the first Batch, then a TCP reset"},
    [HC_SLOW] = {"slow", "the whole session one plaintext byte per TLS record, one per "
                         "--delay-ms"},
};

/* ---- options and state ----------------------------------------------------- */

typedef struct hp_opts {
  const char *case_name, *template_path, *identity, *data, *peer, *listen, *query;
  const char *wire_query; /* --wire-query: the query name Hello carries, any bytes */
  const char *role_name;
  unsigned delay_ms, hold_ms, timeout_ms;
} hp_opts;

enum close_kind { CLOSE_NONE, CLOSE_NOTIFY, CLOSE_ABRUPT, CLOSE_RESET };

typedef struct hp {
  hp_opts o;
  hp_case kase;
  int runner;
  cr_template *tmpl;
  cr_identity *id;
  cr_dataset *data;
  cr_role role;

  int fd;
  int fd_closed;
  cr_tls_ctx *ctx;
  cr_tls *tls;
  cr_buf in;      /* plaintext from the peer, not yet given to the session */
  int eof;        /* the peer closed (TCP end of stream or close_notify) */
  int broken;     /* socket or TLS failure: nothing more can be read */
  int write_shut; /* we sent close_notify / FIN */
  int tls_failed; /* TLS failed after the handshake (e.g. our certificate refused) */
  char end_why[CR_ERROR_MSG_MAX + 64];

  cr_session *s;
  cr_buf out;                /* session output not yet split into frames */
  cr_buf hello;              /* our Hello frame, for second_hello */
  int muted;                 /* the fault is done: nothing more goes out */
  int close_req;             /* enum close_kind, after the current output */
  unsigned batches, digests; /* frames of each kind seen going out */
  int ready_printed;
  char did[300];
  uint64_t t0;
  uint64_t deadline; /* of the whole case (--timeout-ms) */
  int gave_up;       /* the deadline passed */
} hp;

static void say(const char *key, const char *fmt, ...) CR_PRINTF(2, 3);
static void say(const char *key, const char *fmt, ...) {
  va_list ap;
  printf("%s: ", key);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
}

static void did(hp *h, const char *fmt, ...) CR_PRINTF(2, 3);
static void did(hp *h, const char *fmt, ...) {
  if (h->did[0] != '\0')
    return; /* the first fault is the one that counts */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->did, sizeof h->did, fmt, ap);
  va_end(ap);
  say("did", "%s", h->did);
}

static unsigned long elapsed(const hp *h) { return (unsigned long)(cr_now_ms() - h->t0); }

/* ---- sockets ----------------------------------------------------------------- */

static int split_hostport(const char *addr, char *host, size_t hcap, char *port, size_t pcap) {
  const char *colon = strrchr(addr, ':');
  if (colon == NULL || (size_t)(colon - addr) >= hcap || strlen(colon + 1) >= pcap)
    return -1;
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = '\0';
  strcpy(port, colon + 1);
  return 0;
}

static void fmt_addr(const struct sockaddr *sa, char *out, size_t cap) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
  } else {
    snprintf(out, cap, "?");
  }
}

static void print_addrs(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char a[80];
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
    fmt_addr((struct sockaddr *)&ss, a, sizeof a);
    say("local", "%s", a);
  }
  len = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
    fmt_addr((struct sockaddr *)&ss, a, sizeof a);
    say("peer", "%s", a);
  }
}

static int tcp_connect(const char *addr) {
  char host[256], port[16];
  struct addrinfo hints, *res = NULL;
  if (split_hostport(addr, host, sizeof host, port, sizeof port) != 0)
    return -1;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host, port, &hints, &res) != 0)
    return -1;
  int fd = -1;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
      continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

/* Listens, prints the bound address, accepts one connection. */
static int tcp_accept_one(const char *addr) {
  char host[256], port[16], bound[80];
  struct addrinfo hints, *res = NULL;
  if (split_hostport(addr, host, sizeof host, port, sizeof port) != 0)
    return -1;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
    return -1;
  int lfd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  int one = 1;
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(lfd, res->ai_addr, res->ai_addrlen) != 0 || listen(lfd, 4) != 0) {
    if (lfd >= 0)
      close(lfd);
    freeaddrinfo(res);
    return -1;
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(lfd, (struct sockaddr *)&ss, &len) == 0) {
    fmt_addr((struct sockaddr *)&ss, bound, sizeof bound);
    say("listening", "%s", bound);
  }
  int fd;
  do {
    fd = accept(lfd, NULL, NULL);
  } while (fd < 0 && errno == EINTR);
  close(lfd);
  if (fd >= 0)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int send_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Waits up to ms for bytes; returns the count, 0 on timeout, -1 at end of
 * stream or on error (h->eof / h->broken say which). */
static long raw_read(hp *h, uint8_t *buf, size_t cap, int ms) {
  struct pollfd p = {h->fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  if (r == 0)
    return 0;
  ssize_t n;
  do {
    n = recv(h->fd, buf, cap, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0)
    return (long)n;
  if (n == 0) {
    h->eof = 1;
    if (!h->end_why[0])
      snprintf(h->end_why, sizeof h->end_why, "the node closed the TCP connection");
  } else {
    h->broken = 1;
    if (!h->end_why[0])
      snprintf(h->end_why, sizeof h->end_why, "the connection failed: %s", strerror(errno));
  }
  return -1;
}

/* ---- TLS over the socket ---------------------------------------------------- */

/* Sends the ciphertext cr_tls has queued, at once or a byte per delay. */
static int tls_flush(hp *h, int slow) {
  uint8_t buf[16384];
  size_t n;
  while ((n = cr_tls_take(h->tls, buf, sizeof buf)) > 0) {
    if (!slow) {
      if (send_all(h->fd, buf, n) != 0)
        goto dead;
      continue;
    }
    for (size_t i = 0; i < n; i++) {
      if (send_all(h->fd, buf + i, 1) != 0)
        goto dead;
      /* Meanwhile, does the node hang up? */
      uint8_t tmp[4096];
      long got = raw_read(h, tmp, sizeof tmp, (int)h->o.delay_ms);
      if (got < 0) {
        say("slow", "the node hung up after %zu byte(s) of this flight, at %lu ms", i + 1,
            elapsed(h));
        return -1;
      }
      /* An alert or the node's own flight: keep it for TLS. */
      cr_error e;
      if (got > 0 && cr_tls_feed(h->tls, tmp, (size_t)got, &e) != 0)
        return -1;
    }
  }
  return 0;
dead:
  h->broken = 1;
  if (!h->end_why[0])
    snprintf(h->end_why, sizeof h->end_why, "sending failed: %s", strerror(errno));
  return -1;
}

/* Decrypts what TLS holds into h->in. */
static void tls_decrypt(hp *h) {
  cr_error e;
  cr_error_clear(&e);
  int r = cr_tls_read(h->tls, &h->in, SIZE_MAX, &e);
  (void)tls_flush(h, 0); /* post-handshake messages */
  if (r == 1) {
    h->eof = 1;
    if (!h->end_why[0])
      snprintf(h->end_why, sizeof h->end_why, "the node sent close_notify");
  } else if (r < 0) {
    h->broken = 1;
    h->tls_failed = 1;
    say("tls", "failed after the handshake: %s", e.msg);
    if (!h->end_why[0])
      snprintf(h->end_why, sizeof h->end_why, "TLS failed: %s", e.msg);
  }
}

/* Reads for up to ms; decrypts into h->in. Returns 1 when something came,
 * 0 on timeout, -1 when the connection has ended. */
static int tls_pump(hp *h, int ms) {
  uint8_t buf[65536];
  if (h->eof || h->broken || h->fd_closed)
    return -1;
  long n = raw_read(h, buf, sizeof buf, ms);
  if (n == 0)
    return 0;
  if (n < 0)
    return -1;
  cr_error e;
  cr_error_clear(&e);
  if (cr_tls_feed(h->tls, buf, (size_t)n, &e) != 0)
    return -1;
  tls_decrypt(h);
  return 1;
}

/* Completes the handshake (slow: our flights a byte per delay). 0, or -1
 * with the reason printed. */
static int tls_handshake(hp *h, int slow) {
  cr_error e;
  uint8_t buf[65536];
  cr_error_clear(&e);
  uint64_t deadline = cr_now_ms() + h->o.timeout_ms;
  for (;;) {
    int r = cr_tls_handshake(h->tls, &e);
    int fr = tls_flush(h, slow); /* our flight, or the alert */
    if (r < 0) {
      say("tls", "refused: %s (%s)", e.msg, cr_err_name(e.code));
      return -1;
    }
    if (r == 1)
      break;
    if (fr != 0 || h->eof || h->broken) {
      say("tls", "the node ended the handshake: %s (after %lu ms)", h->end_why, elapsed(h));
      return -1;
    }
    if (cr_now_ms() > deadline) {
      say("tls", "no handshake within %u ms", h->o.timeout_ms);
      return -1;
    }
    long n = raw_read(h, buf, sizeof buf, 100);
    if (n < 0) {
      say("tls", "the node ended the handshake: %s (after %lu ms)", h->end_why, elapsed(h));
      return -1;
    }
    if (n > 0 && cr_tls_feed(h->tls, buf, (size_t)n, &e) != 0)
      return -1;
  }
  say("tls", "ok");
  /* The peer's first records may have come with its last handshake flight. */
  tls_decrypt(h);
  return 0;
}

static void feed_in(hp *h);

/* Sends plaintext: at once, or (slow) one byte per TLS record and delay.
 * 1 when the slow trickle was cut short by the node's failure. */
static int tls_send(hp *h, const uint8_t *p, size_t len) {
  cr_error e;
  if (h->fd_closed || h->broken || h->write_shut)
    return -1;
  if (h->kase != HC_SLOW) {
    if (cr_tls_write(h->tls, p, len, &e) != 0)
      return -1;
    return tls_flush(h, 0);
  }
  for (size_t i = 0; i < len; i++) {
    if (cr_tls_write(h->tls, p + i, 1, &e) != 0 || tls_flush(h, 0) != 0)
      return -1;
    /* The pause doubles as listening: the node's Error ends the trickle. */
    if (cr_now_ms() > h->deadline) {
      say("slow", "sent %zu byte(s) one at a time in %lu ms and the node still waits", i + 1,
          elapsed(h));
      h->gave_up = 1;
      return -1;
    }
    int r = tls_pump(h, (int)h->o.delay_ms);
    feed_in(h);
    if (r < 0 || cr_session_status_get(h->s) == CR_SESSION_FAILED) {
      say("slow", "sent %zu byte(s) one at a time before the node %s (%lu ms)", i + 1,
          r < 0 ? "hung up" : "gave up", elapsed(h));
      return r < 0 ? -1 : 1;
    }
  }
  return 0;
}

static void do_close(hp *h, int kind) {
  if (h->fd_closed)
    return;
  if (kind == CLOSE_NOTIFY) {
    if (h->tls != NULL) {
      cr_tls_shutdown(h->tls);
      (void)tls_flush(h, 0);
    }
    shutdown(h->fd, SHUT_WR);
    h->write_shut = 1;
    return; /* still reading: the node may answer */
  }
  if (kind == CLOSE_RESET) {
    struct linger lg = {1, 0};
    setsockopt(h->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(h->fd);
  h->fd_closed = 1;
}

/* ---- frames ------------------------------------------------------------------ */

static int append_frame(cr_buf *b, Cleanroom__V1__Frame *f) { return cr__frame_append(b, f); }

static void append_header(cr_buf *b, uint32_t n) {
  uint8_t h4[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
  if (cr_buf_append(b, h4, 4) != 0)
    abort();
}

static void append_error(cr_buf *b, uint32_t code, const char *msg) {
  Cleanroom__V1__Error e = CLEANROOM__V1__ERROR__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  e.code = code;
  e.message = (char *)msg;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_ERROR;
  f.error = &e;
  if (append_frame(b, &f) != 0)
    abort();
}

static void append_batch(cr_buf *b, uint64_t seq, const uint8_t *pts, size_t len) {
  Cleanroom__V1__Batch m = CLEANROOM__V1__BATCH__INIT;
  Cleanroom__V1__Frame f = CLEANROOM__V1__FRAME__INIT;
  m.seq = seq;
  m.points.data = (uint8_t *)pts;
  m.points.len = len;
  f.msg_case = CLEANROOM__V1__FRAME__MSG_BATCH;
  f.batch = &m;
  if (append_frame(b, &f) != 0)
    abort();
}

/*
 * The fault: given one frame our honest session wants to send, appends
 * what really goes out to `wire` (the frame, a changed copy, other bytes or
 * nothing) and may mute the rest or ask for a close.
 */
static void mutate(hp *h, const uint8_t *raw, size_t raw_len, cr_buf *wire) {
  Cleanroom__V1__Frame *f = cr__frame_decode(raw + 4, raw_len - 4);
  int pass = 1;
  if (f == NULL)
    abort(); /* our own session's output always decodes */
  const cr_session_result *res = cr_session_result_get(h->s);

  switch (f->msg_case) {
  case CLEANROOM__V1__FRAME__MSG_HELLO:
    if (cr_buf_append(&h->hello, raw, raw_len) != 0)
      abort();
    if (h->o.wire_query != NULL && h->runner) {
      /* Our own session checks its query; the wire carries whatever the
       * test wants the node to face. */
      char *own = f->hello->query;
      f->hello->query = (char *)h->o.wire_query;
      if (append_frame(wire, f) != 0)
        abort();
      f->hello->query = own; /* freed with the frame */
      did(h, "sent Hello naming a query of %zu bytes of the test's choosing",
          strlen(h->o.wire_query));
      pass = 0;
    } else if (h->kase == HC_FRAME_BEFORE_HELLO) {
      Cleanroom__V1__EndOfSet e = CLEANROOM__V1__END_OF_SET__INIT;
      Cleanroom__V1__Frame g = CLEANROOM__V1__FRAME__INIT;
      g.msg_case = CLEANROOM__V1__FRAME__MSG_END_OF_SET;
      g.end_of_set = &e;
      if (append_frame(wire, &g) != 0)
        abort();
      did(h, "sent EndOfSet{count 0} where Hello belongs");
      h->muted = 1;
      pass = 0;
    } else if (h->kase == HC_HUGE_SET_SIZE) {
      f->hello->set_size = (uint64_t)1 << 40;
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent a Hello announcing 2^40 elements");
      h->muted = 1;
      pass = 0;
    } else if (h->kase == HC_BUSY_ERROR) {
      append_error(wire, CR_WIRE_BUSY, "busy, retry later (hostile peer)");
      did(h, "sent Error{BUSY} where Hello belongs, then close_notify");
      h->muted = 1;
      h->close_req = CLOSE_NOTIFY;
      pass = 0;
    }
    break;

  case CLEANROOM__V1__FRAME__MSG_BATCH: {
    Cleanroom__V1__Batch *b = f->batch;
    unsigned idx = h->batches++;
    if (idx != 0)
      break;
    size_t np = b->points.len / HP_POINT_BYTES;
    switch (h->kase) {
    case HC_TRUNCATED:
      if (cr_buf_append(wire, raw, 4 + (raw_len - 4) / 2) != 0)
        abort();
      did(h, "sent %zu of the %zu bytes of Batch 0, then close_notify", 4 + (raw_len - 4) / 2,
          raw_len);
      h->muted = 1;
      h->close_req = CLOSE_NOTIFY;
      pass = 0;
      break;
    case HC_ZERO_LENGTH:
      append_header(wire, 0);
      did(h, "sent a frame header announcing 0 bytes");
      h->muted = 1;
      pass = 0;
      break;
    case HC_OVER_MAX: {
      static const uint8_t junk[16] = {0};
      append_header(wire, CR_DEFAULT_MAX_FRAME + 1);
      if (cr_buf_append(wire, junk, sizeof junk) != 0)
        abort();
      did(h, "sent a frame header announcing %u bytes", CR_DEFAULT_MAX_FRAME + 1);
      h->muted = 1;
      pass = 0;
      break;
    }
    case HC_NOT_A_FRAME: {
      uint8_t junk[64];
      memset(junk, 0xff, sizeof junk);
      append_header(wire, sizeof junk);
      if (cr_buf_append(wire, junk, sizeof junk) != 0)
        abort();
      did(h, "sent a 64-byte frame of 0xff bytes (not a protobuf Frame)");
      h->muted = 1;
      pass = 0;
      break;
    }
    case HC_SECOND_HELLO:
      if (cr_buf_append(wire, h->hello.data, h->hello.len) != 0)
        abort();
      did(h, "sent our Hello a second time instead of Batch 0");
      h->muted = 1;
      pass = 0;
      break;
    case HC_DIGESTS_BEFORE_EOS: {
      Cleanroom__V1__Digests d = CLEANROOM__V1__DIGESTS__INIT;
      Cleanroom__V1__Frame g = CLEANROOM__V1__FRAME__INIT;
      uint8_t zeros[CR_MAX_DIGEST_BYTES] = {0};
      d.digests.data = zeros;
      d.digests.len = res->digest_bytes ? res->digest_bytes : 8;
      g.msg_case = CLEANROOM__V1__FRAME__MSG_DIGESTS;
      g.digests = &d;
      if (append_frame(wire, &g) != 0)
        abort();
      did(h, "sent Digests{seq 0, %zu bytes} before Batch 0 and EndOfSet", d.digests.len);
      h->muted = 1;
      pass = 0;
      break;
    }
    case HC_WRONG_SEQ:
      b->seq = 7;
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Batch 0 numbered 7");
      h->muted = 1;
      pass = 0;
      break;
    case HC_REPEATED_SEQ: {
      size_t half = np > 1 ? np / 2 : 1;
      append_batch(wire, 0, b->points.data, half * HP_POINT_BYTES);
      append_batch(wire, 0, b->points.data + (np > 1 ? half * HP_POINT_BYTES : 0),
                   (np > 1 ? np - half : 1) * HP_POINT_BYTES);
      did(h, "sent Batch 0 as two frames both numbered 0");
      h->muted = 1;
      pass = 0;
      break;
    }
    case HC_FEWER_POINTS:
      if (np < 2)
        break;
      b->points.len -= HP_POINT_BYTES;
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "dropped the last point of Batch 0 (EndOfSet still counts all)");
      pass = 0;
      break;
    case HC_NONCANONICAL_POINT: {
      /* p = 2^255 - 19, little-endian: a field element out of range. */
      uint8_t *pt = b->points.data;
      pt[0] = 0xed;
      memset(pt + 1, 0xff, 30);
      pt[31] = 0x7f;
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Batch 0 with point 0 replaced by a non-canonical encoding");
      h->muted = 1;
      pass = 0;
      break;
    }
    case HC_IDENTITY_POINT:
      memset(b->points.data, 0, HP_POINT_BYTES);
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Batch 0 with point 0 replaced by the identity");
      h->muted = 1;
      pass = 0;
      break;
    case HC_ERROR_FRAME:
      append_error(wire, CR_WIRE_PROTOCOL,
                   "hostile peer aborts \x1b[31m\x07 with control characters\r\nfake: line");
      did(h, "sent Error{PROTOCOL} with control characters instead of Batch 0, then "
             "close_notify");
      h->muted = 1;
      h->close_req = CLOSE_NOTIFY;
      pass = 0;
      break;
    case HC_SILENT:
      did(h, "went silent after the Hellos, holding the connection");
      h->muted = 1;
      pass = 0;
      break;
    case HC_CLOSE_MID_STREAM:
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Batch 0, then closed the TCP connection without close_notify");
      h->muted = 1;
      h->close_req = CLOSE_ABRUPT;
      pass = 0;
      break;
    case HC_RESET_MID_STREAM:
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Batch 0, then reset the TCP connection");
      h->muted = 1;
      h->close_req = CLOSE_RESET;
      pass = 0;
      break;
    default:
      break;
    }
    break;
  }

  case CLEANROOM__V1__FRAME__MSG_END_OF_SET:
    if (h->kase == HC_MORE_POINTS) {
      /* One more point than announced: a copy of a valid one will do. */
      /* The ristretto255 generator (RFC 9496). */
      static const uint8_t base[HP_POINT_BYTES] = {0xe2, 0xf2, 0xae, 0x0a, 0x6a, 0xbc, 0x4e, 0x71,
                                                   0xa8, 0x84, 0xa9, 0x61, 0xc5, 0x00, 0x51, 0x5f,
                                                   0x58, 0xe3, 0x0b, 0x6a, 0xa5, 0x82, 0xdd, 0x8d,
                                                   0xb6, 0xa6, 0x59, 0x45, 0xe0, 0x8d, 0x2d, 0x76};
      append_batch(wire, h->batches, base, sizeof base);
      did(h, "sent an extra Batch %u with one point past the %llu announced", h->batches,
          (unsigned long long)res->own_set_size);
      h->muted = 1;
      pass = 0;
    }
    break;

  case CLEANROOM__V1__FRAME__MSG_DIGESTS: {
    /* Our own plain Digests frame replaces the session's (plain or
     * Golomb-Rice coded): the faults are about the plain layout. */
    Cleanroom__V1__Digests *d = f->digests;
    unsigned idx = h->digests++;
    size_t l = res->digest_bytes;
    int coded = d->gcs.len > 0 || d->gcs_count > 0;
    size_t count = coded ? (size_t)d->gcs_count : (l ? d->digests.len / l : 0);
    if (idx != 0 || l == 0 || l > CR_MAX_DIGEST_BYTES || count == 0)
      break;
    Cleanroom__V1__Digests m = CLEANROOM__V1__DIGESTS__INIT;
    Cleanroom__V1__Frame g = CLEANROOM__V1__FRAME__INIT;
    uint8_t *buf = calloc(count > 2 ? count : 2, l);
    if (buf == NULL)
      abort();
    m.seq = d->seq;
    m.label = d->label;
    m.digests.data = buf;
    g.msg_case = CLEANROOM__V1__FRAME__MSG_DIGESTS;
    g.digests = &m;
    if (h->kase == HC_DIGESTS_WRONG_LENGTH) {
      m.digests.len = count * l - 1;
      if (append_frame(wire, &g) != 0)
        abort();
      did(h, "sent Digests 0 as %zu bytes for %zu digests of %zu bytes (one byte short)",
          m.digests.len, count, l);
      h->muted = 1;
      pass = 0;
    } else if (h->kase == HC_DIGESTS_UNSORTED) {
      memset(buf, 0xff, l); /* the largest value first, then the smallest */
      m.digests.len = 2 * l;
      if (append_frame(wire, &g) != 0)
        abort();
      did(h, "sent Digests 0 holding two digests in decreasing order");
      h->muted = 1;
      pass = 0;
    }
    free(buf);
    break;
  }

  case CLEANROOM__V1__FRAME__MSG_FINISH:
    if (h->kase == HC_BAD_FINISH && f->finish->signature.len > 0) {
      f->finish->signature.data[0] ^= 0x01;
      if (append_frame(wire, f) != 0)
        abort();
      did(h, "sent Finish with one bit of its signature flipped");
      pass = 0;
    } else if (h->kase == HC_NO_FINISH) {
      did(h, "sent everything but Finish, then close_notify");
      h->muted = 1;
      h->close_req = CLOSE_NOTIFY;
      pass = 0;
    }
    break;

  default:
    break;
  }
  if (pass && cr_buf_append(wire, raw, raw_len) != 0)
    abort();
  cr__frame_free(f);
}

/* Takes what the session wants to send, applies the fault, sends it.
 * Returns -1 once nothing more can be sent. */
static int pump_out(hp *h) {
  cr_buf wire;
  cr_buf_init(&wire);
  for (;;) {
    const uint8_t *p = NULL;
    size_t n = 0;
    (void)cr_session_send(h->s, &p, &n);
    if (n == 0)
      break;
    if (cr_buf_append(&h->out, p, n) != 0)
      abort();
    cr_session_sent(h->s, n);
  }
  /* Whole frames only (the session produces whole frames). */
  size_t off = 0;
  while (h->out.len - off >= 4) {
    const uint8_t *q = h->out.data + off;
    size_t len = 4 + ((size_t)q[0] << 24 | (size_t)q[1] << 16 | (size_t)q[2] << 8 | q[3]);
    if (h->out.len - off < len)
      break;
    if (!h->muted)
      mutate(h, q, len, &wire);
    off += len;
  }
  cr_buf_consume(&h->out, off);
  int rc = 0;
  if (wire.len > 0)
    rc = tls_send(h, wire.data, wire.len) < 0 ? -1 : 0;
  cr_buf_free(&wire);
  if (h->close_req != CLOSE_NONE) {
    do_close(h, h->close_req);
    h->close_req = CLOSE_NONE;
  }
  return rc;
}

static void feed_in(hp *h) {
  if (h->in.len == 0)
    return;
  (void)cr_session_recv(h->s, h->in.data, h->in.len);
  cr_buf_reset(&h->in);
}

static void report_session(hp *h, int timed_out) {
  const cr_session_result *r = cr_session_result_get(h->s);
  if (r->status == CR_SESSION_DONE) {
    if (r->receives && !r->suppressed)
      say("outcome", "done: count %llu (session completed) after %lu ms",
          (unsigned long long)r->count, elapsed(h));
    else
      say("outcome", "done: %s (session completed) after %lu ms",
          r->receives ? "suppressed" : "nothing released to this side", elapsed(h));
    return;
  }
  if (r->status == CR_SESSION_FAILED && r->error_from_peer) {
    say("error_code", "%d", r->wire_error);
    say("error_name", "%s", cr_wire_error_name(r->wire_error));
    say("outcome", "peer-error %s (%d) after %lu ms: %s", cr_wire_error_name(r->wire_error),
        r->wire_error, elapsed(h), r->error_msg);
    return;
  }
  if (r->status == CR_SESSION_FAILED) {
    say("outcome", "local-error %s after %lu ms: %s", cr_err_name(r->error), elapsed(h),
        r->error_msg);
    return;
  }
  if (timed_out)
    say("outcome", "no-answer: the node neither answered nor closed within %u ms", h->o.timeout_ms);
  else if (h->tls_failed)
    say("outcome", "tls-refused after %lu ms", elapsed(h));
  else
    say("outcome", "closed: %s, without an Error frame, after %lu ms",
        h->end_why[0] ? h->end_why : "the connection ended", elapsed(h));
}

/* ---- the cases --------------------------------------------------------------- */

static int run_session_case(hp *h) {
  cr_error e;
  uint8_t pk[CR_SIGN_PK_BYTES];
  cr_error_clear(&e);
  if (cr_tls_peer(h->tls, NULL, pk) != 0) {
    say("outcome", "local-error: no peer key after the handshake");
    return 1;
  }
  cr_session_config sc;
  memset(&sc, 0, sizeof sc);
  sc.tmpl = h->tmpl;
  sc.data = h->data;
  sc.role = h->role;
  sc.is_runner = h->runner;
  sc.query = h->runner ? h->o.query : NULL;
  sc.software = "hostile_peer";
  sc.sign = cr_identity_sign;
  sc.sign_ctx = h->id;
  sc.now_unix = (int64_t)time(NULL);
  memcpy(sc.peer_sign_pk, pk, sizeof pk);
  if (cr_session_new(&h->s, &sc, &e) != 0) {
    say("outcome", "local-error: %s", e.msg);
    return 1;
  }
  if (cr_session_start(h->s) != 0) {
    say("outcome", "local-error: cannot start the session");
    return 1;
  }
  if (h->kase == HC_SLOW)
    did(h, "sending the session one plaintext byte per TLS record, one every %u ms", h->o.delay_ms);

  uint64_t deadline = h->deadline;
  uint64_t hold_until = 0;
  int timed_out = 0;
  for (;;) {
    if (!h->fd_closed && !h->broken && !h->write_shut && pump_out(h) < 0 && !h->fd_closed &&
        !h->write_shut) {
      if (h->gave_up) {
        timed_out = 1;
        break;
      }
      /* The node hung up while we were sending: read what it said. */
      while (tls_pump(h, 200) > 0)
        ;
      feed_in(h);
      break;
    }
    feed_in(h);
    if (h->muted && !h->ready_printed) {
      h->ready_printed = 1;
      say("ready", "fault delivered at %lu ms", elapsed(h));
      if (h->o.hold_ms > 0)
        hold_until = cr_now_ms() + h->o.hold_ms;
    }
    if (h->fd_closed)
      break;
    cr_session_status st = cr_session_status_get(h->s);
    if (st != CR_SESSION_RUNNING && !cr_session_want_send(h->s)) {
      /* Ended: give the node a moment to say or close anything more. */
      if (!h->write_shut)
        do_close(h, CLOSE_NOTIFY);
      for (int i = 0; i < 20 && tls_pump(h, 100) >= 0; i++)
        ;
      break;
    }
    if (hold_until != 0 && cr_now_ms() >= hold_until) {
      say("outcome", "held: the node kept the session open for the %u ms hold", h->o.hold_ms);
      return 0;
    }
    if (cr_now_ms() > deadline) {
      timed_out = 1;
      break;
    }
    int r = tls_pump(h, 100);
    feed_in(h);
    if (r < 0) {
      /* The node closed: anything it sent has been fed. */
      break;
    }
  }
  report_session(h, timed_out);
  return 0;
}

/* TLS 1.3 with no certificate at all: plain OpenSSL, as cr_tls always
 * presents one. */
static int run_no_client_cert(hp *h) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl = NULL;
  int rc = 1;
  char buf[256];
  if (ctx == NULL)
    goto out;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  ssl = SSL_new(ctx);
  if (ssl == NULL || !SSL_set_fd(ssl, h->fd))
    goto out;
  if (SSL_connect(ssl) != 1) {
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    say("tls", "refused during the handshake: %s", buf);
    say("outcome", "tls-refused after %lu ms", elapsed(h));
    rc = 0;
    goto out;
  }
  say("tls", "client side finished (the node checks our certificate next)");
  did(h, "completed TLS 1.3 without presenting a certificate");
  /* In TLS 1.3 the server's verdict on our (absent) certificate arrives
   * after our side has finished: read it. */
  static const uint8_t hello_len[4] = {0, 0, 0, 8};
  (void)SSL_write(ssl, hello_len, sizeof hello_len);
  int n = SSL_read(ssl, buf, sizeof buf);
  if (n > 0) {
    say("outcome",
        "the node sent %d plaintext byte(s): it accepted a peer without a "
        "certificate",
        n);
  } else {
    unsigned long e = ERR_get_error();
    char msg[256] = "connection closed";
    if (e != 0)
      ERR_error_string_n(e, msg, sizeof msg);
    say("outcome", "tls-refused after %lu ms: %s", elapsed(h), msg);
  }
  rc = 0;
out:
  ERR_clear_error();
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return rc;
}

static int run_plain_tcp(hp *h) {
  uint8_t buf[4096];
  static const char req[] = "GET / HTTP/1.0\r\nHost: cleanroom\r\n\r\n";
  static const char rep[] = "HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
  size_t got = 0;
  if (h->runner) {
    if (send_all(h->fd, (const uint8_t *)req, sizeof req - 1) != 0)
      return 1;
    did(h, "sent an HTTP request over plain TCP");
  } else {
    /* Let the runner say its ClientHello, answer in HTTP. */
    (void)raw_read(h, buf, sizeof buf, 2000);
    if (send_all(h->fd, (const uint8_t *)rep, sizeof rep - 1) != 0)
      return 1;
    did(h, "answered the TLS ClientHello with an HTTP reply over plain TCP");
  }
  uint64_t deadline = cr_now_ms() + h->o.timeout_ms;
  while (cr_now_ms() < deadline) {
    long n = raw_read(h, buf, sizeof buf, 100);
    if (n < 0)
      break;
    if (n > 0 && got == 0 && buf[0] == 0x15)
      say("received", "a TLS alert record");
    got += (size_t)(n > 0 ? n : 0);
  }
  if (h->eof || h->broken)
    say("outcome", "closed: %s after %zu byte(s), %lu ms", h->end_why, got, elapsed(h));
  else
    say("outcome", "no-answer: still open after %u ms", h->o.timeout_ms);
  return 0;
}

static int run_tcp_silent(hp *h) {
  uint8_t buf[4096];
  size_t got = 0;
  did(h, "opened TCP and said nothing");
  uint64_t deadline = cr_now_ms() + h->o.timeout_ms;
  while (cr_now_ms() < deadline) {
    long n = raw_read(h, buf, sizeof buf, 100);
    if (n < 0)
      break;
    got += (size_t)(n > 0 ? n : 0);
  }
  if (h->eof || h->broken)
    say("outcome", "closed: %s after %zu byte(s), %lu ms", h->end_why, got, elapsed(h));
  else
    say("outcome", "no-answer: still open after %u ms", h->o.timeout_ms);
  return 0;
}

/* ---- main -------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f, "Usage: hostile_peer --case NAME --template T --identity DIR [--data CSV]\n"
             "                    (--peer HOST:PORT | --listen HOST:PORT) [--query Q]\n"
             "                    [--role provider|consumer] [--delay-ms N] [--hold-ms N]\n"
             "                    [--timeout-ms N] [--wire-query BYTES]\n\n"
             "--peer plays the runner (connects), --listen the responder (accepts one\n"
             "connection). The role defaults to the template party of the identity, or\n"
             "consumer for a runner and provider for a responder. Cases:\n");
  for (int i = 0; i < HC_COUNT; i++)
    fprintf(f, "  %-22s %s\n", CASES[i].name, CASES[i].what);
}

static int parse_uint(const char *s, unsigned *out) {
  char *end = NULL;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v > 3600000)
    return -1;
  *out = (unsigned)v;
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"case", required_argument, NULL, 'c'},     {"template", required_argument, NULL, 't'},
      {"identity", required_argument, NULL, 'i'}, {"data", required_argument, NULL, 'd'},
      {"peer", required_argument, NULL, 'p'},     {"listen", required_argument, NULL, 'l'},
      {"query", required_argument, NULL, 'q'},    {"role", required_argument, NULL, 'r'},
      {"delay-ms", required_argument, NULL, 'D'}, {"wire-query", required_argument, NULL, 'W'},
      {"hold-ms", required_argument, NULL, 'H'},  {"timeout-ms", required_argument, NULL, 'T'},
      {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
  hp h;
  int c, rc = 1;
  cr_error err;
  memset(&h, 0, sizeof h);
  h.fd = -1;
  h.o.query = "overlap";
  h.o.delay_ms = HP_DEFAULT_DELAY_MS;
  h.o.timeout_ms = HP_DEFAULT_TIMEOUT_MS;
  cr_buf_init(&h.in);
  cr_buf_init(&h.out);
  cr_buf_init(&h.hello);
  cr_error_clear(&err);
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      h.o.case_name = optarg;
      break;
    case 't':
      h.o.template_path = optarg;
      break;
    case 'i':
      h.o.identity = optarg;
      break;
    case 'd':
      h.o.data = optarg;
      break;
    case 'p':
      h.o.peer = optarg;
      break;
    case 'l':
      h.o.listen = optarg;
      break;
    case 'q':
      h.o.query = optarg;
      break;
    case 'W':
      h.o.wire_query = optarg;
      break;
    case 'r':
      h.o.role_name = optarg;
      break;
    case 'D':
      if (parse_uint(optarg, &h.o.delay_ms) != 0)
        goto bad_usage;
      break;
    case 'H':
      if (parse_uint(optarg, &h.o.hold_ms) != 0)
        goto bad_usage;
      break;
    case 'T':
      if (parse_uint(optarg, &h.o.timeout_ms) != 0 || h.o.timeout_ms == 0)
        goto bad_usage;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      goto bad_usage;
    }
  }
  if (optind < argc || h.o.case_name == NULL || h.o.template_path == NULL || h.o.identity == NULL ||
      (h.o.peer == NULL) == (h.o.listen == NULL))
    goto bad_usage;
  h.kase = HC_COUNT;
  for (int i = 0; i < HC_COUNT; i++)
    if (strcmp(CASES[i].name, h.o.case_name) == 0)
      h.kase = (hp_case)i;
  if (h.kase == HC_COUNT) {
    fprintf(stderr, "hostile_peer: unknown case \"%s\"\n", h.o.case_name);
    goto bad_usage;
  }
  h.runner = h.o.peer != NULL;
  if (h.kase == HC_NO_CLIENT_CERT && !h.runner) {
    fprintf(stderr, "hostile_peer: no_client_cert is a runner case (--peer)\n");
    return 2;
  }
  int needs_session = h.kase >= HC_TRUNCATED || h.kase == HC_HONEST || h.kase == HC_UNPINNED_CERT;
  if (needs_session && h.o.data == NULL) {
    fprintf(stderr, "hostile_peer: case %s needs --data\n", h.o.case_name);
    return 2;
  }

  signal(SIGPIPE, SIG_IGN);
  if (cr_crypto_init() != 0) {
    fprintf(stderr, "hostile_peer: libsodium failed to initialise\n");
    return 1;
  }
  if (cr_template_load(&h.tmpl, h.o.template_path, &err) != 0 ||
      cr_identity_load(&h.id, h.o.identity, &err) != 0) {
    fprintf(stderr, "hostile_peer: %s\n", err.msg);
    goto out;
  }
  if (h.o.role_name != NULL) {
    if (cr_role_parse(h.o.role_name, &h.role) != 0)
      goto bad_usage;
  } else if (cr_template_role_of(h.tmpl, cr_identity_fingerprint(h.id), &h.role) != 0) {
    h.role = h.runner ? CR_ROLE_CONSUMER : CR_ROLE_PROVIDER;
  }
  if (needs_session) {
    cr_dataset_options dopt;
    cr_dataset_options_init(&dopt);
    if (cr_dataset_load(&h.data, h.o.data, h.tmpl, h.role, &dopt, &err) != 0) {
      fprintf(stderr, "hostile_peer: %s\n", err.msg);
      goto out;
    }
  }
  say("case", "%s: %s", CASES[h.kase].name, CASES[h.kase].what);
  say("role", "%s (%s)", cr_role_name(h.role), h.runner ? "runner" : "responder");

  h.fd = h.runner ? tcp_connect(h.o.peer) : tcp_accept_one(h.o.listen);
  if (h.fd < 0) {
    fprintf(stderr, "hostile_peer: cannot %s %s: %s\n", h.runner ? "connect to" : "listen on",
            h.runner ? h.o.peer : h.o.listen, strerror(errno));
    goto out;
  }
  h.t0 = cr_now_ms();
  h.deadline = h.t0 + h.o.timeout_ms;
  print_addrs(h.fd);

  switch (h.kase) {
  case HC_PLAIN_TCP:
    rc = run_plain_tcp(&h);
    goto out;
  case HC_TCP_SILENT:
    rc = run_tcp_silent(&h);
    goto out;
  case HC_NO_CLIENT_CERT:
    rc = run_no_client_cert(&h);
    goto out;
  default:
    break;
  }

  if (cr_tls_ctx_new(&h.ctx, h.id, !h.runner, &err) != 0 ||
      cr_tls_new(&h.tls, h.ctx, h.tmpl->parties[cr_role_other(h.role)].cert_sha256,
                 cr_role_name(cr_role_other(h.role)), &err) != 0) {
    fprintf(stderr, "hostile_peer: %s\n", err.msg);
    goto out;
  }
  if (h.kase == HC_SLOW_HANDSHAKE)
    did(&h, "sent the TLS handshake one byte per %u ms", h.o.delay_ms);
  if (tls_handshake(&h, h.kase == HC_SLOW_HANDSHAKE) != 0) {
    /* The node's verdict on our certificate may still be on its way. */
    say("outcome", "tls-refused after %lu ms", elapsed(&h));
    rc = 0;
    goto out;
  }
  if (h.kase == HC_SLOW_HANDSHAKE) {
    say("outcome", "the handshake completed after %lu ms despite the trickle", elapsed(&h));
    rc = 0;
    goto out;
  }
  rc = run_session_case(&h);
  goto out;

bad_usage:
  usage(stderr);
  rc = 2;
out:
  if (h.fd >= 0 && !h.fd_closed)
    close(h.fd);
  cr_session_free(h.s);
  cr_tls_free(h.tls);
  cr_tls_ctx_free(h.ctx);
  cr_buf_free(&h.in);
  cr_buf_free(&h.out);
  cr_buf_free(&h.hello);
  cr_dataset_free(h.data);
  cr_identity_free(h.id);
  cr_template_free(h.tmpl);
  return rc;
}
