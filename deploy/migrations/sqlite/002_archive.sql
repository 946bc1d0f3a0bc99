-- The artifact store: metadata of the files steps produced.  The content is
-- in $SKYNET_HOME/artifacts/<sha256>, shared by every artifact of that hash.
CREATE TABLE artifacts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX artifacts_job ON artifacts(job_id, id);
CREATE INDEX artifacts_sha256 ON artifacts(sha256);
