/* /status <id> in chat: the output tail comes from the log store (every
 * step, live while the job runs) and the job's artifacts are listed.
 * /providers answers from the provider monitor's last check, not by asking
 * a slow provider while the channel's transaction waits. */
#include "../harness.h"
#include "../testutil.h"
#include "bot/conv.h"
#include "engine/log.h"
#include "engine/sentinel.h"

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

/* A provider whose health check takes 1.5 s (an ssh host or a gateway
 * that does not answer): /providers asks it itself only while the monitor
 * has not checked it yet; then it answers at once, from the last check. */
TEST(providers_answer_from_the_monitor)
{
  char dir[512], conf[600], err[256], *t;
  struct registry reg;
  struct sentinel *sn = NULL;
  struct conv *c = NULL;
  struct conv_out out;
  struct conv_in in = {"console", 0, 0, NULL, "/providers", NULL, NULL, 1};
  struct cfg cfg;
  long long t0, live, monitored;
  FILE *f;

  tu_tmpdir(dir, sizeof dir);
  snprintf(conf, sizeof conf, "%s/skynet.yaml", dir);
  ASSERT((f = fopen(conf, "w")) != NULL);
  fputs("providers:\n  default: local\n  local: {type: local}\n"
        "  slow: {type: mock, health_delay_ms: 1500}\n", f);
  fclose(f);
  ASSERT_EQ(cfg_load(&cfg, conf, err, sizeof err), ERR_OK);
  ASSERT_EQ(registry_init(&reg, &cfg), ERR_OK);
  ASSERT_EQ(conv_new(&cfg, &reg, g_orch, g_l, &c), ERR_OK);
  ASSERT_EQ(sentinel_new(&sn, &reg, 0, 3, NULL, NULL), ERR_OK);   /* checks on demand */
  conv_set_sentinel(c, sn);
  t0 = tu_now_ms();
  ASSERT_EQ(conv_handle(c, &in, &out), ERR_OK);
  live = tu_now_ms() - t0;
  t = last_reply();
  ASSERT_CONTAINS(t, "slow (mock): up — mock: scripted, healthy");
  free(t);
  sentinel_check_now(sn);
  t0 = tu_now_ms();
  ASSERT_EQ(conv_handle(c, &in, &out), ERR_OK);
  monitored = tu_now_ms() - t0;
  t = last_reply();
  ASSERT_CONTAINS(t, "slow (mock): up — mock: scripted, healthy · monitor: up after 1 checks");
  ASSERT_CONTAINS(t, "local (local) default: up");
  free(t);
  fprintf(stderr, "  /providers: %lld ms asking the providers, %lld ms from the monitor\n", live,
          monitored);
  ASSERT(live >= 1400);
  ASSERT(monitored < 500);
  conv_free(c);
  sentinel_free(sn);
  registry_release(&reg);
  cfg_release(&cfg);
  tu_rmrf(dir);
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
  RUN(providers_answer_from_the_monitor);
  conv_free(g_conv);
  orch_stop(g_orch, 1000);
  registry_release(&g_reg);
  ledger_close(g_l);
  cfg_release(&g_cfg);
  tu_rmrf(dir);
  return test_summary();
}
