/* providers/exec/sandbox.c — the "sandbox" execution backend: runs argv
 * inside bubblewrap (bwrap) on this machine.
 *
 * DESIGN
 * - The sandbox is a command line, not a second process manager: run()
 *   builds "bwrap <isolation> -- argv" and hands it to an inner instance of
 *   the local backend, which already owns process groups, timeouts, cancel,
 *   bounded capture and the scrubbed environment.
 * - Killing bwrap kills the sandbox's pid namespace through its init, which
 *   bwrap starts in a session of its own (so the group kill misses it) and
 *   ties to bwrap with --die-with-parent.  That was seen to fail under load,
 *   so after a timeout or cancel the init is also killed by hand: every run
 *   puts a unique token in bwrap's argv (--setenv SKYNET_SANDBOX_RUN), the
 *   init is a fork of bwrap with the same command line, and /proc is
 *   searched for it.  SIGKILL to a namespace's init ends all inside.
 * - Isolation: /usr, /bin, /sbin, /lib*, /etc read-only; a private tmpfs
 *   /tmp; fresh /proc and /dev; every namespace unshared (no network) unless
 *   the instance says network: true; --die-with-parent, --new-session.
 * - The only writable directory is the workspace: the instance option
 *   "workspace" (shared by every run), else a directory made with mkdtemp()
 *   under /tmp for one run and removed after it.
 *
 * Instance options (all optional): workspace, network (true/false), bwrap
 * (the program, default "bwrap"), and the local backend's options (path,
 * rlimit_*), which apply to bwrap and so to everything inside. */
#include "exec.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SANDBOX_MAX_FIXED 64      /* isolation arguments before "--" */
#define SANDBOX_CMDLINE_MAX 8192  /* of bwrap's, read when searching */

static atomic_uint sandbox_seq;

struct sandbox_inst {
  struct exec_instance base;
  struct exec_instance *inner;  /* a local instance that runs bwrap */
  char *bwrap;
  char *workspace;              /* NULL → one mkdtemp per run */
  int network;
};

static const char *sandbox_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; p && i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static struct sandbox_inst *sandbox_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_sandbox);
  return (struct sandbox_inst *)inst;
}

static int sandbox_truthy(const char *s)
{
  return s && (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 ||
               strcmp(s, "1") == 0 || strcmp(s, "on") == 0);
}

static void sandbox_destroy(struct exec_instance *inst)
{
  struct sandbox_inst *si;

  if (!inst)
    return;
  si = sandbox_from(inst);
  if (si->inner)
    exec_local.destroy(si->inner);
  free(si->bwrap);
  free(si->workspace);
  free(si);
}

static enum err sandbox_create(const struct cfg *cfg,
                               const struct cfg_provider *p,
                               struct exec_instance **out)
{
  const char *ws = sandbox_opt(p, "workspace");
  const char *bw = sandbox_opt(p, "bwrap");
  struct sandbox_inst *si;
  enum err e = ERR_NOMEM;

  *out = NULL;
  si = calloc(1, sizeof *si);
  if (!si)
    return ERR_NOMEM;
  si->base.backend = &exec_sandbox;
  snprintf(si->base.name, sizeof si->base.name, "%s",
           p && p->name ? p->name : "sandbox");
  si->network = sandbox_truthy(sandbox_opt(p, "network"));
  si->bwrap = strdup(bw && *bw ? bw : "bwrap");
  si->workspace = ws && *ws ? strdup(ws) : NULL;
  if (!si->bwrap || (ws && *ws && !si->workspace))
    goto out;
  if (ws && *ws && ws[0] != '/') {
    e = ERR_CONFIG;
    goto out;
  }
  e = exec_local.create(cfg, p, &si->inner);
out:
  if (e)
    sandbox_destroy(&si->base);
  else
    *out = &si->base;
  return e;
}

/* ---- the command line ------------------------------------------------- */

/* Fills v with bwrap and its isolation options; returns how many. */
static size_t sandbox_fixed(const struct sandbox_inst *si, const char *ws,
                            const char *cwd, const char *token,
                            const char **v)
{
  static const char *const ro[] = {"/bin", "/sbin", "/lib", "/lib32",
                                   "/lib64", "/libx32", "/etc"};
  size_t n = 0, i;

  v[n++] = si->bwrap;
  v[n++] = "--unshare-all";
  if (si->network)
    v[n++] = "--share-net";
  v[n++] = "--die-with-parent";
  v[n++] = "--setenv";
  v[n++] = "SKYNET_SANDBOX_RUN";
  v[n++] = token;
  v[n++] = "--new-session";
  v[n++] = "--ro-bind";
  v[n++] = "/usr";
  v[n++] = "/usr";
  for (i = 0; i < sizeof ro / sizeof ro[0]; i++) {
    v[n++] = "--ro-bind-try";
    v[n++] = ro[i];
    v[n++] = ro[i];
  }
  v[n++] = "--proc";
  v[n++] = "/proc";
  v[n++] = "--dev";
  v[n++] = "/dev";
  v[n++] = "--tmpfs";
  v[n++] = "/tmp";
  v[n++] = "--bind";      /* after the tmpfs, so a workspace in /tmp shows */
  v[n++] = ws;
  v[n++] = ws;
  v[n++] = "--chdir";
  v[n++] = cwd ? cwd : ws;
  v[n++] = "--";
  assert(n <= SANDBOX_MAX_FIXED);
  return n;
}

/* The full argv: an owned array of borrowed strings. */
static const char **sandbox_argv(const struct sandbox_inst *si, const char *ws,
                                 const char *token,
                                 const struct exec_request *req)
{
  size_t n = 0, k, i;
  const char **v;

  while (req->argv[n])
    n++;
  v = calloc(SANDBOX_MAX_FIXED + n + 1, sizeof *v);
  if (!v)
    return NULL;
  k = sandbox_fixed(si, ws, req->cwd, token, v);
  for (i = 0; i < n; i++)
    v[k + i] = req->argv[i];
  return v;
}

/* ---- leftovers -------------------------------------------------------- */

/* 1 if the NUL-separated command line of pid holds the word token. */
static int sandbox_pid_has(const char *pid, const char *token, char *buf)
{
  char path[300];
  size_t len, i;
  FILE *f;

  snprintf(path, sizeof path, "/proc/%s/cmdline", pid);
  f = fopen(path, "re");
  if (!f)
    return 0;
  len = fread(buf, 1, SANDBOX_CMDLINE_MAX - 1, f);
  fclose(f);
  buf[len] = 0;
  for (i = 0; i < len; i += strlen(buf + i) + 1)
    if (strcmp(buf + i, token) == 0)
      return 1;
  return 0;
}

/* SIGKILLs every process still carrying this run's token: the namespace's
 * init, if it outlived bwrap. */
static void sandbox_kill_leftovers(const char *token)
{
  char *buf = malloc(SANDBOX_CMDLINE_MAX);
  DIR *d = opendir("/proc");
  struct dirent *de;
  char *end;
  long pid;

  while (buf && d && (de = readdir(d))) {
    pid = strtol(de->d_name, &end, 10);
    if (*end || pid <= 1 || pid == (long)getpid())
      continue;
    if (sandbox_pid_has(de->d_name, token, buf))
      kill((pid_t)pid, SIGKILL);
  }
  if (d)
    closedir(d);
  free(buf);
}

/* ---- per-run workspace ------------------------------------------------ */

static int sandbox_rm_one(const char *path, const struct stat *sb, int flag,
                          struct FTW *ftw)
{
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static enum err sandbox_workspace(const struct sandbox_inst *si, char *tmp,
                                  size_t len, const char **ws,
                                  struct exec_result *res)
{
  char msg[128];

  if (si->workspace) {
    *ws = si->workspace;
    return ERR_OK;
  }
  snprintf(tmp, len, "/tmp/skynet-sandbox-XXXXXX");
  if (!mkdtemp(tmp)) {
    snprintf(res->error, sizeof res->error,
             "cannot make a sandbox workspace: %s",
             strerror_r(errno, msg, sizeof msg));
    return ERR_IO;
  }
  *ws = tmp;
  return ERR_OK;
}

static enum err sandbox_run(struct exec_instance *inst,
                            const struct exec_request *req,
                            struct exec_result *res)
{
  struct sandbox_inst *si = sandbox_from(inst);
  struct exec_request inner = *req;
  char tmp[64] = "", token[80];
  const char **argv = NULL;
  const char *ws = NULL;
  enum err e;

  memset(res, 0, sizeof *res);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  e = sandbox_workspace(si, tmp, sizeof tmp, &ws, res);
  if (e)
    return e;
  snprintf(token, sizeof token, "skynet-sandbox-%ld-%ld-%u", (long)getpid(),
           (long)time(NULL), atomic_fetch_add(&sandbox_seq, 1));
  argv = sandbox_argv(si, ws, token, req);
  if (!argv) {
    e = ERR_NOMEM;
    goto out;
  }
  inner.argv = argv;
  inner.cwd = NULL;
  e = exec_local.run(si->inner, &inner, res);
  if (e == ERR_TIMEOUT || e == ERR_CANCELLED)
    sandbox_kill_leftovers(token);
out:
  free(argv);
  if (tmp[0])
    nftw(tmp, sandbox_rm_one, 16, FTW_DEPTH | FTW_PHYS);
  return e;
}

/* bwrap present and able to make namespaces here: the cheapest real run. */
static enum err sandbox_health(struct exec_instance *inst,
                               struct exec_health *out)
{
  struct sandbox_inst *si = sandbox_from(inst);
  const char *argv[] = {si->bwrap, "--unshare-all", "--ro-bind", "/", "/",
                        "true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000,
                             .capture_max = 200};
  struct exec_result res;
  enum err e;
  size_t i;

  e = exec_local.run(si->inner, &req, &res);
  out->ok = e == ERR_OK && res.exit_code == 0;
  for (i = 0; res.output && i < res.output_len; i++)
    if (res.output[i] == '\n')
      res.output[i] = ' ';
  if (out->ok)
    snprintf(out->detail, sizeof out->detail, "sandbox: bwrap works%s",
             si->network ? " (network allowed)" : " (no network)");
  else if (res.error[0])
    snprintf(out->detail, sizeof out->detail, "sandbox: bwrap missing: %.200s",
             res.error);
  else
    snprintf(out->detail, sizeof out->detail,
             "sandbox: bwrap unusable (exit %d): %.180s", res.exit_code,
             res.output ? res.output : "");
  exec_result_release(&res);
  return ERR_OK;
}

const struct exec_backend exec_sandbox = {
  .name = "sandbox",
  .create = sandbox_create,
  .run = sandbox_run,
  .health = sandbox_health,
  .destroy = sandbox_destroy,
};
