/* engine/logstore.h — the log store: the full output of every step of a job,
 * as JSON lines in $SKYNET_HOME/logs/<job id>.jsonl.
 *
 * Each line is one object:
 *   {"time":"2026-11-24T17:20:01.123Z","level":"info","step":2,
 *    "stream":"output","text":"one line of what the command printed"}
 * step is 1-based (0: the job itself); stream is "output" (the command's
 * stdout and stderr, interleaved as a terminal shows them) or "skynet"
 * (what the orchestrator says about the step: start, end, timeouts).
 * Output is split at newlines and at LOGSTORE_LINE_MAX bytes; bytes that are
 * not UTF-8 become U+FFFD; registered secrets are redacted.
 *
 * Memory is bounded whatever a command prints: the writer holds one partial
 * line, a query holds at most q->max lines of LOGSTORE_LINE_MAX bytes.
 *
 * A quick job's log may never reach a file: opened with logstore_open_held,
 * its lines wait in memory until the log passes LOGSTORE_HOLD_BYTES or the
 * job LOGSTORE_HOLD_MS, and logstore_close_held hands them to the caller,
 * who keeps them in the ledger (job_log_put).  Queries take those lines
 * (held) and read them before the file's.
 *
 * Thread contract: a writer belongs to one thread (the worker running the
 * job), except logstore_settle, which any thread may call until it is
 * closed.  Queries may run on any thread at any time, also while the job is
 * written; a line being written is skipped. */
#ifndef SKYNET_LOGSTORE_H
#define SKYNET_LOGSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "log.h"

#define LOGSTORE_LINE_MAX 4096
#define LOGSTORE_QUERY_MAX 10000
#define LOGSTORE_HOLD_BYTES (16 * 1024)  /* a held log gets its file past this */
#define LOGSTORE_HOLD_MS 1000            /* ... or once the job has run this long */

struct logstore_writer;
struct ledger;

/* Opens (appends to) the log of job_id under home/logs/, creating the
 * directory.  On failure writes why into errbuf. */
enum err logstore_open(const char *home, int64_t job_id,
                       struct logstore_writer **out, char *errbuf,
                       size_t errlen);
/* A writer whose lines are held in memory, with no file yet (see above);
 * ERR_NOMEM only. */
enum err logstore_open_held(const char *home, int64_t job_id,
                            struct logstore_writer **out);
/* Flushes any partial line and closes; a held log gets its file.
 * NULL-safe. */
void logstore_close(struct logstore_writer *w);
/* Closes; the lines still held (malloc'd JSON lines, each ending in '\n'),
 * for the caller to keep, or NULL when they are in the file (or there are
 * none).  NULL-safe. */
char *logstore_close_held(struct logstore_writer *w);
/* From any thread: a held log whose job has run LOGSTORE_HOLD_MS gets its
 * file now (a step that prints nothing would not get there itself), so
 * that a query shows what the job has done so far.  NULL-safe. */
void logstore_settle(struct logstore_writer *w);
/* Appends lines (as logstore_close_held returned them) to the job's file:
 * held lines that the ledger will not keep. */
enum err logstore_keep(const char *home, int64_t job_id, const char *lines);
/* One line from skynet itself (stream "skynet"), written out at the next
 * logstore_flush or close.  NULL-safe. */
void logstore_event(struct logstore_writer *w, enum log_level level, int step,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* A chunk of a step's output (stream "output"), as it arrives; a line
 * may span chunks.  NULL-safe. */
void logstore_output(struct logstore_writer *w, int step, const char *data,
                     size_t n);
/* Writes out the partial line of the output, if any, and every line held
 * (call before a step runs and at its end).  NULL-safe. */
void logstore_flush(struct logstore_writer *w);

struct log_line {
  char *time;               /* as written, UTC */
  enum log_level level;
  int step;
  char *stream;
  char *text;
};

struct log_query {
  enum log_level min_level; /* LOGL_DEBUG → every line */
  int step;                 /* 0 → every step */
  const char *stream;       /* NULL → both */
  const char *contains;     /* NULL → no search; else a plain substring */
  size_t max;               /* keep the last max matching lines; 0 → 100,
                             * at most LOGSTORE_QUERY_MAX */
};

/* The last q->max lines of the job's log that match q, oldest first: the
 * lines kept in the ledger (held, or NULL), then the file's.
 * ERR_NOTFOUND when the job has neither.  Caller frees with
 * log_line_list_free(). */
enum err logstore_query(const char *home, int64_t job_id, const char *held,
                        const struct log_query *q, struct log_line **out,
                        size_t *n);
void log_line_list_free(struct log_line *v, size_t n);

/* The output tail for chat: the last lines of the job's output (all steps)
 * up to max_bytes, "" when there is none; malloc'd, NULL when there is no
 * log. */
char *logstore_tail_text(const char *home, int64_t job_id, const char *held,
                         size_t max_lines, size_t max_bytes);

/* The same for a job's log as it stands: the lines ledger l keeps for it
 * (a quick job's), then its file's.  ERR_DB when l cannot be read; else
 * what logstore_query returns. */
enum err logstore_query_job(struct ledger *l, const char *home, int64_t job_id,
                            const struct log_query *q, struct log_line **out, size_t *n);
/* ERR_DB when l cannot be read; else ERR_OK, *out as logstore_tail_text
 * returns it. */
enum err logstore_tail_job(struct ledger *l, const char *home, int64_t job_id,
                           size_t max_lines, size_t max_bytes, char **out);

#endif
