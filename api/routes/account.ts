import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { DeletionRequester } from '../../workflows/contracts/accounts.js';
import { requireOperator, requireUser } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';
import { startAndAnswer, userParam } from './compute.js';

/**
 * Account deletion: `DELETE /api/account` for the signed-in user (their email as confirmation, so a
 * stray request does nothing), `DELETE /api/users/:userId` for operators. Both answer 202 with the
 * deleteAccount operation; a second request while it runs or waits joins it (the same operation id).
 */
export const DeleteAccountBody = z.strictObject({
  confirm: z.string({ error: "expected your account's email address" }).max(320, "expected your account's email address"),
});

/** Operators confirm with the path; a body is a mistake (a script sending the wrong request) and is refused. */
export const OperatorDeleteBody = z.strictObject({});

/** The confirmation names the account: its email, compared as the users table compares emails (case-insensitive). */
export function confirmsAccount(confirm: string, email: string): boolean {
  return confirm.trim().toLowerCase() === email.trim().toLowerCase();
}

export function accountRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    const signedIn = requireUser(deps.auth);
    const operator = requireOperator(deps.auth, deps.adminConfigured);

    /**
     * Signed out everywhere before anything else happens: the user is marked and their sessions,
     * invites and memberships revoked in PostgreSQL (every edge stops resolving them), and this edge's
     * cached sessions and grants and its live WebSockets into their editor, and theirs into others',
     * are cut (the workflow cannot reach them: they live in this process). Then the deletion starts
     * through the user's entity, after the operation running now.
     */
    async function startDeletion(req: FastifyRequest, reply: FastifyReply, userId: string, requestedBy: DeletionRequester) {
      const { membershipsRevoked } = await deps.store.accountDeletion.begin(userId, { source: 'edge' });
      deps.auth.forgetUser(userId);
      deps.collaborators.revoked(membershipsRevoked);
      deps.tunnels.closeWhere((t) => t.ownerId === userId || t.userId === userId);
      return startAndAnswer(deps, req, reply, () => deps.operations.startAccountDeletion(userId, requestedBy));
    }

    app.delete('/api/account', { preHandler: signedIn }, async (req, reply) => {
      const body = parseBody(DeleteAccountBody, req.body, reply);
      if (!body) return reply;
      const user = req.user!;
      if (!confirmsAccount(body.confirm, user.email)) {
        const message = "confirm: send your account's email address to confirm that the account and everything in it is to be deleted";
        return reply.code(400).send({ error: 'invalid request', message, problems: [message] });
      }
      reply.header('set-cookie', deps.auth.clearedCookie());
      return startDeletion(req, reply, user.id, 'user');
    });

    app.delete('/api/users/:userId', { preHandler: operator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      if (!parseBody(OperatorDeleteBody, req.body, reply)) return reply;
      if (!(await deps.store.users.get(userId))) return reply.code(404).send({ error: 'not found', message: `user ${userId} does not exist (a finished deletion leaves no row)` });
      return startDeletion(req, reply, userId, 'operator');
    });
  };
}
