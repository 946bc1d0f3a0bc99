/* bench_exec — overhead per step of the local provider and memory while
 * steps stream output.  Prints its figures; asserts nothing.
 *   bench_exec [runs]  */
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "engine/logstore.h"
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
static char g_home[] = "/tmp/skynet-bench-XXXXXX";
static int g_logged;          /* phase 2: output through the log store */

static void to_log(void *ud, const char *data, size_t n)
{
  logstore_output(ud, 1, data, n);
}

static void *streamer(void *arg)
{
  const char *argv[] = {"head", "-c", "200000000", "/dev/zero", NULL};
  const char *text[] = {"sh", "-c", "yes 'a line of build output, as a compiler prints it' | head -c 20000000", NULL};
  struct logstore_writer *w = NULL;
  struct exec_request req = {0};
  struct exec_result res = {0};
  char err[256];

  req.argv = argv;
  req.capture_max = 65536;
  if (g_logged && logstore_open(g_home, (int64_t)(intptr_t)arg + 1, &w, err, sizeof err) == ERR_OK) {
    req.argv = text;
    req.on_output = to_log;
    req.ud = w;
  }
  g_inst->backend->run(g_inst, &req, &res);
  logstore_close(w);
  exec_result_release(&res);
  return NULL;
}

int main(int argc, char **argv)
{
  int runs = argc > 1 ? atoi(argv[1]) : 500;
  struct cfg_provider p = {"local", "local", NULL, 0};
  const char *targv[] = {"true", NULL};
  double *t = calloc((size_t)runs, sizeof *t);
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
  /* The floor on this machine now: posix_spawnp and waitpid of the same
   * `true`, nothing captured, no limits, no bookkeeping. */
  for (int i = 0; i < runs; i++) {
    extern char **environ;
    double t0 = now_ms();
    pid_t pid;
    int st;
    if (posix_spawnp(&pid, "true", NULL, NULL, (char *const *)targv, environ) == 0)
      waitpid(pid, &st, 0);
    t[i] = now_ms() - t0;
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  printf("  for reference, bare posix_spawnp + waitpid of `true`: median %.2f ms, p90 %.2f ms\n",
         t[runs / 2], t[runs * 9 / 10]);
  if (!mkdtemp(g_home))
    return 1;
  for (g_logged = 0; g_logged < 2; g_logged++) {
    pthread_t th[8];
    int joined[8] = {0};
    long peak = 0, base = rss_kb();
    double t0 = now_ms();

    for (int i = 0; i < 8; i++)
      pthread_create(&th[i], NULL, streamer, (void *)(intptr_t)i);
    for (int busy = 1; busy && now_ms() - t0 < 120000;) {
      long r = rss_kb();
      if (r > peak)
        peak = r;
      struct timespec ts = {0, 20 * 1000000L};
      nanosleep(&ts, NULL);
      busy = 0;
      for (int i = 0; i < 8; i++) {
        if (!joined[i] && pthread_tryjoin_np(th[i], NULL) == 0)
          joined[i] = 1;
        busy |= !joined[i];
      }
    }
    printf("8 steps streaming %s: RSS before %ld KB, peak %ld KB, %.1f s\n",
           g_logged ? "20 MB of text lines each into the log store" : "200 MB each",
           base, peak, (now_ms() - t0) / 1000.0);
  }
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", g_home);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", g_home);
  g_inst->backend->destroy(g_inst);
  free(t);
  return 0;
}
