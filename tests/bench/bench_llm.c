/* bench_llm — skynet's own cost of planning with a model, the model excluded:
 * a fake Gemini on 127.0.0.1 answers at once, so the time per plan is prompt
 * building, JSON encoding, the loopback HTTP round trip, parsing and plan
 * validation.  Also prints the request sizes and their token estimates.
 * Prints its figures; asserts nothing.   bench_llm [runs] */
#include "../fakellm.h"
#include "../ledgerutil.h"
#include "../testutil.h"
#include "bot/assistant.h"
#include "bot/conv.h"
#include "engine/log.h"
#include "engine/plan.h"
#include "engine/planner.h"
#include "providers/llm/llm.h"

static const char plan[] =
    "{\"summary\": \"check disk usage\", \"steps\": [{\"action\": \"disk_usage\", "
    "\"args\": {}}], \"risk\": \"READ_ONLY\"}";

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* A chat turn end to end inside skynet: conversation manager, ledger,
 * assistant thread, model client, outbox; the model answers at once. */
static void chat_end_to_end(struct fl *f, int runs)
{
  char dir[256], env[400], err[256];
  struct cfg c;
  struct registry reg;
  struct orch *o = NULL;
  struct ledger *l;
  struct conv *cv = NULL;
  struct assistant *a = NULL;
  double *t = calloc((size_t)runs, sizeof *t);

  tu_tmpdir(dir, sizeof dir);
  snprintf(env, sizeof env, "%s", dir);
  setenv("SKYNET_HOME", env, 1);
  setenv("SKYNET_CONFIG", "", 1);
  setenv("SKYNET_LLM", "gemini", 1);
  setenv("GEMINI_API_KEY", "bench-key", 1);
  snprintf(env, sizeof env, "http://127.0.0.1:%d", f->port);
  setenv("GEMINI_BASE_URL", env, 1);
  unsetenv("SKYNET_DATABASE_URL");
  unsetenv("TELEGRAM_BOT_TOKEN");
  log_setup(LOGL_ERROR, 0, NULL);
  fl_set_default(f, 200, fl_gemini_text("{\"reply\": \"Online.\", \"task\": null}", 300, 5, NULL));
  if (cfg_load(&c, NULL, err, sizeof err) || !(l = tu_ledger_open(c.database_url)) ||
      registry_init(&reg, &c) || orch_start(&c, &reg, 0, &o, err, sizeof err) ||
      conv_new(&c, &reg, o, l, &cv) || assistant_start(&c, &reg, o, &a, err, sizeof err)) {
    fprintf(stderr, "chat bench setup: %s\n", err);
    return;
  }
  conv_set_assistant(cv, a);
  for (int i = 0; i < runs + 10; i++) {
    struct conv_in in = {"console", 1000 + i, 0, NULL, "hi", NULL, NULL, 1};
    struct conv_out out;
    long long t0 = fl_us();
    int got = 0;
    if (conv_handle(cv, &in, &out))
      break;
    while (!got && fl_us() - t0 < 5000000) {
      struct outbox_msg *v = NULL;
      size_t n = 0;
      l->ops->outbox_pending(l, "console", ledger_now_ms(), 64, &v, &n);
      for (size_t k = 0; k < n; k++)
        if (v[k].chat_id == 1000 + i) {
          got = 1;
          l->ops->outbox_done(l, v[k].id);
        }
      outbox_list_free(v, n);
      if (!got)
        usleep(50);
    }
    if (i >= 10)
      t[i - 10] = (double)(fl_us() - t0) / 1000.0;
    if (i % 100 == 0)
      fl_reset(f);
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  printf("chat turn end to end (conv -> ledger -> assistant -> model -> outbox, model "
         "answering at once, SQLite with fsync, %d runs): p50 %.3f ms, p99 %.3f ms\n", runs,
         t[runs / 2], t[runs * 99 / 100]);
  assistant_stop(a);
  conv_free(cv);
  orch_stop(o, 1000);
  ledger_close(l);
  registry_release(&reg);
  cfg_release(&c);
  tu_rmrf(dir);
  free(t);
}

int main(int argc, char **argv)
{
  int runs = argc > 1 ? atoi(argv[1]) : 500;
  static const char *const providers[] = {"local", NULL};
  struct fl f;
  struct cfg c;
  struct llm *m;
  char base[64], why[256];
  double *t = calloc((size_t)runs, sizeof *t);
  size_t bytes = 0;

  if (!t || fl_start(&f))
    return 1;
  snprintf(base, sizeof base, "http://127.0.0.1:%d", f.port);
  fl_set_default(&f, 200, fl_gemini_text(plan, 1000, 40, NULL));
  memset(&c, 0, sizeof c);
  c.llm_provider = "gemini";
  c.llm_model = "bench";
  c.gemini_api_key = "bench-key";
  c.gemini_base_url = base;
  if (llm_new(&c, NULL, &m, why, sizeof why)) {
    fprintf(stderr, "%s\n", why);
    return 1;
  }
  for (int i = 0; i < runs + 20; i++) {
    struct planner_llm_in in = {0};
    struct planner_llm_out out;
    long long t0 = fl_us();
    in.text = "how full are the disks on this machine?";
    in.providers = providers;
    if (planner_llm(m, &in, &out, why, sizeof why)) {
      fprintf(stderr, "plan failed: %s\n", why);
      return 1;
    }
    if (i >= 20)   /* warm-up excluded */
      t[i - 20] = (double)(fl_us() - t0) / 1000.0;
    bytes = out.request_bytes;
    free(out.plan_json);
    if (i % 100 == 0)
      fl_reset(&f);
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  printf("model planning overhead (fake model answering at once, %d runs): "
         "p50 %.3f ms, p99 %.3f ms\n", runs, t[runs / 2], t[runs * 99 / 100]);
  printf("planning request: %zu bytes (about %zu tokens)\n", bytes, bytes / 4);
  llm_free(m);
  free(t);
  chat_end_to_end(&f, runs / 5 > 20 ? runs / 5 : 20);
  return 0;
}
