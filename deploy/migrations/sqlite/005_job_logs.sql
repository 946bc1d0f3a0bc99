-- The log of a job that finished quickly, kept with its result instead of in
-- a file of its own (logs/<id>.jsonl holds the rest): the same JSON lines.
CREATE TABLE job_logs (
  job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
  lines TEXT NOT NULL
);
