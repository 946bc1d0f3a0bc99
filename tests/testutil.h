/* tests/testutil.h — temp dirs and small helpers shared by the tests. */
#ifndef SKYNET_TESTUTIL_H
#define SKYNET_TESTUTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A fresh directory under $TMPDIR (or /tmp); path written into out. */
static inline void tu_tmpdir(char *out, size_t n)
{
  const char *base = getenv("TMPDIR");
  snprintf(out, n, "%s/skynet-test-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(out)) {
    perror("mkdtemp");
    exit(2);
  }
}

static inline void tu_rmrf(const char *dir)
{
  char cmd[1200];
  if (!dir || strncmp(dir, "/tmp/", 5) != 0)
    return;
  snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

static inline void tu_sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static inline long long tu_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Processes whose command line (arguments joined by spaces) holds token. */
static inline int tu_count_procs(const char *token)
{
  char path[300], cmd[4096];
  struct dirent *d;
  DIR *dir = opendir("/proc");
  int n = 0;

  while (dir && (d = readdir(dir))) {
    FILE *f;
    size_t len;

    if (d->d_name[0] < '1' || d->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", d->d_name);
    if (!(f = fopen(path, "r")))
      continue;
    len = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t i = 0; i < len; i++)
      if (!cmd[i])
        cmd[i] = ' ';
    cmd[len] = 0;
    n += strstr(cmd, token) != NULL;
  }
  if (dir)
    closedir(dir);
  return n;
}

#endif
