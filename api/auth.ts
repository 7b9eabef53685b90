import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Accounts, UserRecord } from '../lib/accounts.js';

/**
 * Who is asking: a browser session (cookie), an API client holding a session token (Bearer), or an
 * operator or machine holding MARKCO_ADMIN_TOKEN (Bearer, /api/* only). One module, used by routes and by
 * the WebSocket upgrade handler alike, so no path is authorised differently from another.
 */
export const sessionCookie = 'markco_session';

export interface AuthConfig {
  sessions: Accounts['sessions'];
  adminToken: string | undefined;
  /** Secure cookies except on plain-HTTP localhost (browsers drop Secure cookies there). */
  secureCookies: boolean;
}

/** Resolved sessions are reused briefly: the proxy authorises every request, and most come in bursts. */
const sessionCacheMs = 5_000;
const sessionCacheMax = 10_000;

function bearerOf(headers: IncomingHttpHeaders): string | undefined {
  const h = headers.authorization;
  return h && /^Bearer\s+/i.test(h) ? h.replace(/^Bearer\s+/i, '').trim() : undefined;
}

/**
 * One of our cookies from the request's Cookie header (session, anti-forgery, sign-in flow: all
 * base64url, so no quoting or decoding is needed).
 */
export function cookieOf(headers: IncomingHttpHeaders, name: string): string | undefined {
  for (const part of (headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || undefined;
  }
  return undefined;
}

export function sessionTokenOf(headers: IncomingHttpHeaders): string | undefined {
  return cookieOf(headers, sessionCookie) ?? bearerOf(headers);
}

export function secureCookiesFor(publicUrl: string): boolean {
  const url = new URL(publicUrl);
  return !(url.protocol === 'http:' && ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname));
}

/** A signed-in request: the user and the session it came with (live WebSockets are cut by session). */
export interface SignedIn {
  user: UserRecord;
  sessionId: string;
}

export function createAuth(config: AuthConfig) {
  const cache = new Map<string, SignedIn & { until: number }>();
  const adminDigest = config.adminToken ? createHash('sha256').update(config.adminToken).digest() : undefined;

  async function sessionOf(headers: IncomingHttpHeaders): Promise<SignedIn | undefined> {
    const token = sessionTokenOf(headers);
    if (!token) return undefined;
    const hit = cache.get(token);
    if (hit && hit.until > Date.now()) return { user: hit.user, sessionId: hit.sessionId };
    const found = await config.sessions.resolve(token);
    if (!found) {
      cache.delete(token);
      return undefined;
    }
    if (cache.size >= sessionCacheMax) cache.clear();
    cache.set(token, { user: found.user, sessionId: found.sessionId, until: Date.now() + sessionCacheMs });
    return { user: found.user, sessionId: found.sessionId };
  }

  return {
    sessionOf,

    /** The signed-in user, or undefined. */
    async userOf(headers: IncomingHttpHeaders): Promise<UserRecord | undefined> {
      return (await sessionOf(headers))?.user;
    },

    /** Whether the request carries the operators' admin token (compared in constant time). */
    isOperator(headers: IncomingHttpHeaders): boolean {
      const token = bearerOf(headers);
      if (!token || !adminDigest) return false;
      return timingSafeEqual(createHash('sha256').update(token).digest(), adminDigest);
    },

    forget(token: string): void {
      cache.delete(token);
    },

    /** Drops every cached session of the user (their account is being deleted: none may be reused, even briefly). */
    forgetUser(userId: string): void {
      for (const [token, entry] of cache) if (entry.user.id === userId) cache.delete(token);
    },

    cookie(token: string, expiresAt: Date): string {
      const maxAge = Math.max(0, Math.floor((expiresAt.getTime() - Date.now()) / 1000));
      return `${sessionCookie}=${token}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${config.secureCookies ? '; Secure' : ''}`;
    },

    clearedCookie(): string {
      return `${sessionCookie}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax${config.secureCookies ? '; Secure' : ''}`;
    },
  };
}

export type Auth = ReturnType<typeof createAuth>;

/** Pages get HTML answers (redirects, pages); API clients and scripts get JSON. */
export function wantsHtml(req: FastifyRequest | { headers: IncomingHttpHeaders; url?: string }): boolean {
  const accept = req.headers.accept ?? '';
  if (req.headers['x-requested-with']) return false;
  if ((req.url ?? '').startsWith('/api/')) return false;
  return /text\/html/.test(accept) && !/^application\/json/.test(accept);
}

declare module 'fastify' {
  interface FastifyRequest {
    user?: UserRecord;
  }
}

/** preHandler: a signed-in user, else the login page for browsers and 401 JSON for API clients. */
export function requireUser(auth: Auth) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    const user = await auth.userOf(req.headers);
    if (user) {
      req.user = user;
      return;
    }
    return answerUnauthenticated(req, reply);
  };
}

export const unauthenticatedMessage = 'sign in first: no valid session cookie or bearer token';

/** No session: browsers go to the login page (and come back after), API clients get 401 JSON. */
export function answerUnauthenticated(req: FastifyRequest, reply: FastifyReply) {
  if (wantsHtml(req)) return reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 302);
  return reply.code(401).send({ error: 'unauthenticated', message: unauthenticatedMessage });
}

/**
 * preHandler for operator routes: the admin token, or a signed-in user with the operator role
 * (users.is_operator); else 401/403 saying which is wrong.
 */
export function requireOperator(auth: Auth, configured: boolean) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    if (auth.isOperator(req.headers)) return;
    const user = req.headers.cookie || !configured ? await auth.userOf(req.headers) : undefined;
    if (user?.isOperator) {
      req.user = user;
      return;
    }
    if (user) return reply.code(403).send({ error: 'forbidden', message: 'this route is for operators' });
    if (!configured) return reply.code(401).send({ error: 'unauthenticated', message: 'operator routes need MARKCO_ADMIN_TOKEN to be configured on the edge, or a session of a user with the operator role' });
    if (!req.headers.authorization) return reply.code(401).send({ error: 'unauthenticated', message: 'send Authorization: Bearer <MARKCO_ADMIN_TOKEN>' });
    return reply.code(403).send({ error: 'forbidden', message: 'the bearer token is not the operators\' token' });
  };
}

/**
 * preHandler for a user's own resources under `/api/runtimes/:userId/...`: the operators' token, or the
 * signed-in user named in the path (another user gets 403, nobody 401).
 */
export function requireOperatorOrOwner(auth: Auth) {
  return async (req: FastifyRequest, reply: FastifyReply) => {
    if (auth.isOperator(req.headers)) return;
    const user = await auth.userOf(req.headers);
    if (!user) return reply.code(401).send({ error: 'unauthenticated', message: 'sign in, or send Authorization: Bearer <MARKCO_ADMIN_TOKEN>' });
    if ((req.params as { userId?: string }).userId !== user.id) return reply.code(403).send({ error: 'forbidden', message: 'this runtime belongs to another user' });
    req.user = user;
  };
}
