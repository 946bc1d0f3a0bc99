-- Model-backed conversation: chat turns waiting for the model (a restart
-- answers them), and token usage per request for budgets and /status.
CREATE TABLE chat_turns (
  id BIGSERIAL PRIMARY KEY,
  channel TEXT NOT NULL,
  chat_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  text TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  at BIGINT NOT NULL
);
CREATE INDEX chat_turns_pending ON chat_turns(state, id);

CREATE TABLE llm_usage (
  id BIGSERIAL PRIMARY KEY,
  channel TEXT,
  chat_id BIGINT NOT NULL DEFAULT 0,
  job_id BIGINT NOT NULL DEFAULT 0,
  model TEXT NOT NULL,
  prompt_tokens BIGINT NOT NULL,
  completion_tokens BIGINT NOT NULL,
  at BIGINT NOT NULL
);
CREATE INDEX llm_usage_at ON llm_usage(at);
CREATE INDEX llm_usage_job ON llm_usage(job_id);
