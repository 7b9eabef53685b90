import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker, type ActivityInterceptorsFactory, type LogLevel } from '@temporalio/worker';
import type { EC2Client } from '@aws-sdk/client-ec2';
import { ensureBucket } from '../activities/archive-store.js';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import type { EntitySignals } from '../activities/monitor.js';
import { HostShells } from '../activities/host-shell.js';
import { createEc2Client, createS3Client } from '../lib/aws.js';
import { loadConfig, type Config } from '../lib/config.js';
import { createPool } from '../lib/db.js';
import { createOperations } from '../lib/operations.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { createStore, type Store } from '../lib/store.js';
import { ensureSearchAttributes } from '../lib/temporal.js';

/** The workflow sources next to this file: .ts when run from source, .js when run from dist/. */
export function workflowsPath(): string {
  const self = fileURLToPath(import.meta.url);
  const ext = self.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`../workflows/index${ext}`, import.meta.url));
}

export type WorkerDeps = ActivityDeps;

/** Builds a worker from injected clients: the entry point below and the tests share this. */
export async function createWorker(opts: {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: WorkerDeps;
  workflowBundlePath?: string | undefined;
  shutdownGraceTime?: string;
  /** After this, run() gives up on activities that ignore their cancellation (tests bound their teardown with it). */
  shutdownForceTime?: string;
}): Promise<Worker> {
  const interceptors: ActivityInterceptorsFactory[] = [trackInFlight];
  if (process.env.MARKCO_TEST_STOP_AT_ACTIVITY_FILE) interceptors.push(stopAtActivity(process.env.MARKCO_TEST_STOP_AT_ACTIVITY_FILE));
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    activities: createActivities(opts.deps),
    ...(opts.workflowBundlePath ? { workflowBundle: { codePath: opts.workflowBundlePath } } : { workflowsPath: workflowsPath() }),
    shutdownGraceTime: opts.shutdownGraceTime ?? '30s',
    ...(opts.shutdownForceTime ? { shutdownForceTime: opts.shutdownForceTime } : {}),
    interceptors: { activity: interceptors },
  });
}

interface InFlightActivity {
  activityType: string;
  workflowId: string;
  workflowType: string;
  attempt: number;
  startedAt: number;
  cancellation: AbortSignal;
}

const inFlight = new Set<InFlightActivity>();

/**
 * The activities this process is running now, oldest first. A worker that does not stop names with it
 * the activity that ignores its cancellation (the worker's own status only counts them).
 */
export function activitiesInFlight(): { activityType: string; workflowId: string; workflowType: string; attempt: number; runningMs: number; cancelled: boolean }[] {
  const now = Date.now();
  return [...inFlight].sort((a, b) => a.startedAt - b.startedAt).map(({ startedAt, cancellation, ...a }) => ({ ...a, runningMs: now - startedAt, cancelled: cancellation.aborted }));
}

const trackInFlight: ActivityInterceptorsFactory = (ctx) => ({
  inbound: {
    async execute(input, next) {
      const { activityType, workflowType, attempt, workflowExecution } = ctx.info;
      const entry: InFlightActivity = { activityType, workflowType: workflowType ?? '', attempt, workflowId: workflowExecution?.workflowId ?? '', startedAt: Date.now(), cancellation: ctx.cancellationSignal };
      inFlight.add(entry);
      try {
        return await next(input);
      } finally {
        inFlight.delete(entry);
      }
    },
  },
});

/**
 * Fault-injection tests only (test/integration/faults-worker-kill.test.ts), inert unless
 * MARKCO_TEST_STOP_AT_ACTIVITY_FILE is set: when the file names `<workflowType>:<activityType>`, that
 * activity's first attempt stops the whole worker process (SIGSTOP) before the activity runs, after
 * printing one line saying so, for the test to kill it at exactly that boundary.
 */
function stopAtActivity(file: string): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      execute(input, next) {
        const { workflowType, activityType, attempt } = ctx.info;
        let wanted = '';
        try {
          wanted = readFileSync(file, 'utf8').trim();
        } catch {
          /* no file: nothing wanted */
        }
        if (attempt === 1 && wanted === `${workflowType}:${activityType}`) {
          process.stdout.write(`${JSON.stringify({ msg: 'stopped at activity', workflowType, activityType })}\n`);
          process.kill(process.pid, 'SIGSTOP');
        }
        return next(input);
      },
    },
  });
}

const temporalLevels: Record<string, LogLevel> = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN', error: 'ERROR', fatal: 'ERROR', silent: 'ERROR' };

/**
 * Routes the Temporal SDK's own logs into the process's pino root and, given `metricsAddress` (host:port),
 * has the SDK's core serve its metrics (task latencies, slots, polls, failures) for Prometheus there.
 */
export function installTemporalRuntime(log: Logger, level: string, metricsAddress?: string): void {
  Runtime.install({
    ...(metricsAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress: metricsAddress } } } } : {}),
    logger: new DefaultLogger(temporalLevels[level] ?? 'INFO', (entry) => {
      const method = entry.level === 'TRACE' ? 'trace' : entry.level === 'DEBUG' ? 'debug' : entry.level === 'WARN' ? 'warn' : entry.level === 'ERROR' ? 'error' : 'info';
      log[method]({ ...entry.meta, sdk: 'temporal' }, entry.message);
    }),
  });
}

export async function runWorker(config: Config, log: Logger): Promise<void> {
  if (!config.database.url) throw new Error('the worker needs DATABASE_URL (the main command sets it for the embedded database)');
  if (!config.temporal.address) throw new Error('the worker needs TEMPORAL_ADDRESS (the main command sets it for the dev server)');
  installTemporalRuntime(log, config.logLevel, config.temporal.workerMetricsAddress);
  if (config.temporal.workerMetricsAddress) log.info({ address: config.temporal.workerMetricsAddress }, 'Temporal SDK metrics at /metrics');
  const pool = createPool(config.database.url, { application: 'markco-worker' });
  const shells = new HostShells({
    baseHostId: config.hosts.baseHostId,
    sshKeyPath: config.hosts.sshKeyPath,
    connectTimeoutMs: config.hosts.sshConnectTimeoutMs,
    commandTimeoutMs: config.hosts.sshCommandTimeoutMs,
  });
  const ec2 = createEc2Client(config.aws);
  // Archives go to S3 wherever there is a cloud (the emulator's S3 in simulated mode); the embedded stack keeps them on the base server.
  const s3 = config.cloud.provider !== 'none' ? createS3Client(config.aws) : undefined;
  if (s3 && config.cloud.provider === 'simulated') await ensureBucket(s3, config.aws.snapshotBucket, config.aws.region);
  const archives = s3 ? { s3, bucket: config.aws.snapshotBucket, ...(config.aws.archives ?? { encryption: { kind: 'AES256' as const }, partBytes: 16 * 1024 * 1024 }) } : undefined;
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  // The resource monitor's activities signal users' entities through a client of their own.
  const clientConnection = await Connection.connect({ address: config.temporal.address });
  const entities = entitySignals(new Client({ connection: clientConnection, namespace: config.temporal.namespace }), config.temporal.taskQueue);
  try {
    await ensureSearchAttributes(connection, config.temporal.namespace);
    const bundle = config.temporal.workflowBundle;
    if (bundle && !existsSync(bundle)) throw new Error(`MARKCO_WORKFLOW_BUNDLE=${bundle} does not exist (npm run build writes it)`);
    const worker = await createWorker({
      connection,
      namespace: config.temporal.namespace,
      taskQueue: config.temporal.taskQueue,
      deps: { store: createStore(pool), shells, ec2, environment: config.environment, tiers: config.tiers, gpu: config.gpu, cloud: config.cloud, entities, ...(archives ? { archives } : {}) },
      workflowBundlePath: bundle,
    });
    log.info({ taskQueue: config.temporal.taskQueue, namespace: config.temporal.namespace }, 'worker polling');
    // Runtime handles SIGINT/SIGTERM: run() resolves once in-flight tasks finish (shutdownGraceTime).
    await worker.run();
    log.info('worker stopped');
  } finally {
    await shells.closeAll();
    ec2.destroy();
    s3?.destroy();
    await pool.end();
    await connection.close();
    await clientConnection.close();
  }
}

/** The signals the monitor sends to users' entities (`runtime/<userId>`). */
export function entitySignals(client: Client, taskQueue: string): EntitySignals {
  const ops = createOperations(client, taskQueue);
  return { pressure: (userId, event) => ops.signalPressure(userId, event), idle: (userId, event) => ops.signalIdle(userId, event), wake: (userId, event) => ops.signalWake(userId, event) };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let log: Logger | undefined;
  try {
    const config = loadConfig();
    log = createLogger({ level: config.logLevel, name: 'worker' });
    await runWorker(config, log);
  } catch (err) {
    if (log) log.fatal({ err }, 'worker failed');
    else console.error((err as Error).message);
    process.exit(1);
  }
}
