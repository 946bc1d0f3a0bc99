/* tests/bench/celery.h — the Celery + Redis baseline that the queue
 * benchmarks print beside their own figures (celery_baseline.sh). */
#ifndef SKYNET_BENCH_CELERY_H
#define SKYNET_BENCH_CELERY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Runs the Celery baseline; fills its figures, or says why not. */
static inline int run_celery(int jobs, double *rate, double *start_p99, double *rtt_p50,
                      double *rtt_p99)
{
  char cmd[1200], line[512];
  const char *off = getenv("SKYNET_BENCH_CELERY");
  FILE *f;
  int got = 0;

  if (off && strcmp(off, "0") == 0) {
    printf("celery: skipped (SKYNET_BENCH_CELERY=0)\n");
    return 0;
  }
  snprintf(cmd, sizeof cmd, "%s/tests/bench/celery_baseline.sh %d 2>&1", SKYNET_SOURCE_DIR, jobs);
  if (!(f = popen(cmd, "r"))) {
    printf("celery: skipped: cannot run %s\n", cmd);
    return 0;
  }
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "celery-figures rate=%lf start_p99=%lf rtt_p50=%lf rtt_p99=%lf", rate,
               start_p99, rtt_p50, rtt_p99) == 4)
      got = 1;
    else if (strncmp(line, "celery", 6) == 0)
      fputs(line, stdout);
  }
  pclose(f);
  return got;
}

static inline void verdict(const char *what, double ratio, double target)
{
  printf("  %-34s %6.2fx Celery (target >= %.0fx: %s)\n", what, ratio, target,
         ratio >= target ? "met" : "NOT met");
}

#endif
