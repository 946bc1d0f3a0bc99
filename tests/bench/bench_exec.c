/* bench_exec — overhead per step of the local provider and memory while
 * steps stream output.  Prints its figures; asserts nothing.
 *   bench_exec [runs]  */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "providers/exec/exec.h"

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static long rss_kb(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;

  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtol(line + 6, NULL, 10);
  if (f)
    fclose(f);
  return kb;
}

static struct exec_instance *g_inst;
static volatile int g_done;

static void *streamer(void *arg)
{
  const char *argv[] = {"head", "-c", "200000000", "/dev/zero", NULL};
  struct exec_request req = {0};
  struct exec_result res = {0};

  (void)arg;
  req.argv = argv;
  req.capture_max = 65536;
  g_inst->backend->run(g_inst, &req, &res);
  exec_result_release(&res);
  return NULL;
}

int main(int argc, char **argv)
{
  int runs = argc > 1 ? atoi(argv[1]) : 500;
  struct cfg_provider p = {"local", "local", NULL, 0};
  const char *targv[] = {"true", NULL};
  double *t = calloc((size_t)runs, sizeof *t);
  pthread_t th[8];
  int joined[8] = {0};
  long peak = 0, base;

  if (!t || exec_local.create(NULL, &p, &g_inst))
    return 1;
  for (int i = 0; i < runs; i++) {
    struct exec_request req = {0};
    struct exec_result res = {0};
    double t0 = now_ms();
    req.argv = targv;
    g_inst->backend->run(g_inst, &req, &res);
    t[i] = now_ms() - t0;
    exec_result_release(&res);
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  printf("local provider, `true`, %d runs: median %.2f ms, p90 %.2f ms, p99 %.2f ms\n", runs,
         t[runs / 2], t[runs * 9 / 10], t[runs * 99 / 100]);
  base = rss_kb();
  for (int i = 0; i < 8; i++)
    pthread_create(&th[i], NULL, streamer, NULL);
  double t0 = now_ms();
  for (int alive = 1; alive;) {
    long r = rss_kb();
    if (r > peak)
      peak = r;
    struct timespec ts = {0, 20 * 1000000L};
    nanosleep(&ts, NULL);
    alive = now_ms() - t0 < 60000;
    if (alive) {
      int busy = 0;
      for (int i = 0; i < 8; i++) {
        if (!joined[i] && pthread_tryjoin_np(th[i], NULL) == 0)
          joined[i] = 1;
        busy |= !joined[i];
      }
      if (!busy)
        break;
    }
  }
  printf("8 steps streaming 200 MB each: RSS before %ld KB, peak %ld KB, %.1f s\n", base, peak,
         (now_ms() - t0) / 1000.0);
  g_inst->backend->destroy(g_inst);
  free(t);
  return 0;
}
