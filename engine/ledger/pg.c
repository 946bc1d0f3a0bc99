/* engine/ledger/pg.c — the PostgreSQL ledger backend (libpq).
 *
 * DESIGN: one PGconn per struct ledger, so per thread, as with SQLite.  Every
 * statement is parameterised (PQexecParams, text format).  Writes that must be
 * atomic run in one transaction; compare-and-set state changes are
 * "UPDATE ... WHERE state = $from" whose row count decides, and job_claim
 * picks the oldest QUEUED row with FOR UPDATE SKIP LOCKED so that many
 * processes on many machines claim each job once without waiting on each
 * other.
 *
 * Time: leases and every timestamp written are taken from the database clock
 * (clock_timestamp() in unix ms), never the caller's, so lease expiry means
 * the same thing to every machine whatever their clocks say.  job_expired
 * therefore compares with the database clock too and ignores its now_ms
 * argument (the caller's clock).
 *
 * Round trips: creating, moving, claiming and finishing a job are each one
 * statement (data-modifying WITH queries that also write the transition),
 * so one round trip and one commit.  Statements with parameters are
 * prepared once per session (PQprepare, then PQexecPrepared): parsing and
 * planning these WITH queries costs as much as running them.  Inside a
 * caller's transaction, BEGIN and every write whose result nobody reads (a
 * step record, a notification, the offset) are queued in libpq's pipeline
 * and go with the next statement that is read, or with COMMIT: one round
 * trip for them all.  Each round trip costs the server a send, a receive
 * and a sleep; on this project's VM those were half of the CPU of the
 * orchestrator writer's session.  A queued write that fails fails the
 * statement or COMMIT it went with (the transaction is aborted anyway).
 *
 * Wake-ups: a job entering QUEUED sends a NOTIFY in the same statement
 * (delivered on commit), with its id: one notification per job
 * (PostgreSQL folds equal ones of a transaction into one).  The channel is
 * the schema's (JOBS_CHANNEL): NOTIFY is database-wide, and the workers
 * of a ledger in another schema must not wake for these jobs.
 * wait_for_work LISTENs on first use and waits on the connection's socket,
 * so an idle worker starts within milliseconds without polling.
 *
 * Reconnects: when a statement fails and the connection is bad, it is reset
 * with PQreset; outside a transaction the statement is retried once.  Inside
 * one the error is returned: the transaction is lost with the connection, and
 * until the caller's rollback every statement and commit fails rather than
 * run outside it. */
#include "ledger.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"
#include "migrations.h"
#include "pq_dl.h"

#define NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"
/* The notification channel of the ledger's schema: a name of at most 28
 * characters, [a-z0-9_] (a schema name may take all 63 a channel has). */
#define JOBS_CHANNEL "('skynet_jobs_' || left(md5(current_schema()), 16))"
#define MAX_PARAMS 16
#define MAX_PREPARED 64           /* statements prepared per session */
#define MAX_PIPED 128             /* writes queued before they are sent anyway */
#define ID_BLOCK_MAX 32           /* job ids a session reserves at most at once */
#define ID_BURST_MS 20            /* jobs created closer than this are a burst */
#define ID_KEEP_MS 1000           /* reserved ids unused this long are let go */
/* A session idle inside a transaction this long is ended by the server,
 * unless the server, database, role or URL set a limit of their own: a
 * process cut off from the network between two statements of a transaction
 * would otherwise hold its row locks (a job's, the reclaim lock's) for as
 * long as the dead connection lasts, and every other worker that needs them
 * would wait as long.  Few transactions of skynet wait for anything but
 * the database between their statements; the longest is the Telegram
 * channel's batch while /providers asks a provider the sentinel has not
 * checked yet for its health (a gateway's or an ssh host's answer may
 * take 10 s), hence the margin. */
#define IDLE_TX_LIMIT "30s"
/* Any constant shared by every skynet process: serialises migrations. */
#define MIGRATE_LOCK_KEY "727370001"

struct pg_ledger {
  struct ledger base;
  PGconn *c;
  int in_tx;                /* inside a caller's begin/commit */
  int begin_pending;        /* in_tx, but BEGIN not sent yet: it goes with
                             * the first statement, in one round trip */
  int piped;                /* statements sent in pipeline mode whose
                             * results are not read yet (then the session is
                             * in pipeline mode) */
  int piped_begin;          /* ... the first of them is BEGIN */
  int tx_lost;              /* the connection, and so the caller's
                             * transaction, was lost: only rollback helps */
  int own_tx;               /* inside a transaction of one operation */
  int listening;            /* LISTEN JOBS_CHANNEL issued on this session */
  int lazy_claims;          /* claims commit asynchronously (lazy_commits) */
  char *prepared[MAX_PREPARED];  /* their SQL; statement "s<prep_id[i]>" */
  int prep_id[MAX_PREPARED];
  int n_prepared;
  int next_prep_id;         /* names are never reused on a session */
  int prep_mark;            /* prepared[prep_mark..] were prepared inside the
                             * pipeline under way: unconfirmed until it ends */
  /* Job ids taken from the jobs' sequence ahead, while this session creates
   * jobs in a burst (see next_job_id). */
  int64_t ids[ID_BLOCK_MAX];
  int n_ids, next_id;       /* reserved; the next to use */
  int id_block;             /* how many the next reservation takes */
  int64_t ids_at;           /* when they were reserved (monotonic ms) */
  int64_t last_create;      /* when this session last created a job (the same) */
};

struct params {
  const char *v[MAX_PARAMS];
  char num[MAX_PARAMS][24];
  int n;
};

static struct pg_ledger *pl_of(struct ledger *l)
{
  return (struct pg_ledger *)l;
}

static void par_text(struct params *p, const char *s)
{
  p->v[p->n++] = s;
}

static void par_i64(struct params *p, int64_t x)
{
  snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)x);
  p->v[p->n] = p->num[p->n];
  p->n++;
}

/* Stores a redacted, one-line error message and logs it. */
static enum err pl_fail(struct pg_ledger *s, const char *what, const char *msg)
{
  char *red = log_redact(msg ? msg : "?");
  char *nl;

  snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: %s", what,
           red ? red : "?");
  free(red);
  if ((nl = strchr(s->base.errmsg, '\n')))
    *nl = '\0';
  log_error("ledger", "postgresql %s", s->base.errmsg);
  return ERR_DB;
}

static int res_ok(const PGresult *r)
{
  ExecStatusType st = PQresultStatus(r);

  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* A new session (PQreset) has none of the old one's statements. */
static void forget_session(struct pg_ledger *s)
{
  s->listening = 0;
  s->piped = s->piped_begin = 0;   /* PQreset leaves pipeline mode */
  while (s->n_prepared)
    free(s->prepared[--s->n_prepared]);
  s->prep_mark = 0;
}

/* What every session of the ledger sets first (see IDLE_TX_LIMIT); nothing
 * when it fails, as the next statement finds out anyway. */
static void session_setup(struct pg_ledger *s)
{
  PQclear(PQexec(s->c, "SELECT set_config('idle_in_transaction_session_timeout', '"
                       IDLE_TX_LIMIT "', false) WHERE"
                       " current_setting('idle_in_transaction_session_timeout') = '0'"));
}

/* The name of sql prepared on this session, preparing it on first use;
 * NULL when it cannot be (the caller runs it unprepared).  Inside a
 * pipeline the preparation is queued before the statement (one more result
 * for pipe_end to read), so that statements first run in a pipeline (the
 * writer's, a submission's) are not parsed and planned at every use. */
static const char *prepared_name(struct pg_ledger *s, const char *sql, char *name,
                                 size_t n)
{
  PGresult *r;
  int i, ok;

  for (i = 0; i < s->n_prepared && strcmp(s->prepared[i], sql); i++)
    ;
  if (i < s->n_prepared) {
    snprintf(name, n, "s%d", s->prep_id[i]);
    return name;
  }
  if (i == MAX_PREPARED || (s->piped && !PQsendPrepare))
    return NULL;
  snprintf(name, n, "s%d", s->next_prep_id);
  if (s->piped) {
    if (!(s->prepared[i] = strdup(sql)) || !PQsendPrepare(s->c, name, sql, 0, NULL)) {
      free(s->prepared[i]);
      return NULL;
    }
    s->piped++;
  } else {
    r = PQprepare(s->c, name, sql, 0, NULL);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || !(s->prepared[i] = strdup(sql)))
      return NULL;
  }
  s->prep_id[i] = s->next_prep_id++;
  s->n_prepared++;
  return name;
}

/* A pipeline ended: what it prepared exists if it all went well; after a
 * failure, preparations queued after the failed statement were skipped,
 * so the pipeline's are forgotten (their names are not used again). */
static void prepared_settle(struct pg_ledger *s, int ok)
{
  while (!ok && s->n_prepared > s->prep_mark)
    free(s->prepared[--s->n_prepared]);
  s->prep_mark = s->n_prepared;
}

/* The connection failed (what: doing what; msg: why, else libpq's last
 * error): reports it and resets the connection, so that the next statement
 * finds a working one.  ERR_DB. */
static enum err pl_reset(struct pg_ledger *s, const char *what, const char *msg)
{
  pl_fail(s, what, msg ? msg : PQerrorMessage(s->c));
  log_warn("ledger", "postgresql reconnecting");
  PQreset(s->c);
  forget_session(s);
  if (PQstatus(s->c) == CONNECTION_OK)
    session_setup(s);
  return ERR_DB;
}

/* Sends a statement in pipeline mode without waiting for its result,
 * preceded by the pending BEGIN; 0 when it could not be sent (the
 * connection failed). */
static int pipe_send(struct pg_ledger *s, const char *sql, const struct params *p,
                     const char *name)
{
  if (!s->piped && !PQenterPipelineMode(s->c))
    return 0;
  if (!s->piped)
    s->prep_mark = s->n_prepared;
  if (s->begin_pending) {
    s->begin_pending = 0;
    s->piped_begin = !s->piped;
    s->piped++;
    if (!PQsendQueryParams(s->c, "BEGIN", 0, NULL, NULL, NULL, NULL, 0))
      return 0;
  }
  s->piped++;
  return name ? PQsendQueryPrepared(s->c, name, p->n, p->v, NULL, NULL, 0)
              : PQsendQueryParams(s->c, sql, p ? p->n : 0, NULL, p ? p->v : NULL, NULL, NULL,
                                  0);
}

/* Sends sql (none when NULL) after the statements queued, with a sync, and
 * reads every result, in one round trip: the first failure among the
 * queued ones (which aborted the transaction), else sql's result; NULL when
 * the connection failed.  Unless BEGIN took, the caller's transaction is
 * lost (tx_lost): nothing more may run until its rollback, or it would run
 * outside one.  Leaves pipeline mode in every case (resetting the
 * connection if it cannot). */
static PGresult *pipe_end(struct pg_ledger *s, const char *sql, const struct params *p,
                          const char *name)
{
  PGresult *r, *fail = NULL, *last = NULL;
  int sent = (!sql || pipe_send(s, sql, p, name)) && PQpipelineSync(s->c);
  int n = s->piped, begin = s->piped_begin, i = 0, synced = 0;

  s->piped = s->piped_begin = 0;
  /* Each query's result is followed by a NULL; the sync's result ends it. */
  for (int nulls = 0; sent && nulls < 3;) {
    if (!(r = PQgetResult(s->c))) {
      if (PQstatus(s->c) == CONNECTION_BAD)
        break;
      nulls++;
      continue;
    }
    nulls = 0;
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      synced = 1;
      break;
    }
    if (i == 0 && begin && !res_ok(r))
      s->tx_lost = 1;
    if (sql && i == n - 1 && !last)
      last = r;
    else if (!fail && !res_ok(r))
      fail = r;
    else
      PQclear(r);
    i++;
  }
  prepared_settle(s, synced && !fail);
  if (!PQexitPipelineMode(s->c)) {
    PQclear(fail);
    PQclear(last);
    pl_reset(s, "pipeline", NULL);
    s->tx_lost = s->in_tx;
    return NULL;
  }
  if (fail) {
    PQclear(last);
    return fail;
  }
  return last;
}

static PGresult *run_once(struct pg_ledger *s, const char *sql,
                          const struct params *p)
{
  char buf[16];
  const char *name = p && p->n ? prepared_name(s, sql, buf, sizeof buf) : NULL;

  if (s->begin_pending || s->piped)
    return pipe_end(s, sql, p, name);
  if (name)
    return PQexecPrepared(s->c, name, p->n, p->v, NULL, NULL, 0);
  return PQexecParams(s->c, sql, p ? p->n : 0, NULL, p ? p->v : NULL, NULL,
                      NULL, 0);
}

/* Queues a write whose result nobody reads (pl_q's out is NULL) inside the
 * caller's transaction: it goes with the next statement read, or COMMIT. */
static enum err pl_defer(struct pg_ledger *s, const char *sql, const struct params *p)
{
  char buf[16];
  const char *name = prepared_name(s, sql, buf, sizeof buf);
  PGresult *r;

  if (!pipe_send(s, sql, p, name)) {
    s->tx_lost = 1;
    return pl_reset(s, "connection lost", NULL);
  }
  if (s->piped < MAX_PIPED)
    return ERR_OK;
  /* Many queued (a large group): their results are read now, so that
   * neither side's buffers fill while the other waits. */
  r = pipe_end(s, NULL, NULL, NULL);
  if (r) {
    pl_fail(s, "query", PQresultErrorMessage(r));
    PQclear(r);
    return ERR_DB;
  }
  return s->tx_lost ? ERR_DB : ERR_OK;
}

/* Runs one statement.  On success *out (when given) holds the result for the
 * caller to PQclear; on failure nothing is held. */
static enum err pl_q(struct pg_ledger *s, const char *sql,
                     const struct params *p, PGresult **out)
{
  PGresult *r;

  /* Never let a statement of a lost transaction autocommit on a new
   * connection. */
  if (s->tx_lost)
    return pl_fail(s, "query", "the transaction was lost with its connection");
  if (!out && s->in_tx && p && p->n && PQenterPipelineMode && PQstatus(s->c) == CONNECTION_OK)
    return pl_defer(s, sql, p);
  r = run_once(s, sql, p);
  if (!res_ok(r) && PQstatus(s->c) == CONNECTION_BAD) {
    pl_reset(s, "connection lost", r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r) : NULL);
    PQclear(r);
    r = NULL;
    if (s->in_tx || s->own_tx) {
      s->tx_lost = s->in_tx;
      return ERR_DB;
    }
    if (PQstatus(s->c) != CONNECTION_OK)
      return pl_fail(s, "reconnect", PQerrorMessage(s->c));
    r = run_once(s, sql, p);
  }
  if (!res_ok(r)) {
    pl_fail(s, "query", r ? PQresultErrorMessage(r) : PQerrorMessage(s->c));
    PQclear(r);
    return ERR_DB;
  }
  if (out)
    *out = r;
  else
    PQclear(r);
  return ERR_OK;
}

/* Runs a statement and reports how many rows it changed. */
static enum err pl_changes(struct pg_ledger *s, const char *sql,
                           const struct params *p, long *changed)
{
  PGresult *r;
  enum err e = pl_q(s, sql, p, &r);

  if (e)
    return e;
  *changed = strtol(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return ERR_OK;
}

static char *col_text(const PGresult *r, int row, int col)
{
  return PQgetisnull(r, row, col) ? NULL : strdup(PQgetvalue(r, row, col));
}

static int64_t col_i64(const PGresult *r, int row, int col)
{
  return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Own transaction unless the caller holds one. */
static enum err tx_begin(struct pg_ledger *s)
{
  enum err e;

  if (s->in_tx)
    return ERR_OK;
  if ((e = pl_q(s, "BEGIN", NULL, NULL)) == ERR_OK)
    s->own_tx = 1;
  return e;
}

static enum err tx_end(struct pg_ledger *s, enum err e)
{
  if (s->in_tx)
    return e;
  if (!s->own_tx)
    return e;
  s->own_tx = 0;
  if (e == ERR_OK)
    return pl_q(s, "COMMIT", NULL, NULL);
  pl_q(s, "ROLLBACK", NULL, NULL);
  return e;
}

static void pl_close(struct ledger *l)
{
  struct pg_ledger *s = pl_of(l);

  PQfinish(s->c);
  forget_session(s);
  free(s);
}

static enum err pl_schema_version(struct ledger *l, int *version)
{
  struct pg_ledger *s = pl_of(l);
  PGresult *r;
  enum err e;
  int exists;

  *version = 0;
  e = pl_q(s, "SELECT to_regclass('schema_migrations') IS NOT NULL", NULL, &r);
  if (e)
    return e;
  exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (!exists)
    return ERR_OK;
  e = pl_q(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL,
           &r);
  if (e)
    return e;
  *version = (int)col_i64(r, 0, 0);
  PQclear(r);
  return ERR_OK;
}

static enum err apply_one(struct pg_ledger *s, const struct migration *m)
{
  struct params p = {0};
  PGresult *r;
  enum err e;

  /* A migration may hold several statements: PQexec, no parameters. */
  r = PQexec(s->c, m->sql);
  if (!res_ok(r)) {
    pl_fail(s, m->name, PQresultErrorMessage(r));
    PQclear(r);
    return ERR_DB;
  }
  PQclear(r);
  par_i64(&p, m->version);
  par_text(&p, m->name);
  e = pl_q(s, "INSERT INTO schema_migrations(version, name, applied_at)"
              " VALUES ($1, $2, " NOW_MS ")", &p, NULL);
  if (e == ERR_OK)
    log_info("ledger", "applied migration %s", m->name);
  return e;
}

static enum err pl_migrate(struct ledger *l, int *applied)
{
  struct pg_ledger *s = pl_of(l);
  int have = 0;
  enum err e;

  *applied = 0;
  if (s->in_tx)
    return ERR_STATE;
  if ((e = tx_begin(s)))
    return e;
  /* Transaction-scoped: released on commit or rollback. */
  e = pl_q(s, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", NULL, NULL);
  if (e == ERR_OK)
    e = pl_q(s, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER"
                " PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
             NULL, NULL);
  if (e == ERR_OK)
    e = pl_schema_version(l, &have);
  for (const struct migration *m = migrations_postgres; e == ERR_OK && m->name;
       m++) {
    if (m->version <= have)
      continue;
    if ((e = apply_one(s, m)) == ERR_OK)
      (*applied)++;
  }
  if (e)
    *applied = 0;
  return tx_end(s, e);
}

static enum err pl_begin(struct ledger *l)
{
  struct pg_ledger *s = pl_of(l);
  enum err e;

  if (s->in_tx)
    return ERR_STATE;
  if (PQenterPipelineMode && PQstatus(s->c) == CONNECTION_OK) {
    s->in_tx = s->begin_pending = 1;   /* sent with the first statement */
    return ERR_OK;
  }
  if ((e = pl_q(s, "BEGIN", NULL, NULL)))
    return e;
  s->in_tx = 1;
  return ERR_OK;
}

static enum err pl_commit(struct ledger *l)
{
  struct pg_ledger *s = pl_of(l);
  enum err e;

  if (!s->in_tx)
    return ERR_STATE;
  if (s->tx_lost) {
    s->in_tx = s->tx_lost = 0;
    e = pl_fail(s, "commit", "the transaction was lost with its connection");
  } else if (s->begin_pending) {       /* nothing was sent: nothing to commit */
    s->in_tx = s->begin_pending = 0;
    e = ERR_OK;
  } else {
    /* Still in_tx: a COMMIT whose connection fails is not tried again on a
     * new one, where it would succeed with nothing to commit. */
    e = pl_q(s, "COMMIT", NULL, NULL);
    s->in_tx = s->tx_lost = 0;
    /* A queued write failed: the server skipped the COMMIT, and its
     * transaction waits, aborted, for a rollback. */
    if (e && PQstatus(s->c) == CONNECTION_OK && PQtransactionStatus(s->c) != PQTRANS_IDLE)
      pl_q(s, "ROLLBACK", NULL, NULL);
  }
  ledger_tx_ended(l, e == ERR_OK);
  return e;
}

static enum err pl_rollback(struct ledger *l)
{
  struct pg_ledger *s = pl_of(l);
  enum err e = ERR_OK;

  if (!s->in_tx)
    return ERR_STATE;
  s->in_tx = 0;
  if (s->piped)             /* queued writes: their results, then ROLLBACK */
    PQclear(pipe_end(s, NULL, NULL, NULL));
  if (s->tx_lost)
    s->tx_lost = 0;         /* the server already threw it away */
  else if (s->begin_pending)
    s->begin_pending = 0;
  else
    e = pl_q(s, "ROLLBACK", NULL, NULL);
  ledger_tx_ended(l, 0);
  return e;
}

/* One statement (one round trip, atomic on its own): the job and its first
 * transition. */
static enum err pl_job_create(struct ledger *l, struct job *j, const char *actor)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  PGresult *r = NULL;
  enum err e;

  par_text(&p, j->channel ? j->channel : "console");
  par_i64(&p, j->chat_id);
  par_i64(&p, j->user_id);
  par_text(&p, j->text ? j->text : "");
  par_text(&p, actor ? actor : "system");
  e = pl_q(s, "WITH made AS (INSERT INTO jobs(channel, chat_id, user_id, text,"
              " state, created_at, updated_at) VALUES ($1, $2, $3, $4,"
              " 'CREATED', " NOW_MS ", " NOW_MS ") RETURNING id, created_at),"
              " t AS (INSERT INTO transitions(job_id, from_state, to_state,"
              " actor, reason, at) SELECT id, NULL, 'CREATED', $5, NULL,"
              " created_at FROM made) SELECT id, created_at FROM made", &p, &r);
  if (e)
    return e;
  j->id = col_i64(r, 0, 0);
  j->state = JOB_CREATED;
  j->created_at = j->updated_at = col_i64(r, 0, 1);
  PQclear(r);
  return ERR_OK;
}

/* The id of the job about to be created, when this session has one
 * reserved; else 0 (the insert takes the next from the sequence itself and
 * returns it: a round trip).  While this session creates jobs in a burst
 * (less than ID_BURST_MS apart), it reserves 2, 4, ... up to ID_BLOCK_MAX
 * ids with one round trip, so that the inserts return nothing and go with
 * the caller's COMMIT: a submission then costs one round trip, not two.
 * One job at a time, it reserves none.  Like a sequence's CACHE, this
 * leaves gaps: ids that are not used within ID_KEEP_MS, or before the
 * process ends, are let go; and jobs of two sessions in a burst at once
 * interleave in blocks rather than one by one. */
static enum err next_job_id(struct pg_ledger *s, int64_t *id)
{
  int64_t now = ledger_mono_ms();
  int burst = s->last_create && now - s->last_create < ID_BURST_MS;
  struct params p = {0};
  PGresult *r;
  enum err e;

  *id = 0;
  s->last_create = now;
  if (s->next_id < s->n_ids && now - s->ids_at < ID_KEEP_MS) {
    *id = s->ids[s->next_id++];
    return ERR_OK;
  }
  s->n_ids = s->next_id = 0;
  if (!burst || !s->in_tx) {
    s->id_block = 1;
    return ERR_OK;
  }
  s->id_block = s->id_block * 2 > ID_BLOCK_MAX ? ID_BLOCK_MAX : s->id_block * 2;
  par_i64(&p, s->id_block);
  if ((e = pl_q(s, "SELECT nextval('jobs_id_seq') FROM generate_series(1, $1)", &p, &r)))
    return e;
  for (int i = 0; i < PQntuples(r) && i < ID_BLOCK_MAX; i++)
    s->ids[s->n_ids++] = col_i64(r, i, 0);
  PQclear(r);
  s->ids_at = now;
  if (s->n_ids)
    *id = s->ids[s->next_id++];
  return ERR_OK;
}

/* The statement of pl_job_create_routed, one for the job in its routed
 * state and its transitions: $12 the id (NULL: the sequence's next); $13
 * the owner of a claim made with it (NULL: none), $14 its lease, $15 its
 * actor. */
#define CREATE_ROUTED_SQL                                                              \
  "WITH made AS (INSERT INTO jobs(id, channel, chat_id, user_id, text, state,"        \
  " plan_json, summary, risk, reason, created_at, updated_at, attempts, lease_owner," \
  " lease_expires) VALUES (COALESCE($12::bigint, nextval('jobs_id_seq')), $1, $2,"    \
  " $3, $4, CASE WHEN $13::text IS NULL THEN $5 ELSE 'RUNNING' END, $6, $7, $8, $9, " \
  NOW_MS ", " NOW_MS ", CASE WHEN $13::text IS NULL THEN 0 ELSE 1 END, $13, CASE"     \
  " WHEN $13::text IS NULL THEN NULL ELSE " NOW_MS " + $14 END) RETURNING id,"        \
  " created_at), t AS (INSERT INTO transitions(job_id, from_state, to_state, actor,"  \
  " reason, at) SELECT id, v.f, v.t, v.a, v.r, created_at FROM made, (VALUES (1,"     \
  " NULL, 'CREATED', $10, NULL), (2, 'CREATED', 'PLANNED', 'planner', NULL), (3,"     \
  " 'PLANNED', $5, $11, $9), (4, $5, 'RUNNING', $15, NULL)) AS v(n, f, t, a, r)"      \
  " WHERE v.n < 4 OR $13::text IS NOT NULL ORDER BY v.n) SELECT id, created_at,"      \
  " (SELECT pg_notify(" JOBS_CHANNEL ", made.id::text) WHERE $5 = 'QUEUED' AND"       \
  " $13::text IS NULL) FROM made"

static enum err pl_job_create_routed(struct ledger *l, struct job *j, const char *actor,
                                     enum job_state to, const char *to_actor,
                                     const char *reason, const char *claim_owner,
                                     int lease_ms)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  char claim_actor[160];
  PGresult *r = NULL;
  int64_t id;
  enum err e;

  if (!job_transition_allowed(JOB_PLANNED, to) || (claim_owner && to != JOB_QUEUED))
    return ERR_STATE;
  if ((e = next_job_id(s, &id)))
    return e;
  snprintf(claim_actor, sizeof claim_actor, "worker:%s", claim_owner ? claim_owner : "");
  par_text(&p, j->channel ? j->channel : "console");
  par_i64(&p, j->chat_id);
  par_i64(&p, j->user_id);
  par_text(&p, j->text ? j->text : "");
  par_text(&p, job_state_name(to));
  par_text(&p, j->plan_json);
  par_text(&p, j->summary);
  par_text(&p, risk_name(j->risk));
  par_text(&p, reason);
  par_text(&p, actor ? actor : "system");
  par_text(&p, to_actor ? to_actor : "system");
  if (id)
    par_i64(&p, id);
  else
    par_text(&p, NULL);         /* $12: the sequence's next */
  par_text(&p, claim_owner);
  par_i64(&p, lease_ms);
  par_text(&p, claim_actor);
  j->state = claim_owner ? JOB_RUNNING : to;
  j->attempts = claim_owner ? 1 : 0;
  if (id) {
    /* Nothing to read back: queued with the caller's COMMIT (pl_defer). */
    if ((e = pl_q(s, CREATE_ROUTED_SQL, &p, NULL)))
      return e;
    j->id = id;
    j->created_at = j->updated_at = 0;   /* the database's clock: not read */
    return ERR_OK;
  }
  if ((e = pl_q(s, CREATE_ROUTED_SQL, &p, &r)))
    return e;
  j->id = col_i64(r, 0, 0);
  j->created_at = j->updated_at = col_i64(r, 0, 1);
  PQclear(r);
  return ERR_OK;
}

#define JOB_COLS                                                        \
  "id, channel, chat_id, user_id, text, state, risk, plan_json, summary," \
  " reason, exit_code, output_tail, cancel_requested, attempts,"          \
  " lease_owner, lease_expires, created_at, updated_at, not_before"

static void row_to_job(const PGresult *r, int i, struct job *j)
{
  memset(j, 0, sizeof *j);
  j->id = col_i64(r, i, 0);
  j->channel = col_text(r, i, 1);
  j->chat_id = col_i64(r, i, 2);
  j->user_id = col_i64(r, i, 3);
  j->text = col_text(r, i, 4);
  job_state_parse(PQgetvalue(r, i, 5), &j->state);
  risk_parse(PQgetvalue(r, i, 6), &j->risk);
  j->plan_json = col_text(r, i, 7);
  j->summary = col_text(r, i, 8);
  j->reason = col_text(r, i, 9);
  j->has_exit_code = !PQgetisnull(r, i, 10);
  j->exit_code = (int)col_i64(r, i, 10);
  j->output_tail = col_text(r, i, 11);
  j->cancel_requested = (int)col_i64(r, i, 12);
  j->attempts = (int)col_i64(r, i, 13);
  j->lease_owner = col_text(r, i, 14);
  j->lease_expires = col_i64(r, i, 15);
  j->created_at = col_i64(r, i, 16);
  j->updated_at = col_i64(r, i, 17);
  j->not_before = col_i64(r, i, 18);
}

static enum err pl_job_get(struct ledger *l, int64_t id, struct job *out)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  PGresult *r;
  enum err e;

  memset(out, 0, sizeof *out);
  par_i64(&p, id);
  if ((e = pl_q(s, "SELECT " JOB_COLS " FROM jobs WHERE id = $1", &p, &r)))
    return e;
  e = ERR_NOTFOUND;
  if (PQntuples(r) == 1) {
    row_to_job(r, 0, out);
    e = ERR_OK;
  }
  PQclear(r);
  return e;
}

/* Copies every row of r into a new array of `size`-byte elements. */
static enum err collect_rows(PGresult *r, size_t size,
                             void (*fill)(const PGresult *, int, void *),
                             void **out, size_t *n)
{
  int rows = PQntuples(r);
  char *v = NULL;

  *out = NULL;
  *n = 0;
  if (rows > 0 && !(v = calloc((size_t)rows, size))) {
    PQclear(r);
    return ERR_NOMEM;
  }
  for (int i = 0; i < rows; i++)
    fill(r, i, v + (size_t)i * size);
  PQclear(r);
  *out = v;
  *n = (size_t)rows;
  return ERR_OK;
}

static enum err select_rows(struct pg_ledger *s, const char *sql,
                            const struct params *p, size_t size,
                            void (*fill)(const PGresult *, int, void *),
                            void **out, size_t *n)
{
  PGresult *r;
  enum err e;

  *out = NULL;
  *n = 0;
  if ((e = pl_q(s, sql, p, &r)))
    return e;
  return collect_rows(r, size, fill, out, n);
}

static void fill_job(const PGresult *r, int i, void *p)
{
  row_to_job(r, i, p);
}

static enum err pl_job_list(struct ledger *l, const struct job_filter *f,
                            struct job **out, size_t *n)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};

  par_text(&p, f ? f->channel : NULL);
  par_i64(&p, f ? f->chat_id : 0);
  par_i64(&p, f ? f->any_state : 1);
  par_text(&p, job_state_name(f ? f->state : JOB_CREATED));
  par_i64(&p, f && f->limit ? (int64_t)f->limit : 20);
  return select_rows(s, "SELECT " JOB_COLS " FROM jobs WHERE ($1::text IS NULL"
                        " OR (channel = $1 AND chat_id = $2)) AND ($3 = 1 OR"
                        " state = $4) ORDER BY id DESC LIMIT $5",
                     &p, sizeof(struct job), fill_job, (void **)out, n);
}

static enum err pl_job_set_plan(struct ledger *l, int64_t id,
                                const char *plan_json, const char *summary,
                                enum risk risk)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};

  par_text(&p, plan_json);
  par_text(&p, summary);
  par_text(&p, risk_name(risk));
  par_i64(&p, id);
  return pl_q(s, "UPDATE jobs SET plan_json = $1, summary = $2, risk = $3,"
                 " updated_at = " NOW_MS " WHERE id = $4", &p, NULL);
}

/* The state-changing core: CAS from → to, the transition, and the wake-up
 * NOTIFY when the job is queued, in one statement (one round trip; atomic
 * by itself or inside a caller's transaction).  `extra` is a constant SQL
 * fragment (no user data) appended to the SET list. */
static enum err move_state(struct pg_ledger *s, int64_t id, enum job_state from,
                           enum job_state to, const char *actor,
                           const char *reason, const char *extra)
{
  struct params p = {0};
  char sql[1024];
  PGresult *r;
  int moved;
  enum err e;

  if (!job_transition_allowed(from, to))
    return ERR_STATE;
  snprintf(sql, sizeof sql,
           "WITH moved AS (UPDATE jobs SET state = $1, reason = $2, updated_at"
           " = " NOW_MS "%s WHERE id = $3 AND state = $4 RETURNING id,"
           " updated_at), t AS (INSERT INTO transitions(job_id, from_state,"
           " to_state, actor, reason, at) SELECT id, $4, $1, $5, $2,"
           " updated_at FROM moved) SELECT id, (SELECT pg_notify(" JOBS_CHANNEL
           ", moved.id::text) WHERE $1 = 'QUEUED') FROM moved", extra ? extra : "");
  par_text(&p, job_state_name(to));
  par_text(&p, reason);
  par_i64(&p, id);
  par_text(&p, job_state_name(from));
  par_text(&p, actor ? actor : "system");
  if ((e = pl_q(s, sql, &p, &r)))
    return e;
  moved = PQntuples(r) == 1;
  PQclear(r);
  if (!moved) {
    struct job j;
    e = pl_job_get(&s->base, id, &j) == ERR_NOTFOUND ? ERR_NOTFOUND : ERR_STATE;
    job_release(&j);
    return e;
  }
  return ERR_OK;
}

static enum err pl_job_transition(struct ledger *l, int64_t id,
                                  enum job_state from, enum job_state to,
                                  const char *actor, const char *reason)
{
  const char *extra = NULL;

  if (from == JOB_RUNNING)
    extra = ", lease_owner = NULL, lease_expires = NULL";
  return move_state(pl_of(l), id, from, to, actor, reason, extra);
}

/* One statement, so one round trip: lock up to max of the oldest due
 * QUEUED jobs (or only `only`, when not 0) that nobody else holds, move them
 * to RUNNING under a lease, and record the transitions; out[0..*n) in id
 * order.  Autocommits unless the caller holds a transaction; no NOTIFY, as
 * the jobs leave the queue. */
static enum err claim_rows(struct pg_ledger *s, const char *owner, int lease_ms, int64_t only,
                           int max, struct job *out, int *n)
{
  struct params p = {0};
  char actor[160];
  PGresult *r;
  enum err e;

  *n = 0;
  snprintf(actor, sizeof actor, "worker:%s", owner);
  par_text(&p, owner);
  par_i64(&p, only);
  par_i64(&p, lease_ms);
  par_text(&p, actor);
  par_text(&p, s->lazy_claims ? "off" : "on");
  par_i64(&p, max);
  /* The set_config column only sets synchronous_commit for this
   * transaction. */
  e = pl_q(s, "WITH picked AS (SELECT id FROM jobs WHERE state = 'QUEUED' AND"
              " ($2 = 0 OR id = $2) AND not_before <= " NOW_MS " ORDER BY id"
              " FOR UPDATE SKIP LOCKED LIMIT $6), claimed AS (UPDATE jobs j SET"
              " state = 'RUNNING', reason = NULL, updated_at = " NOW_MS ","
              " attempts = j.attempts + 1, lease_owner = $1, lease_expires = "
              NOW_MS " + $3 FROM picked WHERE j.id = picked.id RETURNING j.*),"
              " moved AS (INSERT INTO transitions(job_id, from_state, to_state,"
              " actor, reason, at) SELECT id, 'QUEUED', 'RUNNING', $4, NULL,"
              " updated_at FROM claimed ORDER BY id) SELECT " JOB_COLS ","
              " set_config('synchronous_commit', $5, true) FROM claimed ORDER BY id",
           &p, &r);
  if (e)
    return e;
  for (int i = 0; i < PQntuples(r) && i < max; i++)
    row_to_job(r, i, &out[(*n)++]);
  PQclear(r);
  return *n ? ERR_OK : ERR_NOTFOUND;
}

static enum err pl_job_claim(struct ledger *l, const char *owner, int lease_ms,
                             int64_t only, struct job *out)
{
  int n;

  memset(out, 0, sizeof *out);
  return claim_rows(pl_of(l), owner, lease_ms, only, 1, out, &n);
}

static enum err pl_job_claim_some(struct ledger *l, const char *owner, int lease_ms, int max,
                                  struct job *out, int *n)
{
  *n = 0;
  if (pl_of(l)->in_tx)
    return ERR_STATE;
  return claim_rows(pl_of(l), owner, lease_ms, 0, max, out, n);
}

static enum err pl_job_heartbeat(struct ledger *l, int64_t id, const char *owner,
                                 int lease_ms, int *cancel_requested)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  PGresult *r;
  enum err e;

  par_i64(&p, lease_ms);
  par_i64(&p, id);
  par_text(&p, owner);
  e = pl_q(s, "UPDATE jobs SET lease_expires = " NOW_MS " + $1 WHERE id = $2"
              " AND state = 'RUNNING' AND lease_owner = $3 RETURNING"
              " cancel_requested", &p, &r);
  if (e)
    return e;
  e = ERR_STATE;
  if (PQntuples(r) == 1) {
    *cancel_requested = (int)col_i64(r, 0, 0);
    e = ERR_OK;
  }
  PQclear(r);
  return e;
}

/* A job's end: the statement's head, which leaves the ended row (columns
 * `ret`) in `done`, and its parameters $1..$7 (finish_params). */
#define FINISH_SQL(ret)                                                        \
  "WITH done AS (UPDATE jobs SET exit_code = $1, output_tail = $2, state = $5," \
  " reason = $6, updated_at = " NOW_MS ", lease_owner = NULL, lease_expires ="  \
  " NULL WHERE id = $3 AND state = 'RUNNING' AND lease_owner = $4 RETURNING "   \
  ret "), t AS (INSERT INTO transitions(job_id, from_state, to_state, actor,"  \
  " reason, at) SELECT id, 'RUNNING', $5, $7, $6, updated_at FROM done) "

/* 0 when `to` cannot follow RUNNING. */
static int finish_params(struct params *p, char *actor, size_t n, int64_t id, const char *owner,
                         enum job_state to, int exit_code, const char *output_tail,
                         const char *reason)
{
  if (!job_transition_allowed(JOB_RUNNING, to))
    return 0;
  snprintf(actor, n, "worker:%s", owner);
  par_i64(p, exit_code);
  par_text(p, output_tail);
  par_i64(p, id);
  par_text(p, owner);
  par_text(p, job_state_name(to));
  par_text(p, reason);
  par_text(p, actor);
  return 1;
}

/* One statement: the result, the state and the transition, only while
 * `owner` holds the lease; it returns the row, so that an announcement
 * made from it needs no second round trip. */
static enum err pl_job_finish(struct ledger *l, int64_t id, const char *owner,
                              enum job_state to, int exit_code,
                              const char *output_tail, const char *reason,
                              struct job *out)
{
  struct params p = {0};
  char actor[160];
  PGresult *r;
  enum err e;

  if (out)
    memset(out, 0, sizeof *out);
  if (!finish_params(&p, actor, sizeof actor, id, owner, to, exit_code, output_tail, reason))
    return ERR_STATE;
  if ((e = pl_q(pl_of(l), FINISH_SQL("*") "SELECT " JOB_COLS " FROM done", &p, &r)))
    return e;
  e = ERR_STATE;
  if (PQntuples(r) == 1) {
    if (out)
      row_to_job(r, 0, out);
    e = ERR_OK;
  }
  PQclear(r);
  return e;
}

/* job_finish and the notice in one statement that returns nothing: inside
 * a transaction it goes with the next round trip (pl_defer). */
static enum err pl_job_finish_notice(struct ledger *l, int64_t id, const char *owner,
                                     enum job_state to, int exit_code, const char *output_tail,
                                     const char *reason, const struct outbox_msg *notice)
{
  struct params p = {0};
  char actor[160];

  if (!finish_params(&p, actor, sizeof actor, id, owner, to, exit_code, output_tail, reason))
    return ERR_STATE;
  par_text(&p, notice->channel);
  par_i64(&p, notice->chat_id);
  par_text(&p, notice->text ? notice->text : "");
  return pl_q(pl_of(l), FINISH_SQL("id, updated_at") "INSERT INTO outbox(channel, chat_id,"
                        " job_id, text, not_before, created_at) SELECT $8, $9, id, $10, 0,"
                        " updated_at FROM done", &p, NULL);
}

static enum err pl_job_request_cancel(struct ledger *l, int64_t id)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  long changed = 0;
  enum err e;

  par_i64(&p, id);
  e = pl_changes(s, "UPDATE jobs SET cancel_requested = 1 WHERE id = $1", &p,
                 &changed);
  if (e)
    return e;
  return changed == 1 ? ERR_OK : ERR_NOTFOUND;
}

static enum err pl_job_expired(struct ledger *l, int64_t now_ms,
                               struct job **out, size_t *n)
{
  /* The database clock decides, as it set the leases: see DESIGN. */
  (void)now_ms;
  return select_rows(pl_of(l), "SELECT " JOB_COLS " FROM jobs WHERE state ="
                               " 'RUNNING' AND lease_expires < " NOW_MS
                               " ORDER BY id",
                     NULL, sizeof(struct job), fill_job, (void **)out, n);
}

static void fill_transition(const PGresult *r, int i, void *p)
{
  struct transition *t = p;

  memset(t, 0, sizeof *t);
  t->job_id = col_i64(r, i, 0);
  t->has_from = !PQgetisnull(r, i, 1) &&
                job_state_parse(PQgetvalue(r, i, 1), &t->from) == ERR_OK;
  job_state_parse(PQgetvalue(r, i, 2), &t->to);
  t->actor = col_text(r, i, 3);
  t->reason = col_text(r, i, 4);
  t->at = col_i64(r, i, 5);
}

static enum err pl_job_transitions(struct ledger *l, int64_t id,
                                   struct transition **out, size_t *n)
{
  struct params p = {0};

  par_i64(&p, id);
  return select_rows(pl_of(l), "SELECT job_id, from_state, to_state, actor,"
                               " reason, at FROM transitions WHERE job_id = $1"
                               " ORDER BY id",
                     &p, sizeof(struct transition), fill_transition,
                     (void **)out, n);
}

static enum err pl_step_record(struct ledger *l, int64_t job_id,
                               const struct job_step_rec *rec)
{
  struct params p = {0};
  char code[24];

  snprintf(code, sizeof code, "%d", rec->exit_code);
  par_i64(&p, job_id);
  par_i64(&p, rec->idx);
  par_text(&p, rec->state);
  par_text(&p, rec->has_exit_code ? code : NULL);
  par_text(&p, rec->output_tail);
  par_i64(&p, rec->started_at);
  par_i64(&p, rec->finished_at);
  return pl_q(pl_of(l),
              "INSERT INTO steps(job_id, idx, state, exit_code, output_tail,"
              " started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
              " ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state,"
              " exit_code = excluded.exit_code, output_tail ="
              " excluded.output_tail, started_at = excluded.started_at,"
              " finished_at = excluded.finished_at", &p, NULL);
}

static void fill_step(const PGresult *r, int i, void *p)
{
  struct job_step_rec *rec = p;

  memset(rec, 0, sizeof *rec);
  rec->idx = (int)col_i64(r, i, 0);
  rec->state = col_text(r, i, 1);
  rec->has_exit_code = !PQgetisnull(r, i, 2);
  rec->exit_code = (int)col_i64(r, i, 2);
  rec->output_tail = col_text(r, i, 3);
  rec->started_at = col_i64(r, i, 4);
  rec->finished_at = col_i64(r, i, 5);
}

static enum err pl_step_list(struct ledger *l, int64_t job_id,
                             struct job_step_rec **out, size_t *n)
{
  struct params p = {0};

  par_i64(&p, job_id);
  return select_rows(pl_of(l), "SELECT idx, state, exit_code, output_tail,"
                               " started_at, finished_at FROM steps WHERE"
                               " job_id = $1 ORDER BY idx",
                     &p, sizeof(struct job_step_rec), fill_step, (void **)out,
                     n);
}

static enum err pl_msg_append(struct ledger *l, const char *channel,
                              int64_t chat_id, const char *role,
                              const char *text)
{
  struct params p = {0};

  par_text(&p, channel);
  par_i64(&p, chat_id);
  par_text(&p, role);
  par_text(&p, text ? text : "");
  return pl_q(pl_of(l), "INSERT INTO messages(channel, chat_id, role, text, at)"
                        " VALUES ($1, $2, $3, $4, " NOW_MS ")", &p, NULL);
}

static void fill_msg(const PGresult *r, int i, void *p)
{
  struct chat_msg *m = p;

  m->role = col_text(r, i, 0);
  m->text = col_text(r, i, 1);
  m->at = col_i64(r, i, 2);
}

static enum err pl_msg_recent(struct ledger *l, const char *channel,
                              int64_t chat_id, size_t max,
                              struct chat_msg **out, size_t *n)
{
  struct params p = {0};

  par_text(&p, channel);
  par_i64(&p, chat_id);
  par_i64(&p, (int64_t)max);
  return select_rows(pl_of(l),
                     "SELECT role, text, at FROM (SELECT id, role, text, at FROM"
                     " messages WHERE channel = $1 AND chat_id = $2 ORDER BY id"
                     " DESC LIMIT $3) m ORDER BY id",
                     &p, sizeof(struct chat_msg), fill_msg, (void **)out, n);
}

static enum err pl_outbox_put(struct ledger *l, const struct outbox_msg *m,
                              int64_t *id)
{
  struct params p = {0};
  char job[24];
  PGresult *r;
  enum err e;

  snprintf(job, sizeof job, "%lld", (long long)m->job_id);
  par_text(&p, m->channel);
  par_i64(&p, m->chat_id);
  par_text(&p, m->job_id ? job : NULL);
  par_text(&p, m->text ? m->text : "");
  par_text(&p, m->buttons_json);
  par_text(&p, m->edit_key);
  par_i64(&p, m->not_before);
#define OUTBOX_INSERT                                                     \
  "INSERT INTO outbox(channel, chat_id, job_id, text, buttons_json, edit_key," \
  " not_before, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, " NOW_MS ")"
  if (!id)                      /* may go with the next statement (pl_defer) */
    return pl_q(pl_of(l), OUTBOX_INSERT, &p, NULL);
  if ((e = pl_q(pl_of(l), OUTBOX_INSERT " RETURNING id", &p, &r)))
    return e;
#undef OUTBOX_INSERT
  *id = col_i64(r, 0, 0);
  PQclear(r);
  return ERR_OK;
}

static void fill_outbox(const PGresult *r, int i, void *p)
{
  struct outbox_msg *m = p;

  memset(m, 0, sizeof *m);
  m->id = col_i64(r, i, 0);
  m->channel = col_text(r, i, 1);
  m->chat_id = col_i64(r, i, 2);
  m->job_id = col_i64(r, i, 3);
  m->text = col_text(r, i, 4);
  m->buttons_json = col_text(r, i, 5);
  m->edit_key = col_text(r, i, 6);
  m->attempts = (int)col_i64(r, i, 7);
  m->not_before = col_i64(r, i, 8);
}

static enum err pl_outbox_pending(struct ledger *l, const char *channel,
                                  int64_t now_ms, size_t max,
                                  struct outbox_msg **out, size_t *n)
{
  struct params p = {0};

  par_text(&p, channel);
  par_i64(&p, now_ms);
  par_i64(&p, (int64_t)max);
  return select_rows(pl_of(l),
                     "SELECT id, channel, chat_id, job_id, text, buttons_json,"
                     " edit_key, attempts, not_before FROM outbox WHERE channel"
                     " = $1 AND state = 'pending' AND not_before <= $2 ORDER BY"
                     " id LIMIT $3",
                     &p, sizeof(struct outbox_msg), fill_outbox, (void **)out,
                     n);
}

static enum err pl_outbox_set(struct ledger *l, int64_t id, const char *state,
                           int64_t not_before, const char *error)
{
  struct params p = {0};

  par_text(&p, state);
  par_text(&p, error);
  par_i64(&p, not_before);
  par_i64(&p, id);
  return pl_q(pl_of(l), "UPDATE outbox SET state = $1, attempts = attempts +"
                        " (CASE WHEN $2::text IS NULL THEN 0 ELSE 1 END),"
                        " not_before = $3, last_error = COALESCE($2, last_error)"
                        " WHERE id = $4", &p, NULL);
}

static enum err pl_job_log_put(struct ledger *l, int64_t id, const char *lines)
{
  struct params p = {0};

  par_i64(&p, id);
  par_text(&p, lines);
  return pl_q(pl_of(l), "INSERT INTO job_logs(job_id, lines) VALUES ($1, $2) ON CONFLICT"
                        " (job_id) DO UPDATE SET lines = job_logs.lines || excluded.lines",
              &p, NULL);
}

/* The one text value sql selects into *out (malloc'd); ERR_NOTFOUND when
 * no row. */
static enum err one_text(struct pg_ledger *s, const char *sql, const struct params *p,
                         char **out)
{
  PGresult *r;
  enum err e;

  *out = NULL;
  if ((e = pl_q(s, sql, p, &r)))
    return e;
  e = ERR_NOTFOUND;
  if (PQntuples(r) == 1) {
    *out = col_text(r, 0, 0);
    e = *out ? ERR_OK : ERR_NOMEM;
  }
  PQclear(r);
  return e;
}

static enum err pl_job_log_get(struct ledger *l, int64_t id, char **lines)
{
  struct params p = {0};

  par_i64(&p, id);
  return one_text(pl_of(l), "SELECT lines FROM job_logs WHERE job_id = $1", &p, lines);
}

static enum err pl_kv_get(struct ledger *l, const char *key, char **value)
{
  struct params p = {0};

  par_text(&p, key);
  return one_text(pl_of(l), "SELECT value FROM kv WHERE key = $1", &p, value);
}

static enum err pl_kv_set(struct ledger *l, const char *key, const char *value)
{
  struct params p = {0};

  par_text(&p, key);
  par_text(&p, value);
  return pl_q(pl_of(l), "INSERT INTO kv(key, value) VALUES ($1, $2) ON CONFLICT"
                        " (key) DO UPDATE SET value = excluded.value", &p, NULL);
}

static enum err pl_artifact_add(struct ledger *l, struct artifact *a)
{
  struct params p = {0};
  PGresult *r;
  enum err e;

  par_i64(&p, a->job_id);
  par_i64(&p, a->step);
  par_text(&p, a->name);
  par_i64(&p, a->size);
  par_text(&p, a->sha256);
  e = pl_q(pl_of(l), "INSERT INTO artifacts(job_id, step, name, size, sha256,"
                     " created_at) VALUES ($1, $2, $3, $4, $5, " NOW_MS ")"
                     " RETURNING id, created_at", &p, &r);
  if (e)
    return e;
  a->id = col_i64(r, 0, 0);
  a->created_at = col_i64(r, 0, 1);
  PQclear(r);
  return ERR_OK;
}

static void fill_artifact(const PGresult *r, int i, void *p)
{
  struct artifact *a = p;
  const char *sha = PQgetvalue(r, i, 5);

  memset(a, 0, sizeof *a);
  a->id = col_i64(r, i, 0);
  a->job_id = col_i64(r, i, 1);
  a->step = (int)col_i64(r, i, 2);
  a->name = col_text(r, i, 3);
  a->size = col_i64(r, i, 4);
  snprintf(a->sha256, sizeof a->sha256, "%s", sha ? sha : "");
  a->created_at = col_i64(r, i, 6);
}

static enum err pl_artifact_list(struct ledger *l, int64_t job_id,
                                 struct artifact **out, size_t *n)
{
  struct params p = {0};

  par_i64(&p, job_id);
  return select_rows(pl_of(l), "SELECT id, job_id, step, name, size, sha256,"
                               " created_at FROM artifacts WHERE job_id = $1"
                               " ORDER BY id",
                     &p, sizeof(struct artifact), fill_artifact, (void **)out,
                     n);
}

/* ---- model conversation and token usage ---------------------------------- */

static enum err pl_turn_put(struct ledger *l, const char *channel, int64_t chat_id,
                            int64_t user_id, const char *text, int64_t *id)
{
  struct params p = {0};
  PGresult *r;
  enum err e;

  par_text(&p, channel);
  par_i64(&p, chat_id);
  par_i64(&p, user_id);
  par_text(&p, text ? text : "");
  if ((e = pl_q(pl_of(l), "INSERT INTO chat_turns(channel, chat_id, user_id, text, at)"
                          " VALUES ($1, $2, $3, $4, " NOW_MS ") RETURNING id", &p, &r)))
    return e;
  if (id)
    *id = col_i64(r, 0, 0);
  PQclear(r);
  return ERR_OK;
}

static void fill_turn(const PGresult *r, int i, void *p)
{
  struct chat_turn *t = p;

  t->id = col_i64(r, i, 0);
  t->channel = col_text(r, i, 1);
  t->chat_id = col_i64(r, i, 2);
  t->user_id = col_i64(r, i, 3);
  t->text = col_text(r, i, 4);
  t->at = col_i64(r, i, 5);
}

static enum err pl_turn_pending(struct ledger *l, size_t max, struct chat_turn **out,
                                size_t *n)
{
  struct params p = {0};

  par_i64(&p, (int64_t)(max ? max : 20));
  return select_rows(pl_of(l), "SELECT id, channel, chat_id, user_id, text, at FROM"
                               " chat_turns WHERE state = 'pending' ORDER BY id LIMIT $1",
                     &p, sizeof(struct chat_turn), fill_turn, (void **)out, n);
}

static enum err pl_turn_done(struct ledger *l, int64_t id)
{
  struct params p = {0};

  par_i64(&p, id);
  return pl_q(pl_of(l), "UPDATE chat_turns SET state = 'done' WHERE id = $1", &p, NULL);
}

static enum err pl_usage_add(struct ledger *l, const struct llm_usage *u)
{
  struct params p = {0};

  par_text(&p, u->channel);
  par_i64(&p, u->chat_id);
  par_i64(&p, u->job_id);
  par_text(&p, u->model ? u->model : "?");
  par_i64(&p, u->prompt_tokens);
  par_i64(&p, u->completion_tokens);
  return pl_q(pl_of(l), "INSERT INTO llm_usage(channel, chat_id, job_id, model,"
                        " prompt_tokens, completion_tokens, at) VALUES ($1, $2, $3,"
                        " $4, $5, $6, " NOW_MS ")", &p, NULL);
}

static enum err pl_usage_sum(struct ledger *l, const struct usage_filter *f,
                             int64_t *prompt, int64_t *completion)
{
  struct params p = {0};
  PGresult *r;
  enum err e;

  *prompt = *completion = 0;
  par_i64(&p, f->since_ms);
  par_text(&p, f->channel);
  par_i64(&p, f->chat_id);
  par_i64(&p, f->job_id);
  if ((e = pl_q(pl_of(l), "SELECT COALESCE(SUM(prompt_tokens), 0)::bigint,"
                          " COALESCE(SUM(completion_tokens), 0)::bigint FROM llm_usage"
                          " WHERE at >= $1 AND ($2::text IS NULL OR (channel = $2 AND"
                          " chat_id = $3::bigint)) AND ($4::bigint = 0 OR job_id = $4::bigint)",
                          &p, &r)))
    return e;
  if (PQntuples(r) == 1) {
    *prompt = col_i64(r, 0, 0);
    *completion = col_i64(r, 0, 1);
  }
  PQclear(r);
  return ERR_OK;
}

/* Drains the notifications already received; how many there were. */
static int drain_notifies(struct pg_ledger *s)
{
  PGnotify *nf;
  int got = 0;

  while ((nf = PQnotifies(s->c))) {
    got++;
    PQfreemem(nf);
  }
  return got;
}


static enum err pl_wait_for_work(struct ledger *l, int timeout_ms, int *heard)
{
  struct pg_ledger *s = pl_of(l);
  struct pollfd pfd;
  int dummy, rc;
  enum err e;

  if (s->in_tx)
    return ERR_STATE;
  if (!s->listening) {
    PGresult *r;
    char sql[64];
    if ((e = pl_q(s, "SELECT " JOBS_CHANNEL, NULL, &r)))
      return e;
    snprintf(sql, sizeof sql, "LISTEN %.40s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if ((e = pl_q(s, sql, NULL, NULL)))
      return e;
    s->listening = 1;
  }
  if (!heard)
    heard = &dummy;
  if (!PQconsumeInput(s->c))
    return pl_reset(s, "wait", NULL);  /* the next call LISTENs on a working one */
  if ((*heard = drain_notifies(s)))
    return ERR_OK;
  pfd.fd = PQsocket(s->c);
  pfd.events = POLLIN;
  pfd.revents = 0;
  if (pfd.fd < 0)
    return pl_fail(s, "wait", "no connection");
  rc = poll(&pfd, 1, timeout_ms);
  if (rc < 0 && errno != EINTR)
    return pl_fail(s, "wait", strerror(errno));
  if (rc <= 0)
    return ERR_TIMEOUT;
  if (!PQconsumeInput(s->c))
    return pl_reset(s, "wait", NULL);
  *heard = drain_notifies(s);
  return *heard ? ERR_OK : ERR_TIMEOUT;
}

/* Here only claims are lazy: job_claim sets synchronous_commit off for its
 * own transaction (set_config(..., true): no extra round trip), so that
 * transaction commits asynchronously: visible at once, flushed by the WAL
 * writer within wal_writer_delay or with the next synchronous commit of any
 * session. */
static enum err pl_lazy_commits(struct ledger *l, int on)
{
  struct pg_ledger *s = pl_of(l);

  if (s->in_tx)
    return ERR_STATE;
  s->lazy_claims = on != 0;
  return ERR_OK;
}

static enum err pl_job_requeue(struct ledger *l, int64_t id, const char *owner,
                               int64_t delay_ms, const char *actor,
                               const char *reason)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  long changed = 0;
  enum err e;

  if ((e = tx_begin(s)))
    return e;
  par_i64(&p, delay_ms > 0 ? delay_ms : 0);
  par_i64(&p, id);
  par_text(&p, owner);
  e = pl_changes(s, "UPDATE jobs SET not_before = " NOW_MS " + $1 WHERE id ="
                    " $2 AND state = 'RUNNING' AND lease_owner = $3",
                 &p, &changed);
  if (e)
    return tx_end(s, e);
  if (changed != 1)
    return tx_end(s, ERR_STATE);
  e = move_state(s, id, JOB_RUNNING, JOB_QUEUED, actor, reason,
                 ", lease_owner = NULL, lease_expires = NULL");
  return tx_end(s, e);
}

/* ---- worker registry ---------------------------------------------------- */

#define WORKER_COLS                                                     \
  "id, host, pid, providers, capacity, load, state, reason, started_at," \
  " heartbeat_at, expires_at"

static void fill_worker(const PGresult *r, int i, void *p)
{
  struct worker_rec *w = p;

  memset(w, 0, sizeof *w);
  w->id = col_text(r, i, 0);
  w->host = col_text(r, i, 1);
  w->pid = col_i64(r, i, 2);
  w->providers = col_text(r, i, 3);
  w->capacity = (int)col_i64(r, i, 4);
  w->load = (int)col_i64(r, i, 5);
  w->state = col_text(r, i, 6);
  w->reason = col_text(r, i, 7);
  w->started_at = col_i64(r, i, 8);
  w->heartbeat_at = col_i64(r, i, 9);
  w->expires_at = col_i64(r, i, 10);
}

static enum err add_worker_event(struct pg_ledger *s, const char *id,
                                 const char *kind, const char *detail)
{
  struct params p = {0};

  par_text(&p, id);
  par_text(&p, kind);
  par_text(&p, detail);
  return pl_q(s, "INSERT INTO worker_events(worker_id, kind, detail, at)"
                 " VALUES ($1, $2, $3, " NOW_MS ")", &p, NULL);
}

static enum err pl_worker_register(struct ledger *l, const struct worker_rec *w,
                                   int ttl_ms)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  enum err e;

  if (!w->id || !w->host)
    return ERR_INVAL;
  if ((e = tx_begin(s)))
    return e;
  par_text(&p, w->id);
  par_text(&p, w->host);
  par_i64(&p, w->pid);
  par_text(&p, w->providers ? w->providers : "");
  par_i64(&p, w->capacity);
  par_i64(&p, ttl_ms);
  e = pl_q(s, "INSERT INTO workers(" WORKER_COLS ") VALUES ($1, $2, $3, $4,"
              " $5, 0, 'online', NULL, " NOW_MS ", " NOW_MS ", " NOW_MS " + $6)"
              " ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid ="
              " excluded.pid, providers = excluded.providers, capacity ="
              " excluded.capacity, load = 0, state = 'online', reason = NULL,"
              " started_at = excluded.started_at, heartbeat_at ="
              " excluded.heartbeat_at, expires_at = excluded.expires_at",
           &p, NULL);
  if (e == ERR_OK)
    e = add_worker_event(s, w->id, "online", w->providers);
  return tx_end(s, e);
}

static enum err pl_worker_heartbeat(struct ledger *l, const char *id, int load,
                                    int ttl_ms, int *came_back)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  PGresult *r;
  int was_offline;
  enum err e;

  *came_back = 0;
  if ((e = tx_begin(s)))
    return e;
  par_text(&p, id);
  e = pl_q(s, "SELECT state = 'offline' FROM workers WHERE id = $1 FOR UPDATE",
           &p, &r);
  if (e)
    return tx_end(s, e);
  if (PQntuples(r) != 1) {
    PQclear(r);
    return tx_end(s, ERR_NOTFOUND);
  }
  was_offline = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  par_i64(&p, load);
  par_i64(&p, ttl_ms);
  e = pl_q(s, "UPDATE workers SET load = $2, heartbeat_at = " NOW_MS ","
              " expires_at = " NOW_MS " + $3, state = 'online', reason = NULL"
              " WHERE id = $1", &p, NULL);
  if (e == ERR_OK && was_offline) {
    e = add_worker_event(s, id, "back", "heartbeats again");
    *came_back = e == ERR_OK;
  }
  return tx_end(s, e);
}

static enum err pl_worker_expire(struct ledger *l, int64_t now_ms,
                                 struct worker_rec **out, size_t *n)
{
  struct pg_ledger *s = pl_of(l);
  enum err e;

  /* The database clock decides, as it set the expiries. */
  (void)now_ms;
  *out = NULL;
  *n = 0;
  if ((e = tx_begin(s)))
    return e;
  e = select_rows(s, "UPDATE workers SET state = 'offline', reason = 'its"
                     " heartbeat expired', load = 0 WHERE state = 'online' AND"
                     " expires_at < " NOW_MS " RETURNING " WORKER_COLS,
                  NULL, sizeof(struct worker_rec), fill_worker, (void **)out, n);
  for (size_t i = 0; e == ERR_OK && i < *n; i++)
    e = add_worker_event(s, (*out)[i].id, "offline", (*out)[i].reason);
  if ((e = tx_end(s, e))) {
    worker_list_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return e;
}

static enum err pl_worker_stop(struct ledger *l, const char *id,
                               const char *reason)
{
  struct pg_ledger *s = pl_of(l);
  struct params p = {0};
  long changed = 0;
  enum err e;

  if ((e = tx_begin(s)))
    return e;
  par_text(&p, reason ? reason : "stopped");
  par_text(&p, id);
  e = pl_changes(s, "UPDATE workers SET state = 'offline', reason = $1, load ="
                    " 0 WHERE id = $2 AND state = 'online'", &p, &changed);
  if (e)
    return tx_end(s, e);
  if (changed != 1)
    return tx_end(s, ERR_NOTFOUND);
  return tx_end(s, add_worker_event(s, id, "offline", reason ? reason : "stopped"));
}

static enum err pl_worker_list(struct ledger *l, struct worker_rec **out,
                               size_t *n)
{
  return select_rows(pl_of(l), "SELECT " WORKER_COLS " FROM workers ORDER BY"
                               " (state = 'online') DESC, id",
                     NULL, sizeof(struct worker_rec), fill_worker, (void **)out,
                     n);
}

static void fill_worker_event(const PGresult *r, int i, void *p)
{
  struct worker_event *ev = p;

  memset(ev, 0, sizeof *ev);
  ev->id = col_i64(r, i, 0);
  ev->worker_id = col_text(r, i, 1);
  ev->kind = col_text(r, i, 2);
  ev->detail = col_text(r, i, 3);
  ev->at = col_i64(r, i, 4);
}

static enum err pl_worker_events(struct ledger *l, size_t max,
                                 struct worker_event **out, size_t *n)
{
  struct params p = {0};

  par_i64(&p, (int64_t)max);
  return select_rows(pl_of(l), "SELECT id, worker_id, kind, detail, at FROM"
                               " (SELECT * FROM worker_events ORDER BY id DESC"
                               " LIMIT $1) e ORDER BY id",
                     &p, sizeof(struct worker_event), fill_worker_event,
                     (void **)out, n);
}

/* ---- named locks -------------------------------------------------------- */

static enum err pl_lock_acquire(struct ledger *l, const char *name,
                                const char *owner, int ttl_ms)
{
  struct params p = {0};
  long changed = 0;
  enum err e;

  par_text(&p, name);
  par_text(&p, owner);
  par_i64(&p, ttl_ms);
  e = pl_changes(pl_of(l),
                 "INSERT INTO locks(name, owner, expires_at) VALUES ($1, $2, "
                 NOW_MS " + $3) ON CONFLICT (name) DO UPDATE SET owner ="
                 " excluded.owner, expires_at = excluded.expires_at WHERE"
                 " locks.owner = excluded.owner OR locks.expires_at < " NOW_MS,
                 &p, &changed);
  if (e)
    return e;
  return changed == 1 ? ERR_OK : ERR_BUSY;
}

static enum err pl_lock_release(struct ledger *l, const char *name,
                                const char *owner)
{
  struct params p = {0};
  long changed = 0;
  enum err e;

  par_text(&p, name);
  par_text(&p, owner);
  e = pl_changes(pl_of(l), "DELETE FROM locks WHERE name = $1 AND owner = $2",
                 &p, &changed);
  if (e)
    return e;
  return changed == 1 ? ERR_OK : ERR_NOTFOUND;
}

const struct ledger_ops ledger_pg_ops = {
  .name = "postgresql",
  .close = pl_close,
  .migrate = pl_migrate,
  .schema_version = pl_schema_version,
  .begin = pl_begin,
  .commit = pl_commit,
  .rollback = pl_rollback,
  .job_create = pl_job_create,
  .job_create_routed = pl_job_create_routed,
  .job_get = pl_job_get,
  .job_list = pl_job_list,
  .job_set_plan = pl_job_set_plan,
  .job_transition = pl_job_transition,
  .job_claim = pl_job_claim,
  .job_claim_some = pl_job_claim_some,
  .job_heartbeat = pl_job_heartbeat,
  .job_finish = pl_job_finish,
  .job_finish_notice = pl_job_finish_notice,
  .job_log_put = pl_job_log_put,
  .job_log_get = pl_job_log_get,
  .job_request_cancel = pl_job_request_cancel,
  .job_expired = pl_job_expired,
  .job_transitions = pl_job_transitions,
  .step_record = pl_step_record,
  .step_list = pl_step_list,
  .msg_append = pl_msg_append,
  .msg_recent = pl_msg_recent,
  .outbox_put = pl_outbox_put,
  .outbox_pending = pl_outbox_pending,
  .outbox_done = ledger_outbox_done,
  .outbox_retry = ledger_outbox_retry,
  .outbox_fail = ledger_outbox_fail,
  .outbox_set = pl_outbox_set,
  .kv_get = pl_kv_get,
  .kv_set = pl_kv_set,
  .artifact_add = pl_artifact_add,
  .artifact_list = pl_artifact_list,
  .turn_put = pl_turn_put,
  .turn_pending = pl_turn_pending,
  .turn_done = pl_turn_done,
  .usage_add = pl_usage_add,
  .usage_sum = pl_usage_sum,
  .wait_for_work = pl_wait_for_work,
  .lazy_commits = pl_lazy_commits,
  .job_requeue = pl_job_requeue,
  .worker_register = pl_worker_register,
  .worker_heartbeat = pl_worker_heartbeat,
  .worker_expire = pl_worker_expire,
  .worker_stop = pl_worker_stop,
  .worker_list = pl_worker_list,
  .worker_events = pl_worker_events,
  .lock_acquire = pl_lock_acquire,
  .lock_release = pl_lock_release,
};

static void quiet_notice(void *arg, const char *msg)
{
  (void)arg;
  (void)msg;
}

enum err ledger_pg_open(const char *url, struct ledger **out, char *errbuf,
                        size_t errlen)
{
  if (pq_dl_load(errbuf, errlen))   /* libpq is loaded on first use */
    return ERR_UNAVAILABLE;
  struct pg_ledger *s = calloc(1, sizeof *s);
  char *red;

  *out = NULL;
  if (!s)
    return ERR_NOMEM;
  s->base.ops = &ledger_pg_ops;
  s->c = PQconnectdb(url);
  if (!s->c || PQstatus(s->c) != CONNECTION_OK) {
    red = log_redact(s->c ? PQerrorMessage(s->c) : "out of memory");
    snprintf(errbuf, errlen, "cannot connect to postgresql: %s",
             red ? red : "?");
    free(red);
    red = strchr(errbuf, '\n');
    if (red)
      *red = '\0';
    PQfinish(s->c);
    free(s);
    return ERR_DB;
  }
  /* "relation already exists, skipping" and friends are not news. */
  PQsetNoticeProcessor(s->c, quiet_notice, NULL);
  session_setup(s);
  *out = &s->base;
  return ERR_OK;
}
