/* End to end on PostgreSQL: `skynet run` with no workers of its own takes a
 * task, a separate `skynet worker` process claims and runs it through the
 * shared ledger, and the agent reports the result.  Needs SKYNET_TEST_PG_URL
 * (tests/run.sh starts a server); skips without it, fails under CI=true. */
#include <signal.h>

#include "../harness.h"
#include "../pgutil.h"
#include "../testutil.h"
#include "proc.h"

#define TAG "worker_pg"

static char g_dir[512], g_env_home[600], g_env_db[1400];

static char *const g_env_run[] = {
  g_env_home, g_env_db, "SKYNET_CONFIG=", "TELEGRAM_BOT_TOKEN=",
  "GEMINI_API_KEY=", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline",
  "SKYNET_LOG=warn", "SKYNET_WORKERS=0", NULL,
};

static char *const g_env_worker[] = {
  g_env_home, g_env_db, "SKYNET_CONFIG=", "TELEGRAM_BOT_TOKEN=",
  "GEMINI_API_KEY=", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline",
  "SKYNET_LOG=warn", "SKYNET_WORKERS=2", NULL,
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
  kill(worker.pid, SIGTERM);
  int wrc = proc_finish(&worker, 15000);
  int arc = proc_finish(&agent, 15000);
  proc_release(&worker);
  proc_release(&agent);
  ASSERT(queued);
  ASSERT(done);
  ASSERT_EQ(wrc, 0);
  ASSERT_EQ(arc, 0);
}

int main(void)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  char url[1300];

  if (!pg || !*pg)
    return tpg_missing_is_failure("skynet worker on postgresql") ? 1 : 0;
  if (tpg_schema_url(pg, TAG, url, 1200))
    return 1;
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_dir);
  snprintf(g_env_db, sizeof g_env_db, "SKYNET_DATABASE_URL=%s", url);
  RUN(separate_worker_runs_the_agents_task);
  tpg_schema_drop(pg, TAG);
  tu_rmrf(g_dir);
  return test_summary();
}
