/* engine/job.h — job states, risk levels and the state machine (SPEC §5).
 *
 * Pure functions over enums: thread-safe. */
#ifndef SKYNET_JOB_H
#define SKYNET_JOB_H

#include <stdbool.h>

#include "err.h"

enum job_state {
  JOB_CREATED,
  JOB_PLANNED,
  JOB_AWAITING_APPROVAL,
  JOB_APPROVED,
  JOB_QUEUED,
  JOB_RUNNING,
  JOB_SUCCEEDED,
  JOB_FAILED,
  JOB_TIMED_OUT,
  JOB_CANCELLED,
  JOB_DENIED,
  JOB__COUNT
};

enum risk { RISK_READ_ONLY, RISK_WRITE, RISK_ADMIN, RISK_BLOCKED, RISK__COUNT };

const char *job_state_name(enum job_state s);
enum err job_state_parse(const char *s, enum job_state *out);
bool job_state_terminal(enum job_state s);
/* Whether from → to is a legal edge of the state machine. */
bool job_transition_allowed(enum job_state from, enum job_state to);

const char *risk_name(enum risk r);
enum err risk_parse(const char *s, enum risk *out);
static inline enum risk risk_max(enum risk a, enum risk b) { return a > b ? a : b; }

#endif
