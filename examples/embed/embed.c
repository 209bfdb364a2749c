/*
 * Embedding cleanroom: one provider and one consumer party in one process,
 * on one libuv loop that this program owns, over loopback TLS 1.3.
 *
 *   embed TEMPLATE PROVIDER_IDENTITY PROVIDER_DATA CONSUMER_IDENTITY CONSUMER_DATA QUERY
 *
 * The provider serves one session on 127.0.0.1 (a port the system picks);
 * once it listens, the consumer runs QUERY against it. Both parties apply
 * the whole contract (signatures, run limits, audit logs in each identity
 * directory) exactly as `cleanroom serve` and `cleanroom run` do: the
 * contract lives in the library, not in the command.
 *
 * Prints "count N" (or "suppressed" / "nothing released") and exits 0, or
 * says what went wrong and exits 1.
 */
/* libuv's headers need POSIX types (pthread_rwlock_t) that strict C11
 * (-std=c11) hides: ask for them, as any libuv program built that way must. */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include <cleanroom/party.h>

typedef struct app {
  const char *tmpl, *cons_id, *cons_data, *query;
  cr_party *provider, *consumer;
  uv_loop_t *loop;
  int failed;
} app;

static void fail(app *a, const char *who, int rc, const cr_error *err) {
  fprintf(stderr, "embed: %s: %s\n", who, cr_error_message(err, rc));
  a->failed = 1;
}

static void consumer_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  app *a = ctx;
  if (rc != 0 || s == NULL || s->res->status != CR_SESSION_DONE) {
    fail(a, "consumer", rc ? rc : CR_EINTERNAL, err);
    cr_party_stop(a->provider);
    return;
  }
  const cr_session_result *r = s->res;
  if (!r->receives)
    printf("nothing released to the consumer\n");
  else if (r->suppressed)
    printf("suppressed (below %llu)\n", (unsigned long long)r->min_count);
  else
    printf("count %llu\n", (unsigned long long)r->count);
}

static void provider_listening(void *ctx, const char *addr) {
  app *a = ctx;
  cr_error err;
  cr_error_clear(&err);
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_RUN;
  pc.template_path = a->tmpl;
  pc.identity_dir = a->cons_id;
  pc.address = addr;
  int rc = cr_party_open(&a->consumer, &pc, &err);
  cr_party_run_config rc_cfg = {0};
  rc_cfg.data = a->cons_data;
  rc_cfg.query = a->query;
  cr_party_events ev = {0};
  ev.on_closed = consumer_closed;
  ev.ctx = a;
  if (rc == 0)
    rc = cr_party_run(a->consumer, a->loop, &rc_cfg, &ev, &err);
  if (rc != 0) {
    fail(a, "consumer", rc, &err);
    cr_party_stop(a->provider);
  }
}

static void provider_closed(void *ctx, int rc, const cr_error *err, const cr_party_session *s) {
  app *a = ctx;
  (void)s;
  if (rc != 0 && !a->failed)
    fail(a, "provider", rc, err);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: embed TEMPLATE PROVIDER_IDENTITY PROVIDER_DATA CONSUMER_IDENTITY "
                    "CONSUMER_DATA QUERY\n");
    return 2;
  }
  /* Process-wide decisions are the program's: the library sets none. */
  signal(SIGPIPE, SIG_IGN);
  app a = {0};
  a.tmpl = argv[1];
  a.cons_id = argv[4];
  a.cons_data = argv[5];
  a.query = argv[6];
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  a.loop = &loop;

  cr_error err;
  cr_error_clear(&err);
  cr_party_config pc = {0};
  pc.mode = CR_PARTY_SERVE;
  pc.template_path = argv[1];
  pc.identity_dir = argv[2];
  pc.address = "127.0.0.1:0";
  int rc = cr_party_open(&a.provider, &pc, &err);
  cr_party_serve_config sc = {0};
  sc.data = argv[3];
  sc.once = 1;
  cr_party_events ev = {0};
  ev.on_listening = provider_listening;
  ev.on_closed = provider_closed;
  ev.ctx = &a;
  if (rc == 0)
    rc = cr_party_serve(a.provider, &loop, &sc, &ev, &err);
  if (rc != 0)
    fail(&a, "provider", rc, &err);
  else
    uv_run(&loop, UV_RUN_DEFAULT);

  cr_party_close(a.consumer);
  cr_party_close(a.provider);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "embed: the loop still holds handles\n");
    return 1;
  }
  return a.failed ? 1 : 0;
}
