import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { SnapshotRecord } from '../../lib/snapshot-store.js';
import { sandboxTtl, snapshotNamePattern, uuidPattern } from '../../workflows/contracts/snapshots.js';
import { hostIdPattern } from '../../workflows/contracts/hosts.js';
import { requireOperator, requireOperatorOrOwner } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';
import { startAndAnswer, userParam } from './compute.js';

/**
 * Idle, wake, named snapshots and sandboxes under /api/runtimes/:userId (the seeds' compute contract,
 * with its errors fixed: an unknown snapshot is 404, a request while another operation of the user runs
 * is 409). The owner or an operator; `idle` is for operators (and the resource monitor) only.
 */
const snapshotName = z.string().regex(snapshotNamePattern, "expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
export const SnapshotBody = z.strictObject({ name: snapshotName.optional() });
export const RestoreBody = z
  .strictObject({ snapshot_id: z.string().regex(uuidPattern, 'expected a snapshot id').optional(), name: snapshotName.optional() })
  .refine((b) => (b.snapshot_id === undefined) !== (b.name === undefined), { message: 'send exactly one of snapshot_id and name' });
export const SandboxBody = z.strictObject({
  ttl_seconds: z.number().int('expected whole seconds').min(sandboxTtl.minSeconds).max(sandboxTtl.maxSeconds).optional(),
  host_id: z.string().regex(hostIdPattern, 'expected a host id').optional(),
});
export const EmptyBody = z.strictObject({});

function snapshotView(s: SnapshotRecord) {
  return {
    snapshot_id: s.id,
    name: s.name,
    kind: s.kind,
    state: s.state,
    size_bytes: s.sizeBytes,
    sha256: s.sha256,
    on_base_server: s.localPath !== null,
    in_s3: s.s3Key !== null,
    tier: s.tier,
    checkpoint_ms: s.checkpointMs,
    created_at: s.createdAt.toISOString(),
  };
}

export function snapshotRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    const ownerOrOperator = requireOperatorOrOwner(deps.auth);
    const operator = requireOperator(deps.auth, deps.adminConfigured);
    const ops = deps.operations;

    /** The path's user, who must have a runtime record (any state); 404 otherwise. */
    const withRuntime = async (req: FastifyRequest, reply: FastifyReply): Promise<string | undefined> => {
      const userId = userParam(req, reply);
      if (!userId) return undefined;
      if (!(await deps.store.runtimes.live(userId))) {
        void reply.code(404).send({ error: 'not found', message: `user ${userId} has no runtime` });
        return undefined;
      }
      return userId;
    };

    app.post('/api/runtimes/:userId/snapshot', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = await withRuntime(req, reply);
      if (!userId) return reply;
      const body = parseBody(SnapshotBody, req.body, reply);
      if (!body) return reply;
      if (body.name !== undefined && (await deps.store.snapshots.byName(userId, body.name))) {
        return reply.code(409).send({ error: 'conflict', message: `a snapshot named ${body.name} exists; delete it first or choose another name` });
      }
      return startAndAnswer(deps, req, reply, () => ops.startSnapshot({ userId, ...(body.name !== undefined ? { name: body.name } : {}) }));
    });

    app.get('/api/runtimes/:userId/snapshots', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      return reply.send({ snapshots: (await deps.store.snapshots.listForUser(userId)).map(snapshotView) });
    });

    app.post('/api/runtimes/:userId/restore', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = await withRuntime(req, reply);
      if (!userId) return reply;
      const body = parseBody(RestoreBody, req.body, reply);
      if (!body) return reply;
      const snapshot = body.snapshot_id !== undefined ? await deps.store.snapshots.get(body.snapshot_id) : await deps.store.snapshots.byName(userId, body.name!);
      if (!snapshot || snapshot.userId !== userId || ['deleted', 'deleting', 'failed'].includes(snapshot.state)) {
        return reply.code(404).send({ error: 'not found', message: `user ${userId} has no snapshot ${body.snapshot_id ?? JSON.stringify(body.name)}` });
      }
      if (snapshot.state !== 'ready') return reply.code(409).send({ error: 'conflict', message: `snapshot ${snapshot.id} is still being made` });
      return startAndAnswer(deps, req, reply, () => ops.startRestoreSnapshot({ userId, snapshotId: snapshot.id }));
    });

    app.delete('/api/runtimes/:userId/snapshots/:snapshotId', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      const { snapshotId } = req.params as { snapshotId: string };
      const snapshot = uuidPattern.test(snapshotId) ? await deps.store.snapshots.get(snapshotId) : undefined;
      if (!snapshot || snapshot.userId !== userId || snapshot.state === 'deleted') return reply.code(404).send({ error: 'not found', message: `user ${userId} has no snapshot ${snapshotId}` });
      return startAndAnswer(deps, req, reply, () => ops.startDeleteSnapshot(userId, snapshot.id));
    });

    app.post('/api/runtimes/:userId/sandbox', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = await withRuntime(req, reply);
      if (!userId) return reply;
      const body = parseBody(SandboxBody, req.body, reply);
      if (!body) return reply;
      if (body.host_id !== undefined && !deps.auth.isOperator(req.headers)) return reply.code(403).send({ error: 'forbidden', message: 'host_id: only operators choose the host' });
      return startAndAnswer(deps, req, reply, () =>
        ops.startSandbox({ userId, ...(body.ttl_seconds !== undefined ? { ttlSeconds: body.ttl_seconds } : {}), ...(body.host_id !== undefined ? { hostId: body.host_id } : {}) }),
      );
    });

    app.get('/api/runtimes/:userId/sandboxes', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      const live = await deps.store.sandboxes.liveForUser(userId);
      return reply.send({ sandboxes: live.map((s) => ({ sandbox_id: s.id, state: s.state, host: s.hostId, address: s.address, port: s.port, expires_at: s.expiresAt.toISOString() })) });
    });

    app.delete('/api/runtimes/:userId/sandbox/:sandboxId', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = userParam(req, reply);
      if (!userId) return reply;
      const { sandboxId } = req.params as { sandboxId: string };
      const sandbox = uuidPattern.test(sandboxId) ? await deps.store.sandboxes.get(sandboxId) : undefined;
      if (!sandbox || sandbox.userId !== userId) return reply.code(404).send({ error: 'not found', message: `user ${userId} has no sandbox ${sandboxId}` });
      return startAndAnswer(deps, req, reply, () => ops.startDestroySandbox(userId, sandbox.id));
    });

    app.post('/api/runtimes/:userId/idle', { preHandler: operator }, async (req, reply) => {
      const userId = await withRuntime(req, reply);
      if (!userId) return reply;
      if (!parseBody(EmptyBody, req.body, reply)) return reply;
      return startAndAnswer(deps, req, reply, () => ops.startIdleCheckpoint({ userId, reason: 'operator' }));
    });

    /** Brings the runtime back (from its idle checkpoint if it has one) and the editor with it: the user's login. */
    app.post('/api/runtimes/:userId/wake', { preHandler: ownerOrOperator }, async (req, reply) => {
      const userId = await withRuntime(req, reply);
      if (!userId) return reply;
      if (!parseBody(EmptyBody, req.body, reply)) return reply;
      return startAndAnswer(deps, req, reply, () => ops.startLogin({ userId }));
    });
  };
}
