/* engine/archive.h — the artifact store: files that steps produced, kept by
 * content.
 *
 * A step lists the files to keep in its args: "artifacts": ["/abs/path", ...]
 * (plan.h).  After the step succeeds each file is read from skynet's own file
 * system (local and sandbox providers; a sandbox may write the artifacts'
 * directories), or through the provider that ran the step (ssh, docker,
 * gateway), hashed with SHA-256 while it is copied to
 * $SKYNET_HOME/artifacts/<sha256>, and recorded in the ledger (struct
 * artifact: job, step, name, size, hash).  Equal content is stored once.
 * A file larger than archive.max_bytes is refused with a message naming the
 * file, its size and the key.
 *
 * Thread contract: any thread, each with its own ledger; concurrent puts of
 * the same content are safe (each writes a temp file and renames it). */
#ifndef SKYNET_ARCHIVE_H
#define SKYNET_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ledger/ledger.h"

/* Copies the regular file at path into home/artifacts/ and hands out its
 * hash (lowercase hex) and size.  ERR_NOTFOUND when it does not exist,
 * ERR_INVAL when it is not a regular file, ERR_TOOBIG over max_bytes,
 * ERR_IO otherwise; why in errbuf. */
enum err archive_put_file(const char *home, size_t max_bytes, const char *path,
                          char sha256[65], int64_t *size, char *errbuf,
                          size_t errlen);
/* archive_put_file(), then the ledger row for job_id's step (1-based);
 * out (may be NULL) receives the row, its name borrowed from path. */
enum err archive_keep(const char *home, size_t max_bytes, struct ledger *l,
                      int64_t job_id, int step, const char *path,
                      struct artifact *out, char *errbuf, size_t errlen);
/* archive_keep() of a file on the host where inst runs its steps (ssh,
 * docker, gateway): read there with `cat -- path` through the instance,
 * streamed into the store, refused over max_bytes. */
struct exec_instance;
enum err archive_keep_from(const char *home, size_t max_bytes, struct ledger *l,
                           int64_t job_id, int step, struct exec_instance *inst,
                           const char *path, int timeout_ms, struct artifact *out,
                           char *errbuf, size_t errlen);
/* Where the content of sha256 is stored; malloc'd.  NULL if sha256 is not
 * 64 hex digits. */
char *archive_path(const char *home, const char *sha256);
/* SHA-256 of a memory block, lowercase hex. */
void archive_sha256_hex(const void *data, size_t n, char out[65]);

#endif
