import type { FastifyPluginAsync } from 'fastify';
import { requireOperator } from '../auth.js';
import type { PlatformDeps } from '../platform.js';

/**
 * `GET /api/services`: the platform's parts for operators (the admin token, or a user with the operator
 * role). The seeds served it to anyone, with every user's editor and runtime ports; this answers hosts
 * and counts only: no user ids, emails, addresses of users' containers or ports.
 */
export function servicesRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    app.get('/api/services', { preHandler: requireOperator(deps.auth, deps.adminConfigured) }, async (_req, reply) => {
      const [hosts, runtimes, editors] = await Promise.all([
        deps.store.pool.query<{ id: string; kind: string; state: string; instance_type: string | null; gpu: boolean }>(
          `SELECT id, kind, state, instance_type, gpu FROM hosts WHERE state <> 'terminated' ORDER BY kind, id`,
        ),
        deps.store.pool.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM runtimes WHERE kind = 'user' GROUP BY state ORDER BY state`),
        deps.store.pool.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM editors GROUP BY state ORDER BY state`),
      ]);
      return reply.header('cache-control', 'no-store').send({
        hosts: hosts.rows.map((h) => ({ id: h.id, kind: h.kind, state: h.state, instance_type: h.instance_type, gpu: h.gpu })),
        runtimes: Object.fromEntries(runtimes.rows.map((r) => [r.state, r.n])),
        editors: Object.fromEntries(editors.rows.map((r) => [r.state, r.n])),
        timestamp: new Date().toISOString(),
      });
    });
  };
}
