import { pathToFileURL } from 'node:url';
import closeWithGrace from 'close-with-grace';
import { Client, Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { caddyConfig, caddyFrontOptions, ensureCaddyConfig } from '../lib/caddy-config.js';
import { loadConfig, type Config } from '../lib/config.js';
import { createPool, pingDatabase, type Pool } from '../lib/db.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { fileMailTransport, smtpMailTransport, type MailTransport } from '../lib/mail.js';
import { createOperations } from '../lib/operations.js';
import { gitHubProvider, oidcProvider, type SignInProvider } from '../lib/sign-in-providers.js';
import { createActivityTracker } from '../lib/activity-tracker.js';
import { createStore } from '../lib/store.js';
import { defaultTierLadder } from '../lib/tiers.js';
import { buildApp } from './app.js';
import { createCollaboratorAccess, type EditorTunnel } from './collaborators.js';
import { createAuth, secureCookiesFor } from './auth.js';
import type { PlatformDeps } from './platform.js';
import { createExecuteHints } from './proxy/execute-hints.js';
import { createPublisher } from './publish/publisher.js';
import { createUpstreamAgent, TunnelRegistry } from './proxy/forward.js';
import { createRouteTable } from './route-table.js';
import type { HealthChecks } from './routes/health.js';
import { flightAnswers, flightLocation } from '../lib/flight-probe.js';
import { createProxyTraffic } from './metrics.js';

const { TaskQueueType } = proto.temporal.api.enums.v1;

/** A worker counts as alive while it long-polls: each poll refreshes its last access (polls last up to ~70 s). */
const workerFreshMs = 120_000;

export function stackHealthChecks(deps: { pool: Pool; temporal: Connection; namespace: string; taskQueue: string; flightLocation?: string }): HealthChecks {
  return {
    ...(deps.flightLocation ? { data: () => flightAnswers(deps.flightLocation!).then(() => ({ location: deps.flightLocation })) } : {}),
    database: () => pingDatabase(deps.pool),
    temporal: async () => {
      const info = await deps.temporal.workflowService.getSystemInfo({});
      return { serverVersion: info.serverVersion };
    },
    worker: async () => {
      const res = await deps.temporal.workflowService.describeTaskQueue({
        namespace: deps.namespace,
        taskQueue: { name: deps.taskQueue },
        taskQueueType: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
      });
      const now = Date.now();
      const live = (res.pollers ?? []).filter((p) => now - Number(p.lastAccessTime?.seconds ?? 0) * 1000 < workerFreshMs);
      if (live.length === 0) throw new Error(`no worker is polling task queue ${deps.taskQueue}`);
      return { pollers: live.length };
    },
  };
}

/** The edge's platform parts from its clients: the server below and the tests build it the same way. */
export async function createPlatform(opts: {
  pool: Pool;
  databaseUrl: string;
  temporal: Connection;
  namespace: string;
  taskQueue: string;
  http: Pick<Config['http'], 'adminToken' | 'publicUrl' | 'devLogin'>;
  tiers?: Config['tiers'];
  /** How long a GPU cell is held for the GPU hop (MARKCO_GPU_WAIT_S); 5 min when absent. */
  gpuWaitMs?: number;
  /** Sign-in providers and the mail transport for email links (none when absent). */
  signIn?: { providers?: SignInProvider[]; mail?: MailTransport };
  /** Where users' files are (MARKCO_USERS_DIR) and the publishing settings (Config['publish'] defaults when absent). */
  publish: { usersDir: string } & Partial<Config['publish']>;
  log: Logger;
}): Promise<{ platform: PlatformDeps; close: () => Promise<void> }> {
  const store = createStore(opts.pool);
  const routes = createRouteTable({ pool: opts.pool, databaseUrl: opts.databaseUrl, log: opts.log });
  await routes.start();
  const operations = createOperations(new Client({ connection: opts.temporal, namespace: opts.namespace }), opts.taskQueue);
  const tunnels = new TunnelRegistry<EditorTunnel>();
  const readerScriptUrl = opts.publish.readerScriptUrl ?? null;
  const publisher = createPublisher({
    usersDir: opts.publish.usersDir,
    publicUrl: opts.http.publicUrl,
    readerScriptUrl,
    cacheBytes: opts.publish.cacheBytes ?? 64 * 1024 * 1024,
    users: store.users,
    log: opts.log,
  });
  const platform: PlatformDeps = {
    store,
    auth: createAuth({ sessions: store.sessions, adminToken: opts.http.adminToken, secureCookies: secureCookiesFor(opts.http.publicUrl) }),
    operations,
    routes,
    devLogin: opts.http.devLogin,
    adminConfigured: opts.http.adminToken !== undefined,
    upstreamAgent: createUpstreamAgent(),
    tunnels,
    collaborators: createCollaboratorAccess({ memberships: store.memberships, tunnels }),
    activity: createActivityTracker(opts.pool),
    proxyTraffic: createProxyTraffic(),
    executeHints: createExecuteHints({ operations, gpuWaitMs: opts.gpuWaitMs ?? 300_000, log: opts.log }),
    signIn: {
      providers: new Map((opts.signIn?.providers ?? []).map((p) => [p.id, p])),
      mail: opts.signIn?.mail,
      publicUrl: opts.http.publicUrl,
      secureCookies: secureCookiesFor(opts.http.publicUrl),
    },
    tiers: opts.tiers ?? defaultTierLadder,
    publishing: { publisher, pageMaxAgeSeconds: opts.publish.pageMaxAgeSeconds ?? 60, readerScriptUrl },
  };
  return {
    platform,
    close: async () => {
      platform.tunnels.closeEverything();
      publisher.close();
      await routes.close();
      platform.upstreamAgent.destroy();
    },
  };
}

/** The providers and the mail transport the configuration names (lib/config.ts SignInConfig). */
export function signInFromConfig(config: Pick<Config, 'signIn' | 'dataDir'>): { providers: SignInProvider[]; mail?: MailTransport } {
  const { oidc, github, mail } = config.signIn;
  return {
    providers: [...(oidc ? [oidcProvider(oidc)] : []), ...(github ? [gitHubProvider(github)] : [])],
    ...(mail.kind === 'smtp' ? { mail: smtpMailTransport(mail.url, mail.from) } : mail.kind === 'file' ? { mail: fileMailTransport(mail.dir) } : {}),
  };
}

export async function startEdge(config: Config, log: Logger) {
  if (!config.database.url) throw new Error('the edge needs DATABASE_URL (the main command sets it for the embedded database)');
  if (!config.temporal.address) throw new Error('the edge needs TEMPORAL_ADDRESS (the main command sets it for the dev server)');
  const pool = createPool(config.database.url, { application: 'markco-edge' });
  // Lazy: the edge starts (and reports Temporal as down) even while Temporal is unreachable.
  const temporal = Connection.lazy({ address: config.temporal.address });
  const { platform, close } = await createPlatform({
    pool,
    databaseUrl: config.database.url,
    temporal,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    http: config.http,
    tiers: config.tiers,
    gpuWaitMs: config.gpuWaitMs,
    signIn: signInFromConfig(config),
    publish: { usersDir: config.environment.usersDir, ...config.publish },
    log,
  });
  const app = buildApp(
    {
      health: stackHealthChecks({
        pool,
        temporal,
        namespace: config.temporal.namespace,
        taskQueue: config.temporal.taskQueue,
        // The data service runs beside the edge on MARKCO_HOST (scripts/start, markco-flight.service).
        flightLocation: flightLocation(config.http.host, config.flight.port),
      }),
      platform,
    },
    { logger: log },
  );
  app.addHook('onClose', async () => {
    await close();
    await pool.end();
    await temporal.close();
  });
  await app.listen({ host: config.http.host, port: config.http.port });
  if (config.http.caddyAdminUrl) {
    // At every start: an unchanged config is left alone (a reload would cut Caddy's WebSockets), a changed one loaded.
    const outcome = await ensureCaddyConfig(config.http.caddyAdminUrl, caddyConfig(caddyFrontOptions(config, config.http.caddyAdminUrl)));
    log.info({ caddy: config.http.caddyAdminUrl, publicUrl: config.http.publicUrl, outcome }, outcome === 'loaded' ? 'Caddy config loaded' : 'Caddy already runs this config');
  }
  return app;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let log: Logger | undefined;
  try {
    const config = loadConfig();
    log = createLogger({ level: config.logLevel, name: 'edge' });
    const app = await startEdge(config, log);
    closeWithGrace({ delay: 10_000 }, async ({ err }) => {
      if (err) log?.error({ err }, 'edge closing after an error');
      await app.close();
    });
  } catch (err) {
    if (log) log.fatal({ err }, 'edge failed to start');
    else console.error((err as Error).message);
    process.exit(1);
  }
}
