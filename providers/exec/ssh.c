/* providers/exec/ssh.c — the "ssh" execution backend: runs argv on a remote
 * host through the system OpenSSH client.
 *
 * DESIGN
 * - The ssh client is run by an inner instance of the local backend, which
 *   owns the client's process group, the command timeout, cancel and the
 *   bounded capture.  This file only builds command lines.
 * - The client never asks anything (BatchMode), reads no configuration file
 *   (-F none), and accepts only a host key listed in the instance's
 *   known_hosts file (StrictHostKeyChecking=yes).  Connections are reused
 *   through a ControlMaster socket in a private directory made at create().
 * - The remote argv (and cwd, and extra environment through env(1)) is
 *   quoted word by word for the remote POSIX shell and run under a small
 *   wrapper: "sh -c 'echo $$ > PIDFILE; "$@"; ...'".  sshd
 *   starts every session's shell as a session (and group) leader, so when
 *   the local side times out or is cancelled a second, short ssh kills that
 *   remote process group by the pid in PIDFILE: killing the client alone
 *   would leave the remote command running (no pty, no SIGHUP).
 * - Exit status 255 is the client's own failure (cannot connect, host key
 *   refused): run() returns ERR_NET with the client's message.
 *
 * Instance options: host (required), port (22), user, identity_file,
 * known_hosts, connect_timeout_s (10), ssh (the client, default "ssh"),
 * plus the local backend's options for the client process. */
#include "exec.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../engine/buf.h"

#define SSH_MAX_OPTS 40
#define SSH_KILL_TIMEOUT_MS 8000

struct ssh_inst {
  struct exec_instance base;
  struct exec_instance *inner;  /* a local instance that runs ssh */
  char *ssh, *host, *port, *user, *identity, *known_hosts;
  char ctl_dir[64];             /* private ControlPath directory */
  char opt_ctl[128];            /* "ControlPath=<dir>/%C" */
  char opt_known[1100];         /* "UserKnownHostsFile=..." */
  char opt_connect[48];         /* "ConnectTimeout=N" */
};

static atomic_uint ssh_run_seq;

static const char *ssh_opt(const struct cfg_provider *p, const char *key)
{
  size_t i;

  for (i = 0; p && i < p->n_opts; i++)
    if (p->opts[i].key && strcmp(p->opts[i].key, key) == 0)
      return p->opts[i].value;
  return NULL;
}

static struct ssh_inst *ssh_from(struct exec_instance *inst)
{
  assert(inst && inst->backend == &exec_ssh);
  return (struct ssh_inst *)inst;
}

static char *ssh_dup(const char *s)
{
  return s && *s ? strdup(s) : NULL;
}

/* ---- command lines ----------------------------------------------------- */

/* Fills v with the client and its options, up to and including the host;
 * returns how many.  ctl_cmd is NULL or an -O command ("exit"). */
static size_t ssh_base_argv(const struct ssh_inst *si, const char **v,
                            const char *ctl_cmd)
{
  size_t n = 0;

  v[n++] = si->ssh;
  v[n++] = "-F";
  v[n++] = "none";
  v[n++] = "-T";
  v[n++] = "-o";
  v[n++] = "BatchMode=yes";
  v[n++] = "-o";
  v[n++] = "StrictHostKeyChecking=yes";
  v[n++] = "-o";
  v[n++] = si->opt_known;
  v[n++] = "-o";
  v[n++] = si->opt_connect;
  v[n++] = "-o";
  v[n++] = "ControlMaster=auto";
  v[n++] = "-o";
  v[n++] = si->opt_ctl;
  v[n++] = "-o";
  v[n++] = "ControlPersist=60";
  v[n++] = "-o";
  v[n++] = "LogLevel=ERROR";
  v[n++] = "-p";
  v[n++] = si->port;
  if (si->identity) {
    v[n++] = "-i";
    v[n++] = si->identity;
    v[n++] = "-o";
    v[n++] = "IdentitiesOnly=yes";
  }
  if (si->user) {
    v[n++] = "-l";
    v[n++] = si->user;
  }
  if (ctl_cmd) {
    v[n++] = "-O";
    v[n++] = ctl_cmd;
  }
  v[n++] = "--";
  v[n++] = si->host;
  assert(n <= SSH_MAX_OPTS);
  return n;
}

/* Appends s quoted for a POSIX shell: '...' with ' written as '\''. */
static enum err ssh_quote(struct buf *b, const char *s)
{
  enum err e = buf_append(b, "'", 1);

  for (; !e && *s; s++)
    e = *s == '\'' ? buf_append(b, "'\\''", 4) : buf_append(b, s, 1);
  return e ? e : buf_append(b, "'", 1);
}

/* Appends " 'word'" for each word of v. */
static enum err ssh_quote_words(struct buf *b, const char *const *v)
{
  enum err e = ERR_OK;

  for (; !e && v && *v; v++) {
    e = buf_append(b, " ", 1);
    if (!e)
      e = ssh_quote(b, *v);
  }
  return e;
}

/* The remote command line: "cd" to the request's directory, the wrapper
 * that records the group's pid, then "env NAME=VALUE..." when the request
 * has extra environment, then argv, each word quoted. */
static enum err ssh_remote_command(const struct exec_request *req,
                                   const char *pidfile, struct buf *out)
{
  enum err e = ERR_OK;

  if (req->cwd) {
    e = buf_appends(out, "cd");
    if (!e)
      e = ssh_quote_words(out, (const char *const[]){req->cwd, NULL});
    if (!e)
      e = buf_appends(out, " || exit 126; ");
  }
  if (!e)
    e = buf_printf(out,
                   "exec sh -c 'echo $$ > %s; \"$@\"; rc=$?; rm -f %s; "
                   "exit $rc' skynet",
                   pidfile, pidfile);
  if (!e && req->env && req->env[0]) {
    e = buf_appends(out, " env");
    if (!e)
      e = ssh_quote_words(out, req->env);
  }
  return e ? e : ssh_quote_words(out, req->argv);
}

/* ---- instance ---------------------------------------------------------- */

static void ssh_destroy(struct exec_instance *inst)
{
  struct ssh_inst *si;

  if (!inst)
    return;
  si = ssh_from(inst);
  if (si->inner && si->ctl_dir[0]) {
    const char *v[SSH_MAX_OPTS + 1] = {0};
    struct exec_request req = {.argv = v, .timeout_ms = 3000};
    struct exec_result res;

    ssh_base_argv(si, v, "exit");
    exec_local.run(si->inner, &req, &res);
    exec_result_release(&res);
  }
  if (si->ctl_dir[0])
    rmdir(si->ctl_dir);   /* "-O exit" removed the socket */
  if (si->inner)
    exec_local.destroy(si->inner);
  free(si->ssh);
  free(si->host);
  free(si->port);
  free(si->user);
  free(si->identity);
  free(si->known_hosts);
  free(si);
}

static enum err ssh_read_opts(struct ssh_inst *si, const struct cfg_provider *p)
{
  const char *port = ssh_opt(p, "port"), *ct = ssh_opt(p, "connect_timeout_s");
  const char *kh = ssh_opt(p, "known_hosts");
  char *end;
  long v;

  si->ssh = strdup(ssh_opt(p, "ssh") ? ssh_opt(p, "ssh") : "ssh");
  si->host = ssh_dup(ssh_opt(p, "host"));
  si->port = strdup(port && *port ? port : "22");
  si->user = ssh_dup(ssh_opt(p, "user"));
  si->identity = ssh_dup(ssh_opt(p, "identity_file"));
  si->known_hosts = ssh_dup(kh);
  if (!si->ssh || !si->port)
    return ERR_NOMEM;
  if (!si->host || si->host[0] == '-')
    return ERR_CONFIG;
  errno = 0;
  v = strtol(si->port, &end, 10);
  if (errno || *end || v < 1 || v > 65535)
    return ERR_CONFIG;
  v = 10;
  if (ct && (errno = 0, v = strtol(ct, &end, 10), errno || *end || v < 1))
    return ERR_CONFIG;
  snprintf(si->opt_connect, sizeof si->opt_connect, "ConnectTimeout=%ld", v);
  if (snprintf(si->opt_known, sizeof si->opt_known, "UserKnownHostsFile=%s",
               kh && *kh ? kh : "/dev/null") >= (int)sizeof si->opt_known)
    return ERR_CONFIG;
  return ERR_OK;
}

static enum err ssh_create(const struct cfg *cfg, const struct cfg_provider *p,
                           struct exec_instance **out)
{
  struct ssh_inst *si;
  enum err e;

  *out = NULL;
  si = calloc(1, sizeof *si);
  if (!si)
    return ERR_NOMEM;
  si->base.backend = &exec_ssh;
  snprintf(si->base.name, sizeof si->base.name, "%s",
           p && p->name ? p->name : "ssh");
  e = ssh_read_opts(si, p);
  if (!e) {
    snprintf(si->ctl_dir, sizeof si->ctl_dir, "/tmp/skynet-ssh-XXXXXX");
    if (!mkdtemp(si->ctl_dir)) {
      si->ctl_dir[0] = 0;
      e = ERR_IO;
    }
  }
  if (!e) {
    snprintf(si->opt_ctl, sizeof si->opt_ctl, "ControlPath=%s/%%C",
             si->ctl_dir);
    e = exec_local.create(cfg, p, &si->inner);
  }
  if (e)
    ssh_destroy(&si->base);
  else
    *out = &si->base;
  return e;
}

/* ---- run --------------------------------------------------------------- */

/* Kills the remote process group recorded in pidfile: TERM, then KILL. */
static void ssh_kill_remote(struct ssh_inst *si, const char *pidfile)
{
  const char *v[SSH_MAX_OPTS + 2] = {0};
  struct exec_request req = {.argv = v, .timeout_ms = SSH_KILL_TIMEOUT_MS};
  struct exec_result res;
  char cmd[512];
  size_t n;

  snprintf(cmd, sizeof cmd,
           "p=$(cat %s 2>/dev/null) && [ -n \"$p\" ] && "
           "{ kill -TERM -- -$p; sleep 1; kill -KILL -- -$p; }; "
           "rm -f %s; true",
           pidfile, pidfile);
  n = ssh_base_argv(si, v, NULL);
  v[n] = cmd;
  exec_local.run(si->inner, &req, &res);
  exec_result_release(&res);
}

/* The client's own failure: its last line of output says why. */
static enum err ssh_client_failed(const struct ssh_inst *si,
                                  struct exec_result *res)
{
  const char *msg = res->output ? res->output : "";
  size_t len = res->output_len;

  while (len && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
    len--;
  snprintf(res->error, sizeof res->error, "ssh to '%.60s' port %.8s failed: %.*s",
           si->host, si->port, (int)(len > 150 ? 150 : len),
           len > 150 ? msg + len - 150 : msg);
  return ERR_NET;
}

static enum err ssh_run(struct exec_instance *inst,
                        const struct exec_request *req,
                        struct exec_result *res)
{
  struct ssh_inst *si = ssh_from(inst);
  const char *v[SSH_MAX_OPTS + 2] = {0};
  struct exec_request inner = *req;
  char pidfile[96];
  struct buf cmd;
  enum err e;
  size_t n;

  memset(res, 0, sizeof *res);
  if (!req->argv || !req->argv[0] || !req->argv[0][0]) {
    snprintf(res->error, sizeof res->error, "cannot run: empty command");
    return ERR_INVAL;
  }
  snprintf(pidfile, sizeof pidfile, "/tmp/skynet-ssh-%ld-%ld-%u.pid",
           (long)getpid(), (long)time(NULL),
           atomic_fetch_add(&ssh_run_seq, 1));
  buf_init(&cmd, 1 << 20);
  e = ssh_remote_command(req, pidfile, &cmd);
  if (e) {
    snprintf(res->error, sizeof res->error, "command too long for ssh");
    goto out;
  }
  n = ssh_base_argv(si, v, NULL);
  v[n] = buf_str(&cmd);
  inner.argv = v;
  inner.cwd = NULL;
  inner.env = NULL;   /* for the command, not the client (DOCKER_HOST, SSH_*) */
  e = exec_local.run(si->inner, &inner, res);
  if (e == ERR_TIMEOUT || e == ERR_CANCELLED)
    ssh_kill_remote(si, pidfile);
  else if (e == ERR_OK && res->exit_code == 255)
    e = ssh_client_failed(si, res);
out:
  buf_release(&cmd);
  return e;
}

/* A connection and "true" on the host, with the connect timeout. */
static enum err ssh_health(struct exec_instance *inst, struct exec_health *out)
{
  struct ssh_inst *si = ssh_from(inst);
  const char *v[SSH_MAX_OPTS + 2] = {0};
  struct exec_request req = {.argv = v, .timeout_ms = 15000,
                             .capture_max = 400};
  struct exec_result res;
  enum err e;
  size_t n;

  n = ssh_base_argv(si, v, NULL);
  v[n] = "true";
  e = exec_local.run(si->inner, &req, &res);
  if (e == ERR_OK && res.exit_code == 255)
    e = ssh_client_failed(si, &res);
  out->ok = e == ERR_OK && res.exit_code == 0;
  if (out->ok)
    snprintf(out->detail, sizeof out->detail, "ssh: %.60s port %.8s reachable",
             si->host, si->port);
  else
    snprintf(out->detail, sizeof out->detail, "ssh: %.200s",
             res.error[0] ? res.error : err_str(e));
  exec_result_release(&res);
  return ERR_OK;
}

const struct exec_backend exec_ssh = {
  .name = "ssh",
  .create = ssh_create,
  .run = ssh_run,
  .health = ssh_health,
  .destroy = ssh_destroy,
};
