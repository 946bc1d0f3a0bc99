/* End to end: the skynet binary on the Telegram channel against a fake Bot
 * API server (fakebot.h) that holds getUpdates like Telegram.  Covers
 * commands, tasks with results, approval by buttons (admin, non-admin,
 * stale, forged), unknown users, 429 retry_after, 5xx and dropped
 * connections, malformed updates, kill -9 then restart with each update
 * answered exactly once, 400 "can't parse entities" (plain text again), 403
 * (failed, not retried), SIGTERM flushing within the grace period and keeping
 * the rest for the next start, a getUpdates 5xx storm, responses cut off
 * mid-way, a getUpdates that answers at once, long output as a document,
 * paced and coalesced progress edits, unsupported methods (logged once,
 * degraded), and a backlog in one chat not holding up the others. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../harness.h"
#include "../ledgerutil.h"
#include "../testutil.h"
#include "engine/buf.h"
#include "../faketls.h"
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

/* Like start(), with skynet's log (stderr) in p->buf too. */
static int start_logged(struct proc *p)
{
  char cmd[600];
  char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  size_t m = fk_mark(&g_fk);

  snprintf(cmd, sizeof cmd, "exec '%s' run 2>&1", SKYNET_BIN);
  if (proc_start(p, argv, g_env))
    return -1;
  g_cur = p->pid;
  return fk_wait(&g_fk, m, "getUpdates", NULL, NULL, 10000) >= 0 ? 0 : -1;
}

/* SIGTERM; the exit code, reading the output meanwhile; *ms how long it took. */
static int stop_timed(struct proc *p, long long *ms)
{
  long long t0 = fk_ms();
  int rc;

  kill(p->pid, SIGTERM);
  rc = proc_finish(p, 30000);
  *ms = fk_ms() - t0;
  g_cur = 0;
  return rc;
}

static int count_in(const char *hay, const char *needle)
{
  int n = 0;

  for (const char *h = hay; h && (h = strstr(h, needle)); h += strlen(needle))
    n++;
  return n;
}

/* Waits until the poller has confirmed update id (asked for offset id+1). */
static int confirmed(size_t from, long long id)
{
  char off[48];

  snprintf(off, sizeof off, "\"offset\":%lld,", id + 1);
  return fk_wait(&g_fk, from, "getUpdates", off, NULL, 10000) >= 0;
}

/* Queues a notification the way the engine does: straight into the outbox;
 * messages with one edit_key (may be NULL) edit one Telegram message. */
static int outbox_put_keyed(long long chat, const char *text, const char *edit_key)
{
  char url[800];
  struct ledger *l;
  struct outbox_msg m = {0};
  enum err e;

  snprintf(url, sizeof url, "sqlite://%s/skynet.db", g_home);
  if (!(l = tu_ledger_open(url)))
    return -1;
  m.channel = "telegram";
  m.chat_id = chat;
  m.text = (char *)text;
  m.edit_key = (char *)edit_key;
  e = ledger_outbox_put(l, &m, NULL);
  ledger_close(l);
  return e == ERR_OK ? 0 : -1;
}

static int outbox_put(long long chat, const char *text)
{
  return outbox_put_keyed(chat, text, NULL);
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
  ASSERT(fk_wait(&g_fk, 0, "setMyCommands", "\"command\":\"task\"", "\"command\":\"initiative\"", 10000) >= 0);

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

/* Updates that arrived while skynet was down come with the first
 * getUpdates, which is sent while skynet is still starting: it asks from
 * the stored offset, and each of them is answered once, none before. */
TEST(updates_waiting_at_start_are_answered_once)
{
  struct proc p;
  size_t m = fk_mark(&g_fk), m2;
  long hit;

  ASSERT(start(&p) == 0);
  fk_msg(&g_fk, 10, 80, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":80,", NULL, 10000) >= 0);
  ASSERT_EQ(stop(&p), 0);
  for (int i = 1; i <= 3; i++)
    fk_msg(&g_fk, 10, 80 + i, "\\/help");
  m2 = fk_mark(&g_fk);
  ASSERT(start(&p) == 0);
  hit = fk_wait(&g_fk, m2, "getUpdates", "\"offset\":", NULL, 1000);
  ASSERT(hit >= 0);
  ASSERT(strstr(g_fk.recs[hit].body, "\"offset\":0,") == NULL);
  for (int i = 1; i <= 3; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 80 + i);
    ASSERT(fk_wait(&g_fk, m2, "sendMessage", chat, NULL, 15000) >= 0);
  }
  tu_sleep_ms(1500);
  for (int i = 0; i <= 3; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 80 + i);
    ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", chat), 1);
  }
  ASSERT_EQ(stop(&p), 0);
}

/* 400 "can't parse entities": the same message again as plain text. */
TEST(formatting_rejected_resends_plain)
{
  struct proc p;
  size_t m;
  long a, b;

  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_400_ENTITIES, 1, 0);
  fk_msg(&g_fk, 10, 50, "\\/help");
  ASSERT((a = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":50,", NULL, 10000)) >= 0);
  ASSERT_EQ(g_fk.recs[a].fault, FK_400_ENTITIES);
  ASSERT(strstr(g_fk.recs[a].body, "\"parse_mode\":\"HTML\""));
  ASSERT((b = fk_wait(&g_fk, (size_t)a + 1, "sendMessage", "\"chat_id\":50,", "SKYNET online",
                      10000)) >= 0);
  ASSERT_EQ(g_fk.recs[b].fault, FK_NONE);
  ASSERT(!strstr(g_fk.recs[b].body, "parse_mode"));
  tu_sleep_ms(1500);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":50,", NULL), 2);
  ASSERT_EQ(stop(&p), 0);
}

/* 403 (the user blocked the bot): marked failed and logged, never retried;
 * other chats are not held up. */
TEST(blocked_chat_is_failed_not_retried)
{
  struct proc p;
  size_t m;
  long a;
  long long ms;

  ASSERT(start_logged(&p) == 0);
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_403, 1, 0);
  fk_msg(&g_fk, 10, 51, "\\/help");
  ASSERT((a = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":51,", NULL, 10000)) >= 0);
  ASSERT_EQ(g_fk.recs[a].fault, FK_403);
  fk_msg(&g_fk, 10, 52, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":52,", "SKYNET online", 10000) >= 0);
  tu_sleep_ms(3000);     /* a retry would come after 1-2 s */
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":51,", NULL), 1);
  ASSERT(proc_expect(&p, "blocked by the user", 2000));
  ASSERT_EQ(stop_timed(&p, &ms), 0);
  proc_release(&p);
}

/* SIGTERM sends what can go within the grace period (here: replies held by
 * the 1/s chat limit), then exits. */
TEST(sigterm_flushes_within_grace)
{
  struct proc p;
  size_t m;
  long long last = 0, ms;

  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  for (int i = 0; i < 4; i++)
    last = fk_msg(&g_fk, 10, 60, "\\/help");
  ASSERT(confirmed(m, last));
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":60,", NULL, 10000) >= 0);
  ASSERT_EQ(stop_timed(&p, &ms), 0);
  proc_release(&p);
  ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", "\"chat_id\":60,"), 4);
  ASSERT(ms >= 2500);    /* three more at 1/s were waited for ... */
  ASSERT(ms < 9000);     /* ... and no longer than needed */
}

/* With Telegram unreachable, SIGTERM keeps the unsent replies (after the
 * grace period); a plain restart sends each exactly once. */
TEST(pending_replies_survive_a_restart)
{
  struct proc p;
  size_t m;
  long long last = 0, ms;

  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "sendMessage", FK_DROP, 1000000, 0);
  for (int i = 0; i < 3; i++)
    last = fk_msg(&g_fk, 10, 61 + i, "\\/help");
  ASSERT(confirmed(m, last));
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":63,", NULL, 10000) >= 0);
  ASSERT_EQ(stop_timed(&p, &ms), 0);
  proc_release(&p);
  ASSERT(ms < 10000 + 3000);   /* the grace period (10 s) and not much more */
  ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", "\"chat_id\":61,"), 0);
  fk_fault(&g_fk, "sendMessage", FK_NONE, 0, 0);
  ASSERT(start(&p) == 0);
  for (int i = 0; i < 3; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 61 + i);
    for (long long until = fk_ms() + 20000;
         fk_count_ok(&g_fk, m, "sendMessage", chat) < 1 && fk_ms() < until;)
      tu_sleep_ms(50);
  }
  tu_sleep_ms(1500);
  for (int i = 0; i < 3; i++) {
    char chat[32];
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 61 + i);
    ASSERT_EQ(fk_count_ok(&g_fk, m, "sendMessage", chat), 1);
  }
  ASSERT_EQ(stop(&p), 0);
}

/* getUpdates answering 500 again and again: growing pauses (no busy loop),
 * then polling resumes and updates are answered; a getUpdates and a
 * sendMessage cut off mid-response are retried. */
TEST(getupdates_storm_and_cut_responses)
{
  struct proc p;
  size_t m;
  long i1, i2, i3, i4;
  long long id;

  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "getUpdates", FK_500, 3, 0);
  id = fk_msg(&g_fk, 10, 70, "\\/help");     /* ends the held poll; the storm follows */
  ASSERT((i1 = fk_wait(&g_fk, m, "getUpdates", NULL, NULL, 10000)) >= 0);
  ASSERT((i2 = fk_wait(&g_fk, (size_t)i1 + 1, "getUpdates", NULL, NULL, 10000)) >= 0);
  ASSERT((i3 = fk_wait(&g_fk, (size_t)i2 + 1, "getUpdates", NULL, NULL, 10000)) >= 0);
  ASSERT((i4 = fk_wait(&g_fk, (size_t)i3 + 1, "getUpdates", NULL, NULL, 10000)) >= 0);
  ASSERT_EQ(g_fk.recs[i1].fault, FK_500);
  ASSERT_EQ(g_fk.recs[i3].fault, FK_500);
  ASSERT_EQ(g_fk.recs[i4].fault, FK_NONE);
  ASSERT(g_fk.recs[i2].at - g_fk.recs[i1].at >= 400);
  ASSERT(g_fk.recs[i3].at - g_fk.recs[i2].at >= 900);
  ASSERT(g_fk.recs[i4].at - g_fk.recs[i3].at >= 1900);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":70,", "SKYNET online", 10000) >= 0);
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 71, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":71,", "SKYNET online", 10000) >= 0);
  (void)id;

  /* cut off mid-response */
  m = fk_mark(&g_fk);
  fk_fault(&g_fk, "getUpdates", FK_HALF, 1, 0);
  fk_msg(&g_fk, 10, 72, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":72,", "SKYNET online", 10000) >= 0);
  fk_msg(&g_fk, 10, 73, "\\/help");   /* after the cut poll */
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":73,", "SKYNET online", 10000) >= 0);
  ASSERT(fk_find(&g_fk, m, "getUpdates", NULL, NULL) >= 0);
  fk_fault(&g_fk, "sendMessage", FK_HALF, 1, 0);
  fk_msg(&g_fk, 10, 74, "\\/help");
  for (long long until = fk_ms() + 15000;
       fk_count_ok(&g_fk, m, "sendMessage", "\"chat_id\":74,") < 2 && fk_ms() < until;)
    tu_sleep_ms(50);
  /* the cut one counts as answered by the fake; the retry is the second */
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":74,", NULL), 2);
  tu_sleep_ms(1500);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":72,", NULL), 1);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":73,", NULL), 1);
  ASSERT_EQ(stop(&p), 0);
}

/* A getUpdates that answers at once (an emulator without long polling) is
 * not a busy loop. */
TEST(instant_getupdates_is_no_busy_loop)
{
  struct proc p;
  size_t m;
  int n;

  ASSERT(start(&p) == 0);
  pthread_mutex_lock(&g_fk.mu);
  g_fk.instant = 1;
  pthread_mutex_unlock(&g_fk.mu);
  fk_msg(&g_fk, 10, 75, "\\/help");     /* ends the held poll */
  m = fk_mark(&g_fk);
  tu_sleep_ms(2000);
  n = fk_count(&g_fk, m, "getUpdates", NULL, NULL);
  ASSERT(n >= 3);        /* still polling ... */
  ASSERT(n <= 12);       /* ... about 5 a second, not thousands */
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 76, "\\/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":76,", "SKYNET online", 10000) >= 0);
  pthread_mutex_lock(&g_fk.mu);
  g_fk.instant = 0;
  pthread_mutex_unlock(&g_fk.mu);
  ASSERT_EQ(stop(&p), 0);
}

/* A long output goes as a file. */
TEST(long_output_as_document)
{
  struct proc p;
  struct buf b = BUF_INIT(64 * 1024);
  size_t m;
  long d;

  for (int i = 0; i < 1200; i++)
    buf_printf(&b, "line %04d <ok> & ü\n", i);
  buf_appends(&b, "END-OF-OUTPUT");
  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  ASSERT(outbox_put(77, buf_str(&b)) == 0);
  ASSERT((d = fk_wait(&g_fk, m, "sendDocument", "END-OF-OUTPUT", NULL, 10000)) >= 0);
  ASSERT(strstr(g_fk.recs[d].body, "line 0000 <ok> & ü"));
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":77,", NULL), 0);
  ASSERT_EQ(stop(&p), 0);
  buf_release(&b);
}

/* A server without sendChatAction, setMyCommands and sendDocument: each is
 * logged once and its feature degrades (no typing, no menu, text instead of
 * a file); the bot keeps working. */
TEST(unsupported_methods_degrade)
{
  struct proc p;
  struct buf b = BUF_INIT(64 * 1024);
  size_t m;
  long long ms;

  for (int i = 0; i < 800; i++)
    buf_printf(&b, "row %04d ==================\n", i);
  buf_appends(&b, "END-OF-OUTPUT");
  fk_unsupported(&g_fk, "sendChatAction");
  fk_unsupported(&g_fk, "setMyCommands");
  fk_unsupported(&g_fk, "sendDocument");
  m = fk_mark(&g_fk);
  ASSERT(start_logged(&p) == 0);
  fk_msg(&g_fk, 10, 78, "\\/task check disk usage");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":78,", "QUEUED", 10000) >= 0);
  fk_msg(&g_fk, 10, 78, "\\/task check disk usage");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":78,", "SUCCEEDED", 20000) >= 0);
  ASSERT_EQ(fk_count(&g_fk, m, "sendChatAction", NULL, NULL), 1);
  ASSERT(outbox_put(79, buf_str(&b)) == 0);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":79,", "END-OF-OUTPUT", 15000) >= 0);
  ASSERT(outbox_put(79, buf_str(&b)) == 0);
  tu_sleep_ms(300);
  ASSERT_EQ(fk_count(&g_fk, m, "sendDocument", NULL, NULL), 1);   /* tried once only */
  ASSERT(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":79,", "row 0000") >= 1);
  fk_supported_all(&g_fk);
  ASSERT_EQ(stop_timed(&p, &ms), 0);
  ASSERT_EQ(count_in(p.buf, "sendChatAction unsupported"), 1);
  ASSERT_EQ(count_in(p.buf, "setMyCommands unsupported"), 1);
  ASSERT_EQ(count_in(p.buf, "sendDocument unsupported"), 1);
  ASSERT(!strstr(p.buf, FK_TOKEN));
  proc_release(&p);
  buf_release(&b);
}

/* Progress edits of one message: at most one per second, and a burst of
 * them collapses so that the last one wins. */
TEST(progress_edits_paced_and_coalesced)
{
  struct proc p;
  size_t m;
  long a, b;
  char text[64];

  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  ASSERT(outbox_put_keyed(85, "progress 0/5", "job:9999:progress") == 0);
  ASSERT((a = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":85,", "progress 0\\/5", 10000)) >= 0);
  for (int i = 1; i <= 5; i++) {
    snprintf(text, sizeof text, "progress %d/5", i);
    ASSERT(outbox_put_keyed(85, text, "job:9999:progress") == 0);
  }
  ASSERT((b = fk_wait(&g_fk, m, "editMessageText", "\"chat_id\":85,", "progress 5\\/5",
                      10000)) >= 0);
  ASSERT(g_fk.recs[b].at - g_fk.recs[a].at >= 1000);
  tu_sleep_ms(2500);
  ASSERT(fk_count(&g_fk, m, "editMessageText", "\"chat_id\":85,", NULL) <= 2);
  ASSERT_EQ(fk_count(&g_fk, m, "sendMessage", "\"chat_id\":85,", NULL), 1);
  /* the last edit is the last word */
  ASSERT_EQ(fk_find(&g_fk, (size_t)b + 1, "editMessageText", "\"chat_id\":85,", NULL), -1);
  ASSERT_EQ(stop(&p), 0);
}

/* Drops what is still queued for chat (skynet stopped), so later tests
 * start clean. */
static void outbox_drop(long long chat)
{
  char url[800];
  struct ledger *l;
  struct outbox_msg *v = NULL;
  size_t n = 0;

  snprintf(url, sizeof url, "sqlite://%s/skynet.db", g_home);
  if (!(l = tu_ledger_open(url)))
    return;
  if (l->ops->outbox_pending(l, "telegram", INT64_MAX, 1000, &v, &n) == ERR_OK)
    for (size_t i = 0; i < n; i++)
      if (v[i].chat_id == chat)
        l->ops->outbox_done(l, v[i].id);
  outbox_list_free(v, n);
  ledger_close(l);
}

/* A backlog for one chat (held at 1/s) does not hold up a reply to another. */
TEST(backlog_in_one_chat_does_not_block_others)
{
  struct proc p;
  char text[64];
  size_t m;
  long a;

  for (int i = 0; i < 80; i++) {
    snprintf(text, sizeof text, "backlog %d", i);
    ASSERT(outbox_put(86, text) == 0);
  }
  ASSERT(start(&p) == 0);
  m = fk_mark(&g_fk);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":86,", "backlog 1", 10000) >= 0);
  long long t0 = fk_ms();
  fk_msg(&g_fk, 10, 87, "\\/help");
  ASSERT((a = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":87,", "SKYNET online", 10000)) >= 0);
  ASSERT(g_fk.recs[a].at - t0 < 1500);
  proc_kill9(&p);
  proc_release(&p);
  outbox_drop(86);
}

/* Over HTTPS (a TLS relay in front of the fake, its CA in SSL_CERT_FILE):
 * the first start keeps its TLS session in HOME/telegram.tls (0600), and a
 * restart resumes it rather than a full handshake; both answer. */
TEST(https_restart_resumes_the_tls_session)
{
  static struct ft_relay relay;
  char certs[700], api[128], ca[800], path[700];
  char *env[] = {g_env_home, api, g_env_token, ca, "SKYNET_CONFIG=", "SKYNET_LLM=offline",
                 "SKYNET_LOG=warn", "SKYNET_DATABASE_URL=", "SKYNET_ALLOWED_USERS=10,11", NULL};
  char *argv[] = {SKYNET_BIN, "run", NULL};
  struct stat st;
  struct proc p;
  size_t m;
  int resumed;

  snprintf(certs, sizeof certs, "%s/certs", g_dir);
  mkdir(certs, 0700);
  if (ft_make_certs(certs) || ft_start(&relay, certs, g_fk.port)) {
    fprintf(stderr, "  no openssl CLI or TLS relay failed: %s\n", getenv("CI") ? "failing"
                                                                           : "skipped");
    ASSERT(!getenv("CI"));
    return;
  }
  snprintf(api, sizeof api, "SKYNET_TELEGRAM_API=https://localhost:%d", relay.port);
  snprintf(ca, sizeof ca, "SSL_CERT_FILE=%s/ca.crt", certs);
  snprintf(path, sizeof path, "%s/telegram.tls", g_home);
  unlink(path);
  for (int run = 0; run < 2; run++) {
    char chat[32];
    m = fk_mark(&g_fk);
    resumed = relay.resumed;
    ASSERT(proc_start(&p, argv, env) == 0);
    g_cur = p.pid;
    ASSERT(fk_wait(&g_fk, m, "getUpdates", NULL, NULL, 10000) >= 0);
    fk_msg(&g_fk, 10, 90 + run, "\\/help");
    snprintf(chat, sizeof chat, "\"chat_id\":%d,", 90 + run);
    ASSERT(fk_wait(&g_fk, m, "sendMessage", chat, NULL, 10000) >= 0);
    ASSERT_EQ(stop(&p), 0);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    if (run == 0)               /* the first connection had nothing to resume */
      ASSERT(relay.handshakes - relay.resumed >= 1);
    else                        /* every connection of the restart resumed */
      ASSERT(relay.resumed > resumed);
  }
  ASSERT_EQ(relay.handshakes_failed, 0);
  ft_stop(&relay);
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
  RUN(updates_waiting_at_start_are_answered_once);
  reap();
  RUN(formatting_rejected_resends_plain);
  reap();
  RUN(blocked_chat_is_failed_not_retried);
  reap();
  RUN(sigterm_flushes_within_grace);
  reap();
  RUN(pending_replies_survive_a_restart);
  reap();
  RUN(getupdates_storm_and_cut_responses);
  reap();
  RUN(instant_getupdates_is_no_busy_loop);
  reap();
  RUN(long_output_as_document);
  reap();
  RUN(progress_edits_paced_and_coalesced);
  reap();
  fk_supported_all(&g_fk);
  RUN(unsupported_methods_degrade);
  reap();
  fk_supported_all(&g_fk);
  RUN(backlog_in_one_chat_does_not_block_others);
  reap();
  RUN(https_restart_resumes_the_tls_session);
  reap();
  tu_rmrf(g_dir);
  return test_summary();
}
