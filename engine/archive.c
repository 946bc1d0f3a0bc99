/* engine/archive.c — see archive.h. */
#include "archive.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "providers/exec/exec.h"

#define COPY_CHUNK 65536

/* mbedtls 3 dropped the _ret suffix that 2.x needs. */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define sha_starts mbedtls_sha256_starts
#define sha_update mbedtls_sha256_update
#define sha_finish mbedtls_sha256_finish
#else
#define sha_starts mbedtls_sha256_starts_ret
#define sha_update mbedtls_sha256_update_ret
#define sha_finish mbedtls_sha256_finish_ret
#endif

static void to_hex(const unsigned char *d, char out[65])
{
  static const char hex[] = "0123456789abcdef";

  for (int i = 0; i < 32; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  out[64] = '\0';
}

void archive_sha256_hex(const void *data, size_t n, char out[65])
{
  unsigned char d[32];

  mbedtls_sha256_context ctx;
  mbedtls_sha256_init(&ctx);
  sha_starts(&ctx, 0);
  sha_update(&ctx, data, n);
  sha_finish(&ctx, d);
  mbedtls_sha256_free(&ctx);
  to_hex(d, out);
}

char *archive_path(const char *home, const char *sha256)
{
  struct buf b = BUF_INIT(8192);

  if (!sha256 || strlen(sha256) != 64 || strspn(sha256, "0123456789abcdef") != 64)
    return NULL;
  if (buf_printf(&b, "%s/artifacts/%s", home, sha256)) {
    buf_release(&b);
    return NULL;
  }
  return buf_detach(&b);
}

static enum err sys_fail(char *errbuf, size_t errlen, const char *what,
                         const char *path)
{
  int e = errno;
  char msg[128];

  snprintf(errbuf, errlen, "cannot %s '%.300s': %s", what, path, strerror_r(e, msg, sizeof msg));
  return e == ENOENT ? ERR_NOTFOUND : ERR_IO;
}

static enum err too_big(char *errbuf, size_t errlen, const char *path,
                        long long size, size_t max)
{
  snprintf(errbuf, errlen, "artifact '%.300s' is %lld bytes, over the archive.max_bytes "
           "limit of %zu", path, size, max);
  return ERR_TOOBIG;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Copies in to out while hashing; the size limit holds also for a file
 * that grows while it is read. */
static enum err copy_hash(int in, int out, const char *path, size_t max,
                          char sha256[65], int64_t *size, char *errbuf,
                          size_t errlen)
{
  mbedtls_sha256_context ctx;
  unsigned char *chunk = malloc(COPY_CHUNK), d[32];
  long long total = 0;
  enum err e = ERR_OK;
  ssize_t n;

  if (!chunk)
    return ERR_NOMEM;
  mbedtls_sha256_init(&ctx);
  sha_starts(&ctx, 0);
  for (;;) {
    n = read(in, chunk, COPY_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      e = sys_fail(errbuf, errlen, "read", path);
      break;
    }
    if (n == 0)
      break;
    total += n;
    if ((size_t)total > max) {
      e = too_big(errbuf, errlen, path, total, max);
      break;
    }
    sha_update(&ctx, chunk, (size_t)n);
    if (write_all(out, chunk, (size_t)n) < 0) {
      e = sys_fail(errbuf, errlen, "write the copy of", path);
      break;
    }
  }
  sha_finish(&ctx, d);
  mbedtls_sha256_free(&ctx);
  free(chunk);
  to_hex(d, sha256);
  *size = total;
  return e;
}

/* home/artifacts, made if missing; malloc'd into *dir. */
static enum err store_dir(const char *home, char **dir, char *errbuf, size_t errlen)
{
  struct buf b = BUF_INIT(8192);

  if (buf_printf(&b, "%s/artifacts", home)) {
    buf_release(&b);
    snprintf(errbuf, errlen, "the home path is too long");
    return ERR_TOOBIG;
  }
  if (mkdir(buf_str(&b), 0700) < 0 && errno != EEXIST) {
    enum err e = sys_fail(errbuf, errlen, "create", buf_str(&b));
    buf_release(&b);
    return e;
  }
  *dir = buf_detach(&b);
  return *dir ? ERR_OK : ERR_NOMEM;
}

static enum err open_source(const char *path, size_t max, int *fd,
                            char *errbuf, size_t errlen)
{
  struct stat st;

  if ((*fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
    return sys_fail(errbuf, errlen, "open artifact", path);
  if (fstat(*fd, &st) < 0)
    return sys_fail(errbuf, errlen, "stat artifact", path);
  if (!S_ISREG(st.st_mode)) {
    snprintf(errbuf, errlen, "artifact '%.300s' is not a regular file", path);
    return ERR_INVAL;
  }
  if ((size_t)st.st_size > max)
    return too_big(errbuf, errlen, path, (long long)st.st_size, max);
  return ERR_OK;
}

enum err archive_put_file(const char *home, size_t max_bytes, const char *path,
                          char sha256[65], int64_t *size, char *errbuf,
                          size_t errlen)
{
  char *dir = NULL, *tmp = NULL, *final = NULL;
  int in = -1, out = -1;
  enum err e;

  *size = 0;
  sha256[0] = '\0';
  if ((e = open_source(path, max_bytes, &in, errbuf, errlen)) ||
      (e = store_dir(home, &dir, errbuf, errlen)))
    goto out;
  e = ERR_NOMEM;
  size_t tlen = strlen(dir) + 16;
  if (!(tmp = malloc(tlen)))
    goto out;
  snprintf(tmp, tlen, "%s/.tmp-XXXXXX", dir);
  if ((out = mkostemp(tmp, O_CLOEXEC)) < 0) {
    e = sys_fail(errbuf, errlen, "create a file in", dir);
    free(tmp);
    tmp = NULL;
    goto out;
  }
  if ((e = copy_hash(in, out, path, max_bytes, sha256, size, errbuf, errlen)))
    goto out;
  if (fsync(out) < 0) {
    e = sys_fail(errbuf, errlen, "sync the copy of", path);
    goto out;
  }
  e = ERR_NOMEM;
  if (!(final = archive_path(home, sha256)))
    goto out;
  /* same hash, same bytes: replacing an existing copy changes nothing */
  if (rename(tmp, final) < 0) {
    e = sys_fail(errbuf, errlen, "store the copy of", path);
    goto out;
  }
  free(tmp);
  tmp = NULL;
  e = ERR_OK;
out:
  if (out >= 0)
    close(out);
  if (in >= 0)
    close(in);
  if (tmp)
    unlink(tmp);
  free(tmp);
  free(final);
  free(dir);
  if (e)
    sha256[0] = '\0';
  return e;
}

/* archive_put_file() of file, recorded under name. */
static enum err keep_as(const char *home, size_t max_bytes, struct ledger *l, int64_t job_id,
                        int step, const char *file, const char *name, struct artifact *out,
                        char *errbuf, size_t errlen)
{
  struct artifact a = {0};
  enum err e;

  if ((e = archive_put_file(home, max_bytes, file, a.sha256, &a.size, errbuf, errlen)))
    return e;
  a.job_id = job_id;
  a.step = step;
  a.name = (char *)name;
  if ((e = l->ops->artifact_add(l, &a))) {
    snprintf(errbuf, errlen, "cannot record artifact '%.300s': %s", name, l->errmsg);
    return e;
  }
  if (out)
    *out = a;
  return ERR_OK;
}

enum err archive_keep(const char *home, size_t max_bytes, struct ledger *l,
                      int64_t job_id, int step, const char *path,
                      struct artifact *out, char *errbuf, size_t errlen)
{
  return keep_as(home, max_bytes, l, job_id, step, path, path, out, errbuf, errlen);
}

/* ---- from another host ------------------------------------------------- */

struct fetch {
  int fd;
  size_t n, max;
  int too_big, werr;
  atomic_int cancel;
};

static void fetch_out(void *ud, const char *data, size_t n)
{
  struct fetch *f = ud;

  if (f->too_big || f->werr)
    return;
  if (f->n + n > f->max) {
    f->too_big = 1;
    atomic_store(&f->cancel, 1);
    return;
  }
  for (size_t off = 0; off < n;) {
    ssize_t w = write(f->fd, data + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      f->werr = 1;
      atomic_store(&f->cancel, 1);
      return;
    }
    off += (size_t)w;
  }
  f->n += n;
}

enum err archive_keep_from(const char *home, size_t max_bytes, struct ledger *l,
                           int64_t job_id, int step, struct exec_instance *inst,
                           const char *path, int timeout_ms, struct artifact *out,
                           char *errbuf, size_t errlen)
{
  const char *argv[] = {"cat", "--", path, NULL};
  struct fetch f = {.fd = -1, .max = max_bytes};
  struct exec_request req = {.argv = argv, .timeout_ms = timeout_ms, .capture_max = 512,
                             .on_output = fetch_out, .ud = &f, .cancel = &f.cancel};
  struct exec_result res = {0};
  char *dir = NULL, *tmp = NULL;
  enum err e;

  if ((e = store_dir(home, &dir, errbuf, errlen)))
    return e;
  e = ERR_NOMEM;
  size_t tlen = strlen(dir) + 20;
  if (!(tmp = malloc(tlen)))
    goto out;
  snprintf(tmp, tlen, "%s/.fetch-XXXXXX", dir);
  if ((f.fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
    e = sys_fail(errbuf, errlen, "create a file in", dir);
    free(tmp);
    tmp = NULL;
    goto out;
  }
  e = inst->backend->run(inst, &req, &res);
  if (f.too_big) {
    snprintf(errbuf, errlen, "artifact '%.300s' is larger than archive.max_bytes (%zu bytes)",
             path, max_bytes);
    e = ERR_TOOBIG;
  } else if (f.werr) {
    e = sys_fail(errbuf, errlen, "write the copy of", path);
  } else if (e || res.exit_code != 0) {
    char *nl = res.output ? strchr(res.output, '\n') : NULL;
    if (nl)
      *nl = '\0';
    snprintf(errbuf, errlen, "cannot read artifact '%.300s' on '%s': %.200s", path, inst->name,
             res.error[0] ? res.error : res.output && res.output[0] ? res.output : err_str(e));
    e = e ? e : ERR_NOTFOUND;
  } else {
    e = keep_as(home, max_bytes, l, job_id, step, tmp, path, out, errbuf, errlen);
  }
out:
  exec_result_release(&res);
  if (f.fd >= 0)
    close(f.fd);
  if (tmp)
    unlink(tmp);
  free(tmp);
  free(dir);
  return e;
}
