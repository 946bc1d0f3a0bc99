-- Retries with backoff, the worker registry and named locks with expiry.
-- PostgreSQL backend. Times are unix milliseconds (database clock).

-- A job re-queued after a transient failure waits until not_before.
ALTER TABLE jobs ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;

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
  started_at BIGINT NOT NULL,
  heartbeat_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE INDEX workers_state ON workers(state, expires_at);

-- What happened to workers: 'online', 'offline', 'back'.
CREATE TABLE worker_events (
  id BIGSERIAL PRIMARY KEY,
  worker_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT,
  at BIGINT NOT NULL
);

-- Named locks with an owner and an expiry: held until released or expired.
CREATE TABLE locks (
  name TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
