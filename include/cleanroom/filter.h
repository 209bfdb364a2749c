/*
 * cleanroom — `where` filters and run parameters (design §5-6).
 *
 * A query may give each role a filter over that party's own columns, e.g.
 *   dx_code IN :codes AND age BETWEEN :min_age AND :max_age
 * with typed parameters whose values are chosen per run
 * (`--param codes=E11,E10 --param min_age=18`) and sent in Hello. Each party
 * evaluates only its own side's filter, locally, on each row before blinding.
 * The language is described in docs/filters.md.
 *
 * Owns: parsing a filter (errors give the position and a caret line),
 * parsing and validating parameter values against the query's declared types
 * (both nodes run the same code on the same text), binding a filter to a CSV
 * header and to parameter values, and evaluating one row.
 * Never: puts a cell of the data or a parameter's value into an error
 * message (messages name the origin, positions in the filter text, column
 * and parameter names only); allocates or fails while evaluating a row.
 */
#ifndef CLEANROOM_FILTER_H
#define CLEANROOM_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/error.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits; past them parsing fails with a message saying which. */
#define CR_FILTER_MAX_TEXT 4096u /* bytes of filter text */
#define CR_FILTER_MAX_DEPTH 64u  /* nested parentheses and NOTs */
#define CR_FILTER_MAX_LIST 1024u /* items of an IN (...) list or a string_list */
#define CR_PARAM_MAX_TEXT 65536u /* bytes of one parameter value */

/* "string", "string_list", "integer", "number"; "unknown" otherwise. */
const char *cr_param_type_name(cr_param_type t);

/* ---- Parameter values --------------------------------------------------- */

typedef struct cr_param_value {
  char *name;
  cr_param_type type;
  /* Canonical text: what is sent in Hello and written to the audit log.
   * Parsing it again (cr_params_from_pairs) gives the same value and text. */
  char *text;
  /* string: the value is `text`. string_list: the items (unescaped, trimmed,
   * non-empty), NULL otherwise. */
  char **items;
  size_t nitems;
  int64_t integer; /* integer */
  double number;   /* number, and integer converted */
} cr_param_value;

/* One value per declared parameter, in the declarations' order. A zeroed
 * cr_params is empty; cr_params_free leaves it empty again. */
typedef struct cr_params {
  cr_param_value *v;
  size_t n;
} cr_params;

/*
 * Parses `name=value` command-line arguments against the query's decls:
 *   string       any text (surrounding ASCII whitespace trimmed)
 *   string_list  comma-separated items, each trimmed and non-empty; "\,"
 *                is a comma inside an item and "\\" a backslash
 *   integer      decimal, [+-]digits, within int64
 *   number       [+-]digits[.digits][e[+-]digits], finite
 * Every value must be valid UTF-8 without control characters, at most
 * CR_PARAM_MAX_TEXT bytes. Every declared parameter must be given exactly
 * once and no other. CR_EUSAGE naming the parameter and the expected type
 * (never the value); CR_EINVAL for bad decls; CR_ENOMEM. On error *out is
 * empty.
 */
CR_NODISCARD int cr_params_from_args(cr_params *out, const char *const *args, size_t nargs,
                                     const cr_param_decl *decls, size_t ndecls, cr_error *err);
/*
 * Same from (name, text) pairs received in a partner's Hello: the same rules
 * (a canonical text parses to itself), errors CR_EPROTO ("parameter X from
 * the partner: ..."). Any valid text is accepted and re-canonicalized, so use
 * out->v[i].text, not the received text, for the audit log.
 */
CR_NODISCARD int cr_params_from_pairs(cr_params *out, const char *const *names,
                                      const char *const *texts, size_t n,
                                      const cr_param_decl *decls, size_t ndecls, cr_error *err);
/* The value named `name`, or NULL. */
const cr_param_value *cr_params_get(const cr_params *p, const char *name);
void cr_params_free(cr_params *p);

/* ---- Filters ------------------------------------------------------------ */

typedef struct cr_filter cr_filter;

/*
 * Parses `text` (the template's where text for one role). Every :param used
 * must be declared in decls, with a type that fits where it is used.
 * Errors are CR_ETEMPLATE with
 *   "<origin>: position N: expected ... but found ...\n<text>\n<caret>"
 * (N is the 1-based byte offset; long texts are shown as a window around
 * it), CR_EINVAL for a NULL argument, CR_ENOMEM. `origin` may be NULL
 * ("filter").
 */
CR_NODISCARD int cr_filter_parse(cr_filter **out, const char *text, const cr_param_decl *decls,
                                 size_t ndecls, const char *origin, cr_error *err);
void cr_filter_free(cr_filter *f);

/* Distinct column names the filter reads, in order of first use; valid
 * until cr_filter_free. */
size_t cr_filter_columns(const cr_filter *f, const char *const **names);

/*
 * Binds parameter values (p may be NULL when the filter uses none; values
 * are copied, p may be freed afterwards) and a header (column names in CSV
 * order, matched exactly). CR_EDATA when a filter column is not in the
 * header or appears in it more than once, CR_EINVAL when a parameter the
 * filter uses has no value or a value of another type, CR_ENOMEM. May be
 * called again; on error the filter is left unbound.
 */
CR_NODISCARD int cr_filter_bind(cr_filter *f, const cr_params *p, const char *const *header,
                                size_t ncols, cr_error *err);

/*
 * Evaluates the bound filter on one row's fields (CSV order; with lens the
 * fields need not be NUL-terminated, lens NULL means they are). Returns 1 to
 * keep the row, 0 to drop it. Never fails and never allocates: a comparison
 * with a number whose field does not read as a number is false, a field
 * missing from a short row reads as empty, and an unbound filter drops every
 * row. Thread-safe on a bound filter (it is only read).
 */
int cr_filter_eval(const cr_filter *f, const char *const *fields, const size_t *lens,
                   size_t nfields);

#ifdef __cplusplus
}
#endif
#endif
