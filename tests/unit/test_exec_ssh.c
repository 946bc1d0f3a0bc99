/* tests/unit/test_exec_ssh.c — the ssh backend against a real sshd that this
 * program starts on 127.0.0.1 with keys it generates in its own temp dir.
 * Without sshd or ssh-keygen it skips, unless CI=true, where that fails. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/archive.h"
#include "providers/exec/exec.h"
#include "tests/ledgerutil.h"
#include "tests/harness.h"
#include "tests/testutil.h"

#define SSHD "/usr/sbin/sshd"

static char dir[64], port_s[16], user[64], known[128], wrong_known[128],
    idfile[128];
static pid_t sshd_pid = -1;

static int sh(const char *fmt, const char *a)
{
  char cmd[1024];

  snprintf(cmd, sizeof cmd, fmt, a, a, a, a);
  return system(cmd);
}

static int free_port(void)
{
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

static int write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");

  if (!f)
    return -1;
  fputs(text, f);
  return fclose(f);
}

/* known_hosts line "[127.0.0.1]:PORT <pubkey>" from a .pub file. */
static int write_known(const char *out, const char *pub)
{
  char line[1024], text[1200];
  FILE *f = fopen(pub, "r");
  char *sp;

  if (!f || !fgets(line, sizeof line, f)) {
    if (f)
      fclose(f);
    return -1;
  }
  fclose(f);
  sp = strchr(line, ' ');
  sp = sp ? strchr(sp + 1, ' ') : NULL;   /* drop the comment */
  if (sp)
    *sp = 0;
  snprintf(text, sizeof text, "[127.0.0.1]:%s %s\n", port_s, line);
  return write_file(out, text);
}

static int start_sshd(void)
{
  char cfg[2048], path[128];
  int i;

  snprintf(cfg, sizeof cfg,
           "Port %s\nListenAddress 127.0.0.1\nHostKey %s/host\n"
           "AuthorizedKeysFile %s/user.pub\nPidFile %s/sshd.pid\n"
           "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
           "PermitRootLogin prohibit-password\nLogLevel ERROR\n",
           port_s, dir, dir, dir);
  snprintf(path, sizeof path, "%s/sshd_config", dir);
  if (write_file(path, cfg) < 0)
    return -1;
  mkdir("/run/sshd", 0755);   /* privilege separation dir, when root */
  sshd_pid = fork();
  if (sshd_pid == 0) {
    execl(SSHD, SSHD, "-D", "-e", "-f", path, (char *)NULL);
    _exit(127);
  }
  for (i = 0; i < 100; i++) {   /* wait until it listens */
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)strtol(port_s, NULL, 10));
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    if (ok)
      return 0;
    usleep(50 * 1000);
  }
  return -1;
}

static int setup(void)
{
  struct passwd *pw = getpwuid(getuid());

  if (!pw)
    return -1;
  snprintf(user, sizeof user, "%s", pw->pw_name);
  snprintf(dir, sizeof dir, "/tmp/skynet-sshtest-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(port_s, sizeof port_s, "%d", free_port());
  if (sh("ssh-keygen -q -t ed25519 -N '' -f %s/host && "
         "ssh-keygen -q -t ed25519 -N '' -f %s/user && "
         "ssh-keygen -q -t ed25519 -N '' -f %s/other",
         dir) != 0)
    return -1;
  snprintf(idfile, sizeof idfile, "%s/user", dir);
  snprintf(known, sizeof known, "%s/known_hosts", dir);
  snprintf(wrong_known, sizeof wrong_known, "%s/wrong_known_hosts", dir);
  {
    char pub[128];

    snprintf(pub, sizeof pub, "%s/host.pub", dir);
    if (write_known(known, pub) < 0)
      return -1;
    snprintf(pub, sizeof pub, "%s/other.pub", dir);
    if (write_known(wrong_known, pub) < 0)
      return -1;
  }
  return start_sshd();
}

static struct exec_instance *make_inst(const char *port, const char *kh)
{
  struct cfg_kv opts[] = {
    {"host", "127.0.0.1"}, {"port", (char *)port}, {"user", user},
    {"identity_file", idfile}, {"known_hosts", (char *)kh},
    {"connect_timeout_s", "5"},
  };
  struct cfg_provider p = {"box", "ssh", opts, 6};
  struct exec_instance *inst = NULL;

  if (exec_ssh.create(NULL, &p, &inst) != ERR_OK)
    return NULL;
  return inst;
}


static struct exec_instance *box;

TEST(echo_and_quoting)
{
  const char *argv[] = {"printf", "%s|", "it's", "a b", "$HOME", ";ls", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_result res;

  ASSERT_EQ(exec_ssh.run(box, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_STREQ(res.output, "it's|a b|$HOME|;ls|");
  exec_result_release(&res);
}

TEST(exit_code)
{
  const char *argv[] = {"sh", "-c", "echo out; exit 7", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_result res;

  ASSERT_EQ(exec_ssh.run(box, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 7);
  ASSERT_STREQ(res.output, "out\n");
  exec_result_release(&res);
}

TEST(cwd_env_and_stdin)
{
  const char *argv[] = {"sh", "-c", "pwd; echo \"$GREETING\"; cat", NULL};
  const char *env[] = {"GREETING=it's me", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000, .cwd = dir,
                             .env = env, .stdin_data = "from stdin\n",
                             .stdin_len = 11};
  struct exec_result res;
  char expect[256];

  ASSERT_EQ(exec_ssh.run(box, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  snprintf(expect, sizeof expect, "%s\nit's me\nfrom stdin\n", dir);
  ASSERT_STREQ(res.output, expect);
  exec_result_release(&res);
  req.cwd = "/nonexistent-dir";
  ASSERT_EQ(exec_ssh.run(box, &req, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 126);
  exec_result_release(&res);
}

TEST(timeout_kills_remote)
{
  char token[32];
  const char *argv[] = {"sleep", token, NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 1500,
                             .grace_ms = 200};
  struct exec_result res;
  int i;

  snprintf(token, sizeof token, "79%ld.5", (long)getpid());
  ASSERT_EQ(exec_ssh.run(box, &req, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.timed_out, 1);
  exec_result_release(&res);
  for (i = 0; i < 30 && tu_count_procs(token); i++)
    usleep(100 * 1000);
  ASSERT_EQ(tu_count_procs(token), 0);
}

static void *cancel_later(void *arg)
{
  usleep(1500 * 1000);
  atomic_store((atomic_int *)arg, 1);
  return NULL;
}

/* Cancel from another thread while the remote command runs. */
TEST(cancel_kills_remote)
{
  char script[96], token[32];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000,
                             .grace_ms = 200};
  struct exec_result res;
  atomic_int cancel = 0;
  pthread_t t;
  enum err e;
  int i;

  snprintf(token, sizeof token, "80%ld.5", (long)getpid());
  snprintf(script, sizeof script, "sleep %s & sleep %s", token, token);
  req.cancel = &cancel;
  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &cancel), 0);
  e = exec_ssh.run(box, &req, &res);
  pthread_join(t, NULL);
  ASSERT_EQ(e, ERR_CANCELLED);
  ASSERT(res.duration_ms >= 1400);
  exec_result_release(&res);
  for (i = 0; i < 30 && tu_count_procs(token); i++)
    usleep(100 * 1000);
  ASSERT_EQ(tu_count_procs(token), 0);
}

TEST(unreachable_port_fails_clearly)
{
  char port[16];
  struct exec_instance *bad;
  const char *argv[] = {"true", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_result res;
  struct exec_health h;

  snprintf(port, sizeof port, "%d", free_port());
  bad = make_inst(port, known);
  ASSERT(bad);
  ASSERT_EQ(exec_ssh.run(bad, &req, &res), ERR_NET);
  ASSERT_CONTAINS(res.error, "Connection refused");
  exec_result_release(&res);
  ASSERT_EQ(exec_ssh.health(bad, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  exec_ssh.destroy(bad);
}

TEST(wrong_host_key_refused)
{
  struct exec_instance *bad = make_inst(port_s, wrong_known);
  const char *argv[] = {"echo", "should-not-run", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_result res;

  ASSERT(bad);
  ASSERT_EQ(exec_ssh.run(bad, &req, &res), ERR_NET);
  ASSERT(!strstr(res.output, "should-not-run"));
  ASSERT_CONTAINS(res.error, "ost key");
  exec_result_release(&res);
  exec_ssh.destroy(bad);
}

TEST(health_ok)
{
  struct exec_health h;

  ASSERT_EQ(exec_ssh.health(box, &h), ERR_OK);
  ASSERT_EQ(h.ok, 1);
  ASSERT_CONTAINS(h.detail, "reachable");
}

TEST(config_errors)
{
  struct cfg_kv opts[] = {{"port", "22"}};
  struct cfg_provider p = {"x", "ssh", opts, 1};
  struct exec_instance *inst = NULL;

  ASSERT_EQ(exec_ssh.create(NULL, &p, &inst), ERR_CONFIG);  /* no host */
  ASSERT(exec_backend_find("ssh") == &exec_ssh);
}

/* An artifact on the remote host is read through the connection, stored by
 * content and recorded; one over the limit or missing is refused, saying so. */
TEST(artifact_fetched_from_remote)
{
  char home[128], url[200], file[128], why[512], *stored;
  unsigned char bin[3000];
  struct artifact a, *list;
  struct ledger *l;
  size_t n;
  int64_t job;
  FILE *f;

  snprintf(home, sizeof home, "%s/home", dir);
  snprintf(url, sizeof url, "sqlite://%s/a.db", dir);
  ASSERT_EQ(mkdir(home, 0700), 0);
  ASSERT((l = tu_ledger_open(url)) != NULL);
  ASSERT((job = tu_enqueue(l, "{\"steps\":[{\"action\":\"uptime\"}]}")) > 0);
  for (size_t i = 0; i < sizeof bin; i++)
    bin[i] = (unsigned char)(i * 7 + 1);     /* binary, NUL-free but all byte values */
  bin[100] = 0;
  snprintf(file, sizeof file, "%s/remote.bin", dir);
  ASSERT((f = fopen(file, "wb")) != NULL);
  ASSERT_EQ(fwrite(bin, 1, sizeof bin, f), sizeof bin);
  fclose(f);

  ASSERT_EQ(archive_keep_from(home, 1 << 20, l, job, 1, box, file, 10000, &a, why, sizeof why),
            ERR_OK);
  ASSERT_EQ(a.size, (int64_t)sizeof bin);
  {
    char want[65];
    archive_sha256_hex(bin, sizeof bin, want);
    ASSERT_STREQ(a.sha256, want);
  }
  ASSERT((stored = archive_path(home, a.sha256)) != NULL);
  {
    struct stat st;
    ASSERT_EQ(stat(stored, &st), 0);
    ASSERT_EQ((size_t)st.st_size, sizeof bin);
  }
  free(stored);
  ASSERT_EQ(l->ops->artifact_list(l, job, &list, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(list[0].name, file);
  artifact_list_free(list, n);

  ASSERT_EQ(archive_keep_from(home, 1000, l, job, 1, box, file, 10000, &a, why, sizeof why),
            ERR_TOOBIG);
  ASSERT_CONTAINS(why, "larger than archive.max_bytes (1000 bytes)");
  strcat(file, ".missing");
  ASSERT(archive_keep_from(home, 1 << 20, l, job, 1, box, file, 10000, &a, why, sizeof why) != ERR_OK);
  ASSERT_CONTAINS(why, "cannot read artifact");
  ASSERT_CONTAINS(why, "No such file");
  ASSERT_EQ(l->ops->artifact_list(l, job, &list, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  artifact_list_free(list, n);
  ledger_close(l);
}

int main(void)
{
  const char *ci = getenv("CI");
  int is_ci = ci && strcmp(ci, "true") == 0;

  RUN(config_errors);
  if (access(SSHD, X_OK) != 0 || system("command -v ssh-keygen >/dev/null") ||
      system("command -v ssh >/dev/null")) {
    fprintf(stderr, "%s: sshd, ssh or ssh-keygen missing\n",
            is_ci ? "FAIL" : "SKIP");
    return is_ci ? 1 : test_summary();
  }
  if (setup() < 0) {
    fprintf(stderr, "FAIL: cannot start a test sshd in %s\n", dir);
    if (sshd_pid > 0)
      kill(sshd_pid, SIGTERM);
    return 1;
  }
  box = make_inst(port_s, known);
  if (!box)
    return 1;
  RUN(health_ok);
  RUN(echo_and_quoting);
  RUN(exit_code);
  RUN(cwd_env_and_stdin);
  RUN(timeout_kills_remote);
  RUN(cancel_kills_remote);
  RUN(unreachable_port_fails_clearly);
  RUN(wrong_host_key_refused);
  RUN(artifact_fetched_from_remote);
  exec_ssh.destroy(box);
  kill(sshd_pid, SIGTERM);
  waitpid(sshd_pid, NULL, 0);
  sh("rm -rf %s", dir);
  return test_summary();
}
