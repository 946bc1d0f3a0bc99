-- Retries with backoff, the worker registry and named locks with expiry.
-- SQLite backend.
-- Times are unix milliseconds.

-- A job re-queued after a transient failure waits until not_before.
ALTER TABLE jobs ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0;

-- One row per worker process ever seen; state 'online' or 'offline'.
CREATE TABLE workers (
  id TEXT PRIMARY KEY,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  providers TEXT NOT NULL DEFAULT '',
  capacity INTEGER NOT NULL DEFAULT 0,
  load INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  reason TEXT,
  started_at INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX workers_state ON workers(state, expires_at);

-- What happened to workers: 'online', 'offline', 'back'.
CREATE TABLE worker_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  worker_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT,
  at INTEGER NOT NULL
);

-- Named locks with an owner and an expiry: held until released or expired.
CREATE TABLE locks (
  name TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
