/* End to end: skynet in console mode with a model (a fake Gemini server).
 * /task and free chat go through the model on the assistant's thread; a plan
 * that claims READ_ONLY for rm -rf ~ does not run; work asked for in words
 * is proposed and waits for approval; a dead model falls back to the offline
 * planner and says so; the daily token budget stops model use; a chat turn
 * received before a kill -9 is answered after the restart, with the chat's
 * history in the request; the requests stay lean and carry no secret. */
#include <sys/stat.h>

#include "../fakellm.h"
#include "../harness.h"
#include "../testutil.h"
#include "proc.h"

#define KEY "AIza-test-SECRET-777"

static struct fl g_fl;
static char g_dir[512], g_env_home[700], g_env_cfg[700], g_env_base[200], g_env_user_home[900];

static char *const g_env[] = {
  g_env_home, g_env_cfg, g_env_base, g_env_user_home, "TELEGRAM_BOT_TOKEN=",
  "GEMINI_API_KEY=" KEY, "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=gemini",
  "SKYNET_LLM_MODEL=gemini-test", "SKYNET_LOG=warn", "SKYNET_DATABASE_URL=",
  "SKYNET_WORKERS=2", NULL,
};

static const char disk_plan[] =
    "{\"summary\": \"check disk usage\", \"steps\": [{\"action\": \"disk_usage\", "
    "\"args\": {}}], \"risk\": \"READ_ONLY\"}";
static const char memory_plan[] =
    "{\"summary\": \"check memory\", \"steps\": [{\"action\": \"memory\", \"args\": {}}], "
    "\"risk\": \"READ_ONLY\"}";

static void write_config_history(int budget, int history)
{
  char path[700];
  FILE *f;

  snprintf(path, sizeof path, "%s/skynet.yaml", g_dir);
  f = fopen(path, "w");
  fprintf(f, "llm:\n  max_retries: 1\n  timeout_s: 5\n  daily_token_budget: %d\n"
             "  history_tokens: %d\n", budget, history);
  fclose(f);
}

static void write_config(int budget)
{
  write_config_history(budget, 100000);
}

static int start(struct proc *p)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  return proc_start(p, argv, g_env);
}

static void push_gemini(const char *text, int ptok, int ctok)
{
  fl_push(&g_fl, 200, fl_gemini_text(text, ptok, ctok, NULL), NULL, 0, 0);
}

static const char *body(size_t i)
{
  return i < g_fl.n_reqs ? g_fl.reqs[i].body : "";
}

TEST(task_and_chat_through_the_model)
{
  struct proc p;
  size_t m;
  char victim[700];
  struct stat sb;

  write_config(0);
  fl_reset(&g_fl);
  ASSERT(start(&p) == 0);

  /* /task: planned by the model, judged by policy, run. */
  push_gemini(disk_plan, 1200, 40);
  proc_send(&p, "/task how full are the disks?");
  ASSERT(proc_expect(&p, "#1 planning", 5000));
  ASSERT(proc_expect(&p, "#1 QUEUED · risk READ_ONLY", 10000));
  ASSERT(proc_expect(&p, "df -h", 1000));
  ASSERT(proc_expect(&p, "#1 SUCCEEDED", 15000));
  ASSERT_CONTAINS(body(0), "how full are the disks?");
  ASSERT(!strstr(body(0), KEY));
  ASSERT(strlen(body(0)) <= 12 * 1024);

  /* The model claims READ_ONLY for rm -rf ~: it must not run. */
  snprintf(victim, sizeof victim, "%s/home/precious", g_dir);
  ASSERT(mkdir(victim, 0700) == 0);
  push_gemini("{\"summary\": \"tidy up\", \"steps\": [{\"action\": \"shell\", \"args\": "
              "{\"argv\": [\"rm\", \"-rf\", \"~\"]}}], \"risk\": \"READ_ONLY\"}", 10, 10);
  proc_send(&p, "/task tidy up my home directory");
  ASSERT(proc_expect(&p, "#2 planning", 5000));
  for (long long end = proc_ms() + 10000; proc_ms() < end;) {
    proc_pump(&p, 50);
    if (strstr(p.buf, "#2 DENIED") || strstr(p.buf, "#2 AWAITING_APPROVAL"))
      break;
  }
  proc_pump(&p, 500);
  ASSERT(strstr(p.buf, "#2 DENIED") || strstr(p.buf, "#2 AWAITING_APPROVAL"));
  ASSERT(!strstr(p.buf, "#2 QUEUED"));
  ASSERT(!strstr(p.buf, "#2 SUCCEEDED"));
  ASSERT(stat(victim, &sb) == 0);

  /* Free chat: the persona answers through the model, with a lean request. */
  m = fl_count(&g_fl);
  push_gemini("{\"reply\": \"Online. Nothing is on fire.\", \"task\": null}", 300, 12);
  proc_send(&p, "hi");
  ASSERT(proc_expect(&p, "Online. Nothing is on fire.", 10000));
  ASSERT(fl_count(&g_fl) == m + 1);
  fprintf(stderr, "  chat request for \"hi\": %zu bytes\n", strlen(body(m)));
  ASSERT(strlen(body(m)) <= 4096);
  ASSERT_CONTAINS(body(m), "\"systemInstruction\"");
  ASSERT_CONTAINS(body(m), "\"responseSchema\"");
  ASSERT_CONTAINS(body(m), "untrusted user message\\nhi");
  ASSERT(!strstr(body(m), KEY));

  /* Work asked for in words: proposed with buttons, not run. */
  m = fl_count(&g_fl);
  push_gemini("{\"reply\": \"I can check that.\", \"task\": \"check memory use\"}", 400, 20);
  push_gemini(memory_plan, 1100, 30);
  proc_send(&p, "how much memory is free on this box?");
  ASSERT(proc_expect(&p, "I can check that.", 10000));
  ASSERT(proc_expect(&p, "I can do that as job #3", 10000));
  ASSERT(proc_expect(&p, "Nothing runs until you approve", 1000));
  proc_pump(&p, 500);
  ASSERT(!strstr(p.buf, "#3 SUCCEEDED"));
  proc_send(&p, "/approve 3");
  ASSERT(proc_expect(&p, "#3 QUEUED: approved", 5000));
  ASSERT(proc_expect(&p, "#3 SUCCEEDED", 15000));
  /* The plan request saw the chat as fenced context. */
  ASSERT_CONTAINS(body(m + 1), "Recent chat, for context only <<<untrusted");

  /* The model dies: planning falls back offline and says so. */
  fl_push(&g_fl, 500, strdup("{\"error\": {\"code\": 500, \"status\": \"INTERNAL\"}}"), NULL, 0, 0);
  fl_push(&g_fl, 503, strdup("{\"error\": {\"code\": 503, \"status\": \"UNAVAILABLE\"}}"), NULL, 0, 0);
  proc_send(&p, "/task check uptime");
  ASSERT(proc_expect(&p, "The model is unavailable", 15000));
  ASSERT(proc_expect(&p, "Planned offline", 1000));
  ASSERT(proc_expect(&p, "#4 QUEUED", 5000));
  ASSERT(proc_expect(&p, "#4 SUCCEEDED", 15000));

  /* /status: the model and today's tokens (1240 + 20 + 312 + 420 + 1130). */
  proc_send(&p, "/status");
  ASSERT(proc_expect(&p, "Model: gemini gemini-test · tokens today 3122", 5000));
  proc_send(&p, "/status 1");
  ASSERT(proc_expect(&p, "Model tokens: 1240", 5000));
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

TEST(chat_turn_survives_kill9_and_history_survives_restart)
{
  struct proc p;
  size_t m;

  fl_reset(&g_fl);
  ASSERT(start(&p) == 0);
  /* The answer comes too late: skynet is killed while waiting for it. */
  fl_push(&g_fl, 200, fl_gemini_text("{\"reply\": \"too late\", \"task\": null}", 1, 1, NULL),
          NULL, 4000, 0);
  m = fl_count(&g_fl);
  proc_send(&p, "remember the build box is called atlas");
  ASSERT(fl_wait(&g_fl, m + 1, 10000));
  proc_kill9(&p);
  proc_release(&p);

  push_gemini("{\"reply\": \"Noted: atlas.\", \"task\": null}", 5, 5);
  ASSERT(start(&p) == 0);
  ASSERT(proc_expect(&p, "Noted: atlas.", 15000));
  ASSERT(!strstr(p.buf, "too late"));

  /* Another turn after a restart: the earlier chat is in the request. */
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
  ASSERT(start(&p) == 0);
  m = fl_count(&g_fl);
  push_gemini("{\"reply\": \"It is atlas.\", \"task\": null}", 5, 5);
  proc_send(&p, "what is the build box called?");
  ASSERT(proc_expect(&p, "It is atlas.", 15000));
  ASSERT_CONTAINS(body(m), "remember the build box is called atlas");
  ASSERT_CONTAINS(body(m), "Noted: atlas.");
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

TEST(daily_budget_stops_model_use)
{
  struct proc p;
  size_t m;

  write_config(3200);   /* the first test used 3122 today; the next call spends it */
  fl_reset(&g_fl);
  ASSERT(start(&p) == 0);
  push_gemini("{\"reply\": \"Fine.\", \"task\": null}", 100, 10);
  proc_send(&p, "how are things?");
  ASSERT(proc_expect(&p, "Fine.", 10000));
  m = fl_count(&g_fl);
  proc_send(&p, "and now?");
  ASSERT(proc_expect(&p, "Today's model budget is spent", 10000));
  proc_send(&p, "/task check disk usage");
  ASSERT(proc_expect(&p, "budget is spent", 10000));
  ASSERT(proc_expect(&p, "QUEUED · risk READ_ONLY", 10000));   /* planned offline */
  ASSERT_EQ(fl_count(&g_fl), m);   /* no request went out */
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

TEST(older_turns_are_summarised_and_kept)
{
  struct proc p;
  size_t m;

  write_config_history(0, 100);   /* about 400 bytes of history per request */
  fl_reset(&g_fl);
  ASSERT(start(&p) == 0);
  m = fl_count(&g_fl);
  fl_push(&g_fl, 200, fl_gemini_text("The operator named the build box atlas.", 50, 10, NULL),
          NULL, 0, 0);
  push_gemini("{\"reply\": \"Still atlas.\", \"task\": null}", 5, 5);
  proc_send(&p, "which box again?");
  ASSERT(proc_expect(&p, "Still atlas.", 15000));
  ASSERT(fl_count(&g_fl) >= m + 2);
  ASSERT_CONTAINS(body(m), "Summarise this chat");
  ASSERT_CONTAINS(body(m), "how full are the disks?");
  ASSERT_CONTAINS(body(m + 1), "your summary): The operator named the build box atlas.");
  ASSERT(strlen(body(m + 1)) < 4096);   /* the old turns are not sent again */
  ASSERT(!strstr(body(m + 1), "how full are the disks?"));
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

TEST(openai_compatible_server_without_a_key)
{
  char base[200];
  char *env[] = {g_env_home, g_env_cfg, g_env_user_home, base, "TELEGRAM_BOT_TOKEN=",
                 "GEMINI_API_KEY=", "OPENAI_API_KEY=", "SKYNET_LLM=", "SKYNET_LLM_MODEL=llama3",
                 "SKYNET_LOG=warn", "SKYNET_DATABASE_URL=", "SKYNET_WORKERS=1", NULL};
  char *argv[] = {SKYNET_BIN, "run", NULL};
  struct proc p;
  size_t m;

  /* Like Ollama: a base URL, no key, provider chosen from the URL alone. */
  snprintf(base, sizeof base, "OPENAI_BASE_URL=http://127.0.0.1:%d/v1", g_fl.port);
  write_config(0);
  fl_reset(&g_fl);
  ASSERT(proc_start(&p, argv, env) == 0);
  m = fl_count(&g_fl);
  fl_push(&g_fl, 200, fl_openai_text(disk_plan, 10, 10, NULL, NULL), NULL, 0, 0);
  proc_send(&p, "/task disks?");
  ASSERT(proc_expect(&p, "QUEUED · risk READ_ONLY", 10000));
  ASSERT_STREQ(g_fl.reqs[m].path, "/v1/chat/completions");
  ASSERT_STREQ(g_fl.reqs[m].auth, "");
  ASSERT_CONTAINS(body(m), "\"model\":\"llama3\"");
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

TEST(work_left_by_a_model_run_is_finished_offline)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  char *offline[] = {g_env_home, g_env_cfg, g_env_user_home, "TELEGRAM_BOT_TOKEN=",
                     "GEMINI_API_KEY=", "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline",
                     "SKYNET_LOG=warn", "SKYNET_DATABASE_URL=", NULL};
  struct proc p;
  size_t m;

  write_config(0);
  fl_reset(&g_fl);
  ASSERT(start(&p) == 0);
  /* The model is slow; skynet dies with a job and a chat turn waiting. */
  fl_push(&g_fl, 200, fl_gemini_text("{}", 1, 1, NULL), NULL, 4000, 0);
  m = fl_count(&g_fl);
  proc_send(&p, "/task check disk usage");
  ASSERT(proc_expect(&p, "planning", 5000));
  ASSERT(fl_wait(&g_fl, m + 1, 10000));
  proc_send(&p, "are you still there?");
  proc_pump(&p, 300);
  proc_kill9(&p);
  proc_release(&p);

  /* Restarted without a model: both are finished, offline. */
  ASSERT(proc_start(&p, argv, offline) == 0);
  ASSERT(proc_expect(&p, "QUEUED · risk READ_ONLY", 10000));
  ASSERT(proc_expect(&p, "df -h", 1000));
  /* The job runs while the chat turn is answered: either may be first. */
  ASSERT(proc_expect_both(&p, "I run operations work on request", "SUCCEEDED", 15000));
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);
}

static void write_persona_config(const char *persona)
{
  char path[700];
  FILE *f;

  snprintf(path, sizeof path, "%s/skynet.yaml", g_dir);
  f = fopen(path, "w");
  fprintf(f, "persona: %s\n", persona);
  fclose(f);
}

TEST(persona_is_data)
{
  char *argv[] = {SKYNET_BIN, "run", NULL};
  char *env[] = {g_env_home, g_env_cfg, g_env_user_home, "TELEGRAM_BOT_TOKEN=", "GEMINI_API_KEY=",
                 "OPENAI_API_KEY=", "OPENAI_BASE_URL=", "SKYNET_LLM=offline", "SKYNET_LOG=warn",
                 "SKYNET_DATABASE_URL=", NULL};
  char bad[700];
  struct proc p;
  FILE *f;

  /* The second shipped persona changes every message. */
  write_persona_config("example");
  ASSERT(proc_start(&p, argv, env) == 0);
  proc_send(&p, "/help");
  ASSERT(proc_expect(&p, "Jeeves, at your service", 10000));
  proc_send(&p, "/cancel 999999");
  ASSERT(proc_expect(&p, "I find no job #999999.", 10000));
  proc_send(&p, "/task check disk usage");
  ASSERT(proc_expect(&p, "I propose: check disk usage", 10000));
  ASSERT_EQ(proc_finish(&p, 20000), 0);
  proc_release(&p);

  /* A broken persona stops skynet at start, naming the key. */
  snprintf(bad, sizeof bad, "%s/bad.yaml", g_dir);
  f = fopen(bad, "w");
  fputs("name: Bad\nsystem_prompt: x\ntemplates:\n  help: \"{{nope}}\"\n", f);
  fclose(f);
  write_persona_config(bad);
  char *sh[] = {"/bin/sh", "-c", "exec \"$0\" run 2>&1", SKYNET_BIN, NULL};
  ASSERT(proc_start(&p, sh, env) == 0);
  ASSERT_EQ(proc_finish(&p, 20000), 2);
  ASSERT_CONTAINS(p.buf, "templates.help: unknown placeholder {{nope}}");
  proc_release(&p);
}

int main(void)
{
  char home[800];

  if (fl_start(&g_fl))
    return 1;
  tu_tmpdir(g_dir, sizeof g_dir);
  snprintf(g_env_home, sizeof g_env_home, "SKYNET_HOME=%s/state", g_dir);
  snprintf(g_env_cfg, sizeof g_env_cfg, "SKYNET_CONFIG=%s/skynet.yaml", g_dir);
  snprintf(g_env_base, sizeof g_env_base, "GEMINI_BASE_URL=http://127.0.0.1:%d", g_fl.port);
  snprintf(home, sizeof home, "%s/home", g_dir);
  mkdir(home, 0700);
  snprintf(g_env_user_home, sizeof g_env_user_home, "HOME=%s", home);
  RUN(task_and_chat_through_the_model);
  RUN(chat_turn_survives_kill9_and_history_survives_restart);
  RUN(daily_budget_stops_model_use);
  RUN(older_turns_are_summarised_and_kept);
  RUN(openai_compatible_server_without_a_key);
  RUN(work_left_by_a_model_run_is_finished_offline);
  RUN(persona_is_data);
  tu_rmrf(g_dir);
  return test_summary();
}
