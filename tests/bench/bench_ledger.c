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
 * transition to the claim's return.  batch: as burst, but the producer
 * commits BATCH jobs per transaction and each claimer holds up to PREFETCH
 * jobs, finishing them and claiming the next ones in one transaction.  rtt: one job at a time, submit (create, plan, queue) until the
 * producer sees it SUCCEEDED: the round trip a client sees.
 *
 * Then the same no-op work through Celery with a Redis broker and 2 prefork
 * workers (tests/bench/celery_baseline.sh; SKYNET_BENCH_CELERY=0 skips it),
 * and a side-by-side summary against the targets of issue 6.  PostgreSQL claimers wait with
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
#include "celery.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"

#define MAX_JOBS 100000
#define BATCH 100
#define PREFETCH 8

/* Figures kept for the summary. */
struct figures {
  double best_rate;             /* jobs/s end to end, best of burst and batch */
  char best_how[64];
  double idle1_p99_ms;          /* enqueue->claim, 1 idle claimer */
  double rtt_p50_ms, rtt_p99_ms;
};
static struct figures g_fig[2];  /* sqlite, postgresql */
static struct figures *g_cur;
static int g_batch;             /* batch mode on */

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

/* BATCH jobs from idx on in one transaction (so one commit). */
static int enqueue_batch(struct ledger *l, int idx, int n)
{
  if (l->ops->begin(l))
    return -1;
  for (int i = idx; i < idx + n; i++) {
    if (enqueue(l, i)) {
      l->ops->rollback(l);
      return -1;
    }
  }
  return l->ops->commit(l) ? -1 : 0;
}

static void idle_wait(struct ledger *l)
{
  if (l->ops->wait_for_work)
    l->ops->wait_for_work(l, 50, NULL);
  else
    usleep(1000);
}

static void note_claim(const struct job *j)
{
  int idx = (int)strtol(j->text, NULL, 10);

  if (idx >= 0 && idx < g_total)
    atomic_store(&g_claimed_us[idx], now_us());
}

/* Finishes the jobs in hand and claims up to PREFETCH more in one
 * transaction: one commit for several jobs, as a worker that holds a few
 * jobs at once (Celery prefetches 4 per worker process by default). */
static void batch_claimer(struct ledger *l, const char *owner)
{
  struct job held[PREFETCH];
  int n = 0, ok = 1;

  while (l && ok && atomic_load(&g_finished) < g_total) {
    int m = 0;
    struct job next[PREFETCH];

    if (l->ops->begin(l))
      break;
    for (int i = 0; ok && i < n; i++)
      ok = l->ops->job_finish(l, held[i].id, owner, JOB_SUCCEEDED, 0, NULL, NULL, NULL) == ERR_OK;
    while (ok && m < PREFETCH && l->ops->job_claim(l, owner, 30000, 0, &next[m]) == ERR_OK)
      m++;
    if (!ok || l->ops->commit(l)) {
      if (ok)
        fprintf(stderr, "batch commit failed: %s\n", l->errmsg);
      else
        l->ops->rollback(l);
      ok = 0;
    }
    for (int i = 0; i < n; i++)
      job_release(&held[i]);
    if (ok)
      atomic_fetch_add(&g_finished, n);
    for (int i = 0; i < m; i++) {
      held[i] = next[i];
      note_claim(&held[i]);
    }
    n = m;
    if (!m && ok)
      idle_wait(l);
  }
  for (int i = 0; i < n; i++)
    job_release(&held[i]);
  if (!ok) {
    fprintf(stderr, "batch claimer stopped\n");
    atomic_store(&g_finished, g_total);
  }
}

static void *claimer(void *arg)
{
  struct ledger *l = open_l();
  char owner[32];
  struct job j;

  snprintf(owner, sizeof owner, "bench%d", *(int *)arg);
  if (g_batch) {
    batch_claimer(l, owner);
    ledger_close(l);
    return NULL;
  }
  while (l && atomic_load(&g_finished) < g_total) {
    if (l->ops->job_claim(l, owner, 30000, 0, &j) != ERR_OK) {
      idle_wait(l);
      continue;
    }
    note_claim(&j);
    l->ops->job_finish(l, j.id, owner, JOB_SUCCEEDED, 0, NULL, NULL, NULL);
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
  double rate = g_total * 1e6 / (double)elapsed_us, p99 = lat[(size_t)((n - 1) * 0.99)] / 1000.0;
  printf("%-10s %-5s %d thr: %7.0f jobs/s  enqueue->claim p50 %7.2f ms"
         "  p99 %7.2f ms  (%d jobs)\n", backend, mode, threads,
         rate, lat[n / 2] / 1000.0, p99, n);
  if (strcmp(mode, "idle") != 0 && rate > g_cur->best_rate) {
    g_cur->best_rate = rate;
    snprintf(g_cur->best_how, sizeof g_cur->best_how, "%s, %d worker%s", mode, threads,
             threads > 1 ? "s" : "");
  }
  if (strcmp(mode, "idle") == 0 && threads == 1)
    g_cur->idle1_p99_ms = p99;
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
  for (int i = 0; i < jobs; i += g_batch ? BATCH : 1) {
    int n = g_batch ? (jobs - i < BATCH ? jobs - i : BATCH) : 1;
    if (g_batch ? enqueue_batch(l, i, n) : enqueue(l, i)) {
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

/* rtt: one job at a time with one idle claimer; the producer polls until
 * it sees the job SUCCEEDED. */
static void run_rtt(const char *backend, int jobs)
{
  static int id0 = 0;
  struct ledger *l = open_l();
  long long *rtt = calloc((size_t)jobs, sizeof *rtt);
  pthread_t t;
  struct job j = {0};
  int n = 0;

  if (!l || !rtt) {
    free(rtt);
    ledger_close(l);
    return;
  }
  g_total = jobs;
  atomic_store(&g_finished, 0);
  pthread_create(&t, NULL, claimer, &id0);
  usleep(100000);
  for (int i = 0; i < jobs; i++) {
    long long t0 = now_us();
    j.channel = "bench";
    j.text = "rtt";
    if (l->ops->job_create(l, &j, "bench") ||
        l->ops->job_transition(l, j.id, JOB_CREATED, JOB_PLANNED, "b", NULL) ||
        l->ops->job_transition(l, j.id, JOB_PLANNED, JOB_QUEUED, "b", NULL))
      break;
    for (;;) {
      struct job got;
      int done = l->ops->job_get(l, j.id, &got) == ERR_OK && got.state == JOB_SUCCEEDED;
      job_release(&got);
      if (done)
        break;
      usleep(100);
    }
    rtt[n++] = now_us() - t0;
    usleep(5000);
  }
  atomic_store(&g_finished, g_total);
  pthread_join(t, NULL);
  qsort(rtt, (size_t)n, sizeof *rtt, cmp_ll);
  if (n) {
    g_cur->rtt_p50_ms = rtt[n / 2] / 1000.0;
    g_cur->rtt_p99_ms = rtt[(size_t)((n - 1) * 0.99)] / 1000.0;
    printf("%-10s rtt   1 thr: submit->result p50 %7.2f ms  p99 %7.2f ms  (%d jobs)\n",
           backend, g_cur->rtt_p50_ms, g_cur->rtt_p99_ms, n);
  }
  free(rtt);
  ledger_close(l);
}

static void run_backend(const char *backend, int jobs)
{
  static const int threads[] = {1, 2, 4};

  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run_drain(backend, threads[i], jobs);
  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run(backend, "burst", threads[i], jobs, 0);
  g_batch = 1;
  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run(backend, "batch", threads[i], jobs, 0);
  g_batch = 0;
  for (size_t i = 0; i < sizeof threads / sizeof *threads; i++)
    run(backend, "idle", threads[i], jobs / 10 > 200 ? 200 : jobs / 10, 5000);
  run_rtt(backend, jobs / 10 > 200 ? 200 : jobs / 10);
}


static void summary(int have_pg, int have_celery, double c_rate, double c_rtt)
{
  static const char *names[] = {"sqlite", "postgresql"};

  printf("\n== side by side (one run, same machine; jobs/s end to end = best of burst/batch)\n");
  if (have_celery)
    printf("  %-12s %7.0f jobs/s  submit->result p99 %7.2f ms  (2 prefork workers, redis)\n",
           "celery", c_rate, c_rtt);
  for (int b = 0; b < 1 + have_pg; b++)
    printf("  %-12s %7.0f jobs/s  submit->result p99 %7.2f ms  (%s)\n", names[b],
           g_fig[b].best_rate, g_fig[b].rtt_p99_ms, g_fig[b].best_how);
  if (have_celery) {
    verdict("sqlite throughput", g_fig[0].best_rate / c_rate, 5);
    if (have_pg)
      verdict("postgresql throughput", g_fig[1].best_rate / c_rate, 2);
    if (have_pg)
      printf("  postgresql round trip p99 %.2f ms vs Celery %.2f ms: %s\n", g_fig[1].rtt_p99_ms,
             c_rtt, g_fig[1].rtt_p99_ms <= c_rtt ? "met" : "NOT met");
  }
  if (have_pg)
    printf("  postgresql idle enqueue->start p99 %.2f ms (target < 5 ms: %s)\n",
           g_fig[1].idle1_p99_ms, g_fig[1].idle1_p99_ms < 5 ? "met" : "NOT met");
}

int main(int argc, char **argv)
{
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  int jobs = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 2000;
  int have_pg = 0, have_celery = 0;
  double c_rate = 0, c_rtt = 0;
  char dir[512];

  if (jobs < 10 || jobs > MAX_JOBS)
    jobs = 2000;
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(dir, sizeof dir);
  snprintf(g_url, sizeof g_url, "sqlite://%s/bench.db", dir);
  g_cur = &g_fig[0];
  run_backend("sqlite", jobs);
  tu_rmrf(dir);
  if (!pg || !*pg) {
    printf("postgresql: skipped (SKYNET_TEST_PG_URL is not set)\n");
  } else if (tpg_schema_url(pg, "bench_ledger", g_url, 1200) == 0) {
    g_cur = &g_fig[1];
    run_backend("postgresql", jobs);
    tpg_schema_drop(pg, "bench_ledger");
    have_pg = 1;
  }
  double c_start, c_rtt50;
  have_celery = run_celery(jobs, &c_rate, &c_start, &c_rtt50, &c_rtt);
  summary(have_pg, have_celery, c_rate, c_rtt);
  return 0;
}
