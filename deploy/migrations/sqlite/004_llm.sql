-- Model-backed conversation: chat turns waiting for the model (a restart
-- answers them), and token usage per request for budgets and /status.
CREATE TABLE chat_turns (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL,
  chat_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL,
  text TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  at INTEGER NOT NULL
);
CREATE INDEX chat_turns_pending ON chat_turns(state, id);

CREATE TABLE llm_usage (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT,
  chat_id INTEGER NOT NULL DEFAULT 0,
  job_id INTEGER NOT NULL DEFAULT 0,
  model TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  at INTEGER NOT NULL
);
CREATE INDEX llm_usage_at ON llm_usage(at);
CREATE INDEX llm_usage_job ON llm_usage(job_id);
