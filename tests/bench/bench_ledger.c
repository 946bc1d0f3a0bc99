/* bench_ledger — the ledger as a job queue: jobs/s and enqueue-to-claim
 * latency for SQLite and (with SKYNET_TEST_PG_URL) PostgreSQL, with 1, 2 and
 * 4 claiming threads, each with its own connection.  Prints its figures;
 * asserts nothing.
 *
 *   bench_ledger [jobs]
 *
 * drain: `jobs` queued first, then the claimers claim and finish them all.
 * burst: one producer enqueues `jobs` no-op jobs (create, plan, queue: three
 * transactions) as fast as it can while the claimers claim and finish them;
 * jobs/s counts from the first enqueue to the last finish.  idle: the
 * producer enqueues one job every 5 ms to waiting claimers, which is the
 * latency an idle worker sees.  Latency runs from just before the QUEUED
 * transition to the claim's return.  PostgreSQL claimers wait with
 * wait_for_work (LISTEN/NOTIFY); SQLite claimers poll every 1 ms (in one
 * process the orchestrator wakes them with a condition variable instead). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../pgutil.h"
#include "../ledgerutil.h"
#include "../testutil.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"

#define MAX_JOBS 100000

static char g_url[1400];
static _Atomic long long g_queued_us[MAX_JOBS];
static _Atomic long long g_claimed_us[MAX_JOBS];
static atomic_int g_finished;
static int g_total;

static long long now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_ll(const void *a, const void *b)
{
  long long x = *(const long long *)a, y = *(const long long *)b;

  return x < y ? -1 : x > y;
}

static struct ledger *open_l(void)
{
  return tu_ledger_open(g_url);
}

static int enqueue(struct ledger *l, int idx)
{
  struct job j = {0};
  char text[24];

  snprintf(text, sizeof text, "%d", idx);
  j.channel = "bench";
  j.text = text;
  if (l->ops->job_create(l, &j, "bench") ||
      l->ops->job_transition(l, j.id, JOB_CREATED, JOB_PLANNED, "b", NULL))
    return -1;
  atomic_store(&g_queued_us[idx], now_us());
  return l->ops->job_transition(l, j.id, JOB_PLANNED, JOB_QUEUED, "b", NULL) ? -1 : 0;
}

static void idle_wait(struct ledger *l)
{
  if (l->ops->wait_for_work)
    l->ops->wait_for_work(l, 50);
  else
    usleep(1000);
}

static void *claimer(void *arg)
{
  struct ledger *l = open_l();
  char owner[32];
  struct job j;

  snprintf(owner, sizeof owner, "bench%d", *(int *)arg);
  while (l && atomic_load(&g_finished) < g_total) {
    if (l->ops->job_claim(l, owner, 30000, 0, &j) != ERR_OK) {
      idle_wait(l);
      continue;
    }
    int idx = (int)strtol(j.text, NULL, 10);
    if (idx >= 0 && idx < g_total)
      atomic_store(&g_claimed_us[idx], now_us());
    l->ops->job_finish(l, j.id, owner, JOB_SUCCEEDED, 0, NULL, NULL);
    job_release(&j);
    atomic_fetch_add(&g_finished, 1);
  }
  ledger_close(l);
  return NULL;
}

static void report(const char *backend, const char *mode, int threads,
                   long long elapsed_us)
{
  long long *lat = calloc((size_t)g_total, sizeof *lat);
  int n = 0;

  for (int i = 0; lat && i < g_total; i++) {
    long long q = atomic_load(&g_queued_us[i]), c = atomic_load(&g_claimed_us[i]);
    if (q && c)
      lat[n++] = c - q;
  }
  if (!n) {
    free(lat);
    printf("%-10s %-5s %d thr: no figures\n", backend, mode, threads);
    return;
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_ll);
  printf("%-10s %-5s %d thr: %7.0f jobs/s  enqueue->claim p50 %7.2f ms"
         "  p99 %7.2f ms  (%d jobs)\n", backend, mode, threads,
         g_total * 1e6 / (double)elapsed_us, lat[n / 2] / 1000.0,
         lat[(size_t)((n - 1) * 0.99)] / 1000.0, n);
  free(lat);
}

/* drain: every job queued first, then the claimers empty the queue; the
 * claim-and-finish rate alone, with no producer in the way. */
static int run_drain(const char *backend, int threads, int jobs)
{
  static int ids[4] = {0, 1, 2, 3};
  pthread_t t[4];
  struct ledger *l = open_l();
  long long start;

  if (!l)
    return -1;
  g_total = jobs;
  atomic_store(&g_finished, 0);
  for (int i = 0; i < jobs; i++)
    if (enqueue(l, i)) {
      ledger_close(l);
      return -1;
    }
  start = now_us();
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, claimer, &ids[i]);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  printf("%-10s drain %d thr: %7.0f jobs/s  (claim + finish, %d jobs)\n",
         backend, threads, jobs * 1e6 / (double)(now_us() - start), jobs);
  ledger_close(l);
  return 0;
}

static int run(const char *backend, const char *mode, int threads, int jobs,
               int gap_us)
{
  static int ids[4] = {0, 1, 2, 3};
  pthread_t t[4];
  struct ledger *l = open_l();
  long long start;

  if (!l)
    return -1;
  g_total = jobs;
  atomic_store(&g_finished, 0);
  for (int i = 0; i < jobs; i++) {
    atomic_store(&g_queued_us[i], 0);
    atomic_store(&g_claimed_us[i], 0);
  }
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, claimer, &ids[i]);
  usleep(100000);           /* claimers connected and idle */
  start = now_us();
  for (int i = 0; i < jobs; i++) {
    if (enqueue(l, i)) {
      fprintf(stderr, "enqueue failed: %s\n", l->errmsg);
      g_total = i;
      break;
    }
    if (gap_us)
      usleep((useconds_t)gap_us);
  }
  while (atomic_load(&g_finished) < g_total)
    usleep(200);
  report(backend, mode, threads, now_us() - start);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  ledger_close(l);
  return 0;
}

static void run_backend(const char *backend, int jobs)
{
  static const int threads[] = {1, 2, 4};

  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run_drain(backend, threads[i], jobs);
  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run(backend, "burst", threads[i], jobs, 0);
  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run(backend, "idle", threads[i], jobs / 10 > 200 ? 200 : jobs / 10, 5000);
}

int main(int argc, char **argv)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  int jobs = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
  char dir[512];

  if (jobs < 10 || jobs > MAX_JOBS)
    jobs = 2000;
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(dir, sizeof dir);
  snprintf(g_url, sizeof g_url, "sqlite://%s/bench.db", dir);
  run_backend("sqlite", jobs);
  tu_rmrf(dir);
  if (!pg || !*pg) {
    printf("postgresql: skipped (SKYNET_TEST_PG_URL is not set)\n");
    return 0;
  }
  if (tpg_schema_url(pg, "bench_ledger", g_url, 1200))
    return 1;
  run_backend("postgresql", jobs);
  tpg_schema_drop(pg, "bench_ledger");
  return 0;
}
