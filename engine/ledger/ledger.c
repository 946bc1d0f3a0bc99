/* engine/ledger/ledger.c — backend choice by URL and the shared frees. */
#include "ledger.h"

#include "../log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum err ledger_open(const char *url, struct ledger **out, char *errbuf,
                     size_t errlen)
{
  *out = NULL;
  if (!url || !*url) {
    snprintf(errbuf, errlen, "database url is empty");
    return ERR_CONFIG;
  }
  if (strncmp(url, "sqlite://", 9) == 0)
    return ledger_sqlite_open(url + 9, out, errbuf, errlen);
  if (strncmp(url, "postgresql://", 13) == 0 ||
      strncmp(url, "postgres://", 11) == 0)
    return ledger_pg_open(url, out, errbuf, errlen);
  snprintf(errbuf, errlen,
           "database url must start with sqlite:// or postgresql://");
  return ERR_CONFIG;
}

int ledger_is_new(const char *url)
{
  struct stat st;

  return url && strncmp(url, "sqlite://", 9) == 0 && stat(url + 9, &st) != 0 &&
         errno == ENOENT;
}

struct ledger_tx_hook {
  struct ledger_tx_hook *next;
  void (*fn)(void *arg, struct ledger *l, int committed);
  void *arg;
};

enum err ledger_after_tx(struct ledger *l, void (*fn)(void *arg, struct ledger *l, int committed),
                         void *arg)
{
  struct ledger_tx_hook *h = malloc(sizeof *h);

  if (!h)
    return ERR_NOMEM;
  h->fn = fn;
  h->arg = arg;
  h->next = l->tx_hooks;
  l->tx_hooks = h;
  return ERR_OK;
}

/* The hooks run oldest first; each may use l (not inside a transaction any
 * more), which may register no new hook for this one. */
static void run_tx_hooks(struct ledger *l, struct ledger *pass, int committed)
{
  struct ledger_tx_hook *h = l->tx_hooks, *rev = NULL;

  l->tx_hooks = NULL;
  while (h) {                   /* newest first -> oldest first */
    struct ledger_tx_hook *next = h->next;
    h->next = rev;
    rev = h;
    h = next;
  }
  while (rev) {
    struct ledger_tx_hook *next = rev->next;
    rev->fn(rev->arg, pass, committed);
    free(rev);
    rev = next;
  }
}

void ledger_tx_ended(struct ledger *l, int committed)
{
  if (l && l->tx_hooks)
    run_tx_hooks(l, l, committed);
}

void ledger_close(struct ledger *l)
{
  if (!l)
    return;
  if (l->tx_hooks)
    run_tx_hooks(l, NULL, 0);
  l->ops->close(l);
}

void ledger_release_memory(struct ledger *l)
{
  if (l && l->ops->release_memory)
    l->ops->release_memory(l);
}

enum err ledger_claim_each(struct ledger *l, const char *owner, int lease_ms, int max,
                           struct job *out, int *n)
{
  int own = max > 1;
  enum err e;

  *n = 0;
  if (own && (e = l->ops->begin(l)))
    return e;
  while (*n < max && !(e = l->ops->job_claim(l, owner, lease_ms, 0, &out[*n])))
    ++*n;
  if (e == ERR_NOTFOUND && *n)
    e = ERR_OK;
  if (own && (e || (e = l->ops->commit(l)))) {
    l->ops->rollback(l);      /* ERR_STATE when the failed commit ended it */
    while (*n)
      job_release(&out[--*n]);
  }
  return e;
}

static atomic_ullong claims_made, claims_empty;

enum err ledger_claim_some(struct ledger *l, const char *owner, int lease_ms, int max,
                           struct job *out, int *n)
{
  enum err e = l->ops->job_claim_some ? l->ops->job_claim_some(l, owner, lease_ms, max, out, n)
                                      : ledger_claim_each(l, owner, lease_ms, max, out, n);

  atomic_fetch_add(&claims_made, 1);
  if (e == ERR_NOTFOUND || (e == ERR_OK && *n == 0))
    atomic_fetch_add(&claims_empty, 1);
  return e;
}

void ledger_claim_counts(unsigned long long *made, unsigned long long *empty)
{
  *made = atomic_load(&claims_made);
  *empty = atomic_load(&claims_empty);
}

enum err ledger_outbox_put(struct ledger *l, const struct outbox_msg *m,
                           int64_t *id)
{
  struct outbox_msg safe = *m;
  enum err e;

  if (!(safe.text = log_redact(m->text ? m->text : "")))
    return ERR_NOMEM;
  e = l->ops->outbox_put(l, &safe, id);
  free(safe.text);
  if (!e)
    ledger_outbox_ring();
  return e;
}

enum err ledger_finish_notice(struct ledger *l, int64_t id, const char *owner,
                              enum job_state to, int exit_code, const char *output_tail,
                              const char *reason, const struct outbox_msg *notice)
{
  struct outbox_msg safe = *notice;
  enum err e;

  if (!l->ops->job_finish_notice)
    return ERR_UNSUPPORTED;
  if (!(safe.text = log_redact(notice->text ? notice->text : "")))
    return ERR_NOMEM;
  e = l->ops->job_finish_notice(l, id, owner, to, exit_code, output_tail, reason, &safe);
  free(safe.text);
  if (!e)
    ledger_outbox_ring();
  return e;
}

static pthread_mutex_t bell_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bell_cv;
static pthread_once_t bell_once = PTHREAD_ONCE_INIT;
static uint64_t bell_gen;

/* The bell's clock is monotonic: a wall-clock step must not stretch a wait. */
static void bell_init(void)
{
  pthread_condattr_t a;

  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&bell_cv, &a);
  pthread_condattr_destroy(&a);
}

void ledger_outbox_ring(void)
{
  pthread_once(&bell_once, bell_init);
  pthread_mutex_lock(&bell_mu);
  bell_gen++;
  pthread_cond_broadcast(&bell_cv);
  pthread_mutex_unlock(&bell_mu);
}

void ledger_outbox_wait(uint64_t *seen, int timeout_ms)
{
  struct timespec ts;

  pthread_once(&bell_once, bell_init);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&bell_mu);
  while (bell_gen == *seen)
    if (pthread_cond_timedwait(&bell_cv, &bell_mu, &ts) == ETIMEDOUT)
      break;
  *seen = bell_gen;
  pthread_mutex_unlock(&bell_mu);
}

int64_t ledger_now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ledger_mono_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void job_release(struct job *j)
{
  if (!j)
    return;
  free(j->channel);
  free(j->text);
  free(j->plan_json);
  free(j->summary);
  free(j->reason);
  free(j->output_tail);
  free(j->lease_owner);
  memset(j, 0, sizeof *j);
}

void job_list_free(struct job *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    job_release(&v[i]);
  free(v);
}

void job_step_rec_release(struct job_step_rec *s)
{
  if (!s)
    return;
  free(s->state);
  free(s->output_tail);
  memset(s, 0, sizeof *s);
}

void job_step_list_free(struct job_step_rec *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    job_step_rec_release(&v[i]);
  free(v);
}

void transition_list_free(struct transition *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].actor);
    free(v[i].reason);
  }
  free(v);
}

void chat_msg_list_free(struct chat_msg *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].role);
    free(v[i].text);
  }
  free(v);
}

void chat_turn_list_free(struct chat_turn *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].channel);
    free(v[i].text);
  }
  free(v);
}

void outbox_msg_release(struct outbox_msg *m)
{
  if (!m)
    return;
  free(m->channel);
  free(m->text);
  free(m->buttons_json);
  free(m->edit_key);
  memset(m, 0, sizeof *m);
}

void outbox_list_free(struct outbox_msg *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    outbox_msg_release(&v[i]);
  free(v);
}

void artifact_list_free(struct artifact *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    free(v[i].name);
  free(v);
}

void worker_rec_release(struct worker_rec *w)
{
  if (!w)
    return;
  free(w->id);
  free(w->host);
  free(w->providers);
  free(w->state);
  free(w->reason);
  memset(w, 0, sizeof *w);
}

void worker_list_free(struct worker_rec *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    worker_rec_release(&v[i]);
  free(v);
}

void worker_event_list_free(struct worker_event *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].worker_id);
    free(v[i].kind);
    free(v[i].detail);
  }
  free(v);
}

enum err ledger_outbox_done(struct ledger *l, int64_t id)
{
  return l->ops->outbox_set(l, id, "sent", 0, NULL);
}

enum err ledger_outbox_retry(struct ledger *l, int64_t id, int64_t not_before,
                             const char *error)
{
  return l->ops->outbox_set(l, id, "pending", not_before, error ? error : "retry");
}

enum err ledger_outbox_fail(struct ledger *l, int64_t id, const char *error)
{
  return l->ops->outbox_set(l, id, "failed", 0, error ? error : "failed");
}
