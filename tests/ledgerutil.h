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

#endif
