#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

static enum err buf_grow(struct buf *b, size_t need)
{
  size_t cap;
  char *p;

  if (need > b->max || need + 1 < need)
    return ERR_TOOBIG;
  if (need + 1 <= b->cap)
    return ERR_OK;
  cap = b->cap ? b->cap : 64;
  while (cap < need + 1)
    cap *= 2;
  if (cap > b->max + 1)
    cap = b->max + 1;
  p = realloc(b->data, cap);
  if (!p)
    return ERR_NOMEM;
  b->data = p;
  b->cap = cap;
  return ERR_OK;
}

enum err buf_append(struct buf *b, const void *p, size_t n)
{
  enum err e = buf_grow(b, b->len + n);

  if (e)
    return e;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return ERR_OK;
}

enum err buf_appends(struct buf *b, const char *s)
{
  return buf_append(b, s, strlen(s));
}

enum err buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
  va_list ap2;
  int n;
  enum err e;

  va_copy(ap2, ap);
  n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return ERR_INVAL;
  e = buf_grow(b, b->len + (size_t)n);
  if (e)
    return e;
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return ERR_OK;
}

enum err buf_printf(struct buf *b, const char *fmt, ...)
{
  va_list ap;
  enum err e;

  va_start(ap, fmt);
  e = buf_vprintf(b, fmt, ap);
  va_end(ap);
  return e;
}

enum err buf_append_clipped(struct buf *b, const char *s, size_t max)
{
  size_t n = strlen(s);
  enum err e;

  if (n <= max)
    return buf_append(b, s, n);
  while (max && ((unsigned char)s[max] & 0xC0) == 0x80)
    max--;   /* not inside a UTF-8 sequence */
  if ((e = buf_append(b, s, max)))
    return e;
  return buf_appends(b, "…");
}

void buf_clear(struct buf *b)
{
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void buf_release(struct buf *b)
{
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

char *buf_detach(struct buf *b)
{
  char *s = b->data;

  if (!s)
    s = strdup("");
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return s;
}

const char *buf_str(const struct buf *b)
{
  return b->data ? b->data : "";
}
