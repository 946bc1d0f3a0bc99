/* tests/pgutil.h — a private PostgreSQL schema per test program.
 *
 * tests/run.sh starts one server and exports SKYNET_TEST_PG_URL; test
 * programs run in parallel against it, so each works in a schema of its own
 * (search_path set through the connection URI) and never sees another's jobs.
 *
 * Without SKYNET_TEST_PG_URL a PostgreSQL test skips, except under CI=true,
 * where it fails: CI must not pass with the backend untested. */
#ifndef SKYNET_TEST_PGUTIL_H
#define SKYNET_TEST_PGUTIL_H

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline void tpg_quiet(void *arg, const char *msg)
{
  (void)arg;
  (void)msg;
}

/* 1 when PostgreSQL tests must run but cannot (CI without a server). */
static inline int tpg_missing_is_failure(const char *what)
{
  const char *ci = getenv("CI");

  if (ci && strcmp(ci, "true") == 0) {
    fprintf(stderr, "FAIL %s: SKYNET_TEST_PG_URL is not set under CI=true\n",
            what);
    return 1;
  }
  fprintf(stderr, "skip %s: SKYNET_TEST_PG_URL is not set\n", what);
  return 0;
}

/* Creates a fresh schema named <tag>_<pid> and writes into out a URL that
 * uses it.  Returns 0 on success. */
static inline int tpg_schema_url(const char *base, const char *tag, char *out,
                                 size_t n)
{
  char schema[64], sql[256];
  PGconn *c = PQconnectdb(base);
  PGresult *r;
  int ok;

  snprintf(schema, sizeof schema, "%s_%ld", tag, (long)getpid());
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "cannot connect to %s: %s", base, PQerrorMessage(c));
    PQfinish(c);
    return -1;
  }
  PQsetNoticeProcessor(c, tpg_quiet, NULL);
  snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s",
           schema, schema);
  r = PQexec(c, sql);
  ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok)
    fprintf(stderr, "cannot create schema: %s", PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(c);
  snprintf(out, n, "%s%coptions=-csearch_path%%3D%s", base,
           strchr(base, '?') ? '&' : '?', schema);
  return ok ? 0 : -1;
}

/* Drops what tpg_schema_url made. */
static inline void tpg_schema_drop(const char *base, const char *tag)
{
  char sql[256];
  PGconn *c = PQconnectdb(base);

  snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s_%ld CASCADE", tag,
           (long)getpid());
  PQsetNoticeProcessor(c, tpg_quiet, NULL);
  if (PQstatus(c) == CONNECTION_OK)
    PQclear(PQexec(c, sql));
  PQfinish(c);
}

#endif
