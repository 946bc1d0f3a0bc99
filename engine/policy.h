/* engine/policy.h — the policy engine: risk from concrete argv.
 *
 * Table-driven rules decide READ_ONLY, WRITE, ADMIN or BLOCKED for the exact
 * argv a step will run; `sh -c`/`bash -c` scripts, sudo/env/nice/timeout
 * wrappers, pipes, redirections and path tricks are looked through.  Unknown
 * programs are at least WRITE.  Pure functions: thread-safe. */
#ifndef SKYNET_POLICY_H
#define SKYNET_POLICY_H

#include <stddef.h>

#include "job.h"

struct policy_verdict {
  enum risk risk;
  char reason[256];   /* why this risk, for chat: "rm deletes files" */
};

/* Risk of one argv (NULL-terminated).  An empty argv is BLOCKED. */
void policy_check_argv(const char *const *argv, struct policy_verdict *out);

/* Where a WRITE command writes, as seen while judging it: the directory of
 * every absolute path it writes, creates or removes (`rm -rf /srv/a/b` →
 * /srv/a), and the directories it works in (`git -C dir`, `make -C dir`);
 * paths that hold variables are left out.  System directories never appear:
 * writing there is ADMIN.  network: a command in it talks to the network
 * (curl, wget, ssh, scp, rsync, git clone/fetch/pull/push).  The sandbox
 * makes exactly these directories writable. */
enum { POLICY_SCOPE_MAX = 8, POLICY_SCOPE_PATH = 512 };
struct policy_scope {
  char dirs[POLICY_SCOPE_MAX][POLICY_SCOPE_PATH];
  size_t n;
  int overflow;   /* more directories than fit: the rest are left out */
  int network;
};
void policy_write_scope(const char *const *argv, struct policy_scope *out);

#endif
