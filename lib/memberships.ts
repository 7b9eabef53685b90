import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { userIdPattern } from '../workflows/contracts/users.js';
import { hashToken } from './accounts.js';
import { withTransaction } from './db.js';

/**
 * Invites and memberships (collaborators). An invite link's token is handed to its owner once; only its
 * SHA-256 is stored. Taking a link makes the taker a member of the owner's project with the invite's
 * role; the edge checks live memberships on every request to `/u/<ownerId>/...`.
 */
export type CollaboratorRole = 'viewer' | 'editor';

export interface InviteRecord {
  id: string;
  ownerId: string;
  project: string;
  role: CollaboratorRole;
  expiresAt: Date | null;
  maxUses: number | null;
  uses: number;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
  createdAt: Date;
}

interface InviteRow {
  id: string;
  owner_id: string;
  project: string;
  role: CollaboratorRole;
  expires_at: Date | null;
  max_uses: number | null;
  uses: number;
  revoked_at: Date | null;
  last_used_at: Date | null;
  created_at: Date;
}

const inviteFromRow = (r: InviteRow): InviteRecord => ({
  id: r.id,
  ownerId: r.owner_id,
  project: r.project,
  role: r.role,
  expiresAt: r.expires_at,
  maxUses: r.max_uses,
  uses: r.uses,
  revokedAt: r.revoked_at,
  lastUsedAt: r.last_used_at,
  createdAt: r.created_at,
});

export type InviteStatus = 'active' | 'revoked' | 'expired' | 'used-up';

/** Why a link can or cannot be taken now; revocation wins over expiry, expiry over use. */
export function inviteStatus(invite: Pick<InviteRecord, 'revokedAt' | 'expiresAt' | 'maxUses' | 'uses'>, now = new Date()): InviteStatus {
  if (invite.revokedAt) return 'revoked';
  if (invite.expiresAt && invite.expiresAt.getTime() <= now.getTime()) return 'expired';
  if (invite.maxUses !== null && invite.uses >= invite.maxUses) return 'used-up';
  return 'active';
}

/** A person as another user may see them: enough to recognise a collaborator, nothing more. */
export interface PersonView {
  id: string;
  email: string;
  username: string;
  name: string | null;
}

export interface MembershipRecord {
  id: string;
  ownerId: string;
  memberId: string;
  project: string;
  role: CollaboratorRole;
  inviteId: string | null;
  createdAt: Date;
  revokedAt: Date | null;
}

interface MembershipRow {
  id: string;
  owner_id: string;
  member_id: string;
  project: string;
  role: CollaboratorRole;
  invite_id: string | null;
  created_at: Date;
  revoked_at: Date | null;
}

const membershipFromRow = (r: MembershipRow): MembershipRecord => ({
  id: r.id,
  ownerId: r.owner_id,
  memberId: r.member_id,
  project: r.project,
  role: r.role,
  inviteId: r.invite_id,
  createdAt: r.created_at,
  revokedAt: r.revoked_at,
});

/** A membership with the other party: the member for an owner's list, the owner for a member's. */
export type MembershipWithPerson = MembershipRecord & { person: PersonView };

/** What taking an invite link came to. */
export type JoinOutcome =
  | { kind: 'unknown' }
  /** The owner opened their own link: nothing is granted or used. */
  | { kind: 'own'; invite: InviteRecord }
  | { kind: 'gone'; invite: InviteRecord; status: Exclude<InviteStatus, 'active'> }
  /** `alreadyMember`: this link had already made this user a member; no use was counted again. */
  | { kind: 'joined'; invite: InviteRecord; membership: MembershipRecord; alreadyMember: boolean };

/** What a live membership lets its member do in the owner's editor (the strongest, when several are live). */
export interface Grant {
  role: CollaboratorRole;
  membershipId: string;
}

/** Token shape: 32 random bytes, base64url. Anything else is not one of ours and is not looked up. */
const inviteTokenPattern = /^[A-Za-z0-9_-]{43}$/;

const personColumns = (alias: string) => `json_build_object('id', ${alias}.id, 'email', ${alias}.email, 'username', ${alias}.username, 'name', ${alias}.name) AS person`;

export function createMembershipStore(pool: pg.Pool) {
  return {
    invites: {
      /** Creates an invite; the returned token is the only copy of it. */
      async create(input: { ownerId: string; project: string; role: CollaboratorRole; expiresAt: Date; maxUses: number | null }): Promise<{ invite: InviteRecord; token: string }> {
        const token = randomBytes(32).toString('base64url');
        const r = await pool.query<InviteRow>(
          `INSERT INTO invites (owner_id, project, role, token_hash, expires_at, max_uses) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
          [input.ownerId, input.project, input.role, hashToken(token), input.expiresAt, input.maxUses],
        );
        return { invite: inviteFromRow(r.rows[0]!), token };
      },

      /** The owner's invites, newest first. */
      async listByOwner(ownerId: string, limit = 200): Promise<InviteRecord[]> {
        const r = await pool.query<InviteRow>('SELECT * FROM invites WHERE owner_id = $1 ORDER BY created_at DESC, id LIMIT $2', [ownerId, limit]);
        return r.rows.map(inviteFromRow);
      },

      /** One invite, only for its owner (anyone else is told there is none). */
      async getForOwner(ownerId: string, id: string): Promise<InviteRecord | undefined> {
        if (!userIdPattern.test(id)) return undefined;
        const r = await pool.query<InviteRow>('SELECT * FROM invites WHERE id = $1 AND owner_id = $2', [id, ownerId]);
        return r.rows[0] ? inviteFromRow(r.rows[0]) : undefined;
      },

      /**
       * Revokes the invite and every live membership it granted, together. Two statements in one
       * transaction on purpose: the second reads after the first has waited for any join holding the
       * invite's row, so a membership granted by a join that won that race is revoked too.
       */
      async revoke(ownerId: string, id: string): Promise<{ invite: InviteRecord; memberships: MembershipRecord[] } | undefined> {
        if (!userIdPattern.test(id)) return undefined;
        return withTransaction(pool, async (client) => {
          const invite = await client.query<InviteRow>(
            'UPDATE invites SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND owner_id = $2 RETURNING *',
            [id, ownerId],
          );
          if (!invite.rows[0]) return undefined;
          const revoked = await client.query<MembershipRow>(
            'UPDATE memberships SET revoked_at = now() WHERE invite_id = $1 AND revoked_at IS NULL RETURNING *',
            [id],
          );
          return { invite: inviteFromRow(invite.rows[0]), memberships: revoked.rows.map(membershipFromRow) };
        });
      },

      /**
       * `userId` takes the link `token`. A use is counted and the membership granted by one statement,
       * whose UPDATE admits the invite only while it is live (not revoked, not expired, uses left): two
       * people racing for a link's last use cannot both get it, and a revocation racing a join either
       * comes first (the join finds it revoked) or revokes what the join granted (see `revoke`).
       * Joining again with a stronger role upgrades the live membership; a weaker one never downgrades it.
       */
      async join(token: string, userId: string): Promise<JoinOutcome> {
        if (!inviteTokenPattern.test(token) || !userIdPattern.test(userId)) return { kind: 'unknown' };
        const tokenHash = hashToken(token);
        const found = await pool.query<InviteRow>('SELECT * FROM invites WHERE token_hash = $1', [tokenHash]);
        const seen = found.rows[0] ? inviteFromRow(found.rows[0]) : undefined;
        if (!seen) return { kind: 'unknown' };
        if (seen.ownerId === userId) return { kind: 'own', invite: seen };
        // Opening the same link again (a bookmark, a second tab) must not spend another use of it.
        const existing = await pool.query<MembershipRow>('SELECT * FROM memberships WHERE invite_id = $1 AND member_id = $2 AND revoked_at IS NULL', [seen.id, userId]);
        if (existing.rows[0] && inviteStatus(seen) !== 'revoked') {
          return { kind: 'joined', invite: seen, membership: membershipFromRow(existing.rows[0]), alreadyMember: true };
        }
        const r = await pool.query<MembershipRow>(
          `WITH consumed AS (
             UPDATE invites SET uses = uses + 1, last_used_at = now()
             WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
               AND (max_uses IS NULL OR uses < max_uses)
             RETURNING *
           )
           INSERT INTO memberships (owner_id, member_id, project, role, invite_id)
           SELECT owner_id, $2, project, role, id FROM consumed
           ON CONFLICT (owner_id, member_id, project) WHERE revoked_at IS NULL DO UPDATE SET
             role = CASE WHEN memberships.role = 'editor' THEN 'editor' ELSE EXCLUDED.role END,
             invite_id = CASE WHEN memberships.role = 'viewer' AND EXCLUDED.role = 'editor' THEN EXCLUDED.invite_id ELSE memberships.invite_id END
           RETURNING *`,
          [seen.id, userId],
        );
        // Read after the statement: the uses it counted, or why it admitted nothing (the row may have
        // changed since it was first read).
        const after = await pool.query<InviteRow>('SELECT * FROM invites WHERE id = $1', [seen.id]);
        const invite = after.rows[0] ? inviteFromRow(after.rows[0]) : seen;
        const granted = r.rows[0];
        if (!granted) {
          const status = inviteStatus(invite);
          return { kind: 'gone', invite, status: status === 'active' ? 'used-up' : status };
        }
        return { kind: 'joined', invite, membership: membershipFromRow(granted), alreadyMember: false };
      },
    },

    memberships: {
      /** The strongest live membership `memberId` holds in `ownerId`'s projects, if any. */
      async grantOf(ownerId: string, memberId: string): Promise<Grant | undefined> {
        if (!userIdPattern.test(ownerId) || !userIdPattern.test(memberId)) return undefined;
        const r = await pool.query<{ id: string; role: CollaboratorRole }>(
          `SELECT id, role FROM memberships WHERE owner_id = $1 AND member_id = $2 AND revoked_at IS NULL
           ORDER BY (role = 'editor') DESC, created_at LIMIT 1`,
          [ownerId, memberId],
        );
        return r.rows[0] ? { role: r.rows[0].role, membershipId: r.rows[0].id } : undefined;
      },

      async isLive(id: string): Promise<boolean> {
        const r = await pool.query('SELECT 1 FROM memberships WHERE id = $1 AND revoked_at IS NULL', [id]);
        return r.rowCount === 1;
      },

      /** Who has access to the owner's projects now, with who they are. */
      async listForOwner(ownerId: string): Promise<MembershipWithPerson[]> {
        const r = await pool.query<MembershipRow & { person: PersonView }>(
          `SELECT m.*, ${personColumns('u')} FROM memberships m JOIN users u ON u.id = m.member_id
           WHERE m.owner_id = $1 AND m.revoked_at IS NULL ORDER BY m.created_at, m.id`,
          [ownerId],
        );
        return r.rows.map((row) => ({ ...membershipFromRow(row), person: row.person }));
      },

      /** What the member can open now, with whose it is. */
      async listForMember(memberId: string): Promise<MembershipWithPerson[]> {
        const r = await pool.query<MembershipRow & { person: PersonView }>(
          `SELECT m.*, ${personColumns('u')} FROM memberships m JOIN users u ON u.id = m.owner_id
           WHERE m.member_id = $1 AND m.revoked_at IS NULL ORDER BY m.created_at, m.id`,
          [memberId],
        );
        return r.rows.map((row) => ({ ...membershipFromRow(row), person: row.person }));
      },

      /**
       * Revokes a membership on behalf of `byUserId`, who must be its owner or its member (anyone else is
       * told there is none). Revoking again answers the membership as it is.
       */
      async revoke(id: string, byUserId: string): Promise<MembershipRecord | undefined> {
        if (!userIdPattern.test(id) || !userIdPattern.test(byUserId)) return undefined;
        const r = await pool.query<MembershipRow>(
          `UPDATE memberships SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND (owner_id = $2 OR member_id = $2) RETURNING *`,
          [id, byUserId],
        );
        return r.rows[0] ? membershipFromRow(r.rows[0]) : undefined;
      },
    },
  };
}

export type MembershipStore = ReturnType<typeof createMembershipStore>;
