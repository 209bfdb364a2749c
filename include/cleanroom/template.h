/*
 * cleanroom — the collaboration template (design §6): the contract both
 * partners load, identified by the SHA-256 of its RFC 8785 canonical form.
 *
 * Owns: reading and validating the JSON, canonical hashing, lookups.
 * Never: knows about sessions or sockets; accepts a template with an error in
 * it. Every validation error names the JSON path, the value found and what is
 * expected (e.g. "$.queries.overlap.min_count: found -3, expected an integer >= 1").
 */
#ifndef CLEANROOM_TEMPLATE_H
#define CLEANROOM_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_TEMPLATE_FORMAT "cleanroom-template/1"
#define CR_TEMPLATE_MAX_BYTES (1u << 20)

typedef enum cr_role { CR_ROLE_PROVIDER = 0, CR_ROLE_CONSUMER = 1 } cr_role;
#define CR_ROLE_COUNT 2
#define CR_ROLE_BIT(r) (1u << (unsigned)(r))

const char *cr_role_name(cr_role r); /* "provider" / "consumer" */
/* 0 and *out set, or CR_EINVAL. */
int cr_role_parse(const char *s, cr_role *out);
static inline cr_role cr_role_other(cr_role r) {
  return r == CR_ROLE_PROVIDER ? CR_ROLE_CONSUMER : CR_ROLE_PROVIDER;
}

typedef enum cr_normalizer {
  CR_NORM_EMAIL = 1,
  CR_NORM_PHONE,
  CR_NORM_TEXT,
  CR_NORM_SHA256,
  CR_NORM_HASHED_SHA256
} cr_normalizer;
const char *cr_normalizer_name(cr_normalizer n);

typedef enum cr_query_kind { CR_QUERY_COUNT = 1, CR_QUERY_MEMBERS } cr_query_kind;

typedef enum cr_param_type {
  CR_PARAM_STRING = 1,
  CR_PARAM_STRING_LIST,
  CR_PARAM_INTEGER,
  CR_PARAM_NUMBER
} cr_param_type;

typedef struct cr_param_decl {
  char *name;
  cr_param_type type;
} cr_param_decl;

typedef struct cr_query {
  char *name;
  cr_query_kind kind;
  unsigned run_by;     /* CR_ROLE_BIT mask */
  unsigned results_to; /* CR_ROLE_BIT mask */
  uint64_t min_count;
  char *group_by[CR_ROLE_COUNT]; /* column per role, NULL if none */
  char *where[CR_ROLE_COUNT];    /* filter text per role, NULL if none */
  cr_param_decl *params;
  size_t nparams;
  /* kind "members" only: the owner's own columns returned with each matched
   * record (each listed in the owner's required columns); NULL/0 if none. */
  char **columns;
  size_t ncolumns;
} cr_query;

typedef struct cr_template_party {
  char *org;
  uint8_t cert_sha256[CR_SHA256_BYTES];
  char *address; /* "host:port" or NULL */
} cr_template_party;

/*
 * match_key.columns is either one list both parties' data must have
 * (["email"]) or one list per party ({"provider": ["mobil"], "consumer":
 * ["phone_number"]}), so neither partner has to rename its export. Per
 * party, both lists have ncolumns names, matched by position: the i-th of
 * each holds the same part of the key. Only the names differ; the key (its
 * name, normalizers, hash) is the same.
 */
typedef struct cr_match_key {
  char *name;
  char **columns; /* the shared list; NULL when given per party */
  size_t ncolumns;
  char **party_columns[CR_ROLE_COUNT]; /* per party; NULL when shared */
  cr_normalizer *normalize;
  size_t nnormalize;
  char *default_country_code; /* digits only, for "phone"; NULL if none */
} cr_match_key;

/*
 * limits.size_buckets: the ladder of set sizes a node may announce. Each node
 * pads its own set (and, under group_by, each label) with random elements
 * up to the smallest ladder value >= its true size, and Hello carries only
 * that value. The ladder is edges[0..nedges) (explicit, strictly
 * increasing), then geometric: next = max(prev + 1, ceil(prev * ratio)),
 * from the last edge, or from floor when there are no edges.
 * Absent from the template: floor CR_BUCKET_DEFAULT_FLOOR, ratio
 * CR_BUCKET_DEFAULT_RATIO (2^(1/4): at most 19% padding, four buckets per
 * doubling). A hand-built template with the struct zeroed gets the same.
 */
#define CR_BUCKET_DEFAULT_FLOOR 1000
#define CR_BUCKET_DEFAULT_RATIO 1.189207115002721 /* 2^(1/4) */
#define CR_BUCKET_MAX_RATIO 16.0
#define CR_BUCKET_MAX_EDGES 64
typedef struct cr_size_buckets {
  uint64_t floor; /* no edges: the smallest bucket */
  double ratio;   /* > 1 */
  uint64_t edges[CR_BUCKET_MAX_EDGES];
  size_t nedges;
} cr_size_buckets;

typedef struct cr_limits {
  uint64_t max_runs_per_query; /* 0: no limit */
  uint64_t min_set_size;       /* 0: none */
  uint64_t max_set_size;       /* 0: none */
  int64_t not_after;           /* Unix seconds; 0: none */
  cr_size_buckets size_buckets;
} cr_limits;

typedef struct cr_template {
  char *name;
  cr_template_party parties[CR_ROLE_COUNT];
  char *suite;
  cr_match_key match_key;
  /* As declared in data.<role>.required_columns, followed by any match key
   * column not listed there: the match key columns are always required. */
  char **required_columns[CR_ROLE_COUNT];
  size_t nrequired_columns[CR_ROLE_COUNT];
  cr_query *queries;
  size_t nqueries;
  cr_limits limits;
  uint8_t sha256[CR_SHA256_BYTES]; /* of the RFC 8785 canonical form */
  char *path;                      /* where it was loaded from, for messages */
  bool require_signatures;         /* "require_signatures"; false if absent */
} cr_template;

/*
 * Validation limits: a contract is written by people, so anything past these
 * is a mistake (and keeps validation linear-ish on hostile input). Integers
 * must also lie within +-(2^53-1): the hash reads numbers as doubles (RFC
 * 8785), so larger ones could collide.
 */
#define CR_TEMPLATE_MAX_QUERIES 256
#define CR_TEMPLATE_MAX_COLUMNS 256 /* per array of column names */
#define CR_TEMPLATE_MAX_NORMALIZE 16
#define CR_TEMPLATE_MAX_PARAMS 64
#define CR_TEMPLATE_MAX_NAME 64 /* bytes in a query or parameter name */
/* At most this many messages are kept; the rest are only counted. */
#define CR_TEMPLATE_MAX_ERRORS 200

/* Parses and validates; on error *out is NULL and err names path and field. */
/*
 * Every problem is reported, not just the first: err->msg is
 * "<origin>: <message>" for one, or "<origin>: N errors" followed by one
 * message a line (ending "... and K more" when they do not fit).
 * CR_ETEMPLATE for an invalid template (syntax, shape, size), CR_EIO when the
 * file cannot be read (path and strerror), CR_ENOMEM.
 */
CR_NODISCARD int cr_template_load(cr_template **out, const char *path, cr_error *err);
/* Same from memory; `origin` names the source in messages. */
CR_NODISCARD int cr_template_parse(cr_template **out, const char *json, size_t len,
                                   const char *origin, cr_error *err);
void cr_template_free(cr_template *t);

/*
 * For `cleanroom template check`: like cr_template_load / cr_template_parse,
 * but hands back every message as its own string ("$.queries.q.min_count:
 * found -3, expected an integer >= 1"; an unreadable file gives one
 * "<path>: cannot open: <strerror>"). On success returns 0 with *errors NULL
 * and *n 0; otherwise the code as above and a malloc'ed list to release
 * with cr_template_errors_free (NULL only on CR_ENOMEM). If more than
 * CR_TEMPLATE_MAX_ERRORS were found, the last entry says how many more.
 * `out` may be NULL; if not, it receives the template on success.
 */
CR_NODISCARD int cr_template_check(const char *path, cr_template **out, char ***errors, size_t *n);
CR_NODISCARD int cr_template_check_mem(const char *json, size_t len, const char *origin,
                                       cr_template **out, char ***errors, size_t *n);
void cr_template_errors_free(char **errors, size_t n);

/* Role r's names of the key columns (ncolumns of them): its own list when
 * the template gives them per party, else the shared one. */
const char *const *cr_match_key_columns(const cr_match_key *mk, cr_role r);

/* Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC; the form limits.not_after is
 * written in), for every message that shows a time. */
#define CR_TEMPLATE_TIME_BYTES 21
void cr_template_time_iso(int64_t unix_seconds, char out[CR_TEMPLATE_TIME_BYTES]);

/* NULL if the template has no such query. */
const cr_query *cr_template_query(const cr_template *t, const char *name);
/* Role whose cert_sha256 equals fp; CR_ENOTFOUND-like CR_ECONFIG if none. */
/* Also CR_ECONFIG if both parties carry fp: the role would be ambiguous. */
int cr_template_role_of(const cr_template *t, const uint8_t fp[CR_SHA256_BYTES], cr_role *out);

/*
 * The bucket of a set of n elements under the template's ladder: the
 * smallest ladder value >= n (n = 0 gives the first value). UINT64_MAX when
 * the ladder cannot reach n. Deterministic on every IEEE-754 platform, so
 * both nodes agree on the ladder.
 */
uint64_t cr_template_bucket(const cr_template *t, uint64_t n);
/* 1 when n is a value of the ladder. */
int cr_template_is_bucket(const cr_template *t, uint64_t n);

/*
 * RFC 8785 canonical form of a JSON text (sorted keys by UTF-16 code units,
 * no insignificant whitespace, ECMAScript number form, minimal string
 * escapes). *out is malloc'ed and NUL-terminated.
 * Any JSON value is accepted at the top level; duplicate member names, lone
 * surrogates, invalid UTF-8 and numbers that overflow a double are CR_EINVAL
 * (I-JSON). A member name containing U+0000 is refused (jansson cannot hold it).
 */
CR_NODISCARD int cr_json_canonicalize(const char *json, size_t len, char **out, size_t *out_len,
                                      cr_error *err);

#ifdef __cplusplus
}
#endif
#endif
