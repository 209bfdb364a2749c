/*
 * Fuzz target: the `where` filter parser over arbitrary text (fixed
 * declarations); a filter that parses is bound to a fixed header and
 * evaluated on a few rows. The same bytes also go through the parameter
 * parser as each declared type. Checks the module's promises and aborts on
 * a violation: errors are CR_ETEMPLATE naming the origin and a position,
 * evaluation answers 0 or 1 and the same with or without lens, every
 * column the filter reads is known, and a canonical parameter text parses
 * back to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cr_param_decl decls[] = {
    {"codes", CR_PARAM_STRING_LIST}, {"min_age", CR_PARAM_INTEGER}, {"max_age", CR_PARAM_INTEGER},
    {"who", CR_PARAM_STRING},        {"score", CR_PARAM_NUMBER},
};
#define NDECLS (sizeof decls / sizeof decls[0])

static const char *const args[] = {"codes=E11,E10,a\\,b", "min_age=18", "max_age=65", "who=Ann Lee",
                                   "score=-2.5e1"};

static const char *const header[] = {"dx_code", "age", "name",  "score", "first name",
                                     "a",       "b",   "x.y-z", "AND"};
#define NCOLS (sizeof header / sizeof header[0])

static const char *const rows[][NCOLS] = {
    {"E11", "18", "Ann Lee", "-25", "Ann", "1", "2", "", "x"},
    {" E10 ", "65.0", "ann", "abc", "", "0x10", "inf", "a,b", "1e999"},
    {"", "", "", "", "", "", "", "", ""},
    {"E12", "9007199254740993", "'", "-0", "\"", "+7", ".5", "7.", "é"},
};

static void check_params(const char *text) {
  for (size_t k = 0; k < NDECLS; k++) {
    const char *name = decls[k].name;
    cr_params p = {NULL, 0}, q = {NULL, 0};
    cr_error err;
    int rc = cr_params_from_pairs(&p, &name, &text, 1, &decls[k], 1, &err);
    if (rc != 0) {
      if (rc != CR_EPROTO || p.v != NULL || strstr(err.msg, name) == NULL)
        abort();
      continue;
    }
    const char *canon = p.v[0].text;
    if (cr_params_from_pairs(&q, &name, &canon, 1, &decls[k], 1, &err) != 0 ||
        strcmp(q.v[0].text, canon) != 0 || q.v[0].nitems != p.v[0].nitems ||
        q.v[0].integer != p.v[0].integer || q.v[0].number != p.v[0].number)
      abort();
    for (size_t i = 0; i < p.v[0].nitems; i++)
      if (strcmp(p.v[0].items[i], q.v[0].items[i]) != 0 || p.v[0].items[i][0] == '\0')
        abort();
    cr_params_free(&p);
    cr_params_free(&q);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_filter *f = NULL;
  cr_params p = {NULL, 0};
  cr_error err;
  char *text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  check_params(text);
  int rc = cr_filter_parse(&f, text, decls, NDECLS, "fuzz", &err);
  if (rc != 0) {
    if (rc != CR_ETEMPLATE || f != NULL || strncmp(err.msg, "fuzz: ", 6) != 0)
      abort();
    goto done;
  }
  if (cr_params_from_args(&p, args, NDECLS, decls, NDECLS, &err) != 0)
    abort();
  const char *const *cols;
  size_t ncols = cr_filter_columns(f, &cols), known = 1;
  if (ncols == 0)
    abort(); /* every predicate reads a column */
  for (size_t c = 0; c < ncols; c++) {
    size_t h;
    for (h = 0; h < NCOLS && strcmp(cols[c], header[h]) != 0; h++)
      ;
    known &= h < NCOLS;
  }
  rc = cr_filter_bind(f, &p, header, NCOLS, &err);
  if ((rc == 0) != (known == 1) || (rc != 0 && rc != CR_EDATA))
    abort();
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    size_t lens[NCOLS];
    for (size_t i = 0; i < NCOLS; i++)
      lens[i] = strlen(rows[r][i]);
    for (size_t n = 0; n <= NCOLS; n += NCOLS / 2) {
      int k = cr_filter_eval(f, rows[r], lens, n);
      if ((k != 0 && k != 1) || k != cr_filter_eval(f, rows[r], NULL, n) || (rc != 0 && k != 0))
        abort();
    }
  }
done:
  cr_params_free(&p);
  cr_filter_free(f);
  free(text);
  return 0;
}
