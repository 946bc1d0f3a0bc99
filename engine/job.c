#include "job.h"

#include <string.h>
#include <strings.h>

static const char *const state_names[JOB__COUNT] = {
  "CREATED", "PLANNED", "AWAITING_APPROVAL", "APPROVED", "QUEUED", "RUNNING",
  "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED", "DENIED",
};

static const char *const risk_names[RISK__COUNT] = {
  "READ_ONLY", "WRITE", "ADMIN", "BLOCKED",
};

/* The edges of SPEC §5.  READ_ONLY plans skip approval (PLANNED → QUEUED);
 * RUNNING → QUEUED hands a job back (shutdown, lost lease). */
static const struct { enum job_state from, to; } edges[] = {
  {JOB_CREATED, JOB_PLANNED},
  {JOB_CREATED, JOB_FAILED},
  {JOB_CREATED, JOB_CANCELLED},
  {JOB_PLANNED, JOB_AWAITING_APPROVAL},
  {JOB_PLANNED, JOB_QUEUED},
  {JOB_PLANNED, JOB_DENIED},
  {JOB_PLANNED, JOB_CANCELLED},
  {JOB_AWAITING_APPROVAL, JOB_APPROVED},
  {JOB_AWAITING_APPROVAL, JOB_DENIED},
  {JOB_AWAITING_APPROVAL, JOB_CANCELLED},
  {JOB_APPROVED, JOB_QUEUED},
  {JOB_APPROVED, JOB_CANCELLED},
  {JOB_QUEUED, JOB_RUNNING},
  {JOB_QUEUED, JOB_CANCELLED},
  {JOB_QUEUED, JOB_FAILED},
  {JOB_RUNNING, JOB_SUCCEEDED},
  {JOB_RUNNING, JOB_FAILED},
  {JOB_RUNNING, JOB_TIMED_OUT},
  {JOB_RUNNING, JOB_CANCELLED},
  {JOB_RUNNING, JOB_QUEUED},
};

const char *job_state_name(enum job_state s)
{
  if ((unsigned)s >= JOB__COUNT)
    return "UNKNOWN";
  return state_names[s];
}

enum err job_state_parse(const char *s, enum job_state *out)
{
  for (int i = 0; s && i < JOB__COUNT; i++) {
    if (strcasecmp(s, state_names[i]) == 0) {
      *out = (enum job_state)i;
      return ERR_OK;
    }
  }
  return ERR_INVAL;
}

bool job_state_terminal(enum job_state s)
{
  return s == JOB_SUCCEEDED || s == JOB_FAILED || s == JOB_TIMED_OUT ||
         s == JOB_CANCELLED || s == JOB_DENIED;
}

bool job_transition_allowed(enum job_state from, enum job_state to)
{
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
    if (edges[i].from == from && edges[i].to == to)
      return true;
  return false;
}

const char *risk_name(enum risk r)
{
  if ((unsigned)r >= RISK__COUNT)
    return "UNKNOWN";
  return risk_names[r];
}

enum err risk_parse(const char *s, enum risk *out)
{
  for (int i = 0; s && i < RISK__COUNT; i++) {
    if (strcasecmp(s, risk_names[i]) == 0) {
      *out = (enum risk)i;
      return ERR_OK;
    }
  }
  return ERR_INVAL;
}
