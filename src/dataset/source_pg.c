/*
 * The PostgreSQL row source: a libpq URI (postgresql://... or
 * postgres://...) with a data query.
 *
 * Streamed, never loaded whole: the query runs as a server-side cursor
 * (DECLARE ... NO SCROLL CURSOR) in a REPEATABLE READ, READ ONLY
 * transaction, fetched CR_SOURCE_PG_BATCH rows at a time, so memory holds
 * one batch whatever the table's size, the rows are one consistent
 * snapshot, and nothing the query says can write. The query is sent with
 * the extended protocol, which takes exactly one statement.
 *
 * No password on the command line: a URI that holds one is refused before
 * connecting (it would sit in the shell history, `ps` and the audit log).
 * libpq's own ways remain: ~/.pgpass or PGPASSFILE, PGPASSWORD, a service
 * file (PGSERVICE), or no password (peer or certificate authentication).
 *
 * Errors while rows are read (any FETCH, the first too) are reported by
 * SQLSTATE only: the server's message for a failed cast or check can quote
 * a value of the data.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "dataset/dataset_internal.h"

#define CURSOR "cleanroom_rows"

typedef struct pg_impl {
  PGconn *conn;
  PGresult *res; /* the current batch */
  int ntuples, next, nfields;
  int last; /* the current batch was the last */
  uint64_t rows;
  const char **vals;
  size_t *lens;
} pg_impl;

/* libpq's messages end in a newline and may hold more: one line. */
static void one_line(char *dst, size_t cap, const char *src) {
  size_t o = 0;
  for (; src != NULL && *src && o + 1 < cap; src++)
    dst[o++] = (*src == '\n' || *src == '\r' || *src == '\t') ? ' ' : *src;
  while (o > 0 && dst[o - 1] == ' ')
    o--;
  dst[o] = '\0';
}

static int pg_failed(cr_source *s, const PGresult *res, int during_rows, const char *what,
                     cr_error *err) {
  pg_impl *p = s->impl;
  char msg[512];
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  if (during_rows)
    return cr_error_set(err, CR_EDATA,
                        "%s: the data query failed while its rows were read (after row %llu): "
                        "SQLSTATE %s; the server's message is not shown because it can quote a "
                        "value of the data (run the query in psql to see it)",
                        s->name, (unsigned long long)p->rows, state ? state : "unknown");

  one_line(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(p->conn));
  return cr_error_set(err, CR_EDATA, "%s: %s: %s%s%s%s", s->name, what, msg,
                      state ? " (SQLSTATE " : "", state ? state : "", state ? ")" : "");
}

/* The next batch of the cursor into p->res. The first FETCH is where the
 * server computes rows (DECLARE only plans), so a cast or check that fails
 * on a value fails here, the first batch too: its message is not shown. */
static int pg_fetch(cr_source *s, cr_error *err) {
  pg_impl *p = s->impl;
  char sql[96];
  PQclear(p->res);
  p->res = NULL;
  snprintf(sql, sizeof sql, "FETCH FORWARD %d FROM " CURSOR, CR_SOURCE_PG_BATCH);
  p->res = PQexec(p->conn, sql);
  if (PQresultStatus(p->res) != PGRES_TUPLES_OK)
    return pg_failed(s, p->res, 1, "the data query failed", err);
  p->ntuples = PQntuples(p->res);
  p->next = 0;
  p->last = p->ntuples < CR_SOURCE_PG_BATCH;
  return 0;
}

static int pg_next(cr_source *s, cr_source_row *row, cr_error *err) {
  pg_impl *p = s->impl;
  int rc;
  if (p->res == NULL)
    return 0;
  if (p->next >= p->ntuples) {
    if (p->last) {
      PQclear(p->res);
      p->res = NULL;
      /* Nothing was written; ending the transaction releases the snapshot. */
      PGresult *end = PQexec(p->conn, "COMMIT");
      PQclear(end);
      return 0;
    }
    if ((rc = pg_fetch(s, err)) != 0)
      return rc;
    if (p->ntuples == 0)
      return pg_next(s, row, err);
  }
  int t = p->next++;
  p->rows++;
  for (int i = 0; i < p->nfields; i++) {
    if (PQgetisnull(p->res, t, i)) {
      p->vals[i] = NULL;
      p->lens[i] = 0;
    } else {
      p->vals[i] = PQgetvalue(p->res, t, i);
      p->lens[i] = (size_t)PQgetlength(p->res, t, i);
    }
  }
  rc = cr__source_take_row(s, p->vals, p->lens, (size_t)p->nfields, p->rows, row);
  if (rc == CR_ENOMEM)
    return cr_error_set(err, rc, "%s: out of memory", s->name);
  if (rc == CR_SOURCE_MALFORMED)
    cr_error_set(err, CR_EDATA, "%s: row %llu: a value is not valid UTF-8 text", s->name,
                 (unsigned long long)p->rows);
  return rc;
}

static void pg_close(cr_source *s) {
  pg_impl *p = s->impl;
  if (p == NULL)
    return;
  PQclear(p->res);
  if (p->conn != NULL)
    PQfinish(p->conn); /* an open transaction is rolled back */
  free(p->vals);
  free(p->lens);
  free(p);
  s->impl = NULL;
}

static const cr_source_ops PG_OPS = {pg_next, NULL, NULL, pg_close};

/* Refuses a URI that carries a password (user:pw@ or ?password=). */
int cr__pg_uri_check(const char *uri, cr_error *err) {
  char *why = NULL;
  PQconninfoOption *opts = PQconninfoParse(uri, &why);
  if (opts == NULL) {
    char msg[256];
    one_line(msg, sizeof msg, why ? why : "out of memory");
    PQfreemem(why);
    return cr_error_set(err, CR_EUSAGE, "not a valid PostgreSQL URI: %s", msg);
  }
  int has_password = 0;
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
    if (strcmp(o->keyword, "password") == 0 && o->val != NULL && o->val[0] != '\0')
      has_password = 1;
  PQconninfoFree(opts);
  if (has_password)
    return cr_error_set(err, CR_EUSAGE,
                        "the PostgreSQL URI holds a password; never put one on the command line "
                        "or in a config file (shell history, ps and the audit log would keep "
                        "it). Put it in ~/.pgpass (or the file PGPASSFILE names), in the "
                        "PGPASSWORD environment variable, or in a service file (PGSERVICE), and "
                        "give the URI without it");
  return 0;
}

int cr__source_open_pg(cr_source *s, const char *uri, const char *query, cr_error *err) {
  int rc;
  pg_impl *p = calloc(1, sizeof *p);
  if (p == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  s->impl = p;
  s->ops = &PG_OPS;
  /* (cr_source_open has refused a URI with a password.) */

  /* The URI's settings win over these defaults, except the encoding: the
   * rows must arrive as UTF-8, whatever the database's. */
  const char *const keys[] = {"connect_timeout", "application_name", "dbname", "client_encoding",
                              NULL};
  const char *const vals[] = {"10", "cleanroom", uri, "UTF8", NULL};
  p->conn = PQconnectdbParams(keys, vals, 1);
  if (p->conn == NULL)
    return cr_error_set(err, CR_ENOMEM, "%s: out of memory", s->name);
  if (PQstatus(p->conn) != CONNECTION_OK) {
    char msg[512];
    one_line(msg, sizeof msg, PQerrorMessage(p->conn));
    return cr_error_set(err, CR_EDATA, "%s: cannot connect: %s%s", s->name, msg,
                        PQconnectionNeedsPassword(p->conn)
                            ? " (the server wants a password: put it in ~/.pgpass, PGPASSFILE, "
                              "PGPASSWORD or a service file, never in --data)"
                            : "");
  }

  PGresult *r = PQexec(p->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    rc = pg_failed(s, r, 0, "cannot start a read-only transaction", err);
    PQclear(r);
    return rc;
  }
  PQclear(r);

  /* DECLARE takes the query as written, less a trailing ';'. */
  size_t qlen = strlen(query);
  while (qlen > 0 && (query[qlen - 1] == ';' || query[qlen - 1] == ' ' || query[qlen - 1] == '\n' ||
                      query[qlen - 1] == '\t' || query[qlen - 1] == '\r'))
    qlen--;
  if (qlen == 0)
    return cr_error_set(err, CR_EUSAGE, "%s: the data query is empty", s->name);
  static const char prefix[] = "DECLARE " CURSOR " NO SCROLL CURSOR FOR ";
  char *sql = malloc(sizeof prefix + qlen);
  if (sql == NULL)
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  memcpy(sql, prefix, sizeof prefix - 1);
  memcpy(sql + sizeof prefix - 1, query, qlen);
  sql[sizeof prefix - 1 + qlen] = '\0';
  /* PQexecParams: one statement only, so "SELECT ...; DROP ..." fails. */
  r = PQexecParams(p->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
  free(sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    rc = pg_failed(s, r, 0, "the data query cannot run", err);
    PQclear(r);
    return rc;
  }
  PQclear(r);

  if ((rc = pg_fetch(s, err)) != 0)
    return rc;
  p->nfields = PQnfields(p->res);
  if (p->nfields <= 0)
    return cr_error_set(err, CR_EUSAGE, "%s: the data query returns no columns", s->name);
  const char **names = calloc((size_t)p->nfields, sizeof *names);
  p->vals = calloc((size_t)p->nfields, sizeof *p->vals);
  p->lens = calloc((size_t)p->nfields, sizeof *p->lens);
  if (names == NULL || p->vals == NULL || p->lens == NULL) {
    free(names);
    return cr_error_set(err, CR_ENOMEM, "out of memory");
  }
  for (int i = 0; i < p->nfields; i++)
    names[i] = PQfname(p->res, i);
  rc = cr__source_set_columns(s, names, NULL, (size_t)p->nfields);
  free(names);
  if (rc != 0)
    return cr_error_set(err, rc, "out of memory");
  cr__source_hash_columns(s);
  return 0;
}
