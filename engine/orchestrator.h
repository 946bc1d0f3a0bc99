/* engine/orchestrator.h — jobs from request to result.
 *
 * DESIGN
 * Submission, approval and cancellation run on the caller's thread with the
 * caller's own ledger connection: they plan, judge and move the job through
 * the state machine (SPEC §5), every transition persisted before anything is
 * announced.  Running happens elsewhere: `workers` threads each own a ledger
 * connection, claim QUEUED jobs (oldest first, with a lease) and run their
 * steps in order on the execution providers, stopping at the first failure.
 * A supervisor thread with its own connection renews the leases of the jobs
 * this process runs, turns cancel requests recorded in the ledger into a
 * stop of the running step, and takes back jobs whose runner died.
 * Results and progress are written to the outbox for the job's channel; the
 * engine never calls a channel.
 *
 * Commits per job, which bound throughput (a durable commit is a disk
 * sync): the submission (the caller's); the claim, which does not wait for
 * the disk (nobody is told of it; a crash that loses it leaves the job
 * queued), and covers up to 8 jobs while jobs are quick (prefetching: the
 * extra jobs wait on a process-wide ready list for the first free slot,
 * their leases renewed, cancels noted); and a share of one group commit:
 * the slots hand step records, status lines and results to one writer
 * thread with its own connection, which lands everything queued in one
 * transaction, at most every few ms, and rings the outbox bell after it.
 * Only a step that is not idempotent waits for a commit before it runs (its
 * start record, with a lease and cancel check), so that a crash never runs
 * it twice.
 *
 * Thread contract: orch_* may be called from any thread, each with its own
 * ledger.  orch_start/orch_stop from the main thread only. */
#ifndef SKYNET_ORCHESTRATOR_H
#define SKYNET_ORCHESTRATOR_H

#include <stdint.h>

#include "config.h"
#include "err.h"
#include "job.h"
#include "ledger/ledger.h"
#include "registry.h"

struct orch;

struct submit_req {
  const char *channel;      /* "console", "telegram", "http" */
  int64_t chat_id;
  int64_t user_id;
  const char *text;         /* the request in words */
  const char *plan_json;    /* a ready plan (model, API); NULL → offline planner */
  const char *actor;        /* "user:42" */
  int require_approval;     /* proposed in conversation: waits for a person
                               even when READ_ONLY */
};

struct submit_res {
  int64_t job_id;           /* 0 if no job was made */
  enum job_state state;     /* DENIED, AWAITING_APPROVAL, QUEUED or FAILED */
  enum risk risk;
  char *plan_text;          /* plan_describe(); malloc'd, may be NULL */
  char *summary;            /* malloc'd, may be NULL */
  char reason[512];         /* policy reason, or why planning failed */
};

/* Starts `workers` worker threads (0 = none) and the supervisor.
 * cfg and reg must outlive the orchestrator. */
enum err orch_start(const struct cfg *cfg, const struct registry *reg,
                    int workers, struct orch **out, char *errbuf, size_t errlen);
/* Stops claiming, lets running jobs finish for up to grace_ms, then stops
 * them and hands them back to the queue; joins every thread; frees o. */
void orch_stop(struct orch *o, int grace_ms);

enum err orch_submit(struct orch *o, struct ledger *l, const struct submit_req *r,
                     struct submit_res *out);
void submit_res_release(struct submit_res *r);
/* The two halves of orch_submit, for planners that take a while (a model):
 * the job is stored at once, CREATED, and planned later by another thread. */
enum err orch_create(struct orch *o, struct ledger *l, const struct submit_req *r,
                     int64_t *id);
/* Plans a CREATED job and routes it by risk (orch_submit's second half).
 * ERR_STATE when the job is no longer CREATED (another planner took it). */
enum err orch_plan(struct orch *o, struct ledger *l, int64_t id, const struct submit_req *r,
                   struct submit_res *out);

/* approve != 0: AWAITING_APPROVAL → APPROVED → QUEUED; else → DENIED.
 * ERR_STATE when the job is not awaiting approval. */
enum err orch_decide(struct orch *o, struct ledger *l, int64_t id, int approve,
                     const char *actor);
/* Cancels a job in any non-final state; a running one is stopped at once
 * when it runs in this process, else at its runner's next heartbeat. */
enum err orch_cancel(struct orch *o, struct ledger *l, int64_t id, const char *actor);
struct sentinel;
/* Lets routing skip providers the sentinel marks down (NULL: none
 * watches).  s must outlive the orchestrator or be unset first.  Any
 * thread. */
void orch_set_sentinel(struct orch *o, struct sentinel *s);
/* Wakes idle workers: new work is queued.  Any thread. */
void orch_wake(struct orch *o);

struct buf;
/* Appends the job's artifacts to b: "\nArtifacts:" and one line each
 * ("report.txt (1204 B, sha 3f2a9c01d4e5, step 1)"); nothing when none. */
void orch_format_artifacts(struct ledger *l, int64_t id, struct buf *b);

/* "#4 SUCCEEDED · exit 0 · 1.2s" + output tail; malloc'd. */
char *orch_format_result(const struct job *j, size_t tail_max);

#endif
