/* bench_llm — skynet's own cost of planning with a model, the model excluded:
 * a fake Gemini on 127.0.0.1 answers at once, so the time per plan is prompt
 * building, JSON encoding, the loopback HTTP round trip, parsing and plan
 * validation.  Also prints the request sizes and their token estimates.
 * Prints its figures; asserts nothing.   bench_llm [runs] */
#include "../fakellm.h"
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
  return 0;
}
