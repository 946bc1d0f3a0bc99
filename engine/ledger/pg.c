/* engine/ledger/pg.c — the PostgreSQL backend.
 *
 * Not implemented yet: opening a postgresql:// URL says so instead of
 * pretending.  The SQLite backend is the embedded default. */
#include "ledger.h"

#include <stdio.h>

enum err ledger_pg_open(const char *url, struct ledger **out, char *errbuf,
                        size_t errlen)
{
  (void)url;
  *out = NULL;
  snprintf(errbuf, errlen,
           "the postgresql ledger backend is not implemented yet; use sqlite://");
  return ERR_UNSUPPORTED;
}
