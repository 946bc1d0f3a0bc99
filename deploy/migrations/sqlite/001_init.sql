-- SKYNET ledger, SQLite backend: jobs, steps, transitions, conversation, outbox.
-- Times are unix milliseconds.
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL,
  chat_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
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
  lease_expires INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_chat ON jobs(channel, chat_id, id);

CREATE TABLE steps (
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  state TEXT NOT NULL,
  exit_code INTEGER,
  output_tail TEXT,
  started_at INTEGER,
  finished_at INTEGER,
  PRIMARY KEY (job_id, idx)
);

CREATE TABLE transitions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  from_state TEXT,
  to_state TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT,
  at INTEGER NOT NULL
);
CREATE INDEX transitions_job ON transitions(job_id, id);

CREATE TABLE messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL,
  chat_id INTEGER NOT NULL,
  role TEXT NOT NULL,
  text TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE INDEX messages_chat ON messages(channel, chat_id, id);

CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL,
  chat_id INTEGER NOT NULL,
  job_id INTEGER,
  text TEXT NOT NULL,
  buttons_json TEXT,
  edit_key TEXT,
  state TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  not_before INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX outbox_pending ON outbox(channel, state, not_before, id);

CREATE TABLE kv (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
