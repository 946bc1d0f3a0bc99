/* engine/orchestrator.c — see orchestrator.h for the design. */
#include "orchestrator.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "archive.h"
#include "buf.h"
#include "log.h"
#include "logstore.h"
#include "plan.h"
#include "persona.h"
#include "planner.h"
#include "policy.h"
#include "sentinel.h"

#define HEARTBEAT_MS 1000
#define RECLAIM_EVERY_MS 5000
#define RECLAIM_LOCK "reclaim"
#define BACKOFF_MAX_MS 300000
#define RESULT_TAIL 3000

#define PREFETCH_MAX 8          /* jobs one claim takes when jobs are quick */
#define QUICK_MS 20             /* a job this short counts as quick */
#define QUICK_STREAK 2          /* quick jobs in a row before prefetching */
#define GROUP_MAX 256           /* writes in one group commit */
#define LINGER_MS 20            /* a status line waits this long for company */
#define GROUP_GAP_MS 5          /* between group commits, unless a slot waits */
#define BELL_POLL_MS 250        /* the bell's wait for a notification, at most */
#define DUE_POLL_MS 500         /* without one, a claim this often: retries
                                 * that came due (they send none) */
#define BELL_IDLE_MS 5000       /* an idle slot's longest sleep while the bell
                                 * is on (tickets and stop wake it sooner) */

struct slot {
  pthread_t thread;
  struct orch *o;
  int index;
  char owner[96];               /* the lease name of this slot's claims */
  char run_owner[96];           /* whose lease the running job is under (mu) */
  _Atomic int64_t job_id;       /* running job, 0 when idle */
  atomic_uint run_seq;          /* +1 per claim: which run job_id means */
  atomic_int cancel;            /* stop the running step */
  atomic_int handback;          /* stopped by shutdown: requeue */
  struct logstore_writer *log;  /* the running job's, for logstore_settle (mu) */
};

/* A job claimed ahead (prefetched), waiting in this process for a free
 * worker slot; the lease is the claiming slot's (owner). */
struct ready {
  struct ready *next;
  struct job job;
  char owner[96];
  int cancel;                   /* cancel requested (o->mu) */
  int lost;                     /* the lease is no longer ours (o->mu) */
};

/* A write for the writer thread (see orchestrator.h, DESIGN). */
enum wkind { W_STEP, W_FINISH };

struct write {
  struct write *next;
  uint64_t seq;
  enum wkind kind;
  int sync;                     /* a slot waits for it, and frees it */
  int64_t job_id;
  char owner[96];
  char *channel;                /* the job's, for notifications */
  int64_t chat_id;
  int64_t deadline;             /* monotonic ms: stop retrying */
  int64_t queued;               /* monotonic ms */
  int lazy;                     /* may wait LINGER_MS for the next write */
  /* W_STEP: a step record, after an optional status line; check_lease
   * renews the lease first and refuses when it is lost or cancelled. */
  struct job_step_rec rec;
  char *progress;
  int check_lease;
  int superseded;               /* a later write of the group ends the step */
  /* W_FINISH: the job's end, and its announcement. */
  enum job_state to;
  int exit_code;
  char *tail;
  char *reason;
  char *log;                    /* the job's log lines, kept in the ledger */
  int artifacts;                /* the plan keeps some */
  int64_t created_at, ended_at; /* the job's, database clock, for the
                                 * announcement (ended_at estimated) */
  enum err result;              /* ERR_STATE: lease lost; ERR_CANCELLED */
};

struct orch {
  const struct cfg *cfg;
  const struct registry *reg;
  pthread_mutex_t mu;
  pthread_cond_t cv;            /* stopping (the supervisor waits on it) */
  pthread_cond_t scv;           /* work queued, or stopping (idle slots) */
  pthread_cond_t hcv;           /* a hand-off's transaction ended (orch_stop) */
  int wake_seq;
  int tickets;                  /* claims owed to notifications heard (mu) */
  int sweeps;                   /* a claim owed to a sweep (mu) */
  uint64_t granted;             /* tickets ever granted (mu) */
  atomic_int bell_on;           /* the bell listens: slots claim only for a
                                 * ticket or a sweep (see bell_main) */
  pthread_t bell;
  int has_bell;
  atomic_int stopping;          /* no new claims */
  struct slot *slots;
  int n_slots;
  int n_workers;                /* slots asked for (set before they start) */
  struct ready *ready;          /* prefetched jobs, oldest first (mu) */
  struct ready *ready_tail;
  int n_ready;                  /* jobs on it (mu) */
  int handoffs;                 /* jobs handed to idle slots whose submitting
                                 * transaction has not ended yet (mu) */
  atomic_int quick;             /* quick jobs in a row */
  pthread_mutex_t wmu;          /* the writer's queue */
  pthread_cond_t wcv;           /* writes queued, or the writer stops */
  pthread_cond_t wdone;         /* a group committed */
  struct write *w_head, *w_tail;
  uint64_t w_seq, w_done;       /* last queued, last done */
  int w_eager;                  /* queued writes that are not lazy */
  int w_sync;                   /* queued writes a slot waits for */
  int64_t w_last;               /* monotonic ms of the last group commit */
  int w_stop;
  pthread_t writer;
  int has_writer;
  pthread_t supervisor;
  int has_supervisor;
  int registered;               /* the supervisor has registered this process
                                 * (or given up): slots claim only after, so
                                 * that a worker that holds jobs is one the
                                 * registry knows, and watches (mu) */
  _Atomic(struct sentinel *) sentinel;  /* provider health; may be NULL */
  char id[96];                  /* "host:pid": this process in the registry */
  char host[200];
};

static void sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int64_t mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void orch_set_sentinel(struct orch *o, struct sentinel *s)
{
  if (o)
    atomic_store(&o->sentinel, s);
}

/* Whether an instance may take work: the sentinel's verdict when one
 * watches, else the instance's own health check. */
static int provider_up(struct orch *o, const struct registry_entry *re)
{
  struct sentinel *sen = atomic_load(&o->sentinel);
  struct exec_health h = {0};

  if (!re->inst)
    return 0;
  if (sen)
    return sentinel_is_up(sen, re->name);
  return re->inst->backend->health(re->inst, &h) == ERR_OK && h.ok;
}

/* Only the sentinel's verdict: a step is refused for being down only when
 * someone watched it go down. */
static int provider_marked_down(struct orch *o, const char *name)
{
  struct sentinel *sen = atomic_load(&o->sentinel);

  return sen && !sentinel_is_up(sen, name);
}

/* One idle slot is enough for one queued job: waking them all would send
 * each to claim it (a thundering herd of claims, all but one empty).  With
 * the bell on, the job's notification wakes one (see bell_main). */
void orch_wake(struct orch *o)
{
  if (!o || atomic_load(&o->bell_on))
    return;
  pthread_mutex_lock(&o->mu);
  o->wake_seq++;
  pthread_cond_signal(&o->scv);
  pthread_mutex_unlock(&o->mu);
}

static void wake_all(struct orch *o)
{
  pthread_mutex_lock(&o->mu);
  o->wake_seq++;
  pthread_cond_broadcast(&o->scv);
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

/* Slots may claim from now on (see registered). */
static void claims_open(struct orch *o)
{
  pthread_mutex_lock(&o->mu);
  o->registered = 1;
  pthread_cond_broadcast(&o->scv);
  pthread_mutex_unlock(&o->mu);
}

static int wake_seq(struct orch *o)
{
  int seq;

  pthread_mutex_lock(&o->mu);
  seq = o->wake_seq;
  pthread_mutex_unlock(&o->mu);
  return seq;
}

/* Waits on cv up to ms for an orch_wake() after the one that made seq
 * (taken before looking for work, so that a wake-up in between is not
 * lost), or stop. */
static void wait_for_work(struct orch *o, pthread_cond_t *cv, int seq, int ms)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&o->mu);
  while (seq == o->wake_seq && !atomic_load(&o->stopping))
    if (pthread_cond_timedwait(cv, &o->mu, &ts) == ETIMEDOUT)
      break;
  pthread_mutex_unlock(&o->mu);
}

/* ---- notifications ---------------------------------------------------- */

static enum err notify(struct ledger *l, const struct job *j, const char *text,
                       const char *edit_key)
{
  struct outbox_msg m = {0};
  enum err e;

  m.channel = j->channel;
  m.chat_id = j->chat_id;
  m.job_id = j->id;
  m.text = (char *)text;
  m.edit_key = (char *)edit_key;
  if ((e = ledger_outbox_put(l, &m, NULL)))
    log_error("orch", "cannot queue a notification for job #%lld",
              (long long)j->id);
  return e;
}

static const char *tail_of(const char *s, size_t max)
{
  size_t n = s ? strlen(s) : 0;

  if (!s)
    return "";
  if (n <= max)
    return s;
  s += n - max;
  while ((*s & 0xC0) == 0x80)   /* do not start inside a UTF-8 sequence */
    s++;
  return s;
}

char *orch_format_result(const struct job *j, size_t tail_max)
{
  struct buf reason = BUF_INIT(4096), out = BUF_INIT(tail_max + 16);
  char id[24], code[32] = "", secs[32];
  int failed = job_state_terminal(j->state) && j->state != JOB_SUCCEEDED;
  char *text;

  snprintf(id, sizeof id, "%lld", (long long)j->id);
  if (j->has_exit_code)
    snprintf(code, sizeof code, " · exit %d", j->exit_code);
  snprintf(secs, sizeof secs, "%.1fs", (double)(j->updated_at - j->created_at) / 1000.0);
  /* A reason explains an ending other than success, or a pending approval. */
  if (j->reason && *j->reason && j->state != JOB_SUCCEEDED &&
      (job_state_terminal(j->state) || j->state == JOB_AWAITING_APPROVAL))
    buf_printf(&reason, "\n%s", j->reason);
  if (j->output_tail && *j->output_tail) {
    const char *t = tail_of(j->output_tail, tail_max);
    buf_printf(&out, "\n%s%s", t != j->output_tail ? "…" : "", t);
  }
  text = persona_render(persona_current(), failed ? "failure" : "result", "id", id,
                        "state", job_state_name(j->state), "exit", code, "elapsed", secs,
                        "reason", buf_str(&reason), "output", buf_str(&out), NULL);
  buf_release(&reason);
  buf_release(&out);
  return text;
}

/* "Artifacts: report.txt (1204 B, sha 3f2a9c01)" lines; "" when none. */
void orch_format_artifacts(struct ledger *l, int64_t id, struct buf *b)
{
  struct artifact *v = NULL;
  size_t n = 0;

  if (l->ops->artifact_list(l, id, &v, &n) || !n) {
    artifact_list_free(v, n);
    return;
  }
  char *h = persona_render(persona_current(), "heading_artifacts", NULL);
  buf_printf(b, "\n%s", h ? h : "Artifacts:");
  free(h);
  for (size_t i = 0; i < n; i++) {
    const char *base = strrchr(v[i].name, '/');
    buf_printf(b, "\n%s (%lld B, sha %.12s, step %d)", base && base[1] ? base + 1 : v[i].name,
               (long long)v[i].size, v[i].sha256, v[i].step);
  }
  artifact_list_free(v, n);
}

/* artifacts: whether the job may have kept any (else they are not looked
 * up). */
static enum err notify_result(struct ledger *l, const struct job *j, int artifacts)
{
  struct buf b = BUF_INIT(RESULT_TAIL + 8192);
  char *text;
  enum err e;

  text = orch_format_result(j, RESULT_TAIL);
  buf_appends(&b, text);
  if (artifacts)
    orch_format_artifacts(l, j->id, &b);
  e = notify(l, j, buf_str(&b), NULL);
  buf_release(&b);
  free(text);
  return e;
}

/* ---- submission --------------------------------------------------------- */

static enum err fail_job(struct ledger *l, int64_t id, enum job_state from,
                         const char *actor, const char *why)
{
  return l->ops->job_transition(l, id, from, JOB_FAILED, actor, why);
}

/* A step may only go to a provider that exists and is not down. */
static int check_providers(struct orch *o, const struct plan *p,
                           char *why, size_t n)
{
  for (size_t i = 0; i < p->n_steps; i++) {
    const struct registry_entry *re = registry_find(o->reg, p->steps[i].provider);
    if (!re) {
      snprintf(why, n, "step %zu names unknown provider '%s'", i + 1,
               p->steps[i].provider ? p->steps[i].provider : "default");
      return 0;
    }
    if (provider_marked_down(o, re->name)) {
      snprintf(why, n, "step %zu: provider '%s' is down", i + 1, re->name);
      return 0;
    }
  }
  return 1;
}

static enum err plan_job(struct orch *o, const struct submit_req *r,
                         struct plan *p, char *why, size_t n)
{
  char *json = NULL;
  enum err e;

  if (r->plan_json) {
    e = plan_parse(r->plan_json, strlen(r->plan_json), p, why, n);
  } else {
    e = planner_offline(o->cfg, r->text, &json, why, n);
    if (!e)
      e = plan_parse(json, strlen(json), p, why, n);
    free(json);
  }
  if (!e && !check_providers(o, p, why, n)) {
    plan_release(p);
    e = ERR_INVAL;
  }
  if (!e)
    plan_assess(p);
  return e;
}

/* PLANNED → DENIED | AWAITING_APPROVAL | QUEUED by the decided risk. */
static enum err route_by_risk(struct orch *o, struct ledger *l, int64_t id,
                              const struct plan *p, struct submit_res *out)
{
  enum err e;

  out->risk = p->risk;
  snprintf(out->reason, sizeof out->reason, "%s", p->reason);
  if (p->risk == RISK_BLOCKED) {
    out->state = JOB_DENIED;
    return l->ops->job_transition(l, id, JOB_PLANNED, JOB_DENIED, "policy", p->reason);
  }
  if (p->risk >= RISK_WRITE) {
    out->state = JOB_AWAITING_APPROVAL;
    return l->ops->job_transition(l, id, JOB_PLANNED, JOB_AWAITING_APPROVAL,
                                  "policy", p->reason);
  }
  out->state = JOB_QUEUED;
  e = l->ops->job_transition(l, id, JOB_PLANNED, JOB_QUEUED, "policy", p->reason);
  if (!e)
    orch_wake(o);
  return e;
}

enum err orch_create(struct orch *o, struct ledger *l, const struct submit_req *r,
                     int64_t *id)
{
  struct job j = {0};
  enum err e;

  (void)o;
  j.channel = (char *)r->channel;
  j.chat_id = r->chat_id;
  j.user_id = r->user_id;
  j.text = (char *)r->text;
  e = l->ops->job_create(l, &j, r->actor);
  *id = e ? 0 : j.id;
  return e;
}

enum err orch_plan(struct orch *o, struct ledger *l, int64_t id, const struct submit_req *r,
                   struct submit_res *out)
{
  struct plan p;
  char *json;
  enum err e;

  memset(out, 0, sizeof *out);
  out->job_id = id;
  if (plan_job(o, r, &p, out->reason, sizeof out->reason)) {
    out->state = JOB_FAILED;
    return fail_job(l, id, JOB_CREATED, "planner", out->reason);
  }
  out->plan_text = plan_describe(&p);
  out->summary = strdup(p.summary);
  json = plan_to_json(&p);
  e = l->ops->job_set_plan(l, id, json, p.summary, p.risk);
  free(json);
  if (!e)
    e = l->ops->job_transition(l, id, JOB_CREATED, JOB_PLANNED, "planner", NULL);
  if (!e && r->require_approval && p.risk < RISK_WRITE) {
    /* A task proposed in conversation waits for a person whatever its risk. */
    out->risk = p.risk;
    out->state = JOB_AWAITING_APPROVAL;
    snprintf(out->reason, sizeof out->reason, "proposed in conversation");
    e = l->ops->job_transition(l, id, JOB_PLANNED, JOB_AWAITING_APPROVAL, "planner",
                               out->reason);
  } else if (!e) {
    e = route_by_risk(o, l, id, &p, out);
  }
  plan_release(&p);
  return e;
}

/* Where a planned job goes (orch_plan's routing, decided before the job
 * exists): the state, who decides, and why in out->reason. */
static enum job_state route_of(const struct submit_req *r, const struct plan *p,
                               struct submit_res *out, const char **actor)
{
  out->risk = p->risk;
  snprintf(out->reason, sizeof out->reason, "%s", p->reason);
  *actor = "policy";
  if (r->require_approval && p->risk < RISK_WRITE) {
    *actor = "planner";
    snprintf(out->reason, sizeof out->reason, "proposed in conversation");
    return JOB_AWAITING_APPROVAL;
  }
  if (p->risk == RISK_BLOCKED)
    return JOB_DENIED;
  return p->risk >= RISK_WRITE ? JOB_AWAITING_APPROVAL : JOB_QUEUED;
}

/* ---- hand-off ------------------------------------------------------------
 * A job queued in a process whose own worker slot is idle goes to that
 * slot directly: it is created already claimed (job_create_routed with a
 * claim owner: RUNNING under the lease of one of this process's slots, the
 * four transitions, no notification) and put on the ready list once the
 * submitting transaction has committed (ledger_after_tx), where the slot
 * takes it as a prefetched job.  No notification, no bell, no claim: on
 * PostgreSQL a queued job then costs the server one statement less and
 * the process no round trip before it starts.  When every slot is busy (or
 * has a job waiting for it), the job is queued for whichever worker of any
 * process is free first.  A crash before the slot starts leaves a RUNNING
 * job whose lease nobody renews: the reclaimer takes it back, as it does a
 * prefetched one. */

struct handoff {
  struct orch *o;
  struct ready *r;              /* its job's id is set once it is created */
  int unusable;                 /* created, but no memory to run it here */
};

static int busy_slots(struct orch *o);
static void ready_append(struct orch *o, struct ready *r);
static void ready_free(struct ready *r);
static void handoff_done(void *arg, struct ledger *l, int committed);

#define HANDED_BACK "skynet stopped; handed back to the queue"

/* A job claimed by this process that will not run here goes back to the
 * queue (l NULL: the ledger is gone; the reclaimer takes it back when its
 * lease ends). */
static void hand_back(struct ledger *l, int64_t id, const char *owner, const char *why)
{
  enum err e = l ? l->ops->job_transition(l, id, JOB_RUNNING, JOB_QUEUED, owner, why) : ERR_DB;

  if (e)
    log_error("orch", "cannot hand back job #%lld (%s): taken back when its lease ends",
              (long long)id, err_str(e));
}

/* While jobs are quick, a process takes more than its idle slots, up to
 * PREFETCH_MAX waiting (as a prefetching claim does). */
static int handoff_extra(struct orch *o)
{
  return atomic_load(&o->quick) >= QUICK_STREAK ? PREFETCH_MAX - 1 : 0;
}

/* Whether every idle slot is spoken for by a hand-off not yet committed
 * (an idle slot then waits for it rather than claim). */
static int spoken_for(struct orch *o)
{
  int yes;

  pthread_mutex_lock(&o->mu);
  yes = o->handoffs && busy_slots(o) + o->handoffs >= o->n_slots;
  pthread_mutex_unlock(&o->mu);
  return yes;
}

/* The room of an idle slot for a job about to be created, or NULL; inside
 * the caller's transaction on l, else in one begun here (*own). */
static struct handoff *handoff_reserve(struct orch *o, struct ledger *l, int *own)
{
  struct handoff *h = NULL;
  enum err e;
  int room;

  *own = 0;
  if (!o || !o->n_slots || atomic_load(&o->stopping))
    return NULL;
  pthread_mutex_lock(&o->mu);
  room = busy_slots(o) + o->n_ready + o->handoffs < o->n_slots + handoff_extra(o);
  o->handoffs += room;
  pthread_mutex_unlock(&o->mu);
  if (!room)
    return NULL;
  e = l->ops->begin(l);
  *own = e == ERR_OK;
  if ((!e || e == ERR_STATE) && (h = calloc(1, sizeof *h)) &&
      (h->r = calloc(1, sizeof *h->r))) {
    h->o = o;
    snprintf(h->r->owner, sizeof h->r->owner, "%s", o->slots[0].owner);
    if (ledger_after_tx(l, handoff_done, h) == ERR_OK)
      return h;
  }
  if (h)
    free(h->r);
  free(h);
  if (*own)
    l->ops->rollback(l);
  *own = 0;
  pthread_mutex_lock(&o->mu);
  o->handoffs--;
  o->wake_seq++;
  pthread_cond_broadcast(&o->scv);
  pthread_cond_broadcast(&o->hcv);
  pthread_mutex_unlock(&o->mu);
  return NULL;
}

/* The job of j created claimed for h's slot, in the caller's transaction
 * or, when own, in this one, committed here. */
static enum err handoff_create(struct orch *o, struct ledger *l, struct handoff *h, int own,
                               struct job *j, const char *actor, const char *to_actor,
                               const char *reason)
{
  struct job *k = &h->r->job;
  enum err e = l->ops->job_create_routed(l, j, actor, JOB_QUEUED, to_actor, reason,
                                         h->r->owner, o->cfg->lease_ms);

  if (!e) {
    k->id = j->id;
    k->state = JOB_RUNNING;
    k->channel = j->channel ? strdup(j->channel) : NULL;
    k->chat_id = j->chat_id;
    k->user_id = j->user_id;
    k->text = j->text ? strdup(j->text) : NULL;
    k->plan_json = j->plan_json ? strdup(j->plan_json) : NULL;
    k->summary = j->summary ? strdup(j->summary) : NULL;
    k->risk = j->risk;
    k->attempts = j->attempts;
    k->lease_owner = strdup(h->r->owner);
    k->created_at = j->created_at;
    k->updated_at = j->updated_at;
    h->unusable = (j->channel && !k->channel) || (j->text && !k->text) ||
                  (j->plan_json && !k->plan_json) || (j->summary && !k->summary) ||
                  !k->lease_owner;
  }
  if (own) {                    /* h may be gone after either */
    if (e)
      l->ops->rollback(l);
    else
      e = l->ops->commit(l);
  }
  return e;
}

/* ledger_after_tx: the job goes to the ready list when its transaction
 * committed; back to the queue when this process stops meanwhile. */
static void handoff_done(void *arg, struct ledger *l, int committed)
{
  struct handoff *h = arg;
  struct orch *o = h->o;
  struct ready *r = h->r;
  int64_t id = r->job.id;
  int run = 0, unusable = h->unusable;

  free(h);
  pthread_mutex_lock(&o->mu);
  if (committed && id && !unusable && !atomic_load(&o->stopping)) {
    ready_append(o, r);
    run = 1;
  }
  o->handoffs--;
  o->wake_seq++;                /* a slot that waited for it looks again */
  if (run)
    pthread_cond_signal(&o->scv);
  else
    pthread_cond_broadcast(&o->scv);
  pthread_cond_broadcast(&o->hcv);
  pthread_mutex_unlock(&o->mu);
  if (run)
    return;
  if (committed && id)
    hand_back(l, id, r->owner, unusable ? "out of memory" : HANDED_BACK);
  ready_free(r);
}

/* Plans first, then stores the job already routed, with every transition,
 * in one ledger call (one round trip); a plan that fails is stored as a
 * FAILED job, as orch_create + orch_plan do. */
enum err orch_submit(struct orch *o, struct ledger *l, const struct submit_req *r,
                     struct submit_res *out)
{
  struct job j = {0};
  struct handoff *h;
  const char *actor;
  int own;
  struct plan p;
  int64_t id;
  enum err e;

  memset(out, 0, sizeof *out);
  if (plan_job(o, r, &p, out->reason, sizeof out->reason)) {
    out->state = JOB_FAILED;
    if ((e = orch_create(o, l, r, &id)))
      return e;
    out->job_id = id;
    return fail_job(l, id, JOB_CREATED, "planner", out->reason);
  }
  out->state = route_of(r, &p, out, &actor);
  out->plan_text = plan_describe(&p);
  out->summary = strdup(p.summary);
  j.channel = (char *)r->channel;
  j.chat_id = r->chat_id;
  j.user_id = r->user_id;
  j.text = (char *)r->text;
  j.plan_json = plan_to_json(&p);
  j.summary = p.summary;
  j.risk = p.risk;
  if (out->state == JOB_QUEUED && (h = handoff_reserve(o, l, &own))) {
    e = handoff_create(o, l, h, own, &j, r->actor, actor, out->reason);
  } else {
    e = l->ops->job_create_routed(l, &j, r->actor, out->state, actor, out->reason, NULL, 0);
    if (!e && out->state == JOB_QUEUED)
      orch_wake(o);
  }
  out->job_id = e ? 0 : j.id;
  free(j.plan_json);
  plan_release(&p);
  return e;
}

void submit_res_release(struct submit_res *r)
{
  if (!r)
    return;
  free(r->plan_text);
  free(r->summary);
  r->plan_text = r->summary = NULL;
}

enum err orch_decide(struct orch *o, struct ledger *l, int64_t id, int approve,
                     const char *actor)
{
  enum err e;

  if (!approve)
    return l->ops->job_transition(l, id, JOB_AWAITING_APPROVAL, JOB_DENIED, actor,
                                  "denied by a person");
  /* Both steps land together; inside a caller's transaction (ERR_STATE from
   * begin) they join it and the caller commits. */
  int own = (e = l->ops->begin(l)) == ERR_OK;
  if (e && e != ERR_STATE)
    return e;
  e = l->ops->job_transition(l, id, JOB_AWAITING_APPROVAL, JOB_APPROVED, actor, NULL);
  if (!e)
    e = l->ops->job_transition(l, id, JOB_APPROVED, JOB_QUEUED, actor, NULL);
  if (e) {
    if (own)
      l->ops->rollback(l);
    return e;
  }
  if (own && (e = l->ops->commit(l)))
    return e;
  orch_wake(o);
  return ERR_OK;
}

static void cancel_local(struct orch *o, int64_t id)
{
  if (!o)
    return;
  pthread_mutex_lock(&o->mu);
  for (int i = 0; i < o->n_slots; i++)
    if (atomic_load(&o->slots[i].job_id) == id)
      atomic_store(&o->slots[i].cancel, 1);
  for (struct ready *r = o->ready; r; r = r->next)
    if (r->job.id == id)
      r->cancel = 1;
  pthread_mutex_unlock(&o->mu);
}

enum err orch_cancel(struct orch *o, struct ledger *l, int64_t id, const char *actor)
{
  struct job j;
  enum err e;

  if ((e = l->ops->job_get(l, id, &j)))
    return e;
  if (job_state_terminal(j.state)) {
    e = ERR_STATE;
  } else if (j.state == JOB_RUNNING) {
    e = l->ops->job_request_cancel(l, id);
    cancel_local(o, id);
  } else {
    e = l->ops->job_transition(l, id, j.state, JOB_CANCELLED, actor, "cancelled by a person");
  }
  job_release(&j);
  return e;
}

/* ---- retries ------------------------------------------------------------ */

/* backoff_ms, doubled for each attempt made after the first. */
static int64_t backoff_after(const struct cfg *c, int attempts)
{
  int64_t d = c->backoff_ms;

  for (int i = 1; i < attempts && d < BACKOFF_MAX_MS; i++)
    d *= 2;
  return d < BACKOFF_MAX_MS ? d : BACKOFF_MAX_MS;
}

/* The first of steps [0, upto) that is not idempotent, 1-based; 0 if none. */
static size_t first_unsafe(const struct plan *p, size_t upto)
{
  for (size_t i = 0; i < upto && i < p->n_steps; i++)
    if (!plan_step_idempotent(&p->steps[i]))
      return i + 1;
  return 0;
}

/* Whether interrupted work may run again from its first step: only if every
 * step that ran (or may have) is idempotent, and attempts are left.  Fills
 * `delay` then, else says why not into `why`. */
static int may_retry(const struct cfg *c, const struct job *j, size_t unsafe,
                     int64_t *delay, char *why, size_t n)
{
  if (unsafe) {
    snprintf(why, n, "not retried: step %zu changes things and may have run,"
             " so it is not run twice", unsafe);
    return 0;
  }
  if (j->attempts >= c->max_attempts) {
    snprintf(why, n, "gave up after %d attempt%s", j->attempts,
             j->attempts == 1 ? "" : "s");
    return 0;
  }
  *delay = backoff_after(c, j->attempts);
  return 1;
}

/* Puts the job back in the queue after `delay`; tells its user. */
static enum err requeue(const struct cfg *c, struct ledger *l,
                        const struct job *j, const char *owner,
                        const char *actor, const char *cause, int64_t delay)
{
  char reason[512], text[600];
  enum err e;

  snprintf(reason, sizeof reason, "%s; retry %d of %d in %.1fs", cause,
           j->attempts + 1, c->max_attempts, (double)delay / 1000.0);
  e = l->ops->job_requeue(l, j->id, owner, delay, actor, reason);
  if (e) {
    log_error("orch", "cannot requeue job #%lld: %s", (long long)j->id, err_str(e));
    return e;
  }
  log_warn("orch", "job #%lld: %s", (long long)j->id, reason);
  snprintf(text, sizeof text, "#%lld %s", (long long)j->id, reason);
  notify(l, j, text, NULL);
  return ERR_OK;
}

/* ---- the writer ---------------------------------------------------------
 * Worker slots hand their step records, status lines and results to one
 * writer thread with its own connection, which lands everything queued in
 * one transaction (a group commit), so the cost of a commit is shared by
 * every job that finished meanwhile in this process.  FIFO: the writes of a
 * job land in the order its slot made them.  A result is announced (the
 * outbox bell) only after its commit.  A slot waits for a write only when it
 * must be durable first (the start of a step that is not idempotent) and
 * before writing on its own connection (write_barrier), which keeps the
 * order. */

static struct write *write_new(enum wkind kind, const struct job *j, const char *owner,
                               int lease_ms)
{
  struct write *w = calloc(1, sizeof *w);

  if (!w)
    return NULL;
  w->kind = kind;
  w->job_id = j->id;
  snprintf(w->owner, sizeof w->owner, "%s", owner);
  w->channel = j->channel ? strdup(j->channel) : NULL;
  w->chat_id = j->chat_id;
  w->queued = mono_ms();
  w->deadline = w->queued + lease_ms;
  w->created_at = j->created_at;
  return w;
}

static void write_free(struct write *w)
{
  if (!w)
    return;
  free(w->channel);
  free(w->rec.state);
  free(w->rec.output_tail);
  free(w->progress);
  free(w->tail);
  free(w->reason);
  free(w->log);
  free(w);
}

/* Held log lines (taken) that the ledger will not keep go to the job's
 * file, where the next attempt's log follows them. */
static void keep_in_file(struct orch *o, int64_t id, char *held)
{
  logstore_keep(o->cfg->home, id, held);
  free(held);
}

/* Queues w; the writer owns it unless w->sync.  Returns its sequence.
 * The writer is woken only when w changes what it waits for: the first
 * write, the first that may not linger, one a slot waits for; otherwise
 * it is asleep until a time it already knows (write_take). */
static uint64_t write_push(struct orch *o, struct write *w)
{
  uint64_t seq;
  int wake;

  pthread_mutex_lock(&o->wmu);
  wake = !o->w_head || w->sync || (!w->lazy && !o->w_eager);
  o->w_eager += !w->lazy;
  o->w_sync += w->sync;
  seq = w->seq = ++o->w_seq;
  if (o->w_tail)
    o->w_tail->next = w;
  else
    o->w_head = w;
  o->w_tail = w;
  if (wake)
    pthread_cond_signal(&o->wcv);
  pthread_mutex_unlock(&o->wmu);
  return seq;
}

static void write_wait_seq(struct orch *o, uint64_t seq)
{
  pthread_mutex_lock(&o->wmu);
  while (o->w_done < seq)
    pthread_cond_wait(&o->wdone, &o->wmu);
  pthread_mutex_unlock(&o->wmu);
}

/* Queues w and waits until it is done; its result; frees w. */
static enum err write_wait(struct orch *o, struct write *w)
{
  enum err e;

  w->sync = 1;
  write_wait_seq(o, write_push(o, w));
  e = w->result;
  write_free(w);
  return e;
}

/* Waits until everything queued so far is done. */
static void write_barrier(struct orch *o)
{
  uint64_t seq;

  pthread_mutex_lock(&o->wmu);
  seq = o->w_seq;
  pthread_mutex_unlock(&o->wmu);
  write_wait_seq(o, seq);
}

/* The job's end and its announcement in one statement that returns
 * nothing (on PostgreSQL it goes with the group's commit), for results
 * without artifacts, whose text needs nothing read back: the elapsed time
 * is the claim's database time plus this process's clock since.  A lease
 * lost meanwhile changes nothing, and the reclaimer reports it. */
static enum err finish_told(struct ledger *l, struct write *w, struct job *j)
{
  struct outbox_msg m = {0};
  enum err e;

  j->state = w->to;
  j->has_exit_code = 1;
  j->exit_code = w->exit_code;
  j->reason = w->reason;
  j->output_tail = w->tail;
  j->created_at = w->created_at;
  j->updated_at = w->ended_at;
  m.channel = w->channel;
  m.chat_id = w->chat_id;
  m.job_id = w->job_id;
  if (!(m.text = orch_format_result(j, RESULT_TAIL)))
    return ERR_NOMEM;
  e = ledger_finish_notice(l, w->job_id, w->owner, w->to, w->exit_code, w->tail, w->reason, &m);
  free(m.text);
  return e;
}

/* One write inside the group's transaction.  ERR_DB spoils the group;
 * anything else is this write's own outcome. */
static enum err apply_write(struct orch *o, struct ledger *l, struct write *w)
{
  struct job j = {0};
  char key[64];
  int cancel = 0;
  enum err e;

  j.id = w->job_id;
  j.channel = w->channel;
  j.chat_id = w->chat_id;
  if (w->kind == W_FINISH && w->log && l->ops->job_log_put(l, w->job_id, w->log))
    return ERR_DB;
  if (w->kind == W_FINISH && !w->artifacts && l->ops->job_finish_notice)
    return finish_told(l, w, &j);
  if (w->kind == W_FINISH) {
    struct job done;
    e = l->ops->job_finish(l, w->job_id, w->owner, w->to, w->exit_code, w->tail, w->reason,
                           &done);
    if (!e) {
      e = notify_result(l, &done, w->artifacts);
      job_release(&done);
    }
    else if (e == ERR_STATE)
      log_warn("orch", "job #%lld is no longer ours (lease lost): its result %s is dropped",
               (long long)w->job_id, job_state_name(w->to));
    return e;
  }
  if (w->superseded)
    return ERR_OK;
  if (w->check_lease) {
    e = l->ops->job_heartbeat(l, w->job_id, w->owner, o->cfg->lease_ms, &cancel);
    if (e)
      return e;
    if (cancel)
      return ERR_CANCELLED;
  }
  snprintf(key, sizeof key, "job:%lld:progress", (long long)w->job_id);
  if (w->progress && (e = notify(l, &j, w->progress, key)))
    return e;
  if ((e = l->ops->step_record(l, w->job_id, &w->rec)))
    log_error("orch", "cannot record step %d of job #%lld", w->rec.idx + 1,
              (long long)w->job_id);
  return e ? ERR_DB : ERR_OK;
}

/* The writes from g on (linked by next, n of them) in one transaction. */
static enum err apply_group(struct orch *o, struct ledger *l, struct write *g, int n)
{
  enum err e = l->ops->begin(l);

  for (int i = 0; !e && i < n; i++, g = g->next)
    if ((g->result = apply_write(o, l, g)) == ERR_DB)
      e = ERR_DB;
  if (e)
    l->ops->rollback(l);
  else
    e = l->ops->commit(l);
  return e;
}

/* Lands n writes from g on: together, or, when the database refuses the
 * group, each on its own, retried while their leases can hold (a
 * PostgreSQL restart). */
static void commit_group(struct orch *o, struct ledger *l, struct write *g, int n)
{
  enum err e;

  while ((e = apply_group(o, l, g, n)) == ERR_DB) {
    if (n > 1) {
      for (int i = 0; i < n; i++, g = g->next)
        commit_group(o, l, g, 1);
      return;
    }
    if (mono_ms() >= g->deadline) {
      g->result = e;
      log_error("orch", "cannot write for job #%lld: %s", (long long)g->job_id, l->errmsg);
      keep_in_file(o, g->job_id, g->log);
      g->log = NULL;
      return;
    }
    sleep_ms(250);
  }
}

/* A step that started and ended within one group needs only its end: the
 * RUNNING record and the status line of a step already over are skipped. */
static void supersede(struct write *g, int n)
{
  for (int i = 0; i < n; i++, g = g->next) {
    struct write *w = g->next;
    if (g->kind != W_STEP || g->check_lease || g->rec.has_exit_code)
      continue;
    for (int k = i + 1; k < n && !g->superseded; k++, w = w->next)
      g->superseded = w->kind == W_STEP && w->job_id == g->job_id &&
                      w->rec.idx == g->rec.idx && w->rec.has_exit_code;
  }
}

/* until = now + ms on the realtime clock, for pthread_cond_timedwait. */
static void deadline_in(struct timespec *until, int64_t ms)
{
  clock_gettime(CLOCK_REALTIME, until);
  until->tv_sec += ms / 1000;
  until->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until->tv_nsec >= 1000000000L) {
    until->tv_sec++;
    until->tv_nsec -= 1000000000L;
  }
}

/* Whether only lazy writes are queued, the first for less than LINGER_MS. */
static int lingering(struct orch *o, struct timespec *until)
{
  int64_t left;

  if (o->w_eager || !o->w_head || o->w_stop ||
      (left = o->w_head->queued + LINGER_MS - mono_ms()) <= 0)
    return 0;
  deadline_in(until, left);
  return 1;
}

/* Whether to wait before the next group: commits come at most every
 * GROUP_GAP_MS (a busy process finishes jobs faster than the disk syncs;
 * waiting a little lets one sync carry many, and leaves the disk to
 * submissions), except when a slot waits for a write. */
static int spacing(struct orch *o, struct timespec *until)
{
  int64_t left = o->w_last + GROUP_GAP_MS - mono_ms();

  if (left <= 0 || o->w_stop || o->w_sync)
    return 0;
  deadline_in(until, left);
  return 1;
}

/* Takes up to GROUP_MAX queued writes; NULL when stopping with none.  The
 * start of an idempotent step lingers a little, so that when the step is
 * quick its end comes along and both need one commit, or none for the
 * start (supersede).  Before it waits with nothing queued, l (NULL-safe)
 * gives its page cache back. */
static struct write *write_take(struct orch *o, int *n, struct ledger *l)
{
  struct timespec until;
  struct write *g, *w;

  pthread_mutex_lock(&o->wmu);
  if (!o->w_head && !o->w_stop) {   /* about to idle: the page cache goes back */
    pthread_mutex_unlock(&o->wmu);
    ledger_release_memory(l);
    pthread_mutex_lock(&o->wmu);
  }
  while (!o->w_head && !o->w_stop)
    pthread_cond_wait(&o->wcv, &o->wmu);
  while (lingering(o, &until) || spacing(o, &until))
    pthread_cond_timedwait(&o->wcv, &o->wmu, &until);
  g = w = o->w_head;
  for (*n = 0; w && *n < GROUP_MAX; w = w->next, ++*n) {
    o->w_eager -= !w->lazy;
    o->w_sync -= w->sync;
  }
  o->w_head = w;
  if (!w)
    o->w_tail = NULL;
  pthread_mutex_unlock(&o->wmu);
  return g;
}

static void *writer_main(void *arg)
{
  struct orch *o = arg;
  struct ledger *l = NULL;
  struct write *g, *next;
  char err[256];
  int n;

  if (ledger_open(o->cfg->database_url, &l, err, sizeof err))
    log_error("orch", "the writer cannot open the ledger: %s", err);
  while ((g = write_take(o, &n, l))) {
    uint64_t last = 0;
    supersede(g, n);
    if (l)
      commit_group(o, l, g, n);
    o->w_last = mono_ms();
    ledger_outbox_ring();
    /* Own writes are freed here; a waiting slot frees its own after the
     * broadcast, so none is touched after it. */
    for (int i = 0; i < n; i++, g = next) {
      next = g->next;
      if (!l)
        g->result = ERR_DB;
      last = g->seq;
      if (!g->sync)
        write_free(g);
    }
    pthread_mutex_lock(&o->wmu);
    o->w_done = last;
    pthread_cond_broadcast(&o->wdone);
    pthread_mutex_unlock(&o->wmu);
  }
  ledger_close(l);
  return NULL;
}

/* ---- running ------------------------------------------------------------ */

struct run_ctx {
  struct slot *s;
  struct ledger *l;
  struct job *job;
  const char *owner;            /* the lease the job runs under */
  struct plan plan;
  int64_t deadline;             /* monotonic ms: whole-job timeout */
  struct buf tail;              /* last step's output tail */
  struct logstore_writer *log;  /* the job's full output; NULL if unavailable */
  int cur_step;                 /* 1-based, for the log */
  int64_t started;              /* monotonic ms: when the job started here */
};

static void on_step_output(void *ud, const char *data, size_t n)
{
  struct run_ctx *c = ud;

  logstore_output(c->log, c->cur_step, data, n);
}

static void log_step_start(struct run_ctx *c, const struct plan_step *st,
                           const char *provider)
{
  struct buf b = BUF_INIT(LOGSTORE_LINE_MAX - 200);

  for (size_t k = 0; st->argv && st->argv[k]; k++)
    buf_printf(&b, "%s%s", k ? " " : "", st->argv[k]);
  logstore_event(c->log, LOGL_INFO, c->cur_step, "step %d started on '%s': %s: %s",
                 c->cur_step, provider, st->action, buf_str(&b));
  buf_release(&b);
}

/* ---- the timeout hierarchy ----------------------------------------------
 * Four limits may bound a step: the command's own (args.timeout_s), the
 * provider instance's (option timeout_s), the step's (timeout_s, else
 * timeouts.step_s) and what is left of the job's (timeouts.job_s).  The
 * smallest applies; on a tie the more specific level is named, since that is
 * the one an operator would change. */
enum tmo_level { TMO_COMMAND, TMO_PROVIDER, TMO_STEP, TMO_JOB };

static const char *const tmo_names[] = {"command", "provider", "step", "job"};

struct step_limit {
  int64_t ms;                   /* what the provider is given */
  enum tmo_level level;         /* which limit that is */
  int secs;                     /* the configured value, for the reason */
};

static void limit_offer(struct step_limit *l, int64_t ms, enum tmo_level level, int secs)
{
  if (ms > 0 && (l->ms <= 0 || ms < l->ms)) {
    l->ms = ms;
    l->level = level;
    l->secs = secs;
  }
}

static void step_limit(const struct run_ctx *c, const struct plan_step *st,
                       const struct registry_entry *re, struct step_limit *out)
{
  const struct cfg *cfg = c->s->o->cfg;
  int step_s = st->timeout_s ? st->timeout_s : cfg->step_timeout_s;
  int64_t left = c->deadline - mono_ms();

  memset(out, 0, sizeof *out);
  limit_offer(out, (int64_t)st->cmd_timeout_s * 1000, TMO_COMMAND, st->cmd_timeout_s);
  limit_offer(out, (int64_t)re->timeout_s * 1000, TMO_PROVIDER, re->timeout_s);
  limit_offer(out, (int64_t)step_s * 1000, TMO_STEP, step_s);
  limit_offer(out, left < 1 ? 1 : left, TMO_JOB, cfg->job_timeout_s);
  if (out->ms > INT32_MAX)
    out->ms = INT32_MAX;
}

struct step_outcome {
  enum job_state state;         /* SUCCEEDED, FAILED, TIMED_OUT, CANCELLED */
  int exit_code;
  char reason[320];
  size_t step;                  /* the step that decided */
  int transient;                /* FAILED for a cause that may pass: retry */
  int step_started;             /* that step ran, at least in part */
};

/* The status line for step i: malloc'd, NULL if none. */
static char *progress(struct run_ctx *c, size_t i, int64_t started)
{
  char bar[11], id[24], step[24], steps[24], secs[32];
  size_t n = c->plan.n_steps, done = i * 10 / n;

  for (size_t k = 0; k < 10; k++)
    bar[k] = k < done ? '#' : '-';
  bar[10] = '\0';
  snprintf(id, sizeof id, "%lld", (long long)c->job->id);
  snprintf(step, sizeof step, "%zu", i + 1);
  snprintf(steps, sizeof steps, "%zu", n);
  snprintf(secs, sizeof secs, "%.0fs", (double)(mono_ms() - started) / 1000.0);
  return persona_render(persona_current(), "progress", "id", id, "step", step, "steps", steps,
                        "bar", bar, "elapsed", secs, "what", c->plan.steps[i].action, NULL);
}

/* A step record for the writer; the status line goes with a RUNNING one. */
static struct write *step_write(struct run_ctx *c, size_t i, const char *state,
                                const struct exec_result *res, int64_t started)
{
  struct write *w = write_new(W_STEP, c->job, c->owner, c->s->o->cfg->lease_ms);

  if (!w)
    return NULL;
  w->rec.idx = (int)i;
  w->rec.state = strdup(state);
  w->rec.has_exit_code = res != NULL;
  w->rec.exit_code = res ? res->exit_code : 0;
  w->rec.output_tail = res && res->output ? strdup(res->output) : NULL;
  w->rec.started_at = started;
  w->rec.finished_at = res ? ledger_now_ms() : 0;
  if (!res)
    w->progress = progress(c, i, c->started);
  return w;
}

/* Lazy: what comes next (the job's result, the next step's start) takes it
 * along in one commit. */
static void record_step(struct run_ctx *c, size_t i, const char *state,
                        const struct exec_result *res, int64_t started)
{
  struct write *w = step_write(c, i, state, res, started);

  if (w) {
    w->lazy = 1;
    write_push(c->s->o, w);
  }
  else
    log_error("orch", "cannot record step %zu of job #%lld", i + 1, (long long)c->job->id);
}

/* Records that step i starts, with its status line.  A step that is not
 * idempotent must not run twice, so its record is durable before it runs
 * (a crash after that fails the job instead of running it again), and the
 * lease and a cancel request are checked in the same transaction; an
 * idempotent step does not wait for the record.  ERR_OK: run it. */
static enum err step_start(struct run_ctx *c, size_t i, int64_t started,
                           struct step_outcome *out)
{
  struct write *w;
  enum err e;

  if (plan_step_idempotent(&c->plan.steps[i])) {
    if ((w = step_write(c, i, "RUNNING", NULL, started))) {
      w->lazy = 1;
      write_push(c->s->o, w);
    }
    return ERR_OK;
  }
  if (!(w = step_write(c, i, "RUNNING", NULL, started)))
    return ERR_NOMEM;
  w->check_lease = 1;
  if (!(e = write_wait(c->s->o, w)))
    return ERR_OK;
  if (e == ERR_CANCELLED || e == ERR_STATE) {
    out->state = JOB_CANCELLED;
    snprintf(out->reason, sizeof out->reason, "%s before step %zu",
             e == ERR_STATE ? "the lease was lost" : "cancelled", i + 1);
  } else {
    out->state = JOB_FAILED;
    out->transient = 1;
    snprintf(out->reason, sizeof out->reason, "step %zu: cannot record its start: %s", i + 1,
             err_str(e));
  }
  return e;
}

static void judge_step(size_t i, enum err e,
                       const struct exec_result *res, const struct step_limit *lim,
                       struct step_outcome *out)
{
  out->exit_code = res->exit_code;
  if (e == ERR_CANCELLED || res->cancelled) {
    out->state = JOB_CANCELLED;
    snprintf(out->reason, sizeof out->reason, "step %zu cancelled", i + 1);
  } else if (e == ERR_TIMEOUT || res->timed_out) {
    out->state = JOB_TIMED_OUT;
    snprintf(out->reason, sizeof out->reason, "%s timeout of %d s fired on step %zu",
             tmo_names[lim->level], lim->secs, i + 1);
  } else if (e != ERR_OK) {
    out->state = JOB_FAILED;
    out->transient = e == ERR_UNAVAILABLE || e == ERR_NET;
    snprintf(out->reason, sizeof out->reason, "step %zu: %s", i + 1,
             res->error[0] ? res->error : err_str(e));
  } else if (res->exit_code != 0) {
    out->state = JOB_FAILED;
    snprintf(out->reason, sizeof out->reason, "step %zu exited with %d", i + 1,
             res->exit_code);
  } else {
    out->state = JOB_SUCCEEDED;
  }
}

/* Keeps the files a successful step listed in args.artifacts: read from
 * this host for providers that run here, else through the provider.  A
 * failure fails the step (the caller logs out->reason). */
static void keep_artifacts(struct run_ctx *c, size_t i, const struct registry_entry *re,
                           struct step_outcome *out)
{
  const struct plan_step *st = &c->plan.steps[i];
  const struct cfg *cfg = c->s->o->cfg;
  struct artifact a;
  char why[400];

  int here = !strcmp(re->type, "local") || !strcmp(re->type, "sandbox");

  for (size_t k = 0; k < st->n_artifacts; k++) {
    if (here ? archive_keep(cfg->home, cfg->archive_max_bytes, c->l, c->job->id, (int)i + 1,
                            st->artifacts[k], &a, why, sizeof why)
             : archive_keep_from(cfg->home, cfg->archive_max_bytes, c->l, c->job->id, (int)i + 1,
                                 re->inst, st->artifacts[k], 300 * 1000, &a, why, sizeof why)) {
      out->state = JOB_FAILED;
      snprintf(out->reason, sizeof out->reason, "step %zu: %.290s", i + 1, why);
      return;
    }
    logstore_event(c->log, LOGL_INFO, (int)i + 1, "kept artifact '%s': %lld bytes, sha256 %s",
                   st->artifacts[k], (long long)a.size, a.sha256);
  }
}

/* ---- routing ------------------------------------------------------------
 * A step runs on the instance it names, else on the default one.  Risk
 * narrows that: a WRITE step that names no provider runs on the first
 * sandbox instance when providers.isolate_write holds and that instance is
 * up (bwrap present), else on the default; an ADMIN step runs only where
 * the instance allows it (option admin, true for local).  A provider that
 * is down is never used: the step fails saying so rather than move to
 * another host the plan did not name (and the approver did not see). */
static const struct registry_entry *route_step(struct run_ctx *c, const struct plan_step *st,
                                               size_t i, struct step_outcome *out)
{
  struct orch *o = c->s->o;
  const struct registry_entry *re = registry_find(o->reg, st->provider), *sb;

  out->state = JOB_FAILED;
  if (re && !st->provider && st->risk == RISK_WRITE && o->cfg->isolate_write &&
      !strcmp(re->type, "local") && (sb = registry_find_type(o->reg, "sandbox"))) {
    if (provider_up(o, sb))
      re = sb;
    else
      logstore_event(c->log, LOGL_WARN, (int)i + 1, "sandbox '%s' is not available; "
                     "the WRITE step runs on '%s'", sb->name, re->name);
  }
  /* A configured provider that is unavailable or down now may come back:
   * transient, so the job may be retried later. */
  if (!re || !re->inst) {
    out->transient = re != NULL;
    snprintf(out->reason, sizeof out->reason, "step %zu: %s", i + 1,
             re ? re->error : "unknown provider");
  } else if (provider_marked_down(o, re->name)) {
    out->transient = 1;
    snprintf(out->reason, sizeof out->reason, "step %zu: provider '%s' is down", i + 1, re->name);
  }
  else if (st->risk >= RISK_ADMIN && !re->admin)
    snprintf(out->reason, sizeof out->reason, "step %zu: provider '%s' does not allow ADMIN "
             "steps (its option admin is not true)", i + 1, re->name);
  else
    out->state = JOB_SUCCEEDED;
  if (out->state == JOB_SUCCEEDED)
    return re;
  logstore_event(c->log, LOGL_ERROR, (int)i + 1, "%s", out->reason);
  return NULL;
}

/* A sandboxed step may write where its approved command line writes, as
 * the policy engine sees it, and reach the network if it needs to. */
static void sandbox_scope(struct run_ctx *c, const struct plan_step *st, size_t i,
                          struct policy_scope *sc, const char **writable,
                          struct exec_request *req)
{
  struct buf b;
  size_t k;

  policy_write_scope((const char *const *)st->argv, sc);
  /* the files it is to leave behind are written where they are kept from */
  for (k = 0; k < st->n_artifacts && sc->n < (size_t)POLICY_SCOPE_MAX; k++) {
    const char *slash = strrchr(st->artifacts[k], '/');
    size_t len = slash ? (size_t)(slash - st->artifacts[k]) : 0;
    if (len && len < sizeof sc->dirs[0])
      snprintf(sc->dirs[sc->n++], sizeof sc->dirs[0], "%.*s", (int)len, st->artifacts[k]);
  }
  buf_init(&b, 8 * POLICY_SCOPE_PATH);
  for (k = 0; k < sc->n; k++) {
    writable[k] = sc->dirs[k];
    buf_printf(&b, "%s%s", k ? ", " : "", sc->dirs[k]);
  }
  writable[k] = NULL;
  req->writable = writable;
  req->network = sc->network;
  logstore_event(c->log, LOGL_INFO, (int)i + 1, "step %zu is sandboxed; writable besides its "
                 "workspace: %s%s; network: %s", i + 1, sc->n ? b.data : "nothing",
                 sc->overflow ? " (and more, left read-only)" : "",
                 sc->network ? "if the instance allows" : "no");
  buf_release(&b);
}

static void run_step(struct run_ctx *c, size_t i, struct step_outcome *out)
{
  const struct plan_step *st = &c->plan.steps[i];
  const struct registry_entry *re = route_step(c, st, i, out);
  struct exec_request req = {0};
  struct exec_result res = {0};
  int64_t started = ledger_now_ms();
  struct step_limit lim;
  struct policy_scope scope;
  const char *writable[POLICY_SCOPE_MAX + 1];
  enum err e;

  out->step = i;
  if (!re)
    return;
  if (step_start(c, i, started, out))
    return;
  out->step_started = 1;
  c->cur_step = (int)i + 1;
  log_step_start(c, st, re->name);
  req.on_output = on_step_output;
  req.ud = c;
  req.argv = (const char *const *)st->argv;
  req.stdin_data = st->stdin_data;
  req.stdin_len = st->stdin_data ? strlen(st->stdin_data) : 0;
  step_limit(c, st, re, &lim);
  req.timeout_ms = (int)lim.ms;
  req.grace_ms = c->s->o->cfg->kill_grace_ms;
  req.capture_max = c->s->o->cfg->output_max;
  req.cancel = &c->s->cancel;
  if (!strcmp(re->type, "sandbox"))
    sandbox_scope(c, st, i, &scope, writable, &req);
  logstore_flush(c->log);       /* /status shows the step started */
  e = re->inst->backend->run(re->inst, &req, &res);
  judge_step(i, e, &res, &lim, out);
  logstore_flush(c->log);
  if (out->state == JOB_SUCCEEDED && st->n_artifacts)
    keep_artifacts(c, i, re, out);
  if (out->state == JOB_SUCCEEDED)
    logstore_event(c->log, LOGL_INFO, c->cur_step, "step %zu exited with 0 after %ld ms, "
                   "%zu bytes of output", i + 1, res.duration_ms, res.output_total);
  else
    logstore_event(c->log, LOGL_ERROR, c->cur_step, "%s", out->reason);
  record_step(c, i, job_state_name(out->state), &res, started);
  buf_clear(&c->tail);
  buf_appends(&c->tail, tail_of(res.output, c->tail.max));
  exec_result_release(&res);
}

/* A transient failure: retried when that is safe and attempts are left
 * (returns 1), else the reason to fail with says why not (0).  -1: it may
 * be retried but the ledger did not take the requeue (the database is
 * away): the job keeps its lease until the reclaimer takes it back. */
static int retry_transient(struct run_ctx *c, const struct step_outcome *oc,
                           char *reason, size_t n)
{
  const struct cfg *cfg = c->s->o->cfg;
  size_t unsafe = first_unsafe(&c->plan, oc->step + (oc->step_started ? 1 : 0));
  int64_t delay = 0;
  char why[160];

  if (!may_retry(cfg, c->job, unsafe, &delay, why, sizeof why)) {
    snprintf(reason, n, "%s; %s", oc->reason, why);
    return 0;
  }
  char actor[128];

  snprintf(actor, sizeof actor, "worker:%s", c->owner);
  if (requeue(cfg, c->l, c->job, c->owner, actor, oc->reason, delay))
    return -1;
  return 1;
}

/* The job's end: its result, announcement and log (held: the lines kept
 * in memory, which it takes) in the writer's next group commit; or, handed
 * back or to be retried, the log goes to the job's file. */
static void finish(struct run_ctx *c, const struct step_outcome *oc, char *held)
{
  struct slot *s = c->s;
  struct write *w;
  char reason[512];

  /* Hand-back and retry write on this connection: after the queued writes
   * of the job, not before. */
  if (atomic_load(&s->handback) || (oc->state == JOB_FAILED && oc->transient)) {
    keep_in_file(s->o, c->job->id, held);
    held = NULL;
    write_barrier(s->o);
  }
  if (atomic_load(&s->handback)) {
    hand_back(c->l, c->job->id, c->owner, HANDED_BACK);
    return;
  }
  snprintf(reason, sizeof reason, "%s", oc->reason);
  if (oc->state == JOB_FAILED && oc->transient) {
    int r = retry_transient(c, oc, reason, sizeof reason);
    if (r < 0)
      log_warn("orch", "job #%lld: %s; cannot requeue it now, so it is taken back when its "
               "lease runs out", (long long)c->job->id, oc->reason);
    if (r)
      return;
  }
  /* The result and its announcement land together in the writer's next
   * group commit; it keeps trying while the lease can hold. */
  if (!(w = write_new(W_FINISH, c->job, c->owner, s->o->cfg->lease_ms))) {
    log_error("orch", "cannot finish job #%lld: out of memory", (long long)c->job->id);
    keep_in_file(s->o, c->job->id, held);
    return;
  }
  w->log = held;
  w->to = oc->state;
  w->exit_code = oc->exit_code;
  w->ended_at = c->job->updated_at + (mono_ms() - c->started);
  w->tail = strdup(buf_str(&c->tail));
  w->reason = reason[0] ? strdup(reason) : NULL;
  for (size_t i = 0; i < c->plan.n_steps && !w->artifacts; i++)
    w->artifacts = c->plan.steps[i].n_artifacts > 0;
  write_push(s->o, w);
}

static void run_job(struct slot *s, struct ledger *l, struct job *j, const char *owner)
{
  struct run_ctx c = {s, l, j, owner, {0}, 0, BUF_INIT(s->o->cfg->output_max), NULL, 0, 0};
  struct step_outcome oc = {.state = JOB_SUCCEEDED};
  int64_t started = mono_ms();
  char why[256], *held;

  c.started = started;
  c.deadline = started + (int64_t)s->o->cfg->job_timeout_s * 1000;
  /* A first attempt's log is held until the job proves slow or talkative
   * (and usually lands in the ledger with the result); a retry's goes to
   * the file, after whatever the attempts before left there. */
  if (j->attempts <= 1 ? logstore_open_held(s->o->cfg->home, j->id, &c.log)
                       : logstore_open(s->o->cfg->home, j->id, &c.log, why, sizeof why))
    log_warn("orch", "job #%lld runs without its log: %s", (long long)j->id,
             j->attempts <= 1 ? "out of memory" : why);
  pthread_mutex_lock(&s->o->mu);
  s->log = c.log;
  pthread_mutex_unlock(&s->o->mu);
  if (!j->plan_json || plan_parse(j->plan_json, strlen(j->plan_json), &c.plan, why, sizeof why)) {
    oc.state = JOB_FAILED;
    snprintf(oc.reason, sizeof oc.reason, "the stored plan is unusable");
  } else {
    plan_assess(&c.plan);       /* each step's risk, for routing */
  }
  for (size_t i = 0; oc.state == JOB_SUCCEEDED && i < c.plan.n_steps; i++) {
    if (atomic_load(&s->cancel)) {
      oc.state = JOB_CANCELLED;
      snprintf(oc.reason, sizeof oc.reason, "cancelled before step %zu", i + 1);
      break;
    }
    if (mono_ms() >= c.deadline) {
      oc.state = JOB_TIMED_OUT;
      snprintf(oc.reason, sizeof oc.reason, "job timeout of %d s fired before step %zu",
               s->o->cfg->job_timeout_s, i + 1);
      break;
    }
    run_step(&c, i, &oc);
  }
  log_info("orch", "job #%lld %s", (long long)j->id, job_state_name(oc.state));
  logstore_event(c.log, oc.state == JOB_SUCCEEDED ? LOGL_INFO : LOGL_ERROR, 0, "job %s%s%s",
                 job_state_name(oc.state), oc.reason[0] ? ": " : "", oc.reason);
  pthread_mutex_lock(&s->o->mu);
  s->log = NULL;
  pthread_mutex_unlock(&s->o->mu);
  held = logstore_close_held(c.log);
  c.log = NULL;
  finish(&c, &oc, held);
  plan_release(&c.plan);
  buf_release(&c.tail);
}

/* ---- claiming ------------------------------------------------------------
 * A slot takes a prefetched job first, else claims from the ledger: one job,
 * or, while jobs are quick (QUICK_STREAK in a row under QUICK_MS), up to
 * PREFETCH_MAX in one transaction, the rest kept on the process's ready
 * list for whichever slot is free first.  Prefetched jobs are RUNNING under
 * the claiming slot's lease: the supervisor renews it and passes cancel
 * requests on; a crash leaves them to be taken back like any running job
 * (their steps have no record, so they run again).  A slow job ends
 * prefetching at once, so that long jobs are not queued behind one another
 * in one process while other workers wait. */

/* With o->mu held. */
static void ready_append(struct orch *o, struct ready *r)
{
  if (o->ready_tail)
    o->ready_tail->next = r;
  else
    o->ready = r;
  o->ready_tail = r;
  o->n_ready++;
}

static void ready_push(struct orch *o, struct ready *r)
{
  pthread_mutex_lock(&o->mu);
  ready_append(o, r);
  o->wake_seq++;
  pthread_cond_signal(&o->scv);
  pthread_mutex_unlock(&o->mu);
}

static struct ready *ready_take(struct orch *o)
{
  struct ready *r;

  pthread_mutex_lock(&o->mu);
  if ((r = o->ready) && !(o->ready = r->next))
    o->ready_tail = NULL;
  o->n_ready -= r != NULL;
  pthread_mutex_unlock(&o->mu);
  return r;
}

static void ready_free(struct ready *r)
{
  if (r)
    job_release(&r->job);
  free(r);
}

/* Claims up to k jobs in one step (one statement on PostgreSQL); the first
 * is returned, the rest go to the ready list.  NULL when none (or on an
 * error: *e).  The claim does not wait for the disk (lazy_commits): nobody
 * is told of it, a crash that loses it leaves the job queued, which only
 * idempotent work can notice, and a step that must not run twice first
 * makes its start durable (step_start), which flushes the claim with it.
 * Results always wait. */
static struct ready *claim(struct slot *s, struct ledger *l, int k, enum err *e, int *claimed)
{
  struct job jobs[PREFETCH_MAX];
  struct ready *got[PREFETCH_MAX];
  int lazy = l->ops->lazy_commits && l->ops->lazy_commits(l, 1) == ERR_OK;
  int n = 0, kept = 0;

  *e = ledger_claim_some(l, s->owner, s->o->cfg->lease_ms, k, jobs, &n);
  *claimed = n;
  if (lazy)
    l->ops->lazy_commits(l, 0);
  if (*e == ERR_NOTFOUND)
    *e = ERR_OK;
  for (int i = 0; i < n; i++) {
    if (!(got[kept] = calloc(1, sizeof *got[kept]))) {
      /* Claimed but not runnable here: back to the queue now rather than
       * after its lease. */
      if (l->ops->job_transition(l, jobs[i].id, JOB_RUNNING, JOB_QUEUED, s->owner,
                                 "out of memory"))
        log_error("orch", "cannot hand back job #%lld", (long long)jobs[i].id);
      job_release(&jobs[i]);
      continue;
    }
    snprintf(got[kept]->owner, sizeof got[kept]->owner, "%s", s->owner);
    got[kept++]->job = jobs[i];
  }
  for (int i = 1; i < kept; i++)
    ready_push(s->o, got[i]);
  return kept ? got[0] : NULL;
}

/* Runs a claimed job in slot s unless it was cancelled or lost meanwhile. */
static void run_ready(struct slot *s, struct ledger *l, struct ready *r)
{
  struct orch *o = s->o;
  int64_t t0 = mono_ms();
  int lost, cancel;

  pthread_mutex_lock(&o->mu);
  lost = r->lost;
  cancel = r->cancel;
  snprintf(s->run_owner, sizeof s->run_owner, "%s", r->owner);
  atomic_fetch_add(&s->run_seq, 1);
  atomic_store(&s->cancel, cancel);
  atomic_store(&s->job_id, lost ? 0 : r->job.id);
  pthread_mutex_unlock(&o->mu);
  if (lost) {
    log_warn("orch", "lost the lease of job #%lld before it started", (long long)r->job.id);
    return;
  }
  /* Taken just as the process stops: orch_stop marks only the slots it saw
   * busy, so a job that a slot takes after that look is handed back here
   * (the store of job_id above and the load here pair with orch_stop's
   * store of stopping and its look: one of the two sees the other). */
  if (atomic_load(&o->stopping)) {
    atomic_store(&s->job_id, 0);
    hand_back(l, r->job.id, r->owner, HANDED_BACK);
    return;
  }
  run_job(s, l, &r->job, r->owner);
  atomic_store(&s->job_id, 0);
  if (mono_ms() - t0 < QUICK_MS)
    atomic_fetch_add(&o->quick, atomic_load(&o->quick) < 1000);
  else
    atomic_store(&o->quick, 0);
}

/* On stop: prefetched jobs that never started go back to the queue. */
static void hand_back_ready(struct orch *o, struct ledger *l)
{
  struct ready *r;

  while ((r = ready_take(o))) {
    if (!r->lost)
      hand_back(l, r->job.id, r->owner, HANDED_BACK);
    ready_free(r);
  }
}

/* Idle slots and a shared ledger's notifications (PostgreSQL NOTIFY, one
 * per job queued).  One thread of the process, the bell, listens on a
 * connection of its own; each notification it hears is a ticket.  An
 * idle slot wakes, takes one and claims (up to 8 jobs while they are
 * quick, each spending a ticket), then wakes the next while tickets
 * remain; a slot back from a job claims again only for a ticket.  So a
 * queued job costs the process one claim at most, whatever its number of
 * slots, and no slot's connection listens.
 * (When a slot listened itself and handed the role on, a job cost 2.7
 * claims with 2 slots and 4.5 with 4, and a LISTEN and an UNLISTEN every
 * few jobs: 1.9-2.6 ms of machine CPU per job against 1.3 with one slot.)
 * A claim that finds nothing voids the tickets granted before it began:
 * the queue was empty, and whatever is queued next sends its own.  (A job
 * this process queued could be claimed ~0.25 ms sooner on an orch_wake
 * right after the commit; but its notification, coming back through the
 * server, often arrives first, and the pair cost two claims.)  Jobs queued
 * without a notification (retries that came due) and those whose
 * notification was missed (the bell reconnecting) are found by sweeps:
 * every DUE_POLL_MS without a notification the bell wakes one slot to
 * claim, and a sweep that claims all it asked for goes on with another.
 * Ledgers without notifications (SQLite: one process, whose submitters
 * orch_wake) have no bell: idle slots claim when woken and every 500 ms. */

enum { T_NONE, T_TICKET, T_SWEEP };

/* n tickets (or one sweep); one idle slot wakes to claim.  Claims go one
 * after another: the claimer wakes the next while tickets remain
 * (spend_tickets), so that one claim can take several jobs (prefetching)
 * rather than two slots splitting them at the same moment. */
static void grant(struct orch *o, int n, int sweep)
{
  pthread_mutex_lock(&o->mu);
  if (sweep) {
    o->sweeps = 1;
  } else {
    o->tickets += n;
    o->granted += (uint64_t)n;
  }
  if (sweep || n > 0) {
    o->wake_seq++;
    pthread_cond_signal(&o->scv);
  }
  pthread_mutex_unlock(&o->mu);
}

/* A ticket, else a sweep, else T_NONE; *granted: tickets granted so far. */
static int take_ticket(struct orch *o, uint64_t *granted)
{
  int got = T_NONE;

  pthread_mutex_lock(&o->mu);
  *granted = o->granted;
  if (o->tickets > 0) {
    o->tickets--;
    got = T_TICKET;
  } else if (o->sweeps) {
    o->sweeps = 0;
    got = T_SWEEP;
  }
  pthread_mutex_unlock(&o->mu);
  return got;
}

/* A claim took n jobs for one ticket: n - 1 more are spent, and while
 * some remain the next idle slot wakes to claim.  One that found none
 * voids the tickets granted before it began (`before`): those granted
 * since may be for jobs it could not see. */
static void spend_tickets(struct orch *o, int n, uint64_t before)
{
  pthread_mutex_lock(&o->mu);
  if (n)
    o->tickets = o->tickets > n - 1 ? o->tickets - (n - 1) : 0;
  else if ((uint64_t)o->tickets > o->granted - before)
    o->tickets = (int)(o->granted - before);
  if (o->tickets > 0) {
    o->wake_seq++;
    pthread_cond_signal(&o->scv);
  }
  pthread_mutex_unlock(&o->mu);
}

static void *bell_main(void *arg)
{
  struct orch *o = arg;
  struct ledger *l = NULL;
  int64_t last = mono_ms();
  int retry = 200;              /* ms before listening again after a failure */
  char err[256];

  while (!atomic_load(&o->stopping) &&
         ledger_open(o->cfg->database_url, &l, err, sizeof err) != ERR_OK) {
    log_warn("orch", "the bell cannot open the ledger (slots poll meanwhile): %s", err);
    wait_for_work(o, &o->cv, wake_seq(o), 1000);
  }
  if (!l || !l->ops->wait_for_work) {
    ledger_close(l);
    return NULL;
  }
  while (!atomic_load(&o->stopping)) {
    int heard = 0;
    enum err e = l->ops->wait_for_work(l, BELL_POLL_MS, &heard);
    if (e != ERR_OK && e != ERR_TIMEOUT) {
      /* Reconnecting: the slots poll meanwhile; then a sweep.  A database
       * that stays away is tried less and less often (and logged so). */
      atomic_store(&o->bell_on, 0);
      wait_for_work(o, &o->cv, wake_seq(o), retry);
      retry = retry < 3200 ? retry * 2 : 3200;
      grant(o, 0, 1);
      last = mono_ms();
      continue;
    }
    retry = 200;
    if (e == ERR_OK) {
      atomic_store(&o->bell_on, 1);
      grant(o, heard, 0);
    } else if (mono_ms() - last >= DUE_POLL_MS) {
      atomic_store(&o->bell_on, 1);
      grant(o, 0, 1);
    } else {
      continue;
    }
    last = mono_ms();
  }
  atomic_store(&o->bell_on, 0);
  ledger_close(l);
  return NULL;
}

static void *worker_main(void *arg)
{
  struct slot *s = arg;
  struct orch *o = s->o;
  struct ledger *l = NULL;
  char err[256];
  int idle = 0;                 /* the last look found no work */

  if (ledger_open(o->cfg->database_url, &l, err, sizeof err)) {
    log_error("orch", "worker %d cannot open the ledger: %s", s->index, err);
    return NULL;
  }
  pthread_mutex_lock(&o->mu);
  while (!o->registered && !atomic_load(&o->stopping))
    pthread_cond_wait(&o->scv, &o->mu);
  pthread_mutex_unlock(&o->mu);
  while (!atomic_load(&o->stopping)) {
    int seq = wake_seq(o);
    int k = atomic_load(&o->quick) >= QUICK_STREAK ? PREFETCH_MAX : 1, n = 0;
    int bell = atomic_load(&o->bell_on), why = T_NONE;
    uint64_t granted = 0;
    enum err e = ERR_OK;
    struct ready *r = ready_take(o);

    if (!r && spoken_for(o)) {
      wait_for_work(o, &o->scv, seq, BELL_IDLE_MS);
      continue;
    }
    if (!r && bell && (why = take_ticket(o, &granted)) == T_NONE) {
      if (!idle)
        ledger_release_memory(l);
      idle = 1;
      wait_for_work(o, &o->scv, seq, BELL_IDLE_MS);
      continue;
    }
    if (!r && !(r = claim(s, l, k, &e, &n))) {
      if (e)
        sleep_ms(200);
      else if (bell)
        spend_tickets(o, 0, granted);
      if (!idle)
        ledger_release_memory(l);
      idle = 1;
      if (!bell)
        wait_for_work(o, &o->scv, seq, 500);
      continue;
    }
    idle = 0;
    if (why == T_TICKET)
      spend_tickets(o, n, granted);
    else if (why == T_SWEEP && n == k)
      grant(o, 0, 1);           /* a full sweep: there may be more */
    else if (!bell && n && o->n_workers > 1)
      orch_wake(o);             /* where there was one job there may be
                                 * more: the next idle slot looks too */
    run_ready(s, l, r);
    ready_free(r);
  }
  hand_back_ready(o, l);
  ledger_close(l);
  return NULL;
}

/* ---- supervision -------------------------------------------------------- */

static int busy_slots(struct orch *o)
{
  int busy = 0;

  for (int i = 0; i < o->n_slots; i++)
    busy += atomic_load(&o->slots[i].job_id) != 0;
  return busy;
}

static void heartbeat_slots(struct orch *o, struct ledger *l)
{
  for (int i = 0; i < o->n_slots; i++) {
    struct slot *s = &o->slots[i];
    char owner[96];
    unsigned seq;
    int64_t id;
    int cancel = 0;
    enum err e;

    pthread_mutex_lock(&o->mu);
    seq = atomic_load(&s->run_seq);
    id = atomic_load(&s->job_id);
    snprintf(owner, sizeof owner, "%s", s->run_owner);
    pthread_mutex_unlock(&o->mu);
    if (!id)
      continue;
    e = l->ops->job_heartbeat(l, id, owner, o->cfg->lease_ms, &cancel);
    /* The slot may have moved on (even to a new run of the same job, taken
     * back while the ledger was away) during the call: stop only the run
     * that was asked about. */
    if (atomic_load(&s->run_seq) != seq)
      continue;
    if (e == ERR_STATE) {
      log_warn("orch", "lost the lease of job #%lld; stopping it", (long long)id);
      atomic_store(&s->cancel, 1);
    } else if (!e && cancel) {
      atomic_store(&s->cancel, 1);
    }
  }
}

/* Renews the leases of prefetched jobs and notes cancel requests and lost
 * leases, for the slot that takes them. */
static void heartbeat_ready(struct orch *o, struct ledger *l)
{
  int64_t ids[64];
  char owners[64][96];
  int n = 0;

  pthread_mutex_lock(&o->mu);
  for (struct ready *r = o->ready; r && n < 64; r = r->next, n++) {
    ids[n] = r->job.id;
    snprintf(owners[n], sizeof owners[n], "%s", r->owner);
  }
  pthread_mutex_unlock(&o->mu);
  for (int i = 0; i < n; i++) {
    int cancel = 0;
    enum err e = l->ops->job_heartbeat(l, ids[i], owners[i], o->cfg->lease_ms, &cancel);
    if (e != ERR_STATE && !(e == ERR_OK && cancel))
      continue;
    pthread_mutex_lock(&o->mu);
    for (struct ready *r = o->ready; r; r = r->next)
      if (r->job.id == ids[i]) {
        r->lost |= e == ERR_STATE;
        r->cancel |= cancel;
      }
    pthread_mutex_unlock(&o->mu);
  }
}

/* Every lease this process holds, renewed in one transaction. */
static void heartbeat_all(struct orch *o, struct ledger *l)
{
  int own, ready;

  /* A held log whose job has become slow gets its file (a step that
   * prints nothing does not get there itself), so /status shows it. */
  pthread_mutex_lock(&o->mu);
  ready = o->ready != NULL;
  for (int i = 0; i < o->n_slots; i++)
    logstore_settle(o->slots[i].log);
  pthread_mutex_unlock(&o->mu);
  if (!busy_slots(o) && !ready)
    return;
  own = l->ops->begin(l) == ERR_OK;
  heartbeat_slots(o, l);
  heartbeat_ready(o, l);
  if (own && l->ops->commit(l))
    l->ops->rollback(l);
}

/* Whether the owner "host:pid:wN" is a dead process on this host. */
static int owner_is_dead_here(const char *owner)
{
  char host[256];
  size_t hn;
  long pid;
  char *end;

  if (!owner || gethostname(host, sizeof host) != 0)
    return 0;
  host[sizeof host - 1] = '\0';
  hn = strlen(host);
  if (strncmp(owner, host, hn) != 0 || owner[hn] != ':')
    return 0;
  pid = strtol(owner + hn + 1, &end, 10);
  if (*end != ':' || pid <= 0 || pid == (long)getpid())
    return 0;
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* The first step of j that is not idempotent and has started (it has a
 * record), 1-based; 0 if none.  An unreadable plan counts as unsafe unless
 * the job only reads. */
static size_t started_unsafe(struct ledger *l, const struct job *j)
{
  struct job_step_rec *v = NULL;
  struct plan p;
  size_t n = 0, unsafe = 0;
  char why[128];

  if (!j->plan_json ||
      plan_parse(j->plan_json, strlen(j->plan_json), &p, why, sizeof why))
    return j->risk == RISK_READ_ONLY ? 0 : 1;
  if (l->ops->step_list(l, j->id, &v, &n)) {
    unsafe = first_unsafe(&p, p.n_steps);     /* cannot tell: assume the worst */
  } else {
    for (size_t i = 0; i < n && !unsafe; i++)
      if (v[i].idx >= 0 && (size_t)v[i].idx < p.n_steps &&
          !plan_step_idempotent(&p.steps[v[i].idx]))
        unsafe = (size_t)v[i].idx + 1;
  }
  job_step_list_free(v, n);
  plan_release(&p);
  return unsafe;
}

/* A job whose runner died or lost its lease: idempotent work runs again
 * after a backoff while attempts are left; anything else ends FAILED with
 * the reason rather than run twice behind the user's back. */
static void take_back(struct orch *o, struct ledger *l, const struct job *j)
{
  const char *cause = "interrupted: its runner stopped";
  int64_t delay = 0;
  char why[160], reason[400];
  enum err e;

  if (may_retry(o->cfg, j, started_unsafe(l, j), &delay, why, sizeof why)) {
    e = requeue(o->cfg, l, j, j->lease_owner, "supervisor", cause, delay);
  } else {
    snprintf(reason, sizeof reason, "%s; %s", cause, why);
    e = l->ops->job_transition(l, j->id, JOB_RUNNING, JOB_FAILED, "supervisor",
                               reason);
    struct job now;
    if (!e && l->ops->job_get(l, j->id, &now) == ERR_OK) {
      notify_result(l, &now, 1);
      job_release(&now);
    }
  }
  if (!e)
    log_warn("orch", "took back job #%lld from %s", (long long)j->id,
             j->lease_owner ? j->lease_owner : "?");
}

/* ---- worker registry ------------------------------------------------------ */

/* Tells the admins (or the console when there is no Telegram) once per
 * incident; the channel drains the outbox. */
static enum err alert_admins(const struct cfg *c, struct ledger *l, const char *text)
{
  struct outbox_msg m = {0};
  enum err e = ERR_OK;

  m.text = (char *)text;
  if (!c->telegram_token) {
    m.channel = "console";
    return ledger_outbox_put(l, &m, NULL);
  }
  m.channel = "telegram";
  for (size_t i = 0; !e && i < c->n_admins; i++) {
    m.chat_id = c->admins[i];
    e = ledger_outbox_put(l, &m, NULL);
  }
  return e;
}

static enum err register_self(struct orch *o, struct ledger *l)
{
  struct worker_rec w = {0};
  struct buf prov = BUF_INIT(4096);
  enum err e;

  for (size_t i = 0; i < o->reg->n; i++)
    if (o->reg->v[i].inst)
      buf_printf(&prov, "%s%s", buf_str(&prov)[0] ? "," : "", o->reg->v[i].name);
  w.id = o->id;
  w.host = o->host;
  w.pid = (int64_t)getpid();
  w.providers = (char *)buf_str(&prov);
  w.capacity = o->n_slots;
  e = l->ops->worker_register(l, &w, o->cfg->lease_ms);
  buf_release(&prov);
  if (e)
    log_error("orch", "cannot register worker %s: %s", o->id, err_str(e));
  return e;
}

/* Renews this process's registration with its load; re-registers when the
 * row is gone and says so when it had been given up for offline. */
static void beat_registry(struct orch *o, struct ledger *l)
{
  char text[256];
  int back = 0;
  enum err e;

  if (!o->n_slots || l->ops->begin(l))
    return;
  /* The alert commits with the state change, or neither does: an incident
   * is reported once, and not lost to a connection that drops between. */
  e = l->ops->worker_heartbeat(l, o->id, busy_slots(o), o->cfg->lease_ms, &back);
  if (!e && back) {
    snprintf(text, sizeof text, "ALERT: worker %s is back online (%d slots).",
             o->id, o->n_slots);
    e = alert_admins(o->cfg, l, text);
  }
  if (e) {
    l->ops->rollback(l);
    if (e == ERR_NOTFOUND)
      register_self(o, l);
    return;
  }
  if (l->ops->commit(l) == ERR_OK && back)
    log_warn("orch", "worker %s is back online", o->id);
}

static void expire_workers(struct orch *o, struct ledger *l)
{
  struct worker_rec *v = NULL;
  size_t n = 0;
  char text[512];
  enum err e = ERR_OK;

  if (l->ops->begin(l))
    return;
  /* As in beat_registry: the alerts commit with the change of state. */
  if (l->ops->worker_expire(l, ledger_now_ms(), &v, &n)) {
    l->ops->rollback(l);
    return;
  }
  for (size_t i = 0; !e && i < n; i++) {
    snprintf(text, sizeof text, "ALERT: worker %s is offline: %s. Its running"
             " jobs are taken back when their leases end.", v[i].id, v[i].reason);
    e = alert_admins(o->cfg, l, text);
  }
  if (e)
    l->ops->rollback(l);
  else if (l->ops->commit(l) == ERR_OK)
    for (size_t i = 0; i < n; i++)
      log_warn("orch", "worker %s is offline: %s", v[i].id, v[i].reason);
  worker_list_free(v, n);
}

/* A clean stop: offline now, not when the registration would expire; an
 * event, but no alert, since someone stopped it on purpose (and an alert
 * would greet the admins at every restart). */
static void unregister_self(struct orch *o, struct ledger *l)
{
  l->ops->lock_release(l, RECLAIM_LOCK, o->id);
  if (o->n_slots && l->ops->worker_stop(l, o->id, "stopped") == ERR_OK)
    log_info("orch", "worker %s stopped", o->id);
}

/* ---- sweeps ------------------------------------------------------------- */

/* Often enough that an expired lease is found within half a lease. */
static int sweep_every_ms(const struct orch *o)
{
  int half = o->cfg->lease_ms / 2;

  return half < RECLAIM_EVERY_MS ? half : RECLAIM_EVERY_MS;
}

/* One process at a time (the holder of the reclaim lock) sweeps expired
 * leases and registrations, so that every incident is handled and reported
 * once; every process sweeps its own host for runners that died. */
static void reclaim(struct orch *o, struct ledger *l)
{
  struct job *v = NULL, *all = NULL;
  size_t n = 0, na = 0;
  struct job_filter f = {NULL, 0, 0, JOB_RUNNING, 1000};

  if (l->ops->lock_acquire(l, RECLAIM_LOCK, o->id, sweep_every_ms(o) * 3) == ERR_OK) {
    if (l->ops->job_expired(l, ledger_now_ms(), &v, &n) == ERR_OK)
      for (size_t i = 0; i < n; i++)
        take_back(o, l, &v[i]);
    job_list_free(v, n);
    expire_workers(o, l);
  }
  /* Runners of this host that died need not wait for their lease. */
  if (l->ops->job_list(l, &f, &all, &na) == ERR_OK)
    for (size_t i = 0; i < na; i++)
      if (owner_is_dead_here(all[i].lease_owner))
        take_back(o, l, &all[i]);
  job_list_free(all, na);
  wake_all(o);
}

static void *supervisor_main(void *arg)
{
  struct orch *o = arg;
  struct ledger *l = NULL;
  char err[256];
  int64_t last_reclaim = 0;

  if (ledger_open(o->cfg->database_url, &l, err, sizeof err)) {
    log_error("orch", "supervisor cannot open the ledger: %s", err);
    claims_open(o);
    return NULL;
  }
  if (o->n_slots)
    register_self(o, l);
  claims_open(o);
  /* On stop, leases are renewed for as long as jobs run (the grace period):
   * a short lease must not hand a job that is still running to another
   * worker. */
  while (!atomic_load(&o->stopping) || busy_slots(o)) {
    heartbeat_all(o, l);
    beat_registry(o, l);
    if (!atomic_load(&o->stopping) && mono_ms() - last_reclaim >= sweep_every_ms(o)) {
      reclaim(o, l);
      last_reclaim = mono_ms();
    }
    ledger_release_memory(l);
    /* Not woken by queued work (that is the workers' business, and a
     * registry beat per submitted job would cost a commit each): only by
     * time or stop. */
    for (int64_t until = mono_ms() + HEARTBEAT_MS;
         !atomic_load(&o->stopping) && mono_ms() < until;)
      wait_for_work(o, &o->cv, wake_seq(o), (int)(until - mono_ms()));
    if (atomic_load(&o->stopping))
      sleep_ms(HEARTBEAT_MS / 4);
  }
  unregister_self(o, l);
  ledger_close(l);
  return NULL;
}

enum err orch_start(const struct cfg *cfg, const struct registry *reg,
                    int workers, struct orch **out, char *errbuf, size_t errlen)
{
  struct orch *o = calloc(1, sizeof *o);
  char *host;

  *out = NULL;
  if (!o)
    return ERR_NOMEM;
  host = o->host;
  o->cfg = cfg;
  o->reg = reg;
  pthread_mutex_init(&o->mu, NULL);
  pthread_cond_init(&o->cv, NULL);
  pthread_cond_init(&o->scv, NULL);
  pthread_cond_init(&o->hcv, NULL);
  pthread_mutex_init(&o->wmu, NULL);
  pthread_cond_init(&o->wcv, NULL);
  pthread_cond_init(&o->wdone, NULL);
  if (gethostname(host, sizeof o->host) != 0)
    snprintf(host, sizeof o->host, "host");
  host[sizeof o->host - 1] = '\0';
  snprintf(o->id, sizeof o->id, "%.60s:%ld", host, (long)getpid());
  o->n_workers = workers;
  o->slots = calloc(workers > 0 ? (size_t)workers : 1, sizeof *o->slots);
  if (!o->slots) {
    free(o);
    return ERR_NOMEM;
  }
  if (pthread_create(&o->writer, NULL, writer_main, o) != 0) {
    snprintf(errbuf, errlen, "cannot start the writer thread");
    orch_stop(o, 0);
    return ERR_NOMEM;
  }
  o->has_writer = 1;
  for (int i = 0; i < workers; i++) {
    struct slot *s = &o->slots[i];
    s->o = o;
    s->index = i;
    snprintf(s->owner, sizeof s->owner, "%.60s:%ld:w%d", host, (long)getpid(), i);
    if (pthread_create(&s->thread, NULL, worker_main, s) != 0) {
      snprintf(errbuf, errlen, "cannot start worker thread %d", i);
      orch_stop(o, 0);
      return ERR_NOMEM;
    }
    o->n_slots++;
  }
  if (workers > 0 && pthread_create(&o->bell, NULL, bell_main, o) == 0)
    o->has_bell = 1;
  if (pthread_create(&o->supervisor, NULL, supervisor_main, o) == 0)
    o->has_supervisor = 1;
  else
    claims_open(o);
  *out = o;
  return ERR_OK;
}

void orch_stop(struct orch *o, int grace_ms)
{
  int64_t until = mono_ms() + grace_ms;
  int busy;

  if (!o)
    return;
  atomic_store(&o->stopping, 1);
  wake_all(o);
  do {
    busy = 0;
    for (int i = 0; i < o->n_slots; i++)
      busy |= atomic_load(&o->slots[i].job_id) != 0;
    if (busy)
      sleep_ms(20);
  } while (busy && mono_ms() < until);
  for (int i = 0; i < o->n_slots; i++) {
    if (atomic_load(&o->slots[i].job_id)) {
      atomic_store(&o->slots[i].handback, 1);
      atomic_store(&o->slots[i].cancel, 1);
    }
  }
  for (int i = 0; i < o->n_slots; i++)
    pthread_join(o->slots[i].thread, NULL);
  if (o->has_bell)
    pthread_join(o->bell, NULL);
  if (o->has_writer) {
    pthread_mutex_lock(&o->wmu);
    o->w_stop = 1;
    pthread_cond_signal(&o->wcv);
    pthread_mutex_unlock(&o->wmu);
    pthread_join(o->writer, NULL);
  }
  if (o->has_supervisor)
    pthread_join(o->supervisor, NULL);
  /* A hand-off's transaction still open refers to o: wait for its end,
   * and rather leak o than free it under a caller that never ends it. */
  pthread_mutex_lock(&o->mu);
  for (int64_t left; o->handoffs && (left = until + 5000 - mono_ms()) > 0;) {
    struct timespec ts;
    deadline_in(&ts, left);
    pthread_cond_timedwait(&o->hcv, &o->mu, &ts);
  }
  int pending = o->handoffs;
  pthread_mutex_unlock(&o->mu);
  if (pending) {
    log_error("orch", "%d submitting transaction%s did not end: the orchestrator is not freed",
              pending, pending == 1 ? "" : "s");
    return;
  }
  pthread_cond_destroy(&o->hcv);
  pthread_cond_destroy(&o->cv);
  pthread_cond_destroy(&o->scv);
  pthread_mutex_destroy(&o->mu);
  pthread_cond_destroy(&o->wcv);
  pthread_cond_destroy(&o->wdone);
  pthread_mutex_destroy(&o->wmu);
  free(o->slots);
  free(o);
}
