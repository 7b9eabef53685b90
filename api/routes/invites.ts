import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { inviteStatus, type InviteRecord, type InviteStatus, type MembershipRecord, type MembershipWithPerson } from '../../lib/memberships.js';
import { uuidPattern } from '../../workflows/contracts/snapshots.js';
import { projectNamePattern } from '../../workflows/contracts/user-environment.js';
import { answerUnauthenticated, requireUser, wantsHtml } from '../auth.js';
import { escapeHtml, page } from '../html.js';
import type { PlatformDeps } from '../platform.js';
import { joinRateLimit } from '../rate-limits.js';
import { parseBody } from '../validation.js';

/**
 * Collaborators (issue 7): an owner makes invite links to a project (`/api/invites`), whoever opens one
 * signed in becomes a member with its role (`/join/<token>`) and is sent to the owner's editor, and either
 * side can end a membership (`/api/memberships`). Ending access (revoking an invite or a membership) cuts
 * the member's open WebSockets to the editor at once; every request is authorised again anyway
 * (api/routes/user-proxy.ts).
 */
const dayS = 24 * 3600;
const defaultInviteSeconds = 7 * dayS;
const maxInviteSeconds = 90 * dayS;
const maxUsesLimit = 10_000;

export const CreateInviteBody = z.strictObject({
  project: z.string().regex(projectNamePattern, "expected a project name: letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)"),
  role: z.enum(['viewer', 'editor'], { error: 'expected viewer or editor' }),
  expires_in_seconds: z
    .number({ error: 'expected whole seconds' })
    .int('expected whole seconds')
    .min(1, 'expected at least 1 second')
    .max(maxInviteSeconds, `expected at most ${maxInviteSeconds} seconds (90 days)`)
    .optional(),
  max_uses: z.number({ error: 'expected a whole number' }).int('expected a whole number').min(1, 'expected at least 1').max(maxUsesLimit, `expected at most ${maxUsesLimit}`).optional(),
});

function inviteView(i: InviteRecord) {
  return {
    id: i.id,
    project: i.project,
    role: i.role,
    status: inviteStatus(i),
    expires_at: i.expiresAt?.toISOString() ?? null,
    max_uses: i.maxUses,
    uses: i.uses,
    last_used_at: i.lastUsedAt?.toISOString() ?? null,
    revoked_at: i.revokedAt?.toISOString() ?? null,
    created_at: i.createdAt.toISOString(),
  };
}

/** Where a member opens the owner's project: the owner's editor, on that project. */
export function editorUrlOf(m: Pick<MembershipRecord, 'ownerId' | 'project'>): string {
  return `/u/${m.ownerId}/?project=${encodeURIComponent(m.project)}`;
}

function membershipView(m: MembershipWithPerson, side: 'member' | 'owner') {
  return {
    id: m.id,
    project: m.project,
    role: m.role,
    [side]: m.person,
    invite_id: m.inviteId,
    created_at: m.createdAt.toISOString(),
    ...(side === 'owner' ? { url: editorUrlOf(m) } : {}),
  };
}

const goneMessages: Record<Exclude<InviteStatus, 'active'>, string> = {
  revoked: 'this invite link was revoked by its owner',
  expired: 'this invite link has expired',
  'used-up': 'this invite link has been used as many times as its owner allowed',
};

/** A 4xx about an invite link: a page for browsers, JSON for API clients. */
function answerLink(req: FastifyRequest, reply: FastifyReply, status: 404 | 410, message: string) {
  if (wantsHtml(req)) {
    return reply
      .code(status)
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(page({ title: 'Invite link', body: `<h1>This invite link cannot be used</h1><p>${escapeHtml(message)}.</p><p>Ask its owner for a new one.</p><p><a href="/dashboard">Your dashboard</a></p>` }));
  }
  return reply.code(status).send({ error: status === 404 ? 'not found' : 'gone', message });
}

function idParam(req: FastifyRequest, reply: FastifyReply, what: string): string | undefined {
  const { id } = req.params as { id: string };
  if (uuidPattern.test(id)) return id;
  void reply.code(400).send({ error: 'invalid request', message: `id: expected ${what} id (a lowercase UUID)` });
  return undefined;
}

export function inviteRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    const signedIn = requireUser(deps.auth);

    app.post('/api/invites', { preHandler: signedIn }, async (req, reply) => {
      const body = parseBody(CreateInviteBody, req.body, reply);
      if (!body) return reply;
      const expiresAt = new Date(Date.now() + (body.expires_in_seconds ?? defaultInviteSeconds) * 1000);
      const { invite, token } = await deps.store.invites.create({ ownerId: req.user!.id, project: body.project, role: body.role, expiresAt, maxUses: body.max_uses ?? null });
      // The token is shown this once; only its hash is kept.
      return reply.code(201).header('cache-control', 'no-store').send({ ...inviteView(invite), url: `${deps.signIn.publicUrl}/join/${token}`, token });
    });

    app.get('/api/invites', { preHandler: signedIn }, async (req, reply) => {
      const invites = await deps.store.invites.listByOwner(req.user!.id);
      return reply.send({ invites: invites.map(inviteView) });
    });

    app.get('/api/invites/:id', { preHandler: signedIn }, async (req, reply) => {
      const id = idParam(req, reply, 'an invite');
      if (!id) return reply;
      const invite = await deps.store.invites.getForOwner(req.user!.id, id);
      if (!invite) return reply.code(404).send({ error: 'not found', message: 'you have no invite with this id' });
      return reply.send(inviteView(invite));
    });

    app.delete('/api/invites/:id', { preHandler: signedIn }, async (req, reply) => {
      const id = idParam(req, reply, 'an invite');
      if (!id) return reply;
      const revoked = await deps.store.invites.revoke(req.user!.id, id);
      if (!revoked) return reply.code(404).send({ error: 'not found', message: 'you have no invite with this id' });
      const tunnelsCut = deps.collaborators.revoked(revoked.memberships);
      return reply.send({ ...inviteView(revoked.invite), memberships_revoked: revoked.memberships.length, tunnels_cut: tunnelsCut });
    });

    app.get('/api/memberships', { preHandler: signedIn }, async (req, reply) => {
      const [mine, theirs] = await Promise.all([deps.store.memberships.listForOwner(req.user!.id), deps.store.memberships.listForMember(req.user!.id)]);
      // `members`: who can open my editor; `memberships`: whose editors I can open.
      return reply.send({ members: mine.map((m) => membershipView(m, 'member')), memberships: theirs.map((m) => membershipView(m, 'owner')) });
    });

    app.delete('/api/memberships/:id', { preHandler: signedIn }, async (req, reply) => {
      const id = idParam(req, reply, 'a membership');
      if (!id) return reply;
      const revoked = await deps.store.memberships.revoke(id, req.user!.id);
      if (!revoked) return reply.code(404).send({ error: 'not found', message: 'no membership with this id is yours or of your projects' });
      const tunnelsCut = deps.collaborators.revoked([revoked]);
      return reply.send({ id: revoked.id, project: revoked.project, role: revoked.role, revoked_at: revoked.revokedAt?.toISOString() ?? null, tunnels_cut: tunnelsCut });
    });

    app.get('/join/:token', { config: { rateLimit: joinRateLimit } }, async (req, reply) => {
      const signed = await deps.auth.sessionOf(req.headers);
      // Browsers sign in and come back here; the link is not looked at before that.
      if (!signed) return answerUnauthenticated(req, reply);
      const { token } = req.params as { token: string };
      const outcome = await deps.store.invites.join(token, signed.user.id);
      reply.header('cache-control', 'no-store');
      switch (outcome.kind) {
        case 'unknown':
          return answerLink(req, reply, 404, 'there is no such invite link');
        case 'gone':
          return answerLink(req, reply, 410, goneMessages[outcome.status]);
        case 'own':
          return reply.code(303).header('location', editorUrlOf(outcome.invite)).send({ url: editorUrlOf(outcome.invite), owner: true });
        case 'joined': {
          deps.collaborators.granted(outcome.membership);
          const url = editorUrlOf(outcome.membership);
          const membership = { id: outcome.membership.id, owner_id: outcome.membership.ownerId, project: outcome.membership.project, role: outcome.membership.role };
          return reply.code(303).header('location', url).send({ url, membership, already_member: outcome.alreadyMember });
        }
      }
    });
  };
}
