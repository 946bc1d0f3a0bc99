/* tests/e2e/proc.h — drive a skynet process through pipes. */
#ifndef SKYNET_TEST_PROC_H
#define SKYNET_TEST_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct proc {
  pid_t pid;
  int in;              /* write end of its stdin */
  int out;             /* read end of its stdout */
  char *buf;           /* everything it printed */
  size_t len, cap;
  size_t mark;         /* proc_expect searches from here */
};

static inline long long proc_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* environ with env's NAME=VALUE entries replacing or added to it; the
 * strings are borrowed, the array is malloc'ed. */
static inline char **proc_env(char *const env[])
{
  extern char **environ;
  size_t n = 0, m = 0, k = 0;
  char **out;

  while (environ[n])
    n++;
  while (env && env[m])
    m++;
  if (!(out = calloc(n + m + 1, sizeof *out)))
    return NULL;
  for (size_t i = 0; i < n; i++) {
    size_t len = strcspn(environ[i], "=");
    int replaced = 0;
    for (size_t j = 0; j < m && !replaced; j++)
      replaced = strncmp(env[j], environ[i], len + 1) == 0;
    if (!replaced)
      out[k++] = environ[i];
  }
  for (size_t j = 0; j < m; j++)
    out[k++] = env[j];
  return out;
}

/* Starts argv with the environment plus env (NAME=VALUE list, NULL-ended).
 * posix_spawn, not fork: a fork of a test process with threads and large
 * buffers costs milliseconds that start-up timings would count as skynet's. */
static inline int proc_start(struct proc *p, char *const argv[], char *const env[])
{
  posix_spawn_file_actions_t fa;
  int in[2], out[2], rc;
  char **envp;

  memset(p, 0, sizeof *p);
  if (pipe(in))
    return -1;
  if (pipe(out)) {
    close(in[0]); close(in[1]);
    return -1;
  }
  if (!(envp = proc_env(env)) || posix_spawn_file_actions_init(&fa)) {
    free(envp);
    close(in[0]); close(in[1]); close(out[0]); close(out[1]);
    return -1;
  }
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, in[0]);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  posix_spawn_file_actions_addclose(&fa, out[1]);
  rc = posix_spawn(&p->pid, argv[0], &fa, NULL, argv, envp);
  posix_spawn_file_actions_destroy(&fa);
  free(envp);
  close(in[0]);
  close(out[1]);
  if (rc) {
    close(in[1]);
    close(out[0]);
    p->pid = -1;
    errno = rc;
    return -1;
  }
  p->in = in[1];
  p->out = out[0];
  fcntl(p->out, F_SETFL, O_NONBLOCK);
  p->cap = 1 << 16;
  p->buf = calloc(1, p->cap);
  return p->buf ? 0 : -1;
}

static inline void proc_pump(struct proc *p, int wait_ms)
{
  struct pollfd f = {p->out, POLLIN, 0};
  char chunk[4096];
  ssize_t r;

  if (p->out < 0 || poll(&f, 1, wait_ms) <= 0)
    return;
  while ((r = read(p->out, chunk, sizeof chunk)) > 0) {
    if (p->len + (size_t)r + 1 > p->cap) {
      p->cap = (p->len + (size_t)r + 1) * 2;
      p->buf = realloc(p->buf, p->cap);
    }
    memcpy(p->buf + p->len, chunk, (size_t)r);
    p->len += (size_t)r;
    p->buf[p->len] = '\0';
  }
  if (r == 0) {
    close(p->out);
    p->out = -1;
  }
}

static inline void proc_send(struct proc *p, const char *line)
{
  size_t n = strlen(line);
  if (write(p->in, line, n) != (ssize_t)n || write(p->in, "\n", 1) != 1)
    fprintf(stderr, "proc_send failed: %s\n", strerror(errno));
}

/* Waits up to ms for both a and b after the mark, in either order (two
 * things that happen concurrently); on success the mark moves past the
 * later one.  Returns 1 if both were found. */
static inline int proc_expect_both(struct proc *p, const char *a, const char *b, int ms)
{
  long long until = proc_ms() + ms;
  char *ha, *hb;

  for (;;) {
    ha = p->buf ? strstr(p->buf + p->mark, a) : NULL;
    hb = p->buf ? strstr(p->buf + p->mark, b) : NULL;
    if (ha && hb) {
      p->mark = ha > hb ? (size_t)(ha - p->buf) + strlen(a) : (size_t)(hb - p->buf) + strlen(b);
      return 1;
    }
    if (proc_ms() >= until) {
      fprintf(stderr, "timed out waiting for \"%s\"%s%s%s; output after mark:\n%s\n", a,
              a == b ? "" : " and \"", a == b ? "" : b, a == b ? "" : "\"",
              p->buf ? p->buf + p->mark : "");
      return 0;
    }
    proc_pump(p, 50);
  }
}

/* Waits up to ms for `needle` in the output after the mark; on success the
 * mark moves past it.  Returns 1 if found. */
static inline int proc_expect(struct proc *p, const char *needle, int ms)
{
  return proc_expect_both(p, needle, needle, ms);
}

/* Closes stdin and waits up to ms for the exit; returns its exit code, or
 * -1 after killing it on timeout. */
static inline int proc_finish(struct proc *p, int ms)
{
  long long until = proc_ms() + ms;
  int st;

  if (p->in >= 0) {
    close(p->in);
    p->in = -1;
  }
  while (proc_ms() < until) {
    proc_pump(p, 20);
    if (waitpid(p->pid, &st, WNOHANG) == p->pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  kill(p->pid, SIGKILL);
  waitpid(p->pid, &st, 0);
  return -1;
}

static inline void proc_kill9(struct proc *p)
{
  int st;
  kill(p->pid, SIGKILL);
  waitpid(p->pid, &st, 0);
  if (p->in >= 0)
    close(p->in);
  p->in = -1;
}

static inline void proc_release(struct proc *p)
{
  if (p->in >= 0)
    close(p->in);
  if (p->out >= 0)
    close(p->out);
  free(p->buf);
  memset(p, 0, sizeof *p);
  p->in = p->out = -1;
}

#endif
