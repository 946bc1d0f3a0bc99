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
  /* Extends the lease; reports a cancel request.  ERR_STATE if the lease is
   * no longer ours (taken back, job ended). */
  enum err (*job_heartbeat)(struct ledger *l, int64_t id, const char *owner,
                            int lease_ms, int *cancel_requested);
  /* Ends a RUNNING job that `owner` holds: state, result and transition. */
  enum err (*job_finish)(struct ledger *l, int64_t id, const char *owner,
                         enum job_state to, int exit_code,
                         const char *output_tail, const char *reason);
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
  enum err (*outbox_done)(struct ledger *l, int64_t id);
  enum err (*outbox_retry)(struct ledger *l, int64_t id, int64_t not_before,
                           const char *error);
  /* Gives up on a message for good (recorded, never silent). */
  enum err (*outbox_fail)(struct ledger *l, int64_t id, const char *error);

  /* ERR_NOTFOUND when the key is absent. */
  enum err (*kv_get)(struct ledger *l, const char *key, char **value);
  enum err (*kv_set)(struct ledger *l, const char *key, const char *value);

  /* Optional (NULL when the backend cannot; sqlite): blocks up to timeout_ms
   * until another connection, in any process, moves a job to QUEUED.  ERR_OK
   * on such a wake-up, ERR_TIMEOUT when none came, ERR_DB on a lost
   * connection (reset for the next call).  Wake-ups may be spurious: claim
   * and see.  Not inside begin/commit (ERR_STATE). */
  enum err (*wait_for_work)(struct ledger *l, int timeout_ms);
};

struct ledger {
  const struct ledger_ops *ops;
  char errmsg[256];         /* the last backend error, redacted */
};

/* Opens a connection for the calling thread: sqlite://PATH or
 * postgresql://...  On failure writes why into errbuf. */
enum err ledger_open(const char *url, struct ledger **out, char *errbuf,
                     size_t errlen);
/* NULL-safe. */
void ledger_close(struct ledger *l);

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

void job_release(struct job *j);
void job_list_free(struct job *v, size_t n);
void job_step_rec_release(struct job_step_rec *s);
void job_step_list_free(struct job_step_rec *v, size_t n);
void transition_list_free(struct transition *v, size_t n);
void chat_msg_list_free(struct chat_msg *v, size_t n);
void outbox_msg_release(struct outbox_msg *m);
void outbox_list_free(struct outbox_msg *v, size_t n);

/* Backends (one instance each). */
extern const struct ledger_ops ledger_sqlite_ops;
enum err ledger_sqlite_open(const char *path, struct ledger **out, char *errbuf,
                            size_t errlen);
/* PostgreSQL backend: url is a libpq connection URI (postgresql://...). */
extern const struct ledger_ops ledger_pg_ops;
enum err ledger_pg_open(const char *url, struct ledger **out, char *errbuf,
                        size_t errlen);

#endif
