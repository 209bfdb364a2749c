#ifndef CLEANROOM_DATASET_H
#define CLEANROOM_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/common.h"
#include "cleanroom/template.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * cleanroom — a party's own data: row sources (CSV files in their common
 * dialects, SQLite, PostgreSQL), match-key normalization, de-duplication.
 *
 * Owns: turning a data source into the de-duplicated set of normalized
 * match-key values the session blinds, and the per-reason rejection counts.
 * Never: prints, logs or puts into an error message a match-key value or any
 * cell of the data (messages name the source, line or row, and column only);
 * writes to a database (SQLite is opened read-only, PostgreSQL queries run in
 * a read-only transaction).
 */

/* ---- CSV (RFC 4180) ----------------------------------------------------- */

typedef struct cr_csv cr_csv;

/* Hard limits of the reader; past them cr_csv_next fails with CR_EDATA. */
#define CR_CSV_MAX_FIELD_BYTES (1u << 20)  /* one field, unquoted */
#define CR_CSV_MAX_RECORD_BYTES (4u << 20) /* all fields of one record */
#define CR_CSV_MAX_FIELDS 16384u           /* fields in one record */

/* cr_csv_next in recovery mode: a malformed record, skipped. */
#define CR_CSV_MALFORMED 2

/* Reads from an open stream (not closed by cr_csv_free); `name` is used in
 * messages. */
CR_NODISCARD int cr_csv_open_stream(cr_csv **out, void *FILE_stream, const char *name);
/* Reads from memory (for tests and fuzzing); data must outlive the reader. */
CR_NODISCARD int cr_csv_open_mem(cr_csv **out, const char *data, size_t len, const char *name);
/*
 * Next record. Returns 1 with *fields, *lens and *nfields set (valid until the next
 * call), 0 at end of input, or a negative CR_EDATA with err naming file and
 * line (unterminated quote, stray quote, invalid UTF-8, field or record too
 * large). *line is the 1-based line on which the record starts.
 */
int cr_csv_next(cr_csv *r, const char *const **fields, const size_t **lens, size_t *nfields,
                uint64_t *line, cr_error *err);
void cr_csv_free(cr_csv *r);
/* The field separator: ',' (the default), ';', '\t' or '|'; CR_EINVAL for
 * any other. */
CR_NODISCARD int cr_csv_set_delimiter(cr_csv *r, char delim);
char cr_csv_delimiter(const cr_csv *r);
/*
 * Before the first cr_csv_next: picks the separator among , ; tab | from
 * the first lines of input (the one the header has most of, preferring one
 * the next lines have as often; ',' when the header has none), sets it and
 * reports it in *out. Fails only on a read error.
 */
CR_NODISCARD int cr_csv_detect_delimiter(cr_csv *r, char *out, cr_error *err);
/*
 * Recovery mode: a record with a stray quote, text after a closing quote, an
 * unterminated quoted field, invalid UTF-8 or a NUL byte makes cr_csv_next
 * return CR_CSV_MALFORMED (err says why, *line is where the record starts,
 * *nfields 0; cr_csv_last_reject gives CR_REJECT_MALFORMED or
 * CR_REJECT_ENCODING) and reading resumes on the line after the one the
 * record started on. A size limit passed by a record that swallowed line
 * ends (a stray opening quote) is malformed too; on one line it stays an
 * error. Off by default.
 */
void cr_csv_set_recover(cr_csv *r, int on);
/*
 * Column names for error messages ("field 2 (column \"email\")"), copied;
 * a NULL entry means the column has none to show. Only pass names that are
 * known to be a header, never cells of data.
 */
CR_NODISCARD int cr_csv_set_field_names(cr_csv *r, const char *const *names, size_t n);
/*
 * SHA-256 of the reader's whole input: of the bytes actually parsed, so the
 * hash and the data cannot disagree. For a stream, only once cr_csv_next has
 * returned 0 (CR_EINVAL before).
 */
CR_NODISCARD int cr_csv_sha256(cr_csv *r, uint8_t out[CR_SHA256_BYTES]);

/* ---- Normalization ------------------------------------------------------ */

/* Why a row's key was rejected; one counter each. */
#define CR_REJECT_MAP(XX)                                                                          \
  XX(MISSING, "missing_value", "a key column is empty")                                            \
  XX(EMAIL, "invalid_email", "not an e-mail address (one @, non-empty local part and domain)")     \
  XX(PHONE, "invalid_phone", "not a phone number (E.164: + and 8-15 digits)")                      \
  XX(TEXT, "invalid_text", "empty after normalization")                                            \
  XX(HEX, "invalid_sha256_hex", "not 64 hexadecimal digits")                                       \
  XX(COLUMNS, "wrong_column_count", "the row has a different number of fields than the header")    \
  XX(MALFORMED, "malformed_row",                                                                   \
     "the row cannot be read: a stray quote, text after a closing quote or an unterminated quote") \
  XX(ENCODING, "invalid_encoding", "the row is not valid UTF-8 or holds a NUL byte")

typedef enum cr_reject_reason {
#define CR__REJ_ENUM(name, key, text) CR_REJECT_##name,
  CR_REJECT_MAP(CR__REJ_ENUM)
#undef CR__REJ_ENUM
      CR_REJECT_COUNT
} cr_reject_reason;

const char *cr_reject_key(cr_reject_reason r); /* "invalid_email" */
cr_reject_reason cr_csv_last_reject(const cr_csv *r);
const char *cr_reject_text(cr_reject_reason r); /* explanation for people */

/*
 * Normalizes one key from the row's key-column values (in the match key's
 * column order) into out: each column through the normalizer chain, columns
 * joined with 0x1f. Returns 0, or 1 with *reason set when the row must be
 * rejected, or a negative error. `default_cc` may be NULL.
 * out is overwritten (not appended to) and wiped on rejection; lens may be
 * NULL for NUL-terminated values. mk->default_country_code, when set, must be
 * 1-3 digits (CR_EINVAL otherwise).
 */
int cr_normalize_key(const cr_match_key *mk, const char *const *values, const size_t *lens,
                     cr_buf *out, cr_reject_reason *reason);
/* The same with role's chain (cr_match_key_normalizers): the one to use
 * for a party's data, whose normalizers the template may give per party.
 * cr_normalize_key is CR_EINVAL for such a key. */
int cr_normalize_key_as(const cr_match_key *mk, cr_role role, const char *const *values,
                        const size_t *lens, cr_buf *out, cr_reject_reason *reason);

/* ---- Row sources --------------------------------------------------------- */
/*
 * One interface over every place a party's rows come from, so normalization,
 * filters, group_by, members and rejection reporting behave the same for
 * each. A source is named by one string (the --data option):
 *
 *   postgresql://... or postgres://...  PostgreSQL (libpq URI) with a query;
 *                                       a password in the URI is refused:
 *                                       use ~/.pgpass, PGPASSFILE,
 *                                       PGPASSWORD or a service file
 *   sqlite:PATH                         an SQLite file, opened read-only,
 *                                       with a query
 *   anything else                       a CSV/TSV file (delimiter detected
 *                                       or given, BOM, CRLF or LF)
 *
 * A database source's columns are its query's result columns, exactly as a
 * CSV header's; a NULL reads as an empty field. Rows are streamed: a CSV in
 * 64 KiB chunks, PostgreSQL through a server-side cursor in a read-only
 * transaction (CR_SOURCE_PG_BATCH rows a FETCH), SQLite a step at a time.
 */

typedef enum cr_source_kind {
  CR_SOURCE_CSV = 1,
  CR_SOURCE_SQLITE,
  CR_SOURCE_POSTGRESQL
} cr_source_kind;

#define CR_SOURCE_PG_BATCH 2000
/* cr_source_next: a row that cannot be read, to count as rejected. */
#define CR_SOURCE_MALFORMED 2
#define CR_SOURCE_MAX_QUERY 65536u /* bytes of a data query */

typedef struct cr_source_options {
  const char *query; /* database sources: the SELECT (required); CSV: must be NULL */
  char delimiter;    /* CSV: 0 detects among , ; tab |; database sources: 0 */
} cr_source_options;

/* Which kind `data` names (never fails: anything unknown is a CSV path). */
cr_source_kind cr_source_kind_of(const char *data);
/* "CSV", "SQLite", "PostgreSQL". */
const char *cr_source_kind_name(cr_source_kind k);

typedef struct cr_source cr_source;

/*
 * Opens the source and reads its columns. Errors: CR_EUSAGE for a misuse
 * of the options (a query for a CSV, none for a database, a password in a
 * PostgreSQL URI, a bad delimiter); CR_EDATA for data that cannot be read
 * (a missing or unreadable file, a file that is not text, such as an .xlsx
 * workbook, a gzip archive or UTF-16, whose message says what it looks
 * like; an empty file; a malformed header; a connection or query failure).
 * Messages name the source and never hold a cell.
 */
CR_NODISCARD int cr_source_open(cr_source **out, const char *data, const cr_source_options *opt,
                                cr_error *err);
/*
 * The checks cr_source_open makes before touching anything (CR_EUSAGE: a
 * query for a CSV or none for a database, a delimiter for a database or
 * not one of , ; tab |, a PostgreSQL URI that is malformed or holds a
 * password), for front ends to check their flags first and for callers
 * that must not record a URI with a password. The message never holds the
 * password.
 */
CR_NODISCARD int cr_source_validate(const char *data, const cr_source_options *opt, cr_error *err);
void cr_source_close(cr_source *s);

cr_source_kind cr_source_kind_get(const cr_source *s);
/* The source as named in messages (the path, "sqlite:PATH" or the URI). */
const char *cr_source_name(const cr_source *s);
/* "line" (CSV: the line a record starts on) or "row" (databases: 1-based). */
const char *cr_source_unit(const cr_source *s);
/* CSV: the separator in use; 0 for a database. */
char cr_source_delimiter(const cr_source *s);
/* The header's (the query's) column names, each trimmed of surrounding
 * ASCII whitespace; valid until cr_source_close. */
size_t cr_source_columns(const cr_source *s, const char *const **names);
/* Names for messages about fields (CSV); NULL entries: none. */
CR_NODISCARD int cr_source_set_field_names(cr_source *s, const char *const *names, size_t n);

typedef struct cr_source_row {
  const char *const *fields; /* NUL-terminated too; valid until the next call */
  const size_t *lens;
  size_t n;
  uint64_t pos; /* line (CSV) or row number (database), 1-based */
  /* CR_SOURCE_MALFORMED only: why (CR_REJECT_MALFORMED, CR_REJECT_ENCODING). */
  cr_reject_reason malformed;
} cr_source_row;

/*
 * Next row: 1 with *row set; 0 at the end; CR_SOURCE_MALFORMED for a row
 * that cannot be read (row->pos and row->malformed set, no fields; err says
 * why without quoting it); or a negative CR_E* code (err names the source).
 */
int cr_source_next(cr_source *s, cr_source_row *row, cr_error *err);
/*
 * SHA-256 of what was read, once cr_source_next has returned 0 (CR_EINVAL
 * before): of the file's bytes for a CSV; for a database, of the column
 * names and every row (each field length-prefixed, NULL distinct from
 * empty), so reading the same rows again gives the same hash.
 */
CR_NODISCARD int cr_source_sha256(cr_source *s, uint8_t out[CR_SHA256_BYTES]);

/* ---- Dataset ------------------------------------------------------------ */

#define CR_DATASET_MAX_REJECT_LINES 5
#define CR_DATASET_MAX_REASON_LINES 3

#define CR_DATASET_DEFAULT_MAX_REJECT_RATIO 0.05

#define CR_DATASET_MAX_LABELS 1024
#define CR_DATASET_MAX_LABEL_BYTES 64

typedef struct cr_dataset_options {
  double max_reject_ratio; /* default 0.05: above it loading fails */
  /* group_by: the column whose (trimmed) value labels each key; NULL for
   * none. A key met with several labels keeps its first row's label. */
  const char *group_column;
  /* where: rows the filter drops are counted in rows_filtered and never
   * reach normalization. The loader binds it to the file's header with
   * params (both may be NULL). */
  struct cr_filter *filter;
  const struct cr_params *params;
  /* The source (cr_source_open): a database's query, a CSV's delimiter. */
  const char *data_query;
  char delimiter;
  /*
   * A dry run (`cleanroom data check`): too many rejected rows, or none
   * accepted, is not a failure; the load completes and sets refusal_rc and
   * refusal (what a real load would have failed with). samples: how many
   * accepted keys to keep masked (first and last character) for people to
   * see that normalization worked; at most CR_DATASET_MAX_SAMPLES.
   */
  int dry_run;
  size_t samples;
  /* Where elements go when they exceed the memory budget (NULL: memory
   * only). Must outlive the dataset. */
  cr_spill *spill;
  /* 32 bytes keying the order of the elements (cr_dataset_iter); NULL:
   * random. Tests fix it to make transcripts reproducible. */
  const uint8_t *order_seed;
} cr_dataset_options;

#define CR_DATASET_MAX_SAMPLES 10

/* Fills opt with the defaults. */
void cr_dataset_options_init(cr_dataset_options *opt);

/* The elements of a single-key data set (a sorter; internal). */
typedef struct cr_dataset_elements cr_dataset_elements;

typedef struct cr_dataset {
  /*
   * n: the elements (one key: the distinct normalized key values; several:
   * see below). With one key, read them with cr_dataset_iter, in the order
   * a session sends them; they are in `elements`, in memory below the
   * budget and spilled (encrypted) above it.
   *
   * A loaded single-key set has no per-element arrays: bytes, off and
   * labels are NULL (hand-built sets, as in tests and fuzzers, may fill
   * bytes/off/labels instead of `elements`; the iterator reads them in
   * index order). With several keys they hold the values (below). Wiped on
   * free.
   */
  size_t n;
  uint8_t *bytes;
  size_t *off;                   /* n+1 entries */
  cr_dataset_elements *elements; /* one key, loaded: the elements (NULL otherwise) */

  char *path;
  uint8_t file_sha256[CR_SHA256_BYTES];
  uint64_t rows_read;     /* data rows, header excluded */
  uint64_t rows_accepted; /* rows with a valid key (before de-duplication) */
  uint64_t rows_rejected;
  uint64_t rejected[CR_REJECT_COUNT];
  uint64_t reject_lines[CR_DATASET_MAX_REJECT_LINES]; /* first few, 1-based */
  size_t nreject_lines;
  /* The first few lines (rows) of each reason: min(rejected[r], 3) of them. */
  uint64_t reason_lines[CR_REJECT_COUNT][CR_DATASET_MAX_REASON_LINES];
  uint64_t duplicates; /* accepted rows whose key was already seen */

  /* group_by only (NULL / 0 otherwise): labels[i] is element i's index
   * into label_names (sorted bytewise; a loaded single-key set has none:
   * cr_dataset_iter gives each element's label);
   * label_sizes[j] counts elements of label j. */
  uint32_t *labels;
  char **label_names;
  uint64_t *label_sizes;
  size_t nlabels;
  uint64_t label_conflicts; /* keys whose rows carry different labels */
  uint64_t rows_filtered;   /* rows the query's filter dropped */

  /* The header's column names (trimmed), for checks made before a query. */
  char **columns;
  size_t ncolumns;

  /* The source: kind, query (NULL for a CSV), separator (0 for a database),
   * and what its positions count ("line" or "row"). `path` names it and
   * file_sha256 is cr_source_sha256 of what was read. */
  cr_source_kind source_kind;
  cr_role role; /* whose data: the key's column names are this role's */
  char *data_query;
  char delimiter;
  const char *pos_unit;

  /* Dry run only: why a real load would fail (0: it would not), and a few
   * masked keys with the line or row they come from. */
  int refusal_rc;
  char *refusal;
  char *samples[CR_DATASET_MAX_SAMPLES];
  uint64_t sample_pos[CR_DATASET_MAX_SAMPLES];
  size_t nsamples;

  /*
   * Several match keys (docs/template.md "Several match keys"); all zero
   * with one key, where the elements above are the distinct key values.
   * - values: every distinct (match key, normalized value) pair, sorted by
   *   key, then bytewise: value v is bytes[off[v] .. off[v+1]), of match key
   *   value_key[v]; nvalues of them.
   * - the counted side (the template's count_of): the elements are RECORDS.
   *   Rows that share a value (the same e-mail, or the same phone) are one
   *   person, transitively, so one record: n records of width slots each,
   *   slots[i * width + k] the value record i sends for key k (key order),
   *   CR_DATASET_NO_VALUE when it has none. When a record's rows disagree
   *   on a key (two e-mails joined by one phone), the first row's value (in
   *   file order) is sent and the others are not (values_unsent). Every
   *   value belongs to one record (value_record). labels are per record:
   *   its first row's.
   * - the other side: the elements are the values (n == nvalues, width 1),
   *   labels per value (its first row's).
   * A row is accepted when at least one of its keys normalizes; its empty
   * or invalid keys are skipped and counted per key (key_missing,
   * key_invalid). A row with no valid key is rejected as with one key.
   */
  size_t nkeys;           /* the template's match keys; 0 or 1: one key */
  size_t width;           /* points per element: 0 or 1, or nkeys (records) */
  size_t nvalues;         /* several keys: distinct (key, value) pairs */
  uint8_t *value_key;     /* several keys: match key of each value */
  uint32_t *slots;        /* records: n * width value indices */
  uint32_t *value_record; /* records: the record of each value */
  uint64_t rows_merged;   /* records: rows that joined another row's record */
  uint64_t values_unsent; /* records: values another of the record's rows superseded */
  uint64_t key_missing[CR_TEMPLATE_MAX_KEYS]; /* accepted rows whose key k is empty */
  uint64_t key_invalid[CR_TEMPLATE_MAX_KEYS]; /* accepted rows whose key k did not normalize */
} cr_dataset;

#define CR_DATASET_NO_VALUE UINT32_MAX

/* Points per element of d: 1, or its number of keys for records. */
size_t cr_dataset_width(const cr_dataset *d);

/* Several match keys: the index of a normalized value of match key `key`
 * among d's values, or -1 (always -1 for a single-key set, whose elements
 * are not in memory: use cr_dataset_iter). */
long cr_dataset_find_value(const cr_dataset *d, size_t key, const uint8_t *v, size_t len);

/*
 * A key as people may see it: its first and last character, nothing
 * between ("j…m"; a composite key part by part, " | " between). Parts of
 * fewer than 5 characters show only "…" or their first character, so no
 * short key is ever shown whole. out gets at most cap bytes, NUL-terminated.
 */
void cr_dataset_mask_key(const uint8_t *key, size_t len, char *out, size_t cap);

/*
 * Loads the source `path` names (a CSV path, sqlite:PATH or a postgresql://
 * URI: cr_source_open, with opt->data_query and opt->delimiter) for `role`
 * under template t: checks the columns hold the role's required_columns and
 * its match-key columns (names compared case-insensitively, trimmed;
 * CR_EDATA naming the missing column), normalizes each row, de-duplicates.
 * A malformed row (stray quote, wrong field count, not UTF-8) is rejected
 * and counted like a row whose key does not normalize. Fails with CR_EDATA
 * when the rejection ratio exceeds opt->max_reject_ratio (message gives the
 * counts per reason and the first rejected line or row numbers) or when no
 * row is accepted (unless opt->dry_run). CR_EUSAGE for a misused source
 * (cr_source_open). opt may be NULL for defaults.
 */
CR_NODISCARD int cr_dataset_load(cr_dataset **out, const char *path, const cr_template *t,
                                 cr_role role, const cr_dataset_options *opt, cr_error *err);
void cr_dataset_free(cr_dataset *d);

/*
 * The elements (one match key: the distinct values) in the order a session
 * sends them: a uniformly random permutation keyed at load
 * (cr_dataset_options.order_seed), so every load has its own. Element j
 * is the j-th the iterator yields; a members bitmap's bit j
 * (cr_dataset_write_matches) is that element. Works whether the elements
 * are in memory or spilled; several iterators may run one after another
 * (not at once from several threads: a data set is one session's).
 * A cr_dataset built in memory by hand (tests: n, bytes, off, labels and
 * no `elements`) is iterated in index order. CR_EINVAL for records
 * (width > 1).
 */
typedef struct cr_dataset_iter cr_dataset_iter;
CR_NODISCARD int cr_dataset_iter_new(const cr_dataset *d, cr_dataset_iter **out, cr_error *err);
/* 1 with the next element's key (valid until the next call) and label (0
 * when not grouped), 0 at the end, or a negative CR_E* code. */
int cr_dataset_iter_next(cr_dataset_iter *it, const uint8_t **key, size_t *len, uint32_t *label,
                         cr_error *err);
void cr_dataset_iter_free(cr_dataset_iter *it);
/* As cr_dataset_iter_free, for an iterator that gave every element (it
 * returned 0) when nothing will read this data set's elements again (a
 * session has sent them): also frees them, so their spill leaves the disk
 * before the session's own tables fill it. Later iterators fail with
 * CR_EINVAL; the data set's counts and cr_dataset_write_matches (which
 * reads the source again) still work. */
void cr_dataset_iter_release(cr_dataset_iter *it);
/* The same promise made before reading (no other reader, none after): the
 * elements' spill is given back as the iterator reads it
 * (cr_sorter_iter_consume), not only at the end. */
void cr_dataset_iter_consume(cr_dataset_iter *it);

/*
 * members: writes the rows of the source d was loaded from (read again, the
 * same way) whose key matched to out, as CSV with a header: all columns, or
 * only `columns` (ncolumns > 0). One key: bit j of matched is element j of
 * cr_dataset_iter's order, and every row of a matched element is written
 * (found by its position: the element's rows are sorted by position in a
 * sorter on the load's spill, and the source is read once more), in the
 * source's order. If the source's hash differs from the load's (the file or
 * the query's rows changed), nothing is kept: CR_EDATA. Records (several
 * keys): bit i is record i, every row of a
 * matched record is written, and matched_on[i] (a bit per match key, may be
 * NULL) adds a last column "matched_on" naming the keys it matched on,
 * joined with '+' ("email+phone"). out is an open cr_atomic_file: the caller commits it (after
 * recording the release) or aborts it, so a reader never sees half a file
 * and no file appears unrecorded. *rows and file_sha256 (either may be
 * NULL) report what was written. keep(ctx, fields, lens, n) may drop rows
 * (the query's filter); NULL keeps all.
 */
CR_NODISCARD int cr_dataset_write_matches(
    const cr_dataset *d, const cr_template *t, const uint8_t *matched, const uint8_t *matched_on,
    const char *const *columns, size_t ncolumns,
    int (*keep)(void *ctx, const char *const *fields, const size_t *lens, size_t n), void *keep_ctx,
    cr_atomic_file *out, uint64_t *rows, uint8_t file_sha256[CR_SHA256_BYTES], cr_error *err);

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
/*
 * Parses query q's where text for role r (q->where[r] must be set) with its
 * declared params, the errors naming the template location
 * ("$.queries.<name>.where.<role>: position N: ..."), as cr_filter_parse.
 */
CR_NODISCARD int cr_filter_parse_where(cr_filter **out, const cr_query *q, cr_role r,
                                       cr_error *err);
void cr_filter_free(cr_filter *f);

/* Distinct column names the filter reads, in order of first use; valid
 * until cr_filter_free. */
size_t cr_filter_columns(const cr_filter *f, const char *const **names);

/*
 * Binds parameter values (p may be NULL when the filter uses none; values
 * are copied, p may be freed afterwards) and a header (column names in CSV
 * order, matched case-insensitively, as the loader matches every column). CR_EDATA when a filter
 * column is not in the header or appears in it more than once, CR_EINVAL when a parameter the
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
