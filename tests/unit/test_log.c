/* tests/unit/test_log.c — log lines, JSON escaping, levels, redaction,
 * truncation and whole lines under concurrency.  Every test logs to its own
 * tmpfile(), so parallel runs do not meet. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/log.h"
#include "tests/harness.h"

/* Everything written to f so far, malloc'd. */
static char *slurp(FILE *f)
{
  long len;
  char *s;

  fflush(f);
  len = ftell(f);
  if (len < 0 || !(s = calloc(1, (size_t)len + 1)))
    return NULL;
  rewind(f);
  if (fread(s, 1, (size_t)len, f) != (size_t)len) {
    free(s);
    return NULL;
  }
  return s;
}

static size_t count_lines(const char *s)
{
  size_t n = 0;

  for (; *s; s++)
    n += *s == '\n';
  return n;
}

TEST(text_line_format)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_setup(LOGL_DEBUG, 0, f);
  log_info("tg", "hello %d", 42);
  out = slurp(f);
  ASSERT(out);
  /* 2026-11-24T14:00:00.123Z INFO  tg: hello 42 */
  ASSERT_EQ(strlen(out), 24 + 1 + 5 + 1 + strlen("tg: hello 42\n"));
  ASSERT_EQ(out[4], '-');
  ASSERT_EQ(out[10], 'T');
  ASSERT_EQ(out[19], '.');
  ASSERT_EQ(out[23], 'Z');
  ASSERT_STREQ(out + 24, " INFO  tg: hello 42\n");
  free(out);
  fclose(f);
}

TEST(text_line_escapes_newlines)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_setup(LOGL_DEBUG, 0, f);
  log_warn("m", "two\nlines\x01");
  out = slurp(f);
  ASSERT(out);
  ASSERT_EQ(count_lines(out), 1);
  ASSERT_CONTAINS(out, " WARN  m: two\\nlines\\x01\n");
  free(out);
  fclose(f);
}

TEST(json_line_escaping)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_setup(LOGL_DEBUG, 1, f);
  log_error("mo\"d", "a\"b\\c\nd\x01" "e\tf\x7f");
  out = slurp(f);
  ASSERT(out);
  ASSERT(strncmp(out, "{\"ts\":\"", 7) == 0);
  ASSERT_EQ(out[7 + 23], 'Z');
  ASSERT_CONTAINS(out, "\",\"level\":\"error\",\"module\":\"mo\\\"d\",");
  ASSERT_CONTAINS(out, "\"msg\":\"a\\\"b\\\\c\\nd\\u0001e\\tf\\u007f\"}\n");
  ASSERT_EQ(count_lines(out), 1);
  free(out);
  fclose(f);
}

TEST(json_invalid_utf8_replaced)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_setup(LOGL_DEBUG, 1, f);
  log_info("m", "ok \xc3\xa9 bad \xff\xc3 end");
  out = slurp(f);
  ASSERT(out);
  ASSERT_CONTAINS(out, "\"msg\":\"ok \xc3\xa9 bad \\ufffd\\ufffd end\"}");
  free(out);
  fclose(f);
}

TEST(level_filtering)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_setup(LOGL_WARN, 0, f);
  log_debug("m", "debug-line");
  log_info("m", "info-line");
  log_warn("m", "warn-line");
  log_error("m", "error-line");
  out = slurp(f);
  ASSERT(out);
  ASSERT_EQ(count_lines(out), 2);
  ASSERT(!strstr(out, "debug-line"));
  ASSERT(!strstr(out, "info-line"));
  ASSERT_CONTAINS(out, " WARN  m: warn-line\n");
  ASSERT_CONTAINS(out, " ERROR m: error-line\n");
  free(out);
  fclose(f);
}

TEST(level_parse)
{
  ASSERT_EQ(log_level_parse("debug"), LOGL_DEBUG);
  ASSERT_EQ(log_level_parse("INFO"), LOGL_INFO);
  ASSERT_EQ(log_level_parse("warn"), LOGL_WARN);
  ASSERT_EQ(log_level_parse("warning"), LOGL_WARN);
  ASSERT_EQ(log_level_parse("error"), LOGL_ERROR);
  ASSERT_EQ(log_level_parse("loud"), -1);
  ASSERT_EQ(log_level_parse(""), -1);
  ASSERT_EQ(log_level_parse(NULL), -1);
}

TEST(redaction_in_lines)
{
  FILE *f = tmpfile();
  char *out;

  ASSERT(f);
  log_clear_secrets();
  log_add_secret("123456:ABC-secret\"tok");
  log_setup(LOGL_DEBUG, 1, f);
  log_info("tg", "url https://x/bot%s/getMe", "123456:ABC-secret\"tok");
  log_setup(LOGL_DEBUG, 0, f);
  log_info("tg", "again 123456:ABC-secret\"tok and 123456:ABC-secret\"tok");
  out = slurp(f);
  ASSERT(out);
  ASSERT(!strstr(out, "ABC-secret"));
  ASSERT_CONTAINS(out, "\"msg\":\"url https://x/bot[REDACTED]/getMe\"");
  ASSERT_CONTAINS(out, "tg: again [REDACTED] and [REDACTED]\n");
  log_clear_secrets();
  free(out);
  fclose(f);
}

TEST(redact_standalone)
{
  char *s;

  log_clear_secrets();
  log_add_secret("abc");          /* too short: ignored */
  log_add_secret("hunter2hunter2");
  log_add_secret("hunter2");
  log_add_secret("hunter2");      /* duplicate: harmless */
  s = log_redact("abc hunter2hunter2 x hunter2 y");
  ASSERT_STREQ(s, "abc [REDACTED] x [REDACTED] y");
  free(s);
  ASSERT(log_redact(NULL) == NULL);
  log_clear_secrets();
  s = log_redact("hunter2");
  ASSERT_STREQ(s, "hunter2");
  free(s);
}

TEST(long_message_truncated)
{
  FILE *f = tmpfile();
  char *big = malloc(20001), *out;

  ASSERT(f && big);
  memset(big, 'x', 20000);
  big[20000] = '\0';
  log_setup(LOGL_DEBUG, 0, f);
  log_info("m", "%s", big);
  out = slurp(f);
  ASSERT(out);
  ASSERT_EQ(count_lines(out), 1);
  ASSERT(strlen(out) < 8192 + 100);
  ASSERT(strlen(out) > 8000);
  ASSERT_CONTAINS(out, "xxx\xe2\x80\xa6\n");
  free(out);
  free(big);
  fclose(f);
}

/* A secret that straddles the truncation point must not leak its head. */
TEST(secret_at_truncation_point)
{
  FILE *f = tmpfile();
  char *big = malloc(8192 + 64), *out;
  const char *secret = "SECRETSECRETSECRET";

  ASSERT(f && big);
  memset(big, 'y', 8185);
  snprintf(big + 8185, 64, "%s tail", secret);
  log_clear_secrets();
  log_add_secret(secret);
  log_setup(LOGL_DEBUG, 0, f);
  log_info("m", "%s", big);
  out = slurp(f);
  ASSERT(out);
  ASSERT(!strstr(out, "SECRET"));
  ASSERT_CONTAINS(out, "[REDACT");
  log_clear_secrets();
  free(out);
  free(big);
  fclose(f);
}

#define THREADS 4
#define LINES 500

static void *log_thread(void *arg)
{
  int id = (int)(long)arg;
  char pad[301];

  memset(pad, 'a' + id, 300);
  pad[300] = '\0';
  for (int i = 0; i < LINES; i++)
    log_info("t", "thread=%d line=%d %s end", id, i, pad);
  return NULL;
}

/* Every line must be one whole message from one thread. */
static int line_whole(const char *line, size_t len)
{
  int id, i, used = 0;
  const char *msg = memchr(line, 't', len);

  if (len < 24 || !msg || strncmp(msg, "t: thread=", 10))
    return 0;
  if (sscanf(msg, "t: thread=%d line=%d %n", &id, &i, &used) != 2 || !used)
    return 0;
  if (id < 0 || id >= THREADS || i < 0 || i >= LINES)
    return 0;
  msg += used;
  for (int k = 0; k < 300; k++)
    if (msg[k] != 'a' + id)
      return 0;
  return strncmp(msg + 300, " end\n", 5) == 0;
}

TEST(concurrent_whole_lines)
{
  FILE *f = tmpfile();
  pthread_t th[THREADS];
  char *out, *p, *nl;
  size_t n = 0;

  ASSERT(f);
  log_setup(LOGL_DEBUG, 0, f);
  for (long i = 0; i < THREADS; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, log_thread, (void *)i), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  out = slurp(f);
  ASSERT(out);
  for (p = out; (nl = strchr(p, '\n')); p = nl + 1, n++)
    if (!line_whole(p, (size_t)(nl - p) + 1))
      FAIL_AT_("torn line %zu: %.80s", n, p);
  ASSERT_EQ(*p, '\0');
  ASSERT_EQ(n, THREADS * LINES);
  free(out);
  fclose(f);
}

int main(void)
{
  RUN(text_line_format);
  RUN(text_line_escapes_newlines);
  RUN(json_line_escaping);
  RUN(json_invalid_utf8_replaced);
  RUN(level_filtering);
  RUN(level_parse);
  RUN(redaction_in_lines);
  RUN(redact_standalone);
  RUN(long_message_truncated);
  RUN(secret_at_truncation_point);
  RUN(concurrent_whole_lines);
  log_setup(LOGL_INFO, 0, NULL);
  return test_summary();
}
