/*
 * A small data set under two match keys (e-mail and phone) for the dataset,
 * engine and protocol tests, with its answers worked out by hand.
 *
 * The provider (MK_PROVIDER_CSV, tier gold/silver) and the consumer
 * (MK_CONSUMER_CSV, seg s1/s2). With count_of consumer the consumer's
 * records are:
 *   R1 = rows c1 + c8 (they share a@x.example; c8's phone is not sent)
 *        e-mail matches p1 (gold), phone matches p7 (silver): both keys,
 *        pointing at two different provider records of different tiers
 *   c2   e-mail only (case differs), matches p2 (gold)
 *   c3   phone only (typed with spaces), matches p3 (silver)
 *   c4   both keys present, only the phone matches p4 (silver)
 *   c5   e-mail matches p5 (silver)
 *   c6   phone matches p5's phone (silver): c5 and c6 point at one provider
 *        record through different keys, two consumer records
 *   c7   no match;  c11 invalid e-mail skipped, phone does not match
 *   R12 = c12 + c13 + c14 (c13 shares c12's phone, c14 c13's e-mail):
 *        sends c12's e-mail and phone; h@x.example (c13, c14) and c14's
 *        phone are superseded, so p8 (h@x.example) does not match it
 *   c9 (invalid e-mail, no phone) and c10 (both empty) are rejected.
 * 9 records, 6 with a match: on e-mail R1 c2 c5 (3), on phone R1 c3 c4 c6
 * (4); both 1, e-mail only 2, phone only 3. Cells (tier, seg):
 * gold/s1 2 (R1 c2), silver/s1 2 (R1 c5), silver/s2 3 (c3 c4 c6), gold/s2 0.
 *
 * With count_of provider, the provider's 8 records (no shared values):
 * p1 e-mail, p2 e-mail, p3 phone, p4 phone, p5 both, p7 phone, p8 e-mail
 * (the consumer's values are all sent when it is not the counted side):
 * 7 with a match, e-mail 4 (p1 p2 p5 p8), phone 4 (p3 p4 p5 p7).
 */
#ifndef CR_TEST_SUPPORT_MULTIKEY_H
#define CR_TEST_SUPPORT_MULTIKEY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanroom/dataset.h"
#include "cleanroom/template.h"

static const char MK_PROVIDER_CSV[] = "email,phone,tier\n"
                                      "a@x.example,+15550000101,gold\n"   /* p1 */
                                      "b@x.example,,gold\n"               /* p2 */
                                      ",+15550000003,silver\n"            /* p3 */
                                      "d@x.example,+15550000004,silver\n" /* p4 */
                                      "e@x.example,+15550000099,silver\n" /* p5 */
                                      "zz@x.example,+15559999999,gold\n"  /* p6 */
                                      ",+15550000001,silver\n"            /* p7 */
                                      "h@x.example,,gold\n";              /* p8 */

static const char MK_CONSUMER_CSV[] = "user,email,phone,seg\n"
                                      "c1,a@x.example,+15550000001,s1\n"
                                      "c2,B@X.example,,s1\n"
                                      "c3,,+1 555 000 0003,s2\n"
                                      "c4,q@x.example,+15550000004,s2\n"
                                      "c5,e@x.example,+15550000005,s1\n"
                                      "c6,f@x.example,+15550000099,s2\n"
                                      "c7,n@x.example,+15550000007,s1\n"
                                      "c8,a@x.example,+15550000008,s2\n"
                                      "c9,not-an-email,,s1\n"
                                      "c10,,,s1\n"
                                      "c11,bad,+15550000011,s2\n"
                                      "c12,g@x.example,+15550000012,s1\n"
                                      "c13,h@x.example,+15550000012,s1\n"
                                      "c14,h@x.example,+15550000014,s2\n";

/* The template, count_of "consumer" or "provider"; queries: overlap
 * (both receive), by_tier_seg (group_by both), mine (members to the
 * count_of side), to_consumer (count, consumer only). */
static inline cr_template *mk_template(const char *count_of, uint64_t min_count) {
  char json[4096];
  const char *owner = count_of;
  snprintf(json, sizeof json,
           "{\"format\": \"cleanroom-template/1\", \"name\": \"multikey test\","
           " \"parties\": {\"provider\": {\"org\": \"P\", \"cert_sha256\": \"%064d\"},"
           "  \"consumer\": {\"org\": \"C\", \"cert_sha256\": \"%064d\"}},"
           " \"suite\": \"ristretto255\","
           " \"match_keys\": [{\"name\": \"email\", \"columns\": [\"email\"], \"normalize\": "
           "[\"email\"]},"
           "  {\"name\": \"phone\", \"columns\": [\"phone\"], \"normalize\": [\"phone\"]}],"
           " \"match\": \"any\", \"count_of\": \"%s\","
           " \"data\": {\"provider\": {\"required_columns\": [\"tier\"]},"
           "  \"consumer\": {\"required_columns\": [\"user\", \"seg\"]}},"
           " \"queries\": {"
           "  \"overlap\": {\"kind\": \"count\", \"run_by\": [\"consumer\", \"provider\"],"
           "   \"results_to\": [\"provider\", \"consumer\"], \"min_count\": %llu},"
           "  \"to_consumer\": {\"kind\": \"count\", \"run_by\": [\"consumer\"],"
           "   \"results_to\": [\"consumer\"], \"min_count\": %llu},"
           "  \"by_tier_seg\": {\"kind\": \"count\", \"run_by\": [\"consumer\"],"
           "   \"results_to\": [\"provider\", \"consumer\"], \"min_count\": %llu,"
           "   \"group_by\": {\"provider\": \"tier\", \"consumer\": \"seg\"}},"
           "  \"mine\": {\"kind\": \"members\", \"run_by\": [\"consumer\", \"provider\"],"
           "   \"results_to\": [\"%s\"], \"min_count\": %llu}},"
           " \"limits\": {\"size_buckets\": {\"edges\": [4, 8, 12, 16, 24, 32]}}}",
           1, 2, count_of, (unsigned long long)min_count, (unsigned long long)min_count,
           (unsigned long long)min_count, owner, (unsigned long long)min_count);
  cr_template *t = NULL;
  cr_error err;
  if (cr_template_parse(&t, json, strlen(json), "multikey.json", &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    abort();
  }
  return t;
}

/* The same keys with differential privacy: one count query, "noisy",
 * released to both with discrete Laplace noise (epsilon 1) under a budget. */
static inline cr_template *mk_template_noisy(void) {
  char json[2048];
  snprintf(json, sizeof json,
           "{\"format\": \"cleanroom-template/1\", \"name\": \"multikey noisy test\","
           " \"parties\": {\"provider\": {\"org\": \"P\", \"cert_sha256\": \"%064d\"},"
           "  \"consumer\": {\"org\": \"C\", \"cert_sha256\": \"%064d\"}},"
           " \"suite\": \"ristretto255\","
           " \"match_keys\": [{\"name\": \"email\", \"columns\": [\"email\"], \"normalize\": "
           "[\"email\"]},"
           "  {\"name\": \"phone\", \"columns\": [\"phone\"], \"normalize\": [\"phone\"]}],"
           " \"data\": {\"provider\": {\"required_columns\": [\"tier\"]},"
           "  \"consumer\": {\"required_columns\": [\"user\", \"seg\"]}},"
           " \"queries\": {\"noisy\": {\"kind\": \"count\", \"run_by\": [\"consumer\"],"
           "   \"results_to\": [\"provider\", \"consumer\"], \"min_count\": 1,"
           "   \"noise\": {\"mechanism\": \"discrete_laplace\", \"epsilon\": 1}}},"
           " \"limits\": {\"privacy_budget\": {\"epsilon\": 5},"
           "  \"size_buckets\": {\"edges\": [4, 8, 12, 16, 24, 32]}}}",
           1, 2);
  cr_template *t = NULL;
  cr_error err;
  if (cr_template_parse(&t, json, strlen(json), "multikey-noisy.json", &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    abort();
  }
  return t;
}

/* Writes text to a fresh temporary file; returns its malloc'ed path. */
static inline char *mk_write_temp(const char *text) {
  char *path = strdup("/tmp/cr-multikey-XXXXXX");
  int fd = path ? mkstemp(path) : -1;
  if (fd < 0)
    abort();
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len)
    abort();
  close(fd);
  return path;
}

/* Loads csv as role under t (group column may be NULL). The file stays
 * (members re-reads it) until mk_free. */
static inline cr_dataset *mk_load(const cr_template *t, cr_role role, const char *csv,
                                  const char *group) {
  char *path = mk_write_temp(csv);
  cr_dataset_options opt;
  cr_dataset_options_init(&opt);
  opt.max_reject_ratio = 0.5;
  opt.group_column = group;
  cr_dataset *d = NULL;
  cr_error err;
  if (cr_dataset_load(&d, path, t, role, &opt, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    abort();
  }
  free(path);
  return d;
}

static inline void mk_free(cr_dataset *d) {
  if (d == NULL)
    return;
  unlink(d->path);
  cr_dataset_free(d);
}

#endif
