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

/*
 * Differential privacy (docs/privacy.md). Every privacy number is exact
 * fixed point, so both nodes sample with the same parameters and a budget
 * adds up to the last digit however many runs it spends (no floating-point
 * drift): epsilon in millionths, delta in 10^-15ths, sigma in thousandths.
 * The template's decimals are read exactly (0.1 is 100000 millionths); a
 * value with more decimal places than its unit holds is refused.
 */
#define CR_DP_EPSILON_UNIT 1000000ULL                /* epsilon = n / 10^6 */
#define CR_DP_DELTA_UNIT 1000000000000000ULL         /* delta = n / 10^15 */
#define CR_DP_SIGMA_UNIT 1000ULL                     /* sigma = n / 10^3 */
#define CR_DP_MAX_EPSILON (100 * CR_DP_EPSILON_UNIT) /* per query */
#define CR_DP_MAX_BUDGET_EPSILON (1000000 * CR_DP_EPSILON_UNIT)
#define CR_DP_MAX_SIGMA (100000 * CR_DP_SIGMA_UNIT)

typedef enum cr_noise_mechanism {
  CR_NOISE_NONE = 0,         /* the query releases exact counts */
  CR_NOISE_DISCRETE_LAPLACE, /* P(x) proportional to exp(-epsilon |x|) */
  CR_NOISE_DISCRETE_GAUSSIAN /* P(x) proportional to exp(-x^2 / (2 sigma^2)) */
} cr_noise_mechanism;
/* "discrete_laplace", "discrete_gaussian"; "none". */
const char *cr_noise_mechanism_name(cr_noise_mechanism m);
/* A fixed-point value as its exact decimal ("0.5", "10", "0.000001" for 1
 * in CR_DP_EPSILON_UNIT), for messages and output; returns out. */
const char *cr_dp_decimal(char *out, size_t cap, uint64_t value, uint64_t unit);

/*
 * queries.<name>.noise. What one run of the query spends is (epsilon,
 * delta); a group_by run spends it once (its cells are disjoint: one person
 * is in one cell). For a count, adding or removing one person changes each
 * released number by at most 1 (sensitivity 1).
 */
typedef struct cr_noise {
  cr_noise_mechanism mechanism;
  /* Millionths. Laplace: as written (the scale is 1/epsilon). Gaussian:
   * as written, or derived from sigma and delta (rounded up). */
  uint64_t epsilon;
  uint64_t delta; /* 10^-15ths; Gaussian only, 0 for Laplace */
  /* Thousandths; Gaussian only: as written, or the smallest sigma on the
   * 0.001 grid that gives (epsilon, delta), rounded up. */
  uint64_t sigma;
  bool sigma_given; /* Gaussian: the template gave sigma (else epsilon) */
} cr_noise;

/* limits.privacy_budget: what all runs of all noisy queries under this
 * template may spend together (basic composition: epsilons add up, and so
 * do deltas), counted by each node from its own audit log. */
typedef struct cr_privacy_budget {
  uint64_t epsilon;   /* millionths; 0: the template has no budget */
  uint64_t delta;     /* 10^-15ths; 0 unless a query uses discrete_gaussian */
  bool allow_members; /* "allow_members": members queries are allowed */
} cr_privacy_budget;

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
  cr_noise noise; /* mechanism CR_NOISE_NONE: exact counts */
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
  cr_normalizer *normalize;            /* the shared chain; NULL when given per party */
  size_t nnormalize;
  /* Per party ({"provider": [...], "consumer": [...]}): each side's own
   * chain to the same normalized value (raw e-mails through "email",
   * "sha256" on one side, "hashed_sha256" on the other); NULL when shared. */
  cr_normalizer *party_normalize[CR_ROLE_COUNT];
  size_t nparty_normalize[CR_ROLE_COUNT];
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
  cr_privacy_budget privacy_budget; /* epsilon 0: none */
} cr_limits;

/* "match_keys": at most this many keys (a record's matched keys fit a byte). */
#define CR_TEMPLATE_MAX_KEYS 8

typedef struct cr_template {
  char *name;
  cr_template_party parties[CR_ROLE_COUNT];
  char *suite;
  /*
   * The match keys in template order: one from "match_key", or several from
   * "match_keys" (docs/template.md "Several match keys"). match_key is
   * match_keys[0], so code that knows one key, and templates built by hand
   * with only match_key set (nmatch_keys 0, read as 1), keep working.
   */
  union {
    cr_match_key match_key;
    cr_match_key match_keys[CR_TEMPLATE_MAX_KEYS];
  };
  size_t nmatch_keys; /* 0 (hand-built) or 1: one key */
  /* Several keys ("match": "any"): the side whose records are counted
   * ("count_of", default consumer). Meaningless with one key. */
  cr_role count_of;
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
/* Role r's normalizer chain (*n of them): its own when the template gives
 * them per party, else the shared one. */
const cr_normalizer *cr_match_key_normalizers(const cr_match_key *mk, cr_role r, size_t *n);

/* Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" (UTC; the form limits.not_after is
 * written in), for every message that shows a time. */
#define CR_TEMPLATE_TIME_BYTES 21
void cr_template_time_iso(int64_t unix_seconds, char out[CR_TEMPLATE_TIME_BYTES]);

/* The number of match keys (1 for a "match_key" template). */
size_t cr_template_nkeys(const cr_template *t);
/*
 * Points per element of a role's set on the wire: the number of match keys
 * for the counted side (count_of) of a template with several keys, whose
 * elements are records; 1 otherwise (a set of distinct key values).
 */
size_t cr_template_record_width(const cr_template *t, cr_role role);

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
