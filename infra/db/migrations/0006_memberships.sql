-- Up Migration
-- Collaborators (issue 7). An invite link grants a role on one of its owner's projects; whoever takes it
-- becomes a member. A membership is what the edge checks on every request to `/u/<ownerId>/...`; it is
-- revoked (never deleted) so an owner can see who had access, and revoking an invite revokes the
-- memberships it granted. Deleting either user deletes the membership.

CREATE TABLE memberships (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  owner_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  member_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  project     text NOT NULL CHECK (project ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  role        text NOT NULL CHECK (role IN ('viewer', 'editor')),
  invite_id   uuid REFERENCES invites (id) ON DELETE SET NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz,
  CHECK (owner_id <> member_id)
);
-- One live membership per owner, member and project: joining again upgrades it instead of adding rows.
CREATE UNIQUE INDEX memberships_one_live ON memberships (owner_id, member_id, project) WHERE revoked_at IS NULL;
CREATE INDEX memberships_member_id_idx ON memberships (member_id) WHERE revoked_at IS NULL;
CREATE INDEX memberships_invite_id_idx ON memberships (invite_id) WHERE invite_id IS NOT NULL;

-- What the first schema's invites lacked: when the link was last taken, and the same project names the
-- rest of the platform accepts (the project is put in the redirect to the owner's editor).
ALTER TABLE invites
  ADD COLUMN last_used_at timestamptz,
  ADD CONSTRAINT invites_project_name CHECK (project ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');

-- Down Migration
ALTER TABLE invites DROP CONSTRAINT invites_project_name, DROP COLUMN last_used_at;
DROP TABLE memberships;
