/* bot/main.c — the skynet command line (SPEC §2). */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bot/assistant.h"
#include "bot/console.h"
#include "bot/conv.h"
#include "bot/telegram.h"
#include "engine/config.h"
#include "engine/ledger/ledger.h"
#include "engine/log.h"
#include "engine/orchestrator.h"
#include "engine/registry.h"
#include "engine/persona.h"
#include "engine/sentinel.h"
#include "providers/llm/llm.h"

static volatile sig_atomic_t g_stop;
static volatile sig_atomic_t g_reload;

static void on_stop(int sig)
{
  (void)sig;
  if (g_stop)
    _exit(1);   /* a second signal: exit at once */
  g_stop = 1;
}

static void on_hup(int sig)
{
  (void)sig;
  g_reload = 1;
}

static void install_signals(void)
{
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_hup;
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
}

static void usage(FILE *f)
{
  fprintf(f,
      "usage: skynet [--config FILE] [run]      the agent (Telegram if a token is set, else console)\n"
      "       skynet worker [--config FILE]     run jobs from the shared ledger only\n"
      "       skynet migrate [--config FILE]    apply database migrations and exit\n"
      "       skynet doctor [--config FILE]     check configuration, database, providers\n"
      "       skynet --version | --help\n");
}

struct args {
  const char *config;
  const char *cmd;
};

/* 0 ok, 1 printed help/version (exit 0), 2 usage error. */
static int parse_args(int argc, char **argv, struct args *a)
{
  a->config = NULL;
  a->cmd = "run";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 1;
    } else if (strcmp(argv[i], "--version") == 0) {
      printf("skynet %s\n", SKYNET_VERSION);
      return 1;
    } else if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "skynet: option '--config' needs a file\n");
        return 2;
      }
      a->config = argv[i];
    } else if (strncmp(argv[i], "--config=", 9) == 0) {
      a->config = argv[i] + 9;
    } else if (argv[i][0] != '-' && (strcmp(argv[i], "run") == 0 || strcmp(argv[i], "worker") == 0 ||
                                     strcmp(argv[i], "migrate") == 0 ||
                                     strcmp(argv[i], "doctor") == 0)) {
      a->cmd = argv[i];
    } else {
      fprintf(stderr, "skynet: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  return 0;
}

static void setup_logging(const struct cfg *c)
{
  int json = c->log_json < 0 ? !isatty(STDERR_FILENO) : c->log_json;

  log_setup(c->log_level, json, stderr);
}

static int open_ledger(const struct cfg *c, struct ledger **l, int migrate)
{
  char err[512];
  int applied = 0;

  if (ledger_open(c->database_url, l, err, sizeof err)) {
    log_error("main", "%s", err);
    fprintf(stderr, "skynet: %s\n", err);
    return 1;
  }
  if (migrate && (*l)->ops->migrate(*l, &applied)) {
    fprintf(stderr, "skynet: cannot migrate the database: %s\n", (*l)->errmsg);
    ledger_close(*l);
    *l = NULL;
    return 1;
  }
  return 0;
}

static int cmd_migrate(const struct cfg *c)
{
  struct ledger *l;
  int applied = 0, version = 0;

  if (open_ledger(c, &l, 0))
    return 1;
  if (l->ops->migrate(l, &applied) || l->ops->schema_version(l, &version)) {
    fprintf(stderr, "skynet: migration failed: %s\n", l->errmsg);
    ledger_close(l);
    return 1;
  }
  printf("migrations: applied %d, schema version %d (%s)\n", applied, version, l->ops->name);
  ledger_close(l);
  return 0;
}

static int doctor_line(int ok, const char *what, const char *detail)
{
  printf("%-10s %s  %s\n", what, ok ? "ok  " : "FAIL", detail);
  return ok ? 0 : 1;
}

static int doctor_providers(const struct cfg *c)
{
  struct registry reg;
  char line[512];
  int bad = 0;

  if (registry_init(&reg, c))
    return doctor_line(0, "providers", "cannot set up providers");
  for (size_t i = 0; i < reg.n; i++) {
    struct exec_health h = {0, ""};
    const struct registry_entry *e = &reg.v[i];
    if (e->inst)
      e->inst->backend->health(e->inst, &h);
    snprintf(line, sizeof line, "%s (%s%s): %s", e->name, e->type,
             e->automatic ? ", automatic" : "", e->inst ? h.detail : e->error);
    if (e->automatic && !(e->inst && h.ok))   /* not configured: a warning */
      printf("%-10s %s  %s\n", "provider", "warn", line);
    else
      bad |= doctor_line(e->inst && h.ok, "provider", line);
  }
  registry_release(&reg);
  return bad;
}

/* One tiny request, no retries: does the model answer? */
static int doctor_llm(const struct cfg *c)
{
  struct llm_opts o;
  struct llm *m = NULL;
  struct llm_msg msg = {"user", "Reply with the word OK."};
  struct llm_req req = {0};
  struct llm_resp resp;
  char why[300], line[512];
  struct timespec t0, t1;
  enum err e;

  if (strcmp(c->llm_provider, "offline") == 0)
    return doctor_line(1, "llm", "offline planner");
  llm_opts_default(&o);
  o.max_attempts = 1;
  o.timeout_ms = o.deadline_ms = 15000;
  if ((e = llm_new(c, &o, &m, why, sizeof why)))
    return doctor_line(0, "llm", why);
  req.msgs = &msg;
  req.n_msgs = 1;
  req.max_tokens = 8;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  e = llm_call(m, &req, &resp, why, sizeof why);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (!e)
    snprintf(line, sizeof line, "%s %s at %s: answered in %ld ms", llm_name(m), llm_model(m),
             llm_base(m), (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
  else
    snprintf(line, sizeof line, "%s %s at %s: %s", llm_name(m), llm_model(m), llm_base(m), why);
  llm_resp_release(&resp);
  llm_free(m);
  return doctor_line(e == ERR_OK, "llm", line);
}

static int cmd_doctor(const struct cfg *c)
{
  struct ledger *l = NULL;
  char line[512], err[512];
  int bad = 0, version = 0;

  snprintf(line, sizeof line, "loaded from %s; home %s", c->source, c->home);
  bad |= doctor_line(1, "config", line);
  if (ledger_open(c->database_url, &l, err, sizeof err)) {
    bad |= doctor_line(0, "database", err);
  } else {
    l->ops->schema_version(l, &version);
    snprintf(line, sizeof line, "%s, schema version %d%s", l->ops->name, version,
             version ? "" : " (run 'skynet migrate')");
    bad |= doctor_line(version > 0, "database", line);
    ledger_close(l);
  }
  if (c->telegram_token) {
    struct tg *tg = NULL;
    if (tg_open(c, &tg, err, sizeof err) == ERR_OK)
      snprintf(err, sizeof err, "getMe ok: %s", tg_bot_name(tg));
    bad |= doctor_line(tg != NULL, "telegram", err);
    tg_free(tg);
  } else
    bad |= doctor_line(1, "telegram", "no token: console channel");
  snprintf(line, sizeof line, "%s (%s)", persona_name(persona_current()),
           persona_tone(persona_current()));
  bad |= doctor_line(1, "persona", line);
  bad |= doctor_llm(c);
  bad |= doctor_providers(c);
  return bad ? 1 : 0;
}

struct runtime {
  struct registry reg;
  struct orch *orch;
  struct ledger *l;
  struct conv *conv;
  struct sentinel *sentinel;
  struct assistant *assistant;
};

#define SENTINEL_INTERVAL_MS 30000
#define SENTINEL_FAILS 3

/* A provider went down or came back: tell the admins once per incident.
 * Runs on the sentinel's thread, so it opens its own ledger connection. */
static void on_provider_event(void *ud, const struct sentinel_event *ev)
{
  const struct cfg *c = ud;
  struct outbox_msg m = {0};
  struct ledger *l;
  char what[512], err[256], *text;

  log_warn("sentinel", "provider '%s' is %s: %s", ev->provider, ev->up ? "up again" : "down",
           ev->detail ? ev->detail : "");
  if (ledger_open(c->database_url, &l, err, sizeof err))
    return;
  snprintf(what, sizeof what, "provider '%s' is %s. %s", ev->provider,
           ev->up ? "back up" : "down", ev->detail ? ev->detail : "");
  if (!(text = persona_render(persona_current(), "alert", "text", what, NULL))) {
    ledger_close(l);
    return;
  }
  m.text = text;
  if (!c->telegram_token) {
    m.channel = "console";
    ledger_outbox_put(l, &m, NULL);
  }
  for (size_t i = 0; c->telegram_token && i < c->n_admins; i++) {
    m.channel = "telegram";
    m.chat_id = c->admins[i];
    ledger_outbox_put(l, &m, NULL);
  }
  free(text);
  ledger_close(l);
}

/* The runtime on rt->l, an open and migrated ledger. */
static int start_services(const struct cfg *c, int workers, struct runtime *rt)
{
  char err[256];

  if (registry_init(&rt->reg, c) ||
      orch_start(c, &rt->reg, workers, &rt->orch, err, sizeof err)) {
    fprintf(stderr, "skynet: cannot start: %s\n", err);
    return 1;
  }
  if (sentinel_new(&rt->sentinel, &rt->reg, SENTINEL_INTERVAL_MS, SENTINEL_FAILS,
                   on_provider_event, (void *)c))
    log_warn("main", "cannot start the provider sentinel");
  orch_set_sentinel(rt->orch, rt->sentinel);
  log_info("main", "skynet %s started: ledger %s, %d workers", SKYNET_VERSION,
           rt->l->ops->name, workers);
  return 0;
}

static int start_runtime(const struct cfg *c, int workers, struct runtime *rt)
{
  memset(rt, 0, sizeof *rt);
  if (open_ledger(c, &rt->l, 1))
    return 1;
  return start_services(c, workers, rt);
}

static void stop_runtime(const struct cfg *c, struct runtime *rt)
{
  assistant_stop(rt->assistant);
  /* routing reads the sentinel until the workers stop */
  orch_stop(rt->orch, c->shutdown_grace_s * 1000);
  sentinel_free(rt->sentinel);
  conv_free(rt->conv);
  registry_release(&rt->reg);
  ledger_close(rt->l);
  log_info("main", "skynet stopped");
}

/* tg: the Telegram channel with getMe under way (main started it before
 * loading the persona), or NULL for the console. */
static int cmd_run(const struct cfg *c, struct tg *tg)
{
  struct runtime rt;
  char err[512];
  enum err e;
  int rc;

  /* getMe (with the TLS handshake) runs while the database is opened and
   * migrated; it must have accepted the token before anything starts. */
  memset(&rt, 0, sizeof rt);
  if (tg && ledger_is_new(c->database_url))   /* no stored offset to wait for */
    tg_poll_first(tg, &g_stop);
  if (open_ledger(c, &rt.l, 1)) {
    tg_free(tg);
    return 1;
  }
  if (tg && tg_open_end(tg, err, sizeof err)) {
    log_error("main", "%s", err);
    fprintf(stderr, "skynet: %s\n", err);
    ledger_close(rt.l);
    tg_free(tg);
    return 1;
  }
  if (tg)
    tg_poll_ahead(tg, rt.l, &g_stop);
  if (start_services(c, c->workers, &rt)) {
    tg_free(tg);
    return 1;
  }
  if (conv_new(c, &rt.reg, rt.orch, rt.l, &rt.conv)) {
    stop_runtime(c, &rt);
    tg_free(tg);
    return 1;
  }
  conv_set_sentinel(rt.conv, rt.sentinel);
  if ((e = assistant_start(c, &rt.reg, rt.orch, &rt.assistant, err, sizeof err)) &&
      e != ERR_UNSUPPORTED) {
    fprintf(stderr, "skynet: %s\n", err);
    stop_runtime(c, &rt);
    tg_free(tg);
    return e == ERR_CONFIG ? 2 : 1;
  }
  if (!rt.assistant)
    assistant_drain_offline(c, &rt.reg, rt.orch);
  conv_set_assistant(rt.conv, rt.assistant);
  rc = tg ? tg_run(tg, rt.conv, rt.l, &g_stop) : console_run(rt.conv, rt.l, &g_stop);
  stop_runtime(c, &rt);
  tg_free(tg);
  return rc;
}

static int cmd_worker(const struct cfg *c)
{
  struct runtime rt;

  if (start_runtime(c, c->workers > 0 ? c->workers : 1, &rt))
    return 1;
  while (!g_stop) {
    if (g_reload) {
      g_reload = 0;
      log_info("main", "SIGHUP: nothing to reload in worker mode");
    }
    usleep(100 * 1000);
  }
  stop_runtime(c, &rt);
  return 0;
}

/* An idle bot should be small (issue 3: at most 5 MB resident).  SQLite
 * gives every connection (one per thread here) a 120 KB lookaside arena and a
 * bulk page-cache allocation up front, all touched at once; we keep a small
 * lookaside and let the page cache grow as pages are used.  glibc gives each
 * thread that allocates its own malloc arena (with its own free lists and
 * slack); one is enough for a daemon whose threads mostly wait (each thread
 * still has its tcache).  With two, the second arena went to whichever start-up
 * thread allocated first (getMe's, the CA index's) and idle RSS over HTTPS
 * varied 5096-5316 KB against 4992-5016 KB with one; updates/s unchanged
 * within noise (bench_telegram throughput). */
static void tune_memory(void)
{
  if (getenv("SKYNET_MEM_DEFAULTS"))   /* for comparing; not documented */
    return;
  sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 128, 64);
  sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
  if (!getenv("MALLOC_ARENA_MAX"))   /* the operator's choice wins */
    mallopt(M_ARENA_MAX, 1);
}

int main(int argc, char **argv)
{
  struct args a;
  struct tg *tg = NULL;
  struct cfg c;
  char err[512];
  enum err e;
  int rc;

  if ((rc = parse_args(argc, argv, &a)))
    return rc == 1 ? 0 : 2;
  tune_memory();
  install_signals();
  if ((e = cfg_load(&c, a.config, err, sizeof err))) {
    fprintf(stderr, "skynet: %s\n", err);
    return 2;
  }
  setup_logging(&c);
  /* skynet run: getMe (name resolution, TLS handshake) starts first, as
   * the rest of start-up can run beside it. */
  if (strcmp(a.cmd, "run") == 0 && c.telegram_token && tg_open_begin(&c, &tg)) {
    fprintf(stderr, "skynet: out of memory\n");
    cfg_release(&c);
    return 1;
  }
  if (strcmp(a.cmd, "migrate") != 0) {
    struct persona *p;
    if (persona_load(c.persona, c.home, &p, err, sizeof err)) {
      fprintf(stderr, "skynet: %s\n", err);
      tg_free(tg);
      cfg_release(&c);
      return 2;
    }
    persona_set_current(p);
  }
  if (strcmp(a.cmd, "migrate") == 0)
    rc = cmd_migrate(&c);
  else if (strcmp(a.cmd, "doctor") == 0)
    rc = cmd_doctor(&c);
  else if (strcmp(a.cmd, "worker") == 0)
    rc = cmd_worker(&c);
  else
    rc = cmd_run(&c, tg);
  persona_set_current(NULL);
  cfg_release(&c);
  return rc;
}
