import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApplicationFailure } from '@temporalio/common';
import type { OperationState } from '../../lib/operations.js';
import { ErrorType } from '../../workflows/contracts/errors.js';
import { Plans, userIdPattern } from '../../workflows/contracts/users.js';
import { requireOperator } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';

/**
 * The compute API (the seeds' compute-manager contract under /api/runtimes), for operators and machines.
 * Anything that takes more than a moment is an operation: 202 with its id, or the final state within
 * `?wait=SECONDS` for scripts.
 */
export const StartRuntimeBody = z.strictObject({
  user_id: z.string().regex(userIdPattern, 'expected a user id (a lowercase UUID)'),
  plan: z.enum(Plans, { error: `expected one of ${Plans.join(', ')}` }).optional(),
});

export const MigrateBody = z.strictObject({
  target_type: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,40}$/, 'expected "base", a tier name or an instance type such as t3.medium'),
});

export const WaitQuery = z.object({
  wait: z.coerce.number({ error: 'expected seconds' }).min(0, 'expected 0 to 300 seconds').max(300, 'expected 0 to 300 seconds').optional(),
});

export function waitMsOf(req: FastifyRequest, reply: FastifyReply): number | undefined | null {
  const parsed = WaitQuery.safeParse(req.query ?? {});
  if (!parsed.success) {
    void reply.code(400).send({ error: 'invalid request', message: `wait: ${parsed.error.issues[0]?.message}` });
    return null;
  }
  return parsed.data.wait === undefined ? undefined : parsed.data.wait * 1000;
}

/** 202 while running; 200 with the final state (completed or failed) once it is known. */
function answerOperation(reply: FastifyReply, state: OperationState) {
  return reply.code(state.status === 'running' ? 202 : 200).send(state);
}

/** The `:userId` path parameter, or a 400 naming it. */
export function userParam(req: FastifyRequest, reply: FastifyReply): string | undefined {
  const { userId } = req.params as { userId: string };
  if (userIdPattern.test(userId)) return userId;
  void reply.code(400).send({ error: 'invalid request', message: 'userId: expected a lowercase UUID' });
  return undefined;
}

/** 202 with the operation's id, or its final state within `?wait=`; a refusal by the entity is a 4xx saying why. */
export async function startAndAnswer(deps: PlatformDeps, req: FastifyRequest, reply: FastifyReply, started: () => Promise<{ operationId: string }>) {
  const waitMs = waitMsOf(req, reply);
  if (waitMs === null) return reply;
  let operationId: string;
  try {
    ({ operationId } = await started());
  } catch (err) {
    if (err instanceof ApplicationFailure && err.type === ErrorType.Conflict) return reply.code(409).send({ error: 'conflict', message: err.message });
    if (err instanceof ApplicationFailure && err.type === ErrorType.InvalidInput) return reply.code(400).send({ error: 'invalid request', message: err.message });
    if (err instanceof ApplicationFailure && err.type === ErrorType.NotFound) return reply.code(404).send({ error: 'not found', message: err.message });
    throw err;
  }
  if (!waitMs) return reply.code(202).header('location', `/api/operations/${operationId}`).send({ operation_id: operationId, status: 'running' });
  const state = await deps.operations.describe(operationId, { waitMs });
  return answerOperation(reply, state ?? { operation_id: operationId, workflow_id: '', status: 'running', step: 'starting' });
}

export function computeRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    const operator = requireOperator(deps.auth, deps.adminConfigured);

    app.post('/api/runtimes', { preHandler: operator }, async (req, reply) => {
      const body = parseBody(StartRuntimeBody, req.body, reply);
      if (!body) return reply;
      if (!(await deps.store.users.get(body.user_id))) return reply.code(404).send({ error: 'not found', message: `user ${body.user_id} does not exist` });
      return startAndAnswer(deps, req, reply, () => deps.operations.startLogin({ userId: body.user_id, ...(body.plan ? { plan: body.plan } : {}) }));
    });

    app.get('/api/runtimes/:userId', { preHandler: operator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      const runtime = await deps.store.runtimes.live(userId);
      if (!runtime) return reply.code(404).send({ error: 'not found', message: `user ${userId} has no runtime` });
      const stats = await deps.operations.runtimeStats(userId).catch((err: unknown) => {
        req.log.warn({ err }, 'reading runtime stats failed');
        return null;
      });
      return reply.send({
        runtime_id: runtime.id,
        user_id: runtime.userId,
        container_name: runtime.containerName,
        state: runtime.state,
        host: runtime.hostId,
        address: runtime.address,
        port: runtime.port,
        tier: runtime.tier,
        image: runtime.image,
        memory_limit_bytes: runtime.memoryLimitBytes,
        cpu_limit: runtime.cpuLimit,
        stats: stats && { memory_used_bytes: stats.memoryUsedBytes, memory_limit_bytes: stats.memoryLimitBytes, cpu_percent: stats.cpuPercent, pids: stats.pids, at: stats.at },
      });
    });

    app.delete('/api/runtimes/:userId', { preHandler: operator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      if (!(await deps.store.runtimes.live(userId))) return reply.code(404).send({ error: 'not found', message: `user ${userId} has no runtime` });
      return startAndAnswer(deps, req, reply, () => deps.operations.startStopRuntime({ userId }));
    });

    /** Moves the user's runtime to another tier (the same migration the memory policy starts). */
    app.post('/api/runtimes/:userId/migrate', { preHandler: operator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      const body = parseBody(MigrateBody, req.body, reply);
      if (!body) return reply;
      const user = await deps.store.users.get(userId);
      const runtime = user && (await deps.store.runtimes.live(userId));
      if (!user || !runtime) return reply.code(404).send({ error: 'not found', message: `user ${userId} has no runtime` });
      const ladder = deps.tiers[user.plan];
      const tier = ladder.find((t) => t.name === body.target_type || t.instanceType === body.target_type);
      if (!tier) {
        return reply.code(400).send({ error: 'invalid request', message: `target_type: ${body.target_type} is not a tier of the ${user.plan} plan (one of ${ladder.map((t) => t.name).join(', ')})` });
      }
      return startAndAnswer(deps, req, reply, () => deps.operations.startMigration(userId, { target: tier.name, reason: 'operator' }));
    });

    // Operators see every operation; a signed-in user sees their own.
    app.get('/api/operations/:id', async (req, reply) => {
      const { id } = req.params as { id: string };
      const waitMs = waitMsOf(req, reply);
      if (waitMs === null) return reply;
      if (!deps.auth.isOperator(req.headers)) {
        const user = await deps.auth.userOf(req.headers);
        if (!user) return reply.code(401).send({ error: 'unauthenticated', message: 'send Authorization: Bearer <MARKCO_ADMIN_TOKEN> or sign in' });
        if ((await deps.operations.ownerOf(id)) !== user.id) return reply.code(404).send({ error: 'not found', message: `no operation ${id}` });
      }
      const state = await deps.operations.describe(id, waitMs ? { waitMs } : {});
      if (!state) return reply.code(404).send({ error: 'not found', message: `no operation ${id}` });
      return reply.send(state);
    });
  };
}
