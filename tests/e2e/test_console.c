/* End to end: the skynet binary in console mode, driven through pipes.
 * Covers the flows of the foundation: read-only tasks, approval and denial,
 * policy denial, cancellation of a running process group, status/list/help,
 * free text, persistence across a restart and across kill -9. */
#include <sqlite3.h>
#include <sys/stat.h>

#include "../harness.h"
#include "../testutil.h"
#include "proc.h"

static char g_dir[512], g_home[600], g_env_home[700];

static char *const g_env[] = {
  g_env_home, "SKYNET_CONFIG=", "TELEGRAM_BOT_TOKEN=", "GEMINI_API_KEY=",
  "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline", "SKYNET_LOG=warn",
  "SKYNET_DATABASE_URL=", "SKYNET_WORKERS=2", NULL,
};

static int start(struct proc *p)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  return proc_start(p, argv, g_env);
}

static int run_cmd(char *const argv[], char *out, size_t n)
{
  struct proc p;
  int rc;

  if (proc_start(&p, argv, g_env))
    return -1;
  rc = proc_finish(&p, 20000);
  snprintf(out, n, "%s", p.buf ? p.buf : "");
  proc_release(&p);
  return rc;
}

static int pgroup_gone(const char *pattern)
{
  char cmd[256];
  snprintf(cmd, sizeof cmd, "pgrep -f '%s' >/dev/null", pattern);
  return system(cmd) != 0;
}

static int db_count(const char *sql)
{
  char path[800];
  sqlite3 *db;
  sqlite3_stmt *st;
  int n = -1;

  snprintf(path, sizeof path, "%s/skynet.db", g_home);
  if (sqlite3_open(path, &db) != SQLITE_OK)
    return -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n;
}

TEST(flows_in_one_session)
{
  struct proc p;
  char demo[700], keep[700], line[1600];
  struct stat sb;
  long long t0;

  snprintf(demo, sizeof demo, "%s/skynet-demo", g_dir);
  snprintf(keep, sizeof keep, "%s/keep-me", g_dir);
  ASSERT(mkdir(demo, 0700) == 0 && mkdir(keep, 0700) == 0);
  ASSERT(start(&p) == 0);

  proc_send(&p, "/task check disk usage");
  ASSERT(proc_expect(&p, "#1 QUEUED · risk READ_ONLY", 10000));
  ASSERT(proc_expect(&p, "df -h", 1000));
  ASSERT(proc_expect(&p, "#1 SUCCEEDED · exit 0", 15000));
  ASSERT(proc_expect(&p, "Filesystem", 1000));

  snprintf(line, sizeof line, "/task delete %s", demo);
  proc_send(&p, line);
  ASSERT(proc_expect(&p, "#2 AWAITING_APPROVAL · risk WRITE", 10000));
  ASSERT(stat(demo, &sb) == 0);
  proc_send(&p, "/approve 2");
  ASSERT(proc_expect(&p, "#2 QUEUED: approved", 10000));
  ASSERT(proc_expect(&p, "#2 SUCCEEDED", 15000));
  ASSERT(stat(demo, &sb) != 0);

  snprintf(line, sizeof line, "/task delete %s", keep);
  proc_send(&p, line);
  ASSERT(proc_expect(&p, "#3 AWAITING_APPROVAL", 10000));
  proc_send(&p, "/deny 3");
  ASSERT(proc_expect(&p, "#3 DENIED", 10000));
  proc_send(&p, "/approve 3");
  ASSERT(proc_expect(&p, "#3 is DENIED", 10000));
  ASSERT(stat(keep, &sb) == 0);

  proc_send(&p, "/task rm -rf /");
  ASSERT(proc_expect(&p, "#4 DENIED · risk BLOCKED", 10000));
  ASSERT(proc_expect(&p, "Denied by policy", 1000));
  proc_send(&p, "/task :(){ :|:& };:");
  ASSERT(proc_expect(&p, "#5 DENIED · risk BLOCKED", 10000));
  proc_send(&p, "/task dd if=/dev/zero of=/dev/sda");
  ASSERT(proc_expect(&p, "#6 DENIED · risk BLOCKED", 10000));

  /* a grandchild in the background: the whole process group must go */
  proc_send(&p, "/task sh -c 'sleep 985 & sleep 984; echo never'");
  ASSERT(proc_expect(&p, "#7 QUEUED", 10000));
  p.mark = 0;
  ASSERT(proc_expect(&p, "#7 RUNNING step 1/1", 10000));
  /* the chat stays responsive while the job runs */
  t0 = proc_ms();
  proc_send(&p, "/help");
  ASSERT(proc_expect(&p, "/task <what to do>", 5000));
  ASSERT(proc_ms() - t0 < 2000);
  proc_send(&p, "/cancel 7");
  t0 = proc_ms();
  ASSERT(proc_expect(&p, "#7 CANCELLED", 5000));
  ASSERT(proc_ms() - t0 < 3000);
  ASSERT(pgroup_gone("^sleep 985$"));
  ASSERT(pgroup_gone("^sleep 984$"));

  proc_send(&p, "/status 1");
  ASSERT(proc_expect(&p, "#1 SUCCEEDED", 5000));
  ASSERT(proc_expect(&p, "QUEUED → RUNNING by worker:", 2000));
  proc_send(&p, "/list");
  ASSERT(proc_expect(&p, "#7 CANCELLED", 5000));
  proc_send(&p, "hello there");
  ASSERT(proc_expect(&p, "/task <what to do>", 5000));
  proc_send(&p, "/task frobnicate the quantum flux");
  ASSERT(proc_expect(&p, "FAILED: cannot plan this offline", 5000));
  proc_send(&p, "/cancel 999");
  ASSERT(proc_expect(&p, "No job #999", 5000));
  proc_send(&p, "/providers");
  ASSERT(proc_expect(&p, "local (local) default: up", 5000));
  proc_send(&p, "/bogus");
  ASSERT(proc_expect(&p, "Unknown command", 5000));
  ASSERT_EQ(proc_finish(&p, 15000), 0);
  proc_release(&p);
}

TEST(everything_survives_a_restart)
{
  struct proc p;

  ASSERT(start(&p) == 0);
  proc_send(&p, "/status 2");
  ASSERT(proc_expect(&p, "#2 SUCCEEDED", 10000));
  ASSERT(proc_expect(&p, "AWAITING_APPROVAL → APPROVED by operator:0", 2000));
  proc_send(&p, "/list");
  ASSERT(proc_expect(&p, "#7 CANCELLED", 5000));
  ASSERT(proc_expect(&p, "#1 SUCCEEDED", 5000));
  ASSERT_EQ(proc_finish(&p, 15000), 0);
  proc_release(&p);
  ASSERT(db_count("SELECT count(*) FROM messages WHERE role = 'user'") >= 10);
  ASSERT(db_count("SELECT count(*) FROM transitions WHERE job_id = 2") == 7);
}

TEST(kill9_mid_job_then_restart_finishes_it)
{
  struct proc p;
  char line[64];
  int id;

  ASSERT(start(&p) == 0);
  proc_send(&p, "/task sleep 3");
  ASSERT(proc_expect(&p, " QUEUED · risk READ_ONLY", 10000));
  id = db_count("SELECT max(id) FROM jobs");
  snprintf(line, sizeof line, "#%d RUNNING step 1/1", id);
  p.mark = 0;
  ASSERT(proc_expect(&p, line, 10000));
  proc_kill9(&p);
  proc_release(&p);
  tu_sleep_ms(100);
  ASSERT(start(&p) == 0);
  snprintf(line, sizeof line, "#%d SUCCEEDED", id);
  ASSERT(proc_expect(&p, line, 20000));
  ASSERT_EQ(proc_finish(&p, 15000), 0);
  proc_release(&p);
}

TEST(command_line)
{
  char out[8192];
  char *doctor[] = {SKYNET_BIN, "doctor", NULL};
  char *migrate[] = {SKYNET_BIN, "migrate", NULL};
  char *version[] = {SKYNET_BIN, "--version", NULL};
  char *bad[] = {SKYNET_BIN, "--config", "/nonexistent/skynet.yaml", NULL};
  char *usage[] = {SKYNET_BIN, "--frobnicate", NULL};

  ASSERT_EQ(run_cmd(migrate, out, sizeof out), 0);
  ASSERT_CONTAINS(out, "schema version ");
  ASSERT_EQ(run_cmd(doctor, out, sizeof out), 0);
  ASSERT_CONTAINS(out, "database");
  ASSERT_CONTAINS(out, "local (local)");
  ASSERT_EQ(run_cmd(version, out, sizeof out), 0);
  ASSERT_CONTAINS(out, "skynet ");
  ASSERT_EQ(run_cmd(bad, out, sizeof out), 2);
  ASSERT_EQ(run_cmd(usage, out, sizeof out), 2);
}

int main(void)
{
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_home, sizeof g_home, "%s/home", g_dir);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_home);
  RUN(flows_in_one_session);
  RUN(everything_survives_a_restart);
  RUN(kill9_mid_job_then_restart_finishes_it);
  RUN(command_line);
  tu_rmrf(g_dir);
  return test_summary();
}
