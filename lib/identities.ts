import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { hashToken, type Accounts, type UserRecord } from './accounts.js';

/**
 * Sign-in state in PostgreSQL: identities (provider, subject) → user, sign-ins in progress (state, PKCE
 * verifier, nonce) and email links. Every secret is stored as a SHA-256 hash, consumed by one UPDATE or
 * DELETE, so a replay or a race finds nothing.
 */
export interface ProviderProfile {
  provider: string;
  subject: string;
  email: string | null;
  emailVerified: boolean;
  name: string | null;
}

export interface AuthFlow {
  provider: string;
  codeVerifier: string;
  nonce: string | null;
  nextPath: string;
}

const flowLifetimeMs = 10 * 60_000;
const magicLinkLifetimeMs = 15 * 60_000;

export class SignInRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SignInRefused';
  }
}

export function createIdentities(pool: pg.Pool, users: Accounts['users']) {
  return {
    /** Starts a sign-in: the returned state is the only copy; the row keeps its hash. */
    async beginFlow(flow: AuthFlow): Promise<{ state: string }> {
      const state = randomBytes(32).toString('base64url');
      await pool.query(`DELETE FROM auth_flows WHERE expires_at < now()`);
      await pool.query(`INSERT INTO auth_flows (state_hash, provider, code_verifier, nonce, next_path, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`, [
        hashToken(state),
        flow.provider,
        flow.codeVerifier,
        flow.nonce,
        flow.nextPath,
        new Date(Date.now() + flowLifetimeMs),
      ]);
      return { state };
    },

    /** The flow this state began, consumed (a second callback with it finds nothing). */
    async takeFlow(state: string, provider: string): Promise<AuthFlow | undefined> {
      if (state.length < 20 || state.length > 200) return undefined;
      const r = await pool.query<{ provider: string; code_verifier: string; nonce: string | null; next_path: string }>(
        `DELETE FROM auth_flows WHERE state_hash = $1 AND provider = $2 AND expires_at > now() RETURNING provider, code_verifier, nonce, next_path`,
        [hashToken(state), provider],
      );
      const row = r.rows[0];
      return row ? { provider: row.provider, codeVerifier: row.code_verifier, nonce: row.nonce, nextPath: row.next_path } : undefined;
    },

    /**
     * The user this provider identity signs in: the one it is linked to; else the user with the same
     * verified email (linked now); else a new user. An unverified email never links or creates.
     */
    async userFor(profile: ProviderProfile): Promise<{ user: UserRecord; created: boolean; linked: boolean }> {
      const known = await pool.query<{ user_id: string }>(`UPDATE user_identities SET last_used_at = now() WHERE provider = $1 AND subject = $2 RETURNING user_id`, [profile.provider, profile.subject]);
      if (known.rows[0]) {
        const user = await users.get(known.rows[0].user_id);
        if (user) return { user, created: false, linked: false };
      }
      if (!profile.email || !profile.emailVerified) {
        throw new SignInRefused(`${profile.provider} did not give a verified email address for this account; verify one with ${profile.provider} and sign in again`);
      }
      const { user, created } = await users.ensureByEmail({ email: profile.email, name: profile.name ?? undefined });
      await pool.query(
        `INSERT INTO user_identities (provider, subject, user_id, email) VALUES ($1, $2, $3, $4)
         ON CONFLICT (provider, subject) DO NOTHING`,
        [profile.provider, profile.subject, user.id, profile.email],
      );
      return { user, created, linked: !created };
    },

    async identitiesOf(userId: string): Promise<{ provider: string; email: string | null }[]> {
      const r = await pool.query<{ provider: string; email: string | null }>(`SELECT provider, email FROM user_identities WHERE user_id = $1 ORDER BY created_at`, [userId]);
      return r.rows;
    },

    /** Links sent to this address recently (the per-address limit of the email sign-in). */
    async recentMagicLinks(email: string, withinMs: number): Promise<number> {
      const r = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM magic_links WHERE lower(email) = lower($1) AND created_at > now() - make_interval(secs => $2)`, [email, withinMs / 1000]);
      return r.rows[0]!.n;
    },

    async createMagicLink(email: string, nextPath: string): Promise<{ token: string; expiresAt: Date }> {
      const token = randomBytes(32).toString('base64url');
      const expiresAt = new Date(Date.now() + magicLinkLifetimeMs);
      await pool.query(`DELETE FROM magic_links WHERE expires_at < now() - interval '1 day'`);
      await pool.query(`INSERT INTO magic_links (token_hash, email, next_path, expires_at) VALUES ($1, $2, $3, $4)`, [hashToken(token), email, nextPath, expiresAt]);
      return { token, expiresAt };
    },

    /** The email a link signs in, consumed; undefined when unknown, used or expired. */
    async takeMagicLink(token: string): Promise<{ email: string; nextPath: string } | undefined> {
      if (token.length < 20 || token.length > 200) return undefined;
      const r = await pool.query<{ email: string; next_path: string }>(
        `UPDATE magic_links SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING email, next_path`,
        [hashToken(token)],
      );
      return r.rows[0] ? { email: r.rows[0].email, nextPath: r.rows[0].next_path } : undefined;
    },
  };
}

export type Identities = ReturnType<typeof createIdentities>;

/**
 * Where a sign-in may send the browser afterwards: a path on this site only (`/dashboard`, `/join/…`,
 * `/u/<id>/…`). Anything else (another origin, `//evil`, a backslash trick) becomes `/dashboard`.
 */
export function safeNextPath(next: unknown): string {
  if (typeof next !== 'string' || next.length === 0 || next.length > 2000) return '/dashboard';
  if (!next.startsWith('/') || next.startsWith('//') || next.includes('\\') || /[\u0000-\u001f]/.test(next)) return '/dashboard';
  try {
    const url = new URL(next, 'http://markco.invalid');
    if (url.origin !== 'http://markco.invalid') return '/dashboard';
    return `${url.pathname}${url.search}${url.hash}`;
  } catch {
    return '/dashboard';
  }
}
