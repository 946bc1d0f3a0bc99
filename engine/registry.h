/* engine/registry.h — the configured execution provider instances.
 *
 * Built once from cfg->providers at start; read-only afterwards, so any thread
 * may look instances up.  An instance whose backend is not built in is kept
 * with its reason, so that a step routed to it fails saying why.  So is an
 * instance whose routing options (timeout_s, admin) are invalid.
 * With providers.isolate_write and no sandbox configured, an instance
 * "sandbox" is added (automatic): unavailable, saying so, without bwrap. */
#ifndef SKYNET_REGISTRY_H
#define SKYNET_REGISTRY_H

#include "config.h"
#include "err.h"
#include "providers/exec/exec.h"

struct registry_entry {
  char *name;
  char *type;
  struct exec_instance *inst;   /* NULL when unavailable */
  char error[256];              /* why unavailable */
  int timeout_s;                /* option timeout_s: provider-level limit, 0 none */
  int admin;                    /* option admin: may run ADMIN steps
                                 * (default: yes for local, no otherwise) */
  int automatic;                /* set up without configuration: the sandbox
                                 * that isolates WRITE steps */
};

struct registry {
  struct registry_entry *v;
  size_t n;
  char *default_name;
};

enum err registry_init(struct registry *r, const struct cfg *cfg);
void registry_release(struct registry *r);
/* The first usable instance of a backend type ("sandbox"), or NULL. */
const struct registry_entry *registry_find_type(const struct registry *r,
                                                const char *type);
/* NULL name → the default instance.  NULL if no such name. */
const struct registry_entry *registry_find(const struct registry *r, const char *name);

#endif
