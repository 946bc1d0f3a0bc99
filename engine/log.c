/* engine/log.c — levelled logging with secret redaction.
 *
 * DESIGN
 * One mutex guards everything here: the settings, the secret list and the
 * stream.  A line is formatted, redacted and written while the mutex is held,
 * so lines from different threads never interleave and a secret registered
 * by one thread is redacted from the very next line any thread writes.
 * Logging is rare enough (a few lines a second) that one lock costs nothing.
 *
 * Redaction runs on the message and the module name before they are escaped
 * or framed: a secret holding a quote or a backslash would no longer match
 * once JSON-escaped.  Text lines escape control characters too, so a message
 * cannot forge a second log line. */
#include "log.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

/* Longest message kept; longer ones end in "…". */
#define LOG_MSG_MAX 8192
/* Longest module name kept whole. */
#define LOG_MODULE_MAX 256
/* Hard maximum of one written line: escaping takes at most 6 bytes a byte. */
#define LOG_LINE_MAX (6 * (LOG_MSG_MAX + 8 + LOG_MODULE_MAX) + 256)
#define REDACTED "[REDACTED]"
#define ELLIPSIS "\xe2\x80\xa6"

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static enum log_level log_min = LOGL_INFO;
static int log_json;
static FILE *log_out;          /* NULL = stderr */
static char **secrets;         /* longest first, so the longest match wins */
static size_t n_secrets;
static size_t longest_secret;

static const char *const level_text[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

/* json < 0 means auto: text on a terminal, JSON otherwise (SPEC §3). */
void log_setup(enum log_level level, int json, FILE *out)
{
  pthread_mutex_lock(&log_mu);
  log_min = level;
  log_out = out;
  if (json < 0)
    json = !isatty(fileno(out ? out : stderr));
  log_json = json != 0;
  pthread_mutex_unlock(&log_mu);
}

int log_level_parse(const char *s)
{
  if (!s)
    return -1;
  if (strcasecmp(s, "debug") == 0)
    return LOGL_DEBUG;
  if (strcasecmp(s, "info") == 0)
    return LOGL_INFO;
  if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
    return LOGL_WARN;
  if (strcasecmp(s, "error") == 0)
    return LOGL_ERROR;
  return -1;
}

/* Caller holds log_mu. */
static int secret_known(const char *s)
{
  for (size_t i = 0; i < n_secrets; i++)
    if (strcmp(secrets[i], s) == 0)
      return 1;
  return 0;
}

/* Keeps the list sorted longest first; caller holds log_mu. */
static void secret_insert(char *copy)
{
  size_t len = strlen(copy), i = n_secrets;

  while (i > 0 && strlen(secrets[i - 1]) < len) {
    secrets[i] = secrets[i - 1];
    i--;
  }
  secrets[i] = copy;
  n_secrets++;
  if (len > longest_secret)
    longest_secret = len;
}

void log_add_secret(const char *secret)
{
  char **grown, *copy;

  if (!secret || strlen(secret) < 4)
    return;
  pthread_mutex_lock(&log_mu);
  if (secret_known(secret))
    goto out;
  grown = realloc(secrets, (n_secrets + 1) * sizeof(*secrets));
  if (!grown)
    goto out;
  secrets = grown;
  copy = strdup(secret);
  if (copy)
    secret_insert(copy);
out:
  pthread_mutex_unlock(&log_mu);
}

void log_clear_secrets(void)
{
  pthread_mutex_lock(&log_mu);
  for (size_t i = 0; i < n_secrets; i++)
    free(secrets[i]);
  free(secrets);
  secrets = NULL;
  n_secrets = 0;
  longest_secret = 0;
  pthread_mutex_unlock(&log_mu);
}

/* Length of the longest secret starting at s, or 0.  Caller holds log_mu. */
static size_t secret_at(const char *s)
{
  for (size_t i = 0; i < n_secrets; i++) {
    size_t len = strlen(secrets[i]);
    if (strncmp(s, secrets[i], len) == 0)
      return len;
  }
  return 0;
}

/* Appends s with every secret replaced; caller holds log_mu. */
static enum err redact_into(struct buf *b, const char *s)
{
  enum err e = ERR_OK;
  const char *run = s;

  while (*s && !e) {
    size_t len = secret_at(s);
    if (!len) {
      s++;
      continue;
    }
    e = buf_append(b, run, (size_t)(s - run));
    if (!e)
      e = buf_appends(b, REDACTED);
    s += len;
    run = s;
  }
  if (!e)
    e = buf_appends(b, run);
  return e;
}

char *log_redact(const char *s)
{
  struct buf b = BUF_INIT((size_t)-2);
  enum err e;

  if (!s)
    return NULL;
  pthread_mutex_lock(&log_mu);
  e = redact_into(&b, s);
  pthread_mutex_unlock(&log_mu);
  if (e) {
    buf_release(&b);
    return NULL;
  }
  return buf_detach(&b);
}

/* Cuts the message to LOG_MSG_MAX bytes on a UTF-8 boundary and marks the
 * cut; cut_already says formatting dropped a tail before we got here. */
static void truncate_msg(struct buf *b, int cut_already)
{
  size_t cut = LOG_MSG_MAX;

  if (b->len <= LOG_MSG_MAX && !cut_already)
    return;
  if (cut > b->len)
    cut = b->len;
  while (cut > 0 && ((unsigned char)b->data[cut] & 0xC0) == 0x80)
    cut--;
  b->len = cut;
  b->data[cut] = '\0';
  buf_appends(b, ELLIPSIS);
}

/* Length of the valid UTF-8 sequence at s, or 0 if it is not valid. */
static size_t utf8_len(const unsigned char *s)
{
  size_t n;
  unsigned cp;

  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xC2 && s[0] <= 0xDF)
    n = 2, cp = s[0] & 0x1F;
  else if (s[0] >= 0xE0 && s[0] <= 0xEF)
    n = 3, cp = s[0] & 0x0F;
  else if (s[0] >= 0xF0 && s[0] <= 0xF4)
    n = 4, cp = s[0] & 0x07;
  else
    return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

/* JSON string body: quotes, backslashes and control characters escaped,
 * invalid UTF-8 replaced by U+FFFD so every line is valid JSON. */
static void json_escape(struct buf *b, const char *s)
{
  const unsigned char *p = (const unsigned char *)s;

  while (*p) {
    size_t n = utf8_len(p);
    if (*p == '"' || *p == '\\')
      buf_printf(b, "\\%c", *p);
    else if (*p == '\n')
      buf_appends(b, "\\n");
    else if (*p == '\r')
      buf_appends(b, "\\r");
    else if (*p == '\t')
      buf_appends(b, "\\t");
    else if (*p < 0x20 || *p == 0x7F)
      buf_printf(b, "\\u%04x", *p);
    else if (n == 0)
      buf_appends(b, "\\ufffd");
    else
      buf_append(b, p, n);
    p += n ? n : 1;
  }
}

/* Text lines keep one event per line: control characters become escapes. */
static void text_escape(struct buf *b, const char *s)
{
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\n')
      buf_appends(b, "\\n");
    else if (*p == '\r')
      buf_appends(b, "\\r");
    else if ((*p < 0x20 && *p != '\t') || *p == 0x7F)
      buf_printf(b, "\\x%02x", *p);
    else
      buf_append(b, p, 1);
  }
}

static void timestamp(char *out, size_t len)
{
  struct timespec ts;
  struct tm tm;
  char day[32];

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, len, "%s.%03ldZ", day, ts.tv_nsec / 1000000L);
}

static void frame_line(struct buf *line, enum log_level level,
                       const char *module, const char *msg)
{
  char ts[48];

  timestamp(ts, sizeof(ts));
  if (log_json) {
    buf_printf(line, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"", ts,
               level_json[level]);
    json_escape(line, module);
    buf_appends(line, "\",\"msg\":\"");
    json_escape(line, msg);
    buf_appends(line, "\"}\n");
  } else {
    buf_printf(line, "%s %s ", ts, level_text[level]);
    text_escape(line, module);
    buf_appends(line, ": ");
    text_escape(line, msg);
    buf_appends(line, "\n");
  }
}

/* Formats at most LOG_MSG_MAX bytes plus room for the longest secret, so a
 * secret straddling the cut is still whole when redaction looks for it.
 * Caller holds log_mu. */
static enum err render_msg(struct buf *msg, const char *fmt, va_list ap)
{
  size_t room = LOG_MSG_MAX + longest_secret;
  char *raw = malloc(room + 1);
  enum err e;
  int n;

  if (!raw)
    return ERR_NOMEM;
  n = vsnprintf(raw, room + 1, fmt, ap);
  /* A secret is at least 4 bytes and "[REDACTED]" is 10: text grows at
   * most 2.5 times. */
  buf_init(msg, 3 * room + 64);
  e = redact_into(msg, raw);
  free(raw);
  if (!e)
    truncate_msg(msg, n < 0 || (size_t)n > room);
  return e;
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
  struct buf msg = BUF_INIT(0);
  struct buf mod = BUF_INIT(LOG_MODULE_MAX);
  struct buf line = BUF_INIT(LOG_LINE_MAX);
  va_list ap;
  enum err e;
  FILE *out;

  if ((unsigned)level > LOGL_ERROR)
    level = LOGL_ERROR;
  pthread_mutex_lock(&log_mu);
  if (level < log_min)
    goto out;
  va_start(ap, fmt);
  e = render_msg(&msg, fmt, ap);
  va_end(ap);
  if (e)
    goto out;
  /* An overlong module name is kept cut short rather than losing the line. */
  redact_into(&mod, module ? module : "-");
  frame_line(&line, level, buf_str(&mod), buf_str(&msg));
  out = log_out ? log_out : stderr;
  fputs(buf_str(&line), out);
  fflush(out);
out:
  pthread_mutex_unlock(&log_mu);
  buf_release(&msg);
  buf_release(&mod);
  buf_release(&line);
}
