/* The log store: JSON lines written per job, read back by tail, search,
 * level, step and stream; lines split at newlines and at the line bound;
 * invalid UTF-8 and secrets never reach the file as they came. */
#include <json-c/json.h>

#include "../harness.h"
#include "../testutil.h"
#include "engine/log.h"
#include "engine/logstore.h"

static char g_home[512];

static struct logstore_writer *open_job(int64_t id)
{
  struct logstore_writer *w = NULL;
  char err[256];

  if (logstore_open(g_home, id, &w, err, sizeof err) != ERR_OK)
    fprintf(stderr, "open: %s\n", err);
  return w;
}

TEST(lines_round_trip_with_filters)
{
  struct logstore_writer *w = open_job(1);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct log_line *v;
  size_t n;

  ASSERT(w != NULL);
  logstore_event(w, LOGL_INFO, 1, "step %d started", 1);
  logstore_output(w, 1, "alpha\nbe", 8);
  logstore_output(w, 1, "ta\ngamma \"quoted\" \\ tab\t", 24);
  logstore_flush(w);
  logstore_event(w, LOGL_ERROR, 1, "step 1 exited with %d", 3);
  logstore_output(w, 2, "second step\n", 12);
  logstore_close(w);

  ASSERT_EQ(logstore_query(g_home, 1, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 6);
  ASSERT_STREQ(v[0].text, "step 1 started");
  ASSERT_STREQ(v[0].stream, "skynet");
  ASSERT_STREQ(v[1].text, "alpha");
  ASSERT_STREQ(v[1].stream, "output");
  ASSERT_STREQ(v[2].text, "beta");
  ASSERT_STREQ(v[3].text, "gamma \"quoted\" \\ tab\t");
  ASSERT_EQ(v[4].level, LOGL_ERROR);
  ASSERT_EQ(v[5].step, 2);
  ASSERT(strlen(v[0].time) == 24 && v[0].time[23] == 'Z');
  log_line_list_free(v, n);

  q.min_level = LOGL_ERROR;
  ASSERT_EQ(logstore_query(g_home, 1, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "step 1 exited with 3");
  log_line_list_free(v, n);

  q = (struct log_query){LOGL_DEBUG, 2, NULL, NULL, 0};
  ASSERT_EQ(logstore_query(g_home, 1, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "second step");
  log_line_list_free(v, n);

  q = (struct log_query){LOGL_DEBUG, 0, "output", "eta", 0};
  ASSERT_EQ(logstore_query(g_home, 1, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "beta");
  log_line_list_free(v, n);
}

TEST(tail_keeps_the_last_lines)
{
  struct logstore_writer *w = open_job(2);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 3};
  struct log_line *v;
  char line[32], *t;
  size_t n;

  ASSERT(w != NULL);
  for (int i = 1; i <= 1000; i++) {
    int k = snprintf(line, sizeof line, "line %d\n", i);
    logstore_output(w, 1, line, (size_t)k);
  }
  logstore_close(w);
  ASSERT_EQ(logstore_query(g_home, 2, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  ASSERT_STREQ(v[0].text, "line 998");
  ASSERT_STREQ(v[2].text, "line 1000");
  log_line_list_free(v, n);
  t = logstore_tail_text(g_home, 2, 50, 20);
  ASSERT_STREQ(t, "line 999\nline 1000");
  free(t);
  ASSERT(logstore_tail_text(g_home, 99, 50, 20) == NULL);
  ASSERT_EQ(logstore_query(g_home, 99, &q, &v, &n), ERR_NOTFOUND);
}

TEST(long_lines_split_and_bytes_made_valid)
{
  struct logstore_writer *w = open_job(3);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct log_line *v;
  size_t n, big = LOGSTORE_LINE_MAX * 2 + 10;
  char *s = malloc(big);

  ASSERT(w != NULL && s != NULL);
  memset(s, 'x', big);
  logstore_output(w, 1, s, big);
  static const char odd[] = "\nbad \xff\xfe utf8 \xc3\xa9 nul\0end\n";
  logstore_output(w, 1, odd, sizeof odd - 1);
  logstore_close(w);
  free(s);
  ASSERT_EQ(logstore_query(g_home, 3, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 4);
  ASSERT_EQ(strlen(v[0].text), LOGSTORE_LINE_MAX);
  ASSERT_EQ(strlen(v[2].text), 10);
  ASSERT_STREQ(v[3].text, "bad \xef\xbf\xbd\xef\xbf\xbd utf8 \xc3\xa9 nul?end");
  log_line_list_free(v, n);
}

TEST(secrets_are_redacted)
{
  struct logstore_writer *w = open_job(4);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct log_line *v;
  char path[700], buf[4096];
  size_t n, got;
  FILE *f;

  log_add_secret("hunter2-token-xyz");
  ASSERT(w != NULL);
  logstore_output(w, 1, "token=hunter2-token-xyz\n", 24);
  logstore_event(w, LOGL_WARN, 1, "argv: curl -H hunter2-token-xyz");
  logstore_close(w);
  log_clear_secrets();
  snprintf(path, sizeof path, "%s/logs/4.jsonl", g_home);
  f = fopen(path, "r");
  ASSERT(f != NULL);
  got = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[got] = 0;
  ASSERT(strstr(buf, "hunter2") == NULL);
  ASSERT_EQ(logstore_query(g_home, 4, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  ASSERT_CONTAINS(v[0].text, "[REDACTED]");
  log_line_list_free(v, n);
}

TEST(damaged_lines_are_skipped)
{
  struct logstore_writer *w = open_job(5);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct log_line *v;
  char path[700];
  size_t n;
  FILE *f;

  ASSERT(w != NULL);
  logstore_output(w, 1, "good\n", 5);
  logstore_close(w);
  snprintf(path, sizeof path, "%s/logs/5.jsonl", g_home);
  f = fopen(path, "a");
  ASSERT(f != NULL);
  fputs("{\"time\":\"x\",\"level\":\"nope\"}\nnot json\n{\"half\":", f);
  fclose(f);
  ASSERT_EQ(logstore_query(g_home, 5, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "good");
  log_line_list_free(v, n);
}

TEST(unwritable_home_is_an_error)
{
  struct logstore_writer *w = NULL;
  char err[256] = "";

  ASSERT_EQ(logstore_open("/proc/nonexistent-skynet", 1, &w, err, sizeof err), ERR_IO);
  ASSERT(w == NULL);
  ASSERT_CONTAINS(err, "cannot create '/proc/nonexistent-skynet/logs'");
}

int main(void)
{
  log_setup(LOGL_ERROR, 0, NULL);
  tu_tmpdir(g_home, sizeof g_home);
  RUN(lines_round_trip_with_filters);
  RUN(tail_keeps_the_last_lines);
  RUN(long_lines_split_and_bytes_made_valid);
  RUN(secrets_are_redacted);
  RUN(damaged_lines_are_skipped);
  RUN(unwritable_home_is_an_error);
  tu_rmrf(g_home);
  return test_summary();
}
