import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { LocalShell } from '../../activities/host-shell.js';
import { startEmbeddedPostgres } from '../../infra/dev/embedded-postgres.js';
import { setupSimulatedCloud, type SimulatedCloud } from '../../infra/dev/simulated-cloud.js';
import { createEc2Client } from '../../lib/aws.js';
import { requireContainerTools, requireExecutable, resolveMotoServer, resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { startMoto } from '../../infra/dev/moto.js';
import { startTemporalDevServer } from '../../infra/dev/temporal-dev.js';
import { migrateUp } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';
import { writeWorkflowBundle } from '../../workers/bundle-workflows.js';
import { describeLeftovers, findLeftovers, ownerRecord, removeLeftovers, runMarkerEnv, sweepDeadRuns, testRunsRoot } from './leftovers.js';
import { containersConf, createNamespaceHost, hostEnvShell, storageConf, createTestNetwork, destroyNamespaceHost, destroyTestNetwork, type NamespaceHostInfo, type TestNetwork } from './netns.js';

/**
 * Everything the integration tests run against, started once per test run from real parts: PostgreSQL
 * (a migrated template database), a Temporal dev server, the EC2/S3 emulator, namespace hosts with sshd
 * and their own podman storage, and the workflow bundle. Its state is plain JSON so every test file
 * (a separate process under node --test) can connect to it.
 */
export interface HarnessState {
  runId: string;
  runDir: string;
  postgres: { templateDatabase: string; urlTemplate: string };
  temporal: { address: string; namespace: string; uiUrl: string };
  moto: { endpoint: string };
  hosts: NamespaceHostInfo[];
  network: TestNetwork;
  sshKeyPath: string;
  workflowBundlePath: string;
  baseImage: string;
  /** This machine as the base server, with podman storage of the run's own (the built images shared read-only). */
  baseHost: LocalBaseHost;
  images: { runtime: string; runtimeGpu: string; editor: string };
  /**
   * The simulated cloud on the run's emulator and network, set up once per run: instances launched into
   * its subnet get addresses from <prefix>.64 up, where a test's boot watcher (startTestBootWatcher in
   * context.ts) boots them as namespace hosts.
   */
  cloud: SimulatedCloud & { authorizedKeysPath: string };
}

export interface LocalBaseHost {
  hostId: string;
  dir: string;
  /** Where users' files live on this host (DATA_DIR). */
  dataDir: string;
  env: { CONTAINERS_STORAGE_CONF: string; CONTAINERS_CONF: string };
}

export const harnessStateEnv = 'MARKCO_TEST_HARNESS';
export const baseImage = process.env.MARKCO_BASE_IMAGE ?? 'localhost/markco-base:bookworm';
export const testImages = {
  runtime: process.env.MARKCO_RUNTIME_IMAGE ?? 'localhost/markco-runtime:0.4.2',
  runtimeGpu: process.env.MARKCO_RUNTIME_GPU_IMAGE ?? 'localhost/markco-runtime-gpu:0.4.2',
  editor: process.env.MARKCO_EDITOR_LITE_IMAGE ?? 'localhost/markco-editor-lite:0.1',
};

const log = createLogger({ level: process.env.MARKCO_TEST_LOG_LEVEL ?? 'warn', name: 'harness' });
const local = new LocalShell('test-harness', { commandTimeoutMs: 600_000 });

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Builds whatever image is missing or out of date (seconds when nothing changed). */
async function ensureImages(): Promise<void> {
  await local.run([join(repoRoot, 'images', 'build.sh'), 'base', 'node-base', 'runtime', 'runtime-gpu', 'editor-lite'], { timeoutMs: 1_200_000 });
}

/**
 * The base server of a run: this machine's podman with a storage of the run's own, so the run's
 * containers are found and removed with the run; the images built in the machine's storage are used
 * read-only from there (no copy).
 */
function createLocalBaseHost(runDir: string, runId: string): LocalBaseHost {
  const hostId = `base-${runId}`;
  const dir = join(runDir, 'hosts', hostId);
  for (const sub of ['storage', 'run', 'tmp', 'data']) mkdirSync(join(dir, sub), { recursive: true });
  const env = { CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'), CONTAINERS_CONF: join(dir, 'containers.conf') };
  writeFileSync(env.CONTAINERS_STORAGE_CONF, storageConf(dir, '/var/lib/containers/storage'));
  writeFileSync(env.CONTAINERS_CONF, containersConf(dir));
  return { hostId, dir, dataDir: join(dir, 'data'), env };
}

async function destroyLocalBaseHost(h: LocalBaseHost): Promise<void> {
  await hostEnvShell(h)
    .run(['podman', 'rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125], timeoutMs: 60_000 })
    .catch(() => undefined);
}

/** An image as a `podman save` archive, cached by image id between runs (what an AMI bake would load). */
export async function imageArchive(image: string): Promise<string> {
  const id = (await local.run(['podman', 'image', 'inspect', '--format', '{{.Id}}', image])).stdout.trim();
  const cacheDir = join(testRunsRoot, 'cache');
  mkdirSync(cacheDir, { recursive: true });
  const archive = join(cacheDir, `${id}.tar`);
  if (!existsSync(archive)) {
    const tmp = `${archive}.${process.pid}.partial`;
    await local.run(['podman', 'save', '--quiet', '--output', tmp, image]);
    renameSync(tmp, archive);
  }
  return archive;
}

export interface RunningHarness {
  state: HarnessState;
  stateFile: string;
  teardown(): Promise<void>;
}

/** Starts the shared parts; a part that cannot start fails the run with a message naming it. */
export async function startHarness(opts: { hosts?: number; toolsDir?: string } = {}): Promise<RunningHarness> {
  const toolsDir = opts.toolsDir ?? process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir;
  requireContainerTools();
  for (const tool of ['nsenter', 'ip', 'ssh-keygen']) requireExecutable(tool);
  requireExecutable('/usr/sbin/sshd');
  const temporalCli = resolveTemporalCli({ explicit: process.env.TEMPORAL_CLI, toolsDir });
  resolveMotoServer({ toolsDir });

  await sweepDeadRuns();
  const runId = randomBytes(3).toString('hex');
  const runDir = join(testRunsRoot, runId);
  mkdirSync(runDir, { recursive: true, mode: 0o755 });
  writeFileSync(join(runDir, 'owner.json'), JSON.stringify(ownerRecord()));
  // Every process started from here on inherits the marker, so a killed run's servers can be found.
  process.env[runMarkerEnv] = runDir;

  const stops: (() => Promise<void>)[] = [];
  const hosts: NamespaceHostInfo[] = [];
  let network: TestNetwork | undefined;
  let baseHost: LocalBaseHost | undefined;
  const teardown = async () => {
    await Promise.allSettled([...hosts.map((h) => destroyNamespaceHost(h)), ...(baseHost ? [destroyLocalBaseHost(baseHost)] : [])]);
    if (network) await destroyTestNetwork(network).catch(() => undefined);
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    const left = describeLeftovers(await findLeftovers(runDir, runId));
    await removeLeftovers(runDir, runId);
    const still = describeLeftovers(await findLeftovers(runDir, runId));
    if (still.length > 0) throw new Error(`test run ${runId} left behind: ${still.join('; ')}`);
    if (left.length > 0) log.warn({ removed: left }, 'teardown removed leftovers');
  };

  try {
    const sshKeyPath = join(runDir, 'ssh', 'id_ed25519');
    mkdirSync(join(runDir, 'ssh'), { recursive: true, mode: 0o700 });
    await local.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `markco-test-${runId}`, '-f', sshKeyPath]);
    const authorizedKeys = join(runDir, 'ssh', 'authorized_keys');
    writeFileSync(authorizedKeys, readFileSync(`${sshKeyPath}.pub`), { mode: 0o600 });

    const [pgPort, temporalPort, uiPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const postgresReady = (async () => {
      const pg = await startEmbeddedPostgres({ dataDir: join(runDir, 'postgres', 'data'), port: pgPort, database: 'markco_template', log });
      stops.push(pg.stop);
      await migrateUp(pg.url, log);
      return { templateDatabase: 'markco_template', urlTemplate: pg.urlFor('{database}') };
    })();
    const temporalReady = (async () => {
      const t = await startTemporalDevServer({ cli: temporalCli, port: temporalPort, uiPort, dbFile: undefined, namespace: 'default', log });
      stops.push(t.stop);
      return { address: t.address, namespace: 'default', uiUrl: t.uiUrl ?? '' };
    })();
    const motoReady = (async () => {
      const m = await startMoto(toolsDir);
      stops.push(m.stop);
      return { endpoint: m.endpoint };
    })();
    const imagesReady = ensureImages();
    const hostsReady = (async () => {
      await imagesReady;
      baseHost = createLocalBaseHost(runDir, runId);
      const archive = await imageArchive(baseImage);
      network = await createTestNetwork(runId);
      const count = opts.hosts ?? 2;
      const made = await Promise.all(
        Array.from({ length: count }, (_, i) => createNamespaceHost({ net: network!, runDir, index: i + 1, authorizedKeys, imageArchives: [archive] }).then((h) => (hosts.push(h), h))),
      );
      return made.sort((a, b) => a.hostId.localeCompare(b.hostId));
    })();
    const bundleReady = writeWorkflowBundle(join(runDir, 'workflow-bundle.js'));

    const results = await Promise.allSettled([postgresReady, temporalReady, motoReady, hostsReady, bundleReady]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [postgres, temporal, moto, readyHosts, workflowBundlePath] = results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as [
      HarnessState['postgres'],
      HarnessState['temporal'],
      HarnessState['moto'],
      NamespaceHostInfo[],
      string,
    ];
    const ec2 = createEc2Client({ region: 'ca-central-1', endpoint: moto.endpoint, snapshotBucket: 'markco-test' }, { accessKeyId: 'markco-test', secretAccessKey: 'markco-test' });
    const cloud = await setupSimulatedCloud(ec2, network!, { endpoint: moto.endpoint }).finally(() => ec2.destroy());
    const state: HarnessState = {
      runId,
      runDir,
      postgres,
      temporal,
      moto,
      hosts: readyHosts,
      network: network!,
      sshKeyPath,
      workflowBundlePath,
      baseImage,
      baseHost: baseHost!,
      images: testImages,
      cloud: { ...cloud, authorizedKeysPath: authorizedKeys },
    };
    const stateFile = join(runDir, 'state.json');
    writeFileSync(stateFile, JSON.stringify(state, null, 2));
    return { state, stateFile, teardown };
  } catch (err) {
    await teardown().catch((e: unknown) => log.error({ err: e }, 'teardown after a failed start failed'));
    throw err;
  }
}
