import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { safeNextPath, SignInRefused } from '../../lib/identities.js';
import type { UserRecord } from '../../lib/accounts.js';
import { environmentOf } from '../environment.js';
import { escapeHtml, page } from '../html.js';
import type { PlatformDeps } from '../platform.js';
import { magicLinkRateLimit, signInRateLimit } from '../rate-limits.js';
import { parseBody } from '../validation.js';
import { cookieOf, wantsHtml } from '../auth.js';

/**
 * Sign-in with the configured providers (OpenID Connect, GitHub) and by email link (issue 7).
 *
 * `/login/<provider>` starts a flow: a random `state` (its hash in `auth_flows` with the PKCE verifier
 * and the nonce) that is also put in a short-lived cookie scoped to the callback path, so a callback
 * carrying another browser's state (login CSRF) or a replayed one is refused. `/auth/callback/<provider>`
 * consumes the flow, lets openid-client check state, PKCE and the ID token, and links the identity to a
 * user (lib/identities.ts). Every URL a provider sees is built from MARKCO_PUBLIC_URL.
 */
export const flowCookie = 'markco_flow';
/** A sign-in of an account whose deletion has started: refused, since no session of it may work again. */
export const accountBeingDeleted = 'this account is being deleted; it can no longer sign in';
const flowCookieSeconds = 600;
/** Email links per address per this window, beside the per-client rate limit. */
const linksPerAddress = { max: 3, withinMs: 15 * 60_000 };

export const EmailBody = z.object({
  email: z.email('expected an email address').max(254),
  next: z.string().max(2000).optional(),
  _csrf: z.string().optional(),
});
export const VerifyBody = z.object({ token: z.string().min(20).max(200), _csrf: z.string().optional() });

function flowCookieHeader(value: string, maxAge: number, secure: boolean): string {
  return `${flowCookie}=${value}; Path=/auth/callback; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

function refuse(req: FastifyRequest, reply: FastifyReply, status: number, message: string) {
  if (wantsHtml(req)) {
    return reply
      .code(status)
      .type('text/html; charset=utf-8')
      .send(page({ title: 'Sign-in failed', body: `<h1>Sign-in failed</h1><p>${escapeHtml(message)}</p><p><a href="/login">Back to sign-in</a></p>` }));
  }
  return reply.code(status).send({ error: status === 403 ? 'forbidden' : 'invalid request', message });
}

export function signInRoutes(deps: PlatformDeps): FastifyPluginAsync {
  const { signIn } = deps;
  const callbackUrl = (providerId: string) => `${signIn.publicUrl}/auth/callback/${providerId}`;

  /** Opens the session, starts the user's containers and sends the browser on. */
  async function completeSignIn(req: FastifyRequest, reply: FastifyReply, user: UserRecord, how: Record<string, unknown>, nextPath: string) {
    if (await deps.store.accountDeletion.isDeleting(user.id)) return refuse(req, reply, 403, accountBeingDeleted);
    const session = await deps.store.sessions.create(user.id, { userAgent: req.headers['user-agent'], ip: req.ip });
    reply.header('set-cookie', deps.auth.cookie(session.token, session.expiresAt));
    await deps.store.events.append({ type: 'user.signed-in', source: 'edge', userId: user.id, payload: how });
    // Unless both containers answer already, they start while the browser follows the redirect.
    await environmentOf(deps, user).catch((err: unknown) => req.log.warn({ err }, 'could not start the login workflow after sign-in'));
    return reply.redirect(safeNextPath(nextPath), 302);
  }

  return async (app) => {
    app.get('/login/:provider', { config: { rateLimit: signInRateLimit } }, async (req, reply) => {
      const providerId = (req.params as { provider: string }).provider;
      const provider = signIn.providers.get(providerId);
      if (!provider) return refuse(req, reply, 404, `no sign-in provider "${providerId}" is configured here (${[...signIn.providers.keys()].join(', ') || 'none'})`);
      let begun;
      try {
        begun = await provider.begin(callbackUrl(providerId));
      } catch (err) {
        req.log.warn({ err, provider: providerId }, 'the sign-in provider could not be reached');
        return refuse(req, reply, 502, `${provider.label} cannot be reached right now; try again shortly`);
      }
      const { state } = await deps.store.identities.beginFlow({ provider: providerId, codeVerifier: begun.codeVerifier, nonce: begun.nonce, nextPath: safeNextPath((req.query as { next?: string }).next) });
      reply.header('set-cookie', flowCookieHeader(state, flowCookieSeconds, signIn.secureCookies));
      reply.header('cache-control', 'no-store');
      return reply.redirect(begun.url(state), 302);
    });

    app.get('/auth/callback/:provider', { config: { rateLimit: signInRateLimit } }, async (req, reply) => {
      const providerId = (req.params as { provider: string }).provider;
      const provider = signIn.providers.get(providerId);
      if (!provider) return refuse(req, reply, 404, `no sign-in provider "${providerId}" is configured here`);
      const query = req.query as { state?: string; error?: string; error_description?: string };
      reply.header('set-cookie', flowCookieHeader('', 0, signIn.secureCookies));
      if (query.error) return refuse(req, reply, 400, `${provider.label} did not sign you in: ${query.error_description ?? query.error}`);
      const state = typeof query.state === 'string' ? query.state : '';
      const bound = cookieOf(req.headers, flowCookie);
      if (!state || !bound || bound !== state) {
        return refuse(req, reply, 403, 'this sign-in did not start in this browser (its state does not match); start again from the sign-in page');
      }
      const flow = await deps.store.identities.takeFlow(state, providerId);
      if (!flow) return refuse(req, reply, 400, 'this sign-in has expired or was already used; start again from the sign-in page');
      let profile;
      try {
        profile = await provider.finish(new URL(req.url, signIn.publicUrl), { state, codeVerifier: flow.codeVerifier, nonce: flow.nonce });
      } catch (err) {
        req.log.warn({ err, provider: providerId }, 'the sign-in callback failed');
        return refuse(req, reply, 400, `${provider.label} did not confirm this sign-in; start again from the sign-in page`);
      }
      let linked;
      try {
        linked = await deps.store.identities.userFor(profile);
      } catch (err) {
        if (err instanceof SignInRefused) return refuse(req, reply, 403, err.message);
        throw err;
      }
      return completeSignIn(req, reply, linked.user, { provider: providerId, created: linked.created, linked: linked.linked }, flow.nextPath);
    });

    app.post('/login/email', { config: { rateLimit: magicLinkRateLimit } }, async (req, reply) => {
      if (!signIn.mail) return refuse(req, reply, 404, 'sign-in by email is not configured here');
      const body = parseBody(EmailBody, req.body, reply);
      if (!body) return reply;
      // The same answer whether or not the address has an account: nobody learns who is a user.
      const answer = () =>
        wantsHtml(req) || req.headers['content-type']?.startsWith('application/x-www-form-urlencoded')
          ? reply.code(202).type('text/html; charset=utf-8').send(page({ title: 'Check your email', body: `<h1>Check your email</h1><p>If ${escapeHtml(body.email)} can sign in here, a link is on its way. It works once, for 15 minutes.</p>` }))
          : reply.code(202).send({ sent: true, message: 'if this address can sign in, a link is on its way; it works once, for 15 minutes' });
      if ((await deps.store.identities.recentMagicLinks(body.email, linksPerAddress.withinMs)) >= linksPerAddress.max) return answer();
      const { token } = await deps.store.identities.createMagicLink(body.email, safeNextPath(body.next));
      const link = `${signIn.publicUrl}/auth/email/verify?token=${token}`;
      await signIn.mail.send({ to: body.email, subject: 'Your markco sign-in link', text: `Open this link to sign in to markco (it works once, for 15 minutes):\n\n${link}\n\nIf you did not ask for it, ignore this email.` });
      return answer();
    });

    // The link opens a page that posts the token: mail scanners that fetch links do not use it up.
    app.get('/auth/email/verify', async (req, reply) => {
      const token = (req.query as { token?: string }).token ?? '';
      reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer');
      return reply.type('text/html; charset=utf-8').send(
        page({
          title: 'Sign in',
          body: `<h1>Sign in to markco</h1><form method="post" action="/auth/email/verify">${reply.csrfField()}<input type="hidden" name="token" value="${escapeHtml(token)}"><button type="submit">Sign in</button></form>`,
        }),
      );
    });

    app.post('/auth/email/verify', { config: { rateLimit: signInRateLimit } }, async (req, reply) => {
      if (!signIn.mail) return refuse(req, reply, 404, 'sign-in by email is not configured here');
      const body = parseBody(VerifyBody, req.body, reply);
      if (!body) return reply;
      const link = await deps.store.identities.takeMagicLink(body.token);
      if (!link) return refuse(req, reply, 410, 'this sign-in link has expired or was already used; ask for a new one');
      const { user, created } = await deps.store.users.ensureByEmail({ email: link.email });
      return completeSignIn(req, reply, user, { provider: 'email', created }, link.nextPath);
    });
  };
}
