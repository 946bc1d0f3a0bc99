/* Routing with real worker threads, the SQLite ledger, real bwrap and the
 * sentinel: a provider that is down is refused at planning and at run time,
 * WRITE steps on the default provider run in the sandbox (and their writes
 * stay there), ADMIN steps only where the instance allows them. */
#include "../harness.h"
#include "../testutil.h"
#include "engine/config.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"
#include "engine/logstore.h"
#include "engine/orchestrator.h"
#include "engine/registry.h"
#include "engine/sentinel.h"

static struct cfg g_cfg;
static struct registry g_reg;
static struct orch *g_orch;
static struct ledger *g_l;
static struct sentinel *g_sen;

static int64_t submit_plan(const char *plan, enum job_state *state, char *reason, size_t n)
{
  struct submit_req r = {"unit", 1, 1, "test", plan, "test", 0};
  struct submit_res res;

  if (orch_submit(g_orch, g_l, &r, &res) != ERR_OK)
    return 0;
  *state = res.state;
  if (reason)
    snprintf(reason, n, "%s", res.reason);
  submit_res_release(&res);
  return res.job_id;
}

static enum job_state wait_final(int64_t id, int ms, struct job *out)
{
  long long until = tu_now_ms() + ms;

  for (;;) {
    if (g_l->ops->job_get(g_l, id, out) == ERR_OK) {
      if (job_state_terminal(out->state) || tu_now_ms() > until)
        return out->state;
      job_release(out);
    }
    tu_sleep_ms(20);
  }
}

/* Whether the job's log says step 1 started on provider name. */
static int started_on(int64_t id, const char *name)
{
  char want[128];
  struct log_query q = {LOGL_DEBUG, 1, "skynet", NULL, 0};
  struct log_line *v;
  size_t n;
  int hit = 0;

  snprintf(want, sizeof want, "step 1 started on '%s'", name);
  if (logstore_query_job(g_l, g_cfg.home, id, &q, &v, &n))   /* a quick job's is in the ledger */
    return 0;
  for (size_t i = 0; i < n; i++)
    hit |= strstr(v[i].text, want) != NULL;
  log_line_list_free(v, n);
  return hit;
}

TEST(down_provider_refused_at_planning)
{
  enum job_state st;
  char why[512];
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"uptime\",\"provider\":\"flaky\"}]}", &st,
                           why, sizeof why);

  ASSERT(id > 0);
  ASSERT_EQ(st, JOB_FAILED);
  ASSERT_CONTAINS(why, "provider 'flaky' is down");
  ASSERT_EQ(g_l->ops->job_get(g_l, id, &j), ERR_OK);
  ASSERT_CONTAINS(j.reason, "provider 'flaky' is down");
  job_release(&j);
}

TEST(down_provider_refused_at_run_time)
{
  enum job_state st;
  struct job j;
  int64_t busy, id;

  /* the one worker is busy while the job is planned unwatched; it is
   * watched again by the time it runs */
  busy = submit_plan("{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":[\"sleep\",\"1\"]}}]}",
                     &st, NULL, 0);
  tu_sleep_ms(200);
  orch_set_sentinel(g_orch, NULL);
  id = submit_plan("{\"steps\":[{\"action\":\"uptime\",\"provider\":\"flaky\"}]}", &st, NULL, 0);
  orch_set_sentinel(g_orch, g_sen);
  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  ASSERT_CONTAINS(j.reason, "step 1: provider 'flaky' is down");
  job_release(&j);
  ASSERT_EQ(wait_final(busy, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
}

/* Submits a plan that must wait for approval, approves it; its id or 0. */
static int64_t approved(const char *plan)
{
  enum job_state st;
  int64_t id = submit_plan(plan, &st, NULL, 0);

  if (st != JOB_AWAITING_APPROVAL || orch_decide(g_orch, g_l, id, 1, "op") != ERR_OK)
    return 0;
  return id;
}

static int64_t approved_write(const char *path)
{
  char plan[512];

  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"file_write\",\"args\":{\"path\":\"%s\","
           "\"content\":\"written\\n\"}}]}", path);
  return approved(plan);
}

static int64_t approved_shell(const char *script)
{
  char plan[1024];

  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"shell\",\"args\":{\"argv\":"
           "[\"sh\",\"-c\",\"%s\"]}}]}", script);
  return approved(plan);
}

/* A WRITE step on the default (local) provider runs in the sandbox: what
 * the approved command writes reaches the host, nothing else does. */
TEST(write_steps_run_in_the_sandbox)
{
  char dir[64], path[128], stray[128], script[512];
  struct exec_health h = {0};
  const struct registry_entry *jail = registry_find(&g_reg, "jail");
  struct job j;
  int64_t id;

  ASSERT(jail && jail->inst);
  ASSERT_EQ(jail->inst->backend->health(jail->inst, &h), ERR_OK);
  ASSERT(h.ok);      /* bwrap is here (tests/run.sh installs it) */
  ASSERT(!registry_find(&g_reg, "sandbox"));   /* one is configured: no automatic one */
  snprintf(dir, sizeof dir, "/tmp/skynet-routing-XXXXXX");
  ASSERT(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/approved.txt", dir);
  snprintf(stray, sizeof stray, "/tmp/skynet-routing-stray-%ld", (long)getpid());
  unlink(stray);
  id = approved_write(path);
  ASSERT(id > 0);
  ASSERT_EQ(wait_final(id, 20000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT(started_on(id, "jail"));
  ASSERT_EQ(access(path, F_OK), 0);      /* the approved write is the host's */
  unlink(path);

  /* the script names dir; a write through a relative path elsewhere stays
   * in the sandbox's private /tmp */
  snprintf(script, sizeof script, "echo a > %s/approved.txt; cd /tmp && echo b > %s",
           dir, strrchr(stray, '/') + 1);
  id = approved_shell(script);
  ASSERT(id > 0);
  ASSERT_EQ(wait_final(id, 20000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT(started_on(id, "jail"));
  ASSERT_EQ(access(path, F_OK), 0);
  ASSERT(access(stray, F_OK) != 0);
  unlink(path);

  /* isolation off: the default provider, and the host sees both */
  g_cfg.isolate_write = 0;
  id = approved_shell(script);
  ASSERT(id > 0);
  ASSERT_EQ(wait_final(id, 20000, &j), JOB_SUCCEEDED);
  g_cfg.isolate_write = 1;
  job_release(&j);
  ASSERT(started_on(id, "local"));
  ASSERT_EQ(access(stray, F_OK), 0);
  unlink(stray);
  unlink(path);

  /* a step that names its provider keeps it */
  char plan[512];
  enum job_state st;
  snprintf(plan, sizeof plan, "{\"steps\":[{\"action\":\"file_write\",\"provider\":\"local\","
           "\"args\":{\"path\":\"%s\",\"content\":\"x\"}}]}", path);
  id = submit_plan(plan, &st, NULL, 0);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_OK);
  ASSERT_EQ(wait_final(id, 20000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT(started_on(id, "local"));
  ASSERT_EQ(access(path, F_OK), 0);
  unlink(path);
  rmdir(dir);
}

/* Without a sandbox in the configuration one is set up when bwrap is
 * here; without bwrap it is listed as unavailable, saying why. */
TEST(automatic_sandbox)
{
  struct cfg c = g_cfg;
  struct cfg_provider local = {"local", "local", NULL, 0};
  struct registry r;
  const struct registry_entry *e;
  char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;

  c.providers = &local;
  c.n_providers = 1;
  c.default_provider = "local";
  ASSERT_EQ(registry_init(&r, &c), ERR_OK);
  e = registry_find(&r, "sandbox");
  ASSERT(e && e->automatic && e->inst);
  ASSERT(registry_find_type(&r, "sandbox") == e);
  registry_release(&r);

  c.isolate_write = 0;
  ASSERT_EQ(registry_init(&r, &c), ERR_OK);
  ASSERT(!registry_find(&r, "sandbox"));
  registry_release(&r);

  c.isolate_write = 1;
  setenv("PATH", "/nonexistent", 1);
  ASSERT_EQ(registry_init(&r, &c), ERR_OK);
  if (path)
    setenv("PATH", path, 1);
  free(path);
  e = registry_find(&r, "sandbox");
  ASSERT(e && e->automatic && !e->inst);
  ASSERT_CONTAINS(e->error, "bwrap is not installed");
  ASSERT(!registry_find_type(&r, "sandbox"));
  registry_release(&r);
}

TEST(read_only_steps_stay_on_the_default)
{
  enum job_state st;
  struct job j;
  int64_t id = submit_plan("{\"steps\":[{\"action\":\"uptime\"}]}", &st, NULL, 0);

  ASSERT_EQ(st, JOB_QUEUED);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  job_release(&j);
  ASSERT(started_on(id, "local"));
}

TEST(admin_steps_only_where_allowed)
{
  enum job_state st;
  struct job j;
  int64_t id;

  id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"provider\":\"remote\","
                   "\"args\":{\"argv\":[\"pkexec\",\"true\"]}}]}", &st, NULL, 0);
  ASSERT_EQ(st, JOB_AWAITING_APPROVAL);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_OK);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_FAILED);
  ASSERT_CONTAINS(j.reason, "provider 'remote' does not allow ADMIN steps");
  job_release(&j);

  id = submit_plan("{\"steps\":[{\"action\":\"shell\",\"provider\":\"adminbox\","
                   "\"args\":{\"argv\":[\"pkexec\",\"true\"]}}]}", &st, NULL, 0);
  ASSERT_EQ(orch_decide(g_orch, g_l, id, 1, "op"), ERR_OK);
  ASSERT_EQ(wait_final(id, 10000, &j), JOB_SUCCEEDED);
  ASSERT_CONTAINS(j.output_tail, "mock: pkexec true");
  job_release(&j);
}

TEST(bad_routing_options_make_the_instance_unavailable)
{
  const struct registry_entry *e = registry_find(&g_reg, "badtimeout");

  ASSERT(e != NULL);
  ASSERT(e->inst == NULL);
  ASSERT_CONTAINS(e->error, "option 'timeout_s' must be a whole number of seconds");
  e = registry_find(&g_reg, "badadmin");
  ASSERT(e && !e->inst);
  ASSERT_CONTAINS(e->error, "option 'admin' must be true or false");
  ASSERT_EQ(registry_find(&g_reg, "local")->admin, 1);
  ASSERT_EQ(registry_find(&g_reg, "jail")->admin, 0);
}

/* Loads yaml text as a config; returns cfg_load's result, message in err. */
static enum err load_text(const char *text, struct cfg *c, char *err, size_t n)
{
  char path[128];
  enum err e;
  FILE *f;

  snprintf(path, sizeof path, "/tmp/skynet-routing-cfg-%ld.yaml", (long)getpid());
  if (!(f = fopen(path, "w")))
    return ERR_IO;
  fputs(text, f);
  fclose(f);
  e = cfg_load(c, path, err, n);
  unlink(path);
  return e;
}

TEST(config_keys_checked)
{
  struct cfg c;
  char err[512];

  ASSERT_EQ(load_text("providers:\n  isolate_write: maybe\n", &c, err, sizeof err), ERR_CONFIG);
  ASSERT_CONTAINS(err, "providers.isolate_write");
  ASSERT_EQ(load_text("archive:\n  max_bytes: 0\n", &c, err, sizeof err), ERR_CONFIG);
  ASSERT_CONTAINS(err, "archive.max_bytes");
  ASSERT_EQ(load_text("archive:\n  max_bytes: 1000\nproviders:\n  isolate_write: false\n",
                      &c, err, sizeof err), ERR_OK);
  ASSERT_EQ(c.archive_max_bytes, 1000);
  ASSERT_EQ(c.isolate_write, 0);
  cfg_release(&c);
  ASSERT_EQ(load_text("workers: 1\n", &c, err, sizeof err), ERR_OK);
  ASSERT_EQ(c.archive_max_bytes, 100 * 1024 * 1024);
  ASSERT_EQ(c.isolate_write, 1);
  cfg_release(&c);
}

int main(void)
{
  char dir[512], env[600], err[256], yaml[600];
  int applied;
  FILE *f;

  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(dir, sizeof dir);
  snprintf(env, sizeof env, "%s/home", dir);
  setenv("SKYNET_HOME", env, 1);
  unsetenv("SKYNET_DATABASE_URL");
  unsetenv("TELEGRAM_BOT_TOKEN");
  snprintf(yaml, sizeof yaml, "%s/skynet.yaml", dir);
  if (!(f = fopen(yaml, "w")))
    return 1;
  fputs("providers:\n  default: local\n  isolate_write: true\n  jail: {type: sandbox}\n"
        "  flaky: {type: mock, healthy: \"false\"}\n  remote: {type: mock}\n"
        "  adminbox: {type: mock, admin: true}\n  badtimeout: {type: mock, timeout_s: soon}\n"
        "  badadmin: {type: mock, admin: maybe}\n", f);
  fclose(f);
  if (cfg_load(&g_cfg, yaml, err, sizeof err) || ledger_open(g_cfg.database_url, &g_l, err, sizeof err)) {
    fprintf(stderr, "setup: %s\n", err);
    return 1;
  }
  g_l->ops->migrate(g_l, &applied);
  g_cfg.kill_grace_ms = 300;
  registry_init(&g_reg, &g_cfg);
  if (sentinel_new(&g_sen, &g_reg, 0, 1, NULL, NULL) ||
      orch_start(&g_cfg, &g_reg, 1, &g_orch, err, sizeof err))
    return 1;
  sentinel_check_now(g_sen);
  orch_set_sentinel(g_orch, g_sen);
  RUN(down_provider_refused_at_planning);
  RUN(down_provider_refused_at_run_time);
  RUN(write_steps_run_in_the_sandbox);
  RUN(automatic_sandbox);
  RUN(read_only_steps_stay_on_the_default);
  RUN(admin_steps_only_where_allowed);
  RUN(bad_routing_options_make_the_instance_unavailable);
  RUN(config_keys_checked);
  orch_stop(g_orch, 1000);
  sentinel_free(g_sen);
  registry_release(&g_reg);
  ledger_close(g_l);
  cfg_release(&g_cfg);
  tu_rmrf(dir);
  return test_summary();
}
