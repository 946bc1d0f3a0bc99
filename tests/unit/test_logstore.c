/* The log store: JSON lines written per job, read back by tail, search,
 * level, step and stream; lines split at newlines and at the line bound;
 * invalid UTF-8 and secrets never reach the file as they came; a held log
 * stays in memory until it is big or old, and is read back with the file. */
#include <json-c/json.h>
#include <pthread.h>

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

  ASSERT_EQ(logstore_query(g_home, 1, NULL, &q, &v, &n), ERR_OK);
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
  ASSERT_EQ(logstore_query(g_home, 1, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "step 1 exited with 3");
  log_line_list_free(v, n);

  q = (struct log_query){LOGL_DEBUG, 2, NULL, NULL, 0};
  ASSERT_EQ(logstore_query(g_home, 1, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "second step");
  log_line_list_free(v, n);

  q = (struct log_query){LOGL_DEBUG, 0, "output", "eta", 0};
  ASSERT_EQ(logstore_query(g_home, 1, NULL, &q, &v, &n), ERR_OK);
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
  ASSERT_EQ(logstore_query(g_home, 2, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 3);
  ASSERT_STREQ(v[0].text, "line 998");
  ASSERT_STREQ(v[2].text, "line 1000");
  log_line_list_free(v, n);
  t = logstore_tail_text(g_home, 2, NULL, 50, 20);
  ASSERT_STREQ(t, "line 999\nline 1000");
  free(t);
  ASSERT(logstore_tail_text(g_home, 99, NULL, 50, 20) == NULL);
  ASSERT_EQ(logstore_query(g_home, 99, NULL, &q, &v, &n), ERR_NOTFOUND);
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
  ASSERT_EQ(logstore_query(g_home, 3, NULL, &q, &v, &n), ERR_OK);
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
  ASSERT_EQ(logstore_query(g_home, 4, NULL, &q, &v, &n), ERR_OK);
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
  ASSERT_EQ(logstore_query(g_home, 5, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  ASSERT_STREQ(v[0].text, "good");
  log_line_list_free(v, n);
}

static int file_exists(int64_t id)
{
  char path[700];

  snprintf(path, sizeof path, "%s/logs/%lld.jsonl", g_home, (long long)id);
  return access(path, F_OK) == 0;
}

/* A quick job's log: no file; its lines come back from close, and a query
 * given them reads them (before a later attempt's file). */
TEST(held_log_stays_in_memory_and_reads_back)
{
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct logstore_writer *w;
  struct log_line *v;
  char *held, *t;
  size_t n;

  ASSERT_EQ(logstore_open_held(g_home, 10, &w), ERR_OK);
  logstore_event(w, LOGL_INFO, 1, "step 1 started");
  logstore_flush(w);
  logstore_output(w, 1, "first\nsecond", 12);
  ASSERT(!file_exists(10));
  held = logstore_close_held(w);
  ASSERT(held != NULL);
  ASSERT(!file_exists(10));
  ASSERT_CONTAINS(held, "\"text\":\"second\"}\n");
  ASSERT_EQ(logstore_query(g_home, 10, NULL, &q, &v, &n), ERR_NOTFOUND);
  /* a retry logs to the file; the held lines come first */
  w = open_job(10);
  logstore_output(w, 1, "retried\n", 8);
  logstore_close(w);
  ASSERT_EQ(logstore_query(g_home, 10, held, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 4);
  ASSERT_STREQ(v[0].text, "step 1 started");
  ASSERT_STREQ(v[1].text, "first");
  ASSERT_STREQ(v[2].text, "second");
  ASSERT_STREQ(v[3].text, "retried");
  log_line_list_free(v, n);
  t = logstore_tail_text(g_home, 10, held, 2, 100);
  ASSERT_STREQ(t, "second\nretried");
  free(t);
  /* held lines alone are a log */
  t = logstore_tail_text(g_home, 11, held, 10, 100);
  ASSERT_STREQ(t, "first\nsecond");
  free(t);
  free(held);
  /* nothing held, nothing in the file */
  ASSERT_EQ(logstore_open_held(g_home, 12, &w), ERR_OK);
  ASSERT(logstore_close_held(w) == NULL);
  ASSERT(!file_exists(12));
}

/* A held log gets its file, with every line so far, when it grows past
 * LOGSTORE_HOLD_BYTES; logstore_close (not _held) and logstore_keep write
 * held lines to the file too. */
TEST(big_held_log_goes_to_its_file)
{
  struct log_query q = {LOGL_DEBUG, 0, "output", NULL, LOGSTORE_QUERY_MAX};
  struct logstore_writer *w;
  struct log_line *v;
  char line[64];
  size_t n;
  int i;

  ASSERT_EQ(logstore_open_held(g_home, 13, &w), ERR_OK);
  for (i = 0; !file_exists(13) && i < 10000; i++) {
    int k = snprintf(line, sizeof line, "line %d\n", i);
    logstore_output(w, 1, line, (size_t)k);
  }
  ASSERT(file_exists(13));
  ASSERT(i > LOGSTORE_HOLD_BYTES / 200 && i < LOGSTORE_HOLD_BYTES / 50);   /* ~100 bytes a line */
  logstore_output(w, 1, "last\n", 5);
  ASSERT(logstore_close_held(w) == NULL);    /* all in the file */
  ASSERT_EQ(logstore_query(g_home, 13, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, (size_t)i + 1);
  ASSERT_STREQ(v[0].text, "line 0");
  ASSERT_STREQ(v[n - 1].text, "last");
  log_line_list_free(v, n);

  ASSERT_EQ(logstore_open_held(g_home, 14, &w), ERR_OK);
  logstore_output(w, 1, "kept\n", 5);
  logstore_close(w);
  ASSERT(file_exists(14));
  ASSERT_EQ(logstore_keep(g_home, 15, "{\"time\":\"t\",\"level\":\"info\",\"step\":1,"
                          "\"stream\":\"output\",\"text\":\"handed back\"}\n"), ERR_OK);
  char *t = logstore_tail_text(g_home, 15, NULL, 10, 100);
  ASSERT_STREQ(t, "handed back");
  free(t);
}

static void *settle_later(void *arg)
{
  tu_sleep_ms(LOGSTORE_HOLD_MS + 100);
  logstore_settle(arg);
  return NULL;
}

/* A job that has run LOGSTORE_HOLD_MS gets its file at its next line, or,
 * from another thread (a step that prints nothing), at logstore_settle;
 * not before. */
TEST(old_held_log_goes_to_its_file)
{
  struct logstore_writer *w;
  pthread_t t;

  ASSERT_EQ(logstore_open_held(g_home, 16, &w), ERR_OK);
  logstore_event(w, LOGL_INFO, 1, "step 1 started");
  logstore_flush(w);
  logstore_settle(w);
  ASSERT(!file_exists(16));
  ASSERT_EQ(pthread_create(&t, NULL, settle_later, w), 0);
  pthread_join(t, NULL);
  ASSERT(file_exists(16));
  char *tail = logstore_tail_text(g_home, 16, NULL, 10, 100);
  ASSERT_STREQ(tail, "");      /* no output yet, but the file has the event */
  free(tail);
  struct log_query q = {LOGL_DEBUG, 0, NULL, NULL, 0};
  struct log_line *v;
  size_t n;
  ASSERT_EQ(logstore_query(g_home, 16, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 1);
  log_line_list_free(v, n);
  logstore_output(w, 1, "after\n", 6);
  ASSERT(logstore_close_held(w) == NULL);
  ASSERT_EQ(logstore_query(g_home, 16, NULL, &q, &v, &n), ERR_OK);
  ASSERT_EQ(n, 2);
  log_line_list_free(v, n);

  ASSERT_EQ(logstore_open_held(g_home, 17, &w), ERR_OK);
  tu_sleep_ms(LOGSTORE_HOLD_MS + 50);
  ASSERT(!file_exists(17));
  logstore_output(w, 1, "late\n", 5);      /* the line itself spills */
  ASSERT(file_exists(17));
  logstore_close(w);
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
  RUN(held_log_stays_in_memory_and_reads_back);
  RUN(big_held_log_goes_to_its_file);
  RUN(old_held_log_goes_to_its_file);
  tu_rmrf(g_home);
  return test_summary();
}
