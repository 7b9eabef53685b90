import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { cookieOf, sessionCookie } from './auth.js';

/**
 * Cross-site request forgery, in two layers (SameSite=Lax on the session cookie is the third):
 * 1. A state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` is another site is refused, on
 *    every route, the user proxy included: browsers send Origin on cross-site POSTs.
 * 2. A form post (the content types a cross-site form can send: urlencoded, multipart, text/plain) that
 *    comes with the session cookie must carry `_csrf` equal to the `markco_csrf` cookie (double submit),
 *    on the edge's own routes. The user proxy's bodies are the editor's and are not read here.
 * API clients with a bearer token and no cookie are not browsers: neither applies to them.
 */
export const csrfCookie = 'markco_csrf';
const unsafeMethods = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const formTypes = /^(application\/x-www-form-urlencoded|multipart\/form-data|text\/plain)\b/i;

function sameValue(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The origins this edge answers as: the public URL's, and the Host it was reached by (tests, loopback). */
function ownOrigins(req: FastifyRequest, publicUrl: string): string[] {
  const own = [new URL(publicUrl).origin];
  if (req.headers.host) own.push(`http://${req.headers.host}`, `https://${req.headers.host}`);
  return own;
}

export function registerCsrfProtection(app: FastifyInstance, opts: { publicUrl: string; secureCookies: boolean }): void {
  app.addHook('onRequest', async (req, reply) => {
    if (!unsafeMethods.has(req.method)) return;
    const origin = req.headers.origin;
    if (origin && origin !== 'null' && !ownOrigins(req, opts.publicUrl).includes(origin)) {
      return reply.code(403).send({ error: 'forbidden', message: `cross-site request refused: Origin ${origin} is not this site` });
    }
    if (origin === 'null' && cookieOf(req.headers, sessionCookie)) {
      return reply.code(403).send({ error: 'forbidden', message: 'cross-site request refused: an opaque Origin with a session cookie' });
    }
  });
  app.addHook('preHandler', async (req, reply) => {
    if (!unsafeMethods.has(req.method) || req.url.startsWith('/u/')) return;
    if (!formTypes.test(req.headers['content-type'] ?? '') || !cookieOf(req.headers, sessionCookie)) return;
    const expected = cookieOf(req.headers, csrfCookie);
    const sent = (req.body as Record<string, unknown> | undefined)?._csrf;
    if (!expected || typeof sent !== 'string' || !sameValue(expected, sent)) {
      return reply.code(403).send({ error: 'forbidden', message: 'this form is missing its anti-forgery token (_csrf); reload the page and submit it again' });
    }
  });

  /** A hidden `_csrf` field for a form on a page, setting the cookie it must match when there is none. */
  app.decorateReply('csrfField', function (this: FastifyReply) {
    let token = cookieOf(this.request.headers, csrfCookie);
    if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) {
      token = randomBytes(32).toString('base64url');
      this.header('set-cookie', `${csrfCookie}=${token}; Path=/; HttpOnly; SameSite=Lax${opts.secureCookies ? '; Secure' : ''}`);
    }
    return `<input type="hidden" name="_csrf" value="${token}">`;
  });
}

declare module 'fastify' {
  interface FastifyReply {
    csrfField(): string;
  }
}
