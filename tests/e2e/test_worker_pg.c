/* End to end on PostgreSQL with real `skynet` processes sharing one ledger:
 * - `skynet run` with no workers of its own takes a task, a separate
 *   `skynet worker` runs it and the agent reports the result;
 * - kill -9 of a worker mid-step: its idempotent job runs again elsewhere,
 *   the one that changes things ends FAILED (never runs twice), the users
 *   are told and the admins alerted that the worker is offline;
 * - a worker frozen (SIGSTOP) past its lease, as if cut off: its job is
 *   reclaimed after the lease by the other worker, the admins hear it went
 *   offline and, after SIGCONT, that it is back; the job finishes once;
 * - PostgreSQL stopped and started during a run: every process survives,
 *   no job is lost, no step that changes things runs twice, and work queued
 *   afterwards still runs;
 * - prefetching: a worker that claimed several jobs at once is killed -9;
 *   every job it held is taken back, the ones that never started run once
 *   (even one that is not idempotent), the ones that did run again;
 * - many quick jobs on two worker processes (prefetching, group commits):
 *   each ends once, claimed once, with one result message.
 * Jobs are queued straight into the ledger with ready plans (mock and
 * local providers).  Needs SKYNET_TEST_PG_URL (tests/run.sh starts a
 * server; SKYNET_TEST_PG_CTL for the restart); skips without it, fails
 * under CI=true. */
#include <signal.h>
#include <sys/wait.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "engine/log.h"
#include "proc.h"

#define TAG "worker_pg"
#define LEASE_MS 2000

static char g_dir[512], g_url[1300], g_env_home[600], g_env_db[1400], g_env_conf[700];

static char *const g_env_run[] = {
  g_env_home, g_env_db, g_env_conf, "TELEGRAM_BOT_TOKEN=",
  "GEMINI_API_KEY=", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline",
  "SKYNET_LOG=warn", "SKYNET_WORKERS=0", NULL,
};

static char *const g_env_worker[] = {
  g_env_home, g_env_db, g_env_conf, "TELEGRAM_BOT_TOKEN=",
  "GEMINI_API_KEY=", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline",
  "SKYNET_LOG=error", "SKYNET_WORKERS=2", NULL,
};

TEST(separate_worker_runs_the_agents_task)
{
  char *run_argv[] = {SKYNET_BIN, "run", NULL};
  char *worker_argv[] = {SKYNET_BIN, "worker", NULL};
  struct proc agent, worker;

  ASSERT(proc_start(&worker, worker_argv, g_env_worker) == 0);
  if (proc_start(&agent, run_argv, g_env_run)) {
    proc_kill9(&worker);
    proc_release(&worker);
    ASSERT(0);
  }
  proc_send(&agent, "/task df -h");
  int queued = proc_expect(&agent, "#1 QUEUED", 15000);
  int done = queued && proc_expect(&agent, "#1 SUCCEEDED", 15000);
  proc_send(&agent, "/providers");
  int listed = proc_expect(&agent, "Workers:", 10000) && proc_expect(&agent, " online ", 5000);
  kill(worker.pid, SIGTERM);
  int wrc = proc_finish(&worker, 15000);
  int arc = proc_finish(&agent, 15000);
  proc_release(&worker);
  proc_release(&agent);
  ASSERT(queued);
  ASSERT(done);
  ASSERT(listed);
  ASSERT_EQ(wrc, 0);
  ASSERT_EQ(arc, 0);
}

/* ---- helpers ------------------------------------------------------------ */

static struct proc g_w[2];
static int g_nw;

static int start_worker(struct proc *p)
{
  char *argv[] = {SKYNET_BIN, "worker", NULL};

  return proc_start(p, argv, g_env_worker);
}

static void pump_workers(void)
{
  for (int i = 0; i < g_nw; i++)
    if (g_w[i].pid > 0)
      proc_pump(&g_w[i], 0);
}

static void nap(int ms)
{
  long long until = proc_ms() + ms;

  while (proc_ms() < until) {
    pump_workers();
    tu_sleep_ms(20);
  }
}


/* Waits for the job to reach `want` (or, with want == JOB_CREATED, any
 * final state); fills *out when it did. */
static int wait_job(struct ledger *l, int64_t id, enum job_state want, int ms,
                    struct job *out)
{
  long long until = proc_ms() + ms;

  memset(out, 0, sizeof *out);
  while (proc_ms() < until) {
    if (l->ops->job_get(l, id, out) == ERR_OK) {
      if (want == JOB_CREATED ? job_state_terminal(out->state) : out->state == want)
        return 1;
      job_release(out);
    }
    nap(50);
  }
  fprintf(stderr, "job #%lld did not reach %s in %d ms\n", (long long)id,
          want == JOB_CREATED ? "a final state" : job_state_name(want), ms);
  return 0;
}

/* Whether a message with `needle` is in the outbox of `channel`. */
static int outbox_has(struct ledger *l, const char *channel, int64_t job_id,
                      const char *needle)
{
  struct outbox_msg *v = NULL;
  size_t n = 0;
  int found = 0;

  if (l->ops->outbox_pending(l, channel, ledger_now_ms() + 1000, 10000, &v, &n))
    return 0;
  for (size_t i = 0; i < n; i++)
    found |= (!job_id || v[i].job_id == job_id) && strstr(v[i].text, needle) != NULL;
  outbox_list_free(v, n);
  return found;
}

static int wait_outbox(struct ledger *l, const char *channel, int64_t job_id,
                       const char *needle, int ms)
{
  long long until = proc_ms() + ms;

  while (proc_ms() < until) {
    if (outbox_has(l, channel, job_id, needle))
      return 1;
    nap(100);
  }
  fprintf(stderr, "no '%s' in the %s outbox after %d ms\n", needle, channel, ms);
  return 0;
}

static int count_in_file(const char *path, const char *line)
{
  char buf[256];
  int n = 0;
  FILE *f = fopen(path, "r");

  if (!f)
    return 0;
  while (fgets(buf, sizeof buf, f)) {
    buf[strcspn(buf, "\n")] = '\0';
    n += strcmp(buf, line) == 0;
  }
  fclose(f);
  return n;
}

static void worker_id(const struct proc *p, char *out, size_t n)
{
  char host[200];

  gethostname(host, sizeof host);
  host[sizeof host - 1] = '\0';
  snprintf(out, n, "%.60s:%ld", host, (long)p->pid);
}

static int stop_workers(void)
{
  int bad = 0;

  for (int i = 0; i < g_nw; i++) {
    kill(g_w[i].pid, SIGCONT);
    kill(g_w[i].pid, SIGTERM);
    bad |= proc_finish(&g_w[i], 20000) != 0;
    proc_release(&g_w[i]);
  }
  g_nw = 0;
  return bad;
}

static void mock_plan(char *out, size_t n, int ms, int idempotent)
{
  snprintf(out, n, "{\"steps\":[{\"action\":\"shell\",\"provider\":\"mock\",\"idempotent\":%s,"
           "\"args\":{\"argv\":[\"mock\",\"sleep\",\"%d\"]}}],\"risk\":\"WRITE\"}",
           idempotent ? "true" : "false", ms);
}

/* A step that changes things: appends `tag` to side.txt once per run. */
static void side_plan(char *out, size_t n, const char *tag, double secs)
{
  snprintf(out, n, "{\"steps\":[{\"action\":\"shell\",\"idempotent\":false,\"args\":{\"argv\":"
           "[\"sh\",\"-c\",\"echo %s >> %s/side.txt; sleep %.1f\"]}}],\"risk\":\"WRITE\"}",
           tag, g_dir, secs);
}

/* As side_plan, but idempotent: may run again after a crash. */
static void side_plan_idem(char *out, size_t n, const char *tag, double secs, int idempotent)
{
  snprintf(out, n, "{\"steps\":[{\"action\":\"shell\",\"idempotent\":%s,\"args\":{"
           "\"argv\":[\"sh\",\"-c\",\"echo %s >> %s/side.txt; sleep %.1f\"]}}],"
           "\"risk\":\"WRITE\"}", idempotent ? "true" : "false", tag, g_dir, secs);
}

/* n jobs of plan queued in one transaction: one claim can see them all. */
static int enqueue_together(struct ledger *l, const char *plan, int64_t *ids, int n)
{
  if (l->ops->begin(l))
    return -1;
  for (int i = 0; i < n; i++)
    if (!(ids[i] = tu_enqueue(l, plan))) {
      l->ops->rollback(l);
      return -1;
    }
  return l->ops->commit(l) ? -1 : 0;
}

/* Quick jobs in a row make a worker claim several at once. */
static int warm_up(struct ledger *l)
{
  char plan[512];
  int64_t ids[4];
  struct job j;
  int ok;

  mock_plan(plan, sizeof plan, 0, 1);
  ok = enqueue_together(l, plan, ids, 4) == 0;
  for (int i = 0; ok && i < 4; i++) {
    ok = wait_job(l, ids[i], JOB_SUCCEEDED, 15000, &j);
    job_release(&j);
  }
  return ok;
}

/* ---- crashes and outages ------------------------------------------------- */

TEST(kill9_of_a_worker_mid_step)
{
  struct ledger *l = tu_ledger_open(g_url);
  char plan[1024], wid[128], needle[200], side[600];
  struct job a, b;
  int64_t ia, ib;
  int ok;

  ASSERT(l);
  ASSERT(start_worker(&g_w[0]) == 0);
  g_nw = 1;
  worker_id(&g_w[0], wid, sizeof wid);
  mock_plan(plan, sizeof plan, 5000, 1);
  ia = tu_enqueue(l, plan);
  side_plan(plan, sizeof plan, "kill9", 5);
  ib = tu_enqueue(l, plan);
  ASSERT(ia && ib);
  ok = wait_job(l, ia, JOB_RUNNING, 10000, &a) && wait_job(l, ib, JOB_RUNNING, 10000, &b);
  if (ok) {
    ok = strncmp(a.lease_owner, wid, strlen(wid)) == 0 && strncmp(b.lease_owner, wid, strlen(wid)) == 0;
    job_release(&a);
    job_release(&b);
  }
  /* the step that changes things has run: now the worker dies */
  snprintf(side, sizeof side, "%s/side.txt", g_dir);
  for (int i = 0; ok && i < 100 && count_in_file(side, "kill9") == 0; i++)
    nap(50);
  proc_kill9(&g_w[0]);
  proc_release(&g_w[0]);
  g_nw = 0;
  ASSERT(ok);
  ASSERT(start_worker(&g_w[0]) == 0);
  g_nw = 1;
  ASSERT(wait_job(l, ia, JOB_SUCCEEDED, 30000, &a));
  ASSERT_EQ(a.attempts, 2);
  job_release(&a);
  ASSERT(wait_job(l, ib, JOB_CREATED, 30000, &b));
  ASSERT_EQ(b.state, JOB_FAILED);
  ASSERT_CONTAINS(b.reason, "not run twice");
  job_release(&b);
  ASSERT_EQ(count_in_file(side, "kill9"), 1);
  /* the users are told; the admins hear of the worker, once */
  ASSERT(outbox_has(l, "e2e", ia, "retry 2 of 3"));
  ASSERT(outbox_has(l, "e2e", ib, "FAILED"));
  snprintf(needle, sizeof needle, "worker %s is offline", wid);
  ASSERT(wait_outbox(l, "console", 0, needle, 20000));
  ASSERT_EQ(stop_workers(), 0);
  ledger_close(l);
}

#define HELD 6

/* One worker (2 slots) claims all six jobs at once: two run, four wait in
 * the process.  kill -9: all six are taken back.  The two that ran run
 * again (idempotent); the four that never started run once, including one
 * that is not idempotent (it has no start record, so it cannot have run). */
TEST(kill9_after_prefetching_reclaims_every_held_job)
{
  struct ledger *l = tu_ledger_open(g_url);
  char plan[1024], wid[128], side[600], tag[16];
  int64_t ids[HELD];
  struct job j;
  int ok, held = 0;

  ASSERT(l);
  ASSERT(start_worker(&g_w[0]) == 0);
  g_nw = 1;
  worker_id(&g_w[0], wid, sizeof wid);
  ASSERT(warm_up(l));
  ASSERT(l->ops->begin(l) == ERR_OK);
  for (int i = 0; i < HELD; i++) {
    snprintf(tag, sizeof tag, "held%d", i);
    side_plan_idem(plan, sizeof plan, tag, 3, i != 4);
    ids[i] = tu_enqueue(l, plan);
  }
  ASSERT(l->ops->commit(l) == ERR_OK);
  for (int t = 0; t < 100 && held < HELD; t++) {
    held = 0;
    for (int i = 0; i < HELD; i++)
      if (l->ops->job_get(l, ids[i], &j) == ERR_OK) {
        held += j.state == JOB_RUNNING && j.lease_owner &&
                strncmp(j.lease_owner, wid, strlen(wid)) == 0;
        job_release(&j);
      }
    nap(20);
  }
  snprintf(side, sizeof side, "%s/side.txt", g_dir);
  ok = held == HELD;
  for (int t = 0; ok && t < 100 && (count_in_file(side, "held0") == 0 ||
                                    count_in_file(side, "held1") == 0); t++)
    nap(50);
  proc_kill9(&g_w[0]);
  proc_release(&g_w[0]);
  g_nw = 0;
  ASSERT_EQ(held, HELD);
  for (int i = 2; i < HELD; i++) {
    snprintf(tag, sizeof tag, "held%d", i);
    ASSERT_EQ(count_in_file(side, tag), 0);
  }
  ASSERT(start_worker(&g_w[0]) == 0);
  g_nw = 1;
  for (int i = 0; i < HELD; i++) {
    ASSERT(wait_job(l, ids[i], JOB_SUCCEEDED, 60000, &j));
    ASSERT_EQ(j.attempts, 2);
    job_release(&j);
    snprintf(tag, sizeof tag, "held%d", i);
    ASSERT_EQ(count_in_file(side, tag), i < 2 ? 2 : 1);
  }
  ASSERT_EQ(stop_workers(), 0);
  ledger_close(l);
}

/* Two worker processes, prefetching and group-committing: every job ends
 * once, claimed once, with one result message. */
TEST(quick_jobs_on_two_workers_finish_exactly_once)
{
  enum { N = 200 };
  struct ledger *l = tu_ledger_open(g_url);
  static int64_t ids[N];
  struct transition *t;
  struct outbox_msg *v;
  char plan[512];
  size_t n, nt;
  struct job j;

  ASSERT(l);
  for (g_nw = 0; g_nw < 2; g_nw++)
    ASSERT(start_worker(&g_w[g_nw]) == 0);
  ASSERT(warm_up(l));
  mock_plan(plan, sizeof plan, 0, 1);
  for (int i = 0; i < N; i += 20)
    ASSERT_EQ(enqueue_together(l, plan, ids + i, 20), 0);
  for (int i = 0; i < N; i++) {
    ASSERT(wait_job(l, ids[i], JOB_SUCCEEDED, 30000, &j));
    ASSERT_EQ(j.attempts, 1);
    job_release(&j);
    ASSERT_EQ(l->ops->job_transitions(l, ids[i], &t, &nt), ERR_OK);
    int runs = 0, ends = 0;
    for (size_t k = 0; k < nt; k++) {
      runs += t[k].to == JOB_RUNNING;
      ends += t[k].to == JOB_SUCCEEDED;
    }
    transition_list_free(t, nt);
    ASSERT_EQ(runs, 1);
    ASSERT_EQ(ends, 1);
  }
  ASSERT_EQ(l->ops->outbox_pending(l, "e2e", ledger_now_ms() + 1000, 100000, &v, &n), ERR_OK);
  for (int i = 0; i < N; i++) {
    int results = 0;
    for (size_t k = 0; k < n; k++)
      results += v[k].job_id == ids[i] && !v[k].edit_key && strstr(v[k].text, "SUCCEEDED");
    ASSERT_EQ(results, 1);
  }
  outbox_list_free(v, n);
  ASSERT_EQ(stop_workers(), 0);
  ledger_close(l);
}

TEST(frozen_worker_loses_its_lease_and_comes_back)
{
  struct ledger *l = tu_ledger_open(g_url);
  struct transition *t;
  char plan[1024], wid[128], needle[200];
  struct job j;
  size_t n;
  int64_t id;
  int ok, succeeded = 0;

  ASSERT(l);
  ASSERT(start_worker(&g_w[0]) == 0);
  g_nw = 1;
  worker_id(&g_w[0], wid, sizeof wid);
  nap(300);
  mock_plan(plan, sizeof plan, 3000, 1);
  ASSERT((id = tu_enqueue(l, plan)) > 0);
  ok = wait_job(l, id, JOB_RUNNING, 10000, &j);
  if (ok) {
    ok = strncmp(j.lease_owner, wid, strlen(wid)) == 0;
    job_release(&j);
  }
  kill(g_w[0].pid, SIGSTOP);
  ASSERT(start_worker(&g_w[1]) == 0);
  g_nw = 2;
  ASSERT(ok);
  /* reclaimed only once the lease is over, by the other worker */
  ASSERT(wait_job(l, id, JOB_SUCCEEDED, 30000, &j));
  ASSERT_EQ(j.attempts, 2);
  job_release(&j);
  snprintf(needle, sizeof needle, "worker %s is offline", wid);
  ASSERT(wait_outbox(l, "console", 0, needle, 20000));
  kill(g_w[0].pid, SIGCONT);
  snprintf(needle, sizeof needle, "worker %s is back online", wid);
  ASSERT(wait_outbox(l, "console", 0, needle, 20000));
  nap(3500);                    /* the old runner's step ends meanwhile */
  ASSERT_EQ(l->ops->job_transitions(l, id, &t, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    succeeded += t[i].to == JOB_SUCCEEDED;
  transition_list_free(t, n);
  ASSERT_EQ(succeeded, 1);
  ASSERT_EQ(stop_workers(), 0);
  ledger_close(l);
}

#define RESTART_JOBS 12

TEST(postgresql_restart_during_a_run)
{
  const char *ctl = getenv("SKYNET_TEST_PG_CTL");
  struct ledger *l = tu_ledger_open(g_url);
  char plan[1024], cmd[1200], tag[32], side[600];
  int64_t ids[RESTART_JOBS + 1];
  struct job j;
  int st;

  if (!ctl || !*ctl) {
    fprintf(stderr, "SKYNET_TEST_PG_CTL is not set: cannot restart postgresql\n");
    ASSERT(!tpg_missing_is_failure("postgresql restart"));
    ledger_close(l);
    return;
  }
  ASSERT(l);
  snprintf(side, sizeof side, "%s/side.txt", g_dir);
  ASSERT(start_worker(&g_w[0]) == 0 && start_worker(&g_w[1]) == 0);
  g_nw = 2;
  nap(300);
  for (int i = 0; i < RESTART_JOBS; i++) {
    snprintf(tag, sizeof tag, "restart%d", i);
    if (i % 2)
      side_plan(plan, sizeof plan, tag, 0.3);
    else
      mock_plan(plan, sizeof plan, 300, 1);
    ASSERT((ids[i] = tu_enqueue(l, plan)) > 0);
  }
  nap(400);
  snprintf(cmd, sizeof cmd, "%s stop -m fast >/dev/null 2>&1", ctl);
  ASSERT_EQ(system(cmd), 0);
  nap(1500);
  snprintf(cmd, sizeof cmd, "%s start >/dev/null 2>&1", ctl);
  ASSERT_EQ(system(cmd), 0);
  /* nothing lost: every job ends; what changes things ran at most once */
  for (int i = 0; i < RESTART_JOBS; i++) {
    ASSERT(wait_job(l, ids[i], JOB_CREATED, 60000, &j));
    snprintf(tag, sizeof tag, "restart%d", i);
    if (i % 2) {
      ASSERT(count_in_file(side, tag) <= 1);
      if (j.state == JOB_SUCCEEDED)
        ASSERT_EQ(count_in_file(side, tag), 1);
      else
        ASSERT_CONTAINS(j.reason, "not run twice");
    } else {
      if (j.state != JOB_SUCCEEDED)
        fprintf(stderr, "job #%lld %s: %s\n", (long long)j.id, job_state_name(j.state),
                j.reason ? j.reason : "");
      ASSERT_EQ(j.state, JOB_SUCCEEDED);
    }
    job_release(&j);
  }
  /* every worker process survived and still takes work */
  for (int i = 0; i < 2; i++)
    ASSERT_EQ(waitpid(g_w[i].pid, &st, WNOHANG), 0);
  side_plan(plan, sizeof plan, "after", 0.1);
  ASSERT((ids[RESTART_JOBS] = tu_enqueue(l, plan)) > 0);
  ASSERT(wait_job(l, ids[RESTART_JOBS], JOB_SUCCEEDED, 15000, &j));
  job_release(&j);
  ASSERT_EQ(count_in_file(side, "after"), 1);
  ASSERT_EQ(stop_workers(), 0);
  ledger_close(l);
}

int main(void)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  char conf[600];
  FILE *f;

  if (!pg || !*pg)
    return tpg_missing_is_failure("skynet worker on postgresql") ? 1 : 0;
  if (tpg_schema_url(pg, TAG, g_url, 1200))
    return 1;
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(conf, sizeof conf, "%s/skynet.yaml", g_dir);
  if (!(f = fopen(conf, "w")))
    return 1;
  fprintf(f, "providers:\n  default: local\n  local: {type: local}\n  mock: {type: mock}\n"
          "queue:\n  lease_ms: %d\n  backoff_ms: 200\n", LEASE_MS);
  fclose(f);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_dir);
  snprintf(g_env_db, sizeof g_env_db, "SKYNET_DATABASE_URL=%s", g_url);
  snprintf(g_env_conf, sizeof g_env_conf, "SKYNET_CONFIG=%s", conf);
  RUN(separate_worker_runs_the_agents_task);
  RUN(kill9_of_a_worker_mid_step);
  RUN(kill9_after_prefetching_reclaims_every_held_job);
  RUN(quick_jobs_on_two_workers_finish_exactly_once);
  RUN(frozen_worker_loses_its_lease_and_comes_back);
  RUN(postgresql_restart_during_a_run);
  stop_workers();
  tpg_schema_drop(pg, TAG);
  tu_rmrf(g_dir);
  return test_summary();
}
