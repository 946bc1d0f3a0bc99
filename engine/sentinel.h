/* engine/sentinel.h — the provider monitor: a thread that health-checks
 * every provider instance of a registry on an interval.
 *
 * An instance is marked down after fail_threshold consecutive failed checks
 * and up again after the first good one.  Each change (one per incident, not
 * one per failed check) is reported to the callback, on the sentinel's
 * thread.  Any thread may read an instance's state. */
#ifndef SKYNET_SENTINEL_H
#define SKYNET_SENTINEL_H

#include "err.h"
#include "registry.h"

struct sentinel;

struct sentinel_event {
  const char *provider;      /* borrowed for the callback's duration */
  int up;                    /* 0: went down, 1: recovered */
  const char *detail;        /* health detail, secrets redacted */
};

typedef void (*sentinel_cb)(void *ud, const struct sentinel_event *ev);

struct sentinel_status {
  int up;
  int failures;              /* consecutive failed checks */
  long checks;
  char last_error[256];      /* redacted; "" if the last check was good */
  int last_ok;               /* the last check was good */
  char detail[256];          /* the last check's detail, redacted */
};

/* Monitors r (which must outlive the sentinel).  interval_ms 0 → no
 * thread: checks happen only through sentinel_check_now().  cb may be
 * NULL.  Call from one thread; the result is released by sentinel_free. */
enum err sentinel_new(struct sentinel **out, const struct registry *r,
                      int interval_ms, int fail_threshold, sentinel_cb cb,
                      void *ud);
/* Stops the thread (if any) and frees.  NULL-safe. */
void sentinel_free(struct sentinel *s);
/* One round of checks on the calling thread (tests, /providers refresh).
 * Any thread; rounds never overlap (callbacks may run on this thread). */
void sentinel_check_now(struct sentinel *s);
/* State of the instance named name; ERR_NOTFOUND if none.  Any thread. */
enum err sentinel_status(struct sentinel *s, const char *name,
                         struct sentinel_status *out);
/* 1 unless the instance is marked down.  Any thread. */
int sentinel_is_up(struct sentinel *s, const char *name);

#endif
