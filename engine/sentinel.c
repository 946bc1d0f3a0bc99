/* engine/sentinel.c — the provider monitor.
 *
 * DESIGN
 * - One thread (when interval_ms > 0) runs a round of health checks, then
 *   sleeps on a condition variable until the interval has passed or
 *   sentinel_free() asks it to stop.  A round may also be run by any thread
 *   through sentinel_check_now(); round_mu keeps rounds from overlapping, so
 *   the per-instance counters have one writer at a time.
 * - State (up, failures, last error) is guarded by mu, which is never held
 *   while a health check or a callback runs: a slow check (an ssh connect)
 *   must not block readers such as routing.
 * - An incident is the down state: the callback hears "down" once when the
 *   failures reach the threshold and "up" once on the first good check
 *   after it.  A provider that flaps below the threshold raises nothing.
 * - Instances without a backend (unavailable at start) are down from the
 *   start with the registry's reason and are not checked. */
#include "sentinel.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

struct sentinel_slot {
  struct sentinel_status st;
};

struct sentinel {
  const struct registry *reg;
  struct sentinel_slot *slots;   /* one per registry entry */
  int interval_ms, threshold;
  sentinel_cb cb;
  void *ud;
  pthread_mutex_t mu;            /* slots[].st, stop */
  pthread_mutex_t round_mu;      /* one round at a time */
  pthread_cond_t cv;
  pthread_t thread;
  int has_thread, stop;
};

static void sentinel_copy_redacted(char *dst, size_t len, const char *src)
{
  char *r = log_redact(src);

  snprintf(dst, len, "%s", r ? r : "[unavailable]");
  free(r);
}

/* Records one result; returns 1 if the state changed (an event to send). */
static int sentinel_record(struct sentinel *s, size_t i, int ok,
                           const char *detail)
{
  struct sentinel_status *st = &s->slots[i].st;
  int changed = 0;

  pthread_mutex_lock(&s->mu);
  st->checks++;
  st->last_ok = ok != 0;
  sentinel_copy_redacted(st->detail, sizeof st->detail, detail);
  if (ok) {
    st->failures = 0;
    st->last_error[0] = 0;
    changed = !st->up;
    st->up = 1;
  } else {
    st->failures++;
    snprintf(st->last_error, sizeof st->last_error, "%s", st->detail);   /* redacted above */
    if (st->up && st->failures >= s->threshold) {
      st->up = 0;
      changed = 1;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return changed;
}

static void sentinel_check_one(struct sentinel *s, size_t i)
{
  const struct registry_entry *e = &s->reg->v[i];
  struct exec_health h = {0, ""};
  struct sentinel_event ev;
  char detail[256];
  enum err rc;

  if (!e->inst)
    return;
  rc = e->inst->backend->health ? e->inst->backend->health(e->inst, &h)
                                : ERR_UNSUPPORTED;
  if (rc != ERR_OK) {
    h.ok = 0;
    snprintf(h.detail, sizeof h.detail, "health check failed: %s",
             err_str(rc));
  }
  if (!sentinel_record(s, i, h.ok, h.detail) || !s->cb)
    return;
  sentinel_copy_redacted(detail, sizeof detail, h.detail);
  ev = (struct sentinel_event){e->name, h.ok, detail};
  s->cb(s->ud, &ev);
}

void sentinel_check_now(struct sentinel *s)
{
  size_t i;

  pthread_mutex_lock(&s->round_mu);
  for (i = 0; i < s->reg->n; i++)
    sentinel_check_one(s, i);
  pthread_mutex_unlock(&s->round_mu);
}

static void *sentinel_main(void *arg)
{
  struct sentinel *s = arg;
  struct timespec until;

  for (;;) {
    sentinel_check_now(s);
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += s->interval_ms / 1000;
    until.tv_nsec += (long)(s->interval_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) == 0)
      ;
    if (s->stop) {
      pthread_mutex_unlock(&s->mu);
      return NULL;
    }
    pthread_mutex_unlock(&s->mu);
  }
}

static void sentinel_init_slots(struct sentinel *s)
{
  size_t i;

  for (i = 0; i < s->reg->n; i++) {
    s->slots[i].st.up = s->reg->v[i].inst != NULL;
    if (!s->reg->v[i].inst)
      sentinel_copy_redacted(s->slots[i].st.last_error,
                             sizeof s->slots[i].st.last_error,
                             s->reg->v[i].error);
  }
}

enum err sentinel_new(struct sentinel **out, const struct registry *r,
                      int interval_ms, int fail_threshold, sentinel_cb cb,
                      void *ud)
{
  struct sentinel *s;

  *out = NULL;
  if (!r || interval_ms < 0 || fail_threshold < 1)
    return ERR_INVAL;
  s = calloc(1, sizeof *s);
  if (!s)
    return ERR_NOMEM;
  s->slots = calloc(r->n ? r->n : 1, sizeof *s->slots);
  if (!s->slots) {
    free(s);
    return ERR_NOMEM;
  }
  s->reg = r;
  s->interval_ms = interval_ms;
  s->threshold = fail_threshold;
  s->cb = cb;
  s->ud = ud;
  pthread_mutex_init(&s->mu, NULL);
  pthread_mutex_init(&s->round_mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  sentinel_init_slots(s);
  if (interval_ms > 0) {
    if (pthread_create(&s->thread, NULL, sentinel_main, s) != 0) {
      sentinel_free(s);
      return ERR_IO;
    }
    s->has_thread = 1;
  }
  *out = s;
  return ERR_OK;
}

void sentinel_free(struct sentinel *s)
{
  if (!s)
    return;
  if (s->has_thread) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->round_mu);
  pthread_mutex_destroy(&s->mu);
  free(s->slots);
  free(s);
}

static long sentinel_index(const struct sentinel *s, const char *name)
{
  size_t i;

  for (i = 0; name && i < s->reg->n; i++)
    if (s->reg->v[i].name && strcmp(s->reg->v[i].name, name) == 0)
      return (long)i;
  return -1;
}

enum err sentinel_status(struct sentinel *s, const char *name,
                         struct sentinel_status *out)
{
  long i = sentinel_index(s, name);

  if (i < 0)
    return ERR_NOTFOUND;
  pthread_mutex_lock(&s->mu);
  *out = s->slots[i].st;
  pthread_mutex_unlock(&s->mu);
  return ERR_OK;
}

int sentinel_is_up(struct sentinel *s, const char *name)
{
  struct sentinel_status st;

  return sentinel_status(s, name, &st) != ERR_OK || st.up;
}
