/* 100 MB of output from a real command through the local provider: the
 * bounded capture keeps only its tail, the log store gets every line, and
 * the resident memory of this process does not grow with the output. */
#include <sys/stat.h>

#include "../harness.h"
#include "../testutil.h"
#include "engine/log.h"
#include "engine/logstore.h"
#include "providers/exec/exec.h"

#define TOTAL 100000000L
/* AddressSanitizer keeps freed memory in a quarantine (256 MB by default)
 * that would hide what this test looks at: keep it small here. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
  return "quarantine_size_mb=4";
}
#define RSS_GROWTH_MAX_KB (48 * 1024)
#else
#define RSS_GROWTH_MAX_KB (16 * 1024)
#endif

static char g_home[512];

/* Peak resident set (VmHWM) of this process in kB. */
static long peak_rss_kb(void)
{
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");

  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
      break;
  if (f)
    fclose(f);
  return kb;
}

static void to_log(void *ud, const char *data, size_t n)
{
  logstore_output(ud, 1, data, n);
}

TEST(hundred_megabytes_bounded)
{
  /* 32-byte lines, the last one numbered so that the tail can be checked */
  const char *argv[] = {"sh", "-c", "yes 'output line of 32 bytes .......' | head -c 99999968;"
                        " echo 'the very last line, number 0042'", NULL};
  struct cfg_provider p = {"local", "local", NULL, 0};
  struct exec_instance *inst = NULL;
  struct logstore_writer *w = NULL;
  struct log_query q = {LOGL_DEBUG, 1, "output", NULL, 5};
  struct log_line *v;
  struct exec_result res;
  struct stat sb;
  char err[256], path[700];
  long before, after;
  size_t n;

  ASSERT_EQ(exec_local.create(NULL, &p, &inst), ERR_OK);
  ASSERT_EQ(logstore_open(g_home, 7, &w, err, sizeof err), ERR_OK);
  struct exec_request req = {.argv = argv, .timeout_ms = 120000, .capture_max = 65536,
                             .on_output = to_log, .ud = w};
  before = peak_rss_kb();
  ASSERT_EQ(exec_local.run(inst, &req, &res), ERR_OK);
  logstore_close(w);
  after = peak_rss_kb();
  fprintf(stderr, "  peak RSS %ld kB before, %ld kB after 100 MB of output in %ld ms\n",
          before, after, res.duration_ms);
  ASSERT_EQ(res.exit_code, 0);
  ASSERT_EQ(res.output_total, TOTAL);
  ASSERT_EQ(res.output_len, 65536);
  ASSERT(res.truncated);
  ASSERT_CONTAINS(res.output, "the very last line, number 0042\n");
  exec_result_release(&res);
  exec_local.destroy(inst);
  ASSERT(before > 0 && after - before < RSS_GROWTH_MAX_KB);

  snprintf(path, sizeof path, "%s/logs/7.jsonl", g_home);
  ASSERT_EQ(stat(path, &sb), 0);
  ASSERT(sb.st_size > TOTAL);   /* every line, plus the JSON around it */
  before = peak_rss_kb();
  ASSERT_EQ(logstore_query(g_home, 7, NULL, &q, &v, &n), ERR_OK);
  after = peak_rss_kb();
  ASSERT_EQ(n, 5);
  ASSERT_STREQ(v[4].text, "the very last line, number 0042");
  ASSERT_STREQ(v[3].text, "output line of 32 bytes .......");
  log_line_list_free(v, n);
  ASSERT(after - before < RSS_GROWTH_MAX_KB);
  q = (struct log_query){LOGL_DEBUG, 0, NULL, "number 0042", 0};
  ASSERT_EQ(logstore_query(g_home, 7, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  log_line_list_free(v, n);
}

int main(void)
{
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(g_home, sizeof g_home);
  RUN(hundred_megabytes_bounded);
  tu_rmrf(g_home);
  return test_summary();
}
