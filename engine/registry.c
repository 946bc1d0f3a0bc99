#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Options read by the engine for every type; the backend reads the rest. */
static int registry_opts(struct registry_entry *e, const struct cfg_provider *p)
{
  const char *t = cfg_provider_opt(p, "timeout_s");
  const char *a = cfg_provider_opt(p, "admin");
  char *end;
  long v;

  e->admin = strcmp(p->type, "local") == 0;
  if (t) {
    v = strtol(t, &end, 10);
    if (end == t || *end || v < 1 || v > 86400) {
      snprintf(e->error, sizeof e->error, "provider '%s': option 'timeout_s' "
               "must be a whole number of seconds from 1 to 86400, not '%.40s'",
               p->name, t);
      return -1;
    }
    e->timeout_s = (int)v;
  }
  if (a) {
    if (strcmp(a, "true") && strcmp(a, "false")) {
      snprintf(e->error, sizeof e->error, "provider '%s': option 'admin' "
               "must be true or false, not '%.40s'", p->name, a);
      return -1;
    }
    e->admin = strcmp(a, "true") == 0;
  }
  return 0;
}

enum err registry_init(struct registry *r, const struct cfg *cfg)
{
  memset(r, 0, sizeof *r);
  if (!(r->v = calloc(cfg->n_providers ? cfg->n_providers : 1, sizeof *r->v)))
    return ERR_NOMEM;
  r->default_name = strdup(cfg->default_provider ? cfg->default_provider : "local");
  for (size_t i = 0; i < cfg->n_providers; i++) {
    const struct cfg_provider *p = &cfg->providers[i];
    struct registry_entry *e = &r->v[r->n++];
    const struct exec_backend *b = exec_backend_find(p->type);
    enum err err;

    e->name = strdup(p->name);
    e->type = strdup(p->type);
    if (registry_opts(e, p) < 0) {
      log_warn("registry", "%s", e->error);
      continue;
    }
    if (!b) {
      snprintf(e->error, sizeof e->error,
               "provider type '%s' is not available in this build", p->type);
      log_warn("registry", "provider '%s': %s", p->name, e->error);
      continue;
    }
    if ((err = b->create(cfg, p, &e->inst))) {
      snprintf(e->error, sizeof e->error, "cannot set up provider '%s': %s",
               p->name, err_str(err));
      log_warn("registry", "%s", e->error);
      e->inst = NULL;
    }
  }
  return ERR_OK;
}

void registry_release(struct registry *r)
{
  if (!r)
    return;
  for (size_t i = 0; i < r->n; i++) {
    if (r->v[i].inst)
      r->v[i].inst->backend->destroy(r->v[i].inst);
    free(r->v[i].name);
    free(r->v[i].type);
  }
  free(r->v);
  free(r->default_name);
  memset(r, 0, sizeof *r);
}

const struct registry_entry *registry_find(const struct registry *r, const char *name)
{
  if (!name)
    name = r->default_name;
  for (size_t i = 0; name && i < r->n; i++)
    if (strcmp(r->v[i].name, name) == 0)
      return &r->v[i];
  return NULL;
}

const struct registry_entry *registry_find_type(const struct registry *r,
                                                const char *type)
{
  for (size_t i = 0; i < r->n; i++)
    if (r->v[i].inst && strcmp(r->v[i].type, type) == 0)
      return &r->v[i];
  return NULL;
}
