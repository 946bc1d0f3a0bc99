/* engine/ledger/migrations.h — migrations compiled in from deploy/migrations. */
#ifndef SKYNET_MIGRATIONS_H
#define SKYNET_MIGRATIONS_H

#include <stddef.h>

struct migration {
  int version;
  const char *name;
  const char *sql;
};

/* Terminated by an entry with name == NULL; sorted by version. */
extern const struct migration migrations_sqlite[];
extern const struct migration migrations_postgres[];

#endif
