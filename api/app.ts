import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyServerOptions } from 'fastify';
import type { Logger } from '../lib/logger.js';
import type { PlatformDeps } from './platform.js';
import errors from './plugins/errors.js';
import { accountRoutes } from './routes/account.js';
import { computeRoutes } from './routes/compute.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { hookRoutes } from './routes/hooks.js';
import { servicesRoutes } from './routes/services.js';
import { healthRoutes, type HealthChecks } from './routes/health.js';
import { inviteRoutes } from './routes/invites.js';
import { projectRoutes } from './routes/projects.js';
import { publishRoutes } from './routes/publish.js';
import { sessionRoutes } from './routes/session.js';
import { signInRoutes } from './routes/sign-in.js';
import { registerCsrfProtection } from './csrf.js';
import { userProxyRoutes, userProxyUpgrade } from './routes/user-proxy.js';
import { metricsRoutes } from './metrics.js';
import { openApiRoutes } from './openapi.js';

export interface AppDeps {
  health: HealthChecks;
  /** Users, sessions, operations and the proxy; absent in tests of the health route alone. */
  platform?: PlatformDeps;
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
    // Caddy in front (lib/caddy-config.ts) runs beside the edge: X-Forwarded-* is believed from loopback
    // only, so req.ip (sessions, logs, rate limits) is the browser's address and nobody else can forge it.
    trustProxy: 'loopback',
    // Operation ids carry a workflow id and a run id: longer than the router's default 100-character parameter.
    routerOptions: { maxParamLength: 512 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    ...opts.server,
  });
  // Every route, as registered: the security tests fuzz each one that takes a body.
  const routeList: { method: string; url: string }[] = [];
  app.decorate('routeList', routeList);
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routeList.push({ method, url: route.url });
  });
  app.register(errors);
  // Only routes that ask for it (config.rateLimit, api/rate-limits.ts) are limited.
  app.register(rateLimit, { global: false });
  app.register(healthRoutes(deps.health));
  if (deps.platform) {
    const platform = deps.platform;
    // HTML forms (sign out) post urlencoded bodies; they are small and read as plain fields.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    registerCsrfProtection(app, { publicUrl: platform.signIn.publicUrl, secureCookies: platform.signIn.secureCookies });
    app.register(sessionRoutes(platform));
    app.register(signInRoutes(platform));
    app.register(computeRoutes(platform));
    app.register(snapshotRoutes(platform));
    app.register(accountRoutes(platform));
    app.register(hookRoutes(platform));
    app.register(servicesRoutes(platform));
    app.register(metricsRoutes(platform));
    app.register(openApiRoutes());
    app.register(projectRoutes(platform));
    app.register(inviteRoutes(platform));
    app.register(publishRoutes(platform));
    app.register(userProxyRoutes(platform));
    app.server.on('upgrade', userProxyUpgrade(platform, app.log));
    // Upgraded sockets are no longer the HTTP server's: cut them first, or closing would wait on them.
    app.addHook('preClose', async () => {
      platform.tunnels.closeEverything();
    });
  }
  return app;
}

declare module 'fastify' {
  interface FastifyInstance {
    routeList: { method: string; url: string }[];
  }
}
