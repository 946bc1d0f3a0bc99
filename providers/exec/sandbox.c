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
 *   the step needs the network (request.network, which the orchestrator
 *   takes from the policy engine: curl, git pull, ...) and the instance does
 *   not say network: false, or the instance says network: true;
 *   --die-with-parent, --new-session.
 * - Writable: the workspace, which is the instance option "workspace"
 *   (shared by every run), else a directory made with mkdtemp() under /tmp
 *   for one run and removed after it; and the directories the request lists
 *   as writable: where the approved command line writes, as the policy
 *   engine found it (`rm -rf /srv/old` → /srv).  Each is bound at its
 *   nearest existing ancestor; "/" and system directories never are.
 *   Everything else a step writes lands in the private /tmp or fails as a
 *   read-only file system.
 *
 * Instance options (all optional): workspace, network (step, the default /
 * true / false), bwrap (the program, default "bwrap"), and the local
 * backend's options (path, rlimit_*), which apply to bwrap and so to
 * everything inside. */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SANDBOX_MAX_BINDS 8       /* writable directories bound per run */
#define SANDBOX_MAX_FIXED (64 + 3 * SANDBOX_MAX_BINDS)  /* arguments before "--" */
#define SANDBOX_CMDLINE_MAX 8192  /* of bwrap's, read when searching */

static atomic_uint sandbox_seq;

struct sandbox_inst {
  struct exec_instance base;
  struct exec_instance *inner;  /* a local instance that runs bwrap */
  char *bwrap;
  char *workspace;              /* NULL → one mkdtemp per run */
  enum { SB_NET_STEP, SB_NET_ALWAYS, SB_NET_NEVER } network;
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

static int sandbox_falsy(const char *s)
{
  return s && (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 ||
               strcmp(s, "0") == 0 || strcmp(s, "off") == 0);
}

/* The option network: absent or "step", true, false; -1 for anything else. */
static int sandbox_net_mode(const char *v, struct sandbox_inst *si)
{
  if (!v || !*v || strcmp(v, "step") == 0)
    si->network = SB_NET_STEP;
  else if (sandbox_truthy(v))
    si->network = SB_NET_ALWAYS;
  else if (sandbox_falsy(v))
    si->network = SB_NET_NEVER;
  else
    return -1;
  return 0;
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
  si->bwrap = strdup(bw && *bw ? bw : "bwrap");
  si->workspace = ws && *ws ? strdup(ws) : NULL;
  if (!si->bwrap || (ws && *ws && !si->workspace))
    goto out;
  if ((ws && *ws && ws[0] != '/') || sandbox_net_mode(sandbox_opt(p, "network"), si)) {
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
                            const struct exec_request *req, char *const *binds,
                            const char *token, const char **v)
{
  static const char *const ro[] = {"/bin", "/sbin", "/lib", "/lib32",
                                   "/lib64", "/libx32", "/etc"};
  size_t n = 0, i;

  v[n++] = si->bwrap;
  v[n++] = "--unshare-all";
  if (si->network == SB_NET_ALWAYS || (si->network == SB_NET_STEP && req->network))
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
  for (i = 0; binds && binds[i]; i++) {   /* after the tmpfs: /tmp may be one */
    v[n++] = "--bind";
    v[n++] = binds[i];
    v[n++] = binds[i];
  }
  v[n++] = "--bind";      /* after the tmpfs, so a workspace in /tmp shows */
  v[n++] = ws;
  v[n++] = ws;
  v[n++] = "--chdir";
  v[n++] = req->cwd ? req->cwd : ws;
  v[n++] = "--";
  assert(n <= SANDBOX_MAX_FIXED);
  return n;
}

/* ---- writable directories -------------------------------------------- */

/* Never made writable: the root and what the sandbox mounts read-only or
 * fresh.  The policy engine already judges writes there ADMIN. */
static int sandbox_bind_refused(const char *p)
{
  static const char *const sys[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                                    "/libx32", "/etc", "/boot", "/proc", "/sys", "/dev"};
  size_t i, n;

  if (strcmp(p, "/") == 0)
    return 1;
  for (i = 0; i < sizeof sys / sizeof sys[0]; i++) {
    n = strlen(sys[i]);
    if (strncmp(p, sys[i], n) == 0 && (p[n] == '\0' || p[n] == '/'))
      return 1;
  }
  return 0;
}

/* The nearest existing ancestor of an absolute path, symlinks resolved,
 * malloc'd; NULL when it is not a directory or resolves to a refused one. */
static char *sandbox_bind_dir(const char *want)
{
  char *d = strdup(want), *real = NULL, *slash;
  struct stat st;

  while (d && d[0] == '/' && !(real = realpath(d, NULL))) {
    slash = strrchr(d, '/');
    slash[slash == d] = '\0';      /* "/a" → "/", "/a/b" → "/a" */
  }
  free(d);
  if (real && (stat(real, &st) != 0 || !S_ISDIR(st.st_mode) || sandbox_bind_refused(real))) {
    free(real);
    real = NULL;
  }
  return real;
}

static void sandbox_binds_free(char **v)
{
  for (size_t i = 0; v && v[i]; i++)
    free(v[i]);
  free(v);
}

/* The request's writable directories as they will be bound: an owned
 * NULL-terminated list, or NULL when out of memory. */
static char **sandbox_binds(const struct exec_request *req)
{
  char **v = calloc(SANDBOX_MAX_BINDS + 1, sizeof *v), *d;
  size_t n = 0, i, k;

  for (i = 0; v && req->writable && req->writable[i] && n < SANDBOX_MAX_BINDS; i++) {
    if (!(d = sandbox_bind_dir(req->writable[i])))
      continue;
    for (k = 0; k < n && strcmp(v[k], d) != 0; k++)
      ;
    if (k < n)
      free(d);
    else
      v[n++] = d;
  }
  return v;
}

/* The full argv: an owned array of borrowed strings. */
static const char **sandbox_argv(const struct sandbox_inst *si, const char *ws,
                                 char *const *binds, const char *token,
                                 const struct exec_request *req)
{
  size_t n = 0, k, i;
  const char **v;

  while (req->argv[n])
    n++;
  v = calloc(SANDBOX_MAX_FIXED + n + 1, sizeof *v);
  if (!v)
    return NULL;
  k = sandbox_fixed(si, ws, req, binds, token, v);
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
  char **binds = NULL;
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
  binds = sandbox_binds(req);
  argv = binds ? sandbox_argv(si, ws, binds, token, req) : NULL;
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
  sandbox_binds_free(binds);
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
             si->network == SB_NET_ALWAYS  ? " (network allowed)"
             : si->network == SB_NET_NEVER ? " (no network)"
                                           : " (network only for steps that need it)");
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
