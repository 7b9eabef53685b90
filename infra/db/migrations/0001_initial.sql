-- Up Migration
-- The control plane's state: every table the edge and the operators read. The seeds kept runtimes
-- without a users FK and tokens in clear text; here every reference is a foreign key and every token
-- is stored as a SHA-256 hash.

CREATE TABLE users (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email        text NOT NULL,
  username     text NOT NULL,
  name         text,
  avatar_url   text,
  plan         text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'team')),
  github_id    text UNIQUE,
  google_id    text UNIQUE,
  is_operator  boolean NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (username ~ '^[a-z_][a-z0-9._-]{0,31}$')
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (username);

CREATE TABLE sessions (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  revoked_at    timestamptz,
  user_agent    text,
  ip            inet
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE invites (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  project      text NOT NULL,
  role         text NOT NULL DEFAULT 'editor' CHECK (role IN ('viewer', 'editor')),
  token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
  expires_at   timestamptz,
  max_uses     integer CHECK (max_uses IS NULL OR max_uses > 0),
  uses         integer NOT NULL DEFAULT 0 CHECK (uses >= 0),
  revoked_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now(),
  CHECK (max_uses IS NULL OR uses <= max_uses)
);
CREATE INDEX invites_owner_id_idx ON invites (owner_id);

-- A host runs containers: the base server or an EC2 instance launched from the runtime AMI.
CREATE TABLE hosts (
  id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9.-]{0,62}$'),
  kind           text NOT NULL CHECK (kind IN ('base', 'ec2')),
  instance_id    text UNIQUE,
  instance_type  text,
  lifecycle      text CHECK (lifecycle IN ('on-demand', 'spot')),
  address        text,
  ssh_port       integer NOT NULL DEFAULT 22 CHECK (ssh_port BETWEEN 1 AND 65535),
  ssh_user       text,
  host_key       text,
  state          text NOT NULL DEFAULT 'provisioning'
                 CHECK (state IN ('provisioning', 'booting', 'ready', 'draining', 'terminating', 'terminated', 'failed')),
  reserved_for   uuid REFERENCES users (id) ON DELETE SET NULL,
  reserved_until timestamptz,
  gpu            boolean NOT NULL DEFAULT false,
  memory_bytes   bigint CHECK (memory_bytes IS NULL OR memory_bytes > 0),
  cpus           real CHECK (cpus IS NULL OR cpus > 0),
  facts          jsonb NOT NULL DEFAULT '{}'::jsonb,
  error          text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  terminated_at  timestamptz,
  CHECK (kind <> 'ec2' OR instance_id IS NOT NULL),
  CHECK (reserved_until IS NULL OR reserved_for IS NOT NULL)
);
CREATE INDEX hosts_state_idx ON hosts (state);
CREATE INDEX hosts_reserved_for_idx ON hosts (reserved_for) WHERE reserved_for IS NOT NULL;

-- A runtime is one MRP container: the user's own, or an AI sandbox forked from it.
CREATE TABLE runtimes (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  kind               text NOT NULL DEFAULT 'user' CHECK (kind IN ('user', 'sandbox')),
  parent_runtime_id  uuid REFERENCES runtimes (id) ON DELETE CASCADE,
  container_name     text NOT NULL,
  host_id            text REFERENCES hosts (id),
  port               integer CHECK (port IS NULL OR port BETWEEN 1 AND 65535),
  state              text NOT NULL DEFAULT 'starting'
                     CHECK (state IN ('starting', 'running', 'paused', 'migrating', 'checkpointing',
                                      'checkpointed', 'restoring', 'stopped', 'failed')),
  tier               text NOT NULL DEFAULT 'base',
  memory_limit_bytes bigint NOT NULL CHECK (memory_limit_bytes > 0),
  cpu_limit          real NOT NULL CHECK (cpu_limit > 0),
  image              text NOT NULL,
  expires_at         timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'sandbox') = (parent_runtime_id IS NOT NULL))
);
CREATE INDEX runtimes_user_id_idx ON runtimes (user_id);
CREATE INDEX runtimes_host_id_idx ON runtimes (host_id);
-- One live runtime per user; sandboxes are separate rows.
CREATE UNIQUE INDEX runtimes_one_live_per_user ON runtimes (user_id)
  WHERE kind = 'user' AND state NOT IN ('stopped', 'failed');
-- No two live containers share a name on a host (the seeds' restore-twice collision).
CREATE UNIQUE INDEX runtimes_container_name_per_host ON runtimes (host_id, container_name)
  WHERE state NOT IN ('stopped', 'failed', 'checkpointed');

CREATE TABLE editors (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  runtime_id      uuid REFERENCES runtimes (id) ON DELETE SET NULL,
  container_name  text NOT NULL,
  host_id         text NOT NULL REFERENCES hosts (id),
  port            integer CHECK (port IS NULL OR port BETWEEN 1 AND 65535),
  state           text NOT NULL DEFAULT 'starting'
                  CHECK (state IN ('starting', 'running', 'stopped', 'failed')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX editors_one_live_per_user ON editors (user_id) WHERE state NOT IN ('stopped', 'failed');

CREATE TABLE snapshots (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  runtime_id    uuid REFERENCES runtimes (id) ON DELETE SET NULL,
  name          text NOT NULL,
  kind          text NOT NULL DEFAULT 'named' CHECK (kind IN ('named', 'idle', 'migration')),
  host_id       text REFERENCES hosts (id) ON DELETE SET NULL,
  local_path    text,
  s3_key        text,
  size_bytes    bigint CHECK (size_bytes IS NULL OR size_bytes >= 0),
  sha256        text CHECK (sha256 IS NULL OR sha256 ~ '^[0-9a-f]{64}$'),
  memory_limit_bytes bigint,
  state         text NOT NULL DEFAULT 'creating' CHECK (state IN ('creating', 'ready', 'deleting', 'deleted', 'failed')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  deleted_at    timestamptz
);
CREATE INDEX snapshots_user_id_idx ON snapshots (user_id);
CREATE UNIQUE INDEX snapshots_name_per_user ON snapshots (user_id, name) WHERE state NOT IN ('deleted', 'failed');

CREATE TABLE migrations (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  runtime_id      uuid NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
  user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  workflow_id     text,
  reason          text NOT NULL,
  source_host_id  text NOT NULL REFERENCES hosts (id),
  target_host_id  text REFERENCES hosts (id),
  from_type       text,
  to_type         text,
  status          text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  step            text,
  error           text,
  checkpoint_ms   integer CHECK (checkpoint_ms IS NULL OR checkpoint_ms >= 0),
  transfer_ms     integer CHECK (transfer_ms IS NULL OR transfer_ms >= 0),
  restore_ms      integer CHECK (restore_ms IS NULL OR restore_ms >= 0),
  downtime_ms     integer CHECK (downtime_ms IS NULL OR downtime_ms >= 0),
  archive_bytes   bigint,
  started_at      timestamptz NOT NULL DEFAULT now(),
  completed_at    timestamptz,
  CHECK ((status IN ('completed', 'failed', 'cancelled')) = (completed_at IS NOT NULL))
);
CREATE INDEX migrations_runtime_id_idx ON migrations (runtime_id);
CREATE INDEX migrations_user_id_idx ON migrations (user_id);
CREATE INDEX migrations_status_idx ON migrations (status) WHERE status IN ('pending', 'running');

-- Append-only log of what happened, for operators and the dashboard.
CREATE TABLE events (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at           timestamptz NOT NULL DEFAULT now(),
  type         text NOT NULL CHECK (type ~ '^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$'),
  source       text NOT NULL,
  user_id      uuid REFERENCES users (id) ON DELETE SET NULL,
  runtime_id   uuid REFERENCES runtimes (id) ON DELETE SET NULL,
  host_id      text REFERENCES hosts (id) ON DELETE SET NULL,
  workflow_id  text,
  payload      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_at_idx ON events (at);
CREATE INDEX events_user_id_idx ON events (user_id, at) WHERE user_id IS NOT NULL;
CREATE INDEX events_host_id_idx ON events (host_id, at) WHERE host_id IS NOT NULL;

-- Down Migration
DROP TABLE events;
DROP TABLE migrations;
DROP TABLE snapshots;
DROP TABLE editors;
DROP TABLE runtimes;
DROP TABLE hosts;
DROP TABLE invites;
DROP TABLE sessions;
DROP TABLE users;
