/* test_libm_dl — SQLite's SQL math functions through engine/libm_dl.c (the
 * program's own definitions, which load libm on first use) give libm's
 * results.  The file is included so that its definitions are this program's. */
#include <sqlite3.h>

#include "../../engine/libm_dl.c"
#include "../harness.h"

static double sql_double(sqlite3 *db, const char *sql)
{
  sqlite3_stmt *st = NULL;
  double v = -12345;

  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_double(st, 0);
  sqlite3_finalize(st);
  return v;
}

TEST(sql_math_functions)
{
  sqlite3 *db = NULL;

  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  ASSERT(sql_double(db, "SELECT pow(2, 10)") == 1024.0);
  ASSERT(sql_double(db, "SELECT sqrt(2)") == sqrt(2.0));
  ASSERT(sql_double(db, "SELECT acos(-1)") == acos(-1.0));
  ASSERT(sql_double(db, "SELECT ln(10)") == log(10.0));
  ASSERT(sql_double(db, "SELECT atan2(1, 2)") == atan2(1.0, 2.0));
  ASSERT(sql_double(db, "SELECT mod(7.5, 2)") == fmod(7.5, 2.0));
  ASSERT(sql_double(db, "SELECT trunc(-2.7)") == -2.0);
  ASSERT(sql_double(db, "SELECT exp(1)") == exp(1.0));
  sqlite3_close(db);
}

int main(void)
{
  RUN(sql_math_functions);
  return test_summary();
}
