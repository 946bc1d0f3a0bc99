#include "registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Whether an executable named prog is on $PATH. */
static int registry_on_path(const char *prog)
{
  const char *path = getenv("PATH"), *p, *end;
  char full[4096];

  for (p = path; p && *p; p = *end ? end + 1 : end) {
    end = strchr(p, ':');
    if (!end)
      end = p + strlen(p);
    if (end > p && snprintf(full, sizeof full, "%.*s/%s", (int)(end - p), p, prog) <
                       (int)sizeof full && access(full, X_OK) == 0)
      return 1;
  }
  return 0;
}

/* With providers.isolate_write and no sandbox configured, one named
 * "sandbox" is set up on its own: WRITE steps bound for the local machine
 * run in it.  Without bwrap it is listed unavailable, saying why. */
static void registry_auto_sandbox(struct registry *r, const struct cfg *cfg)
{
  struct cfg_provider p = {"sandbox", "sandbox", NULL, 0};
  struct registry_entry *e;
  enum err err;

  if (!cfg->isolate_write)
    return;
  for (size_t i = 0; i < r->n; i++)
    if (!strcmp(r->v[i].type, "sandbox") || !strcmp(r->v[i].name, "sandbox"))
      return;
  e = &r->v[r->n];
  if (!(e->name = strdup(p.name)) || !(e->type = strdup(p.type))) {
    free(e->name);
    e->name = NULL;
    return;
  }
  r->n++;
  e->automatic = 1;
  if (!registry_on_path("bwrap"))
    snprintf(e->error, sizeof e->error, "bwrap is not installed (package bubblewrap): "
             "WRITE steps run on the local machine without isolation");
  else if ((err = exec_sandbox.create(cfg, &p, &e->inst)))
    snprintf(e->error, sizeof e->error, "cannot set up the sandbox: %s", err_str(err));
  if (!e->inst)
    log_warn("registry", "sandbox: %s", e->error);
}

enum err registry_init(struct registry *r, const struct cfg *cfg)
{
  memset(r, 0, sizeof *r);
  if (!(r->v = calloc(cfg->n_providers + 1, sizeof *r->v)))
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
  registry_auto_sandbox(r, cfg);
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
