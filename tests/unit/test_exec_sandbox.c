/* tests/unit/test_exec_sandbox.c — the bubblewrap sandbox backend against
 * the real bwrap.  When bwrap cannot make namespaces here the program says
 * so and skips, unless CI=true, where that is a failure. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "providers/exec/exec.h"
#include "tests/harness.h"
#include "tests/testutil.h"

static struct exec_instance *make_inst(const char *name, struct cfg_kv *opts,
                                       size_t n_opts)
{
  struct cfg_provider p = {(char *)name, "sandbox", opts, n_opts};
  struct exec_instance *inst = NULL;

  if (exec_sandbox.create(NULL, &p, &inst) != ERR_OK)
    return NULL;
  return inst;
}

static char ws[64];
static struct exec_instance *sb;

static enum err run_in(struct exec_instance *inst, const char *const *argv,
                       int timeout_ms, struct exec_result *res)
{
  struct exec_request req = {.argv = argv, .timeout_ms = timeout_ms,
                             .grace_ms = 300};

  return inst->backend->run(inst, &req, res);
}


static void wait_gone(const char *token)
{
  int i;

  for (i = 0; i < 50 && tu_count_procs(token); i++)
    usleep(50 * 1000);
}

TEST(runs_and_captures)
{
  const char *argv[] = {"sh", "-c", "echo hello; exit 3", NULL};
  struct exec_result res;

  ASSERT_EQ(run_in(sb, argv, 10000, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 3);
  ASSERT_STREQ(res.output, "hello\n");
  exec_result_release(&res);
}

TEST(workspace_writable_and_default_cwd)
{
  const char *argv[] = {"sh", "-c", "pwd; echo data > f.txt && cat f.txt",
                        NULL};
  char expect[128], path[128];
  struct exec_result res;
  struct stat st;

  ASSERT_EQ(run_in(sb, argv, 10000, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  snprintf(expect, sizeof expect, "%s\ndata\n", ws);
  ASSERT_STREQ(res.output, expect);
  snprintf(path, sizeof path, "%s/f.txt", ws);
  ASSERT_EQ(stat(path, &st), 0);   /* the workspace is the host's dir */
  exec_result_release(&res);
}

TEST(write_outside_workspace_fails)
{
  char script[512];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_result res;
  struct stat st;

  /* /etc is read-only; /tmp is private, so the host's /tmp stays clean */
  snprintf(script, sizeof script,
           "touch /etc/skynet-sb-%ld && exit 0; "
           "touch /tmp/skynet-sb-%ld || exit 9; exit 2",
           (long)getpid(), (long)getpid());
  ASSERT_EQ(run_in(sb, argv, 10000, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 2);
  ASSERT_CONTAINS(res.output, "Read-only");
  snprintf(script, sizeof script, "/tmp/skynet-sb-%ld", (long)getpid());
  ASSERT(stat(script, &st) < 0);
  exec_result_release(&res);
}

static int listen_local(int *port)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      listen(fd, 4) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    return -1;
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(network_denied_unless_allowed)
{
  struct cfg_kv opt = {"network", "true"};
  struct exec_instance *net = make_inst("sbnet", &opt, 1);
  char script[128];
  const char *argv[] = {"bash", "-c", script, NULL};
  struct exec_result res;
  int port = 0, fd = listen_local(&port);

  ASSERT(fd >= 0 && net);
  snprintf(script, sizeof script,
           "exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", port);
  ASSERT_EQ(run_in(sb, argv, 10000, &res), ERR_OK);
  ASSERT(res.exit_code != 0);
  ASSERT(!strstr(res.output, "connected"));
  exec_result_release(&res);
  /* the same attempt works with network: true, so the test can tell */
  ASSERT_EQ(run_in(net, argv, 10000, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_CONTAINS(res.output, "connected");
  exec_result_release(&res);
  exec_sandbox.destroy(net);
  close(fd);
}

/* The directories a request lists are writable, at their nearest existing
 * ancestor; nothing else is, and system directories never are. */
TEST(listed_directories_writable)
{
  char host[64], victim[128], other[128], deep[160], script[600];
  const char *writable[] = {host, deep, "/etc", NULL};
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000, .grace_ms = 300,
                             .writable = writable};
  struct exec_result res;
  struct stat st;

  snprintf(host, sizeof host, "/tmp/skynet-sbhost-XXXXXX");
  ASSERT(mkdtemp(host));
  snprintf(victim, sizeof victim, "%s/victim", host);
  ASSERT_EQ(mkdir(victim, 0700), 0);
  snprintf(other, sizeof other, "/tmp/skynet-sbother-%ld", (long)getpid());
  snprintf(deep, sizeof deep, "%s/not/yet", host);   /* bound at host */
  snprintf(script, sizeof script,
           "rm -rf -- %s && echo new > %s/made && "
           "{ touch /etc/skynet-sb-%ld 2>/dev/null && echo etc-written; } ; "
           "echo private > %s && cat %s",
           victim, host, (long)getpid(), other, other);
  ASSERT_EQ(exec_sandbox.run(sb, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT(!strstr(res.output, "etc-written"));
  ASSERT_CONTAINS(res.output, "private");   /* written in the private /tmp */
  exec_result_release(&res);
  ASSERT(stat(victim, &st) < 0);             /* the host saw the removal */
  snprintf(victim, sizeof victim, "%s/made", host);
  ASSERT_EQ(stat(victim, &st), 0);           /* and the new file */
  ASSERT(stat(other, &st) < 0);              /* but not the unlisted write */
  unlink(victim);
  rmdir(host);

  /* without the list the same removal stays inside */
  ASSERT(mkdtemp(strcpy(host, "/tmp/skynet-sbhost-XXXXXX")));
  snprintf(victim, sizeof victim, "%s/victim", host);
  ASSERT_EQ(mkdir(victim, 0700), 0);
  snprintf(script, sizeof script, "rm -rf -- %s", victim);
  req.writable = NULL;
  ASSERT_EQ(exec_sandbox.run(sb, &req, &res), ERR_OK);
  exec_result_release(&res);
  ASSERT_EQ(stat(victim, &st), 0);
  rmdir(victim);
  rmdir(host);
}

/* network: the default gives it to a step that needs it; false never. */
TEST(network_per_step)
{
  struct cfg_kv opt = {"network", "false"};
  struct exec_instance *never = make_inst("sbnever", &opt, 1), *perstep = make_inst("sbstep", NULL, 0);
  char script[128];
  const char *argv[] = {"bash", "-c", script, NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000, .grace_ms = 300, .network = 1};
  struct exec_result res;
  struct cfg_kv badopt = {"network", "sometimes"};
  int port = 0, fd = listen_local(&port);

  ASSERT(fd >= 0 && never && perstep);
  ASSERT(make_inst("sbbadnet", &badopt, 1) == NULL);
  snprintf(script, sizeof script, "exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", port);
  ASSERT_EQ(exec_sandbox.run(perstep, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_CONTAINS(res.output, "connected");
  exec_result_release(&res);
  ASSERT_EQ(exec_sandbox.run(never, &req, &res), ERR_OK);
  ASSERT(res.exit_code != 0);
  ASSERT(!strstr(res.output, "connected"));
  exec_result_release(&res);
  req.network = 0;
  ASSERT_EQ(exec_sandbox.run(perstep, &req, &res), ERR_OK);
  ASSERT(res.exit_code != 0);
  exec_result_release(&res);
  exec_sandbox.destroy(never);
  exec_sandbox.destroy(perstep);
  close(fd);
}

TEST(timeout_kills_everything)
{
  char token[32], script[256];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_result res;

  snprintf(token, sizeof token, "77%ld.25", (long)getpid());
  snprintf(script, sizeof script,
           "(setsid sleep %s &) ; sleep %s & trap '' TERM; sleep %s",
           token, token, token);
  ASSERT_EQ(run_in(sb, argv, 500, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.timed_out, 1);
  wait_gone(token);   /* the namespace is torn down asynchronously */
  ASSERT_EQ(tu_count_procs(token), 0);
  exec_result_release(&res);
}

static void *cancel_later(void *arg)
{
  usleep(500 * 1000);
  atomic_store((atomic_int *)arg, 1);
  return NULL;
}

TEST(cancel_kills_everything)
{
  char token[32], script[256];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_request req = {.argv = argv, .grace_ms = 300};
  struct exec_result res;
  atomic_int cancel = 0;
  pthread_t t;
  enum err e;

  snprintf(token, sizeof token, "78%ld.25", (long)getpid());
  snprintf(script, sizeof script, "echo started; sleep %s & sleep %s",
           token, token);
  req.cancel = &cancel;
  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &cancel), 0);
  e = exec_sandbox.run(sb, &req, &res);
  pthread_join(t, NULL);
  ASSERT_EQ(e, ERR_CANCELLED);
  ASSERT_CONTAINS(res.output, "started");
  exec_result_release(&res);
  wait_gone(token);
  ASSERT_EQ(tu_count_procs(token), 0);
}

TEST(per_run_workspace_removed)
{
  struct exec_instance *tmpws = make_inst("sbtmp", NULL, 0);
  const char *argv[] = {"sh", "-c", "pwd; touch x", NULL};
  struct exec_result res;
  struct stat st;
  char *nl;

  ASSERT(tmpws);
  ASSERT_EQ(run_in(tmpws, argv, 10000, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_CONTAINS(res.output, "/tmp/skynet-sandbox-");
  nl = strchr(res.output, '\n');
  if (nl)
    *nl = 0;
  ASSERT(stat(res.output, &st) < 0);
  exec_result_release(&res);
  exec_sandbox.destroy(tmpws);
}

TEST(health_reports_missing_bwrap)
{
  struct cfg_kv opt = {"bwrap", "/nonexistent/bwrap"};
  struct exec_instance *bad = make_inst("sbbad", &opt, 1);
  struct exec_health h;

  ASSERT(bad);
  ASSERT_EQ(exec_sandbox.health(bad, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  ASSERT_CONTAINS(h.detail, "bwrap missing");
  exec_sandbox.destroy(bad);
}

TEST(backend_in_table)
{
  ASSERT(exec_backend_find("sandbox") == &exec_sandbox);
}

int main(void)
{
  const char *ci = getenv("CI");
  struct cfg_kv opt = {"workspace", ws};
  struct exec_health h;

  snprintf(ws, sizeof ws, "/tmp/skynet-sbtest-XXXXXX");
  if (!mkdtemp(ws))
    return 1;
  sb = make_inst("sb", &opt, 1);
  if (!sb || exec_sandbox.health(sb, &h) != ERR_OK)
    return 1;
  RUN(health_reports_missing_bwrap);
  RUN(backend_in_table);
  if (!h.ok) {
    fprintf(stderr, "%s: %s\n", ci && strcmp(ci, "true") == 0 ? "FAIL" : "SKIP",
            h.detail);
    exec_sandbox.destroy(sb);
    if (ci && strcmp(ci, "true") == 0)
      return 1;
    return test_summary();
  }
  RUN(runs_and_captures);
  RUN(workspace_writable_and_default_cwd);
  RUN(write_outside_workspace_fails);
  RUN(network_denied_unless_allowed);
  RUN(network_per_step);
  RUN(listed_directories_writable);
  RUN(timeout_kills_everything);
  RUN(cancel_kills_everything);
  RUN(per_run_workspace_removed);
  exec_sandbox.destroy(sb);
  {
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ws);
    if (system(cmd) != 0)
      fprintf(stderr, "cannot remove %s\n", ws);
  }
  return test_summary();
}
