-- Up Migration
-- The resource monitor: when the user was last seen using their runtime through the edge (HTTP or
-- WebSocket traffic to the editor), written by the edge at most every few seconds per user. A user
-- reading or typing is never taken for idle.
ALTER TABLE runtimes ADD COLUMN last_activity_at timestamptz;

-- Down Migration
ALTER TABLE runtimes DROP COLUMN last_activity_at;
