/* PostgreSQL-only ledger behaviour: processes racing for claims, LISTEN/NOTIFY
 * wake-ups, and surviving a killed connection.  Needs SKYNET_TEST_PG_URL
 * (tests/run.sh starts a server); skips without it, fails under CI=true. */
#include <libpq-fe.h>
#include <pthread.h>
#include <sys/wait.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"

#define TAG "ledger_pg"

static char g_url[1400];

static struct ledger *open_l(void)
{
  return tu_ledger_open(g_url);
}

static int64_t queued_job(struct ledger *l, const char *text)
{
  struct job j = {0};

  j.channel = "pgtest";
  j.chat_id = 1;
  j.text = (char *)text;
  if (l->ops->job_create(l, &j, "test") ||
      l->ops->job_transition(l, j.id, JOB_CREATED, JOB_PLANNED, "t", NULL) ||
      l->ops->job_transition(l, j.id, JOB_PLANNED, JOB_QUEUED, "t", NULL))
    return 0;
  return j.id;
}

/* A child process: claims and finishes until the queue is empty, writing
 * each claimed id to fd. */
static int claim_all(int fd, int who)
{
  struct ledger *l = open_l();
  char owner[32];
  struct job j;

  if (!l)
    return 1;
  snprintf(owner, sizeof owner, "proc%d", who);
  while (l->ops->job_claim(l, owner, 5000, 0, &j) == ERR_OK) {
    int64_t id = j.id;
    if (write(fd, &id, sizeof id) != (ssize_t)sizeof id)
      return 1;
    l->ops->job_finish(l, j.id, owner, JOB_SUCCEEDED, 0, "", NULL, NULL);
    job_release(&j);
  }
  ledger_close(l);
  return 0;
}

TEST(processes_race_and_claim_each_job_once)
{
  enum { NPROC = 4, NJOBS = 200 };
  struct ledger *l = open_l();
  static unsigned char seen[NJOBS];
  int64_t first = 0, id;
  pid_t pids[NPROC];
  int fds[2], dup = 0, total = 0, status;

  ASSERT(l);
  memset(seen, 0, sizeof seen);
  for (int i = 0; i < NJOBS; i++) {
    ASSERT((id = queued_job(l, "race")));
    if (!first)
      first = id;
  }
  /* Children must not share (and later tear down) the parent's connection. */
  ledger_close(l);
  ASSERT(pipe(fds) == 0);
  for (int i = 0; i < NPROC; i++) {
    pids[i] = fork();
    ASSERT(pids[i] >= 0);
    if (pids[i] == 0) {
      close(fds[0]);
      _exit(claim_all(fds[1], i));
    }
  }
  close(fds[1]);
  while (read(fds[0], &id, sizeof id) == (ssize_t)sizeof id) {
    ASSERT(id >= first && id < first + NJOBS);
    dup += seen[id - first]++ != 0;
    total++;
  }
  close(fds[0]);
  for (int i = 0; i < NPROC; i++) {
    ASSERT(waitpid(pids[i], &status, 0) == pids[i]);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  ASSERT_EQ(dup, 0);
  ASSERT_EQ(total, NJOBS);
}

struct waiter {
  long long woke_at;
  enum err e;
  int ready;
  pthread_mutex_t mu;
};

static void *wait_thread(void *arg)
{
  struct waiter *w = arg;
  struct ledger *l = open_l();

  if (!l) {
    w->e = ERR_DB;
    return NULL;
  }
  /* The first call issues LISTEN and may find nothing: then we are armed. */
  l->ops->wait_for_work(l, 0, NULL);
  pthread_mutex_lock(&w->mu);
  w->ready = 1;
  pthread_mutex_unlock(&w->mu);
  /* Spurious wake-ups are allowed: wait until a claim succeeds. */
  w->e = ERR_TIMEOUT;
  for (long long end = tu_now_ms() + 5000; tu_now_ms() < end;) {
    struct job j;
    if (l->ops->job_claim(l, "waiter", 5000, 0, &j) == ERR_OK) {
      w->woke_at = tu_now_ms();
      w->e = ERR_OK;
      job_release(&j);
      break;
    }
    l->ops->wait_for_work(l, 1000, NULL);
  }
  ledger_close(l);
  return NULL;
}

TEST(notify_wakes_an_idle_worker_fast)
{
  struct ledger *l = open_l();
  struct waiter w = {0, ERR_OK, 0, PTHREAD_MUTEX_INITIALIZER};
  pthread_t t;
  long long queued_at;
  int ready = 0;

  ASSERT(l);
  ASSERT(l->ops->wait_for_work);
  pthread_create(&t, NULL, wait_thread, &w);
  for (int i = 0; i < 500 && !ready; i++) {
    tu_sleep_ms(10);
    pthread_mutex_lock(&w.mu);
    ready = w.ready;
    pthread_mutex_unlock(&w.mu);
  }
  tu_sleep_ms(50);
  queued_at = tu_now_ms();
  ASSERT(queued_job(l, "wake"));
  pthread_join(t, NULL);
  ASSERT_EQ(w.e, ERR_OK);
  fprintf(stderr, "  claimed %lld ms after queueing began\n",
          w.woke_at - queued_at);
  /* Polling would be up to the 1 s wait; a wake-up is milliseconds. */
  ASSERT(w.woke_at - queued_at < 500);
  ledger_close(l);
}

/* wait_for_work counts what it heard: a notification per job queued, also
 * when one transaction queues several (the bell's tickets); and only this
 * schema's (other test programs queue jobs in theirs meanwhile). */
TEST(notifications_are_counted_per_job)
{
  struct ledger *w = open_l(), *q = open_l();
  int heard = 0, total = 0;

  ASSERT(w && q);
  w->ops->wait_for_work(w, 0, &heard);      /* listening from now on */
  ASSERT(queued_job(q, "count-1"));
  ASSERT(queued_job(q, "count-2"));
  ASSERT_EQ(q->ops->begin(q), ERR_OK);
  ASSERT(queued_job(q, "count-3"));
  ASSERT(queued_job(q, "count-4"));
  ASSERT_EQ(q->ops->commit(q), ERR_OK);
  for (long long end = tu_now_ms() + 3000; total < 4 && tu_now_ms() < end;)
    if (w->ops->wait_for_work(w, 100, &heard) == ERR_OK)
      total += heard;
  ASSERT_EQ(total, 4);
  ASSERT_EQ(w->ops->wait_for_work(w, 200, &heard), ERR_TIMEOUT);
  /* Another schema's jobs are not heard here. */
  char other_url[1400];
  struct ledger *o = NULL;
  ASSERT_EQ(tpg_schema_url(getenv("SKYNET_TEST_PG_URL"), "ledger_pg_other", other_url,
                           sizeof other_url), 0);
  ASSERT((o = tu_ledger_open(other_url)) != NULL);
  ASSERT(queued_job(o, "elsewhere"));
  ASSERT_EQ(w->ops->wait_for_work(w, 300, &heard), ERR_TIMEOUT);
  ledger_close(o);
  tpg_schema_drop(getenv("SKYNET_TEST_PG_URL"), "ledger_pg_other");
  ledger_close(w);
  ledger_close(q);
}

/* Kills the backend serving `victim` from another connection. */
static int kill_backend(struct ledger *victim_owner_view, int pid)
{
  char sql[96];
  PGconn *c = PQconnectdb(g_url);
  PGresult *r;
  int ok;

  (void)victim_owner_view;
  snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
  r = PQexec(c, sql);
  ok = PQresultStatus(r) == PGRES_TUPLES_OK &&
       strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  PQfinish(c);
  return ok ? 0 : -1;
}

/* The backend pid of a ledger connection, found by a marker kv write. */
static int backend_pid(const char *app_marker)
{
  char sql[256];
  PGconn *c = PQconnectdb(g_url);
  PGresult *r;
  int pid = 0;

  snprintf(sql, sizeof sql, "SELECT pid FROM pg_stat_activity WHERE"
                            " application_name = '%s'", app_marker);
  r = PQexec(c, sql);
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    pid = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  PQfinish(c);
  return pid;
}

TEST(killed_connection_is_reconnected)
{
  char url[1400], save[1400], app[64], *val = NULL;
  struct ledger *l;
  int pid;

  snprintf(app, sizeof app, "skynet_victim_%ld", (long)getpid());
  snprintf(save, sizeof save, "%s", g_url);
  snprintf(url, sizeof url, "%.1200s&application_name=%s", save, app);
  memcpy(g_url, url, sizeof g_url);
  l = open_l();
  memcpy(g_url, save, sizeof g_url);
  ASSERT(l);
  ASSERT_EQ(l->ops->kv_set(l, "reconnect", "before"), ERR_OK);
  ASSERT((pid = backend_pid(app)) > 0);
  ASSERT_EQ(kill_backend(l, pid), 0);
  tu_sleep_ms(50);
  /* Outside a transaction the next operation reconnects and succeeds. */
  ASSERT_EQ(l->ops->kv_set(l, "reconnect", "after"), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "reconnect", &val), ERR_OK);
  ASSERT_STREQ(val, "after");
  free(val);
  ASSERT(backend_pid(app) != pid);
  /* Inside one the error is reported, at the latest by the next statement
   * read (a write nobody reads waits for it in the pipeline): the
   * transaction died with it, and nothing of it lands on the new
   * connection. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(kill_backend(l, backend_pid(app)), 0);
  tu_sleep_ms(50);
  l->ops->kv_set(l, "reconnect", "lost");
  ASSERT_EQ(l->ops->kv_get(l, "reconnect", &val), ERR_DB);
  ASSERT_EQ(l->ops->kv_set(l, "reconnect", "autocommitted"), ERR_DB);
  ASSERT_EQ(l->ops->commit(l), ERR_DB);
  /* The same with the commit as the first round trip. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(kill_backend(l, backend_pid(app)), 0);
  tu_sleep_ms(50);
  l->ops->kv_set(l, "reconnect", "lost at commit");
  ASSERT_EQ(l->ops->commit(l), ERR_DB);
  /* A COMMIT alone in its round trip: not tried again on the new
   * connection, where it would succeed with nothing to commit. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "reconnect", &val), ERR_OK);
  free(val);
  val = NULL;
  ASSERT_EQ(kill_backend(l, backend_pid(app)), 0);
  tu_sleep_ms(50);
  ASSERT_EQ(l->ops->commit(l), ERR_DB);
  ASSERT_EQ(l->ops->kv_get(l, "reconnect", &val), ERR_OK);
  ASSERT_STREQ(val, "after");
  free(val);
  ledger_close(l);
}

/* ledger_after_tx: 1 when the transaction ended without committing, 2
 * when it committed. */
static void tx_ended(void *arg, struct ledger *l, int committed)
{
  (void)l;
  *(int *)arg = committed ? 2 : 1;
}

/* Writes whose result nobody reads go with the next round trip: a failing
 * one is reported by that statement or by the commit, which then rolls the
 * whole transaction back and leaves the connection usable. */
TEST(queued_writes_go_with_the_next_round_trip)
{
  struct ledger *l = open_l(), *other = open_l();
  int ended = 0;
  struct job_step_rec rec = {0};
  struct outbox_msg m = {0};
  char key[32], *val = NULL;
  int64_t id;

  ASSERT(l && other);
  ASSERT((id = queued_job(l, "piped")) > 0);
  rec.idx = 0;
  rec.state = "SUCCEEDED";
  rec.has_exit_code = 1;
  /* Three queued writes, then a read in the same transaction sees them. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "piped", "a"), ERR_OK);
  ASSERT_EQ(l->ops->step_record(l, id, &rec), ERR_OK);
  m.channel = "pgtest";
  m.chat_id = 1;
  m.job_id = id;
  m.text = "piped notice";
  ASSERT_EQ(ledger_outbox_put(l, &m, NULL), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "piped", &val), ERR_OK);
  ASSERT_STREQ(val, "a");
  free(val);
  val = NULL;
  ASSERT_EQ(l->ops->kv_set(l, "piped", "b"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(other->ops->kv_get(other, "piped", &val), ERR_OK);
  ASSERT_STREQ(val, "b");
  free(val);
  val = NULL;
  struct job_step_rec *steps = NULL;
  size_t n = 0;
  ASSERT_EQ(other->ops->step_list(other, id, &steps, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  job_step_list_free(steps, n);
  /* A queued write that fails (no such job) is not reported when queued,
   * but by the commit: nothing of the transaction lands. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(ledger_after_tx(l, tx_ended, &ended), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "piped", "c"), ERR_OK);
  ASSERT_EQ(l->ops->step_record(l, 987654321, &rec), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "piped", "d"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_DB);
  ASSERT_CONTAINS(l->errmsg, "foreign key");
  ASSERT_EQ(ended, 1);          /* told: not committed */
  ASSERT_EQ(other->ops->kv_get(other, "piped", &val), ERR_OK);
  ASSERT_STREQ(val, "b");
  free(val);
  val = NULL;
  /* ... or by the next statement read; then the rollback. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->step_record(l, 987654321, &rec), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "piped", &val), ERR_DB);
  ASSERT_EQ(l->ops->rollback(l), ERR_OK);
  /* A failed write queued alone, rolled back unread. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->step_record(l, 987654321, &rec), ERR_OK);
  ASSERT_EQ(l->ops->rollback(l), ERR_OK);
  /* The connection works after each, and many queued writes (more than
   * are kept before sending) all land. */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  for (int i = 0; i < 300; i++) {
    snprintf(key, sizeof key, "piped%d", i);
    ASSERT_EQ(l->ops->kv_set(l, key, "many"), ERR_OK);
  }
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  for (int i = 0; i < 300; i += 299) {
    snprintf(key, sizeof key, "piped%d", i);
    ASSERT_EQ(other->ops->kv_get(other, key, &val), ERR_OK);
    ASSERT_STREQ(val, "many");
    free(val);
    val = NULL;
  }
  ledger_close(l);
  ledger_close(other);
}

TEST(password_is_not_in_connection_errors)
{
  struct ledger *l;
  char err[512];

  log_add_secret("hunter2secret");
  ASSERT_EQ(ledger_open("postgresql://bob:hunter2secret@127.0.0.1:1/x"
                        "?connect_timeout=2", &l, err, sizeof err), ERR_DB);
  ASSERT_CONTAINS(err, "cannot connect");
  ASSERT(!strstr(err, "hunter2secret"));
  log_clear_secrets();
}

TEST(leases_use_the_database_clock)
{
  struct ledger *l = open_l();
  struct job j, *v;
  size_t n;
  int64_t id;
  int found = 0;

  ASSERT(l);
  ASSERT((id = queued_job(l, "clock")));
  ASSERT_EQ(l->ops->job_claim(l, "clk", 60000, id, &j), ERR_OK);
  job_release(&j);
  /* A caller whose clock runs an hour ahead cannot expire a live lease. */
  ASSERT_EQ(l->ops->job_expired(l, ledger_now_ms() + 3600000, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    found |= v[i].id == id;
  job_list_free(v, n);
  ASSERT(!found);
  ledger_close(l);
}

/* Statements first used inside a transaction are prepared in its pipeline
 * (queued before them).  When a statement before them fails, the server
 * skips the rest, preparations included: the session must not take them
 * for done (the next use would fail: "prepared statement does not
 * exist"). */
TEST(a_failed_pipeline_forgets_what_it_prepared)
{
  struct ledger *l = open_l();
  char *v = NULL;

  ASSERT(l);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->job_log_put(l, 987654321, "no such job\n"), ERR_OK);   /* waits */
  ASSERT_EQ(l->ops->kv_set(l, "pipeline", "skipped"), ERR_OK);        /* prepared after it */
  ASSERT_EQ(l->ops->commit(l), ERR_DB);
  l->ops->rollback(l);
  ASSERT_EQ(l->ops->kv_set(l, "pipeline", "set"), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "pipeline", &v), ERR_OK);
  ASSERT_STREQ(v, "set");
  free(v);
  /* and one prepared in a pipeline that went well is used again */
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "pipeline", "first"), ERR_OK);
  ASSERT_EQ(l->ops->job_log_put(l, queued_job(l, "p"), "a\n"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->begin(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_set(l, "pipeline", "second"), ERR_OK);
  ASSERT_EQ(l->ops->commit(l), ERR_OK);
  ASSERT_EQ(l->ops->kv_get(l, "pipeline", &v), ERR_OK);
  ASSERT_STREQ(v, "second");
  free(v);
  ledger_close(l);
}

/* A ledger on g_url with one more server setting (escaped, "-c%20x%3Dy"),
 * added to the options that end g_url (they set the schema). */
static struct ledger *open_with(const char *setting)
{
  char url[1600];

  if (!strstr(g_url, "options="))
    return NULL;
  snprintf(url, sizeof url, "%s%%20%s", g_url, setting);
  return tu_ledger_open(url);
}

/* How long (ms) another session waits for the row of job id that a (in a
 * transaction it then leaves idle) has changed; -1 if it gave up (after
 * 45 s: lock_timeout) or failed. */
static long long wait_behind_idle_tx(struct ledger *a, int64_t id)
{
  struct ledger *b = open_with("-c%20lock_timeout%3D45000");
  long long t0;
  char *v = NULL;
  enum err e;

  if (!b || a->ops->begin(a) ||
      a->ops->job_transition(a, id, JOB_QUEUED, JOB_CANCELLED, "a", NULL) ||
      a->ops->kv_get(a, "nothing", &v) != ERR_NOTFOUND) {   /* the row is locked now */
    ledger_close(b);
    return -1;
  }
  t0 = tu_now_ms();
  e = b->ops->job_transition(b, id, JOB_QUEUED, JOB_CANCELLED, "b", NULL);
  ledger_close(b);
  return e ? -1 : tu_now_ms() - t0;
}

/* A process cut off from the network in the middle of a transaction would
 * hold its row locks as long as its dead connection lasts (behind a NAT or
 * a proxy, for ever): the server ends a session idle in a transaction after
 * 30 s, unless the URL (or the server) sets a limit of its own.  The lost
 * transaction is reported, and the ledger goes on on a new session. */
TEST(a_session_idle_in_a_transaction_lets_go_of_its_locks)
{
  struct ledger *a = open_l(), *quick = open_with("-c%20idle_in_transaction_session_timeout%3D500");
  char *v = NULL;
  long long ms;
  int64_t id;

  ASSERT(a && quick);
  ASSERT((id = queued_job(a, "idle tx")));
  ms = wait_behind_idle_tx(quick, id);
  fprintf(stderr, "  behind a session whose URL sets 500 ms: %lld ms\n", ms);
  ASSERT(ms >= 300 && ms < 5000);
  ASSERT_EQ(quick->ops->commit(quick), ERR_DB);
  ASSERT_EQ(quick->ops->kv_get(quick, "nothing", &v), ERR_NOTFOUND);
  ASSERT((id = queued_job(a, "idle tx 2")));
  ms = wait_behind_idle_tx(a, id);
  fprintf(stderr, "  behind a session with the ledger's limit: %lld ms\n", ms);
  ASSERT(ms >= 28000 && ms < 36000);
  ASSERT_EQ(a->ops->commit(a), ERR_DB);
  ASSERT_EQ(a->ops->kv_set(a, "idle", "again"), ERR_OK);
  ledger_close(quick);
  ledger_close(a);
}

int main(void)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");

  log_setup(LOGL_ERROR, 0, NULL);
  if (!pg || !*pg)
    return tpg_missing_is_failure("postgresql ledger tests") ? 1 : 0;
  if (tpg_schema_url(pg, TAG, g_url, 1200))
    return 1;
  RUN(processes_race_and_claim_each_job_once);
  RUN(notify_wakes_an_idle_worker_fast);
  RUN(notifications_are_counted_per_job);
  RUN(killed_connection_is_reconnected);
  RUN(queued_writes_go_with_the_next_round_trip);
  RUN(password_is_not_in_connection_errors);
  RUN(leases_use_the_database_clock);
  RUN(a_failed_pipeline_forgets_what_it_prepared);
  RUN(a_session_idle_in_a_transaction_lets_go_of_its_locks);
  tpg_schema_drop(pg, TAG);
  return test_summary();
}
