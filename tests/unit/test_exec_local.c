/* tests/unit/test_exec_local.c — the local and mock execution backends and
 * the backend table.  Runs real commands (sh, sleep, env, cat, head). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "providers/exec/exec.h"
#include "tests/harness.h"
#include "tests/testutil.h"

static struct exec_instance *local_inst;

static struct exec_instance *make_inst(const struct exec_backend *be,
                                       const char *name, struct cfg_kv *opts,
                                       size_t n_opts)
{
  struct cfg_provider p = {(char *)name, (char *)be->name, opts, n_opts};
  struct exec_instance *inst = NULL;

  if (be->create(NULL, &p, &inst) != ERR_OK)
    return NULL;
  return inst;
}

/* Runs argv on the shared local instance with defaults. */
static enum err run_argv(const char *const *argv, struct exec_result *res)
{
  struct exec_request req = {.argv = argv, .timeout_ms = 10000};

  return exec_local.run(local_inst, &req, res);
}

static long long mono_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TEST(true_exits_0)
{
  const char *argv[] = {"true", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_EQ(res.term_signal, 0);
  ASSERT_EQ(res.output_len, 0);
  ASSERT_STREQ(res.output, "");
  exec_result_release(&res);
}

TEST(false_exits_1)
{
  const char *argv[] = {"false", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 1);
  exec_result_release(&res);
}

TEST(echo_output_captured)
{
  const char *argv[] = {"echo", "hello", "world", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_STREQ(res.output, "hello world\n");
  ASSERT_EQ(res.output_len, 12);
  ASSERT_EQ(res.output_total, 12);
  ASSERT_EQ(res.truncated, 0);
  exec_result_release(&res);
}

TEST(stderr_captured_with_stdout)
{
  const char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_STREQ(res.output, "out\nerr\n");
  exec_result_release(&res);
}

TEST(exit_code_of_sh)
{
  const char *argv[] = {"sh", "-c", "exit 7", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 7);
  exec_result_release(&res);
}

TEST(killed_by_signal)
{
  const char *argv[] = {"sh", "-c", "kill -9 $$", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_EQ(res.term_signal, SIGKILL);
  ASSERT_EQ(res.exit_code, 128 + SIGKILL);
  exec_result_release(&res);
}

TEST(program_not_found)
{
  const char *argv[] = {"nosuchprog", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_NOTFOUND);
  ASSERT_EQ(res.exit_code, 127);
  ASSERT_STREQ(res.error,
               "cannot run 'nosuchprog': No such file or directory");
  ASSERT(res.output != NULL);
  exec_result_release(&res);
}

TEST(absolute_path_not_found)
{
  const char *argv[] = {"/nonexistent/prog", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_NOTFOUND);
  ASSERT_EQ(res.exit_code, 127);
  exec_result_release(&res);
}

TEST(empty_argv_invalid)
{
  const char *argv[] = {NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_INVAL);
  ASSERT(res.error[0] != '\0');
  exec_result_release(&res);
}

TEST(env_scrubbed)
{
  const char *argv[] = {"env", NULL};
  const char *extra[] = {"SKYNET_STEP=42", "TERM=xterm", NULL};
  struct exec_request req = {.argv = argv, .env = extra, .timeout_ms = 5000};
  struct exec_result res;

  setenv("SKYNET_SECRET_TEST", "x", 1);
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  unsetenv("SKYNET_SECRET_TEST");
  ASSERT(strstr(res.output, "SKYNET_SECRET_TEST") == NULL);
  ASSERT_CONTAINS(res.output, "PATH=/usr/local/bin:/usr/bin:/bin\n");
  ASSERT_CONTAINS(res.output, "LANG=C.UTF-8\n");
  ASSERT_CONTAINS(res.output, "HOME=");
  ASSERT_CONTAINS(res.output, "SKYNET_STEP=42\n");
  ASSERT_CONTAINS(res.output, "TERM=xterm\n");   /* request overrides */
  ASSERT(strstr(res.output, "TERM=dumb") == NULL);
  exec_result_release(&res);
}

TEST(bad_env_entry_rejected)
{
  const char *argv[] = {"true", NULL};
  const char *extra[] = {"NOEQUALS", NULL};
  struct exec_request req = {.argv = argv, .env = extra};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_INVAL);
  ASSERT_CONTAINS(res.error, "NOEQUALS");
  exec_result_release(&res);
}

TEST(cwd_honoured)
{
  char dir[] = "/tmp/skynet-exec-XXXXXX";
  char want[64];
  const char *argv[] = {"pwd", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_result res;

  ASSERT(mkdtemp(dir) != NULL);
  req.cwd = dir;
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  rmdir(dir);
  snprintf(want, sizeof want, "%s\n", dir);
  ASSERT_STREQ(res.output, want);
  exec_result_release(&res);
}

TEST(missing_cwd_reported)
{
  const char *argv[] = {"pwd", NULL};
  struct exec_request req = {.argv = argv, .cwd = "/nonexistent/dir"};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_NOTFOUND);
  ASSERT_CONTAINS(res.error, "/nonexistent/dir");
  exec_result_release(&res);
}

TEST(instance_opts)
{
  char dir[] = "/tmp/skynet-exec-XXXXXX";
  char want[64];
  struct cfg_kv opts[] = {{"path", "/bin:/usr/bin"}, {"workdir", dir},
                          {"rlimit_cpu_s", "37"}};
  const char *argv[] = {"sh", "-c", "pwd; ulimit -t; echo $PATH", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_instance *inst;
  struct exec_result res;

  ASSERT(mkdtemp(dir) != NULL);
  inst = make_inst(&exec_local, "box", opts, 3);
  ASSERT(inst != NULL);
  ASSERT_STREQ(inst->name, "box");
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  exec_local.destroy(inst);
  rmdir(dir);
  snprintf(want, sizeof want, "%s\n37\n/bin:/usr/bin\n", dir);
  ASSERT_STREQ(res.output, want);
  exec_result_release(&res);
}

TEST(bad_rlimit_rejected)
{
  struct cfg_kv opts[] = {{"rlimit_cpu_s", "lots"}};

  ASSERT(make_inst(&exec_local, "bad", opts, 1) == NULL);
}

TEST(cpu_limit_bites)
{
  struct cfg_kv opts[] = {{"rlimit_cpu_s", "1"}};
  const char *argv[] = {"sh", "-c", "while :; do :; done", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_instance *inst = make_inst(&exec_local, "cpu", opts, 1);
  struct exec_result res;
  long long t0 = tu_now_ms();

  ASSERT(inst != NULL);
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  exec_local.destroy(inst);
  /* SIGXCPU at the limit (soft = hard, so SIGKILL if it were caught) */
  ASSERT(res.term_signal == SIGXCPU || res.term_signal == SIGKILL);
  ASSERT_EQ(res.timed_out, 0);
  ASSERT(tu_now_ms() - t0 < 15000);
  exec_result_release(&res);
}

TEST(memory_limit_bites)
{
  struct cfg_kv opts[] = {{"rlimit_as_mb", "64"}};
  /* doubles a string until allocation fails: gigabytes without the limit */
  const char *argv[] = {"awk", "BEGIN { s = \"x\"; for (i = 0; i < 40; i++) s = s s;"
                        " print length(s) }", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 20000};
  struct exec_instance *inst = make_inst(&exec_local, "mem", opts, 1);
  struct exec_result res;

  ASSERT(inst != NULL);
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  exec_local.destroy(inst);
  ASSERT(res.exit_code != 0);
  ASSERT(strstr(res.output, "1099511627776") == NULL);
  exec_result_release(&res);
}

TEST(nofile_limit_bites)
{
  struct cfg_kv opts[] = {{"rlimit_nofile", "8"}};
  /* tee holds every output open at once: 10 of them need fds up to 12 */
  const char *argv[] = {"tee", "/dev/null", "/dev/null", "/dev/null", "/dev/null", "/dev/null",
                        "/dev/null", "/dev/null", "/dev/null", "/dev/null", "/dev/null", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_instance *inst;
  struct exec_result res;

  if (getenv("SKYNET_UNDER_VALGRIND"))
    return;    /* valgrind refuses RLIMIT_NOFILE in the child before exec */
  inst = make_inst(&exec_local, "fds", opts, 1);
  ASSERT(inst != NULL);
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  exec_local.destroy(inst);
  ASSERT_CONTAINS(res.output, "Too many open files");
  ASSERT(res.exit_code != 0);
  exec_result_release(&res);
}

TEST(default_limits_apply)
{
  const char *argv[] = {"sh", "-c", "ulimit -t; ulimit -v; ulimit -n", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct cfg_kv opts[] = {{"rlimit_cpu_s", "unlimited"}};
  struct exec_instance *inst;
  struct exec_result res;
  struct rlimit nofile;
  char want[128];

  getrlimit(RLIMIT_NOFILE, &nofile);
  if (getenv("SKYNET_UNDER_VALGRIND"))
    return;    /* valgrind refuses RLIMIT_NOFILE in the child before exec */
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  snprintf(want, sizeof want, "3600\n%d\n%llu\n", 8192 * 1024,
           nofile.rlim_max != RLIM_INFINITY && nofile.rlim_max < 4096
               ? (unsigned long long)nofile.rlim_max : 4096ULL);
  ASSERT_STREQ(res.output, want);
  exec_result_release(&res);
  inst = make_inst(&exec_local, "free", opts, 1);
  ASSERT(inst != NULL);
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  exec_local.destroy(inst);
  ASSERT(strncmp(res.output, "unlimited\n", 10) == 0);
  exec_result_release(&res);
}

TEST(env_allow_list)
{
  struct cfg_kv opts[] = {{"env_allow", "SKYNET_T_TZ, SKYNET_T_NOTSET"}};
  struct cfg_kv ok[] = {{"env_allow", "T_ALLOWED_TZ , T_NOT_SET"}};
  struct cfg_kv secret[] = {{"env_allow", "TZ,GEMINI_API_KEY"}};
  struct cfg_kv bad[] = {{"env_allow", "TZ,NO-DASH"}};
  const char *argv[] = {"env", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000};
  struct exec_instance *inst;
  struct exec_result res;

  ASSERT(make_inst(&exec_local, "x", opts, 1) == NULL);     /* SKYNET_* is ours */
  ASSERT(make_inst(&exec_local, "x", secret, 1) == NULL);
  ASSERT(make_inst(&exec_local, "x", bad, 1) == NULL);
  inst = make_inst(&exec_local, "envbox", ok, 1);
  ASSERT(inst != NULL);
  setenv("T_ALLOWED_TZ", "Europe/Berlin", 1);
  setenv("T_OTHER", "hidden", 1);
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  unsetenv("T_ALLOWED_TZ");
  unsetenv("T_OTHER");
  exec_local.destroy(inst);
  ASSERT_CONTAINS(res.output, "T_ALLOWED_TZ=Europe/Berlin\n");
  ASSERT(strstr(res.output, "T_OTHER") == NULL);
  ASSERT(strstr(res.output, "T_NOT_SET") == NULL);
  exec_result_release(&res);
}

TEST(daemon_that_left_the_group_is_killed_on_timeout)
{
  char token[32], script[256];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 400, .grace_ms = 200};
  struct exec_result res;

  snprintf(token, sizeof token, "79%ld.5", (long)getpid());
  /* setsid: a new session and group, which the group kill does not reach */
  snprintf(script, sizeof script, "setsid sh -c 'sleep %s' </dev/null >/dev/null 2>&1 & sleep %s",
           token, token);
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_TIMEOUT);
  exec_result_release(&res);
  for (int i = 0; i < 50 && tu_count_procs(token); i++)
    tu_sleep_ms(20);
  ASSERT_EQ(tu_count_procs(token), 0);
}

TEST(stdin_passed)
{
  const char *argv[] = {"cat", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000,
                             .stdin_data = "line one\nline two\n",
                             .stdin_len = 18};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  ASSERT_STREQ(res.output, "line one\nline two\n");
  exec_result_release(&res);
}

/* More than a pipe holds each way: the loop must interleave the two. */
TEST(big_stdin_through_cat)
{
  const char *argv[] = {"cat", NULL};
  size_t n = 4 * 1024 * 1024;
  char *data = malloc(n);
  struct exec_request req = {.argv = argv, .timeout_ms = 10000,
                             .stdin_len = n, .capture_max = 100};
  struct exec_result res;

  ASSERT(data != NULL);
  memset(data, 'z', n);
  req.stdin_data = data;
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  free(data);
  ASSERT_EQ(res.output_total, n);
  ASSERT_EQ(res.output_len, 100);
  exec_result_release(&res);
}

/* A command that never reads stdin must not hang us nor raise SIGPIPE. */
TEST(stdin_not_read)
{
  const char *argv[] = {"true", NULL};
  size_t n = 1024 * 1024;
  char *data = calloc(1, n);
  struct exec_request req = {.argv = argv, .timeout_ms = 5000, .stdin_len = n};
  struct exec_result res;

  ASSERT(data != NULL);
  req.stdin_data = data;
  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  free(data);
  ASSERT_EQ(res.exit_code, 0);
  exec_result_release(&res);
}

TEST(stdin_default_dev_null)
{
  const char *argv[] = {"cat", NULL};
  struct exec_result res;

  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  ASSERT_EQ(res.output_len, 0);
  exec_result_release(&res);
}

/* An fd skynet opened without O_CLOEXEC (a library may do that) must not
 * reach the command. */
TEST(no_fd_leak)
{
  char script[96];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_result res;
  int fd = open("/dev/null", O_RDONLY), clean;

  ASSERT(fd > 2);
  snprintf(script, sizeof script,
           "if [ -e /proc/$$/fd/%d ]; then echo leaked; else echo clean; fi",
           fd);
  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  close(fd);
  clean = strcmp(res.output, "clean\n") == 0;
  exec_result_release(&res);
  ASSERT(clean);
}

TEST(timeout)
{
  const char *argv[] = {"sleep", "10", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 300};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.timed_out, 1);
  ASSERT_EQ(res.cancelled, 0);
  ASSERT_EQ(res.term_signal, SIGTERM);
  ASSERT_EQ(res.exit_code, 128 + SIGTERM);
  ASSERT(res.duration_ms >= 290 && res.duration_ms < 3000);
  exec_result_release(&res);
}

TEST(term_ignored_killed_after_grace)
{
  const char *argv[] = {"sh", "-c", "trap '' TERM; sleep 10", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 200, .grace_ms = 200};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.term_signal, SIGKILL);
  ASSERT(res.duration_ms >= 390 && res.duration_ms < 2000);
  exec_result_release(&res);
}

struct canceller {
  atomic_int *flag;
  int after_ms;
};

static void *cancel_later(void *arg)
{
  struct canceller *c = arg;
  struct timespec ts = {c->after_ms / 1000, (c->after_ms % 1000) * 1000000L};

  nanosleep(&ts, NULL);
  atomic_store(c->flag, 1);
  return NULL;
}

TEST(cancel_from_thread)
{
  const char *argv[] = {"sleep", "100", NULL};
  atomic_int flag = 0;
  struct canceller c = {&flag, 200};
  struct exec_request req = {.argv = argv, .cancel = &flag};
  struct exec_result res;
  pthread_t t;
  enum err e;

  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &c), 0);
  e = exec_local.run(local_inst, &req, &res);
  pthread_join(t, NULL);
  ASSERT_EQ(e, ERR_CANCELLED);
  ASSERT_EQ(res.cancelled, 1);
  ASSERT_EQ(res.timed_out, 0);
  ASSERT(res.duration_ms >= 190 && res.duration_ms < 1000);
  exec_result_release(&res);
}

TEST(cancelled_before_start)
{
  const char *argv[] = {"true", NULL};
  atomic_int flag = 1;
  struct exec_request req = {.argv = argv, .cancel = &flag};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_CANCELLED);
  ASSERT_EQ(res.cancelled, 1);
  exec_result_release(&res);
}

static long read_pid_file(const char *path)
{
  char text[32] = {0};
  FILE *f = fopen(path, "r");
  long pid = -1;

  if (f) {
    if (fgets(text, sizeof text, f))
      pid = strtol(text, NULL, 10);
    fclose(f);
  }
  return pid;
}

/* SIGKILL is final once sent, but the members die and are reaped by init
 * a moment later; until then kill(-pgid, 0) still finds them. */
static int group_gone(long pgid)
{
  int i;

  for (i = 0; i < 200; i++) {
    if (kill(-(pid_t)pgid, 0) < 0 && errno == ESRCH)
      return 1;
    usleep(10000);
  }
  return 0;
}

TEST(group_gone_after_cancel)
{
  char dir[] = "/tmp/skynet-exec-XXXXXX";
  char file[64], script[160];
  const char *argv[] = {"sh", "-c", script, NULL};
  atomic_int flag = 0;
  struct canceller c = {&flag, 300};
  struct exec_request req = {.argv = argv, .cancel = &flag};
  struct exec_result res;
  pthread_t t;
  enum err e;
  long pgid;

  ASSERT(mkdtemp(dir) != NULL);
  snprintf(file, sizeof file, "%s/pid", dir);
  snprintf(script, sizeof script,
           "echo $$ > %s; sleep 100 & sleep 100 & wait", file);
  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &c), 0);
  e = exec_local.run(local_inst, &req, &res);
  pthread_join(t, NULL);
  pgid = read_pid_file(file);
  unlink(file);
  rmdir(dir);
  ASSERT_EQ(e, ERR_CANCELLED);
  exec_result_release(&res);
  ASSERT(pgid > 1);
  ASSERT(group_gone(pgid));
}

/* The background sleep keeps the output pipe open and must be killed. */
TEST(background_grandchild_does_not_hang)
{
  char dir[] = "/tmp/skynet-exec-XXXXXX";
  char file[64], script[160];
  const char *argv[] = {"sh", "-c", script, NULL};
  struct exec_result res;
  long long t0 = mono_ms();
  long pgid;

  ASSERT(mkdtemp(dir) != NULL);
  snprintf(file, sizeof file, "%s/pid", dir);
  snprintf(script, sizeof script, "echo $$ > %s; sleep 30 & echo done", file);
  ASSERT_EQ(run_argv(argv, &res), ERR_OK);
  pgid = read_pid_file(file);
  unlink(file);
  rmdir(dir);
  ASSERT(mono_ms() - t0 < 1000);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_STREQ(res.output, "done\n");
  exec_result_release(&res);
  ASSERT(pgid > 1);
  ASSERT(group_gone(pgid));
}

TEST(big_output_bounded)
{
  const char *argv[] = {"head", "-c", "100000000", "/dev/zero", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 30000,
                             .capture_max = 4096};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  ASSERT(res.output_len <= 4096);
  ASSERT_EQ(res.output_total, 100000000);
  ASSERT_EQ(res.truncated, 1);
  exec_result_release(&res);
}

/* The tail must be the last bytes in order, across the ring's wrap. */
TEST(tail_is_last_bytes_in_order)
{
  const char *argv[] = {"sh", "-c", "i=0; while [ $i -lt 300 ]; do "
                        "echo line$i; i=$((i+1)); done", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000,
                             .capture_max = 20};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  ASSERT_EQ(res.output_len, 20);
  ASSERT_STREQ(res.output, "297\nline298\nline299\n");
  ASSERT_EQ(res.truncated, 1);
  exec_result_release(&res);
}

struct collected {
  size_t calls, bytes;
  char first[64];
};

static void collect(void *ud, const char *data, size_t n)
{
  struct collected *c = ud;

  if (!c->calls)
    snprintf(c->first, sizeof c->first, "%.*s", (int)n, data);
  c->calls++;
  c->bytes += n;
}

TEST(on_output_called)
{
  const char *argv[] = {"sh", "-c", "echo a; sleep 0.1; echo b", NULL};
  struct collected c = {0};
  struct exec_request req = {.argv = argv, .timeout_ms = 5000,
                             .on_output = collect, .ud = &c};
  struct exec_result res;

  ASSERT_EQ(exec_local.run(local_inst, &req, &res), ERR_OK);
  ASSERT(c.calls >= 2);
  ASSERT_EQ(c.bytes, 4);
  ASSERT_STREQ(c.first, "a\n");
  ASSERT_STREQ(res.output, "a\nb\n");
  exec_result_release(&res);
}

#define N_THREADS 8
#define N_RUNS 10

struct worker {
  int id;
  int failures;
};

static void *run_many(void *arg)
{
  struct worker *w = arg;
  char word[16], want[20];
  const char *argv[] = {"sh", "-c", "sleep 0.0$1; echo $0", word, "1", NULL};
  struct exec_request req = {.argv = argv, .timeout_ms = 10000};
  struct exec_result res;
  int i;

  snprintf(word, sizeof word, "w%d", w->id);
  snprintf(want, sizeof want, "w%d\n", w->id);
  for (i = 0; i < N_RUNS; i++) {
    if (exec_local.run(local_inst, &req, &res) != ERR_OK ||
        res.exit_code != 0 || strcmp(res.output, want) != 0)
      w->failures++;
    exec_result_release(&res);
  }
  return NULL;
}

TEST(concurrent_runs_on_one_instance)
{
  pthread_t t[N_THREADS];
  struct worker w[N_THREADS];
  int i, failures = 0;

  for (i = 0; i < N_THREADS; i++) {
    w[i] = (struct worker){i, 0};
    ASSERT_EQ(pthread_create(&t[i], NULL, run_many, &w[i]), 0);
  }
  for (i = 0; i < N_THREADS; i++) {
    pthread_join(t[i], NULL);
    failures += w[i].failures;
  }
  ASSERT_EQ(failures, 0);
}

TEST(local_health)
{
  struct exec_health h;
  char want[32];

  ASSERT_EQ(exec_local.health(local_inst, &h), ERR_OK);
  ASSERT_EQ(h.ok, 1);
  snprintf(want, sizeof want, "local: pid %ld, load ", (long)getpid());
  ASSERT_CONTAINS(h.detail, want);
}

/* ---- mock -------------------------------------------------------------- */

static enum err mock_run(struct exec_instance *inst, const char *const *argv,
                         int timeout_ms, atomic_int *cancel,
                         struct exec_result *res)
{
  struct exec_request req = {.argv = argv, .timeout_ms = timeout_ms,
                             .cancel = cancel};

  return exec_mock.run(inst, &req, res);
}

TEST(mock_scripts)
{
  struct exec_instance *m = make_inst(&exec_mock, "fake", NULL, 0);
  const char *ok[] = {"mock", "ok", NULL};
  const char *fail[] = {"mock", "fail", "3", NULL};
  const char *echo[] = {"mock", "echo", "a", "b", NULL};
  const char *other[] = {"df", "-h", NULL};
  struct exec_result res;

  ASSERT(m != NULL);
  ASSERT_STREQ(m->name, "fake");
  ASSERT_EQ(mock_run(m, ok, 0, NULL, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_STREQ(res.output, "ok\n");
  exec_result_release(&res);
  ASSERT_EQ(mock_run(m, fail, 0, NULL, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 3);
  exec_result_release(&res);
  ASSERT_EQ(mock_run(m, echo, 0, NULL, &res), ERR_OK);
  ASSERT_STREQ(res.output, "a b\n");
  ASSERT_EQ(res.output_total, 4);
  exec_result_release(&res);
  ASSERT_EQ(mock_run(m, other, 0, NULL, &res), ERR_OK);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_STREQ(res.output, "mock: df -h\n");
  exec_result_release(&res);
  exec_mock.destroy(m);
}

TEST(mock_sleep_timeout_and_cancel)
{
  struct exec_instance *m = make_inst(&exec_mock, "mock", NULL, 0);
  const char *nap[] = {"mock", "sleep", "50", NULL};
  const char *longnap[] = {"mock", "sleep", "100000", NULL};
  atomic_int flag = 0;
  struct canceller c = {&flag, 100};
  struct exec_result res;
  pthread_t t;
  enum err e;

  ASSERT(m != NULL);
  ASSERT_EQ(mock_run(m, nap, 0, NULL, &res), ERR_OK);
  ASSERT(res.duration_ms >= 45);
  exec_result_release(&res);
  ASSERT_EQ(mock_run(m, longnap, 100, NULL, &res), ERR_TIMEOUT);
  ASSERT_EQ(res.timed_out, 1);
  ASSERT(res.duration_ms < 1000);
  exec_result_release(&res);
  ASSERT_EQ(pthread_create(&t, NULL, cancel_later, &c), 0);
  e = mock_run(m, longnap, 0, &flag, &res);
  pthread_join(t, NULL);
  ASSERT_EQ(e, ERR_CANCELLED);
  ASSERT_EQ(res.cancelled, 1);
  ASSERT(res.duration_ms < 1000);
  exec_result_release(&res);
  exec_mock.destroy(m);
}

TEST(mock_delay_and_health)
{
  struct cfg_kv opts[] = {{"delay_ms", "60"}, {"healthy", "false"}};
  struct exec_instance *m = make_inst(&exec_mock, "slow", opts, 2);
  const char *ok[] = {"mock", "ok", NULL};
  struct exec_health h;
  struct exec_result res;

  ASSERT(m != NULL);
  ASSERT_EQ(mock_run(m, ok, 0, NULL, &res), ERR_OK);
  ASSERT(res.duration_ms >= 55);
  exec_result_release(&res);
  ASSERT_EQ(exec_mock.health(m, &h), ERR_OK);
  ASSERT_EQ(h.ok, 0);
  exec_mock.destroy(m);
  m = make_inst(&exec_mock, "mock", NULL, 0);
  ASSERT(m != NULL);
  ASSERT_EQ(exec_mock.health(m, &h), ERR_OK);
  ASSERT_EQ(h.ok, 1);
  exec_mock.destroy(m);
}

TEST(backend_find)
{
  ASSERT(exec_backend_find("local") == &exec_local);
  ASSERT(exec_backend_find("mock") == &exec_mock);
  ASSERT(exec_backend_find("nope") == NULL);
  ASSERT(exec_backend_find(NULL) == NULL);
}

int main(void)
{
  local_inst = make_inst(&exec_local, "local", NULL, 0);
  if (!local_inst) {
    fprintf(stderr, "cannot create the local instance\n");
    return 1;
  }
  RUN(true_exits_0);
  RUN(false_exits_1);
  RUN(echo_output_captured);
  RUN(stderr_captured_with_stdout);
  RUN(exit_code_of_sh);
  RUN(killed_by_signal);
  RUN(program_not_found);
  RUN(absolute_path_not_found);
  RUN(empty_argv_invalid);
  RUN(env_scrubbed);
  RUN(bad_env_entry_rejected);
  RUN(cwd_honoured);
  RUN(missing_cwd_reported);
  RUN(instance_opts);
  RUN(bad_rlimit_rejected);
  RUN(cpu_limit_bites);
  RUN(memory_limit_bites);
  RUN(nofile_limit_bites);
  RUN(default_limits_apply);
  RUN(env_allow_list);
  RUN(daemon_that_left_the_group_is_killed_on_timeout);
  RUN(stdin_passed);
  RUN(big_stdin_through_cat);
  RUN(stdin_not_read);
  RUN(stdin_default_dev_null);
  RUN(no_fd_leak);
  RUN(timeout);
  RUN(term_ignored_killed_after_grace);
  RUN(cancel_from_thread);
  RUN(cancelled_before_start);
  RUN(group_gone_after_cancel);
  RUN(background_grandchild_does_not_hang);
  RUN(big_output_bounded);
  RUN(tail_is_last_bytes_in_order);
  RUN(on_output_called);
  RUN(concurrent_runs_on_one_instance);
  RUN(local_health);
  RUN(mock_scripts);
  RUN(mock_sleep_timeout_and_cancel);
  RUN(mock_delay_and_health);
  RUN(backend_find);
  exec_local.destroy(local_inst);
  return test_summary();
}
