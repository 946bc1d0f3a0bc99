/* providers/exec/mock.c — the "mock" execution backend: scripted results
 * for tests and benchmarks, no processes.
 *
 * The argv is a script:
 *   mock ok            exit 0, output "ok\n"
 *   mock fail N        exit N, no output
 *   mock sleep MS      sleeps MS ms, honouring cancel and the timeout
 *   mock echo W...     output the words joined by spaces, and "\n"
 *   mock unavailable [FILE]
 *                      fails with ERR_UNAVAILABLE (a provider that cannot
 *                      run now); with FILE only while FILE is missing, and
 *                      creates it: unavailable once, then "ok"
 *   anything else      exit 0, output "mock: <argv joined by spaces>\n"
 * Instance options: delay_ms (added to every run, also honouring cancel and
 * timeout), healthy ("false" makes health() report not ok), health_delay_ms
 * (health() takes that long, as an ssh host or a gateway that does not
 * answer does), stamp ("true"
 * appends "@<CLOCK_MONOTONIC µs>\n" to the output: when the run began, for
 * benchmarks that time a step's start across threads).
 *
 * A timeout or cancel looks like what local reports: exit 143 after
 * SIGTERM.  Thread-safe: the instance is read-only after create(). */
#include "exec.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/buf.h"

#define MOCK_CAPTURE_MAX 65536
#define MOCK_OUTPUT_MAX (1024 * 1024)
#define MOCK_TICK_MS 10

struct mock_inst {
  struct exec_instance base;
  long delay_ms;
  long health_delay_ms;
  int healthy;
  int stamp;
};

static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read straight from the provider so the backend needs no config code. */
static const char *mock_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; p && i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
  char *end;
  long v;

  if (!s || !*s)
    return -1;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static struct mock_inst *mock_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_mock);
  return (struct mock_inst *)inst;
}

static enum err mock_create(const struct cfg *cfg, const struct cfg_provider *p,
                            struct exec_instance **out)
{
  const char *delay = mock_opt(p, "delay_ms");
  const char *healthy = mock_opt(p, "healthy");
  const char *stamp = mock_opt(p, "stamp");
  const char *health_delay = mock_opt(p, "health_delay_ms");
  struct mock_inst *mi;

  (void)cfg;
  *out = NULL;
  mi = calloc(1, sizeof *mi);
  if (!mi)
    return ERR_NOMEM;
  mi->base.backend = &exec_mock;
  snprintf(mi->base.name, sizeof mi->base.name, "%s",
           p && p->name ? p->name : "mock");
  mi->healthy = !(healthy && strcmp(healthy, "false") == 0);
  mi->stamp = stamp && strcmp(stamp, "true") == 0;
  if ((delay && parse_long(delay, 0, 3600L * 1000, &mi->delay_ms) < 0) ||
      (health_delay && parse_long(health_delay, 0, 600L * 1000, &mi->health_delay_ms) < 0)) {
    free(mi);
    return ERR_CONFIG;
  }
  *out = &mi->base;
  return ERR_OK;
}

static void mock_destroy(struct exec_instance *inst)
{
  if (inst)
    free(mock_from(inst));
}

static enum err mock_health(struct exec_instance *inst,
                            struct exec_health *out)
{
  struct mock_inst *mi = mock_from(inst);
  struct timespec ts = {mi->health_delay_ms / 1000, (mi->health_delay_ms % 1000) * 1000000L};

  while (mi->health_delay_ms && nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  out->ok = mi->healthy;
  snprintf(out->detail, sizeof out->detail, "mock: %s",
           mi->healthy ? "scripted, healthy" : "configured unhealthy");
  return ERR_OK;
}

/* Sleeps ms in short steps so that cancel and the deadline are noticed
 * within MOCK_TICK_MS, like a real command would be stopped. */
static enum err mock_sleep(const struct exec_request *req, int64_t deadline,
                           long ms)
{
  int64_t until = now_ms() + ms, now, step;
  struct timespec ts;

  for (;;) {
    if (req->cancel && atomic_load(req->cancel))
      return ERR_CANCELLED;
    now = now_ms();
    if (deadline && now >= deadline)
      return ERR_TIMEOUT;
    if (now >= until)
      return ERR_OK;
    step = until - now;
    if (step > MOCK_TICK_MS)
      step = MOCK_TICK_MS;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)step * 1000000L;
    nanosleep(&ts, NULL);
  }
}

static enum err mock_join(struct buf *b, const char *const *argv)
{
  enum err e = ERR_OK;
  size_t i;

  for (i = 0; argv[i] && !e; i++)
    e = buf_printf(b, "%s%s", i ? " " : "", argv[i]);
  return e ? e : buf_appends(b, "\n");
}

static enum err mock_unavailable(const char *flag, struct buf *b)
{
  FILE *f;

  if (flag && (f = fopen(flag, "r"))) {
    fclose(f);
    return buf_appends(b, "ok\n");
  }
  if (flag && (f = fopen(flag, "w")))
    fclose(f);
  return ERR_UNAVAILABLE;
}

/* Interprets the script; the delay and the sleep come first. */
static enum err mock_script(const struct exec_request *req, int64_t deadline,
                            struct buf *b, struct exec_result *res)
{
  const char *const *argv = req->argv;
  int is_mock = strcmp(argv[0], "mock") == 0 && argv[1];
  long v;

  if (is_mock && strcmp(argv[1], "ok") == 0)
    return buf_appends(b, "ok\n");
  if (is_mock && strcmp(argv[1], "fail") == 0) {
    if (parse_long(argv[2], 0, 255, &v) < 0)
      v = 1;
    res->exit_code = (int)v;
    return ERR_OK;
  }
  if (is_mock && strcmp(argv[1], "sleep") == 0) {
    if (parse_long(argv[2], 0, 86400L * 1000, &v) < 0)
      v = 0;
    return mock_sleep(req, deadline, v);
  }
  if (is_mock && strcmp(argv[1], "echo") == 0)
    return mock_join(b, argv + 2);
  if (is_mock && strcmp(argv[1], "unavailable") == 0)
    return mock_unavailable(argv[2], b);
  if (buf_appends(b, "mock: "))
    return ERR_NOMEM;
  return mock_join(b, argv);
}

/* Hands out the last capture_max bytes, as local would have kept them. */
static void mock_output(const struct exec_request *req, struct buf *b,
                        struct exec_result *res)
{
  size_t max = req->capture_max ? req->capture_max : MOCK_CAPTURE_MAX;
  size_t keep = b->len < max ? b->len : max;

  if (b->len && req->on_output)
    req->on_output(req->ud, b->data, b->len);
  res->output_total = b->len;
  if (keep < b->len)
    memmove(b->data, b->data + (b->len - keep), keep + 1);
  b->len = keep;
  res->output = buf_detach(b);
  res->output_len = res->output ? keep : 0;
  res->truncated = res->output_total > res->output_len;
}

static enum err mock_run(struct exec_instance *inst,
                         const struct exec_request *req,
                         struct exec_result *res)
{
  struct mock_inst *mi = mock_from(inst);
  struct buf b = BUF_INIT(MOCK_OUTPUT_MAX);
  int64_t start = now_ms(), deadline = 0;
  struct timespec began;
  enum err e;

  clock_gettime(CLOCK_MONOTONIC, &began);
  memset(res, 0, sizeof *res);
  if (req->timeout_ms > 0)
    deadline = start + req->timeout_ms;
  if (!req->argv || !req->argv[0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    e = ERR_INVAL;
    goto out;
  }
  e = mock_sleep(req, deadline, mi->delay_ms);
  if (!e)
    e = mock_script(req, deadline, &b, res);
  if (e == ERR_TIMEOUT || e == ERR_CANCELLED) {
    res->timed_out = e == ERR_TIMEOUT;
    res->cancelled = e == ERR_CANCELLED;
    res->term_signal = SIGTERM;
    res->exit_code = 128 + SIGTERM;
  } else if (e) {
    snprintf(res->error, sizeof res->error, "mock: %s", err_str(e));
  }
  if (mi->stamp)
    buf_printf(&b, "@%lld\n", (long long)began.tv_sec * 1000000 + began.tv_nsec / 1000);
out:
  mock_output(req, &b, res);
  res->duration_ms = (long)(now_ms() - start);
  return e;
}

const struct exec_backend exec_mock = {
  .name = "mock",
  .create = mock_create,
  .run = mock_run,
  .health = mock_health,
  .destroy = mock_destroy,
};
