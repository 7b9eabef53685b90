-- Up Migration
-- What login needs beyond the first schema: ports leased per host (the seeds picked random ports and
-- never checked them), the editor's own sync port and the runtime address it was last told, so a
-- restart of the edge or the worker loses nothing.

CREATE TABLE port_leases (
  host_id     text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  port        integer NOT NULL CHECK (port BETWEEN 1024 AND 65535),
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  purpose     text NOT NULL CHECK (purpose IN ('runtime', 'editor', 'editor-sync', 'sandbox')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (host_id, port)
);
-- One lease per user, host and purpose: a retried allocation finds the lease it already holds.
CREATE UNIQUE INDEX port_leases_one_per_purpose ON port_leases (host_id, user_id, purpose) WHERE purpose <> 'sandbox';

ALTER TABLE editors
  ADD COLUMN sync_port integer CHECK (sync_port IS NULL OR sync_port BETWEEN 1 AND 65535),
  ADD COLUMN runtime_host text,
  ADD COLUMN runtime_port integer CHECK (runtime_port IS NULL OR runtime_port BETWEEN 1 AND 65535),
  ADD COLUMN image text;

ALTER TABLE runtimes
  ADD COLUMN address text;

-- Down Migration
ALTER TABLE runtimes DROP COLUMN address;
ALTER TABLE editors DROP COLUMN image, DROP COLUMN runtime_port, DROP COLUMN runtime_host, DROP COLUMN sync_port;
DROP TABLE port_leases;
