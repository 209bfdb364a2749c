/*
 * The privacy budget (limits.privacy_budget, docs/privacy.md) as the party's
 * audit trail keeps it: each admitted run of a noisy query records its spend
 * in session_started before anything can be released; a run that would
 * overspend is refused with what is spent and left; the sums are exact
 * (0.1 + 0.1 + 0.1 is 0.3: three runs fit a budget of 0.3, which a
 * floating-point sum would refuse); they survive a restart (read back from
 * the log) and belong to one template.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cleanroom/party.h"
#include "party/party_internal.h"
#include "support/fixtures.h"

typedef struct world {
  char root[FX_PATH_MAX];
  fx_parties ids;
  cr_identity *id;
  char log[FX_PATH_MAX];
} world;

static int setup(void **state) {
  world *w = calloc(1, sizeof *w);
  cr_error err;
  if (w == NULL || fx_tmpdir(w->root, sizeof w->root, "test_party_budget") != 0 ||
      fx_parties_generate(&w->ids, w->root) != 0 ||
      cr_identity_load(&w->id, w->ids.dir[FX_PROVIDER], &err) != 0)
    return -1;
  assert_non_null(fx_join(w->log, sizeof w->log, w->root, "audit.jsonl"));
  *state = w;
  return 0;
}

static int teardown(void **state) {
  world *w = *state;
  cr_identity_free(w->id);
  (void)fx_rmtree(w->root);
  free(w);
  return 0;
}

#define FX_ONES64 "1111111111111111111111111111111111111111111111111111111111111111"
#define FX_TWOS64 "2222222222222222222222222222222222222222222222222222222222222222"
/* Two parties, two certificates (one pinned for both is not a template). */
#define PARTIES                                                                                    \
  "\"parties\": {\"provider\": {\"org\": \"P\", \"cert_sha256\": \"" FX_ONES64 "\"},"              \
  " \"consumer\": {\"org\": \"C\", \"cert_sha256\": \"" FX_TWOS64 "\"}},"

static cr_template *make(const char *noise, const char *budget) {
  char json[2048];
  snprintf(json, sizeof json,
           "{\"format\": \"cleanroom-template/1\", \"name\": \"dp\", " PARTIES
           " \"suite\": \"ristretto255\","
           " \"match_key\": {\"name\": \"email\", \"columns\": [\"email\"], \"normalize\": "
           "[\"email\"]},"
           " \"queries\": {\"q\": {\"kind\": \"count\", \"run_by\": [\"consumer\"], "
           "\"results_to\": [\"consumer\"], \"min_count\": 10, \"noise\": %s}},"
           " \"limits\": {\"privacy_budget\": %s}}",
           noise, budget);
  cr_template *t = NULL;
  cr_error err;
  int rc = cr_template_parse(&t, json, strlen(json), "t", &err);
  if (rc != 0)
    fail_msg("%s", err.msg);
  return t;
}

/* What the session hands the admit hook for a run of q. */
static void result_of(cr_session_result *r, const cr_query *q) {
  memset(r, 0, sizeof *r);
  snprintf(r->query, sizeof r->query, "%s", q->name);
  r->role = CR_ROLE_PROVIDER;
  r->noisy = q->noise.mechanism != CR_NOISE_NONE;
  r->noise = q->noise;
}

static int admit(world *w, cr_template *t, char *msg, size_t cap) {
  cr_trail a;
  cr_error err;
  cr_session_result r;
  assert_int_equal(cr__trail_open(&a, w->log, w->id, t, &err), 0);
  result_of(&r, &t->queries[0]);
  msg[0] = '\0';
  int rc = cr__trail_admit(&a, &r, msg, cap);
  cr__trail_close(&a);
  return rc;
}

static void budget_now(world *w, cr_template *t, cr_party_budget *b) {
  cr_trail a;
  cr_error err;
  char msg[256];
  assert_int_equal(cr__trail_open(&a, w->log, w->id, t, &err), 0);
  assert_int_equal(cr__trail_budget(&a, b, msg, sizeof msg), 0);
  cr__trail_close(&a);
}

static void test_exact_sums(void **state) {
  world *w = *state;
  cr_template *t =
      make("{\"mechanism\": \"discrete_laplace\", \"epsilon\": 0.1}", "{\"epsilon\": 0.3}");
  char msg[512];
  cr_party_budget b;
  /* Each admission on a fresh trail: the spend is read back from the log
   * every time (a restart between runs). */
  for (int i = 0; i < 3; i++) {
    if (admit(w, t, msg, sizeof msg) != 0)
      fail_msg("run %d refused: %s", i + 1, msg);
    budget_now(w, t, &b);
    assert_true(b.set);
    assert_int_equal(b.epsilon, 300000);
    assert_int_equal(b.epsilon_spent, 100000 * (uint64_t)(i + 1));
  }
  assert_int_equal(admit(w, t, msg, sizeof msg), CR_EREFUSED);
  assert_non_null(strstr(msg, "query \"q\" would spend epsilon 0.1 of the privacy budget, but only "
                              "0 of 0.3 is left (0.3 spent under this template"));
  /* The run check before connecting says the same, and records nothing. */
  cr_trail a;
  cr_error err;
  assert_int_equal(cr__trail_open(&a, w->log, w->id, t, &err), 0);
  assert_int_equal(cr__trail_budget_check(&a, &t->queries[0], msg, sizeof msg), CR_EREFUSED);
  assert_non_null(strstr(msg, "0 of 0.3 is left"));
  cr__trail_close(&a);
  assert_int_equal(fx_audit_count(w->log, "session_started"), 3);
  /* Each session_started records its spend exactly. */
  json_t *e = fx_audit_event(w->log, "session_started", 2);
  json_t *sp = json_object_get(e, "privacy_spend");
  assert_int_equal(json_integer_value(json_object_get(sp, "epsilon_micro")), 100000);
  assert_int_equal(json_integer_value(json_object_get(sp, "delta_femto")), 0);
  assert_string_equal(json_string_value(json_object_get(sp, "mechanism")), "discrete_laplace");
  json_decref(e);
  cr_template_free(t);

  /* Another template (another hash) has its own budget in the same log. */
  t = make("{\"mechanism\": \"discrete_laplace\", \"epsilon\": 0.2}", "{\"epsilon\": 0.3}");
  budget_now(w, t, &b);
  assert_int_equal(b.epsilon_spent, 0);
  assert_int_equal(admit(w, t, msg, sizeof msg), 0);
  assert_int_equal(admit(w, t, msg, sizeof msg), CR_EREFUSED);
  assert_non_null(strstr(msg, "epsilon 0.2 of the privacy budget, but only 0.1 of 0.3 is left"));
  cr_template_free(t);
}

/* Delta adds up too, in 10^-15ths; epsilon derived from sigma spends. */
static void test_delta(void **state) {
  world *w = *state;
  cr_template *t = make("{\"mechanism\": \"discrete_gaussian\", \"sigma\": 20, \"delta\": 1e-9}",
                        "{\"epsilon\": 100, \"delta\": 3e-9}");
  char msg[512];
  for (int i = 0; i < 3; i++)
    assert_int_equal(admit(w, t, msg, sizeof msg), 0);
  assert_int_equal(admit(w, t, msg, sizeof msg), CR_EREFUSED);
  assert_non_null(
      strstr(msg, "would spend delta 1e-09 of the privacy budget, but only 0 of 3e-09"));
  cr_party_budget b;
  budget_now(w, t, &b);
  assert_int_equal(b.delta, 3000000);
  assert_int_equal(b.delta_spent, 3000000);
  assert_int_equal(b.epsilon_spent, 3 * t->queries[0].noise.epsilon);
  cr_template_free(t);
}

/* A template without a budget reports none. */
static void test_no_budget(void **state) {
  world *w = *state;
  const char *json =
      "{\"format\": \"cleanroom-template/1\", \"name\": \"x\", " PARTIES
      " \"suite\": \"ristretto255\", \"match_key\": {\"name\": \"email\", \"columns\": "
      "[\"email\"], \"normalize\": [\"email\"]}, \"queries\": {\"q\": {\"kind\": \"count\", "
      "\"run_by\": [\"consumer\"], \"results_to\": [\"consumer\"], \"min_count\": 10}}}";
  cr_template *t = NULL;
  cr_error err;
  assert_int_equal(cr_template_parse(&t, json, strlen(json), "t", &err), 0);
  cr_party_budget b;
  budget_now(w, t, &b);
  assert_false(b.set);
  char msg[256];
  assert_int_equal(admit(w, t, msg, sizeof msg), 0);
  json_t *e = fx_audit_event(w->log, "session_started", 0);
  assert_null(json_object_get(e, "privacy_spend"));
  json_decref(e);
  cr_template_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_exact_sums, setup, teardown),
      cmocka_unit_test_setup_teardown(test_delta, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_budget, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
