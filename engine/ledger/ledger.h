/* engine/ledger/ledger.h — the ledger: every durable fact of SKYNET.
 *
 * One interface (struct ledger_ops), one file per backend: sqlite.c (the
 * embedded default) and pg.c (shared by many processes).  Jobs, their steps
 * and state transitions, conversation messages, the outbox of notifications
 * and a small key/value store (update offsets) all live here.
 *
 * Thread contract: a struct ledger is one database connection and belongs to
 * one thread.  Every thread that needs the ledger opens its own with
 * ledger_open().  Backends serialise writers themselves (SQLite busy timeout,
 * PostgreSQL row locks), so several connections, threads and processes may
 * work on one database at once.
 *
 * Ownership: every struct the ledger fills holds malloc'd strings; release it
 * with the matching *_release() (NULL-safe), arrays with *_list_free(). */
#ifndef SKYNET_LEDGER_H
#define SKYNET_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "../err.h"
#include "../job.h"

struct job {
  int64_t id;
  char *channel;            /* "console", "telegram", "http" */
  int64_t chat_id;
  int64_t user_id;
  char *text;               /* what was asked */
  enum job_state state;
  enum risk risk;
  char *plan_json;          /* NULL before planning */
  char *summary;
  char *reason;             /* last transition's reason */
  int has_exit_code;
  int exit_code;
  char *output_tail;
  int cancel_requested;
  int attempts;
  char *lease_owner;
  int64_t lease_expires;
  int64_t created_at;       /* unix ms */
  int64_t updated_at;
  int64_t not_before;       /* a retried job is not claimed before this */
};

struct job_step_rec {
  int idx;
  char *state;              /* "RUNNING", "SUCCEEDED", "FAILED", ... */
  int has_exit_code;
  int exit_code;
  char *output_tail;
  int64_t started_at;
  int64_t finished_at;
};

struct transition {
  int64_t job_id;
  int has_from;
  enum job_state from;
  enum job_state to;
  char *actor;              /* "user:42", "policy", "worker:host:1" */
  char *reason;
  int64_t at;
};

struct chat_msg {
  char *role;               /* "user", "assistant" */
  char *text;
  int64_t at;
};

struct outbox_msg {
  int64_t id;
  char *channel;
  int64_t chat_id;
  int64_t job_id;           /* 0 if none */
  char *text;
  char *buttons_json;       /* NULL or [[{"text":..,"data":..}]] */
  char *edit_key;           /* NULL, or a key: messages with one key edit one message */
  int attempts;
  int64_t not_before;
};

/* A worker process in the registry. */
struct worker_rec {
  char *id;                 /* "host:pid" */
  char *host;
  int64_t pid;
  char *providers;          /* comma-separated provider names */
  int capacity;             /* step-running threads */
  int load;                 /* of them busy at the last heartbeat */
  char *state;              /* "online", "offline" */
  char *reason;             /* why offline */
  int64_t started_at;
  int64_t heartbeat_at;
  int64_t expires_at;
};

struct worker_event {
  int64_t id;
  char *worker_id;
  char *kind;               /* "online", "offline", "back" */
  char *detail;
  int64_t at;
};

/* A file a step produced, kept in the artifact store (engine/archive.h). */
struct artifact {
  int64_t id;
  int64_t job_id;
  int step;                 /* 1-based */
  char *name;               /* the path the step named */
  int64_t size;             /* bytes */
  char sha256[65];          /* lowercase hex */
  int64_t created_at;       /* unix ms */
};

/* A free-text message waiting for the model's answer. */
struct chat_turn {
  int64_t id;
  char *channel;
  int64_t chat_id;
  int64_t user_id;
  char *text;
  int64_t at;
};

/* Tokens one model request used. */
struct llm_usage {
  const char *channel;      /* NULL when no chat */
  int64_t chat_id;
  int64_t job_id;           /* 0 when no job */
  const char *model;
  int64_t prompt_tokens;
  int64_t completion_tokens;
};

/* What to add up: usage since since_ms, of one chat (channel set) and/or
 * one job (job_id > 0). */
struct usage_filter {
  int64_t since_ms;
  const char *channel;
  int64_t chat_id;
  int64_t job_id;
};

struct job_filter {
  const char *channel;      /* NULL → any */
  int64_t chat_id;          /* with channel */
  int any_state;            /* 1 → ignore state */
  enum job_state state;
  size_t limit;             /* 0 → 20 */
};

struct ledger;

struct ledger_ops {
  const char *name;
  void (*close)(struct ledger *l);
  /* Applies pending migrations; *applied counts them. */
  enum err (*migrate)(struct ledger *l, int *applied);
  /* Schema version, 0 for an empty database. */
  enum err (*schema_version)(struct ledger *l, int *version);
  /* Transactions for several calls that must land together. Not nested. */
  enum err (*begin)(struct ledger *l);
  enum err (*commit)(struct ledger *l);
  enum err (*rollback)(struct ledger *l);

  /* Creates a job in CREATED (with its first transition); sets j->id. */
  enum err (*job_create)(struct ledger *l, struct job *j, const char *actor);
  /* A planned job, routed at once: creates the job of j (channel, chat_id,
   * user_id, text, plan_json, summary, risk) in state `to` (DENIED,
   * AWAITING_APPROVAL or QUEUED) with its three transitions, CREATED (by
   * actor), PLANNED (by "planner") and `to` (by to_actor, with reason), and
   * the wake-up when queued: what job_create, job_set_plan and two
   * job_transition calls do, with one round trip.  Sets j->id, and
   * j->created_at when the backend read it back (else 0).
   * With claim_owner (to must be QUEUED), the job is also claimed at once
   * under claim_owner's lease of lease_ms, as job_claim(claim_owner, id)
   * would (RUNNING, attempts 1, a fourth transition QUEUED -> RUNNING by
   * "worker:<claim_owner>"), and no wake-up is sent: for a worker of the
   * submitting process that is idle (the orchestrator's hand-off). */
  enum err (*job_create_routed)(struct ledger *l, struct job *j, const char *actor,
                                enum job_state to, const char *to_actor,
                                const char *reason, const char *claim_owner, int lease_ms);
  enum err (*job_get)(struct ledger *l, int64_t id, struct job *out);
  /* Newest first. */
  enum err (*job_list)(struct ledger *l, const struct job_filter *f,
                       struct job **out, size_t *n);
  enum err (*job_set_plan)(struct ledger *l, int64_t id, const char *plan_json,
                           const char *summary, enum risk risk);
  /* Compare-and-set: moves the job from → to and records the transition in
   * one transaction.  ERR_STATE if the job is not in `from` or the edge is
   * illegal; ERR_NOTFOUND if there is no such job. */
  enum err (*job_transition)(struct ledger *l, int64_t id, enum job_state from,
                             enum job_state to, const char *actor,
                             const char *reason);
  /* Takes the oldest QUEUED job (optionally only id `only`, 0 = any): moves it
   * to RUNNING with a lease for `owner` of lease_ms.  ERR_NOTFOUND if none. */
  enum err (*job_claim)(struct ledger *l, const char *owner, int lease_ms,
                        int64_t only, struct job *out);
  /* Optional (NULL: ledger_claim_some claims one at a time in a
   * transaction, ledger_claim_each): takes up to max of the oldest due
   * QUEUED jobs, as job_claim does one, atomically, into out[0..*n) in id
   * order.
   * ERR_NOTFOUND (and *n = 0) if none. */
  enum err (*job_claim_some)(struct ledger *l, const char *owner, int lease_ms, int max,
                             struct job *out, int *n);
  /* Extends the lease; reports a cancel request.  ERR_STATE if the lease is
   * no longer ours (taken back, job ended). */
  enum err (*job_heartbeat)(struct ledger *l, int64_t id, const char *owner,
                            int lease_ms, int *cancel_requested);
  /* Ends a RUNNING job that `owner` holds: state, result and transition.
   * out, when not NULL, gets the job as it now is (release it with
   * job_release) on ERR_OK; PostgreSQL returns it from the same statement. */
  enum err (*job_finish)(struct ledger *l, int64_t id, const char *owner,
                         enum job_state to, int exit_code,
                         const char *output_tail, const char *reason,
                         struct job *out);
  /* Optional (NULL: job_finish, then the notice through ledger_outbox_put).
   * Ends a RUNNING job that `owner` holds, as job_finish does, and puts
   * `notice` (its job_id this job's) in the outbox only if it ended it: one
   * statement, from which nothing comes back, not even whether the lease
   * still held (then nothing changes; the reclaimer reports lost leases).
   * So inside a transaction on PostgreSQL it waits in the pipeline for the
   * next round trip, the commit.  notice->text is stored as given: callers
   * use ledger_finish_notice, which redacts it. */
  enum err (*job_finish_notice)(struct ledger *l, int64_t id, const char *owner,
                                enum job_state to, int exit_code, const char *output_tail,
                                const char *reason, const struct outbox_msg *notice);
  /* Appends JSON lines to the log kept in the ledger for job id (a quick
   * job's whole log; see logstore_close_held).  Returns nothing, so inside a
   * transaction on PostgreSQL it goes with the next round trip. */
  enum err (*job_log_put)(struct ledger *l, int64_t id, const char *lines);
  /* The lines job_log_put kept for job id (malloc'd); ERR_NOTFOUND if none. */
  enum err (*job_log_get)(struct ledger *l, int64_t id, char **lines);
  enum err (*job_request_cancel)(struct ledger *l, int64_t id);
  /* RUNNING jobs whose lease ended before now_ms (or held by owner_prefix
   * when given, for a process that restarts under the same name).
   * PostgreSQL uses the database clock, which set the leases, instead of
   * now_ms, so lease expiry does not depend on the caller's clock. */
  enum err (*job_expired)(struct ledger *l, int64_t now_ms,
                          struct job **out, size_t *n);
  enum err (*job_transitions)(struct ledger *l, int64_t id,
                              struct transition **out, size_t *n);

  enum err (*step_record)(struct ledger *l, int64_t job_id,
                          const struct job_step_rec *s);
  enum err (*step_list)(struct ledger *l, int64_t job_id,
                        struct job_step_rec **out, size_t *n);

  enum err (*msg_append)(struct ledger *l, const char *channel, int64_t chat_id,
                         const char *role, const char *text);
  /* The newest `max` messages, oldest first. */
  enum err (*msg_recent)(struct ledger *l, const char *channel, int64_t chat_id,
                         size_t max, struct chat_msg **out, size_t *n);

  enum err (*outbox_put)(struct ledger *l, const struct outbox_msg *m,
                         int64_t *id);
  /* Pending messages of a channel due at now_ms, oldest first. */
  enum err (*outbox_pending)(struct ledger *l, const char *channel,
                             int64_t now_ms, size_t max,
                             struct outbox_msg **out, size_t *n);
  /* Backends fill these three with ledger_outbox_done/_retry/_fail, which
   * share outbox_set below. */
  enum err (*outbox_done)(struct ledger *l, int64_t id);
  enum err (*outbox_retry)(struct ledger *l, int64_t id, int64_t not_before,
                           const char *error);
  /* Gives up on a message for good (recorded, never silent). */
  enum err (*outbox_fail)(struct ledger *l, int64_t id, const char *error);
  /* Sets a message's state ("pending", "sent", "failed") and not_before; a
   * non-NULL error counts an attempt and is kept as the last error. */
  enum err (*outbox_set)(struct ledger *l, int64_t id, const char *state,
                         int64_t not_before, const char *error);

  /* ERR_NOTFOUND when the key is absent. */
  enum err (*kv_get)(struct ledger *l, const char *key, char **value);
  enum err (*kv_set)(struct ledger *l, const char *key, const char *value);

  /* Records an artifact of a job; sets a->id and a->created_at. */
  enum err (*artifact_add)(struct ledger *l, struct artifact *a);
  /* A job's artifacts, oldest first. */
  enum err (*artifact_list)(struct ledger *l, int64_t job_id,
                            struct artifact **out, size_t *n);

  /* Chat turns for the model, oldest first; done once answered, so a turn
   * received before a crash is answered after the restart. */
  enum err (*turn_put)(struct ledger *l, const char *channel, int64_t chat_id,
                       int64_t user_id, const char *text, int64_t *id);
  enum err (*turn_pending)(struct ledger *l, size_t max, struct chat_turn **out,
                           size_t *n);
  enum err (*turn_done)(struct ledger *l, int64_t id);
  /* Token accounting. */
  enum err (*usage_add)(struct ledger *l, const struct llm_usage *u);
  enum err (*usage_sum)(struct ledger *l, const struct usage_filter *f,
                        int64_t *prompt_tokens, int64_t *completion_tokens);

  /* Optional (NULL when the backend cannot; sqlite): blocks up to timeout_ms
   * until another connection, in any process, moves a job to QUEUED.  ERR_OK
   * on such a wake-up, with *heard (when not NULL) the notifications it
   * read (one per job queued); ERR_TIMEOUT when none
   * came, ERR_DB on a lost connection (reset for the next call).  Wake-ups
   * may be spurious: claim and see.  Not inside begin/commit (ERR_STATE). */
  enum err (*wait_for_work)(struct ledger *l, int timeout_ms, int *heard);

  /* Optional (NULL: every commit is durable).  on != 0: this connection's
   * commits (PostgreSQL: only those of transactions that claimed a job) may
   * be lost on a crash of the machine or of the database server until any
   * connection's next durable commit, which takes them along (one log,
   * flushed in order); on == 0: durable again.  Not inside begin/commit.
   * Only for writes whose loss is recovered and that nobody was told of: the
   * orchestrator's claims (a lost claim leaves the job queued; a step that
   * must not run twice makes its start durable first, and so its claim). */
  enum err (*lazy_commits)(struct ledger *l, int on);

  /* Optional (NULL: nothing to give back): hands back memory this
   * connection keeps only to go faster (SQLite: the page cache, which a
   * commit of any other connection empties anyway).  For threads about to
   * idle.  Not inside begin/commit. */
  void (*release_memory)(struct ledger *l);

  /* Puts a RUNNING job held by `owner` back in QUEUED, not to be claimed
   * before delay_ms from now (the database clock on PostgreSQL), with the
   * transition.  ERR_STATE if it is not RUNNING under `owner`. */
  enum err (*job_requeue)(struct ledger *l, int64_t id, const char *owner,
                          int64_t delay_ms, const char *actor,
                          const char *reason);

  /* Worker registry.  Registers or re-registers w (online, expiring ttl_ms
   * from now) and records an "online" event. */
  enum err (*worker_register)(struct ledger *l, const struct worker_rec *w,
                              int ttl_ms);
  /* Renews a worker's registration with its load.  *came_back is set when it
   * had been marked offline (an event "back" is recorded then, once).
   * ERR_NOTFOUND if it never registered. */
  enum err (*worker_heartbeat)(struct ledger *l, const char *id, int load,
                               int ttl_ms, int *came_back);
  /* Marks online workers whose registration expired before now_ms offline
   * (PostgreSQL: the database clock), recording an "offline" event each, and
   * returns just those: each incident is reported once. */
  enum err (*worker_expire)(struct ledger *l, int64_t now_ms,
                            struct worker_rec **out, size_t *n);
  /* A clean stop: offline with reason, and an event.  ERR_NOTFOUND if the
   * worker is unknown or already offline. */
  enum err (*worker_stop)(struct ledger *l, const char *id, const char *reason);
  /* Every worker, online first, then by id. */
  enum err (*worker_list)(struct ledger *l, struct worker_rec **out,
                          size_t *n);
  /* The newest `max` events, oldest first. */
  enum err (*worker_events)(struct ledger *l, size_t max,
                            struct worker_event **out, size_t *n);

  /* Named locks with expiry.  Takes or renews `name` for ttl_ms; a lock
   * whose holder let it expire is taken over.  ERR_BUSY while another owner
   * holds it. */
  enum err (*lock_acquire)(struct ledger *l, const char *name,
                           const char *owner, int ttl_ms);
  /* ERR_NOTFOUND if `owner` does not hold it (any more). */
  enum err (*lock_release)(struct ledger *l, const char *name,
                           const char *owner);
};

struct ledger_tx_hook;

struct ledger {
  const struct ledger_ops *ops;
  char errmsg[256];         /* the last backend error, redacted */
  struct ledger_tx_hook *tx_hooks;  /* ledger_after_tx, oldest last */
};

/* Opens a connection for the calling thread: sqlite://PATH or
 * postgresql://...  On failure writes why into errbuf. */
enum err ledger_open(const char *url, struct ledger **out, char *errbuf,
                     size_t errlen);
/* Whether url names an SQLite file that does not exist yet (so a new,
 * empty ledger); 0 for PostgreSQL or when unsure. */
int ledger_is_new(const char *url);
/* NULL-safe. */
void ledger_close(struct ledger *l);
/* l->ops->release_memory when the backend has it and l is not NULL. */
void ledger_release_memory(struct ledger *l);
/* Inside begin/commit: fn(arg, l, committed) runs when that transaction
 * ends, committed 1 once its COMMIT succeeded, 0 when it was rolled back,
 * its commit failed or l was closed first (then l is NULL): for what may
 * happen only once the transaction's writes are durable.  In the order
 * registered.  ERR_NOMEM (fn is then not called). */
enum err ledger_after_tx(struct ledger *l, void (*fn)(void *arg, struct ledger *l, int committed),
                         void *arg);
/* For backends: the caller's transaction on l ended (see ledger_after_tx). */
void ledger_tx_ended(struct ledger *l, int committed);
/* Up to max jobs claimed atomically (ops->job_claim_some, else
 * ledger_claim_each); see job_claim_some.  Not inside begin/commit. */
enum err ledger_claim_some(struct ledger *l, const char *owner, int lease_ms, int max,
                           struct job *out, int *n);
/* Claims made through ledger_claim_some by this process so far, and how
 * many of them found nothing (a worker's polling costs those). */
void ledger_claim_counts(unsigned long long *made, unsigned long long *empty);
/* The same with ops->job_claim, one at a time in one transaction (none for
 * max 1): for backends without job_claim_some, or that add to it. */
enum err ledger_claim_each(struct ledger *l, const char *owner, int lease_ms, int max,
                           struct job *out, int *n);

/* ops->job_finish_notice with the notice's text redacted, as
 * ledger_outbox_put does; ERR_UNSUPPORTED when the backend lacks it. */
enum err ledger_finish_notice(struct ledger *l, int64_t id, const char *owner,
                              enum job_state to, int exit_code, const char *output_tail,
                              const char *reason, const struct outbox_msg *notice);
/* Queues a notification with every registered secret redacted from its text:
 * the one way into the outbox, so no channel can send a secret and none is
 * stored.  Callers use this, not ops->outbox_put. */
enum err ledger_outbox_put(struct ledger *l, const struct outbox_msg *m,
                           int64_t *id);

/* The outbox bell: a process-wide wake-up for channel senders, so a queued
 * message goes out at once instead of at the sender's next poll.
 * ledger_outbox_put() rings it; a caller that queued inside its own
 * transaction rings it again after the commit (the first ring may come before
 * the message is visible to other connections).  Callable from any thread.
 * ledger_outbox_wait() returns when the bell rang since *seen (and updates
 * *seen) or after timeout_ms; wake-ups may be spurious. */
void ledger_outbox_ring(void);
void ledger_outbox_wait(uint64_t *seen, int timeout_ms);

int64_t ledger_now_ms(void);
/* A monotonic clock, ms: for intervals within this process. */
int64_t ledger_mono_ms(void);

/* The outbox_done/_retry/_fail of every backend, through its outbox_set. */
enum err ledger_outbox_done(struct ledger *l, int64_t id);
enum err ledger_outbox_retry(struct ledger *l, int64_t id, int64_t not_before,
                             const char *error);
enum err ledger_outbox_fail(struct ledger *l, int64_t id, const char *error);

void job_release(struct job *j);
void job_list_free(struct job *v, size_t n);
void job_step_rec_release(struct job_step_rec *s);
void job_step_list_free(struct job_step_rec *v, size_t n);
void transition_list_free(struct transition *v, size_t n);
void chat_msg_list_free(struct chat_msg *v, size_t n);
void outbox_msg_release(struct outbox_msg *m);
void outbox_list_free(struct outbox_msg *v, size_t n);
void worker_rec_release(struct worker_rec *w);
void worker_list_free(struct worker_rec *v, size_t n);
void worker_event_list_free(struct worker_event *v, size_t n);
void chat_turn_list_free(struct chat_turn *v, size_t n);
void artifact_list_free(struct artifact *v, size_t n);

/* Backends (one instance each). */
extern const struct ledger_ops ledger_sqlite_ops;
enum err ledger_sqlite_open(const char *path, struct ledger **out, char *errbuf,
                            size_t errlen);
/* PostgreSQL backend: url is a libpq connection URI (postgresql://...). */
extern const struct ledger_ops ledger_pg_ops;
enum err ledger_pg_open(const char *url, struct ledger **out, char *errbuf,
                        size_t errlen);

#endif
