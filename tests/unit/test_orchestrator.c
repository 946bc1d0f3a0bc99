/* The orchestrator with real worker threads, the SQLite ledger and the local
 * and mock providers: routing by risk, approval, timeouts, cancellation,
 * stop at the first failing step, and hand-back on shutdown; prefetched jobs
 * cancelled before they start or handed back on shutdown, and quick jobs
 * through prefetching and group commits ending exactly once.
 *
 *   test_orchestrator [postgresql]
 *
 * With "postgresql" the same on a PostgreSQL schema (SKYNET_TEST_PG_URL;
 * skips without it, fails under CI=true), where idle workers wake on the
 * ledger's notifications (the bell): then also, a queued job costs one
 * claim however many workers wait. */
#include "../harness.h"
#include "../ledgerutil.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "engine/config.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"
#include "engine/logstore.h"
#include "engine/archive.h"
#include "engine/orchestrator.h"
#include "engine/registry.h"

static struct cfg g_cfg;
static struct registry g_reg;
static struct orch *g_orch;
static struct ledger *g_l;
static const char *g_pg;        /* the PostgreSQL run's server, else NULL */
static int64_t g_early;         /* a job queued before the workers started */

static int64_t submit_plan(const char *plan, enum job_state *state)
{
  struct submit_req r = {"unit", 1, 1, "test", plan, "test", 0};
  struct submit_res res;

  if (orch_submit(g_orch, g_l, &r, &res) != ERR_OK)
    return 0;
  *state = res.state;
  submit_res_release(&res);
  return res.job_id;
}

/* Whether job id has a log file of its own. */
static int has_log_file(int64_t id)
{
  char path[700];

  snprintf(path, sizeof path, "%s/logs/%lld.jsonl", g_cfg.home, (long long)id);
  return access(path, F_OK) == 0;
}

static enum job_state wait_final(int64_t id, int ms, struct job *out)
{
  long long until = tu_now_ms() + ms;

  for (;;) {
    if (g_l->ops->job_get(g_l, id, out) == ERR_OK) {
      if (job_state_terminal(out->state) || tu_now_ms() > until)
        return out->state;
      job_release(out);
    }
    tu_sleep_ms(20);
  }
}

TEST(read_only_runs_and_succeeds)
{
  enum job_state st;
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"hi\"]}}]}", &st);

  ASSERT(id > 0);
  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  ASSERT_EQ(j.exit_code, 0);
  ASSERT_CONTAINS(j.output_tail, "hi");
  job_release(&j);
  /* the full output and the step's events are in the job's log: a quick
   * job's in the ledger, with no file */
  char *tail;
  ASSERT_EQ(logstore_tail_job(g_l, g_cfg.home, id, 10, 1000, &tail), ERR_OK);
  ASSERT_STREQ(tail, "hi");
  free(tail);
  ASSERT(!has_log_file(id));
  struct log_query q = {LOGL_DEBUG, 1, "skynet", NULL, 0};
  struct log_line *v;
  size_t n;
  ASSERT_EQ(logstore_query_job(g_l, g_cfg.home, id, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  ASSERT_CONTAINS(v[0].text, "step 1 started on 'local': shell: echo hi");
  ASSERT_CONTAINS(v[1].text, "step 1 exited with 0");
  log_line_list_free(v, n);
}

/* A job that turns out slow gets its log file while it runs, even with a
 * step that prints nothing, so that /status shows the step started; its
 * whole log is then in the file, none in the ledger. */
TEST(slow_job_gets_its_log_file_while_it_runs)
{
  enum job_state st;
  struct job j;
  char *held = NULL;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":"
                           "[\"sleep\",\"3\"]}}]}", &st);
  long long t0 = tu_now_ms();

  struct log_query q = {LOGL_DEBUG, 1, "skynet", NULL, 0};
  struct log_line *v = NULL;
  size_t n = 0;

  ASSERT(id > 0);
  /* the file, and in it the step's start (it is written just after the
   * file is made) */
  while (tu_now_ms() - t0 < 2800) {
    if (has_log_file(id) && logstore_query(g_cfg.home, id, NULL, &q, &v, &n) == ERR_OK) {
      if (n)
        break;
      log_line_list_free(v, n);
    }
    tu_sleep_ms(20);
  }
  ASSERT(tu_now_ms() - t0 >= LOGSTORE_HOLD_MS);
  ASSERT_EQ(n, 1);
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_RUNNING);
  job_release(&j);
  ASSERT_CONTAINS(v[0].text, "step 1 started on 'local': shell: sleep 3");
  log_line_list_free(v, n);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT_EQ(g_l->ops->job_log_get(g_l, id, &held), ERR_NOTFOUND);
  ASSERT_EQ(logstore_query(g_cfg.home, id, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  log_line_list_free(v, n);
}

TEST(write_waits_for_approval_then_runs)
{
  char dir[512], plan[1024];
  enum job_state st;
  struct job j;
  int64_t id;

  tu_tmpdir(dir, sizeof dir);
  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"file_delete\",\"args\":{\"path\":\"%s\"}}]}", dir);
  id = submit_plan(plan, &st);
  ASSERT_EQ(st, JOB_AWAITING_APPROVAL);
  tu_sleep_ms(300);
  ASSERT_EQ(access(dir, F_OK), 0);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_OK);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_STATE);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT(access(dir, F_OK) != 0);
}

TEST(blocked_is_denied_and_never_runs)
{
  enum job_state st;
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"rm\",\"-rf\",\"/\"]}}],"
                           "\"risk\":\"READ_ONLY\"}", &st);

  ASSERT_EQ(st, JOB_DENIED);
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_DENIED);
  ASSERT(j.reason && *j.reason);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_STATE);
  job_release(&j);
}

TEST(first_failure_stops_the_job)
{
  enum job_state st;
  struct job j;
  struct job_step_rec *s;
  size_t n;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"false\"]}},"
                           "{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"after\"]}}]}", &st);

  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  ASSERT_CONTAINS(j.reason, "step 1 exited with 1");
  job_release(&j);
  ASSERT_EQ(g_l->ops->step_list(g_l, id, &s, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  job_step_list_free(s, n);
}

/* Runs plan to its end and checks it timed out for `why` with no process of
 * the command (which holds token in its command line) left behind. */
static void expect_timeout(const char *plan_fmt, const char *why, const char *token_fmt)
{
  enum job_state st;
  struct job j;
  long long t0 = tu_now_ms();
  char plan[1024], token[64];

  /* the sleeps carry our pid: a parallel run of this test (valgrind) has
   * its own */
  snprintf(plan, sizeof plan, plan_fmt, (long)getpid());
  snprintf(token, sizeof token, token_fmt, (long)getpid());
  int64_t id = submit_plan(plan, &st);

  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(wait_final(id, 15000, &j), JOB_TIMED_OUT);
  ASSERT_CONTAINS(j.reason, why);
  ASSERT(tu_now_ms() - t0 < 8000);
  job_release(&j);
  ASSERT_EQ(tu_count_procs(token), 0);
  struct log_query q = {LOGL_ERROR, 0, "skynet", why, 0};
  struct log_line *v;
  size_t n;
  ASSERT_EQ(logstore_query_job(g_l, g_cfg.home, id, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);    /* the step's end and the job's */
  log_line_list_free(v, n);
}

TEST(step_timeout_ends_timed_out)
{
  expect_timeout("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"31.%ld0\"]},"
                 "\"timeout_s\":1}]}", "step timeout of 1 s fired on step 1", "sleep 31.%ld0");
}

TEST(command_timeout_is_named)
{
  expect_timeout("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sh\",\"-c\","
                 "\"sleep 31.%1$ld1 & sleep 31.%1$ld1; wait\"],\"timeout_s\":1},\"timeout_s\":20}]}",
                 "command timeout of 1 s fired on step 1", "sleep 31.%ld1");
}

TEST(provider_timeout_is_named)
{
  expect_timeout("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"true\"]}},"
                 "{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"31.%ld2\"],\"timeout_s\":30},"
                 "\"provider\":\"slowbox\",\"timeout_s\":20}]}",
                 "provider timeout of 1 s fired on step 2", "sleep 31.%ld2");
}

TEST(job_timeout_is_named)
{
  int saved = g_cfg.job_timeout_s;

  g_cfg.job_timeout_s = 2;
  expect_timeout("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"true\"]}},"
                 "{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"31.%ld3\"]},\"timeout_s\":20}]}",
                 "job timeout of 2 s fired on step 2", "sleep 31.%ld3");
  g_cfg.job_timeout_s = saved;
}

TEST(bad_command_timeout_rejected)
{
  enum job_state st;
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"true\"],"
                           "\"timeout_s\":0}}]}", &st);

  ASSERT_EQ(st, JOB_FAILED);
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_CONTAINS(j.reason, "'timeout_s' must be an integer");
  job_release(&j);
}

TEST(artifacts_are_kept_and_listed)
{
  char dir[512], file[600], plan[1400];
  enum job_state st;
  struct outbox_msg *v;
  struct artifact *a;
  struct job j;
  size_t n;
  int found = 0;
  int64_t id;
  FILE *f;

  tu_tmpdir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/report.txt", dir);
  f = fopen(file, "w");
  ASSERT(f != NULL);
  fputs("abc", f);
  fclose(f);
  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"x\"],"
           "\"artifacts\":[\"%s\"]}}]}", file);
  id = submit_plan(plan, &st);
  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT_EQ(g_l->ops->artifact_list(g_l, id, &a, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(a[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  artifact_list_free(a, n);
  /* the result message follows the final state */
  for (int k = 0; k < 250 && !found; k++) {
    ASSERT_EQ(g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms(), 1000, &v, &n), ERR_OK);
    for (size_t i = 0; i < n; i++)
      found |= v[i].job_id == id && strstr(v[i].text, "report.txt (3 B, sha ba7816bf8f01, step 1)") != NULL;
    outbox_list_free(v, n);
    if (!found)
      tu_sleep_ms(20);
  }
  ASSERT(found);

  /* over the limit: the job fails and says why */
  g_cfg.archive_max_bytes = 2;
  id = submit_plan(plan, &st);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  g_cfg.archive_max_bytes = 100 * 1024 * 1024;
  ASSERT_CONTAINS(j.reason, "report.txt' is 3 bytes, over the archive.max_bytes limit of 2");
  job_release(&j);
  tu_rmrf(dir);

  /* a provider elsewhere: read through it (the mock answers `cat -- path`
   * with "mock: cat -- path") */
  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"shell\",\"provider\":\"mock\","
           "\"args\":{\"argv\":[\"echo\",\"x\"],\"artifacts\":[\"/remote/out.txt\"]}}]}");
  id = submit_plan(plan, &st);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT_EQ(g_l->ops->artifact_list(g_l, id, &a, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  {
    char want[65];
    archive_sha256_hex("mock: cat -- /remote/out.txt\n", 29, want);
    ASSERT_STREQ(a[0].sha256, want);
    ASSERT_STREQ(a[0].name, "/remote/out.txt");
  }
  artifact_list_free(a, n);

  /* relative paths are refused at planning */
  id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"true\"],"
                   "\"artifacts\":[\"out.txt\"]}}]}", &st);
  ASSERT_EQ(st, JOB_FAILED);
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_CONTAINS(j.reason, "must be an absolute path");
  job_release(&j);
}

TEST(cancel_running_and_queued)
{
  enum job_state st;
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"60\"]}}]}", &st);
  long long t0;

  for (int i = 0; i < 200; i++) {
    ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
    st = j.state;
    job_release(&j);
    if (st == JOB_RUNNING)
      break;
    tu_sleep_ms(20);
  }
  ASSERT_EQ(st, JOB_RUNNING);
  t0 = tu_now_ms();
  ASSERT_EQ(orch_cancel(g_orch, g_l, id, "op"), ERR_OK);
  ASSERT_EQ(wait_final(id, 5000, &j), JOB_CANCELLED);
  ASSERT(tu_now_ms() - t0 < 3000);
  job_release(&j);
  ASSERT_EQ(orch_cancel(g_orch, g_l, id, "op"), ERR_STATE);
  id = submit_plan("{\"steps\":[{\"action\":\"file_delete\",\"args\":{\"path\":\"/tmp/nothing-here\"}}]}", &st);
  ASSERT_EQ(st, JOB_AWAITING_APPROVAL);
  ASSERT_EQ(orch_cancel(g_orch, g_l, id, "op"), ERR_OK);
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_EQ(j.state, JOB_CANCELLED);
  job_release(&j);
}

TEST(unknown_provider_fails_planning)
{
  enum job_state st;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"uptime\",\"provider\":\"nowhere\"}]}", &st);

  ASSERT(id > 0);
  ASSERT_EQ(st, JOB_FAILED);
}

TEST(results_reach_the_outbox)
{
  struct outbox_msg *v;
  size_t n;
  int found = 0;

  ASSERT_EQ(g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms(), 1000, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    found |= strstr(v[i].text, "SUCCEEDED · exit 0") != NULL;
  outbox_list_free(v, n);
  ASSERT(found);
}

static char g_dir[512];

static int transitions_with(int64_t id, enum job_state to, const char *reason_part)
{
  struct transition *t;
  size_t n;
  int count = 0;

  if (g_l->ops->job_transitions(g_l, id, &t, &n))
    return -1;
  for (size_t i = 0; i < n; i++)
    count += t[i].to == to && (!reason_part || (t[i].reason && strstr(t[i].reason, reason_part)));
  transition_list_free(t, n);
  return count;
}

static int64_t submit_approved(const char *plan)
{
  enum job_state st;
  int64_t id = submit_plan(plan, &st);

  if (id && st == JOB_AWAITING_APPROVAL && orch_decide(g_orch, g_l, id, 1, "test"))
    return 0;
  return id;
}

/* The result's announcement tells how long the job took ("#17 SUCCEEDED ·
 * exit 0 · 1.0s"), from the claim's time in the ledger plus the worker's
 * own clock since. */
TEST(result_tells_the_elapsed_time)
{
  const char *slow = "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"1\"]}}]}";
  struct outbox_msg *v;
  enum job_state st;
  double secs = -1;
  struct job j;
  size_t n;
  int64_t id = submit_plan(slow, &st);

  ASSERT(id > 0);
  orch_wake(g_orch);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  for (int tries = 0; secs < 0 && tries < 50; tries++) {
    ASSERT_EQ(g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms() + 1000, 1000, &v, &n), ERR_OK);
    for (size_t i = 0; i < n; i++) {
      const char *at = NULL, *p = v[i].job_id == id && !v[i].edit_key ? v[i].text : NULL;
      while (p && (p = strstr(p, " · ")))      /* the last field */
        at = p++;
      if (at && strstr(v[i].text, "SUCCEEDED"))
        sscanf(at + strlen(" · "), "%lfs", &secs);
    }
    outbox_list_free(v, n);
    if (secs < 0)
      tu_sleep_ms(20);
  }
  fprintf(stderr, "  announced after %.1fs\n", secs);
  ASSERT(secs >= 0.9 && secs < 8);
}

TEST(unavailable_provider_is_retried_with_backoff)
{
  char plan[1024];
  struct job j;
  int64_t id;

  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"shell\",\"provider\":\"mock\","
           "\"idempotent\":true,\"args\":{\"argv\":[\"mock\",\"unavailable\",\"%s/flag\"]}}]}", g_dir);
  ASSERT((id = submit_approved(plan)) > 0);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  ASSERT_EQ(j.attempts, 2);
  job_release(&j);
  ASSERT_EQ(transitions_with(id, JOB_QUEUED, "retry 2 of 3 in 0.1s"), 1);
}

TEST(retries_stop_at_max_attempts)
{
  struct job j;
  int64_t id = submit_approved("{\"steps\":[{\"action\":\"shell\",\"provider\":\"mock\","
                               "\"idempotent\":true,\"args\":{\"argv\":[\"mock\",\"unavailable\"]}}]}");

  ASSERT(id > 0);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  ASSERT_EQ(j.attempts, 3);
  ASSERT_CONTAINS(j.reason, "gave up after 3 attempts");
  job_release(&j);
  /* backoff doubles: 0.1s then 0.2s */
  ASSERT_EQ(transitions_with(id, JOB_QUEUED, "in 0.1s"), 1);
  ASSERT_EQ(transitions_with(id, JOB_QUEUED, "in 0.2s"), 1);
}

TEST(no_retry_after_a_step_that_is_not_idempotent)
{
  struct job j;
  int64_t id = submit_approved("{\"steps\":[{\"action\":\"shell\",\"idempotent\":false,"
                               "\"args\":{\"argv\":[\"echo\",\"once\"]}},"
                               "{\"action\":\"shell\",\"provider\":\"mock\",\"idempotent\":true,"
                               "\"args\":{\"argv\":[\"mock\",\"unavailable\"]}}]}");

  ASSERT(id > 0);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  ASSERT_EQ(j.attempts, 1);
  ASSERT_CONTAINS(j.reason, "not retried: step 1 changes things");
  job_release(&j);
}

/* A job claimed by a runner that vanished (lease ended): the supervisor
 * takes it back; idempotent work runs again, other work that started ends
 * FAILED with the reason, and the user hears about both. */
static int64_t ghost_job(const char *plan_json, int started_step)
{
  struct job j = {0};
  struct job_step_rec r = {0};

  j.channel = "unit";
  j.chat_id = 1;
  j.text = "ghost";
  /* queued and claimed in one transaction, so that no worker thread of
   * ours takes it first */
  if (g_l->ops->begin(g_l) || g_l->ops->job_create(g_l, &j, "test") ||
      g_l->ops->job_set_plan(g_l, j.id, plan_json, "s", RISK_READ_ONLY) ||
      g_l->ops->job_transition(g_l, j.id, JOB_CREATED, JOB_PLANNED, "t", NULL) ||
      g_l->ops->job_transition(g_l, j.id, JOB_PLANNED, JOB_QUEUED, "t", NULL))
    return 0;
  int64_t id = j.id;
  if (g_l->ops->job_claim(g_l, "ghost:1:w0", 1, id, &j) != ERR_OK || g_l->ops->commit(g_l))
    return 0;
  job_release(&j);
  r.idx = started_step;
  r.state = "RUNNING";
  if (started_step >= 0 && g_l->ops->step_record(g_l, id, &r))
    return 0;
  return id;
}

TEST(dead_runner_idempotent_work_runs_again_other_work_fails)
{
  struct job a, b;
  struct outbox_msg *v;
  size_t n;
  int told = 0;
  int64_t ia = ghost_job("{\"steps\":[{\"action\":\"shell\",\"idempotent\":true,"
                         "\"args\":{\"argv\":[\"echo\",\"again\"]}}]}", 0);
  int64_t ib = ghost_job("{\"steps\":[{\"action\":\"shell\",\"idempotent\":false,"
                         "\"args\":{\"argv\":[\"echo\",\"never twice\"]}}]}", 0);

  ASSERT(ia > 0 && ib > 0);
  ASSERT_EQ(wait_final(ia, 15000, &a), JOB_SUCCEEDED);
  ASSERT_EQ(a.attempts, 2);
  ASSERT_CONTAINS(a.output_tail, "again");
  ASSERT_EQ(wait_final(ib, 15000, &b), JOB_FAILED);
  ASSERT_EQ(b.attempts, 1);
  ASSERT_CONTAINS(b.reason, "its runner stopped");
  ASSERT_CONTAINS(b.reason, "not run twice");
  job_release(&a);
  job_release(&b);
  ASSERT_EQ(g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms(), 1000, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++) {
    told += v[i].job_id == ia && strstr(v[i].text, "retry 2 of 3") != NULL;
    told += v[i].job_id == ib && strstr(v[i].text, "FAILED") != NULL;
  }
  outbox_list_free(v, n);
  ASSERT_EQ(told, 2);
}

TEST(this_process_is_in_the_worker_registry)
{
  struct worker_rec *v;
  size_t n;
  int found = 0;

  ASSERT_EQ(g_l->ops->worker_list(g_l, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    found |= v[i].pid == (int64_t)getpid() && strcmp(v[i].state, "online") == 0 &&
             v[i].capacity == 2 && strstr(v[i].providers, "mock") != NULL;
  worker_list_free(v, n);
  ASSERT(found);
}

/* A job queued before the process started is claimed only once the process
 * is in the registry: a worker that holds jobs is one the registry watches
 * (a worker cut off before it registered would go offline unreported). */
TEST(no_job_is_claimed_before_the_process_is_registered)
{
  struct worker_rec *v;
  struct transition *t;
  struct job j;
  size_t n, nt;
  int64_t started = -1, claimed = -1;

  ASSERT(g_early > 0);
  ASSERT_EQ(wait_final(g_early, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT_EQ(g_l->ops->worker_list(g_l, &v, &n), ERR_OK);
  for (size_t i = 0; i < n; i++)
    if (v[i].pid == (int64_t)getpid())
      started = v[i].started_at;
  worker_list_free(v, n);
  ASSERT_EQ(g_l->ops->job_transitions(g_l, g_early, &t, &nt), ERR_OK);
  for (size_t i = 0; i < nt; i++)
    if (t[i].to == JOB_RUNNING && claimed < 0)
      claimed = t[i].at;
  transition_list_free(t, nt);
  ASSERT(started > 0 && claimed > 0);
  if (started > claimed)
    fprintf(stderr, "registered at %lld, claimed at %lld\n", (long long)started,
            (long long)claimed);
  ASSERT(started <= claimed);
}

/* ---- prefetching and group commits ------------------------------------- */

static const char quick_plan[] =
    "{\"steps\": [{\"action\": \"uptime\", \"provider\": \"mock\", \"args\": {}}]}";

/* n jobs queued in one transaction, so that one claim can see them all. */
static int submit_together(const char *plan, int64_t *ids, int n)
{
  enum job_state st;

  if (g_l->ops->begin(g_l))
    return -1;
  for (int i = 0; i < n; i++)
    if (!(ids[i] = submit_plan(plan, &st)) || st != JOB_QUEUED) {
      g_l->ops->rollback(g_l);
      return -1;
    }
  if (g_l->ops->commit(g_l))
    return -1;
  orch_wake(g_orch);
  return 0;
}

/* Quick jobs in a row make the workers claim several at once. */
static int warm_up(void)
{
  int64_t ids[4];
  struct job j;
  int ok = submit_together(quick_plan, ids, 4) == 0;

  for (int i = 0; ok && i < 4; i++) {
    ok = wait_final(ids[i], 10000, &j) == JOB_SUCCEEDED;
    job_release(&j);
  }
  return ok;
}

static int running_count(const int64_t *ids, int n)
{
  struct job j;
  int c = 0;

  for (int i = 0; i < n; i++)
    if (g_l->ops->job_get(g_l, ids[i], &j) == ERR_OK) {
      c += j.state == JOB_RUNNING;
      job_release(&j);
    }
  return c;
}

/* Whether the four jobs are all RUNNING within a second: claimed together.
 * Under valgrind no job is quick, so nothing is prefetched: the jobs are
 * cancelled and the caller skips its test (returns 0 with *skip set). */
static int all_claimed(const int64_t *ids, int *skip)
{
  struct job j;

  for (int i = 0; i < 50 && running_count(ids, 4) < 4; i++)
    tu_sleep_ms(20);
  *skip = running_count(ids, 4) < 4 && getenv("SKYNET_UNDER_VALGRIND") != NULL;
  if (!*skip)
    return running_count(ids, 4) == 4;
  fprintf(stderr, "skip: under valgrind no job is quick enough to prefetch\n");
  for (int i = 0; i < 4; i++) {
    orch_cancel(g_orch, g_l, ids[i], "test");
    wait_final(ids[i], 30000, &j);
    job_release(&j);
  }
  return 0;
}

/* Two workers, four slow jobs queued at once: one claim takes all four, two
 * run and two wait in this process, RUNNING under its lease.  A cancel of a
 * waiting one, from this process or (through the ledger only) from another,
 * ends it CANCELLED before it starts, and its step never runs. */
TEST(prefetched_jobs_are_cancelled_before_they_start)
{
  const char *slow = "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"2\"]}}]}";
  int64_t ids[4];
  struct job_step_rec *steps;
  size_t n;
  struct job j;

  int skip;

  ASSERT(warm_up());
  ASSERT_EQ(submit_together(slow, ids, 4), 0);
  if (!all_claimed(ids, &skip) && skip)
    return;
  ASSERT_EQ(running_count(ids, 4), 4);
  ASSERT_EQ(orch_cancel(g_orch, g_l, ids[3], "op"), ERR_OK);
  ASSERT_EQ(g_l->ops->job_request_cancel(g_l, ids[2]), ERR_OK);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(wait_final(ids[i], 15000, &j), i < 2 ? JOB_SUCCEEDED : JOB_CANCELLED);
    if (i >= 2)
      ASSERT_CONTAINS(j.reason, "cancelled before step 1");
    job_release(&j);
    ASSERT_EQ(g_l->ops->step_list(g_l, ids[i], &steps, &n), ERR_OK);
    ASSERT_EQ(n, (size_t)(i < 2));
    job_step_list_free(steps, n);
  }
}

/* Many quick jobs through prefetching workers and group commits: each ends
 * once, claimed once, with one step record and one result message. */
TEST(quick_jobs_finish_exactly_once)
{
  enum { N = 200 };
  static int64_t ids[N];
  struct outbox_msg *v;
  struct job_step_rec *steps;
  size_t n, ns;
  struct job j;

  ASSERT(warm_up());
  for (int i = 0; i < N; i += 20)
    ASSERT_EQ(submit_together(quick_plan, ids + i, 20), 0);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(wait_final(ids[i], 20000, &j), JOB_SUCCEEDED);
    ASSERT_EQ(j.attempts, 1);
    job_release(&j);
    ASSERT_EQ(transitions_with(ids[i], JOB_RUNNING, NULL), 1);
    ASSERT_EQ(transitions_with(ids[i], JOB_SUCCEEDED, NULL), 1);
    ASSERT_EQ(g_l->ops->step_list(g_l, ids[i], &steps, &ns), ERR_OK);
    ASSERT_EQ(ns, (size_t)1);
    ASSERT_STREQ(steps[0].state, "SUCCEEDED");
    job_step_list_free(steps, ns);
  }
  ASSERT_EQ(g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms(), 100000, &v, &n), ERR_OK);
  for (int i = 0; i < N; i++) {
    int results = 0;
    for (size_t k = 0; k < n; k++)
      results += v[k].job_id == ids[i] && !v[k].edit_key && strstr(v[k].text, "SUCCEEDED");
    ASSERT_EQ(results, 1);
  }
  outbox_list_free(v, n);
}

/* A job queued as another process queues it (a `skynet run` without
 * workers): in the ledger only, with its wake-up; its id or 0. */
static int64_t queue_elsewhere(const char *plan)
{
  struct job j = {0};

  j.channel = "unit";
  j.chat_id = 1;
  j.user_id = 1;
  j.text = "from elsewhere";
  j.plan_json = (char *)plan;
  j.summary = "elsewhere";
  j.risk = RISK_READ_ONLY;
  if (g_l->ops->job_create_routed(g_l, &j, "user:1", JOB_QUEUED, "policy", "reads only", NULL,
                                  0))
    return 0;
  return j.id;
}

/* A job this process queues while one of its slots is idle goes to that
 * slot without a claim (created claimed, RUNNING once committed, with the
 * claim's transition); none when its transaction is rolled back, and the
 * slot it was meant for is free again at once. */
TEST(an_idle_slot_takes_its_own_processs_job_without_a_claim)
{
  unsigned long long made0, empty0, made1, empty1;
  struct transition *t;
  struct job j;
  size_t n;
  int64_t id, gone;
  enum job_state st;

  ASSERT(warm_up());
  tu_sleep_ms(100);
  ledger_claim_counts(&made0, &empty0);
  ASSERT_EQ(submit_together(quick_plan, &id, 1), 0);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  ASSERT_EQ(j.attempts, 1);
  job_release(&j);
  ledger_claim_counts(&made1, &empty1);
  ASSERT_EQ((made1 - empty1) - (made0 - empty0), 0ULL);   /* no claim took a job */
  ASSERT_EQ(g_l->ops->job_transitions(g_l, id, &t, &n), ERR_OK);
  ASSERT_EQ(n, 5);
  ASSERT_EQ(t[2].to, JOB_QUEUED);
  ASSERT_EQ(t[3].from, JOB_QUEUED);
  ASSERT_EQ(t[3].to, JOB_RUNNING);
  ASSERT(strncmp(t[3].actor, "worker:", 7) == 0);
  ASSERT_EQ(t[4].to, JOB_SUCCEEDED);
  transition_list_free(t, n);
  /* Rolled back: no job; every slot is free for the next. */
  ASSERT_EQ(g_l->ops->begin(g_l), ERR_OK);
  ASSERT((gone = submit_plan(quick_plan, &st)) > 0);
  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(g_l->ops->rollback(g_l), ERR_OK);
  ASSERT_EQ(g_l->ops->job_get(g_l, gone, &j), ERR_NOTFOUND);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(submit_together(quick_plan, &id, 1), 0);
    ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
    job_release(&j);
  }
  /* Outside any transaction too. */
  ASSERT((id = submit_plan(quick_plan, &st)) > 0);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
}

/* Jobs queued one at a time by another process to idle workers (two here)
 * on PostgreSQL: each costs one claim, not one per worker, plus the bell's
 * sweeps for retries that come due (one per DUE_POLL_MS, 500 ms, without
 * notifications); and idle workers make only the sweeps' claims. */
TEST(a_queued_job_costs_one_claim)
{
  enum { N = 20 };
  unsigned long long made0, empty0, made1, empty1;
  long long t0;
  struct job j;

  ASSERT(warm_up());
  tu_sleep_ms(700);             /* idle, and the bell on */
  ledger_claim_counts(&made0, &empty0);
  t0 = tu_now_ms();
  for (int i = 0; i < N; i++) {
    int64_t id;
    ASSERT((id = queue_elsewhere(quick_plan)) > 0);
    ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
    job_release(&j);
    tu_sleep_ms(10);
  }
  ledger_claim_counts(&made1, &empty1);
  long long sweeps = (tu_now_ms() - t0) / 500 + 1;
  fprintf(stderr, "  %d jobs: %llu claims (%llu found nothing) in %lld ms\n", N,
          made1 - made0, empty1 - empty0, tu_now_ms() - t0);
  ASSERT(made1 - made0 <= (unsigned long long)(N + sweeps + 2));
  /* Idle, the process claims once per sweep, not once per slot and poll. */
  tu_sleep_ms(300);
  ledger_claim_counts(&made0, &empty0);
  tu_sleep_ms(2000);
  ledger_claim_counts(&made1, &empty1);
  fprintf(stderr, "  idle 2 s: %llu claims\n", made1 - made0);
  ASSERT(made1 - made0 <= 2000 / 500 + 2);
}

/* Stopping with jobs prefetched: the running ones and the waiting ones all
 * go back to the queue, none is lost or left RUNNING; a new start runs
 * them.  The steps sleep 3 s: under valgrind on a busy machine, claiming
 * all four took over a second, and a 1 s step ended before the stop. */
TEST(stop_hands_back_prefetched_jobs)
{
  const char *slow = "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"3\"]}}]}";
  int64_t ids[4];
  char err[256];
  struct job j;

  int skip;

  ASSERT(warm_up());
  ASSERT_EQ(submit_together(slow, ids, 4), 0);
  if (!all_claimed(ids, &skip) && skip)
    return;
  ASSERT_EQ(running_count(ids, 4), 4);
  orch_stop(g_orch, 0);
  g_orch = NULL;
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(g_l->ops->job_get(g_l, ids[i], &j), ERR_OK);
    ASSERT_EQ(j.state, JOB_QUEUED);
    ASSERT(!j.lease_owner);
    job_release(&j);
    ASSERT_EQ(transitions_with(ids[i], JOB_QUEUED, "handed back"), 1);
  }
  ASSERT_EQ(orch_start(&g_cfg, &g_reg, 2, &g_orch, err, sizeof err), ERR_OK);
  orch_wake(g_orch);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(wait_final(ids[i], 15000, &j), JOB_SUCCEEDED);
    job_release(&j);
  }
}

int main(int argc, char **argv)
{
  char *dir = g_dir, env[600], conf[600], err[256], url[1300];
  FILE *f;

  log_setup(LOGL_ERROR, 0, NULL);
  if (argc > 1 && strcmp(argv[1], "postgresql") == 0) {
    if (!(g_pg = getenv("SKYNET_TEST_PG_URL")) || !*g_pg)
      return tpg_missing_is_failure("orchestrator on postgresql") ? 1 : 0;
    if (tpg_schema_url(g_pg, "orch", url, sizeof url))
      return 1;
  }
  tu_tmpdir(dir, sizeof g_dir);
  snprintf(env, sizeof env, "%s/home", dir);
  setenv("SKYNET_HOME", env, 1);
  snprintf(conf, sizeof conf, "%s/skynet.yaml", dir);
  if (!(f = fopen(conf, "w")))
    return 1;
  fputs("providers:\n  default: local\n  local: {type: local}\n  mock: {type: mock}\n"
        "  slowbox: {type: local, timeout_s: 1}\nqueue:\n  backoff_ms: 100\n", f);
  fclose(f);
  setenv("SKYNET_CONFIG", conf, 1);
  if (g_pg)
    setenv("SKYNET_DATABASE_URL", url, 1);
  else
    unsetenv("SKYNET_DATABASE_URL");
  unsetenv("TELEGRAM_BOT_TOKEN");
  if (cfg_load(&g_cfg, conf, err, sizeof err) || ledger_open(g_cfg.database_url, &g_l, err, sizeof err)) {
    fprintf(stderr, "setup: %s\n", err);
    return 1;
  }
  int applied;
  g_l->ops->migrate(g_l, &applied);
  g_cfg.kill_grace_ms = 300;
  registry_init(&g_reg, &g_cfg);
  g_early = tu_enqueue(g_l, "{\"steps\": [{\"action\": \"uptime\", \"provider\": \"mock\"}]}");
  if (orch_start(&g_cfg, &g_reg, 2, &g_orch, err, sizeof err))
    return 1;
  RUN(read_only_runs_and_succeeds);
  RUN(slow_job_gets_its_log_file_while_it_runs);
  RUN(write_waits_for_approval_then_runs);
  RUN(blocked_is_denied_and_never_runs);
  RUN(first_failure_stops_the_job);
  RUN(step_timeout_ends_timed_out);
  RUN(command_timeout_is_named);
  RUN(provider_timeout_is_named);
  RUN(job_timeout_is_named);
  RUN(bad_command_timeout_rejected);
  RUN(artifacts_are_kept_and_listed);
  RUN(cancel_running_and_queued);
  RUN(unknown_provider_fails_planning);
  RUN(results_reach_the_outbox);
  RUN(result_tells_the_elapsed_time);
  RUN(unavailable_provider_is_retried_with_backoff);
  RUN(retries_stop_at_max_attempts);
  RUN(no_retry_after_a_step_that_is_not_idempotent);
  RUN(dead_runner_idempotent_work_runs_again_other_work_fails);
  RUN(this_process_is_in_the_worker_registry);
  RUN(no_job_is_claimed_before_the_process_is_registered);
  RUN(prefetched_jobs_are_cancelled_before_they_start);
  RUN(quick_jobs_finish_exactly_once);
  RUN(an_idle_slot_takes_its_own_processs_job_without_a_claim);
  if (g_pg)                     /* the bell: PostgreSQL only */
    RUN(a_queued_job_costs_one_claim);
  RUN(stop_hands_back_prefetched_jobs);
  orch_stop(g_orch, 1000);
  registry_release(&g_reg);
  ledger_close(g_l);
  cfg_release(&g_cfg);
  tu_rmrf(dir);
  if (g_pg)
    tpg_schema_drop(g_pg, "orch");
  return test_summary();
}
