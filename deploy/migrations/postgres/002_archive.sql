-- The artifact store: metadata of the files steps produced.  The content is
-- in $SKYNET_HOME/artifacts/<sha256>, shared by every artifact of that hash.
CREATE TABLE artifacts (
  id BIGSERIAL PRIMARY KEY,
  job_id BIGINT NOT NULL REFERENCES jobs(id),
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  size BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX artifacts_job ON artifacts(job_id, id);
CREATE INDEX artifacts_sha256 ON artifacts(sha256);
