import type { FastifyPluginAsync } from 'fastify';

/** A named part of the stack and how to tell it is up; a check resolves when healthy and throws otherwise. */
export type HealthChecks = Record<string, () => Promise<unknown>>;

export interface PartHealth {
  status: 'ok' | 'down';
  latencyMs: number;
  error?: string;
  detail?: unknown;
}

async function runCheck(check: () => Promise<unknown>, timeoutMs: number): Promise<PartHealth> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const detail = await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return { status: 'ok', latencyMs: Date.now() - started, ...(detail === undefined ? {} : { detail }) };
  } catch (err) {
    return { status: 'down', latencyMs: Date.now() - started, error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** GET /api/health: 200 when every part answers, 503 naming the parts that are down. */
export function healthRoutes(checks: HealthChecks, timeoutMs = 3000): FastifyPluginAsync {
  return async (app) => {
    // Probes poll this every few seconds: keep them out of the request log.
    app.get('/api/health', { logLevel: 'warn' }, async (_req, reply) => {
      const names = Object.keys(checks);
      const results = await Promise.all(names.map((n) => runCheck(checks[n]!, timeoutMs)));
      const parts = Object.fromEntries(names.map((n, i) => [n, results[i]!]));
      const down = names.filter((_, i) => results[i]!.status === 'down');
      return reply.code(down.length ? 503 : 200).send({ status: down.length ? 'degraded' : 'ok', down, parts, timestamp: new Date().toISOString() });
    });
  };
}
