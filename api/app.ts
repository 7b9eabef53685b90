import Fastify, { type FastifyServerOptions } from 'fastify';
import type { Logger } from '../lib/logger.js';
import errors from './plugins/errors.js';
import { healthRoutes, type HealthChecks } from './routes/health.js';

export interface AppDeps {
  health: HealthChecks;
}

/** The edge as a factory: no listen, no environment reads; tests inject, the server listens. */
export function buildApp(deps: AppDeps, opts: { logger?: Logger | false; server?: FastifyServerOptions } = {}) {
  const app = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    bodyLimit: 1024 * 1024,
    connectionTimeout: 0,
    requestTimeout: 0,
    keepAliveTimeout: 72_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    ...opts.server,
  });
  app.register(errors);
  app.register(healthRoutes(deps.health));
  return app;
}
