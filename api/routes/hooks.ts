import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { requireOperator } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';

/**
 * `POST /hooks/resource`: events from an external monitor, in the seeds' format, now authenticated
 * (the operators' token; the seeds' hook took anything from anyone). A memory event is a reading for the
 * user's entity, whose policy decides (the event's own `type` is not trusted to act); `idle-sleep`,
 * `idle-wake`, `gpu-hint` and `big-ram-hint` are the signals the built-in monitor and the edge send.
 * `spot-interruption` names a host (`host`: its host id), not a runtime: EC2's two-minute notice (from
 * EventBridge, or an agent polling the instance metadata) moves every runtime on it away at once.
 */
const memoryTypes = ['memory', 'pre-provision', 'migrate', 'urgent-migrate', 'critical'] as const;
const eventTypes = [...memoryTypes, 'idle-sleep', 'idle-wake', 'gpu-hint', 'big-ram-hint', 'spot-interruption'] as const;
export const ResourceEvent = z.strictObject({
  type: z.enum(eventTypes, { error: `expected one of ${eventTypes.join(', ')}` }),
  runtime_id: z.uuid({ error: 'expected a runtime id' }).optional(),
  container_name: z.string().max(200).optional(),
  host: z.string().max(200).optional(),
  memory_used: z.number().int().nonnegative().optional(),
  memory_limit: z.number().int().positive().optional(),
  memory_percent: z.number().nonnegative().optional(),
  timestamp: z.iso.datetime({ offset: true, error: 'expected an ISO time' }).optional(),
});

export function hookRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    app.post('/hooks/resource', { preHandler: requireOperator(deps.auth, deps.adminConfigured) }, async (req, reply) => {
      const body = parseBody(ResourceEvent, req.body, reply);
      if (!body) return reply;
      const at = body.timestamp ? Date.parse(body.timestamp) : Date.now();
      if (body.type === 'spot-interruption') {
        if (!body.host) return reply.code(400).send({ error: 'invalid request', message: 'host: a spot-interruption event names the host id being reclaimed' });
        const onHost = await deps.store.pool.query<{ id: string; user_id: string }>(`SELECT id, user_id FROM runtimes WHERE host_id = $1 AND kind = 'user' AND state NOT IN ('stopped', 'failed')`, [body.host]);
        let delivered = 0;
        for (const rt of onHost.rows) if (await deps.operations.signalSpotInterruption(rt.user_id, { hostId: body.host, at, source: 'webhook' })) delivered++;
        await deps.store.events.append({ type: 'resource.spot-interruption', source: 'webhook', hostId: body.host, payload: { ...body, runtimes: onHost.rows.map((rt) => rt.id), delivered } });
        return reply.code(202).send({ received: true, delivered: delivered > 0, runtimes: onHost.rows.length });
      }
      if (!body.runtime_id) return reply.code(400).send({ error: 'invalid request', message: `runtime_id: a ${body.type} event names the runtime` });
      const r = await deps.store.pool.query<{ user_id: string; host_id: string | null }>(`SELECT user_id, host_id FROM runtimes WHERE id = $1 AND kind = 'user' AND state NOT IN ('stopped', 'failed')`, [body.runtime_id]);
      const row = r.rows[0];
      if (!row) return reply.code(404).send({ error: 'not found', message: `no live runtime ${body.runtime_id}` });
      const hostId = row.host_id ?? body.host ?? '';
      let delivered = false;
      if ((memoryTypes as readonly string[]).includes(body.type)) {
        if (body.memory_used === undefined) return reply.code(400).send({ error: 'invalid request', message: `memory_used: a ${body.type} event needs the memory in use` });
        delivered = await deps.operations.signalPressure(row.user_id, { runtimeId: body.runtime_id, hostId, usedBytes: body.memory_used, ...(body.memory_limit ? { limitBytes: body.memory_limit } : {}), at, source: 'webhook' });
      } else if (body.type === 'idle-sleep') {
        delivered = await deps.operations.signalIdle(row.user_id, { runtimeId: body.runtime_id, hostId, idleSince: at, at, source: 'webhook' });
      } else if (body.type === 'idle-wake') {
        delivered = await deps.operations.signalWake(row.user_id, { runtimeId: body.runtime_id, hostId, at, source: 'webhook' });
      } else if (body.type === 'gpu-hint' || body.type === 'big-ram-hint') {
        delivered = await deps.operations.signalCodeHint(row.user_id, { kind: body.type, at, source: 'webhook' });
      }
      await deps.store.events.append({ type: `resource.${body.type}`, source: 'webhook', userId: row.user_id, runtimeId: body.runtime_id, hostId: row.host_id, payload: { ...body, delivered } });
      return reply.code(202).send({ received: true, delivered });
    });
  };
}
