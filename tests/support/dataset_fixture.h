/*
 * The template and file helpers the dataset tests share: one match key
 * "email" (e-mail normalized), the provider requiring email and segment,
 * the consumer email.
 */
#ifndef CR_TEST_SUPPORT_DATASET_FIXTURE_H
#define CR_TEST_SUPPORT_DATASET_FIXTURE_H

#include <stdio.h>
#include <string.h>

#include "cleanroom/template.h"

static char *fx_prov_req[] = {"email", "segment"};
static char *fx_cons_req[] = {"email"};
static char *fx_email_cols[] = {"email"};
static cr_normalizer fx_email_norm[] = {CR_NORM_EMAIL};

static inline void make_template(cr_template *t) {
  memset(t, 0, sizeof *t);
  t->name = "test";
  t->match_key.name = "email";
  t->match_key.columns = fx_email_cols;
  t->match_key.ncolumns = 1;
  t->match_key.normalize = fx_email_norm;
  t->match_key.nnormalize = 1;
  t->required_columns[CR_ROLE_PROVIDER] = fx_prov_req;
  t->nrequired_columns[CR_ROLE_PROVIDER] = 2;
  t->required_columns[CR_ROLE_CONSUMER] = fx_cons_req;
  t->nrequired_columns[CR_ROLE_CONSUMER] = 1;
}

/* Writes len bytes of data to file (the test fails if it cannot). */
static inline void write_file_at(const char *file, const char *data, size_t len) {
  FILE *f = fopen(file, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

#endif
