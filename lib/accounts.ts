import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import { userIdPattern, usernamePattern, type Plan } from '../workflows/contracts/users.js';

/**
 * Users and sessions. Session tokens are 32 random bytes handed to the browser once; only their SHA-256
 * is stored, so a leaked database holds no usable token (the seeds stored them in clear).
 */
export interface UserRecord {
  id: string;
  email: string;
  username: string;
  name: string | null;
  plan: Plan;
  isOperator: boolean;
  createdAt: Date;
}

interface UserRow {
  id: string;
  email: string;
  username: string;
  name: string | null;
  plan: Plan;
  is_operator: boolean;
  created_at: Date;
}

const userFromRow = (r: UserRow): UserRecord => ({
  id: r.id,
  email: r.email,
  username: r.username,
  name: r.name,
  plan: r.plan,
  isOperator: r.is_operator,
  createdAt: r.created_at,
});

/** The seeds' username rule: lowercase, [a-z0-9._-], starts with a letter or '_', at most 32 characters. */
export function usernameBase(email: string): string {
  const local = email.split('@')[0] ?? '';
  let name = local.toLowerCase().replace(/[^a-z0-9._-]/g, '_');
  if (!/^[a-z_]/.test(name)) name = `u_${name}`;
  return name.slice(0, 32) || 'user';
}

export const sessionLifetimeMs = 30 * 24 * 3600 * 1000;
/** Sliding renewal: a session used within its last days is extended, at most once per this interval. */
const renewAfterMs = 24 * 3600 * 1000;

/** Data-service tokens start with this, so the data service tells them from edge sessions without a second lookup. */
export const dataTokenPrefix = 'mkd_';

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export function createAccounts(pool: pg.Pool) {
  return {
    users: {
      async get(id: string): Promise<UserRecord | undefined> {
        if (!userIdPattern.test(id)) return undefined;
        const r = await pool.query<UserRow>('SELECT * FROM users WHERE id = $1', [id]);
        return r.rows[0] ? userFromRow(r.rows[0]) : undefined;
      },

      /** The user published pages are under (`/@<username>/...`); a user being deleted has none. Case-insensitive. */
      async byUsername(username: string): Promise<UserRecord | undefined> {
        const name = username.toLowerCase();
        if (!usernamePattern.test(name)) return undefined;
        const r = await pool.query<UserRow>('SELECT * FROM users WHERE username = $1 AND deleting_at IS NULL', [name]);
        return r.rows[0] ? userFromRow(r.rows[0]) : undefined;
      },

      /** Finds the user with this email (case-insensitive) or creates one with a unique username. */
      async ensureByEmail(input: { email: string; name?: string | undefined }): Promise<{ user: UserRecord; created: boolean }> {
        const email = input.email.trim();
        const existing = await pool.query<UserRow>('SELECT * FROM users WHERE lower(email) = lower($1)', [email]);
        if (existing.rows[0]) return { user: userFromRow(existing.rows[0]), created: false };
        const base = usernameBase(email);
        for (let n = 1; n < 1000; n++) {
          const suffix = n === 1 ? '' : `_${n}`;
          const username = `${base.slice(0, 32 - suffix.length)}${suffix}`;
          const inserted = await pool.query<UserRow>(
            `INSERT INTO users (email, username, name) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING *`,
            [email, username, input.name ?? null],
          );
          if (inserted.rows[0]) return { user: userFromRow(inserted.rows[0]), created: true };
          // Either the username is taken or a concurrent call just created this email: look again.
          const raced = await pool.query<UserRow>('SELECT * FROM users WHERE lower(email) = lower($1)', [email]);
          if (raced.rows[0]) return { user: userFromRow(raced.rows[0]), created: false };
        }
        throw new Error(`no free username for ${base}`);
      },

      async setPlan(id: string, plan: Plan): Promise<void> {
        await pool.query('UPDATE users SET plan = $2, updated_at = now() WHERE id = $1 AND plan <> $2', [id, plan]);
      },
    },

    sessions: {
      /** Opens a session; the returned token is the only copy of it. */
      async create(userId: string, meta: { userAgent?: string | undefined; ip?: string | undefined } = {}): Promise<{ token: string; expiresAt: Date }> {
        const token = randomBytes(32).toString('base64url');
        const expiresAt = new Date(Date.now() + sessionLifetimeMs);
        await pool.query('INSERT INTO sessions (user_id, token_hash, expires_at, user_agent, ip) VALUES ($1, $2, $3, $4, $5)', [
          userId,
          hashToken(token),
          expiresAt,
          meta.userAgent?.slice(0, 500) ?? null,
          meta.ip ?? null,
        ]);
        return { token, expiresAt };
      },

      /** The user behind a live session token, renewing the session when it is used. */
      async resolve(token: string): Promise<{ user: UserRecord; sessionId: string; expiresAt: Date } | undefined> {
        if (token.length < 20 || token.length > 200) return undefined;
        const r = await pool.query<UserRow & { session_id: string; expires_at: Date; last_seen_at: Date }>(
          `SELECT u.*, s.id AS session_id, s.expires_at, s.last_seen_at FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.deleting_at IS NULL`,
          [hashToken(token)],
        );
        const row = r.rows[0];
        if (!row) return undefined;
        let expiresAt = row.expires_at;
        if (Date.now() - row.last_seen_at.getTime() > renewAfterMs) {
          expiresAt = new Date(Date.now() + sessionLifetimeMs);
          await pool.query('UPDATE sessions SET last_seen_at = now(), expires_at = $2 WHERE id = $1', [row.session_id, expiresAt]);
        }
        return { user: userFromRow(row), sessionId: row.session_id, expiresAt };
      },

      async revoke(token: string): Promise<void> {
        await pool.query('UPDATE sessions SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL', [hashToken(token)]);
      },
    },

    /**
     * Tokens a user's kernels read the data service with (infra/db/migrations/0009_data_tokens.sql): one
     * for each runtime container made, good for nothing but the data service, as long as the user.
     */
    dataTokens: {
      /** A new token for a runtime container about to be made; the returned token is the only copy. */
      async issue(userId: string): Promise<string> {
        const token = `${dataTokenPrefix}${randomBytes(32).toString('base64url')}`;
        await pool.query('INSERT INTO data_tokens (token_hash, user_id) VALUES ($1, $2)', [hashToken(token), userId]);
        return token;
      },

      /** The user of a data token (the user not being deleted). */
      async resolve(token: string): Promise<UserRecord | undefined> {
        if (!token.startsWith(dataTokenPrefix) || token.length > 200) return undefined;
        const r = await pool.query<UserRow>(
          'SELECT u.* FROM data_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 AND u.deleting_at IS NULL',
          [hashToken(token)],
        );
        return r.rows[0] ? userFromRow(r.rows[0]) : undefined;
      },
    },
  };
}

export type Accounts = ReturnType<typeof createAccounts>;
