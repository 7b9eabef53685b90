import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { z } from 'zod';
import { environmentOf, publicUser } from '../environment.js';
import { requireUser, sessionTokenOf, wantsHtml } from '../auth.js';
import { safeNextPath } from '../../lib/identities.js';
import { accountBeingDeleted } from './sign-in.js';
import { escapeHtml, page } from '../html.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';

export const DevLoginBody = z.strictObject({
  email: z.email('expected an email address').max(254),
  name: z.string().trim().min(1).max(200).optional(),
});

function dashboardPage(view: Awaited<ReturnType<typeof environmentOf>>, csrfField: string): string {
  const ready = view.runtime.state === 'running' && view.editor.state === 'running';
  return page({
    title: 'Dashboard',
    refreshSeconds: ready ? undefined : 2,
    body: `
<h1>Hello, ${escapeHtml(view.user.name ?? view.user.username)}</h1>
<p>Signed in as ${escapeHtml(view.user.email)} · plan <b>${escapeHtml(view.user.plan)}</b></p>
<table>
  <tr><th>Runtime</th><td>${escapeHtml(view.runtime.state)}${view.runtime.tier ? ` on ${escapeHtml(view.runtime.tier)}` : ''}</td></tr>
  <tr><th>Editor</th><td>${escapeHtml(view.editor.state)}</td></tr>
</table>
<p>${ready ? `<a class="button" href="${escapeHtml(view.editor.url)}">Open editor</a>` : 'Starting your runtime and editor…'}</p>
<form method="post" action="/logout">${csrfField}<button type="submit">Sign out</button></form>`,
  });
}

export function sessionRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    const signedIn = requireUser(deps.auth);

    app.get('/login', async (req, reply) => {
      const user = await deps.auth.userOf(req.headers);
      if (user) return reply.redirect('/dashboard', 302);
      const next = safeNextPath((req.query as { next?: string }).next);
      const nextQuery = next === '/dashboard' ? '' : `?next=${encodeURIComponent(next)}`;
      const providers = [...deps.signIn.providers.values()].map((p) => `<p><a class="button" href="/login/${escapeHtml(p.id)}${escapeHtml(nextQuery)}">Sign in with ${escapeHtml(p.label)}</a></p>`).join('');
      const emailForm = deps.signIn.mail
        ? `<form method="post" action="/login/email">${reply.csrfField()}<input type="hidden" name="next" value="${escapeHtml(next)}"><label>Email <input name="email" type="email" required></label> <button type="submit">Email me a sign-in link</button></form>`
        : '';
      const devForm = deps.devLogin
        ? `<form id="dev" onsubmit="event.preventDefault();fetch('/auth/dev/login',{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify({email:this.email.value})}).then(r=>{if(r.ok)location.href=new URLSearchParams(location.search).get('next')||'/dashboard';else r.json().then(j=>alert(j.message))})">
  <label>Email <input name="email" type="email" required></label> <button>Development sign-in</button></form>`
        : '';
      const body = providers + emailForm + devForm || '<p>Sign-in providers are not configured on this server.</p>';
      return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page({ title: 'Sign in', body: `<h1>Sign in to markco</h1>${body}` }));
    });

    if (deps.devLogin) {
      app.post('/auth/dev/login', async (req, reply) => {
        const body = parseBody(DevLoginBody, req.body, reply);
        if (!body) return reply;
        const { user } = await deps.store.users.ensureByEmail({ email: body.email, name: body.name });
        if (await deps.store.accountDeletion.isDeleting(user.id)) return reply.code(403).send({ error: 'forbidden', message: accountBeingDeleted });
        const session = await deps.store.sessions.create(user.id, { userAgent: req.headers['user-agent'], ip: req.ip });
        reply.header('set-cookie', deps.auth.cookie(session.token, session.expiresAt));
        // Ready at once when both containers answer; else they start while the browser follows the
        // redirect to the dashboard, and operation_id is the login to wait for.
        return reply.send(await environmentOf(deps, user));
      });
    } else {
      app.post('/auth/dev/login', async (_req, reply) => reply.code(404).send({ error: 'not found', message: 'the development login is disabled (MARKCO_DEV_LOGIN is not set)' }));
    }

    app.post('/logout', async (req, reply: FastifyReply) => {
      const token = sessionTokenOf(req.headers);
      if (token) {
        const signedIn = await deps.auth.sessionOf(req.headers);
        await deps.store.sessions.revoke(token);
        deps.auth.forget(token);
        // The session's open WebSockets (editor, Yjs) end with it; the containers do not: a job started
        // before signing out keeps running, and the idle policy decides when the runtime sleeps.
        if (signedIn) deps.tunnels.closeWhere((t) => t.sessionId === signedIn.sessionId);
      }
      reply.header('set-cookie', deps.auth.clearedCookie());
      return wantsHtml(req) || req.headers['content-type']?.startsWith('application/x-www-form-urlencoded') ? reply.redirect('/login', 303) : reply.send({ ok: true });
    });

    app.get('/', { preHandler: signedIn }, async (_req, reply) => reply.redirect('/dashboard', 302));

    app.get('/dashboard', { preHandler: signedIn }, async (req, reply) => {
      const view = await environmentOf(deps, req.user!);
      if (wantsHtml(req)) return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(dashboardPage(view, reply.csrfField()));
      return reply.header('cache-control', 'no-store').send(view);
    });
  };
}
