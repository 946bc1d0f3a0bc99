/* tests/ledgerutil.h — open and migrate a ledger in tests and benchmarks. */
#ifndef SKYNET_LEDGERUTIL_H
#define SKYNET_LEDGERUTIL_H

#include <stdio.h>

#include "engine/ledger/ledger.h"

/* A migrated connection to url, or NULL (the reason printed). */
static inline struct ledger *tu_ledger_open(const char *url)
{
  struct ledger *l = NULL;
  char err[256];
  int applied;

  if (ledger_open(url, &l, err, sizeof err)) {
    fprintf(stderr, "open: %s\n", err);
    return NULL;
  }
  if (l->ops->migrate(l, &applied)) {
    fprintf(stderr, "migrate: %s\n", l->errmsg);
    ledger_close(l);
    return NULL;
  }
  return l;
}

/* Queues a job with a ready plan, as the control plane would (chat "e2e" 5);
 * its id, or 0. */
static inline int64_t tu_enqueue(struct ledger *l, const char *plan)
{
  struct job j = {0};

  j.channel = "e2e";
  j.chat_id = 5;
  j.user_id = 5;
  j.text = "e2e";
  if (l->ops->job_create(l, &j, "test") ||
      l->ops->job_set_plan(l, j.id, plan, "e2e", RISK_WRITE) ||
      l->ops->job_transition(l, j.id, JOB_CREATED, JOB_PLANNED, "t", NULL) ||
      l->ops->job_transition(l, j.id, JOB_PLANNED, JOB_QUEUED, "t", NULL))
    return 0;
  return j.id;
}

#endif
