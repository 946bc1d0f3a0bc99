/* providers/exec/docker.c — the "docker" execution backend: runs argv in a
 * fresh container through the docker CLI.
 *
 * DESIGN
 * - The CLI is run by an inner instance of the local backend (timeout,
 *   cancel, bounded capture, scrubbed environment).  This file builds the
 *   "docker run" line: --rm, a name of our own, no network unless the
 *   instance allows it, memory and CPU limits, the workspace at /work.
 * - Killing the CLI does not stop the container: on timeout or cancel the
 *   container is removed by name with "docker rm -f".
 * - health() is "docker info": where no engine runs the instance is
 *   unavailable, and run() fails with ERR_UNAVAILABLE and the CLI's reason
 *   (exit status 125 is docker run's own failure).
 *
 * The request's cwd is a directory inside the container (default /work);
 * its extra environment is passed with -e.  The CLI itself gets only the
 * local backend's scrubbed environment.
 *
 * Instance options: image (required), memory (512m), cpus (1), network
 * (true → the default bridge; else none), workspace (host dir mounted at
 * /work), docker (the CLI, "docker"), and the local backend's options (path
 * is where the CLI is looked up). */
#include "docker.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DOCKER_FIXED 24            /* options before the image */
#define DOCKER_RM_TIMEOUT_MS 15000
#define DOCKER_EXIT_DAEMON 125       /* docker run's own failure */

struct docker_inst {
  struct exec_instance base;
  struct exec_instance *inner;     /* a local instance that runs the CLI */
  char *docker, *image, *memory, *cpus, *workspace;
  int network;
};

static atomic_uint docker_seq;

static const char *docker_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; p && i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static struct docker_inst *docker_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_docker);
  return (struct docker_inst *)inst;
}

/* ---- command line ------------------------------------------------------ */

enum err exec_docker_argv(const struct exec_docker_spec *spec,
                          const char *const *argv, const char **v, size_t n,
                          char *mount, size_t mount_len)
{
  size_t k = 0, argc = 0, envc = 0, i;

  while (argv[argc])
    argc++;
  while (spec->env && spec->env[envc])
    envc++;
  if (n < DOCKER_FIXED + 2 * envc + argc + 1)
    return ERR_TOOBIG;
  v[k++] = spec->docker;
  v[k++] = "run";
  v[k++] = "--rm";
  v[k++] = "--name";
  v[k++] = spec->name;
  v[k++] = "--network";
  v[k++] = spec->network;
  v[k++] = "--memory";
  v[k++] = spec->memory;
  v[k++] = "--cpus";
  v[k++] = spec->cpus;
  if (spec->workspace) {
    int w = snprintf(mount, mount_len, "%s:/work", spec->workspace);

    if (w < 0 || (size_t)w >= mount_len)
      return ERR_TOOBIG;
    v[k++] = "-v";
    v[k++] = mount;
  }
  for (i = 0; i < envc; i++) {
    v[k++] = "-e";
    v[k++] = spec->env[i];
  }
  v[k++] = "-w";
  v[k++] = spec->workdir ? spec->workdir : "/work";
  if (spec->interactive)
    v[k++] = "-i";
  v[k++] = "--";
  v[k++] = spec->image;
  memcpy(v + k, argv, (argc + 1) * sizeof *argv);
  return ERR_OK;
}

/* ---- instance ---------------------------------------------------------- */

static void docker_destroy(struct exec_instance *inst)
{
  struct docker_inst *di;

  if (!inst)
    return;
  di = docker_from(inst);
  if (di->inner)
    exec_local.destroy(di->inner);
  free(di->docker);
  free(di->image);
  free(di->memory);
  free(di->cpus);
  free(di->workspace);
  free(di);
}

static char *docker_dup(const struct cfg_provider *p, const char *key,
                        const char *def)
{
  const char *s = docker_opt(p, key);

  s = s && *s ? s : def;
  return s ? strdup(s) : NULL;
}

static enum err docker_create(const struct cfg *cfg,
                              const struct cfg_provider *p,
                              struct exec_instance **out)
{
  const char *net = docker_opt(p, "network");
  struct docker_inst *di;
  enum err e = ERR_NOMEM;

  *out = NULL;
  di = calloc(1, sizeof *di);
  if (!di)
    return ERR_NOMEM;
  di->base.backend = &exec_docker;
  snprintf(di->base.name, sizeof di->base.name, "%s",
           p && p->name ? p->name : "docker");
  di->network = net && strcmp(net, "true") == 0;
  di->docker = docker_dup(p, "docker", "docker");
  di->image = docker_dup(p, "image", NULL);
  di->memory = docker_dup(p, "memory", "512m");
  di->cpus = docker_dup(p, "cpus", "1");
  di->workspace = docker_dup(p, "workspace", NULL);
  if (!di->docker || !di->memory || !di->cpus)
    goto out;
  e = ERR_CONFIG;
  if (!di->image || di->image[0] == '-' ||
      (di->workspace && di->workspace[0] != '/'))
    goto out;
  e = exec_local.create(cfg, p, &di->inner);
out:
  if (e)
    docker_destroy(&di->base);
  else
    *out = &di->base;
  return e;
}

/* ---- run --------------------------------------------------------------- */

static void docker_remove(struct docker_inst *di, const char *name)
{
  const char *v[] = {di->docker, "rm", "-f", name, NULL};
  struct exec_request req = {.argv = v, .timeout_ms = DOCKER_RM_TIMEOUT_MS};
  struct exec_result res;

  exec_local.run(di->inner, &req, &res);
  exec_result_release(&res);
}

/* "docker run" itself failed (no engine, no image): its message says why. */
static enum err docker_failed(struct exec_result *res)
{
  const char *msg = res->output ? res->output : "";
  size_t len = res->output_len;

  while (len && msg[len - 1] == '\n')
    len--;
  snprintf(res->error, sizeof res->error, "docker unavailable: %.*s",
           (int)(len > 180 ? 180 : len), len > 180 ? msg + len - 180 : msg);
  return ERR_UNAVAILABLE;
}

static enum err docker_run(struct exec_instance *inst,
                           const struct exec_request *req,
                           struct exec_result *res)
{
  struct docker_inst *di = docker_from(inst);
  struct exec_request inner = *req;
  struct exec_docker_spec spec;
  char name[96], mount[1100];
  const char **v;
  size_t n = 0, envc = 0;
  enum err e;

  memset(res, 0, sizeof *res);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  while (req->argv[n])
    n++;
  while (req->env && req->env[envc])
    envc++;
  n += 2 * envc;
  snprintf(name, sizeof name, "skynet-%ld-%ld-%u", (long)getpid(),
           (long)time(NULL), atomic_fetch_add(&docker_seq, 1));
  spec = (struct exec_docker_spec){
    .docker = di->docker, .name = name, .image = di->image,
    .network = di->network ? "bridge" : "none", .memory = di->memory,
    .cpus = di->cpus, .workspace = di->workspace, .workdir = req->cwd,
    .env = req->env,
    .interactive = req->stdin_data && req->stdin_len,
  };
  v = calloc(DOCKER_FIXED + n + 1, sizeof *v);
  if (!v)
    return ERR_NOMEM;
  e = exec_docker_argv(&spec, req->argv, v, DOCKER_FIXED + n + 1, mount,
                       sizeof mount);
  if (e) {
    snprintf(res->error, sizeof res->error, "docker command too long");
    goto out;
  }
  inner.argv = v;
  inner.cwd = NULL;
  inner.env = NULL;   /* for the command, not the client (DOCKER_HOST, SSH_*) */
  e = exec_local.run(di->inner, &inner, res);
  if (e == ERR_TIMEOUT || e == ERR_CANCELLED)
    docker_remove(di, name);
  else if (e == ERR_OK && res->exit_code == DOCKER_EXIT_DAEMON)
    e = docker_failed(res);
out:
  free(v);
  return e;
}

static enum err docker_health(struct exec_instance *inst,
                              struct exec_health *out)
{
  struct docker_inst *di = docker_from(inst);
  const char *v[] = {di->docker, "info", "--format", "{{.ServerVersion}}",
                     NULL};
  struct exec_request req = {.argv = v, .timeout_ms = 10000,
                             .capture_max = 300};
  struct exec_result res;
  enum err e;
  size_t i;

  e = exec_local.run(di->inner, &req, &res);
  out->ok = e == ERR_OK && res.exit_code == 0;
  for (i = 0; res.output && i < res.output_len; i++)
    if (res.output[i] == '\n')
      res.output[i] = ' ';
  if (out->ok)
    snprintf(out->detail, sizeof out->detail, "docker: engine %.40s, image %.80s",
             res.output ? res.output : "", di->image);
  else
    snprintf(out->detail, sizeof out->detail, "docker: unavailable: %.200s",
             res.error[0] ? res.error : res.output ? res.output : "");
  exec_result_release(&res);
  return ERR_OK;
}

const struct exec_backend exec_docker = {
  .name = "docker",
  .create = docker_create,
  .run = docker_run,
  .health = docker_health,
  .destroy = docker_destroy,
};
