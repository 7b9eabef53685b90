-- Up Migration
-- Idle checkpoints, named snapshots and sandboxes. A snapshot row is one checkpoint archive: where it is
-- (a file on the base server, an S3 object, or both), its bytes and SHA-256, and what a restore needs
-- to rewrite (the storage roots of the host it was made on, the limits it ran with). A checkpointed
-- runtime names the idle snapshot it lives in, so the next visit restores it (the seeds started fresh).

ALTER TABLE snapshots
  ADD COLUMN storage_roots jsonb,
  ADD COLUMN tier text,
  ADD COLUMN cpu_limit real,
  ADD COLUMN workflow_id text,
  ADD COLUMN error text,
  ADD COLUMN checkpoint_ms integer CHECK (checkpoint_ms IS NULL OR checkpoint_ms >= 0),
  ADD COLUMN upload_ms integer CHECK (upload_ms IS NULL OR upload_ms >= 0),
  ADD COLUMN frozen_ms integer CHECK (frozen_ms IS NULL OR frozen_ms >= 0);

ALTER TABLE runtimes
  ADD COLUMN snapshot_id uuid REFERENCES snapshots (id) ON DELETE SET NULL,
  ADD COLUMN sandbox_home text;
CREATE INDEX runtimes_sandbox_expiry_idx ON runtimes (expires_at) WHERE kind = 'sandbox' AND state NOT IN ('stopped', 'failed');

-- A lease can belong to one operation (a sandbox, the runtime a snapshot restore makes beside the
-- current one): a retry of that operation finds its own lease by `holder`. The user's own leases have
-- none and stay one per host and purpose.
ALTER TABLE port_leases ADD COLUMN holder text;
DROP INDEX port_leases_one_per_purpose;
CREATE UNIQUE INDEX port_leases_one_per_purpose ON port_leases (host_id, user_id, purpose) WHERE purpose <> 'sandbox' AND holder IS NULL;
CREATE UNIQUE INDEX port_leases_one_per_holder ON port_leases (host_id, holder) WHERE holder IS NOT NULL;

-- Down Migration
DROP INDEX port_leases_one_per_holder;
DROP INDEX port_leases_one_per_purpose;
DELETE FROM port_leases WHERE holder IS NOT NULL;
CREATE UNIQUE INDEX port_leases_one_per_purpose ON port_leases (host_id, user_id, purpose) WHERE purpose <> 'sandbox';
ALTER TABLE port_leases DROP COLUMN holder;
DROP INDEX runtimes_sandbox_expiry_idx;
ALTER TABLE runtimes DROP COLUMN sandbox_home, DROP COLUMN snapshot_id;
ALTER TABLE snapshots DROP COLUMN frozen_ms, DROP COLUMN upload_ms, DROP COLUMN checkpoint_ms, DROP COLUMN error, DROP COLUMN workflow_id,
  DROP COLUMN cpu_limit, DROP COLUMN tier, DROP COLUMN storage_roots;
