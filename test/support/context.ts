import { randomBytes } from 'node:crypto';
import { DescribeInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { readFileSync } from 'node:fs';
import { after, before } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import pg from 'pg';
import { join } from 'node:path';
import { HostShells } from '../../activities/host-shell.js';
import { probeHostFacts } from '../../activities/hosts.js';
import { ensureBucket } from '../../activities/archive-store.js';
import type { ActivityDeps } from '../../activities/index.js';
import type { ArchiveBucket } from '../../activities/snapshots.js';
import type { UserEnvironmentConfig } from '../../activities/user-environment.js';
import { startBootWatcher, type BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { createEc2Client, createS3Client } from '../../lib/aws.js';
import type { CloudConfig } from '../../lib/config.js';
import { createPool } from '../../lib/db.js';
import { createStore, type Store } from '../../lib/store.js';
import { activitiesInFlight, createWorker, entitySignals } from '../../workers/worker.js';
import type { HostConnection } from '../../workflows/contracts/hosts.js';
import { harnessStateEnv, startHarness, type HarnessState, type RunningHarness } from './harness.js';
import type { NamespaceHostInfo } from './netns.js';

/**
 * What a test file uses: the run's shared harness (started by test/support/run.ts), or, when a file is
 * run on its own, a harness of its own that is torn down after the file.
 */
export function useHarness(opts: { hosts?: number } = {}): { readonly state: HarnessState } {
  let state: HarnessState | undefined;
  let own: RunningHarness | undefined;
  before(async () => {
    const file = process.env[harnessStateEnv];
    if (file) {
      state = JSON.parse(readFileSync(file, 'utf8')) as HarnessState;
    } else {
      own = await startHarness(opts);
      state = own.state;
    }
  });
  after(async () => {
    await own?.teardown();
  });
  return {
    get state(): HarnessState {
      if (!state) throw new Error('the harness is not started yet: use it inside tests or before() hooks');
      return state;
    },
  };
}

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  store: Store;
  drop(): Promise<void>;
}

/** A fresh database cloned from the run's migrated template: every test file gets its own. */
export async function freshDatabase(state: HarnessState, opts: { empty?: boolean } = {}): Promise<TestDatabase> {
  const name = `t_${randomBytes(5).toString('hex')}`;
  const urlOf = (db: string) => state.postgres.urlTemplate.replace('{database}', db);
  const admin = new pg.Client({ connectionString: urlOf('postgres') });
  await admin.connect();
  try {
    await admin.query(opts.empty ? `CREATE DATABASE ${name}` : `CREATE DATABASE ${name} TEMPLATE ${state.postgres.templateDatabase}`);
  } finally {
    await admin.end();
  }
  const url = urlOf(name);
  const pool = createPool(url, { max: 5, application: 'markco-test' });
  return {
    name,
    url,
    pool,
    store: createStore(pool),
    drop: async () => {
      await pool.end();
      const c = new pg.Client({ connectionString: urlOf('postgres') });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** How the control plane reaches a namespace host: over ssh2 with its pinned key, like an EC2 host. */
export function connectionTo(h: NamespaceHostInfo): HostConnection {
  return { hostId: h.hostId, kind: 'ec2', address: h.address, sshPort: h.sshPort, sshUser: h.sshUser, hostKey: h.hostKey };
}

/**
 * Shells as the worker has them: `base` is this machine, its podman on the run's own storage (so the
 * run's containers go with the run), every other host over ssh2.
 */
export function testShells(state: HarnessState, opts: { commandTimeoutMs?: number; connectTimeoutMs?: number } = {}): HostShells {
  return new HostShells({
    baseHostId: 'base',
    localEnv: { ...process.env, ...state.baseHost.env },
    sshKeyPath: state.sshKeyPath,
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    commandTimeoutMs: opts.commandTimeoutMs ?? 120_000,
  });
}

export async function temporalClient(state: HarnessState): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address: state.temporal.address });
  return { client: new Client({ connection, namespace: state.temporal.namespace }), close: () => connection.close() };
}

let runtimeInstalled = false;

/** The SDK's runtime logs only warnings in tests (once per process, before the first connection). */
function quietTemporalRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger('WARN') });
}

/** Clients for the run's EC2/S3 emulator (it accepts any credentials; the SDK only needs some to sign). */
export const emulatorCredentials = { accessKeyId: 'markco-test', secretAccessKey: 'markco-test' };

export function emulatorEc2(state: HarnessState) {
  return createEc2Client({ region: 'ca-central-1', endpoint: state.moto.endpoint, snapshotBucket: 'markco-test' }, emulatorCredentials);
}

/** The emulator's instances launched for a user by a test's deployment that are not terminated or going. */
export async function liveInstancesOfUser(ec2: EC2Client, userId: string, deploymentId: string) {
  const out = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:user', Values: [userId] }, { Name: 'tag:markco:deployment', Values: [deploymentId] }] }));
  return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => !['shutting-down', 'terminated'].includes(i.State?.Name ?? ''));
}

/**
 * An S3 bucket of the emulator for a test's archives (created here), as the worker's `archives`: every
 * checkpoint archive of that worker is uploaded to it.
 */
export async function emulatorArchiveBucket(state: HarnessState, bucket = `markco-archives-${randomBytes(4).toString('hex')}`): Promise<ArchiveBucket> {
  const s3 = createS3Client({ region: 'ca-central-1', endpoint: state.moto.endpoint, snapshotBucket: bucket }, emulatorCredentials);
  await ensureBucket(s3, bucket, 'ca-central-1');
  return { s3, bucket, encryption: { kind: 'AES256' }, partBytes: 5 * 1024 * 1024 };
}

/** Where the test worker puts users' homes and which images it runs (the run's own directory, the built images). */
export function testEnvironment(state: HarnessState): UserEnvironmentConfig {
  return { baseHostId: 'base', usersDir: join(state.baseHost.dataDir, 'users'), runtimeImage: state.images.runtime, editorImage: state.images.editor, allowPrivateImports: true };
}

/** Records this machine as the `base` host of a test database, probed for real (what registerHost does). */
export async function registerBaseHost(store: Store, shells: HostShells): Promise<void> {
  const connection = { hostId: 'base', kind: 'base' as const, address: '127.0.0.1' };
  await store.hosts.upsert({ id: 'base', kind: 'base', address: '127.0.0.1', state: 'booting' });
  await store.hosts.markReady('base', await probeHostFacts(shells.for(connection)));
}

/**
 * The worker's cloud settings for the run's simulated cloud (HarnessState.cloud). Instances are tagged
 * with `deploymentId` (default: one per run), which scopes the reaper and a boot watcher to them.
 */
export function testCloud(state: HarnessState, overrides: Partial<CloudConfig> = {}): CloudConfig {
  return {
    provider: 'simulated',
    amiIds: state.cloud.amiIds,
    subnetId: state.cloud.subnetId,
    securityGroupIds: [state.cloud.securityGroupId],
    sshUser: 'root',
    market: 'on-demand',
    deploymentId: `run-${state.runId}`,
    reservationTtlSeconds: 600,
    reaperGraceSeconds: 900,
    sshKeyPath: state.sshKeyPath,
    ...overrides,
  };
}

/**
 * Boots the instances a test launches as namespace hosts (at their 10.77.N.64+ addresses, with the host
 * key from their UserData). A test file that launches instances starts one and calls stop() in its
 * after(), which destroys what it booted; give it the deployment id of the file's testCloud so it only
 * boots that file's instances.
 */
export function startTestBootWatcher(state: HarnessState, opts: { deploymentId?: string } = {}): BootWatcher {
  const ec2 = emulatorEc2(state);
  const watcher = startBootWatcher({
    ec2,
    net: state.network,
    runDir: state.runDir,
    authorizedKeysPath: state.cloud.authorizedKeysPath,
    ...(opts.deploymentId ? { deploymentId: opts.deploymentId } : {}),
  });
  return {
    ...watcher,
    stop: async () => {
      await watcher.stop();
      ec2.destroy();
    },
  };
}

/** A worker with the real activities, on a task queue of the test's own, from the run's prebuilt bundle. */
export async function startTestWorker(
  state: HarnessState,
  deps: { store: Store; shells: HostShells } & Partial<Pick<ActivityDeps, 'environment' | 'cloud' | 'tiers' | 'archives' | 'gpu'>>,
  taskQueue = `test-${randomBytes(4).toString('hex')}`,
): Promise<{ worker: Worker; taskQueue: string; connection: NativeConnection }> {
  quietTemporalRuntime();
  const connection = await NativeConnection.connect({ address: state.temporal.address });
  const clientConnection = await Connection.connect({ address: state.temporal.address });
  const worker = await createWorker({
    connection,
    namespace: state.temporal.namespace,
    taskQueue,
    deps: { environment: testEnvironment(state), cloud: testCloud(state), entities: entitySignals(new Client({ connection: clientConnection, namespace: state.temporal.namespace }), taskQueue), ...deps, ec2: emulatorEc2(state) },
    workflowBundlePath: state.workflowBundlePath,
    shutdownGraceTime: '2s',
    // An activity that ignores its cancellation fails the file's teardown in bounded time instead of hanging it.
    shutdownForceTime: '30s',
  });
  // Callers close `connection` once the worker has stopped: the monitor's client goes with it.
  const closeNative = connection.close.bind(connection);
  connection.close = async () => {
    await closeNative();
    await clientConnection.close();
  };
  return { worker, taskQueue, connection };
}

/**
 * Stops a test worker and waits for it. A worker force-stopped after its shutdown grace (an activity that
 * ignored its cancellation: a bug) does not throw here: the error comes back, naming the activities still
 * in flight, so the caller's teardown removes what the test made first and then throws it.
 */
export async function stopTestWorker(worker: Worker | undefined, running: Promise<void> | undefined): Promise<Error | undefined> {
  if (!worker || !running) return undefined;
  if (worker.getState() === 'RUNNING') worker.shutdown();
  return running.then(
    () => undefined,
    (err: Error) => new Error(`the worker was force-stopped (${err.message}); in flight: ${JSON.stringify(activitiesInFlight())}`),
  );
}
