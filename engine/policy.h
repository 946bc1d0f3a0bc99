/* engine/policy.h — the policy engine: risk from concrete argv.
 *
 * Table-driven rules decide READ_ONLY, WRITE, ADMIN or BLOCKED for the exact
 * argv a step will run; `sh -c`/`bash -c` scripts, sudo/env/nice/timeout
 * wrappers, pipes, redirections and path tricks are looked through.  Unknown
 * programs are at least WRITE.  Pure functions: thread-safe. */
#ifndef SKYNET_POLICY_H
#define SKYNET_POLICY_H

#include "job.h"

struct policy_verdict {
  enum risk risk;
  char reason[256];   /* why this risk, for chat: "rm deletes files" */
};

/* Risk of one argv (NULL-terminated).  An empty argv is BLOCKED. */
void policy_check_argv(const char *const *argv, struct policy_verdict *out);

#endif
