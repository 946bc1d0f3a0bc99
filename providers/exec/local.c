/* providers/exec/local.c — the "local" execution backend: runs argv as a
 * child process of skynet, on this machine, without a shell.
 *
 * DESIGN
 * - One run() is one child, started by the calling thread and watched by
 *   that thread alone.  It is started the way posix_spawn() does it:
 *   clone(CLONE_VM | CLONE_VFORK) on a small stack of its own, so no page
 *   table is copied and the parent waits only until the exec, with every
 *   signal blocked around it so that no handler of skynet's runs in the
 *   child on shared memory.  Under AddressSanitizer (whose instrumented
 *   child would write shadow memory the parent shares) it is fork().  The
 *   child's exit is watched through a pidfd when the kernel has one; the instance is read-only after
 *   create(), so any number of threads may run commands on it at once.  No
 *   global state, no signal handlers: each run waits for its own pid only.
 * - Everything the child needs (environment, PATH search buffer, fds) is
 *   prepared before fork(), because after fork() in a threaded process the
 *   child may only call async-signal-safe functions until it execs.
 * - The child leads its own process group, so timeout, cancel and the final
 *   clean-up signal the whole group.  The leader is not reaped until the
 *   group has been killed: its zombie keeps the pgid from being reused by an
 *   unrelated process in between.
 * - stdout and stderr share one pipe (the interleaving the operator would see
 *   on a terminal).  Only its last capture_max bytes are kept, in a ring, so
 *   memory stays bounded whatever the command prints.
 * - One poll() loop feeds stdin, reads output, hears the child's exit on
 *   its pidfd and wakes at least every LOCAL_TICK_MS to look at cancel and
 *   the deadline.
 * - Exec failures travel back on a close-on-exec pipe: EOF means the exec
 *   worked, a struct child_report means it did not and why.
 *
 * Instance options (all optional): path (PATH given to commands), workdir,
 * home, env_allow, rlimit_cpu_s, rlimit_as_mb, rlimit_nofile, rlimit_nproc.
 * - Resource limits (soft = hard, so a command cannot raise them) default to
 *   LOCAL_DEFAULT_CPU_S of CPU time, LOCAL_DEFAULT_AS_MB of address space
 *   and LOCAL_DEFAULT_NOFILE open files, each lowered to what skynet itself
 *   may have; "unlimited" leaves one as skynet's.  RLIMIT_NPROC has no
 *   default: it counts every process of the user, not only the command's.
 * - The environment is scrubbed: PATH, HOME, LANG=C.UTF-8, TERM=dumb, then
 *   the variables named in env_allow ("TZ,http_proxy"), copied from
 *   skynet's environment when set, then the request's own, then
 *   SKYNET_RUN_ID, unique per run: after a timeout or cancel, processes
 *   that left the group (setsid, daemons) are found by it and killed.  skynet's
 *   secrets (SKYNET_*, TELEGRAM_BOT_TOKEN, *_API_KEY) cannot be allowed.
 *
 * Requirements on the rest of skynet: SIGCHLD must not be set to SIG_IGN (the
 * kernel would reap children itself and exit statuses would be lost), and a
 * thread must not exit while a run() it started is still going (the child's
 * PR_SET_PDEATHSIG fires when the forking thread ends, not the process). */
#include "exec.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../engine/buf.h"

#define LOCAL_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define LOCAL_TICK_MS 50          /* longest sleep between cancel checks */
#define LOCAL_DRAIN_MS 100        /* output read after the child exits */
#define LOCAL_GRACE_MS 2000
#define LOCAL_CAPTURE_MAX 65536
#define LOCAL_CHUNK 65536
#define LOCAL_READS_PER_WAKE 16   /* so a flood cannot starve the checks */
#define LOCAL_DEFAULT_CPU_S 3600
#define LOCAL_DEFAULT_AS_MB 8192
#define LOCAL_DEFAULT_NOFILE 4096
#define LOCAL_ENV_ALLOW_MAX 32
#define LOCAL_CHILD_STACK (64 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define LOCAL_USE_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOCAL_USE_FORK 1
#endif
#endif

enum { RL_CPU, RL_AS, RL_NOFILE, RL_NPROC, RL__COUNT };

static const struct {
  const char *opt;
  int resource;
  unsigned long long scale;
  unsigned long long dflt;      /* in the option's unit; 0 = none */
} local_rlimits[RL__COUNT] = {
  [RL_CPU] = {"rlimit_cpu_s", RLIMIT_CPU, 1, LOCAL_DEFAULT_CPU_S},
  [RL_AS] = {"rlimit_as_mb", RLIMIT_AS, 1024ULL * 1024, LOCAL_DEFAULT_AS_MB},
  [RL_NOFILE] = {"rlimit_nofile", RLIMIT_NOFILE, 1, LOCAL_DEFAULT_NOFILE},
  [RL_NPROC] = {"rlimit_nproc", RLIMIT_NPROC, 1, 0},
};

static atomic_uint local_run_seq;

struct local_inst {
  struct exec_instance base;
  char *env_path;               /* "PATH=..." */
  char *env_home;               /* "HOME=..." */
  char *workdir;                /* NULL → skynet's current directory */
  char *env_allow[LOCAL_ENV_ALLOW_MAX + 1];  /* names, NULL-terminated */
  int rl_set[RL__COUNT];
  int rl_default[RL__COUNT];    /* best effort: a failure to set is ignored */
  struct rlimit rl[RL__COUNT];
};

/* Why the child could not exec, sent on the report pipe. */
enum child_stage { CHILD_SETUP, CHILD_CHDIR, CHILD_EXEC };
struct child_report {
  int stage;
  int err;
};

/* What the child needs, all made before fork(). */
struct spawn {
  char *const *argv;
  char **envp;
  const char *path;             /* PATH value searched for argv[0] */
  char *pathbuf;                /* room for "dir/argv[0]" */
  const char *cwd;
  const struct local_inst *li;
  pid_t parent;
  int in_fd, out_fd, err_fd;    /* the child's ends */
};

/* The last bytes of the output: a struct buf that fills up to its max and
 * is then overwritten in a ring, pos marking the oldest byte. */
struct tail {
  struct buf b;
  size_t pos;
};

struct run_state {
  const struct exec_request *req;
  pid_t pid;
  char run_env[64];             /* "SKYNET_RUN_ID=<pid>-<n>": marks descendants */
  int pidfd;                    /* readable once the child exited; -1 if none */
  int out_fd;                   /* parent's ends, -1 once closed */
  int in_fd;
  size_t in_off;
  char *chunk;
  struct tail tail;
  size_t total;
  int nomem;
  int64_t start, deadline, kill_at, exited_at;
  int idle_ms;
  int grace_ms;
  int killing, killed, exited, done, reaped;
  int status_lost;              /* someone else reaped the child */
  int timed_out, cancelled;
  int status;
};

static int64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The backend reads its options itself so that it depends on the layout of
 * struct cfg_provider only, not on the config module's code. */
static const char *local_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static int parse_ull(const char *s, unsigned long long *out)
{
  char *end;

  if (!s || *s < '0' || *s > '9')
    return -1;
  errno = 0;
  *out = strtoull(s, &end, 10);
  return (errno || *end) ? -1 : 0;
}

static char *concat2(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  char *s = malloc(la + lb + 1);

  if (s) {
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
  }
  return s;
}

static struct local_inst *local_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_local);
  return (struct local_inst *)inst;
}

/* ---- instance ---------------------------------------------------------- */

/* A default never asks for more than skynet has: a lower hard limit
 * would make every command fail to start. */
static void local_default_rlimit(struct local_inst *li, int i)
{
  rlim_t v = (rlim_t)(local_rlimits[i].dflt * local_rlimits[i].scale);
  struct rlimit cur;

  if (!local_rlimits[i].dflt)
    return;
  if (getrlimit(local_rlimits[i].resource, &cur) == 0 &&
      cur.rlim_max != RLIM_INFINITY && cur.rlim_max < v)
    v = cur.rlim_max;
  li->rl[i].rlim_cur = li->rl[i].rlim_max = v;
  li->rl_set[i] = 1;
  li->rl_default[i] = 1;
}

static enum err local_read_rlimits(struct local_inst *li,
                                   const struct cfg_provider *p)
{
  unsigned long long v;
  const char *s;
  int i;

  for (i = 0; i < RL__COUNT; i++) {
    s = p ? local_opt(p, local_rlimits[i].opt) : NULL;
    if (!s) {
      local_default_rlimit(li, i);
      continue;
    }
    if (strcmp(s, "unlimited") == 0)
      continue;
    if (parse_ull(s, &v) < 0 || v == 0 ||
        v > (unsigned long long)RLIM_INFINITY / local_rlimits[i].scale)
      return ERR_CONFIG;
    li->rl[i].rlim_cur = li->rl[i].rlim_max =
        (rlim_t)(v * local_rlimits[i].scale);
    li->rl_set[i] = 1;
  }
  return ERR_OK;
}

/* Variables of skynet that hold its secrets. */
static int env_name_secret(const char *name, size_t len)
{
  static const char suffix[] = "_API_KEY";
  size_t sl = sizeof suffix - 1;

  return (len >= 7 && strncmp(name, "SKYNET_", 7) == 0) ||
         (len == 18 && strncmp(name, "TELEGRAM_BOT_TOKEN", 18) == 0) ||
         (len >= sl && strncmp(name + len - sl, suffix, sl) == 0);
}

/* env_allow: comma-separated variable names. */
static enum err local_read_env_allow(struct local_inst *li, const char *list)
{
  const char *p = list, *end;
  size_t n = 0, len, i;

  while (list && *p) {
    end = strchrnul(p, ',');
    while (p < end && *p == ' ')
      p++;
    len = (size_t)(end - p);
    while (len && p[len - 1] == ' ')
      len--;
    if (len) {
      if (n == LOCAL_ENV_ALLOW_MAX || env_name_secret(p, len) ||
          (p[0] >= '0' && p[0] <= '9'))
        return ERR_CONFIG;
      for (i = 0; i < len; i++)
        if (!(p[i] == '_' || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9')))
          return ERR_CONFIG;
      if (!(li->env_allow[n++] = strndup(p, len)))
        return ERR_NOMEM;
    }
    p = *end ? end + 1 : end;
  }
  return ERR_OK;
}

static void local_destroy(struct exec_instance *inst)
{
  struct local_inst *li;

  if (!inst)
    return;
  li = local_from(inst);
  for (size_t i = 0; li->env_allow[i]; i++)
    free(li->env_allow[i]);
  free(li->env_path);
  free(li->env_home);
  free(li->workdir);
  free(li);
}

static enum err local_create(const struct cfg *cfg,
                             const struct cfg_provider *p,
                             struct exec_instance **out)
{
  const char *path, *home, *workdir;
  struct local_inst *li;
  enum err e = ERR_NOMEM;

  (void)cfg;
  *out = NULL;
  li = calloc(1, sizeof *li);
  if (!li)
    return ERR_NOMEM;
  li->base.backend = &exec_local;
  snprintf(li->base.name, sizeof li->base.name, "%s",
           p && p->name ? p->name : "local");
  path = p ? local_opt(p, "path") : NULL;
  home = p ? local_opt(p, "home") : NULL;
  workdir = p ? local_opt(p, "workdir") : NULL;
  if (!home)
    home = getenv("HOME");
  li->env_path = concat2("PATH=", path && *path ? path : LOCAL_DEFAULT_PATH);
  li->env_home = concat2("HOME=", home && *home ? home : "/");
  li->workdir = workdir && *workdir ? strdup(workdir) : NULL;
  if (!li->env_path || !li->env_home || (workdir && *workdir && !li->workdir))
    goto out;
  e = local_read_rlimits(li, p);
  if (!e && p)
    e = local_read_env_allow(li, local_opt(p, "env_allow"));
out:
  if (e)
    local_destroy(&li->base);
  else
    *out = &li->base;
  return e;
}

static enum err local_health(struct exec_instance *inst,
                             struct exec_health *out)
{
  double load[1] = {0};

  (void)local_from(inst);
  if (getloadavg(load, 1) < 1)
    load[0] = -1;
  out->ok = 1;
  snprintf(out->detail, sizeof out->detail, "local: pid %ld, load %.2f",
           (long)getpid(), load[0]);
  return ERR_OK;
}

/* ---- environment ------------------------------------------------------- */

/* Adds NAME=VALUE, replacing an entry of the same name. */
static int env_set(char **envp, size_t *n, const char *entry)
{
  const char *eq = strchr(entry, '=');
  size_t i, len;

  if (!eq || eq == entry)
    return -1;
  len = (size_t)(eq - entry) + 1;
  for (i = 0; i < *n; i++)
    if (strncmp(envp[i], entry, len) == 0)
      break;
  envp[i] = (char *)entry;
  if (i == *n)
    (*n)++;
  return 0;
}

/* The scrubbed environment: nothing of skynet's own (tokens, keys) leaks to
 * commands; the strings stay owned by the instance and the request. */
/* skynet's own "NAME=value" entry, or NULL; environ is only read (skynet
 * does not change its environment once threads run). */
static char *env_entry_of(const char *name)
{
  extern char **environ;
  size_t len = strlen(name);

  for (char **e = environ; e && *e; e++)
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
      return *e;
  return NULL;
}

/* The scrubbed environment: nothing of skynet's own (tokens, keys) leaks to
 * commands; the strings stay owned by the instance, environ and the
 * request. */
static enum err env_build(const struct local_inst *li,
                          const struct exec_request *req, const char *run_env,
                          char ***out, struct exec_result *res)
{
  static const char *const fixed[] = {"LANG=C.UTF-8", "TERM=dumb"};
  size_t n = 0, extra = 0, i;
  char **envp, *entry;

  while (req->env && req->env[extra])
    extra++;
  envp = calloc(5 + LOCAL_ENV_ALLOW_MAX + extra + 1, sizeof *envp);
  if (!envp)
    return ERR_NOMEM;
  env_set(envp, &n, li->env_path);
  env_set(envp, &n, li->env_home);
  env_set(envp, &n, fixed[0]);
  env_set(envp, &n, fixed[1]);
  for (i = 0; li->env_allow[i]; i++)
    if ((entry = env_entry_of(li->env_allow[i])))
      env_set(envp, &n, entry);
  for (i = 0; i < extra; i++) {
    if (env_set(envp, &n, req->env[i]) < 0) {
      snprintf(res->error, sizeof res->error,
               "invalid environment entry '%.200s'", req->env[i]);
      free(envp);
      return ERR_INVAL;
    }
  }
  env_set(envp, &n, run_env);   /* last: the request cannot hide from it */
  *out = envp;
  return ERR_OK;
}

static const char *env_path_of(char **envp)
{
  for (; *envp; envp++)
    if (strncmp(*envp, "PATH=", 5) == 0)
      return *envp + 5;
  return "";
}

/* ---- the child (async-signal-safe calls only) -------------------------- */

static _Noreturn void child_fail(int fd, int stage, int err)
{
  struct child_report rep = {stage, err};
  ssize_t w;

  do
    w = write(fd, &rep, sizeof rep);
  while (w < 0 && errno == EINTR);
  _exit(127);
}

/* skynet may block or ignore signals (SIGPIPE, SIGTERM in a signal thread);
 * both survive exec and would make commands deaf to our TERM. */
static void child_reset_signals(void)
{
  struct sigaction sa;
  sigset_t none;
  int sig;

  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (sig = 1; sig < NSIG; sig++)
    sigaction(sig, &sa, NULL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

static void child_close_range(unsigned lo, unsigned hi)
{
  struct rlimit rl;
  unsigned fd;

  if (lo > hi || close_range(lo, hi, 0) == 0)
    return;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur > 1u << 20)
    rl.rlim_cur = 1u << 20;
  for (fd = lo; fd <= hi && fd < rl.rlim_cur; fd++)
    close((int)fd);
}

/* Puts stdin/stdout/stderr in place and closes every other fd but the
 * report pipe, whose new number is returned.  Sources are first moved to
 * fds >= 3 in case skynet runs with 0..2 closed. */
static int child_setup_fds(const struct spawn *sp)
{
  int in = fcntl(sp->in_fd, F_DUPFD, 3);
  int out = fcntl(sp->out_fd, F_DUPFD, 3);
  int rep = fcntl(sp->err_fd, F_DUPFD_CLOEXEC, 3);

  if (in < 0 || out < 0 || rep < 0)
    return -1;
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
    return -1;
  if (rep > 3)
    child_close_range(3, (unsigned)rep - 1);
  child_close_range((unsigned)rep + 1, ~0U);
  return rep;
}

/* PATH search like execvp(), but over the scrubbed PATH and without a
 * shell fallback for ENOEXEC.  Empty PATH elements (the current
 * directory) are skipped on purpose.  Returns the errno to report. */
static int child_exec(const struct spawn *sp)
{
  const char *name = sp->argv[0], *dir = sp->path, *end;
  size_t nlen = strlen(name), dlen;
  int err = ENOENT;

  if (strchr(name, '/')) {
    execve(name, sp->argv, sp->envp);
    return errno;
  }
  for (; *dir; dir = *end ? end + 1 : end) {
    end = strchrnul(dir, ':');
    dlen = (size_t)(end - dir);
    if (!dlen)
      continue;
    memcpy(sp->pathbuf, dir, dlen);
    sp->pathbuf[dlen] = '/';
    memcpy(sp->pathbuf + dlen + 1, name, nlen + 1);
    execve(sp->pathbuf, sp->argv, sp->envp);
    if (errno == EACCES)
      err = EACCES;
    else if (errno != ENOENT && errno != ENOTDIR)
      return errno;
  }
  return err;
}

static _Noreturn void child_main(const struct spawn *sp)
{
  int rep = sp->err_fd, i;

  setpgid(0, 0);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
    child_fail(rep, CHILD_SETUP, errno);
  if (getppid() != sp->parent)   /* skynet died before prctl() */
    _exit(127);
  child_reset_signals();
  rep = child_setup_fds(sp);
  if (rep < 0)
    child_fail(sp->err_fd, CHILD_SETUP, errno);
  for (i = 0; i < RL__COUNT; i++)
    if (sp->li->rl_set[i] &&
        setrlimit(local_rlimits[i].resource, &sp->li->rl[i]) < 0 &&
        !sp->li->rl_default[i])
      child_fail(rep, CHILD_SETUP, errno);
  if (sp->cwd && chdir(sp->cwd) < 0)
    child_fail(rep, CHILD_CHDIR, errno);
  child_fail(rep, CHILD_EXEC, child_exec(sp));
}

/* ---- starting ---------------------------------------------------------- */

static void close_fd(int *fd)
{
  if (*fd >= 0)
    close(*fd);
  *fd = -1;
}

static enum err spawn_report(const struct spawn *sp,
                             const struct child_report *rep,
                             struct exec_result *res)
{
  char msg[128];
  const char *why = strerror_r(rep->err, msg, sizeof msg);
  const char *name = sp->argv[0];

  res->exit_code = rep->err == ENOENT ? 127 : 126;
  if (rep->stage == CHILD_CHDIR) {
    snprintf(res->error, sizeof res->error,
             "cannot change directory to '%.180s': %s", sp->cwd, why);
    return rep->err == ENOENT ? ERR_NOTFOUND : ERR_IO;
  }
  snprintf(res->error, sizeof res->error, "cannot %s '%.180s': %s",
           rep->stage == CHILD_EXEC ? "run" : "set up", name, why);
  if (rep->stage == CHILD_EXEC && rep->err == ENOENT)
    return ERR_NOTFOUND;
  return rep->stage == CHILD_EXEC && rep->err == EACCES ? ERR_DENIED : ERR_IO;
}

/* Blocks until the child has exec'd (EOF on the report pipe) or says why
 * it could not; in that case the child is reaped here. */
static enum err spawn_wait_exec(struct run_state *st, const struct spawn *sp,
                                int rep_fd, struct exec_result *res)
{
  struct child_report rep;
  ssize_t n;

  do
    n = read(rep_fd, &rep, sizeof rep);
  while (n < 0 && errno == EINTR);
  if (n == 0)
    return ERR_OK;
  while (waitpid(st->pid, &st->status, 0) < 0 && errno == EINTR)
    ;
  st->reaped = 1;
  if (n != (ssize_t)sizeof rep) {
    snprintf(res->error, sizeof res->error, "cannot run '%.180s': %s",
             sp->argv[0], "lost track of the child");
    return ERR_IO;
  }
  return spawn_report(sp, &rep, res);
}

static int set_nonblock(int fd)
{
  int fl = fcntl(fd, F_GETFL);

  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Only the parent's ends are non-blocking: commands expect ordinary
 * blocking stdio. */
static enum err spawn_pipes(struct run_state *st, struct spawn *sp,
                            int *rep_r)
{
  int out[2], rep[2], in[2] = {-1, -1};
  const struct exec_request *req = st->req;

  if (pipe2(out, O_CLOEXEC) < 0)
    return ERR_IO;
  st->out_fd = out[0];
  sp->out_fd = out[1];
  if (set_nonblock(st->out_fd) < 0)
    return ERR_IO;
  if (pipe2(rep, O_CLOEXEC) < 0)
    return ERR_IO;
  *rep_r = rep[0];
  sp->err_fd = rep[1];
  if (req->stdin_data && req->stdin_len) {
    if (pipe2(in, O_CLOEXEC) < 0)
      return ERR_IO;
    st->in_fd = in[1];
    sp->in_fd = in[0];
    if (set_nonblock(st->in_fd) < 0)
      return ERR_IO;
  } else {
    sp->in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (sp->in_fd < 0)
      return ERR_IO;
  }
  return ERR_OK;
}

static enum err spawn_prepare(const struct local_inst *li,
                              const struct run_state *st,
                              struct spawn *sp, struct exec_result *res)
{
  const struct exec_request *req = st->req;
  enum err e;

  sp->li = li;
  sp->argv = (char *const *)req->argv;
  sp->cwd = req->cwd ? req->cwd : li->workdir;
  sp->parent = getpid();
  e = env_build(li, req, st->run_env, &sp->envp, res);
  if (e)
    return e;
  sp->path = env_path_of(sp->envp);
  sp->pathbuf = malloc(strlen(sp->path) + strlen(req->argv[0]) + 2);
  return sp->pathbuf ? ERR_OK : ERR_NOMEM;
}

#ifndef LOCAL_USE_FORK
static int child_entry(void *arg)
{
  child_main(arg);
}
#endif

/* The child's pid, or -1 with errno. */
static pid_t spawn_child(struct spawn *sp)
{
#ifdef LOCAL_USE_FORK
  pid_t pid = fork();

  if (pid == 0)
    child_main(sp);
  return pid;
#else
  sigset_t all, old;
  char *stack;
  pid_t pid;
  int saved;

  stack = mmap(NULL, LOCAL_CHILD_STACK, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED)
    return -1;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid = clone(child_entry, stack + LOCAL_CHILD_STACK,
              CLONE_VM | CLONE_VFORK | SIGCHLD, sp);
  saved = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, LOCAL_CHILD_STACK);   /* the child has exec'd or exited */
  errno = saved;
  return pid;
#endif
}

static enum err local_spawn(const struct local_inst *li, struct run_state *st,
                            struct exec_result *res)
{
  struct spawn sp = {.in_fd = -1, .out_fd = -1, .err_fd = -1};
  int rep_r = -1;
  enum err e;

  e = spawn_prepare(li, st, &sp, res);
  if (!e)
    e = spawn_pipes(st, &sp, &rep_r);
  if (e)
    goto out;
  st->pid = spawn_child(&sp);
  if (st->pid < 0) {
    e = ERR_IO;
    goto out;
  }
  setpgid(st->pid, st->pid);  /* either side may win the race; both agree */
#ifdef SYS_pidfd_open
  st->pidfd = (int)syscall(SYS_pidfd_open, st->pid, 0);
  if (st->pidfd >= 0)
    fcntl(st->pidfd, F_SETFD, FD_CLOEXEC);
#endif
  close_fd(&sp.err_fd);       /* else the report read never sees EOF */
  e = spawn_wait_exec(st, &sp, rep_r, res);
out:
  if (e && !res->error[0]) {
    char msg[128];

    /* every call that can fail above (malloc, pipe2, open, fork) set errno */
    snprintf(res->error, sizeof res->error, "cannot start '%.180s': %s",
             st->req->argv[0], strerror_r(errno, msg, sizeof msg));
  }
  close_fd(&sp.in_fd);
  close_fd(&sp.out_fd);
  close_fd(&sp.err_fd);
  close_fd(&rep_r);
  free(sp.envp);
  free(sp.pathbuf);
  return e;
}

/* ---- output tail ------------------------------------------------------- */

static enum err tail_push(struct tail *t, const char *p, size_t n)
{
  size_t max = t->b.max, room, k;
  enum err e;

  if (n >= max) {
    buf_clear(&t->b);
    t->pos = 0;
    return buf_append(&t->b, p + (n - max), max);
  }
  room = max - t->b.len;
  if (room) {
    k = n < room ? n : room;
    e = buf_append(&t->b, p, k);
    if (e)
      return e;
    p += k;
    n -= k;
  }
  while (n) {
    k = n < max - t->pos ? n : max - t->pos;
    memcpy(t->b.data + t->pos, p, k);
    t->pos = (t->pos + k) % max;
    p += k;
    n -= k;
  }
  return ERR_OK;
}

static void reverse(char *s, size_t n)
{
  size_t i;
  char c;

  for (i = 0; i < n / 2; i++) {
    c = s[i];
    s[i] = s[n - 1 - i];
    s[n - 1 - i] = c;
  }
}

/* Puts the ring in order (a rotation by three reversals, no allocation)
 * and hands the text out. */
static char *tail_detach(struct tail *t, size_t *len)
{
  char *d = t->b.data;

  if (t->pos) {
    reverse(d, t->pos);
    reverse(d + t->pos, t->b.len - t->pos);
    reverse(d, t->b.len);
    t->pos = 0;
  }
  *len = t->b.len;
  return buf_detach(&t->b);
}

/* ---- the watch loop ---------------------------------------------------- */

/* Writing into a pipe whose reader has gone raises SIGPIPE, which would
 * kill skynet: block it for this thread around the write and swallow the
 * one the write raised, unless one was pending already. */
static ssize_t write_nosigpipe(int fd, const void *p, size_t n)
{
  static const struct timespec zero = {0, 0};
  sigset_t set, old, pending;
  int was_pending, saved;
  ssize_t w;

  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigpending(&pending);
  was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  w = write(fd, p, n);
  saved = errno;
  if (w < 0 && saved == EPIPE && !was_pending)
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
      ;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = saved;
  return w;
}

static void run_write(struct run_state *st)
{
  const struct exec_request *req = st->req;
  ssize_t w;

  w = write_nosigpipe(st->in_fd, req->stdin_data + st->in_off,
                      req->stdin_len - st->in_off);
  if (w > 0)
    st->in_off += (size_t)w;
  if (st->in_off == req->stdin_len ||
      (w < 0 && errno != EAGAIN && errno != EINTR))
    close_fd(&st->in_fd);  /* done, or the command will not read (EPIPE) */
}

static void run_got(struct run_state *st, const char *p, size_t n)
{
  st->total += n;
  if (tail_push(&st->tail, p, n))
    st->nomem = 1;
  if (st->req->on_output)
    st->req->on_output(st->req->ud, p, n);
}

static void run_read(struct run_state *st)
{
  ssize_t n;
  int i;

  for (i = 0; i < LOCAL_READS_PER_WAKE; i++) {
    n = read(st->out_fd, st->chunk, LOCAL_CHUNK);
    if (n > 0) {
      run_got(st, st->chunk, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || errno != EAGAIN)
      close_fd(&st->out_fd);
    return;
  }
}

static void run_start_kill(struct run_state *st, int64_t now)
{
  kill(-st->pid, SIGTERM);
  st->killing = 1;
  st->kill_at = now + st->grace_ms;
}

/* Cancel and timeout only matter while the leader runs; once it exited the
 * result is settled and the group is killed anyway. */
static void run_check_stop(struct run_state *st, int64_t now)
{
  atomic_int *cancel = st->req->cancel;

  if (st->exited)
    return;
  if (!st->killing) {
    if (cancel && atomic_load(cancel)) {
      st->cancelled = 1;
      run_start_kill(st, now);
    } else if (st->deadline && now >= st->deadline) {
      st->timed_out = 1;
      run_start_kill(st, now);
    }
  } else if (!st->killed && now >= st->kill_at) {
    kill(-st->pid, SIGKILL);
    st->killed = 1;
  }
}

/* Notices the leader's exit without reaping it (WNOWAIT), so its pgid stays
 * ours until the group has been killed.  A background grandchild may hold
 * the pipe open for ever: after the exit, output is read for at most
 * LOCAL_DRAIN_MS more. */
static void run_check_exit(struct run_state *st, int64_t now)
{
  siginfo_t si;
  int r;

  if (!st->exited) {
    memset(&si, 0, sizeof si);
    r = waitid(P_PID, (id_t)st->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if ((r == 0 && si.si_pid == st->pid) || (r < 0 && errno == ECHILD)) {
      st->status_lost = r < 0;
      st->exited = 1;
      st->exited_at = now;
    }
  }
  if (st->exited && (st->out_fd < 0 || now >= st->exited_at + LOCAL_DRAIN_MS))
    st->done = 1;
}

static int64_t min64(int64_t a, int64_t b)
{
  return a < b ? a : b;
}

static int run_wait_ms(struct run_state *st, int64_t now)
{
  int64_t ms = LOCAL_TICK_MS;

  if (st->out_fd < 0 && !st->exited && st->pidfd < 0) {
    /* no fd to wake us: poll the child's state, backing off */
    st->idle_ms = st->idle_ms ? st->idle_ms * 2 : 1;
    if (st->idle_ms > LOCAL_TICK_MS)
      st->idle_ms = LOCAL_TICK_MS;
    ms = min64(ms, st->idle_ms);
  }
  if (st->deadline && !st->killing)
    ms = min64(ms, st->deadline - now);
  if (st->killing && !st->killed)
    ms = min64(ms, st->kill_at - now);
  if (st->exited)
    ms = min64(ms, st->exited_at + LOCAL_DRAIN_MS - now);
  return ms < 0 ? 0 : (int)ms;
}

static void run_poll(struct run_state *st, int ms)
{
  struct pollfd pfd[3];
  int n = 0, out_i = -1, in_i = -1;

  if (st->pidfd >= 0 && !st->exited)   /* readable at the exit: run_check_exit */
    pfd[n++] = (struct pollfd){.fd = st->pidfd, .events = POLLIN};

  if (st->out_fd >= 0) {
    pfd[n] = (struct pollfd){.fd = st->out_fd, .events = POLLIN};
    out_i = n++;
  }
  if (st->in_fd >= 0) {
    pfd[n] = (struct pollfd){.fd = st->in_fd, .events = POLLOUT};
    in_i = n++;
  }
  if (poll(pfd, (nfds_t)n, ms) <= 0)
    return;
  if (in_i >= 0 && pfd[in_i].revents)
    run_write(st);
  if (out_i >= 0 && pfd[out_i].revents)
    run_read(st);
}

static void run_loop(struct run_state *st)
{
  int64_t now;

  for (;;) {
    now = now_ms();
    run_check_stop(st, now);
    run_check_exit(st, now);
    if (st->done)
      return;
    run_poll(st, run_wait_ms(st, now));
  }
}

/* No grandchild left in the group may outlive the command; only then is
 * the leader reaped. */
/* Whether /proc/<pid>/environ holds the entry want (NUL-delimited). */
static int proc_env_has(const char *pid, const char *want, char *buf, size_t size)
{
  char path[300];
  size_t len = strlen(want) + 1, got = 0;
  ssize_t n;
  int fd, hit = 0;

  snprintf(path, sizeof path, "/proc/%s/environ", pid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return 0;
  while (got < size && (n = read(fd, buf + got, size - got)) > 0)
    got += (size_t)n;
  close(fd);
  for (size_t i = 0; !hit && i + len <= got; i++)
    hit = (i == 0 || buf[i - 1] == '\0') && memcmp(buf + i, want, len) == 0;
  return hit;
}

/* A command that timed out or was cancelled may have left descendants
 * outside its process group (setsid, daemonising).  They still carry the
 * run's SKYNET_RUN_ID in their environment: find and kill them, a few
 * rounds in case one forked meanwhile.  Best effort: a process that wiped
 * its environment is not found. */
static void run_kill_escaped(const struct run_state *st)
{
  char *buf = malloc(LOCAL_CHUNK);
  struct dirent *d;
  DIR *dir;
  int found = 1;

  for (int round = 0; buf && found && round < 3; round++) {
    found = 0;
    if (!(dir = opendir("/proc")))
      break;
    while ((d = readdir(dir))) {
      long pid = strtol(d->d_name, NULL, 10);
      if (pid <= 0 || pid == (long)getpid())
        continue;
      if (proc_env_has(d->d_name, st->run_env, buf, LOCAL_CHUNK)) {
        kill((pid_t)pid, SIGKILL);
        found = 1;
      }
    }
    closedir(dir);
  }
  free(buf);
}

static void run_reap(struct run_state *st)
{
  pid_t r;

  kill(-st->pid, SIGKILL);
  if (st->timed_out || st->cancelled)
    run_kill_escaped(st);
  do
    r = waitpid(st->pid, &st->status, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    st->status_lost = 1;
  st->reaped = 1;
}

static enum err run_outcome(const struct run_state *st,
                            struct exec_result *res)
{
  if (st->status_lost) {
    res->exit_code = -1;
    snprintf(res->error, sizeof res->error,
             "exit status lost: is SIGCHLD ignored?");
  } else if (WIFEXITED(st->status)) {
    res->exit_code = WEXITSTATUS(st->status);
  } else if (WIFSIGNALED(st->status)) {
    res->term_signal = WTERMSIG(st->status);
    res->exit_code = 128 + res->term_signal;
  }
  res->timed_out = st->timed_out;
  res->cancelled = st->cancelled;
  if (st->nomem)
    snprintf(res->error, sizeof res->error,
             "output dropped: %s", err_str(ERR_NOMEM));
  if (st->cancelled)
    return ERR_CANCELLED;
  return st->timed_out ? ERR_TIMEOUT : ERR_OK;
}

/* ---- run --------------------------------------------------------------- */

static enum err run_init(struct run_state *st, const struct exec_request *req,
                         struct exec_result *res)
{
  memset(st, 0, sizeof *st);
  st->req = req;
  st->pid = -1;
  st->pidfd = st->out_fd = st->in_fd = -1;
  snprintf(st->run_env, sizeof st->run_env, "SKYNET_RUN_ID=%ld-%u", (long)getpid(),
           atomic_fetch_add(&local_run_seq, 1));
  st->start = now_ms();
  st->grace_ms = req->grace_ms > 0 ? req->grace_ms : LOCAL_GRACE_MS;
  if (req->timeout_ms > 0)
    st->deadline = st->start + req->timeout_ms;
  buf_init(&st->tail.b, req->capture_max ? req->capture_max
                                         : LOCAL_CAPTURE_MAX);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  st->chunk = malloc(LOCAL_CHUNK);
  return st->chunk ? ERR_OK : ERR_NOMEM;
}

static void run_finish(struct run_state *st, struct exec_result *res)
{
  close_fd(&st->pidfd);
  close_fd(&st->out_fd);
  close_fd(&st->in_fd);
  free(st->chunk);
  res->output = tail_detach(&st->tail, &res->output_len);
  res->output_total = st->total;
  res->truncated = st->total > res->output_len;
  res->duration_ms = (long)(now_ms() - st->start);
}

static enum err local_run(struct exec_instance *inst,
                          const struct exec_request *req,
                          struct exec_result *res)
{
  const struct local_inst *li = local_from(inst);
  struct run_state st;
  enum err e;

  memset(res, 0, sizeof *res);
  e = run_init(&st, req, res);
  if (e)
    goto out;
  if (req->cancel && atomic_load(req->cancel)) {
    res->cancelled = 1;
    e = ERR_CANCELLED;
    goto out;
  }
  e = local_spawn(li, &st, res);
  if (e)
    goto out;
  run_loop(&st);
  run_reap(&st);
  e = run_outcome(&st, res);
out:
  run_finish(&st, res);
  return e;
}

const struct exec_backend exec_local = {
  .name = "local",
  .create = local_create,
  .run = local_run,
  .health = local_health,
  .destroy = local_destroy,
};
