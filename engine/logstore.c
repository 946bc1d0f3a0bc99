/* engine/logstore.c — see logstore.h.
 *
 * DESIGN
 * - Writing is appending whole lines to one file per job (O_APPEND): lines
 *   are composed in memory and gathered in a pending buffer, which goes out
 *   in one write(2) when it fills, at every logstore_flush (the orchestrator
 *   flushes before a step runs and when it ends) and at close.  A reader on
 *   another thread sees whole lines, except when the disk is full.  A job's
 *   log costs open, a write per step start and per step end, and close;
 *   events are not written one by one.
 * - JSON is written by hand (the fields are fixed) and read back with
 *   json-c; a line that does not parse (being written, or damaged) is
 *   skipped rather than failing the query.
 * - A job may start with its log held in memory (logstore_open_held): no
 *   file until the log passes LOGSTORE_HOLD_BYTES or the job has run
 *   LOGSTORE_HOLD_MS, checked at every line and flush (and by
 *   logstore_settle from another thread, for a step that prints nothing).
 *   Then the file is created with every line held, and the writer goes on
 *   as any other.  A quick job's log never reaches a file: it goes to the
 *   ledger with its result.  Creating a file per job was what quick jobs
 *   cost the disk most: on this VM the submitters' commit syncs took ~50 us
 *   longer beside workers creating one log file per job (100 against 150
 *   us), and creating a file sometimes took 0.7 ms.
 * - A query streams the file through a fixed buffer and keeps the matching
 *   lines in a ring of q->max entries, so it never holds the whole log;
 *   lines kept in the ledger come first (a retry's attempts log to the
 *   file, after the first attempt's). */
#include "logstore.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "ledger/ledger.h"

#define READ_LINE_MAX (LOGSTORE_LINE_MAX * 6 + 512)  /* every byte escaped */

#define PENDING_MAX (64 * 1024)  /* written out when it grows past this */

struct logstore_writer {
  pthread_mutex_t mu;           /* logstore_settle against the writing thread */
  int fd;                       /* -1 while held (or when it cannot be made) */
  int held;                     /* no file yet: the lines wait in pend */
  int64_t opened;               /* monotonic ms */
  char *home;                   /* for the file, while held */
  int64_t job_id;
  struct buf pend;              /* whole lines not yet written */
  int step;                     /* the step of the partial line */
  size_t len;
  char line[LOGSTORE_LINE_MAX + 1];
  struct buf out;               /* one encoded line */
};

static void output_line_done(struct logstore_writer *w);

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static char *logstore_path(const char *home, int64_t job_id)
{
  struct buf b = BUF_INIT(4096 + 64);

  if (buf_printf(&b, "%s/logs/%lld.jsonl", home, (long long)job_id)) {
    buf_release(&b);
    return NULL;
  }
  return buf_detach(&b);
}

/* O_APPEND|O_CREAT, making the directory only when it is missing. */
static enum err open_log(const char *home, const char *path, int *fd,
                         char *errbuf, size_t errlen)
{
  char dir[4200], msg[128];

  *fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (*fd < 0 && errno == ENOENT) {
    snprintf(dir, sizeof dir, "%s/logs", home);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
      snprintf(errbuf, errlen, "cannot create '%s': %s", dir,
               strerror_r(errno, msg, sizeof msg));
      return ERR_IO;
    }
    *fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  }
  if (*fd < 0) {
    snprintf(errbuf, errlen, "cannot open '%s': %s", path,
             strerror_r(errno, msg, sizeof msg));
    return ERR_IO;
  }
  return ERR_OK;
}

static int64_t mono_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct logstore_writer *writer_new(const char *home, int64_t job_id)
{
  struct logstore_writer *w = calloc(1, sizeof *w);

  if (!w)
    return NULL;
  if (!(w->home = strdup(home))) {
    free(w);
    return NULL;
  }
  pthread_mutex_init(&w->mu, NULL);
  w->fd = -1;
  w->job_id = job_id;
  w->opened = mono_ms();
  buf_init(&w->out, READ_LINE_MAX);
  buf_init(&w->pend, PENDING_MAX + READ_LINE_MAX);
  return w;
}

static void writer_free(struct logstore_writer *w)
{
  if (w->fd >= 0)
    close(w->fd);
  buf_release(&w->out);
  buf_release(&w->pend);
  pthread_mutex_destroy(&w->mu);
  free(w->home);
  free(w);
}

enum err logstore_open(const char *home, int64_t job_id,
                       struct logstore_writer **out, char *errbuf,
                       size_t errlen)
{
  struct logstore_writer *w = writer_new(home, job_id);
  char *path = logstore_path(home, job_id);
  enum err e = ERR_NOMEM;

  *out = NULL;
  if (!w || !path)
    goto out;
  if ((e = open_log(home, path, &w->fd, errbuf, errlen)))
    goto out;
  *out = w;
  w = NULL;
out:
  if (w)
    writer_free(w);
  free(path);
  return e;
}

enum err logstore_open_held(const char *home, int64_t job_id,
                            struct logstore_writer **out)
{
  *out = writer_new(home, job_id);
  if (!*out)
    return ERR_NOMEM;
  (*out)->held = 1;
  return ERR_OK;
}

/* A held log gets its file, with every line held (called with w->mu). */
static void spill(struct logstore_writer *w)
{
  char *path = logstore_path(w->home, w->job_id), why[300];

  w->held = 0;
  if (!path || open_log(w->home, path, &w->fd, why, sizeof why)) {
    log_warn("logstore", "job #%lld goes on without its log: %s", (long long)w->job_id,
             path ? why : "out of memory");
    w->fd = -1;
  }
  free(path);
}

/* Whether a held log has outgrown memory or the job its quickness. */
static int should_spill(const struct logstore_writer *w, size_t more)
{
  return w->held && (w->pend.len + more > LOGSTORE_HOLD_BYTES ||
                     mono_ms() - w->opened >= LOGSTORE_HOLD_MS);
}

/* Writes out the pending lines; what cannot be written is dropped. */
static void write_pending(struct logstore_writer *w)
{
  size_t off = 0;
  ssize_t k;

  if (w->held)
    return;
  while (w->fd >= 0 && off < w->pend.len) {
    k = write(w->fd, w->pend.data + off, w->pend.len - off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      break;
    off += (size_t)k;
  }
  buf_clear(&w->pend);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
  size_t len, i;
  unsigned c = p[0];

  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    len = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4;
  else
    return 0;
  if (len > n)
    return 0;
  for (i = 1; i < len; i++)
    if ((p[i] & 0xC0) != 0x80)
      return 0;
  if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
      (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
    return 0;     /* overlong, surrogate, beyond U+10FFFF */
  return len;
}

static void json_escape(struct buf *b, const char *s, size_t n)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, k;

  while (i < n) {
    unsigned c = p[i];
    if (c == '"' || c == '\\') {
      buf_printf(b, "\\%c", c);
    } else if (c == '\n') {
      buf_appends(b, "\\n");
    } else if (c == '\t') {
      buf_appends(b, "\\t");
    } else if (c < 0x20 || c == 0x7F) {
      buf_printf(b, "\\u%04x", c);
    } else if ((k = utf8_len(p + i, n - i)) == 0) {
      buf_appends(b, "\\ufffd");
    } else {
      buf_append(b, p + i, k);
      i += k;
      continue;
    }
    i++;
  }
}

static void write_line(struct logstore_writer *w, enum log_level level,
                       int step, const char *stream, const char *text)
{
  char when[40], *red = log_redact(text);
  struct timespec ts;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  buf_clear(&w->out);
  buf_printf(&w->out, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"step\":%d,"
             "\"stream\":\"%s\",\"text\":\"", when, ts.tv_nsec / 1000000,
             level_names[level], step, stream);
  red = red ? red : strdup("[unavailable]");
  if (red)
    json_escape(&w->out, red, strlen(red));
  free(red);
  buf_appends(&w->out, "\"}\n");
  pthread_mutex_lock(&w->mu);
  if (should_spill(w, w->out.len))
    spill(w);
  if (w->pend.len + w->out.len > PENDING_MAX)
    write_pending(w);
  buf_append(&w->pend, w->out.data, w->out.len);
  pthread_mutex_unlock(&w->mu);
}

void logstore_event(struct logstore_writer *w, enum log_level level, int step,
                    const char *fmt, ...)
{
  char text[LOGSTORE_LINE_MAX + 1];
  va_list ap;

  if (!w)
    return;
  if (w->len)               /* ends a partial output line */
    output_line_done(w);
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  write_line(w, level, step, "skynet", text);
}

static void output_line_done(struct logstore_writer *w)
{
  /* NUL bytes in the output would cut the line short: show them */
  for (size_t i = 0; i < w->len; i++)
    if (!w->line[i])
      w->line[i] = '?';
  w->line[w->len] = '\0';
  write_line(w, LOGL_INFO, w->step, "output", w->line);
  w->len = 0;
}

void logstore_output(struct logstore_writer *w, int step, const char *data,
                     size_t n)
{
  const char *nl;
  size_t k;

  if (!w)
    return;
  if (w->len && w->step != step)
    output_line_done(w);
  w->step = step;
  while (n) {
    nl = memchr(data, '\n', n);
    k = nl ? (size_t)(nl - data) : n;
    if (k > LOGSTORE_LINE_MAX - w->len)
      k = LOGSTORE_LINE_MAX - w->len;
    memcpy(w->line + w->len, data, k);
    w->len += k;
    data += k;
    n -= k;
    if (n && *data == '\n') {
      data++;
      n--;
      output_line_done(w);
    } else if (w->len == LOGSTORE_LINE_MAX) {
      output_line_done(w);
    }
  }
}

void logstore_flush(struct logstore_writer *w)
{
  if (!w)
    return;
  if (w->len)
    output_line_done(w);
  pthread_mutex_lock(&w->mu);
  if (should_spill(w, 0))
    spill(w);
  write_pending(w);
  pthread_mutex_unlock(&w->mu);
}

void logstore_settle(struct logstore_writer *w)
{
  if (!w)
    return;
  pthread_mutex_lock(&w->mu);
  if (should_spill(w, 0)) {
    spill(w);
    write_pending(w);
  }
  pthread_mutex_unlock(&w->mu);
}

/* Flushes and frees w; lines still held are handed to the caller (give)
 * or to the job's file. */
static char *writer_close(struct logstore_writer *w, int give)
{
  char *lines = NULL;

  if (!w)
    return NULL;
  if (w->len)
    output_line_done(w);
  pthread_mutex_lock(&w->mu);
  if (w->held && w->pend.len) {
    if (give)
      lines = buf_detach(&w->pend);
    else
      spill(w);
  }
  write_pending(w);
  pthread_mutex_unlock(&w->mu);
  writer_free(w);
  return lines;
}

char *logstore_close_held(struct logstore_writer *w)
{
  return writer_close(w, 1);
}

void logstore_close(struct logstore_writer *w)
{
  writer_close(w, 0);
}

enum err logstore_keep(const char *home, int64_t job_id, const char *lines)
{
  struct logstore_writer *w;
  char why[300];
  enum err e;

  if (!lines || !*lines)
    return ERR_OK;
  if ((e = logstore_open(home, job_id, &w, why, sizeof why))) {
    log_warn("logstore", "job #%lld loses its log: %s", (long long)job_id, why);
    return e;
  }
  pthread_mutex_lock(&w->mu);
  buf_appends(&w->pend, lines);
  write_pending(w);
  pthread_mutex_unlock(&w->mu);
  writer_free(w);
  return ERR_OK;
}

/* ---- reading ------------------------------------------------------------ */

static void log_line_release(struct log_line *l)
{
  free(l->time);
  free(l->stream);
  free(l->text);
  memset(l, 0, sizeof *l);
}

void log_line_list_free(struct log_line *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    log_line_release(&v[i]);
  free(v);
}

static const char *jstr(json_object *o, const char *key)
{
  json_object *v;

  if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
    return NULL;
  return json_object_get_string(v);
}

/* Parses one stored line; 0 if it is not one of ours. */
static int parse_line(const char *s, struct log_line *out)
{
  json_object *o = json_tokener_parse(s), *step;
  const char *time, *level, *stream, *text;
  int lv, ok = 0;

  if (!o)
    return 0;
  time = jstr(o, "time");
  level = jstr(o, "level");
  stream = jstr(o, "stream");
  text = jstr(o, "text");
  if (time && level && stream && text && (lv = log_level_parse(level)) >= 0 &&
      json_object_object_get_ex(o, "step", &step)) {
    out->level = (enum log_level)lv;
    out->step = json_object_get_int(step);
    out->time = strdup(time);
    out->stream = strdup(stream);
    out->text = strdup(text);
    ok = out->time && out->stream && out->text;
    if (!ok)
      log_line_release(out);
  }
  json_object_put(o);
  return ok;
}

static int line_matches(const struct log_line *l, const struct log_query *q)
{
  return l->level >= q->min_level && (!q->step || l->step == q->step) &&
         (!q->stream || strcmp(l->stream, q->stream) == 0) &&
         (!q->contains || strstr(l->text, q->contains));
}

/* Reads one line into buf; a line longer than the buffer is skipped
 * whole.  0 at the end of the file. */
static int read_line(FILE *f, char *buf, size_t size, int *skip)
{
  size_t len;

  if (!fgets(buf, (int)size, f))
    return 0;
  len = strlen(buf);
  *skip = 0;
  if (len && buf[len - 1] != '\n' && !feof(f)) {
    int c;
    *skip = 1;
    while ((c = getc(f)) != EOF && c != '\n')
      ;
  }
  return 1;
}

/* Puts the ring (oldest at pos) in order. */
static void ring_order(struct log_line *v, size_t n, size_t pos)
{
  struct log_line *tmp;

  if (!pos || !(tmp = malloc(n * sizeof *tmp)))
    return;
  memcpy(tmp, v + pos, (n - pos) * sizeof *tmp);
  memcpy(tmp + (n - pos), v, pos * sizeof *tmp);
  memcpy(v, tmp, n * sizeof *tmp);
  free(tmp);
}

/* The matching lines kept, a ring of max (oldest at pos once full). */
struct ring {
  struct log_line *v;
  size_t max, count, pos;
};

static void ring_feed(struct ring *r, const char *line, const struct log_query *q)
{
  struct log_line l = {0};

  if (!parse_line(line, &l))
    return;
  if (!line_matches(&l, q)) {
    log_line_release(&l);
    return;
  }
  if (r->count == r->max)
    log_line_release(&r->v[r->pos]);
  r->v[r->pos] = l;
  r->pos = (r->pos + 1) % r->max;
  if (r->count < r->max)
    r->count++;
}

/* The lines kept in the ledger (held, one per '\n'). */
static void ring_feed_text(struct ring *r, const char *held, char *line,
                           const struct log_query *q)
{
  while (held && *held) {
    const char *nl = strchr(held, '\n');
    size_t len = nl ? (size_t)(nl - held) : strlen(held);
    if (len < READ_LINE_MAX) {
      memcpy(line, held, len);
      line[len] = '\0';
      ring_feed(r, line, q);
    }
    held += len + (nl != NULL);
  }
}

enum err logstore_query(const char *home, int64_t job_id, const char *held,
                        const struct log_query *q, struct log_line **out,
                        size_t *n)
{
  char *path = logstore_path(home, job_id), *line = NULL;
  struct ring r = {NULL, q->max ? q->max : 100, 0, 0};
  enum err e = ERR_NOMEM;
  FILE *f = NULL;
  int skip;

  *out = NULL;
  *n = 0;
  if (r.max > LOGSTORE_QUERY_MAX)
    r.max = LOGSTORE_QUERY_MAX;
  if (!path || !(line = malloc(READ_LINE_MAX)) || !(r.v = calloc(r.max, sizeof *r.v)))
    goto out;
  ring_feed_text(&r, held, line, q);
  if (!(f = fopen(path, "re")) && (errno != ENOENT || !held)) {
    e = errno == ENOENT ? ERR_NOTFOUND : ERR_IO;
    goto out;
  }
  while (f && read_line(f, line, READ_LINE_MAX, &skip))
    if (!skip)
      ring_feed(&r, line, q);
  if (r.count == r.max)
    ring_order(r.v, r.count, r.pos);
  *out = r.v;
  *n = r.count;
  r.v = NULL;
  e = ERR_OK;
out:
  if (f)
    fclose(f);
  log_line_list_free(r.v, r.count);
  free(line);
  free(path);
  return e;
}

char *logstore_tail_text(const char *home, int64_t job_id, const char *held,
                         size_t max_lines, size_t max_bytes)
{
  struct log_query q = {LOGL_DEBUG, 0, "output", NULL, max_lines};
  struct buf b = BUF_INIT(max_bytes + 1);
  struct log_line *v;
  size_t n, first = 0, used = 0;

  if (logstore_query(home, job_id, held, &q, &v, &n))
    return NULL;
  /* the newest lines that fit */
  for (first = n; first > 0; first--) {
    size_t len = strlen(v[first - 1].text) + 1;
    if (used + len > max_bytes)
      break;
    used += len;
  }
  for (size_t i = first; i < n; i++)
    buf_printf(&b, "%s%s", v[i].text, i + 1 < n ? "\n" : "");
  log_line_list_free(v, n);
  if (!b.data)
    return strdup("");
  return buf_detach(&b);
}

/* The lines l keeps for job id (malloc'd), or NULL when it keeps none
 * (or there was no memory for them); ERR_DB only when l cannot be read. */
static enum err held_of(struct ledger *l, int64_t id, char **held)
{
  enum err e = l->ops->job_log_get(l, id, held);

  if (e == ERR_DB)
    return e;
  if (e)
    *held = NULL;
  return ERR_OK;
}

enum err logstore_query_job(struct ledger *l, const char *home, int64_t job_id,
                            const struct log_query *q, struct log_line **out, size_t *n)
{
  char *held;
  enum err e = held_of(l, job_id, &held);

  *out = NULL;
  *n = 0;
  if (e)
    return e;
  e = logstore_query(home, job_id, held, q, out, n);
  free(held);
  return e;
}

enum err logstore_tail_job(struct ledger *l, const char *home, int64_t job_id,
                           size_t max_lines, size_t max_bytes, char **out)
{
  char *held;
  enum err e = held_of(l, job_id, &held);

  *out = NULL;
  if (e)
    return e;
  *out = logstore_tail_text(home, job_id, held, max_lines, max_bytes);
  free(held);
  return ERR_OK;
}
