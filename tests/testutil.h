/* tests/testutil.h — temp dirs and small helpers shared by the tests. */
#ifndef SKYNET_TESTUTIL_H
#define SKYNET_TESTUTIL_H

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

#endif
