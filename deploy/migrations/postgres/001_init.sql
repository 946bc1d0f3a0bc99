-- SKYNET ledger, PostgreSQL backend: the same tables as SQLite.
-- Times are unix milliseconds.
CREATE TABLE jobs (
  id BIGSERIAL PRIMARY KEY,
  channel TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  text TEXT NOT NULL,
  state TEXT NOT NULL,
  risk TEXT NOT NULL DEFAULT 'READ_ONLY',
  plan_json TEXT,
  summary TEXT,
  reason TEXT,
  exit_code INTEGER,
  output_tail TEXT,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_expires BIGINT,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_chat ON jobs(channel, chat_id, id);

CREATE TABLE steps (
  job_id BIGINT NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  state TEXT NOT NULL,
  exit_code INTEGER,
  output_tail TEXT,
  started_at BIGINT,
  finished_at BIGINT,
  PRIMARY KEY (job_id, idx)
);

CREATE TABLE transitions (
  id BIGSERIAL PRIMARY KEY,
  job_id BIGINT NOT NULL REFERENCES jobs(id),
  from_state TEXT,
  to_state TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT,
  at BIGINT NOT NULL
);
CREATE INDEX transitions_job ON transitions(job_id, id);

CREATE TABLE messages (
  id BIGSERIAL PRIMARY KEY,
  channel TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  role TEXT NOT NULL,
  text TEXT NOT NULL,
  at BIGINT NOT NULL
);
CREATE INDEX messages_chat ON messages(channel, chat_id, id);

CREATE TABLE outbox (
  id BIGSERIAL PRIMARY KEY,
  channel TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  job_id BIGINT,
  text TEXT NOT NULL,
  buttons_json TEXT,
  edit_key TEXT,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before BIGINT NOT NULL DEFAULT 0,
  last_error TEXT,
  created_at BIGINT NOT NULL
);
CREATE INDEX outbox_pending ON outbox(channel, state, not_before, id);

CREATE TABLE kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
