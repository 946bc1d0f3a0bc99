/* bench_orch — jobs end to end through the orchestrator, the way skynet runs
 * them: submit (plan, policy, ledger), claim by a worker thread, one no-op
 * step on the mock provider (a READ_ONLY `uptime` the mock answers without
 * running anything), result, log store and outbox notification.
 * SQLite, and PostgreSQL when SKYNET_TEST_PG_URL is set, with 1, 2 and 4
 * workers.  Prints its figures; asserts nothing.   bench_orch [jobs] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../ledgerutil.h"
#include "../testutil.h"
#include "engine/log.h"
#include "engine/orchestrator.h"

static const char plan[] =
    "{\"summary\": \"noop\", \"steps\": [{\"action\": \"uptime\", \"provider\": \"mock\", "
    "\"args\": {}}]}";

static double now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void run(const char *name, const char *url, int workers, int jobs, const char *dir)
{
  char conf[600], err[256];
  struct cfg c;
  struct registry reg;
  struct orch *o = NULL;
  struct ledger *l;
  FILE *f;
  int64_t first = 0, last = 0;
  double t0, t1;
  int done = 0;

  snprintf(conf, sizeof conf, "%s/skynet.yaml", dir);
  f = fopen(conf, "w");
  fprintf(f, "providers:\n  default: local\n  mock: {type: mock}\n");
  fclose(f);
  if (url)
    setenv("SKYNET_DATABASE_URL", url, 1);
  else
    unsetenv("SKYNET_DATABASE_URL");
  if (cfg_load(&c, conf, err, sizeof err) || !(l = tu_ledger_open(c.database_url))) {
    fprintf(stderr, "%s: setup: %s\n", name, err);
    return;
  }
  registry_init(&reg, &c);
  if (orch_start(&c, &reg, workers, &o, err, sizeof err)) {
    fprintf(stderr, "%s: %s\n", name, err);
    return;
  }
  t0 = now_ms();
  for (int i = 0; i < jobs; i++) {
    struct submit_req r = {"bench", 1, 1, "noop", plan, "bench", 0};
    struct submit_res res;
    /* One transaction per submission, as the conversation manager does. */
    enum err e = l->ops->begin(l);
    if (!e && !(e = orch_submit(o, l, &r, &res)))
      e = l->ops->commit(l);
    else if (!e)
      l->ops->rollback(l);
    if (e || res.state != JOB_QUEUED) {
      fprintf(stderr, "%s: submit failed (%s)\n", name, res.reason);
      break;
    }
    if (!first)
      first = res.job_id;
    last = res.job_id;
    submit_res_release(&res);
    orch_wake(o);
  }
  /* Oldest first: when the last is done, look at them all. */
  for (int64_t id = first; id && id <= last && now_ms() - t0 < 300000;) {
    struct job j;
    if (l->ops->job_get(l, id, &j) == ERR_OK && job_state_terminal(j.state)) {
      done += j.state == JOB_SUCCEEDED;
      id++;
    } else {
      usleep(200);
    }
    job_release(&j);
  }
  t1 = now_ms();
  printf("%-10s %d worker%s: %5d/%d jobs SUCCEEDED in %7.1f ms = %7.0f jobs/s end to end\n", name,
         workers, workers > 1 ? "s" : " ", done, jobs, t1 - t0, done / ((t1 - t0) / 1000.0));
  orch_stop(o, 5000);
  registry_release(&reg);
  ledger_close(l);
  cfg_release(&c);
}

int main(int argc, char **argv)
{
  int jobs = argc > 1 ? atoi(argv[1]) : 1000;
  const char *pg = getenv("SKYNET_TEST_PG_URL");
  int counts[] = {1, 2, 4};

  log_setup(LOGL_ERROR, 0, NULL);
  unsetenv("TELEGRAM_BOT_TOKEN");
  for (int k = 0; k < 2; k++) {
    if (k == 1 && !(pg && *pg)) {
      printf("postgresql: skipped (SKYNET_TEST_PG_URL is not set)\n");
      break;
    }
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
      char dir[256], home[300];
      tu_tmpdir(dir, sizeof dir);
      snprintf(home, sizeof home, "%s/home", dir);
      setenv("SKYNET_HOME", home, 1);
      run(k ? "postgresql" : "sqlite", k ? pg : NULL, counts[i], jobs, dir);
      tu_rmrf(dir);
    }
  }
  return 0;
}
