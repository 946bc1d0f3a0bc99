/* /status <id> in chat: the output tail comes from the log store (every
 * step, live while the job runs) and the job's artifacts are listed. */
#include "../harness.h"
#include "../testutil.h"
#include "bot/conv.h"
#include "engine/log.h"

static struct cfg g_cfg;
static struct registry g_reg;
static struct orch *g_orch;
static struct ledger *g_l;
static struct conv *g_conv;

/* The newest outbox message for the console chat, malloc'd. */
static char *last_reply(void)
{
  struct outbox_msg *v;
  char *t = NULL;
  size_t n;

  if (g_l->ops->outbox_pending(g_l, "console", ledger_now_ms(), 10000, &v, &n))
    return NULL;
  if (n)
    t = strdup(v[n - 1].text);
  outbox_list_free(v, n);
  return t;
}

static char *status_of(int64_t id)
{
  char cmd[64];
  struct conv_out out;
  struct conv_in in = {"console", 0, 0, NULL, cmd, NULL, NULL, 1};

  snprintf(cmd, sizeof cmd, "/status %lld", (long long)id);
  if (conv_handle(g_conv, &in, &out))
    return NULL;
  return last_reply();
}

static int64_t submit(const char *plan)
{
  struct submit_req r = {"console", 0, 0, "test", plan, "test", 0};
  struct submit_res res;

  if (orch_submit(g_orch, g_l, &r, &res) != ERR_OK)
    return 0;
  submit_res_release(&res);
  return res.job_id;
}

static enum job_state state_of(int64_t id)
{
  struct job j;
  enum job_state st = JOB_CREATED;

  if (g_l->ops->job_get(g_l, id, &j) == ERR_OK) {
    st = j.state;
    job_release(&j);
  }
  return st;
}

TEST(tail_of_every_step_and_artifacts)
{
  char dir[512], file[600], plan[1200], *t;
  int64_t id;
  FILE *f;

  tu_tmpdir(dir, sizeof dir);
  snprintf(file, sizeof file, "%s/report.txt", dir);
  f = fopen(file, "w");
  ASSERT(f != NULL);
  fputs("abc", f);
  fclose(f);
  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"from-step-one\"]}},"
           "{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"from-step-two\"],\"artifacts\":[\"%s\"]}}]}", file);
  id = submit(plan);
  ASSERT(id > 0);
  for (int i = 0; i < 500 && !job_state_terminal(state_of(id)); i++)
    tu_sleep_ms(20);
  ASSERT_EQ(state_of(id), JOB_SUCCEEDED);
  t = status_of(id);
  ASSERT_CONTAINS(t, "SUCCEEDED");
  ASSERT_CONTAINS(t, "from-step-one\nfrom-step-two");
  ASSERT_CONTAINS(t, "Artifacts:\n");
  ASSERT_CONTAINS(t, "report.txt (3 B, sha ba7816bf8f01, step 2)");
  free(t);
  tu_rmrf(dir);
}

TEST(tail_is_live_while_running)
{
  int64_t id = submit("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"echo\",\"early-output\"]}},"
                      "{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"32.5\"]}}]}");
  char *t = NULL;

  ASSERT(id > 0);
  for (int i = 0; i < 500; i++) {
    free(t);
    t = status_of(id);
    if (t && strstr(t, "early-output"))
      break;
    tu_sleep_ms(20);
  }
  ASSERT_CONTAINS(t, "RUNNING");
  ASSERT_CONTAINS(t, "early-output");
  ASSERT(strstr(t, "Artifacts") == NULL);
  free(t);
  ASSERT_EQ(orch_cancel(g_orch, g_l, id, "test"), ERR_OK);
  for (int i = 0; i < 500 && !job_state_terminal(state_of(id)); i++)
    tu_sleep_ms(20);
  ASSERT_EQ(state_of(id), JOB_CANCELLED);
}

int main(void)
{
  char dir[512], home[600], err[256];
  int applied;

  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(dir, sizeof dir);
  snprintf(home, sizeof home, "%s/home", dir);
  setenv("SKYNET_HOME", home, 1);
  setenv("SKYNET_CONFIG", "", 1);
  unsetenv("SKYNET_DATABASE_URL");
  unsetenv("TELEGRAM_BOT_TOKEN");
  if (cfg_load(&g_cfg, NULL, err, sizeof err) || ledger_open(g_cfg.database_url, &g_l, err, sizeof err)) {
    fprintf(stderr, "setup: %s\n", err);
    return 1;
  }
  g_l->ops->migrate(g_l, &applied);
  g_cfg.kill_grace_ms = 300;
  registry_init(&g_reg, &g_cfg);
  if (orch_start(&g_cfg, &g_reg, 1, &g_orch, err, sizeof err) ||
      conv_new(&g_cfg, &g_reg, g_orch, g_l, &g_conv))
    return 1;
  RUN(tail_of_every_step_and_artifacts);
  RUN(tail_is_live_while_running);
  conv_free(g_conv);
  orch_stop(g_orch, 1000);
  registry_release(&g_reg);
  ledger_close(g_l);
  cfg_release(&g_cfg);
  tu_rmrf(dir);
  return test_summary();
}
