/* engine/buf.h — a growable byte buffer with a hard maximum.
 *
 * Every buffer that holds outside input is created with the most it may ever
 * hold; growing past it fails with ERR_TOOBIG and leaves the buffer as it was.
 * data is always NUL-terminated (when non-NULL).  Not thread-safe: one owner. */
#ifndef SKYNET_BUF_H
#define SKYNET_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "err.h"

struct buf {
  char *data;
  size_t len;
  size_t cap;
  size_t max;
};

#define BUF_INIT(maxbytes) {NULL, 0, 0, (maxbytes)}

void buf_init(struct buf *b, size_t max);
enum err buf_append(struct buf *b, const void *p, size_t n);
enum err buf_appends(struct buf *b, const char *s);
enum err buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum err buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Appends at most max bytes of s, never splitting a UTF-8 sequence, and "…"
 * when s was longer. */
enum err buf_append_clipped(struct buf *b, const char *s, size_t max);
/* Empties the buffer, keeps its memory. */
void buf_clear(struct buf *b);
/* Frees what the buffer holds (not the struct itself). */
void buf_release(struct buf *b);
/* Hands the string to the caller (free() it); the buffer is left empty.
 * Never NULL unless out of memory. */
char *buf_detach(struct buf *b);
/* A buffer's text or "" when it is empty. */
const char *buf_str(const struct buf *b);

#endif
