/* End to end: skynet on Telegram (fake Bot API) with a model (fake Gemini).
 * A request in plain words is proposed with Approve/Deny buttons and runs
 * only after an admin presses Approve; the chat reply, the proposal and the
 * result all go out through the Bot API; the bot keeps answering other chats
 * while the model is slow (the poller never waits for it); the typing
 * indicator is sent while the model plans a /task or answers a message. */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../fakellm.h"
#include "../harness.h"
#include "../testutil.h"
#include "fakebot.h"
#include "proc.h"

static struct fk g_fk;
static struct fl g_fl;
static char g_dir[512], g_env_home[700], g_env_api[128], g_env_llm[128];

static char *const g_env[] = {
  g_env_home, g_env_api, g_env_llm, "TELEGRAM_BOT_TOKEN=" FK_TOKEN, "SKYNET_CONFIG=",
  "GEMINI_API_KEY=gm-key-SECRET", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=gemini",
  "SKYNET_LOG=warn", "SKYNET_DATABASE_URL=", "SKYNET_WORKERS=2",
  "SKYNET_ALLOWED_USERS=10,11", "SKYNET_ADMINS=10", NULL,
};

static const char memory_plan[] =
    "{\"summary\": \"check memory\", \"steps\": [{\"action\": \"memory\", \"args\": {}}], "
    "\"risk\": \"READ_ONLY\"}";

TEST(proposal_with_buttons_approved_by_an_admin)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  struct proc p;
  size_t m = fk_mark(&g_fk);
  long hit;

  ASSERT(proc_start(&p, argv, g_env) == 0);
  ASSERT(fk_wait(&g_fk, m, "getUpdates", NULL, NULL, 10000) >= 0);

  fl_push(&g_fl, 200, fl_gemini_text("{\"reply\": \"I can look.\", \"task\": \"check memory "
                                     "use\"}", 300, 10, NULL), NULL, 0, 0);
  fl_push(&g_fl, 200, fl_gemini_text(memory_plan, 900, 20, NULL), NULL, 0, 0);
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 10, "how much memory is left?");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":10,", "I can look.", 15000) >= 0);
  ASSERT(fk_find(&g_fk, m, "sendChatAction", "typing", NULL) >= 0);   /* while the model thinks */
  hit = fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":10,", "approve:1", 15000);
  ASSERT(hit >= 0);
  ASSERT(fk_find(&g_fk, (size_t)hit, "sendMessage", "deny:1", NULL) == hit);
  ASSERT(fk_find(&g_fk, (size_t)hit, "sendMessage", "I can do that as job #1", NULL) == hit);
  usleep(500 * 1000);
  ASSERT(fk_find(&g_fk, m, "sendMessage", "#1 SUCCEEDED", NULL) < 0);   /* not run */

  /* A non-admin allowed user may approve a READ_ONLY proposal; here the
   * admin does, and the plan message is edited to the outcome. */
  m = fk_mark(&g_fk);
  fk_button(&g_fk, 10, 10, "approve:1");
  ASSERT(fk_wait(&g_fk, m, "answerCallbackQuery", "#1 approved", NULL, 10000) >= 0);
  ASSERT(fk_wait(&g_fk, m, "editMessageText", "#1 QUEUED: approved", NULL, 10000) >= 0);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "#1 SUCCEEDED", NULL, 20000) >= 0);

  /* A slow model does not stall the bot: another chat's /help is answered
   * while the model still thinks about the first. */
  fl_push(&g_fl, 200, fl_gemini_text("{\"reply\": \"Slowly.\", \"task\": null}", 1, 1, NULL),
          NULL, 3000, 0);
  m = fk_mark(&g_fk);
  long long t0 = fk_ms();
  fk_msg(&g_fk, 10, 10, "think hard about it");
  fk_msg(&g_fk, 11, 11, "/help");
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":11,", "SKYNET online", 10000) >= 0);
  ASSERT(fk_ms() - t0 < 2500);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "\"chat_id\":10,", "Slowly.", 15000) >= 0);

  /* /task shows "typing" while the model plans. */
  fl_push(&g_fl, 200, fl_gemini_text(memory_plan, 10, 10, NULL), NULL, 300, 0);
  m = fk_mark(&g_fk);
  fk_msg(&g_fk, 10, 10, "/task check memory");
  ASSERT(fk_wait(&g_fk, m, "sendChatAction", "typing", NULL, 10000) >= 0);
  ASSERT(fk_wait(&g_fk, m, "sendMessage", "#2 QUEUED", NULL, 15000) >= 0);

  /* Nothing sent to Telegram carries the model key. */
  ASSERT(fk_find(&g_fk, 0, NULL, "gm-key-SECRET", NULL) < 0);

  kill(p.pid, SIGTERM);
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

int main(void)
{
  if (fk_start(&g_fk) || fl_start(&g_fl))
    return 1;
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s", g_dir);
  snprintf(g_env_api, sizeof g_env_api, "SKYNET_TELEGRAM_API=http://127.0.0.1:%d", g_fk.port);
  snprintf(g_env_llm, sizeof g_env_llm, "GEMINI_BASE_URL=http://127.0.0.1:%d", g_fl.port);
  RUN(proposal_with_buttons_approved_by_an_admin);
  tu_rmrf(g_dir);
  return test_summary();
}
