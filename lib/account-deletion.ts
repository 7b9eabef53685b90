import type pg from 'pg';
import { withTransaction } from './db.js';
import { routeChannel } from './runtime-store.js';

/** A membership revoked because one of its two users is being deleted. */
export interface RevokedMembership {
  id: string;
  ownerId: string;
  memberId: string;
}

/**
 * The queries of account deletion (the deleteAccount workflow and the edge's routes that start it). A
 * user is marked first, which stops their sessions resolving (lib/accounts.ts) and their logins
 * (planLogin); the users row goes last, and ON DELETE CASCADE takes every row that belongs to it.
 */
export function createAccountDeletionStore(pool: pg.Pool) {
  return {
    accountDeletion: {
      /**
       * Marks the user as being deleted (the first mark's time is kept), revokes their sessions, the
       * invites to their projects and the memberships on either side, and logs `account.deletion-started`
       * the first time, in one statement; then tells the edges to drop the user's route. Safe to repeat,
       * from the edge and the workflow alike; `found` is false when there is no such user. The memberships
       * revoked now are answered, for the edge to cut their WebSockets.
       */
      async begin(userId: string, by: { source: 'edge' | 'worker'; workflowId?: string }): Promise<{ found: boolean; sessionsRevoked: number; invitesRevoked: number; membershipsRevoked: RevokedMembership[] }> {
        const r = await pool.query<{ found: boolean; sessions: number; invites: number; memberships: RevokedMembership[] }>(
          `WITH earlier AS (SELECT id, deleting_at FROM users WHERE id = $1),
           marked AS (
             UPDATE users u SET deleting_at = COALESCE(u.deleting_at, now()), updated_at = now() FROM earlier
             WHERE u.id = earlier.id RETURNING u.id, earlier.deleting_at IS NULL AS first),
           sessions AS (
             UPDATE sessions SET revoked_at = now() WHERE user_id IN (SELECT id FROM marked) AND revoked_at IS NULL RETURNING 1),
           invites AS (
             UPDATE invites SET revoked_at = now() WHERE owner_id IN (SELECT id FROM marked) AND revoked_at IS NULL RETURNING 1),
           memberships AS (
             UPDATE memberships SET revoked_at = now()
             WHERE (owner_id IN (SELECT id FROM marked) OR member_id IN (SELECT id FROM marked)) AND revoked_at IS NULL
             RETURNING id, owner_id, member_id),
           logged AS (
             INSERT INTO events (type, source, user_id, workflow_id, payload)
             SELECT 'account.deletion-started', $2, id, $3, jsonb_build_object(
                      'sessionsRevoked', (SELECT count(*) FROM sessions), 'invitesRevoked', (SELECT count(*) FROM invites),
                      'membershipsRevoked', (SELECT count(*) FROM memberships))
             FROM marked WHERE first RETURNING 1)
           SELECT EXISTS (SELECT 1 FROM marked) AS found, (SELECT count(*) FROM sessions)::int AS sessions, (SELECT count(*) FROM invites)::int AS invites,
                  COALESCE((SELECT jsonb_agg(jsonb_build_object('id', id, 'ownerId', owner_id, 'memberId', member_id)) FROM memberships), '[]'::jsonb) AS memberships,
                  (SELECT count(*) FROM logged)::int AS logged`,
          [userId, by.source, by.workflowId ?? null],
        );
        const row = r.rows[0]!;
        if (!row.found) return { found: false, sessionsRevoked: 0, invitesRevoked: 0, membershipsRevoked: [] };
        await pool.query('SELECT pg_notify($1, $2)', [routeChannel, userId]);
        return { found: true, sessionsRevoked: row.sessions, invitesRevoked: row.invites, membershipsRevoked: row.memberships };
      },

      /** Whether the user is being deleted (a login for them is refused). */
      async isDeleting(userId: string): Promise<boolean> {
        const r = await pool.query<{ deleting: boolean }>('SELECT deleting_at IS NOT NULL AS deleting FROM users WHERE id = $1', [userId]);
        return r.rows[0]?.deleting ?? false;
      },

      /**
       * Reachable hosts that may hold the user's home or containers: the base server, and every host the
       * user's runtimes, sandboxes, editor, migrations or snapshots were on, or that is reserved for them.
       */
      async hostsHolding(userId: string, baseHostId: string): Promise<string[]> {
        const r = await pool.query<{ id: string }>(
          `SELECT h.id FROM hosts h
           WHERE h.state IN ('ready', 'draining') AND (
             h.id = $2 OR h.reserved_for = $1
             OR EXISTS (SELECT 1 FROM runtimes r WHERE r.user_id = $1 AND r.host_id = h.id)
             OR EXISTS (SELECT 1 FROM editors e WHERE e.user_id = $1 AND e.host_id = h.id)
             OR EXISTS (SELECT 1 FROM migrations m WHERE m.user_id = $1 AND h.id IN (m.source_host_id, m.target_host_id))
             OR EXISTS (SELECT 1 FROM snapshots s WHERE s.user_id = $1 AND s.host_id = h.id))
           ORDER BY h.id = $2 DESC, h.id`,
          [userId, baseHostId],
        );
        return r.rows.map((row) => row.id);
      },

      /** EC2 hosts reserved for the user and not terminated, unless another user's runtime lives there. */
      async reservedHosts(userId: string): Promise<string[]> {
        const r = await pool.query<{ id: string }>(
          `SELECT h.id FROM hosts h
           WHERE h.kind = 'ec2' AND h.reserved_for = $1 AND h.state <> 'terminated'
             AND NOT EXISTS (SELECT 1 FROM runtimes r WHERE r.host_id = h.id AND r.user_id <> $1 AND r.state NOT IN ('stopped', 'failed', 'checkpointed'))
           ORDER BY h.id`,
          [userId],
        );
        return r.rows.map((row) => row.id);
      },

      /** The user's snapshots whose archives may still exist anywhere (every state but deleted). */
      async snapshotIds(userId: string): Promise<string[]> {
        const r = await pool.query<{ id: string }>(`SELECT id FROM snapshots WHERE user_id = $1 AND state <> 'deleted' ORDER BY created_at, id`, [userId]);
        return r.rows.map((row) => row.id);
      },

      /**
       * Deletes the users row; ON DELETE CASCADE takes the rest. The user's events stay as the operational
       * record (hosts, migrations, timings), their id kept as plain text under `unrecordedUserId` (as
       * events.append writes it for a user that does not exist) and their snapshot names dropped. False
       * when the row was already gone.
       */
      async remove(userId: string): Promise<{ removed: boolean; eventsKept: number }> {
        return withTransaction(pool, async (client) => {
          const kept = await client.query(
            `UPDATE events SET payload = (payload - 'name') || jsonb_build_object('unrecordedUserId', user_id) WHERE user_id = $1`,
            [userId],
          );
          // Email sign-in links name the user by email only (no key to cascade along): they go too.
          await client.query('DELETE FROM magic_links WHERE lower(email) = (SELECT lower(email) FROM users WHERE id = $1)', [userId]);
          const removed = await client.query('DELETE FROM users WHERE id = $1', [userId]);
          return { removed: (removed.rowCount ?? 0) > 0, eventsKept: kept.rowCount ?? 0 };
        });
      },
    },
  };
}
