/* End to end: the skynet binary on the Telegram channel against a fake Bot
 * API server (fakebot.h).  Covers commands, tasks with results, approval by
 * buttons (admin, non-admin, stale, forged), unknown users, 429 retry_after,
 * 5xx and dropped connections, malformed updates, a long output, and kill -9
 * then restart with each update answered exactly once. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../harness.h"
#include "../testutil.h"
#include "fakebot.h"
#include "proc.h"

static char g_dir[512], g_home[600], g_env_home[700], g_env_api[128];
static char g_env_token[64] = "TELEGRAM_BOT_TOKEN=" FK_TOKEN;
static struct fk g_fk;
static pid_t g_cur;      /* the running skynet, killed after a failed test */

static void reap(void)
{
  int st;
  if (g_cur > 0 && waitpid(g_cur, &st, WNOHANG) == 0) {
    kill(g_cur, SIGKILL);
    waitpid(g_cur, &st, 0);
  }
  g_cur = 0;
}

static char *const g_env[] = {
  g_env_home, g_env_api, g_env_token, "SKYNET_CONFIG=", "GEMINI_API_KEY=",
  "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline", "SKYNET_LOG=warn",
  "SKYNET_DATABASE_URL=", "SKYNET_WORKERS=2", "SKYNET_ALLOWED_USERS=10,11",
  "SKYNET_ADMINS=10", NULL,
};

static int start(struct proc *p)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  size_t m = fk_mark(&g_fk);

  if (proc_start(p, argv, g_env))
    return -1;
  g_cur = p->pid;
  return fk_wait(&g_fk, m, "getUpdates", NULL, NULL, 10000) >= 0 ? 0 : -1;
}

static int stop(struct proc *p)
{
  int st = 0;
  long long until = fk_ms() + 15000;

  kill(p->pid, SIGTERM);
  while (fk_ms() < until) {
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
      proc_release(p);
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    usleep(20 * 1000);
  }
  proc_kill9(p);
  proc_release(p);
  return -1;
}

TEST(bad_token_is_fatal)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  struct proc p;

  snprintf(g_env_token, sizeof g_env_token, "TELEGRAM_BOT_TOKEN=999:wrong");
  ASSERT(proc_start(&p, argv, g_env) == 0);
  ASSERT_EQ(proc_finish(&p, 10000), 1);
  proc_release(&p);
  snprintf(g_env_token, sizeof g_env_token, "TELEGRAM_BOT_TOKEN=" FK_TOKEN);
}

TEST(commands_tasks_and_buttons)
{
  struct proc p;
  size_t m;
  long i;

  ASSERT(start(&p) == 0);
  ASSERT(fk_find(&g_fk, 0, "setMyCommands", "task", NULL) >= 0);

  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 10, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":10,", "SKYNET online", 10000) >= 0);

  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 10, "\\/task check disk usage");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "#1 QUEUED", "READ_ONLY", 10000) >= 0);
  ASSERT(fk_find(&g_fk, m, "sendChatAction", "typing", NULL) >= 0);
  ASSERT(fk_wait(&g_fk, m, NULL, "#1 SUCCEEDED", NULL, 20000) >= 0);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "Filesystem", NULL, 20000) >= 0);

  /* A WRITE task waits for approval with buttons. */
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 10, "\\/task delete \\/tmp\\/skynet-tg-demo-nonexistent");
  ASSERT((i = fk_wait(&g_fk, m, "sendMessage", "#2 AWAITING_APPROVAL", "approve:2", 10000)) >= 0);
  ASSERT(fk_find(&g_fk, (size_t)i, "sendMessage", "inline_keyboard", "deny:2") >= 0);

  /* A non-admin may not approve WRITE work when there are admins. */
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 11, 10, "approve:2");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "may not approve", NULL, 10000) >= 0);

  /* The admin approves: the plan message is edited to the outcome. */
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 10, 10, "approve:2");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "#2 approved", NULL, 10000) >= 0);
  ASSERT(fk_wait(&g_fk, m, "editMessageText", "#2 QUEUED: approved by", NULL, 10000) >= 0);

  /* A stale button and forged ones change nothing. */
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 10, 10, "approve:2");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "nothing changed", NULL, 10000) >= 0);
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 10, 10, "approve:99999");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "No such job", NULL, 10000) >= 0);
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 10, 10, "rm -rf:1");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "Unknown button", NULL, 10000) >= 0);

  /* An unknown user gets one refusal. */
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 99, 99, "\\/task check disk usage");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":99,", "Access denied", 10000) >= 0);
  tu_sleep_ms(1500);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":99,", NULL), 1);

  /* Malformed and unexpected updates are skipped; the bot keeps answering. */
  fk_push(&g_fk, "\"poll\":{\"id\":\"1\"}");
  fk_push(&g_fk, "\"message\":{\"text\":\"no chat\"}");
  fk_push(&g_fk, "\"message\":{\"message_id\":1,\"from\":{\"id\":1e400},\"chat\":{\"id\":\"x\"}}");
  fk_push(&g_fk, "\"callback_query\":{\"id\":5}");
  fk_push(&g_fk, "\"edited_message\":{\"message_id\":1,\"text\":\"\\/task rm -rf \\/\"}");
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 20, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":20,", "SKYNET online", 10000) >= 0);
  ASSERT_EQ(stop(&p), 0);
}

TEST(doctor_calls_getme)
{
  char *argv[] = {SKYNET_BIN, "doctor", NULL};
  struct proc p;

  ASSERT(proc_start(&p, argv, g_env) == 0);
  proc_finish(&p, 20000);
  ASSERT(p.buf && strstr(p.buf, "getMe ok: @skynet_test_bot"));
  ASSERT(!strstr(p.buf, FK_TOKEN));
  proc_release(&p);
}

TEST(rate_limits_and_server_faults)
{
  struct proc p;
  size_t m;
  long a, b;

  ASSERT(start(&p) == 0);
  /* 429: the bot waits exactly retry_after before sending again. */
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_429, 1, 2);
  fk_msg(&g_fk, 10, 30, "\\/help");
  ASSERT((a = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":30,", NULL, 10000)) >= 0);
  ASSERT((b = fk_wait(&g_fk, (size_t)a + 1, "sendMessage", "\"chat_id\":30,", NULL, 10000)) >= 0);
  ASSERT_EQ(g_fk.recs[a].fault, FK_429);
  ASSERT(g_fk.recs[b].at - g_fk.recs[a].at >= 2000);
  ASSERT(g_fk.recs[b].at - g_fk.recs[a].at < 3500);

  /* 5xx storm, a dropped connection and garbage: retried until delivered. */
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_500, 3, 0);
  fk_msg(&g_fk, 10, 31, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":31,", NULL, 10000) >= 0);
  for (long long until = fk_ms() + 30000;
       fk_count_ok(&g_fk, m, "sendMessage", "\"chat_id\":31,") < 1 && fk_ms() < until;)
    tu_sleep_ms(50);
  ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", "\"chat_id\":31,"), 1);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":31,", NULL), 4);

  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_DROP, 1, 0);
  fk_msg(&g_fk, 10, 32, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":32,", NULL, 10000) >= 0);
  ASSERT((a = fk_find(&g_fk, m, "sendMessage", "\"chat_id\":32,", NULL)) >= 0);
  ASSERT_EQ(g_fk.recs[a].fault, FK_DROP);
  ASSERT(fk_wait(&g_fk, (size_t)a + 1, "sendMessage", "\"chat_id\":32,", "SKYNET online", 15000) >= 0);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":32,", NULL), 2);

  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "getUpdates", FK_GARBAGE, 2, 0);
  fk_msg(&g_fk, 10, 33, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":33,", "SKYNET online", 15000) >= 0);

  /* A long output goes as a file. */
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 34, "\\/task run seq 1 3000");
  ASSERT(fk_wait(&g_fk, m, NULL, "#", "SUCCEEDED", 20000) >= 0);
  ASSERT_EQ(stop(&p), 0);
}

/* Updates are handled (effects and offset committed) while every reply
 * fails; kill -9; restart: each update is answered exactly once and no
 * queued reply is lost. */
TEST(kill9_then_restart_answers_each_update_once)
{
  struct proc p;
  size_t m = fk_mark(&g_fk);

  ASSERT(start(&p) == 0);
  fk_fault(&g_fk, "sendMessage", FK_500, 1000000, 0);
  for (int i = 0; i < 5; i++)
    fk_msg(&g_fk, 10, 40 + i, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":44,", NULL, 10000) >= 0);
  proc_kill9(&p);
  proc_release(&p);
  fk_fault(&g_fk, "sendMessage", FK_NONE, 0, 0);
  ASSERT(start(&p) == 0);
  for (int i = 0; i < 5; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 40 + i);
    ASSERT(fk_wait(&g_fk, m, "sendMessage", chat, "SKYNET online", 15000) >= 0);
    for (long long until = fk_ms() + 30000;
         fk_count_ok(&g_fk, m, "sendMessage", chat) < 1 && fk_ms() < until;)
      tu_sleep_ms(50);
  }
  tu_sleep_ms(2500);
  for (int i = 0; i < 5; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 40 + i);
    ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", chat), 1);
  }
  ASSERT_EQ(stop(&p), 0);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_home, sizeof g_home, "%s/home", g_dir);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_home);
  if (fk_start(&g_fk)) {
    fprintf(stderr, "cannot start the fake Bot API server\n");
    return 1;
  }
  snprintf(g_env_api, sizeof g_env_api, "SKYNET_TELEGRAM_API=http://127.0.0.1:%d", g_fk.port);
  RUN(bad_token_is_fatal);
  reap();
  RUN(commands_tasks_and_buttons);
  reap();
  RUN(doctor_calls_getme);
  RUN(rate_limits_and_server_faults);
  reap();
  RUN(kill9_then_restart_answers_each_update_once);
  reap();
  tu_rmrf(g_dir);
  return test_summary();
}
