-- Up Migration
-- Elastic compute: EC2 hosts reserved for a user (pre-provision) and claimed by a migration, and the
-- timings a migration records. A reservation is `reserved_for` + `reserved_until`; a migration that
-- takes the host sets `claimed_by` (its workflow id), after which the reservation's timeout no longer
-- terminates it.

ALTER TABLE hosts
  ADD COLUMN tier text,
  ADD COLUMN launched_by text,
  ADD COLUMN claimed_by text,
  ADD COLUMN claimed_at timestamptz;
CREATE INDEX hosts_reserved_until_idx ON hosts (reserved_until) WHERE reserved_for IS NOT NULL;

ALTER TABLE migrations
  ADD COLUMN frozen_ms integer CHECK (frozen_ms IS NULL OR frozen_ms >= 0),
  ADD COLUMN archive_sha256 text CHECK (archive_sha256 IS NULL OR archive_sha256 ~ '^[0-9a-f]{64}$');

-- Down Migration
ALTER TABLE migrations DROP COLUMN archive_sha256, DROP COLUMN frozen_ms;
DROP INDEX hosts_reserved_until_idx;
ALTER TABLE hosts DROP COLUMN claimed_at, DROP COLUMN claimed_by, DROP COLUMN launched_by, DROP COLUMN tier;
