/* The conversation manager over a real SQLite ledger: access control, the
 * per-user rate limit, commands addressed to other bots, approval rights. */
#include "../harness.h"
#include "../testutil.h"
#include "bot/conv.h"
#include "engine/log.h"

static struct cfg g_cfg;
static struct registry g_reg;
static struct orch *g_orch;
static struct ledger *g_l;
static struct conv *g_conv;
static int64_t g_allowed[] = {5, 6, 7};
static int64_t g_admins[] = {6};

static size_t pending(int64_t chat, const char *needle)
{
  struct outbox_msg *v;
  size_t n, hits = 0;

  if (g_l->ops->outbox_pending(g_l, "unit", ledger_now_ms(), 10000, &v, &n))
    return 0;
  for (size_t i = 0; i < n; i++)
    hits += v[i].chat_id == chat && (!needle || strstr(v[i].text, needle));
  outbox_list_free(v, n);
  return hits;
}

static enum err say(int64_t user, const char *text, struct conv_out *out)
{
  struct conv_in in = {"unit", user, user, NULL, text, NULL, "skynet_bot", 0};
  return conv_handle(g_conv, &in, out);
}

TEST(strangers_get_a_refusal_and_nothing_is_stored)
{
  struct conv_out out;
  struct chat_msg *m;
  size_t n;

  ASSERT_EQ(say(99, "/task check disk usage", &out), ERR_OK);
  ASSERT_EQ(out.refused, 1);
  ASSERT_EQ(pending(99, "Access denied"), 1);
  ASSERT_EQ(g_l->ops->msg_recent(g_l, "unit", 99, 10, &m, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  chat_msg_list_free(m, n);
  struct job_filter f = {"unit", 99, 1, JOB_CREATED, 10};
  struct job *v;
  ASSERT_EQ(g_l->ops->job_list(g_l, &f, &v, &n), ERR_OK);
  ASSERT_EQ(n, 0);
  job_list_free(v, n);
}

TEST(rate_limit_per_user)
{
  struct conv_out out;

  for (int i = 0; i < 14; i++)
    ASSERT_EQ(say(5, "/help", &out), ERR_OK);
  ASSERT_EQ(pending(5, "/task <what to do>"), 10);
  ASSERT_EQ(pending(5, "Slow down"), 1);
  /* another user is not held back */
  ASSERT_EQ(say(6, "/help", &out), ERR_OK);
  ASSERT_EQ(pending(6, "/task <what to do>"), 1);
}

TEST(commands_for_other_bots_are_ignored)
{
  struct conv_out out;
  size_t before = pending(6, NULL);

  ASSERT_EQ(say(6, "/help@other_bot", &out), ERR_OK);
  ASSERT_EQ(pending(6, NULL), before);
  ASSERT_EQ(say(6, "/help@skynet_bot", &out), ERR_OK);
  ASSERT_EQ(pending(6, NULL), before + 1);
}

TEST(approval_rights_follow_risk)
{
  struct conv_out out;
  char cmd[64];
  struct job_filter f = {"unit", 6, 1, JOB_CREATED, 1};
  struct job *v;
  size_t n;

  ASSERT_EQ(say(6, "/task delete /tmp/skynet-conv-test-nothing", &out), ERR_OK);
  ASSERT_EQ(g_l->ops->job_list(g_l, &f, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_EQ(v[0].state, JOB_AWAITING_APPROVAL);
  int64_t id = v[0].id;
  job_list_free(v, n);
  /* user 7 is allowed but not an admin, and admins exist: may not approve */
  struct conv_in in = {"unit", 6, 7, NULL, NULL, NULL, NULL, 0};
  snprintf(cmd, sizeof cmd, "approve:%lld", (long long)id);
  in.callback_data = cmd;
  ASSERT_EQ(conv_handle(g_conv, &in, &out), ERR_OK);
  ASSERT_CONTAINS(out.callback_answer, "may not approve");
  in.user_id = 6;
  ASSERT_EQ(conv_handle(g_conv, &in, &out), ERR_OK);
  ASSERT_CONTAINS(out.callback_answer, "approved");
  ASSERT_EQ(conv_handle(g_conv, &in, &out), ERR_OK);
  ASSERT_CONTAINS(out.callback_answer, "nothing changed");
  in.callback_data = "approve:abc";
  ASSERT_EQ(conv_handle(g_conv, &in, &out), ERR_OK);
  ASSERT_CONTAINS(out.callback_answer, "Unknown button");
}

TEST(secrets_never_reach_the_outbox)
{
  struct conv_out out;

  log_add_secret("sekrit-token-123456");
  ASSERT_EQ(say(7, "/bogus sekrit-token-123456", &out), ERR_OK);
  ASSERT_EQ(pending(7, "Unknown command"), 1);
  ASSERT_EQ(pending(7, "[REDACTED]"), 1);
  ASSERT_EQ(pending(7, "sekrit-token"), 0);
  log_clear_secrets();
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
  unsetenv("SKYNET_ALLOWED_USERS");
  unsetenv("SKYNET_ADMINS");
  unsetenv("TELEGRAM_BOT_TOKEN");
  if (cfg_load(&g_cfg, NULL, err, sizeof err) || ledger_open(g_cfg.database_url, &g_l, err, sizeof err)) {
    fprintf(stderr, "setup: %s\n", err);
    return 1;
  }
  g_l->ops->migrate(g_l, &applied);
  /* the lists are the test's own; restore NULL before cfg_release */
  int64_t *sa = g_cfg.allowed_users, *sd = g_cfg.admins;
  size_t na = g_cfg.n_allowed_users, nd = g_cfg.n_admins;
  g_cfg.allowed_users = g_allowed;
  g_cfg.n_allowed_users = 3;
  g_cfg.admins = g_admins;
  g_cfg.n_admins = 1;
  registry_init(&g_reg, &g_cfg);
  if (orch_start(&g_cfg, &g_reg, 0, &g_orch, err, sizeof err) ||
      conv_new(&g_cfg, &g_reg, g_orch, g_l, &g_conv))
    return 1;
  RUN(strangers_get_a_refusal_and_nothing_is_stored);
  RUN(rate_limit_per_user);
  RUN(commands_for_other_bots_are_ignored);
  RUN(approval_rights_follow_risk);
  RUN(secrets_never_reach_the_outbox);
  conv_free(g_conv);
  orch_stop(g_orch, 0);
  registry_release(&g_reg);
  ledger_close(g_l);
  g_cfg.allowed_users = sa;
  g_cfg.n_allowed_users = na;
  g_cfg.admins = sd;
  g_cfg.n_admins = nd;
  cfg_release(&g_cfg);
  tu_rmrf(dir);
  return test_summary();
}
