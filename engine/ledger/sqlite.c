/* engine/ledger/sqlite.c — the SQLite ledger backend (embedded default).
 *
 * DESIGN: one sqlite3 connection per struct ledger, so per thread.  The file
 * is in WAL mode so readers never block the writer; writers serialise through
 * SQLite's lock with a busy timeout, and every write that must be atomic runs
 * in BEGIN IMMEDIATE so that compare-and-set state changes cannot interleave
 * between connections or processes.
 *
 * Durability: a committed job, approval, offset or notification survives a
 * power cut, as with synchronous=FULL, but the disk sync is shared (a group
 * commit).  Connections run with synchronous=NORMAL, so a COMMIT writes its
 * frames to the WAL and releases the write lock without syncing; the WAL
 * hook, which SQLite calls after every commit on the committing thread,
 * then waits until a sync of the WAL file that began after this commit has
 * finished (sl_group_sync), and only then does the COMMIT (or the
 * autocommit statement) return.  Connections of one process to one file
 * share that wait: one of them syncs while the others commit, and the next
 * sync carries every commit made meanwhile.  A failed sync fails the
 * statement (the commit may not be durable).  A checkpoint syncs the WAL
 * before it copies frames into the database, and the WAL is only rewritten
 * after a complete checkpoint, so a frame is durable either way.  With
 * FULL, each commit synced inside the write lock: concurrent submitters
 * queued behind each other's syncs. */
#include "ledger.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../log.h"
#include "migrations.h"

#define SL_KEPT 32

#define SL_AUTOCHECKPOINT 1000   /* WAL frames, as SQLite's own default */
#define SL_WAL_HDR 32            /* bytes before the WAL's first frame */
#define SL_WAL_LOW 64            /* frames of written room the WAL keeps ahead */
#define SL_WAL_HIGH 128          /* ... grown to this many at a time */

/* The group sync of one database file in this process (by device and
 * inode), shared by its connections. */
struct sl_sync {
  struct sl_sync *next;
  dev_t dev;
  ino_t ino;
  int refs;                 /* under sl_syncs_mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t commits;         /* tickets: one per write transaction, taken by
                             * the commit hook, before its frames are written
                             * (so before anyone can see it) */
  uint64_t written;         /* every ticket up to this one is in the WAL file
                             * (or wrote nothing) */
  uint64_t synced;          /* every ticket up to this one is durable */
  uint64_t started, done;   /* syncs begun; the last that finished well */
  int frames;               /* in the WAL after the last commit of ours */
  sqlite3_int64 wal_room;   /* the WAL file is at least this long (0: not
                             * known yet; see sl_wal_reserve) */
  int syncing;              /* a sync is under way */
  int shm_fd;               /* the -shm file, read-only, or -1 (sl_wal_state) */
  char *shm_path;
  unsigned char sync_state[48];   /* the WAL the sync under way covers */
  unsigned char done_state[48];   /* ... and the last that finished well */
  int sync_known, done_known;     /* those two are set */
  pthread_mutex_t ckpt_mu;  /* held by the connection checkpointing */
  int ckpt_failed_at;       /* frames when the last checkpoint gave up
                             * (ckpt_mu), else 0 */
  pthread_mutex_t wmu;      /* held by the connection of this process that
                             * holds (or waits for) the file's write lock
                             * in an explicit transaction: the others queue
                             * here, asleep, instead of polling the lock */
};

static pthread_mutex_t sl_syncs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sl_sync *sl_syncs;

struct sqlite_ledger {
  struct ledger base;
  sqlite3 *db;
  struct sl_sync *sync;     /* NULL: this connection syncs on its own */
  uint64_t ticket;          /* of its last write transaction */
  int lazy;                 /* commits do not wait for the disk */
  int wal;                  /* in WAL mode, with the group sync (else FULL) */
  int in_tx;                /* inside a caller's begin/commit */
  int wmu_held;             /* holds sync->wmu */
  int checkpointing;        /* in sl_checkpoint: its busy waits are short */
  int page_size;
  struct {
    const char *sql;        /* a string literal: its address is the key
                             * (see sl_prep_keyed) */
    sqlite3_stmt *st;
  } kept[SL_KEPT];          /* hot statements, prepared once */
};

static struct sqlite_ledger *sl_of(struct ledger *l)
{
  return (struct sqlite_ledger *)l;
}

static enum err sl_fail(struct sqlite_ledger *s, const char *what)
{
  snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s: %s", what,
           sqlite3_errmsg(s->db));
  log_error("ledger", "sqlite %s", s->base.errmsg);
  return ERR_DB;
}

static enum err sl_exec(struct sqlite_ledger *s, const char *sql)
{
  char *msg = NULL;

  if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    snprintf(s->base.errmsg, sizeof s->base.errmsg, "%s", msg ? msg : "?");
    log_error("ledger", "sqlite exec failed: %s", s->base.errmsg);
    sqlite3_free(msg);
    return ERR_DB;
  }
  return ERR_OK;
}

static sqlite3_stmt *sl_prep(struct sqlite_ledger *s, const char *sql)
{
  sqlite3_stmt *st = NULL;

  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
    sl_fail(s, "prepare");
    return NULL;
  }
  return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null(st, i);
}

static char *col_text(sqlite3_stmt *st, int i)
{
  const unsigned char *t = sqlite3_column_text(st, i);

  return t ? strdup((const char *)t) : NULL;
}

/* A statement of a hot path (an update's insert, the offset, an outbox
 * state; a job's creation, claim, steps and result), prepared once per
 * connection: compiling it each time was about half of the cost of
 * handling an update.  key must be a string literal that stands for sql
 * (usually sql itself).  Finish it with sl_done() or sl_release(), which
 * reset rather than finalize it. */
static sqlite3_stmt *sl_prep_keyed(struct sqlite_ledger *s, const char *key,
                                   const char *sql)
{
  sqlite3_stmt *st;

  for (int i = 0; i < SL_KEPT && s->kept[i].sql; i++)
    if (s->kept[i].sql == key)
      return s->kept[i].st;
  if (!(st = sl_prep(s, sql)))
    return NULL;
  for (int i = 0; i < SL_KEPT; i++)
    if (!s->kept[i].sql) {
      s->kept[i].sql = key;
      s->kept[i].st = st;
      break;
    }
  return st;                /* table full: an ordinary statement */
}

static sqlite3_stmt *sl_prep_kept(struct sqlite_ledger *s, const char *sql)
{
  return sl_prep_keyed(s, sql, sql);
}

static int sl_is_kept(const struct sqlite_ledger *s, const sqlite3_stmt *st)
{
  for (int i = 0; i < SL_KEPT && s->kept[i].sql; i++)
    if (s->kept[i].st == st)
      return 1;
  return 0;
}

/* Done with st: reset when it is kept, else finalized. */
static void sl_release(struct sqlite_ledger *s, sqlite3_stmt *st)
{
  if (sl_is_kept(s, st)) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  } else {
    sqlite3_finalize(st);
  }
}

/* Runs a prepared statement that returns no rows, then finalizes it (or
 * resets it for the next use when it is kept). */
static enum err sl_done(struct sqlite_ledger *s, sqlite3_stmt *st)
{
  int rc = sqlite3_step(st);
  enum err e = ERR_OK;

  if (rc != SQLITE_DONE && rc != SQLITE_ROW)
    e = sl_fail(s, "step");
  sl_release(s, st);
  return e;
}

/* Lets the next writer of this process in once s's write transaction has
 * ended (committed, rolled back, or never begun). */
static void sl_write_settle(struct sqlite_ledger *s)
{
  struct sl_sync *g = s->sync;

  if (s->wmu_held && sqlite3_get_autocommit(s->db)) {
    s->wmu_held = 0;
    pthread_mutex_unlock(&g->wmu);
  }
}

/* BEGIN IMMEDIATE, queued behind the other writers of this process: with
 * four submitters, the writer thread and the claims all polling SQLite's
 * lock, the polls cost more CPU than the work. */
static enum err sl_write_begin(struct sqlite_ledger *s)
{
  enum err e;

  if (s->sync && !s->wmu_held) {
    pthread_mutex_lock(&s->sync->wmu);
    s->wmu_held = 1;
  }
  e = sl_exec(s, "BEGIN IMMEDIATE");
  sl_write_settle(s);
  return e;
}

/* COMMIT or ROLLBACK (sql) of a write transaction.  A COMMIT that fails
 * may leave the transaction open (SQLITE_BUSY, a deferred constraint): it
 * is rolled back here, as PostgreSQL does, so that the connection is usable
 * again and the next writer of this process is let in. */
static enum err sl_write_end(struct sqlite_ledger *s, const char *sql)
{
  enum err e = sl_exec(s, sql);

  if (e && !sqlite3_get_autocommit(s->db))
    sl_exec(s, "ROLLBACK");
  sl_write_settle(s);
  return e;
}

/* The integer a PRAGMA query answers (def when it answers no row). */
static enum err sl_pragma_int(struct sqlite_ledger *s, const char *sql, int def, int *out)
{
  sqlite3_stmt *st = sl_prep(s, sql);

  if (!st)
    return ERR_DB;
  *out = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : def;
  sqlite3_finalize(st);
  return ERR_OK;
}

/* Own transaction unless the caller holds one. */
static enum err tx_begin(struct sqlite_ledger *s)
{
  return s->in_tx ? ERR_OK : sl_write_begin(s);
}

static enum err tx_end(struct sqlite_ledger *s, enum err e)
{
  if (s->in_tx)
    return e;
  if (e == ERR_OK)
    return sl_write_end(s, "COMMIT");
  sl_write_end(s, "ROLLBACK");
  return e;
}

/* The WAL's state as the wal-index header in the -shm file describes it
 * (SQLite's documented WAL format: 48 bytes, kept twice; they differ only
 * while a commit updates them).  It changes with every commit (a change
 * counter, the last frame, its checksum, the salts), and it is updated
 * only after the commit's frames are written.  0 and state set when read
 * whole and consistent.  With g->mu held (the file is opened once it
 * exists: a new database has none before its first transaction). */
static int sl_wal_state(struct sl_sync *g, unsigned char state[48])
{
  unsigned char b[96];

  if (g->shm_fd < 0 && g->shm_path)
    g->shm_fd = open(g->shm_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (g->shm_fd < 0 || pread(g->shm_fd, b, sizeof b, 0) != (ssize_t)sizeof b ||
      memcmp(b, b + 48, 48) != 0)
    return -1;
  memcpy(state, b, 48);
  return 0;
}

/* The group sync of the file at path (NULL when it cannot be had: the
 * connection then syncs each commit itself). */
static struct sl_sync *sl_sync_get(const char *path)
{
  struct sl_sync *g;
  struct stat st;

  if (stat(path, &st) != 0)
    return NULL;
  pthread_mutex_lock(&sl_syncs_mu);
  for (g = sl_syncs; g && (g->dev != st.st_dev || g->ino != st.st_ino); g = g->next)
    ;
  if (!g && (g = calloc(1, sizeof *g))) {
    g->dev = st.st_dev;
    g->ino = st.st_ino;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    pthread_mutex_init(&g->wmu, NULL);
    pthread_mutex_init(&g->ckpt_mu, NULL);
    g->shm_fd = -1;
    g->shm_path = malloc(strlen(path) + 5);
    if (g->shm_path)
      sprintf(g->shm_path, "%s-shm", path);
    g->next = sl_syncs;
    sl_syncs = g;
  }
  if (g)
    g->refs++;
  pthread_mutex_unlock(&sl_syncs_mu);
  return g;
}

static void sl_sync_put(struct sl_sync *g)
{
  struct sl_sync **p;

  if (!g)
    return;
  pthread_mutex_lock(&sl_syncs_mu);
  if (--g->refs == 0) {
    for (p = &sl_syncs; *p != g; p = &(*p)->next)
      ;
    *p = g->next;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->wmu);
    pthread_mutex_destroy(&g->ckpt_mu);
    if (g->shm_fd >= 0)
      close(g->shm_fd);
    free(g->shm_path);
    free(g);
  }
  pthread_mutex_unlock(&sl_syncs_mu);
}

/* SQLite's own file object for the WAL of db's schema name, or NULL. */
static sqlite3_file *sl_wal_file(sqlite3 *db, const char *name)
{
  sqlite3_file *f = NULL;

  if (sqlite3_file_control(db, name, SQLITE_FCNTL_JOURNAL_POINTER, &f) != SQLITE_OK || !f ||
      !f->pMethods)
    return NULL;
  return f;
}

/* Syncs the WAL file of db's schema name (the same fdatasync a FULL commit
 * does). */
static int sl_sync_wal(sqlite3 *db, const char *name)
{
  sqlite3_file *f = sl_wal_file(db, name);

  return f ? f->pMethods->xSync(f, SQLITE_SYNC_NORMAL) : SQLITE_IOERR_FSYNC;
}

/* One sync of the WAL for the group, by this thread: called with g->mu
 * held and no sync under way; returns with g->mu held. */
static int sl_lead_sync(struct sl_sync *g, sqlite3 *db, const char *name)
{
  uint64_t upto = g->written, gen = ++g->started;
  int rc;

  g->sync_known = sl_wal_state(g, g->sync_state) == 0;
  g->syncing = 1;
  pthread_mutex_unlock(&g->mu);
  rc = sl_sync_wal(db, name);
  pthread_mutex_lock(&g->mu);
  g->syncing = 0;
  if (rc == SQLITE_OK) {
    if (upto > g->synced)
      g->synced = upto;
    g->done = gen;
    g->done_known = g->sync_known;
    memcpy(g->done_state, g->sync_state, sizeof g->done_state);
  }
  pthread_cond_broadcast(&g->cv);
  return rc;
}

/* Returns once the commit with ticket `mine`, whose frames are written, is
 * durable: the first committer to find no sync under way syncs for every
 * commit written before it began; the others wait for it, or for the next.
 * A waiter whose sync failed tries its own (the kernel reports a failed
 * write-back to every open file of it), so a failure is never taken for
 * success.  The leader syncs at once: commits under way while it syncs
 * ride the next one.  (Waiting up to 200 us for the connections still in
 * a write transaction, so that one sync carried them too, made it slower:
 * four submitters with four workers ran ~7,600 jobs/s with it and ~8,100
 * without, and one submitter no faster.) */
static int sl_group_sync(struct sl_sync *g, sqlite3 *db, const char *name, uint64_t mine)
{
  int rc = SQLITE_OK;

  pthread_mutex_lock(&g->mu);
  while (g->synced < mine && rc == SQLITE_OK) {
    if (g->syncing)
      pthread_cond_wait(&g->cv, &g->mu);
    else
      rc = sl_lead_sync(g, db, name);
  }
  pthread_mutex_unlock(&g->mu);
  return rc;
}

/* Keeps written room in the WAL file ahead of its frames (called with the
 * write lock held, so nobody appends meanwhile).  A commit that appends to
 * the file changes its size, and its sync then writes the inode as well:
 * on this machine's disk one-row commits ran at ~4,000/s overwriting
 * against ~1,800/s appending, and /help's reply p50 went from 1.85-2.30 to
 * 1.62-1.82 ms (bench_telegram, plain HTTP, a new database).  SQLite reuses the
 * WAL from its start after a checkpoint, so a long-lived ledger mostly
 * overwrites; a new one would append for its first thousand frames, and
 * whenever readers hold a checkpoint back.  Zeros past the last frame are
 * what SQLite itself leaves there after a restart: they fail the frame
 * checksum, so recovery stops before them.  Not synced here: the commit's
 * own sync carries them.  A failure only leaves the room unwritten.
 * *room caches the file's length, so that a commit asks for it (fstat)
 * only when the frames come near it: on this kernel (multigrain
 * timestamps) a stat makes the next write stamp a new mtime, and on this
 * disk (ext4 without a journal) every sync then writes the inode block as
 * well; one fstat per commit cost ~15% of the submissions a second. */
static void sl_wal_reserve(struct sqlite_ledger *s, int frames, sqlite3_int64 *room)
{
  static const char zeros[64 * 1024];
  const sqlite3_int64 chunk = sizeof zeros, fsz = s->page_size + 24;
  const sqlite3_int64 need = SL_WAL_HDR + (frames + SL_WAL_LOW) * fsz;
  sqlite3_int64 size, want;
  sqlite3_file *f;

  if (*room >= need || !(f = sl_wal_file(s->db, "main")) ||
      f->pMethods->xFileSize(f, &size) != SQLITE_OK)
    return;
  *room = size;
  if (size >= need)
    return;
  want = (SL_WAL_HDR + (frames + SL_WAL_HIGH) * fsz + chunk - 1) / chunk * chunk;
  while (size < want) {
    sqlite3_int64 n = chunk - size % chunk;   /* up to the next chunk boundary */
    if (f->pMethods->xWrite(f, zeros, (int)n, size) != SQLITE_OK)
      return;
    *room = size += n;
  }
}

/* Before a write transaction's frames are written (the write lock held):
 * its ticket, and room in the WAL for its frames. */
static int sl_commit_hook(void *ud)
{
  struct sqlite_ledger *s = ud;
  sqlite3_int64 room;
  int frames;

  pthread_mutex_lock(&s->sync->mu);
  s->ticket = ++s->sync->commits;
  frames = s->sync->frames;
  room = s->sync->wal_room;
  pthread_mutex_unlock(&s->sync->mu);
  sl_wal_reserve(s, frames, &room);   /* the write lock is held: no other
                                       * commit of ours grows the file now */
  pthread_mutex_lock(&s->sync->mu);
  s->sync->wal_room = room;
  pthread_mutex_unlock(&s->sync->mu);
  return 0;
}

/* Copies the WAL's frames back into the database file, so that the next
 * writer starts the WAL again from its beginning.  It can only when the
 * checkpoint took every frame: a passive one that runs while others commit
 * never catches up, and then every commit past SL_AUTOCHECKPOINT frames ran
 * a checkpoint of its own, with a sync of the database file (four
 * submitters: one database sync per two commits, and a WAL that grew past
 * 40 MB).  So a passive checkpoint copies the bulk while the others go on
 * committing, and then, unless it took every frame, a RESTART checkpoint
 * the rest: it holds SQLite's write lock until it is done and waits (busy
 * handler) for readers still on the old frames, while the writers of this
 * process wait asleep (g->wmu).  (A RESTART alone held the writers for the
 * whole copy: one burst's enqueue->start p99 was 87 ms.)  One connection at
 * a time checkpoints.  It waits for others' locks ~2 ms at most (a reader
 * that keeps an old snapshot would otherwise hold every writer of the
 * process for the busy handler's 10 s), and gives up: the frames it copied
 * stay copied. */
static void sl_checkpoint(struct sqlite_ledger *s, sqlite3 *db, const char *name, int frames)
{
  struct sl_sync *g = s->sync;
  int rc, log = 0, copied = 0;

  if (!g) {
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return;
  }
  if (s->wmu_held || pthread_mutex_trylock(&g->ckpt_mu) != 0)
    return;                     /* another connection is at it */
  /* After one that gave up (a reader stayed on the old frames), not at
   * every commit: again 250 frames later, or once the WAL started again. */
  if (g->ckpt_failed_at && frames >= g->ckpt_failed_at && frames < g->ckpt_failed_at + 250) {
    pthread_mutex_unlock(&g->ckpt_mu);
    return;
  }
  /* The bulk first, while the others go on committing; then, writers held
   * back, only what they added meanwhile.  `log` is the WAL as the passive
   * checkpoint found it: frames committed while it ran are past it, and
   * the WAL cannot start again until they are copied too.  (Judged by
   * `log` alone, the RESTART almost never ran under load: every commit
   * past SL_AUTOCHECKPOINT frames ran a passive checkpoint and a database
   * sync of its own, ~350 of them for 2,000 jobs with four submitters, and
   * the WAL grew to 2,500 frames before a quiet moment let it start
   * again.) */
  rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
  pthread_mutex_lock(&g->mu);
  if (g->frames > log)
    log = g->frames;
  pthread_mutex_unlock(&g->mu);
  if (rc != SQLITE_OK || copied < log) {
    pthread_mutex_lock(&g->wmu);
    s->wmu_held = 1;            /* its busy handler then sleeps, not waits for itself */
    s->checkpointing = 1;       /* ... and gives up after ~2 ms */
    rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
    s->checkpointing = 0;
    s->wmu_held = 0;
    pthread_mutex_unlock(&g->wmu);
  }
  g->ckpt_failed_at = rc == SQLITE_OK ? 0 : frames;
  pthread_mutex_unlock(&g->ckpt_mu);
}

/* After every commit that wrote frames, its write lock released: the
 * group sync (unless lazy), then SQLite's automatic checkpoint, which a WAL
 * hook replaces.  Write transactions are serialised by the write lock, so
 * once this one's frames are written so are those of every lower ticket. */
static int sl_wal_hook(void *ud, sqlite3 *db, const char *name, int frames)
{
  struct sqlite_ledger *s = ud;
  struct sl_sync *g = s->sync;
  int rc = SQLITE_OK;

  if (g) {
    pthread_mutex_lock(&g->mu);
    if (s->ticket > g->written)
      g->written = s->ticket;
    g->frames = frames;
    pthread_mutex_unlock(&g->mu);
  }
  /* The write lock is released: the next writer may go (after `written`
   * counts this commit, so that a sync led meanwhile carries it). */
  sl_write_settle(s);
  if (!s->lazy)
    rc = g ? sl_group_sync(g, db, name, s->ticket) : sl_sync_wal(db, name);
  if (rc != SQLITE_OK)
    log_error("ledger", "sqlite: cannot sync the write-ahead log (error %d): the last commit "
              "may not survive a power cut", rc);
  if (frames >= SL_AUTOCHECKPOINT)
    sl_checkpoint(s, db, name, frames);
  return rc;
}

/* Makes everything s has read so far durable: a commit is visible to other
 * connections as soon as its frames are written, before its committer's
 * sync (a FULL commit synced inside its write lock), and other processes
 * commit too.  Whoever acts outside the database on what it read (the
 * outbox senders) calls this first, so that a power cut never undoes what
 * was already said.  Done at once when the WAL has not changed since the
 * last sync began (the wal-index header says so); else joins the sync
 * under way if it began on the WAL as it is now (the sender, woken by a
 * commit, reads it during that commit's sync), or a sync that begins after
 * the call, or leads one. */
static enum err sl_durable(struct sqlite_ledger *s)
{
  struct sl_sync *g = s->sync;
  int rc = SQLITE_OK;

  if (!s->wal)
    return ERR_OK;   /* synchronous=FULL: synced by each commit */
  if (!g) {
    rc = sl_sync_wal(s->db, "main");
  } else {
    unsigned char now[48];
    pthread_mutex_lock(&g->mu);
    int known = sl_wal_state(g, now) == 0;
    uint64_t after = g->started + 1;   /* any sync begun from now on */
    if (known && g->done_known && memcmp(now, g->done_state, sizeof now) == 0)
      after = g->done;                 /* unchanged since the last sync began */
    else if (known && g->syncing && g->sync_known &&
             memcmp(now, g->sync_state, sizeof now) == 0)
      after = g->started;              /* the one under way covers it */
    while (g->done < after && rc == SQLITE_OK) {
      if (g->syncing)
        pthread_cond_wait(&g->cv, &g->mu);
      else
        rc = sl_lead_sync(g, s->db, "main");
    }
    pthread_mutex_unlock(&g->mu);
  }
  if (rc == SQLITE_OK)
    return ERR_OK;
  snprintf(s->base.errmsg, sizeof s->base.errmsg, "cannot sync the write-ahead log (error %d)",
           rc);
  log_error("ledger", "sqlite %s", s->base.errmsg);
  return ERR_DB;
}

static void sl_close(struct ledger *l)
{
  struct sqlite_ledger *s = sl_of(l);

  for (int i = 0; i < SL_KEPT && s->kept[i].sql; i++)
    sqlite3_finalize(s->kept[i].st);
  sqlite3_close_v2(s->db);
  if (s->wmu_held) {        /* closed inside a transaction: rolled back */
    pthread_mutex_unlock(&s->sync->wmu);
  }
  sl_sync_put(s->sync);
  free(s);
}

static enum err sl_schema_version(struct ledger *l, int *version)
{
  return sl_pragma_int(sl_of(l), "PRAGMA user_version", 0, version);
}

/* Every pending migration in one transaction (one disk sync for a new
 * database rather than one per migration): all of them land, or none. */
static enum err sl_migrate(struct ledger *l, int *applied)
{
  struct sqlite_ledger *s = sl_of(l);
  const struct migration *m;
  int have = 0, n = 0;
  char pragma[64];
  enum err e;

  *applied = 0;
  if ((e = sl_write_begin(s)))
    return e;
  /* Read inside the lock: another process may have migrated. */
  sl_schema_version(l, &have);
  for (m = migrations_sqlite; m->name; m++) {
    if (m->version <= have)
      continue;
    snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", m->version);
    if ((e = sl_exec(s, m->sql)) || (e = sl_exec(s, pragma))) {
      sl_write_end(s, "ROLLBACK");
      log_error("ledger", "migration '%s' failed: none of the %d before it in this run is kept",
                m->name, n);
      return e;
    }
    n++;
  }
  if ((e = sl_write_end(s, n ? "COMMIT" : "ROLLBACK")))
    return e;
  for (m = migrations_sqlite; m->name; m++)
    if (m->version > have)
      log_info("ledger", "applied migration %s", m->name);
  *applied = n;
  return ERR_OK;
}

static enum err sl_begin(struct ledger *l)
{
  struct sqlite_ledger *s = sl_of(l);
  enum err e;

  if (s->in_tx)
    return ERR_STATE;
  if ((e = sl_write_begin(s)))
    return e;
  s->in_tx = 1;
  return ERR_OK;
}

static enum err sl_commit(struct ledger *l)
{
  struct sqlite_ledger *s = sl_of(l);
  enum err e;

  if (!s->in_tx)
    return ERR_STATE;
  s->in_tx = 0;
  e = sl_write_end(s, "COMMIT");   /* a failed one is rolled back */
  ledger_tx_ended(l, e == ERR_OK);
  return e;
}

static enum err sl_rollback(struct ledger *l)
{
  struct sqlite_ledger *s = sl_of(l);
  enum err e;

  if (!s->in_tx)
    return ERR_STATE;
  s->in_tx = 0;
  e = sl_write_end(s, "ROLLBACK");
  ledger_tx_ended(l, 0);
  return e;
}

static enum err add_transition(struct sqlite_ledger *s, int64_t id,
                               const char *from, const char *to,
                               const char *actor, const char *reason,
                               int64_t now)
{
  sqlite3_stmt *st = sl_prep_kept(s,
      "INSERT INTO transitions(job_id, from_state, to_state, actor, reason, at)"
      " VALUES (?, ?, ?, ?, ?, ?)");

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  bind_text(st, 2, from);
  bind_text(st, 3, to);
  bind_text(st, 4, actor ? actor : "system");
  bind_text(st, 5, reason);
  sqlite3_bind_int64(st, 6, now);
  return sl_done(s, st);
}

static enum err sl_job_create(struct ledger *l, struct job *j, const char *actor)
{
  struct sqlite_ledger *s = sl_of(l);
  int64_t now = ledger_now_ms();
  sqlite3_stmt *st;
  enum err e;

  if ((e = tx_begin(s)))
    return e;
  st = sl_prep(s, "INSERT INTO jobs(channel, chat_id, user_id, text, state,"
                  " created_at, updated_at) VALUES (?, ?, ?, ?, 'CREATED', ?, ?)");
  if (!st)
    return tx_end(s, ERR_DB);
  bind_text(st, 1, j->channel ? j->channel : "console");
  sqlite3_bind_int64(st, 2, j->chat_id);
  sqlite3_bind_int64(st, 3, j->user_id);
  bind_text(st, 4, j->text ? j->text : "");
  sqlite3_bind_int64(st, 5, now);
  sqlite3_bind_int64(st, 6, now);
  e = sl_done(s, st);
  if (e == ERR_OK) {
    j->id = sqlite3_last_insert_rowid(s->db);
    j->state = JOB_CREATED;
    j->created_at = j->updated_at = now;
    e = add_transition(s, j->id, NULL, "CREATED", actor, NULL, now);
  }
  return tx_end(s, e);
}

static enum err sl_job_create_routed(struct ledger *l, struct job *j, const char *actor,
                                     enum job_state to, const char *to_actor,
                                     const char *reason, const char *claim_owner,
                                     int lease_ms)
{
  struct sqlite_ledger *s = sl_of(l);
  int64_t now = ledger_now_ms();
  enum job_state state = claim_owner ? JOB_RUNNING : to;
  char claim_actor[160];
  sqlite3_stmt *st;
  enum err e;

  if (!job_transition_allowed(JOB_PLANNED, to) || (claim_owner && to != JOB_QUEUED))
    return ERR_STATE;
  if ((e = tx_begin(s)))
    return e;
  st = sl_prep_kept(s, "INSERT INTO jobs(channel, chat_id, user_id, text, state, plan_json,"
                  " summary, risk, reason, created_at, updated_at, attempts, lease_owner,"
                  " lease_expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!st)
    return tx_end(s, ERR_DB);
  bind_text(st, 1, j->channel ? j->channel : "console");
  sqlite3_bind_int64(st, 2, j->chat_id);
  sqlite3_bind_int64(st, 3, j->user_id);
  bind_text(st, 4, j->text ? j->text : "");
  bind_text(st, 5, job_state_name(state));
  bind_text(st, 6, j->plan_json);
  bind_text(st, 7, j->summary);
  bind_text(st, 8, risk_name(j->risk));
  bind_text(st, 9, reason);
  sqlite3_bind_int64(st, 10, now);
  sqlite3_bind_int64(st, 11, now);
  sqlite3_bind_int(st, 12, claim_owner ? 1 : 0);
  bind_text(st, 13, claim_owner);
  if (claim_owner)
    sqlite3_bind_int64(st, 14, now + lease_ms);
  else
    sqlite3_bind_null(st, 14);
  if ((e = sl_done(s, st)))
    return tx_end(s, e);
  j->id = sqlite3_last_insert_rowid(s->db);
  j->state = state;
  j->attempts = claim_owner ? 1 : 0;
  j->created_at = j->updated_at = now;
  e = add_transition(s, j->id, NULL, "CREATED", actor, NULL, now);
  if (!e)
    e = add_transition(s, j->id, "CREATED", "PLANNED", "planner", NULL, now);
  if (!e)
    e = add_transition(s, j->id, "PLANNED", job_state_name(to), to_actor, reason, now);
  if (!e && claim_owner) {
    snprintf(claim_actor, sizeof claim_actor, "worker:%s", claim_owner);
    e = add_transition(s, j->id, "QUEUED", "RUNNING", claim_actor, NULL, now);
  }
  return tx_end(s, e);
}

#define JOB_COLS                                                        \
  "id, channel, chat_id, user_id, text, state, risk, plan_json, summary," \
  " reason, exit_code, output_tail, cancel_requested, attempts,"          \
  " lease_owner, lease_expires, created_at, updated_at, not_before"

static void row_to_job(sqlite3_stmt *st, struct job *j)
{
  memset(j, 0, sizeof *j);
  j->id = sqlite3_column_int64(st, 0);
  j->channel = col_text(st, 1);
  j->chat_id = sqlite3_column_int64(st, 2);
  j->user_id = sqlite3_column_int64(st, 3);
  j->text = col_text(st, 4);
  job_state_parse((const char *)sqlite3_column_text(st, 5), &j->state);
  risk_parse((const char *)sqlite3_column_text(st, 6), &j->risk);
  j->plan_json = col_text(st, 7);
  j->summary = col_text(st, 8);
  j->reason = col_text(st, 9);
  j->has_exit_code = sqlite3_column_type(st, 10) != SQLITE_NULL;
  j->exit_code = sqlite3_column_int(st, 10);
  j->output_tail = col_text(st, 11);
  j->cancel_requested = sqlite3_column_int(st, 12);
  j->attempts = sqlite3_column_int(st, 13);
  j->lease_owner = col_text(st, 14);
  j->lease_expires = sqlite3_column_int64(st, 15);
  j->created_at = sqlite3_column_int64(st, 16);
  j->updated_at = sqlite3_column_int64(st, 17);
  j->not_before = sqlite3_column_int64(st, 18);
}

static enum err sl_job_get(struct ledger *l, int64_t id, struct job *out)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s, "SELECT " JOB_COLS " FROM jobs WHERE id = ?");
  enum err e = ERR_NOTFOUND;
  int rc;

  memset(out, 0, sizeof *out);
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    row_to_job(st, out);
    e = ERR_OK;
  } else if (rc != SQLITE_DONE) {
    e = sl_fail(s, "job_get");
  }
  sl_release(s, st);
  return e;
}

/* Collects every row of st into a growing array of `size`-byte elements. */
static enum err collect_rows(struct sqlite_ledger *s, sqlite3_stmt *st,
                             size_t size, void (*fill)(sqlite3_stmt *, void *),
                             void **out, size_t *n)
{
  char *v = NULL;
  size_t cap = 0, cnt = 0;
  int rc;

  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (cnt == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      char *nv = realloc(v, ncap * size);
      if (!nv) {
        sqlite3_finalize(st);
        *out = v;
        *n = cnt;
        return ERR_NOMEM;
      }
      v = nv;
      cap = ncap;
    }
    fill(st, v + cnt * size);
    cnt++;
  }
  *out = v;
  *n = cnt;
  if (rc != SQLITE_DONE) {
    sl_fail(s, "select");
    sqlite3_finalize(st);
    return ERR_DB;
  }
  sqlite3_finalize(st);
  return ERR_OK;
}

/* Every row a statement with one id parameter selects. */
static enum err rows_by_id(struct sqlite_ledger *s, const char *sql, int64_t id, size_t size,
                           void (*fill)(sqlite3_stmt *, void *), void **out, size_t *n)
{
  sqlite3_stmt *st = sl_prep(s, sql);

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  return collect_rows(s, st, size, fill, out, n);
}

static void fill_job(sqlite3_stmt *st, void *p)
{
  row_to_job(st, p);
}

static enum err sl_job_list(struct ledger *l, const struct job_filter *f,
                            struct job **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "SELECT " JOB_COLS " FROM jobs WHERE (?1 IS NULL OR (channel = ?1 AND"
      " chat_id = ?2)) AND (?3 = 1 OR state = ?4) ORDER BY id DESC LIMIT ?5");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  bind_text(st, 1, f ? f->channel : NULL);
  sqlite3_bind_int64(st, 2, f ? f->chat_id : 0);
  sqlite3_bind_int(st, 3, f ? f->any_state : 1);
  bind_text(st, 4, job_state_name(f ? f->state : JOB_CREATED));
  sqlite3_bind_int64(st, 5, f && f->limit ? (int64_t)f->limit : 20);
  return collect_rows(s, st, sizeof(struct job), fill_job, (void **)out, n);
}

static enum err sl_job_set_plan(struct ledger *l, int64_t id,
                                const char *plan_json, const char *summary,
                                enum risk risk)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "UPDATE jobs SET plan_json = ?, summary = ?,"
                                " risk = ?, updated_at = ? WHERE id = ?");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, plan_json);
  bind_text(st, 2, summary);
  bind_text(st, 3, risk_name(risk));
  sqlite3_bind_int64(st, 4, ledger_now_ms());
  sqlite3_bind_int64(st, 5, id);
  return sl_done(s, st);
}

static const char move_plain[] = "move_state";

/* The state-changing core, inside a transaction: CAS from → to.
 * owner_sql_extra must be NULL or a string literal. */
static enum err move_state(struct sqlite_ledger *s, int64_t id,
                           enum job_state from, enum job_state to,
                           const char *actor, const char *reason,
                           const char *owner_sql_extra)
{
  int64_t now = ledger_now_ms();
  char sql[384];
  sqlite3_stmt *st;
  enum err e;

  if (!job_transition_allowed(from, to))
    return ERR_STATE;
  snprintf(sql, sizeof sql,
           "UPDATE jobs SET state = ?, reason = ?, updated_at = ?%s"
           " WHERE id = ? AND state = ?",
           owner_sql_extra ? owner_sql_extra : "");
  /* Each extra is a literal: it keys the statement. */
  if (!(st = sl_prep_keyed(s, owner_sql_extra ? owner_sql_extra : move_plain, sql)))
    return ERR_DB;
  bind_text(st, 1, job_state_name(to));
  bind_text(st, 2, reason);
  sqlite3_bind_int64(st, 3, now);
  sqlite3_bind_int64(st, 4, id);
  bind_text(st, 5, job_state_name(from));
  if ((e = sl_done(s, st)))
    return e;
  if (sqlite3_changes(s->db) != 1) {
    struct job j;
    e = sl_job_get(&s->base, id, &j) == ERR_NOTFOUND ? ERR_NOTFOUND : ERR_STATE;
    job_release(&j);
    return e;
  }
  return add_transition(s, id, job_state_name(from), job_state_name(to), actor,
                        reason, now);
}

static enum err sl_job_transition(struct ledger *l, int64_t id,
                                  enum job_state from, enum job_state to,
                                  const char *actor, const char *reason)
{
  struct sqlite_ledger *s = sl_of(l);
  const char *extra = NULL;
  enum err e;

  if (from == JOB_RUNNING)
    extra = ", lease_owner = NULL, lease_expires = NULL";
  if ((e = tx_begin(s)))
    return e;
  return tx_end(s, move_state(s, id, from, to, actor, reason, extra));
}

/* Whether a job is due in the queue (a read: no lock); 1 on doubt. */
static int queued_exists(struct sqlite_ledger *s, int64_t only)
{
  sqlite3_stmt *st = sl_prep_kept(s, "SELECT 1 FROM jobs WHERE state = 'QUEUED' AND"
                                " (?1 = 0 OR id = ?1) AND not_before <= ?2 LIMIT 1");
  int rc;

  if (!st)
    return 1;
  sqlite3_bind_int64(st, 1, only);
  sqlite3_bind_int64(st, 2, ledger_now_ms());
  rc = sqlite3_step(st);
  sl_release(s, st);
  return rc != SQLITE_DONE;
}

static enum err sl_job_claim(struct ledger *l, const char *owner, int lease_ms,
                             int64_t only, struct job *out)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st;
  int64_t id = 0;
  char actor[160];
  enum err e;

  memset(out, 0, sizeof *out);
  /* Idle workers look often: seeing an empty queue takes no write lock. */
  if (!s->in_tx && !queued_exists(s, only))
    return ERR_NOTFOUND;
  if ((e = tx_begin(s)))
    return e;
  st = sl_prep_kept(s, "SELECT id FROM jobs WHERE state = 'QUEUED' AND"
                  " (?1 = 0 OR id = ?1) AND not_before <= ?2 ORDER BY id"
                  " LIMIT 1");
  if (!st)
    return tx_end(s, ERR_DB);
  sqlite3_bind_int64(st, 1, only);
  sqlite3_bind_int64(st, 2, ledger_now_ms());
  if (sqlite3_step(st) == SQLITE_ROW)
    id = sqlite3_column_int64(st, 0);
  sl_release(s, st);
  if (!id)
    return tx_end(s, ERR_NOTFOUND);
  snprintf(actor, sizeof actor, "worker:%s", owner);
  e = move_state(s, id, JOB_QUEUED, JOB_RUNNING, actor, NULL,
                 ", attempts = attempts + 1");
  if (e == ERR_OK) {
    st = sl_prep_kept(s, "UPDATE jobs SET lease_owner = ?, lease_expires = ? WHERE id = ?");
    if (!st)
      return tx_end(s, ERR_DB);
    bind_text(st, 1, owner);
    sqlite3_bind_int64(st, 2, ledger_now_ms() + lease_ms);
    sqlite3_bind_int64(st, 3, id);
    e = sl_done(s, st);
  }
  if ((e = tx_end(s, e)))
    return e;
  return sl_job_get(l, id, out);
}

/* ledger_claim_each, but only when the queue has a due job: an empty one
 * costs no write lock. */
static enum err sl_job_claim_some(struct ledger *l, const char *owner, int lease_ms, int max,
                                  struct job *out, int *n)
{
  struct sqlite_ledger *s = sl_of(l);

  *n = 0;
  if (s->in_tx)
    return ERR_STATE;
  if (!queued_exists(s, 0))
    return ERR_NOTFOUND;
  return ledger_claim_each(l, owner, lease_ms, max, out, n);
}

static enum err sl_job_heartbeat(struct ledger *l, int64_t id, const char *owner,
                                 int lease_ms, int *cancel_requested)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "UPDATE jobs SET lease_expires = ? WHERE id = ? AND state = 'RUNNING'"
      " AND lease_owner = ? RETURNING cancel_requested");
  enum err e = ERR_STATE;

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, ledger_now_ms() + lease_ms);
  sqlite3_bind_int64(st, 2, id);
  bind_text(st, 3, owner);
  switch (sqlite3_step(st)) {
  case SQLITE_ROW:
    *cancel_requested = sqlite3_column_int(st, 0);
    e = ERR_OK;
    break;
  case SQLITE_DONE:
    break;
  default:
    e = sl_fail(s, "heartbeat");
  }
  sqlite3_finalize(st);
  return e;
}

static enum err sl_job_finish(struct ledger *l, int64_t id, const char *owner,
                              enum job_state to, int exit_code,
                              const char *output_tail, const char *reason,
                              struct job *out)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st;
  char actor[160];
  enum err e;
  int got;

  if (out)
    memset(out, 0, sizeof *out);
  if ((e = tx_begin(s)))
    return e;
  st = sl_prep_kept(s, "UPDATE jobs SET exit_code = ?, output_tail = ? WHERE id = ?"
                  " AND state = 'RUNNING' AND lease_owner = ?");
  if (!st)
    return tx_end(s, ERR_DB);
  sqlite3_bind_int(st, 1, exit_code);
  bind_text(st, 2, output_tail);
  sqlite3_bind_int64(st, 3, id);
  bind_text(st, 4, owner);
  if ((e = sl_done(s, st)))
    return tx_end(s, e);
  if (sqlite3_changes(s->db) != 1)
    return tx_end(s, ERR_STATE);
  snprintf(actor, sizeof actor, "worker:%s", owner);
  e = move_state(s, id, JOB_RUNNING, to, actor, reason,
                 ", lease_owner = NULL, lease_expires = NULL");
  if (!e && out)
    e = sl_job_get(l, id, out);
  if ((got = !e && out) && (e = tx_end(s, e)))
    job_release(out);           /* the commit failed */
  return got ? e : tx_end(s, e);
}

/* job_finish and, if it took, the notice, together (in the caller's
 * transaction, else in one of their own); a lease no longer held changes
 * nothing and is not reported, as on PostgreSQL. */
static enum err sl_outbox_put(struct ledger *l, const struct outbox_msg *m, int64_t *id);

static enum err sl_job_finish_notice(struct ledger *l, int64_t id, const char *owner,
                                     enum job_state to, int exit_code, const char *output_tail,
                                     const char *reason, const struct outbox_msg *notice)
{
  struct sqlite_ledger *s = sl_of(l);
  int own = !s->in_tx;
  enum err e;

  if (!job_transition_allowed(JOB_RUNNING, to))
    return ERR_STATE;
  if (own && (e = sl_begin(l)))
    return e;
  e = sl_job_finish(l, id, owner, to, exit_code, output_tail, reason, NULL);
  if (e == ERR_OK)
    e = sl_outbox_put(l, notice, NULL);
  else if (e == ERR_STATE)
    e = ERR_OK;                 /* no longer the owner's: nothing changes */
  if (!own)
    return e;
  if (e) {
    sl_rollback(l);
    return e;
  }
  return sl_commit(l);
}

static enum err sl_job_request_cancel(struct ledger *l, int64_t id)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?");
  enum err e;

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  if ((e = sl_done(s, st)))
    return e;
  return sqlite3_changes(s->db) == 1 ? ERR_OK : ERR_NOTFOUND;
}

static enum err sl_job_expired(struct ledger *l, int64_t now_ms,
                               struct job **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "SELECT " JOB_COLS " FROM jobs WHERE state ="
                                " 'RUNNING' AND lease_expires < ? ORDER BY id");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, now_ms);
  return collect_rows(s, st, sizeof(struct job), fill_job, (void **)out, n);
}

static void fill_transition(sqlite3_stmt *st, void *p)
{
  struct transition *t = p;

  memset(t, 0, sizeof *t);
  t->job_id = sqlite3_column_int64(st, 0);
  t->has_from = job_state_parse((const char *)sqlite3_column_text(st, 1),
                                &t->from) == ERR_OK;
  job_state_parse((const char *)sqlite3_column_text(st, 2), &t->to);
  t->actor = col_text(st, 3);
  t->reason = col_text(st, 4);
  t->at = sqlite3_column_int64(st, 5);
}

static enum err sl_job_transitions(struct ledger *l, int64_t id,
                                   struct transition **out, size_t *n)
{
  return rows_by_id(sl_of(l), "SELECT job_id, from_state, to_state, actor,"
                              " reason, at FROM transitions WHERE job_id = ?"
                              " ORDER BY id",
                    id, sizeof(struct transition), fill_transition, (void **)out, n);
}

static enum err sl_step_record(struct ledger *l, int64_t job_id,
                               const struct job_step_rec *r)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s,
      "INSERT INTO steps(job_id, idx, state, exit_code, output_tail, started_at,"
      " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id, idx) DO"
      " UPDATE SET state = excluded.state, exit_code = excluded.exit_code,"
      " output_tail = excluded.output_tail, started_at = excluded.started_at,"
      " finished_at = excluded.finished_at");

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, job_id);
  sqlite3_bind_int(st, 2, r->idx);
  bind_text(st, 3, r->state);
  if (r->has_exit_code)
    sqlite3_bind_int(st, 4, r->exit_code);
  else
    sqlite3_bind_null(st, 4);
  bind_text(st, 5, r->output_tail);
  sqlite3_bind_int64(st, 6, r->started_at);
  sqlite3_bind_int64(st, 7, r->finished_at);
  return sl_done(s, st);
}

static void fill_step(sqlite3_stmt *st, void *p)
{
  struct job_step_rec *r = p;

  memset(r, 0, sizeof *r);
  r->idx = sqlite3_column_int(st, 0);
  r->state = col_text(st, 1);
  r->has_exit_code = sqlite3_column_type(st, 2) != SQLITE_NULL;
  r->exit_code = sqlite3_column_int(st, 2);
  r->output_tail = col_text(st, 3);
  r->started_at = sqlite3_column_int64(st, 4);
  r->finished_at = sqlite3_column_int64(st, 5);
}

static enum err sl_step_list(struct ledger *l, int64_t job_id,
                             struct job_step_rec **out, size_t *n)
{
  return rows_by_id(sl_of(l), "SELECT idx, state, exit_code, output_tail,"
                              " started_at, finished_at FROM steps WHERE"
                              " job_id = ? ORDER BY idx",
                    job_id, sizeof(struct job_step_rec), fill_step, (void **)out, n);
}

static enum err sl_msg_append(struct ledger *l, const char *channel,
                              int64_t chat_id, const char *role,
                              const char *text)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s, "INSERT INTO messages(channel, chat_id, role,"
                                " text, at) VALUES (?, ?, ?, ?, ?)");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, channel);
  sqlite3_bind_int64(st, 2, chat_id);
  bind_text(st, 3, role);
  bind_text(st, 4, text ? text : "");
  sqlite3_bind_int64(st, 5, ledger_now_ms());
  return sl_done(s, st);
}

static void fill_msg(sqlite3_stmt *st, void *p)
{
  struct chat_msg *m = p;

  m->role = col_text(st, 0);
  m->text = col_text(st, 1);
  m->at = sqlite3_column_int64(st, 2);
}

static enum err sl_msg_recent(struct ledger *l, const char *channel,
                              int64_t chat_id, size_t max,
                              struct chat_msg **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "SELECT role, text, at FROM (SELECT id, role, text, at FROM messages"
      " WHERE channel = ? AND chat_id = ? ORDER BY id DESC LIMIT ?)"
      " ORDER BY id");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  bind_text(st, 1, channel);
  sqlite3_bind_int64(st, 2, chat_id);
  sqlite3_bind_int64(st, 3, (int64_t)max);
  return collect_rows(s, st, sizeof(struct chat_msg), fill_msg, (void **)out, n);
}

static enum err sl_outbox_put(struct ledger *l, const struct outbox_msg *m,
                              int64_t *id)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s,
      "INSERT INTO outbox(channel, chat_id, job_id, text, buttons_json,"
      " edit_key, not_before, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  enum err e;

  if (!st)
    return ERR_DB;
  bind_text(st, 1, m->channel);
  sqlite3_bind_int64(st, 2, m->chat_id);
  if (m->job_id)
    sqlite3_bind_int64(st, 3, m->job_id);
  else
    sqlite3_bind_null(st, 3);
  bind_text(st, 4, m->text ? m->text : "");
  bind_text(st, 5, m->buttons_json);
  bind_text(st, 6, m->edit_key);
  sqlite3_bind_int64(st, 7, m->not_before);
  sqlite3_bind_int64(st, 8, ledger_now_ms());
  e = sl_done(s, st);
  if (e == ERR_OK && id)
    *id = sqlite3_last_insert_rowid(s->db);
  return e;
}

static void fill_outbox(sqlite3_stmt *st, void *p)
{
  struct outbox_msg *m = p;

  memset(m, 0, sizeof *m);
  m->id = sqlite3_column_int64(st, 0);
  m->channel = col_text(st, 1);
  m->chat_id = sqlite3_column_int64(st, 2);
  m->job_id = sqlite3_column_int64(st, 3);
  m->text = col_text(st, 4);
  m->buttons_json = col_text(st, 5);
  m->edit_key = col_text(st, 6);
  m->attempts = sqlite3_column_int(st, 7);
  m->not_before = sqlite3_column_int64(st, 8);
}

static enum err sl_outbox_pending(struct ledger *l, const char *channel,
                                  int64_t now_ms, size_t max,
                                  struct outbox_msg **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "SELECT id, channel, chat_id, job_id, text, buttons_json, edit_key,"
      " attempts, not_before FROM outbox WHERE channel = ? AND state ="
      " 'pending' AND not_before <= ? ORDER BY id LIMIT ?");
  enum err e;

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  bind_text(st, 1, channel);
  sqlite3_bind_int64(st, 2, now_ms);
  sqlite3_bind_int64(st, 3, (int64_t)max);
  if ((e = collect_rows(s, st, sizeof(struct outbox_msg), fill_outbox, (void **)out, n)) ||
      !*n || !(e = sl_durable(s)))
    return e;
  outbox_list_free(*out, *n);   /* not sent before it is durable */
  *out = NULL;
  *n = 0;
  return e;
}

static enum err sl_outbox_set(struct ledger *l, int64_t id, const char *state,
                           int64_t not_before, const char *error)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s,
      "UPDATE outbox SET state = ?, attempts = attempts + (? IS NOT NULL),"
      " not_before = ?, last_error = COALESCE(?, last_error) WHERE id = ?");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, state);
  bind_text(st, 2, error);
  sqlite3_bind_int64(st, 3, not_before);
  bind_text(st, 4, error);
  sqlite3_bind_int64(st, 5, id);
  return sl_done(s, st);
}

/* The one text value the bound statement st selects into *out (malloc'd);
 * ERR_NOTFOUND when no row.  Finalizes st. */
static enum err one_text(sqlite3_stmt *st, char **out)
{
  enum err e = ERR_NOTFOUND;

  if (sqlite3_step(st) == SQLITE_ROW) {
    *out = col_text(st, 0);
    e = *out ? ERR_OK : ERR_NOMEM;
  }
  sqlite3_finalize(st);
  return e;
}

static enum err sl_kv_get(struct ledger *l, const char *key, char **value)
{
  sqlite3_stmt *st = sl_prep(sl_of(l), "SELECT value FROM kv WHERE key = ?");

  *value = NULL;
  if (!st)
    return ERR_DB;
  bind_text(st, 1, key);
  return one_text(st, value);
}

static enum err sl_kv_set(struct ledger *l, const char *key, const char *value)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s, "INSERT INTO kv(key, value) VALUES (?, ?)"
                                " ON CONFLICT(key) DO UPDATE SET value ="
                                " excluded.value");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, key);
  bind_text(st, 2, value);
  return sl_done(s, st);
}

static enum err sl_job_log_put(struct ledger *l, int64_t id, const char *lines)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep_kept(s, "INSERT INTO job_logs(job_id, lines) VALUES (?, ?)"
                                     " ON CONFLICT(job_id) DO UPDATE SET lines ="
                                     " job_logs.lines || excluded.lines");

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  bind_text(st, 2, lines);
  return sl_done(s, st);
}

static enum err sl_job_log_get(struct ledger *l, int64_t id, char **lines)
{
  sqlite3_stmt *st = sl_prep(sl_of(l), "SELECT lines FROM job_logs WHERE job_id = ?");

  *lines = NULL;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  return one_text(st, lines);
}

static enum err sl_job_requeue(struct ledger *l, int64_t id, const char *owner,
                               int64_t delay_ms, const char *actor,
                               const char *reason)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st;
  enum err e;

  if ((e = tx_begin(s)))
    return e;
  st = sl_prep(s, "UPDATE jobs SET not_before = ? WHERE id = ? AND state ="
                  " 'RUNNING' AND lease_owner = ?");
  if (!st)
    return tx_end(s, ERR_DB);
  sqlite3_bind_int64(st, 1, ledger_now_ms() + (delay_ms > 0 ? delay_ms : 0));
  sqlite3_bind_int64(st, 2, id);
  bind_text(st, 3, owner);
  if ((e = sl_done(s, st)))
    return tx_end(s, e);
  if (sqlite3_changes(s->db) != 1)
    return tx_end(s, ERR_STATE);
  e = move_state(s, id, JOB_RUNNING, JOB_QUEUED, actor, reason,
                 ", lease_owner = NULL, lease_expires = NULL");
  return tx_end(s, e);
}

/* ---- worker registry ---------------------------------------------------- */

#define WORKER_COLS                                                     \
  "id, host, pid, providers, capacity, load, state, reason, started_at," \
  " heartbeat_at, expires_at"

static void fill_worker(sqlite3_stmt *st, void *p)
{
  struct worker_rec *w = p;

  memset(w, 0, sizeof *w);
  w->id = col_text(st, 0);
  w->host = col_text(st, 1);
  w->pid = sqlite3_column_int64(st, 2);
  w->providers = col_text(st, 3);
  w->capacity = sqlite3_column_int(st, 4);
  w->load = sqlite3_column_int(st, 5);
  w->state = col_text(st, 6);
  w->reason = col_text(st, 7);
  w->started_at = sqlite3_column_int64(st, 8);
  w->heartbeat_at = sqlite3_column_int64(st, 9);
  w->expires_at = sqlite3_column_int64(st, 10);
}

static enum err add_worker_event(struct sqlite_ledger *s, const char *id,
                                 const char *kind, const char *detail)
{
  sqlite3_stmt *st = sl_prep(s, "INSERT INTO worker_events(worker_id, kind,"
                                " detail, at) VALUES (?, ?, ?, ?)");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, id);
  bind_text(st, 2, kind);
  bind_text(st, 3, detail);
  sqlite3_bind_int64(st, 4, ledger_now_ms());
  return sl_done(s, st);
}

static enum err sl_worker_register(struct ledger *l, const struct worker_rec *w,
                                   int ttl_ms)
{
  struct sqlite_ledger *s = sl_of(l);
  int64_t now = ledger_now_ms();
  sqlite3_stmt *st;
  enum err e;

  if (!w->id || !w->host)
    return ERR_INVAL;
  if ((e = tx_begin(s)))
    return e;
  st = sl_prep(s,
      "INSERT INTO workers(" WORKER_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, 0,"
      " 'online', NULL, ?6, ?6, ?6 + ?7) ON CONFLICT(id) DO UPDATE SET host ="
      " excluded.host, pid = excluded.pid, providers = excluded.providers,"
      " capacity = excluded.capacity, load = 0, state = 'online', reason ="
      " NULL, started_at = excluded.started_at, heartbeat_at ="
      " excluded.heartbeat_at, expires_at = excluded.expires_at");
  if (!st)
    return tx_end(s, ERR_DB);
  bind_text(st, 1, w->id);
  bind_text(st, 2, w->host);
  sqlite3_bind_int64(st, 3, w->pid);
  bind_text(st, 4, w->providers ? w->providers : "");
  sqlite3_bind_int(st, 5, w->capacity);
  sqlite3_bind_int64(st, 6, now);
  sqlite3_bind_int64(st, 7, ttl_ms);
  e = sl_done(s, st);
  if (e == ERR_OK)
    e = add_worker_event(s, w->id, "online", w->providers);
  return tx_end(s, e);
}

static enum err sl_worker_heartbeat(struct ledger *l, const char *id, int load,
                                    int ttl_ms, int *came_back)
{
  struct sqlite_ledger *s = sl_of(l);
  int64_t now = ledger_now_ms();
  sqlite3_stmt *st;
  int rc, was_offline;
  enum err e;

  *came_back = 0;
  if ((e = tx_begin(s)))
    return e;
  if (!(st = sl_prep(s, "SELECT state = 'offline' FROM workers WHERE id = ?")))
    return tx_end(s, ERR_DB);
  bind_text(st, 1, id);
  rc = sqlite3_step(st);
  was_offline = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW)
    return tx_end(s, rc == SQLITE_DONE ? ERR_NOTFOUND : sl_fail(s, "heartbeat"));
  st = sl_prep(s, "UPDATE workers SET load = ?, heartbeat_at = ?, expires_at ="
                  " ?, state = 'online', reason = NULL WHERE id = ?");
  if (!st)
    return tx_end(s, ERR_DB);
  sqlite3_bind_int(st, 1, load);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_int64(st, 3, now + ttl_ms);
  bind_text(st, 4, id);
  e = sl_done(s, st);
  if (e == ERR_OK && was_offline) {
    e = add_worker_event(s, id, "back", "heartbeats again");
    *came_back = e == ERR_OK;
  }
  return tx_end(s, e);
}

static enum err sl_worker_expire(struct ledger *l, int64_t now_ms,
                                 struct worker_rec **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st;
  enum err e;

  *out = NULL;
  *n = 0;
  if ((e = tx_begin(s)))
    return e;
  st = sl_prep(s, "UPDATE workers SET state = 'offline', reason = 'its"
                  " heartbeat expired', load = 0 WHERE state = 'online' AND"
                  " expires_at < ? RETURNING " WORKER_COLS);
  if (!st)
    return tx_end(s, ERR_DB);
  sqlite3_bind_int64(st, 1, now_ms);
  e = collect_rows(s, st, sizeof(struct worker_rec), fill_worker, (void **)out, n);
  for (size_t i = 0; e == ERR_OK && i < *n; i++)
    e = add_worker_event(s, (*out)[i].id, "offline", (*out)[i].reason);
  if ((e = tx_end(s, e))) {
    worker_list_free(*out, *n);
    *out = NULL;
    *n = 0;
  }
  return e;
}

static enum err sl_worker_stop(struct ledger *l, const char *id,
                               const char *reason)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st;
  enum err e;

  if ((e = tx_begin(s)))
    return e;
  st = sl_prep(s, "UPDATE workers SET state = 'offline', reason = ?, load = 0"
                  " WHERE id = ? AND state = 'online'");
  if (!st)
    return tx_end(s, ERR_DB);
  bind_text(st, 1, reason ? reason : "stopped");
  bind_text(st, 2, id);
  if ((e = sl_done(s, st)))
    return tx_end(s, e);
  if (sqlite3_changes(s->db) != 1)
    return tx_end(s, ERR_NOTFOUND);
  return tx_end(s, add_worker_event(s, id, "offline", reason ? reason : "stopped"));
}

static enum err sl_worker_list(struct ledger *l, struct worker_rec **out,
                               size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "SELECT " WORKER_COLS " FROM workers ORDER BY"
                                " (state = 'online') DESC, id");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  return collect_rows(s, st, sizeof(struct worker_rec), fill_worker, (void **)out, n);
}

static void fill_worker_event(sqlite3_stmt *st, void *p)
{
  struct worker_event *ev = p;

  memset(ev, 0, sizeof *ev);
  ev->id = sqlite3_column_int64(st, 0);
  ev->worker_id = col_text(st, 1);
  ev->kind = col_text(st, 2);
  ev->detail = col_text(st, 3);
  ev->at = sqlite3_column_int64(st, 4);
}

static enum err sl_worker_events(struct ledger *l, size_t max,
                                 struct worker_event **out, size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "SELECT id, worker_id, kind, detail, at FROM (SELECT * FROM"
      " worker_events ORDER BY id DESC LIMIT ?) ORDER BY id");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, (int64_t)max);
  return collect_rows(s, st, sizeof(struct worker_event), fill_worker_event,
                      (void **)out, n);
}

/* ---- named locks -------------------------------------------------------- */

static enum err sl_lock_acquire(struct ledger *l, const char *name,
                                const char *owner, int ttl_ms)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s,
      "INSERT INTO locks(name, owner, expires_at) VALUES (?1, ?2, ?3 + ?4)"
      " ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at ="
      " excluded.expires_at WHERE locks.owner = excluded.owner OR"
      " locks.expires_at < ?3");
  enum err e;

  if (!st)
    return ERR_DB;
  bind_text(st, 1, name);
  bind_text(st, 2, owner);
  sqlite3_bind_int64(st, 3, ledger_now_ms());
  sqlite3_bind_int64(st, 4, ttl_ms);
  if ((e = sl_done(s, st)))
    return e;
  return sqlite3_changes(s->db) == 1 ? ERR_OK : ERR_BUSY;
}

static enum err sl_lock_release(struct ledger *l, const char *name,
                                const char *owner)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "DELETE FROM locks WHERE name = ? AND owner = ?");
  enum err e;

  if (!st)
    return ERR_DB;
  bind_text(st, 1, name);
  bind_text(st, 2, owner);
  if ((e = sl_done(s, st)))
    return e;
  return sqlite3_changes(s->db) == 1 ? ERR_OK : ERR_NOTFOUND;
}

static enum err sl_artifact_add(struct ledger *l, struct artifact *a)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "INSERT INTO artifacts(job_id, step, name, size,"
                                " sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)");
  enum err e;

  if (!st)
    return ERR_DB;
  a->created_at = ledger_now_ms();
  sqlite3_bind_int64(st, 1, a->job_id);
  sqlite3_bind_int(st, 2, a->step);
  bind_text(st, 3, a->name);
  sqlite3_bind_int64(st, 4, a->size);
  bind_text(st, 5, a->sha256);
  sqlite3_bind_int64(st, 6, a->created_at);
  if (!(e = sl_done(s, st)))
    a->id = sqlite3_last_insert_rowid(s->db);
  return e;
}

static void fill_artifact(sqlite3_stmt *st, void *p)
{
  struct artifact *a = p;
  const unsigned char *sha;

  memset(a, 0, sizeof *a);
  a->id = sqlite3_column_int64(st, 0);
  a->job_id = sqlite3_column_int64(st, 1);
  a->step = sqlite3_column_int(st, 2);
  a->name = col_text(st, 3);
  a->size = sqlite3_column_int64(st, 4);
  if ((sha = sqlite3_column_text(st, 5)))
    snprintf(a->sha256, sizeof a->sha256, "%s", (const char *)sha);
  a->created_at = sqlite3_column_int64(st, 6);
}

static enum err sl_artifact_list(struct ledger *l, int64_t job_id,
                                 struct artifact **out, size_t *n)
{
  return rows_by_id(sl_of(l), "SELECT id, job_id, step, name, size, sha256,"
                              " created_at FROM artifacts WHERE job_id = ?"
                              " ORDER BY id",
                    job_id, sizeof(struct artifact), fill_artifact, (void **)out, n);
}

/* ---- model conversation and token usage ---------------------------------- */

static enum err sl_turn_put(struct ledger *l, const char *channel, int64_t chat_id,
                            int64_t user_id, const char *text, int64_t *id)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "INSERT INTO chat_turns(channel, chat_id, user_id,"
                                " text, at) VALUES (?, ?, ?, ?, ?)");
  enum err e;

  if (!st)
    return ERR_DB;
  bind_text(st, 1, channel);
  sqlite3_bind_int64(st, 2, chat_id);
  sqlite3_bind_int64(st, 3, user_id);
  bind_text(st, 4, text ? text : "");
  sqlite3_bind_int64(st, 5, ledger_now_ms());
  if (!(e = sl_done(s, st)) && id)
    *id = sqlite3_last_insert_rowid(s->db);
  return e;
}

static void fill_turn(sqlite3_stmt *st, void *p)
{
  struct chat_turn *t = p;

  t->id = sqlite3_column_int64(st, 0);
  t->channel = col_text(st, 1);
  t->chat_id = sqlite3_column_int64(st, 2);
  t->user_id = sqlite3_column_int64(st, 3);
  t->text = col_text(st, 4);
  t->at = sqlite3_column_int64(st, 5);
}

static enum err sl_turn_pending(struct ledger *l, size_t max, struct chat_turn **out,
                                size_t *n)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "SELECT id, channel, chat_id, user_id, text, at"
                                " FROM chat_turns WHERE state = 'pending'"
                                " ORDER BY id LIMIT ?");

  *out = NULL;
  *n = 0;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, (int64_t)(max ? max : 20));
  return collect_rows(s, st, sizeof(struct chat_turn), fill_turn, (void **)out, n);
}

static enum err sl_turn_done(struct ledger *l, int64_t id)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "UPDATE chat_turns SET state = 'done' WHERE id = ?");

  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, id);
  return sl_done(s, st);
}

static enum err sl_usage_add(struct ledger *l, const struct llm_usage *u)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "INSERT INTO llm_usage(channel, chat_id, job_id, model,"
                                " prompt_tokens, completion_tokens, at)"
                                " VALUES (?, ?, ?, ?, ?, ?, ?)");

  if (!st)
    return ERR_DB;
  bind_text(st, 1, u->channel);
  sqlite3_bind_int64(st, 2, u->chat_id);
  sqlite3_bind_int64(st, 3, u->job_id);
  bind_text(st, 4, u->model ? u->model : "?");
  sqlite3_bind_int64(st, 5, u->prompt_tokens);
  sqlite3_bind_int64(st, 6, u->completion_tokens);
  sqlite3_bind_int64(st, 7, ledger_now_ms());
  return sl_done(s, st);
}

static enum err sl_usage_sum(struct ledger *l, const struct usage_filter *f,
                             int64_t *prompt, int64_t *completion)
{
  struct sqlite_ledger *s = sl_of(l);
  sqlite3_stmt *st = sl_prep(s, "SELECT COALESCE(SUM(prompt_tokens), 0),"
                                " COALESCE(SUM(completion_tokens), 0) FROM llm_usage"
                                " WHERE at >= ?1 AND (?2 IS NULL OR (channel = ?2 AND"
                                " chat_id = ?3)) AND (?4 = 0 OR job_id = ?4)");
  enum err e = ERR_OK;

  *prompt = *completion = 0;
  if (!st)
    return ERR_DB;
  sqlite3_bind_int64(st, 1, f->since_ms);
  bind_text(st, 2, f->channel);
  sqlite3_bind_int64(st, 3, f->chat_id);
  sqlite3_bind_int64(st, 4, f->job_id);
  if (sqlite3_step(st) == SQLITE_ROW) {
    *prompt = sqlite3_column_int64(st, 0);
    *completion = sqlite3_column_int64(st, 1);
  } else {
    e = sl_fail(s, "usage_sum");
  }
  sqlite3_finalize(st);
  return e;
}

static enum err sl_lazy_commits(struct ledger *l, int on);
static void sl_release_memory(struct ledger *l);

const struct ledger_ops ledger_sqlite_ops = {
  .name = "sqlite",
  .close = sl_close,
  .migrate = sl_migrate,
  .schema_version = sl_schema_version,
  .begin = sl_begin,
  .commit = sl_commit,
  .rollback = sl_rollback,
  .job_create = sl_job_create,
  .job_create_routed = sl_job_create_routed,
  .job_get = sl_job_get,
  .job_list = sl_job_list,
  .job_set_plan = sl_job_set_plan,
  .job_transition = sl_job_transition,
  .job_claim = sl_job_claim,
  .job_claim_some = sl_job_claim_some,
  .job_heartbeat = sl_job_heartbeat,
  .job_finish = sl_job_finish,
  .job_finish_notice = sl_job_finish_notice,
  .job_log_put = sl_job_log_put,
  .job_log_get = sl_job_log_get,
  .job_request_cancel = sl_job_request_cancel,
  .job_expired = sl_job_expired,
  .job_transitions = sl_job_transitions,
  .step_record = sl_step_record,
  .step_list = sl_step_list,
  .msg_append = sl_msg_append,
  .msg_recent = sl_msg_recent,
  .outbox_put = sl_outbox_put,
  .outbox_pending = sl_outbox_pending,
  .outbox_done = ledger_outbox_done,
  .outbox_retry = ledger_outbox_retry,
  .outbox_fail = ledger_outbox_fail,
  .outbox_set = sl_outbox_set,
  .kv_get = sl_kv_get,
  .kv_set = sl_kv_set,
  .job_requeue = sl_job_requeue,
  .worker_register = sl_worker_register,
  .worker_heartbeat = sl_worker_heartbeat,
  .worker_expire = sl_worker_expire,
  .worker_stop = sl_worker_stop,
  .worker_list = sl_worker_list,
  .worker_events = sl_worker_events,
  .lock_acquire = sl_lock_acquire,
  .lock_release = sl_lock_release,
  .artifact_add = sl_artifact_add,
  .artifact_list = sl_artifact_list,
  .turn_put = sl_turn_put,
  .turn_pending = sl_turn_pending,
  .turn_done = sl_turn_done,
  .usage_add = sl_usage_add,
  .usage_sum = sl_usage_sum,
  .lazy_commits = sl_lazy_commits,
  .release_memory = sl_release_memory,
};

/* Unpinned pages of the page cache back to the heap (kept statements stay:
 * preparing them again would cost more than they hold). */
static void sl_release_memory(struct ledger *l)
{
  struct sqlite_ledger *s = sl_of(l);

  if (!s->in_tx)
    sqlite3_db_release_memory(s->db);
}

/* A lazy commit skips the group sync: the next sync of the WAL, by any
 * connection, makes it durable with the commits after it. */
static enum err sl_lazy_commits(struct ledger *l, int on)
{
  struct sqlite_ledger *s = sl_of(l);

  if (s->in_tx)
    return ERR_STATE;
  s->lazy = on;
  return ERR_OK;
}

/* Waits for another connection's write lock.  When a transaction of this
 * process holds it, asleep until that one ends.  Else (another process, or
 * a statement of this one outside a transaction) short sleeps first (most
 * holders are a claim of tens of µs or a commit, a few tenths of a ms),
 * then 5 ms steps; gives up after about 10 s.  SQLite's own busy timeout
 * sleeps 5, 10, 15 ... 100 ms, which adds tens of ms to every collision
 * between the poller and the sender. */
static int sl_busy(void *ud, int count)
{
  struct sqlite_ledger *s = ud;
  struct timespec ts = {0, count < 10 ? 50000L : count < 20 ? 250000L : 5000000L};

  if (count >= 20 + 2000 || (s->checkpointing && count >= 15))
    return 0;
  if (s->sync && !s->wmu_held) {
    if (pthread_mutex_trylock(&s->sync->wmu) != 0) {
      pthread_mutex_lock(&s->sync->wmu);   /* a writer of this process */
      pthread_mutex_unlock(&s->sync->wmu);
      return 1;
    }
    pthread_mutex_unlock(&s->sync->wmu);
  }
  nanosleep(&ts, NULL);
  return 1;
}

/* Whether the connection's database is in WAL mode. */
static int sl_is_wal(struct sqlite_ledger *s)
{
  sqlite3_stmt *st = sl_prep(s, "PRAGMA journal_mode");
  int wal = st && sqlite3_step(st) == SQLITE_ROW &&
            sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;

  sqlite3_finalize(st);
  return wal;
}

enum err ledger_sqlite_open(const char *path, struct ledger **out, char *errbuf,
                            size_t errlen)
{
  struct sqlite_ledger *s = calloc(1, sizeof *s);
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;

  *out = NULL;
  if (!s)
    return ERR_NOMEM;
  s->base.ops = &ledger_sqlite_ops;
  if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
    snprintf(errbuf, errlen, "cannot open database '%s': %s", path,
             s->db ? sqlite3_errmsg(s->db) : "out of memory");
    goto fail;
  }
  sqlite3_busy_handler(s->db, sl_busy, s);
  /* NORMAL with the group sync of the WAL hook: see the top of the file;
   * without WAL (a file system without shared memory), FULL. */
  if (sl_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                 " PRAGMA foreign_keys=ON;") ||
      (!(s->wal = sl_is_wal(s)) && sl_exec(s, "PRAGMA synchronous=FULL")) ||
      (s->wal && sl_pragma_int(s, "PRAGMA page_size", 4096, &s->page_size))) {
    snprintf(errbuf, errlen, "cannot use database '%s': %s", path, s->base.errmsg);
    goto fail;
  }
  if (s->wal) {
    if ((s->sync = sl_sync_get(path)))
      sqlite3_commit_hook(s->db, sl_commit_hook, s);
    sqlite3_wal_hook(s->db, sl_wal_hook, s);
  }
  *out = &s->base;
  return ERR_OK;
fail:
  sqlite3_close_v2(s->db);
  free(s);
  return ERR_DB;
}
