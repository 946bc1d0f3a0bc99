-- jobs, transitions and outbox without AUTOINCREMENT.  Nothing is ever
-- deleted from them, so ids stay what they were and are never reused; but
-- AUTOINCREMENT kept a row per table in sqlite_sequence, one page that every
-- submission and every result rewrote in the log (with workers, one
-- submitter went from ~5,400 to ~5,800 jobs/s).  Each table is copied,
-- dropped and made again; the foreign keys that point at jobs are checked
-- at the commit, once every job is back.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE jobs_copy AS SELECT * FROM jobs;
DROP TABLE jobs;
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY,
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
  updated_at INTEGER NOT NULL,
  not_before INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs (id, channel, chat_id, user_id, text, state, risk, plan_json, summary, reason,
                  exit_code, output_tail, cancel_requested, attempts, lease_owner,
                  lease_expires, created_at, updated_at, not_before)
  SELECT id, channel, chat_id, user_id, text, state, risk, plan_json, summary, reason,
         exit_code, output_tail, cancel_requested, attempts, lease_owner, lease_expires,
         created_at, updated_at, not_before FROM jobs_copy ORDER BY id;
DROP TABLE jobs_copy;
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_chat ON jobs(channel, chat_id, id);

CREATE TABLE transitions_copy AS SELECT * FROM transitions;
DROP TABLE transitions;
CREATE TABLE transitions (
  id INTEGER PRIMARY KEY,
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  from_state TEXT,
  to_state TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT,
  at INTEGER NOT NULL
);
INSERT INTO transitions (id, job_id, from_state, to_state, actor, reason, at)
  SELECT id, job_id, from_state, to_state, actor, reason, at FROM transitions_copy ORDER BY id;
DROP TABLE transitions_copy;
CREATE INDEX transitions_job ON transitions(job_id, id);

CREATE TABLE outbox_copy AS SELECT * FROM outbox;
DROP TABLE outbox;
CREATE TABLE outbox (
  id INTEGER PRIMARY KEY,
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
INSERT INTO outbox (id, channel, chat_id, job_id, text, buttons_json, edit_key, state, attempts,
                    not_before, last_error, created_at)
  SELECT id, channel, chat_id, job_id, text, buttons_json, edit_key, state, attempts,
         not_before, last_error, created_at FROM outbox_copy ORDER BY id;
DROP TABLE outbox_copy;
CREATE INDEX outbox_pending ON outbox(channel, state, not_before, id);
