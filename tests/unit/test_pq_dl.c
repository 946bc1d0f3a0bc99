/* test_pq_dl — libpq missing: a clear error, every time, and no crash.
 * (Loading the real libpq.so.5 is covered by test_ledger_pg and
 * test_worker_pg, which run pg.c through the table.)  This program builds
 * pq_dl.c itself with a library name that does not exist. */
#define PQ_DL_LIB "libpq-skynet-test-missing.so.5"
#include "engine/ledger/pq_dl.c"

#include "../harness.h"

TEST(missing_libpq_is_a_clear_error)
{
  char err[400];

  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(pq_dl_load(err, sizeof err), ERR_UNAVAILABLE);
    ASSERT_CONTAINS(err, "PostgreSQL support needs libpq5 (libpq-skynet-test-missing.so.5): ");
    ASSERT_CONTAINS(err, "cannot open shared object file");
  }
  ASSERT(pq_dl.p_PQconnectdb == NULL);
}

int main(void)
{
  RUN(missing_libpq_is_a_clear_error);
  return test_summary();
}
