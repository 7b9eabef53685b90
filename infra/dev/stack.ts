import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { LocalShell } from '../../activities/host-shell.js';
import { createEc2Client } from '../../lib/aws.js';
import { caddyFrontOptions } from '../../lib/caddy-config.js';
import { loadConfigOrExit, type Config } from '../../lib/config.js';
import { flightLocation } from '../../lib/flight-probe.js';
import { migrateUp } from '../../lib/db.js';
import { createLogger, type Logger } from '../../lib/logger.js';
import { repoRoot } from '../../lib/paths.js';
import { ensureReaperSchedule, ensureResourceMonitor, ensureSandboxExpirySchedule, reaperScheduleId, sandboxExpiryScheduleId } from '../../lib/schedules.js';
import { ensureSearchAttributes } from '../../lib/temporal.js';
import { workflowIds, type RegisterHostInput } from '../../workflows/contracts/index.js';
import type { registerHost } from '../../workflows/register-host.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded-postgres.js';
import { startMoto, type MotoServer } from './moto.js';
import { createTestNetwork, destroyTestNetwork, hostEnvShell, type TestNetwork } from './namespace-hosts.js';
import { MissingPrerequisiteError, requireContainerTools, requireExecutable, resolveMotoServer, resolveTemporalCli } from './prerequisites.js';
import { stopChild, waitFor } from './processes.js';
import { setupSimulatedCloud, startBootWatcher } from './simulated-cloud.js';
import { startTemporalDevServer, type TemporalDevServer } from './temporal-dev.js';

/**
 * The main command: the whole control plane on this machine with embedded defaults. PostgreSQL
 * (embedded unless DATABASE_URL), Temporal (dev server with Web UI unless TEMPORAL_ADDRESS), the worker,
 * the edge and the data service (Arrow Flight, flight/server.ts); this machine is the base host. With MARKCO_CLOUD=simulated also the EC2 emulator, a
 * network for its instances and the boot watcher that turns every running instance into a namespace
 * host. Ctrl-C stops everything it started, in reverse order.
 */

interface Service {
  name: string;
  entry: string;
  child?: ChildProcess;
  restarts: number;
  stopping: boolean;
  stopGraceMs: number;
}

function pidFileOf(config: Config): string {
  return join(config.dataDir, 'run', 'stack.json');
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Processes a killed stack left behind (worker, edge, Temporal) would hold ports: stop them first. */
async function stopLeftovers(config: Config, log: Logger): Promise<void> {
  const file = pidFileOf(config);
  if (!existsSync(file)) return;
  let recorded: { pid: number; marker: string }[] = [];
  try {
    recorded = JSON.parse(readFileSync(file, 'utf8')) as { pid: number; marker: string }[];
  } catch {
    /* unreadable: nothing to stop */
  }
  for (const { pid, marker } of recorded) {
    if (pid > 0 && cmdlineOf(pid).includes(marker)) {
      log.warn({ pid, marker }, 'stopping a process left running by an earlier stack');
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
  }
  rmSync(file, { force: true });
}

function ensureHostKey(path: string, log: Logger): void {
  if (existsSync(path)) return;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  execFileSync(requireExecutable('ssh-keygen'), ['-q', '-t', 'ed25519', '-N', '', '-C', 'markco-control-plane', '-f', path]);
  log.info({ path }, 'generated the ssh key the workers use to reach hosts');
}

/**
 * Names the simulated cloud's network after the data directory: a restart finds what its predecessor
 * left, and two stacks with data directories of their own never share one. `sim` and 4 hex digits keep
 * every name namespace-hosts.ts derives within IFNAMSIZ (bridge mktsimXXXX, links mktsimXXXXh254: 14 of
 * 15 characters), and the namespaces (mkt-simXXXX-<octet>) are never taken for a test run's (whose ids
 * are hex only) by the test sweeper.
 */
export function simulatedNetworkId(dataDir: string): string {
  return `sim${createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 4)}`;
}

/** Where the simulated cloud keeps its booted hosts' files and cloud.json (what it made, for operators). */
export function simulatedCloudDir(config: Config): string {
  return join(config.dataDir, 'simulated');
}

export interface RunningSimulatedCloud {
  moto: MotoServer;
  net: TestNetwork;
  /** What the worker and the edge get on top of the stack's environment. */
  env: Record<string, string>;
  subnetId: string;
  amiIds: Record<string, string>;
  stop(): Promise<void>;
}

const simShell = new LocalShell('simulated-cloud', { commandTimeoutMs: 60_000 });

function readOr(path: string, fallback = ''): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/**
 * What a simulated cloud killed without its shutdown (SIGKILL, a crash, a reboot) left: the booted hosts'
 * containers, sshd and namespaces, the bridge and its links, mounts under the hosts' directories. Only
 * names of this stack's network id and processes proven to be this stack's sshd are touched.
 */
export async function clearSimulatedLeftovers(runId: string, runDir: string, log: Logger): Promise<void> {
  const removed: string[] = [];
  const netnsList = async () =>
    (await simShell.run(['ip', 'netns', 'list'])).stdout
      .split('\n')
      .map((l) => l.split(/\s+/)[0] ?? '')
      .filter((n) => n.startsWith(`mkt-${runId}-`));
  const namespaces = new Set(await netnsList());
  const hostsDir = join(runDir, 'hosts');
  for (const hostId of existsSync(hostsDir) ? readdirSync(hostsDir) : []) {
    const dir = join(hostsDir, hostId);
    const env = { CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'), CONTAINERS_CONF: join(dir, 'containers.conf') };
    const sshdConfig = join(dir, 'ssh', 'sshd_config');
    const address = /^ListenAddress\s+(\S+)$/m.exec(readOr(sshdConfig))?.[1];
    const netns = address ? `mkt-${runId}-${address.split('.')[3]}` : undefined;
    if (existsSync(env.CONTAINERS_STORAGE_CONF)) {
      const inNs = netns && namespaces.has(netns) ? ['nsenter', `--net=/var/run/netns/${netns}`] : [];
      await hostEnvShell({ hostId, env })
        .run([...inNs, 'podman', 'rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125], timeoutMs: 60_000 })
        .catch((err: unknown) => log.warn({ hostId, err: (err as Error).message }, "removing an earlier simulated host's containers failed"));
    }
    // The pid file outlives a killed sshd: only a process still running this host's sshd_config is killed.
    const pid = Number(readOr(join(dir, 'ssh', 'sshd.pid')).trim());
    if (Number.isInteger(pid) && pid > 0 && readOr(`/proc/${pid}/cmdline`).replace(/\0/g, ' ').includes(sshdConfig)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    removed.push(`host ${hostId}`);
  }
  for (const netns of await netnsList()) {
    const pids = await simShell.run(['ip', 'netns', 'pids', netns], { okExitCodes: [0, 1] });
    for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await simShell.run(['ip', 'netns', 'del', netns], { okExitCodes: [0, 1] });
    removed.push(`network namespace ${netns}`);
  }
  const ours = new RegExp(`^mkt${runId}([hn]\\d+)?$`);
  const links = (await simShell.run(['ip', '-o', 'link', 'show'])).stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
    .filter((n) => ours.test(n));
  // The bridge last: its links go with it, but a veth left without a namespace would not.
  for (const link of links.sort((a, b) => b.length - a.length)) {
    await simShell.run(['ip', 'link', 'del', link], { okExitCodes: [0, 1] });
    removed.push(`network link ${link}`);
  }
  if (existsSync(hostsDir)) {
    const mounts = readOr('/proc/self/mountinfo')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${hostsDir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) await simShell.run(['umount', '--lazy', m], { okExitCodes: [0, 32] });
    rmSync(hostsDir, { recursive: true, force: true });
  }
  if (removed.length > 0) log.warn({ removed }, 'removed what an earlier simulated cloud of this data directory left');
}

/**
 * MARKCO_CLOUD=simulated: the EC2 emulator (moto, the tests' own), a bridge on a free 10.77.N.0/24 with
 * the emulator's VPC, subnet, security group and AMIs for it (setupSimulatedCloud), and the boot watcher
 * that boots every running instance of this deployment as a namespace host at its private IP. Returns the
 * environment that points the worker and the edge at it. A part that fails takes down what was made.
 */
async function startSimulatedCloud(config: Config, log: Logger, onMoto: (moto: MotoServer) => void): Promise<RunningSimulatedCloud> {
  const runId = simulatedNetworkId(config.dataDir);
  const runDir = simulatedCloudDir(config);
  const stateFile = join(runDir, 'cloud.json');
  mkdirSync(runDir, { recursive: true, mode: 0o755 });
  const undo: (() => Promise<void>)[] = [];
  const undoAll = async () => {
    for (const step of undo.reverse()) await step().catch((err: unknown) => log.warn({ err }, 'stopping part of the simulated cloud failed'));
    undo.length = 0;
  };
  try {
    const [moto, cleared] = await Promise.allSettled([
      startMoto(config.toolsDir).then((m) => {
        undo.push(m.stop);
        onMoto(m);
        return m;
      }),
      clearSimulatedLeftovers(runId, runDir, log),
    ]);
    if (moto.status === 'rejected') throw moto.reason;
    if (cleared.status === 'rejected') throw cleared.reason;

    const net = await createTestNetwork(runId);
    undo.push(() => destroyTestNetwork(net));
    // Nothing leaves this machine: the emulator takes any credentials, and real ones are not handed to it.
    const credentials = { accessKeyId: 'markco-simulated', secretAccessKey: 'markco-simulated' };
    const ec2 = createEc2Client({ ...config.aws, endpoint: moto.value.endpoint }, credentials);
    undo.push(async () => ec2.destroy());
    const cloud = await setupSimulatedCloud(ec2, net, { endpoint: moto.value.endpoint });

    const authorizedKeysPath = `${config.cloud.sshKeyPath}.pub`;
    if (!existsSync(authorizedKeysPath)) {
      writeFileSync(authorizedKeysPath, execFileSync(requireExecutable('ssh-keygen'), ['-y', '-f', config.cloud.sshKeyPath], { encoding: 'utf8' }));
    }
    const watcher = startBootWatcher({
      ec2,
      net,
      runDir,
      authorizedKeysPath,
      deploymentId: config.cloud.deploymentId,
      log: log.child({ part: 'simulated-cloud' }),
    });
    undo.push(() => watcher.stop());

    const state = {
      ec2Endpoint: moto.value.endpoint,
      region: config.aws.region,
      network: { bridge: net.bridge, subnet: `${net.prefix}.0/24`, gateway: net.gateway, instancesFrom: `${net.prefix}.64` },
      vpcId: cloud.vpcId,
      subnetId: cloud.subnetId,
      securityGroupId: cloud.securityGroupId,
      amiIds: cloud.amiIds,
      deploymentId: config.cloud.deploymentId,
      hostsDir: join(runDir, 'hosts'),
    };
    writeFileSync(stateFile, `${JSON.stringify(state, null, 2)}\n`);
    undo.push(async () => rmSync(stateFile, { force: true }));
    log.info(state, 'simulated cloud ready: every running instance of this deployment boots as a namespace host at its private IP');
    return {
      moto: moto.value,
      net,
      env: {
        ...cloud.env,
        AWS_ENDPOINT_URL: moto.value.endpoint,
        AWS_ACCESS_KEY_ID: credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
        // Runtimes on the simulated hosts reach the data service at this machine's side of the bridge.
        ...(config.flight.runtimeHost !== null && config.flight.hostsHost === null ? { MARKCO_FLIGHT_HOSTS_HOST: net.gateway } : {}),
      },
      subnetId: cloud.subnetId,
      amiIds: cloud.amiIds,
      stop: async () => {
        // The watcher destroys the hosts it booted (their containers, sshd, namespaces), then the bridge goes and the emulator stops.
        await undoAll();
        log.info({ network: net.bridge }, 'simulated cloud stopped');
      },
    };
  } catch (err) {
    await undoAll();
    throw err;
  }
}

/** The reaper's schedule in every mode (without a cloud its runs find nothing to do). */
export async function ensureSchedules(config: Config, address: string, log: Logger): Promise<void> {
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace });
    const { created } = await ensureReaperSchedule(client, config.temporal.taskQueue);
    log.info({ schedule: reaperScheduleId, created, taskQueue: config.temporal.taskQueue }, created ? 'reaper schedule created' : 'reaper schedule up to date');
    const expiry = await ensureSandboxExpirySchedule(client, config.temporal.taskQueue);
    log.info({ schedule: sandboxExpiryScheduleId, created: expiry.created }, expiry.created ? 'sandbox expiry schedule created' : 'sandbox expiry schedule up to date');
    const monitor = await ensureResourceMonitor(client, config.temporal.taskQueue, config.monitor);
    log.info({ workflowId: 'markco-monitor', started: monitor.started, ...config.monitor }, monitor.started ? 'resource monitor started' : 'resource monitor already running');
  } finally {
    await connection.close();
  }
}

/** What an operator types to watch a migration on the simulated cloud, logged once everything is up. */
function migrationWalkthrough(config: Config, edgeUrl: string, temporalUi: string | undefined): string {
  const ui = temporalUi
    ? `${temporalUi}/namespaces/${config.temporal.namespace}/workflows?query=${encodeURIComponent('MarkcoOperation="migrate"')}`
    : 'the Temporal Web UI of TEMPORAL_ADDRESS, search MarkcoOperation="migrate"';
  return [
    'simulated cloud: to watch a migration end to end',
    `  1. sign in (MARKCO_DEV_LOGIN=1${config.http.devLogin ? '' : ', not set now'}): curl -s -X POST ${edgeUrl}/auth/dev/login -H 'content-type: application/json' -d '{"email":"me@example.com"}'   (answers user.id and the login's operation_id)`,
    `  2. wait for the runtime: curl -s -H "Authorization: Bearer $MARKCO_ADMIN_TOKEN" '${edgeUrl}/api/operations/<operation_id>?wait=120'`,
    `  3. migrate it to an EC2 tier (MARKCO_ADMIN_TOKEN${config.http.adminToken ? '' : ', not set now'}): curl -s -X POST -H "Authorization: Bearer $MARKCO_ADMIN_TOKEN" -H 'content-type: application/json' ${edgeUrl}/api/runtimes/<userId>/migrate -d '{"target_type":"t3.small"}'`,
    `  4. watch it: ${ui}   (GET ${edgeUrl}/api/runtimes/<userId> names the new host)`,
  ].join('\n');
}

export async function runStack(config: Config, log: Logger): Promise<void> {
  requireContainerTools();
  const simulated = config.cloud.provider === 'simulated';
  if (simulated) {
    for (const tool of ['ip', 'nsenter', 'umount']) requireExecutable(tool);
    requireExecutable('/usr/sbin/sshd', undefined, 'install openssh-server (infra/dev/bootstrap.sh does)');
    resolveMotoServer({ toolsDir: config.toolsDir });
  }
  const temporalCli = config.temporal.address ? undefined : resolveTemporalCli({ explicit: config.temporal.cli, toolsDir: config.toolsDir });
  // The edge loads Caddy's config when it starts (api/server.ts): a front that cannot work stops the stack now, not the edge in a loop.
  if (config.http.caddyAdminUrl) caddyFrontOptions(config, config.http.caddyAdminUrl);
  mkdirSync(join(config.dataDir, 'run'), { recursive: true, mode: 0o755 });
  await stopLeftovers(config, log);
  ensureHostKey(config.hosts.sshKeyPath, log);

  const env: NodeJS.ProcessEnv = { ...process.env };
  let postgres: EmbeddedPostgresHandle | undefined;
  let temporal: TemporalDevServer | undefined;
  let cloud: RunningSimulatedCloud | undefined;
  let cloudStarting: Promise<unknown> | undefined;
  const extraPids: { pid: number; marker: string }[] = [];
  const services: Service[] = [
    { name: 'worker', entry: join(repoRoot, 'workers', 'worker.ts'), restarts: 0, stopping: false, stopGraceMs: 40_000 },
    { name: 'edge', entry: join(repoRoot, 'api', 'server.ts'), restarts: 0, stopping: false, stopGraceMs: 15_000 },
    // The data service (Arrow Flight over DuckDB): datasets from MARKCO_DATASETS_DIR, edge sessions from PostgreSQL.
    { name: 'flight', entry: join(repoRoot, 'flight', 'server.ts'), restarts: 0, stopping: false, stopGraceMs: 10_000 },
  ];
  let shuttingDown = false;

  const recordPids = () => {
    const pids = [
      ...services.flatMap((s) => (s.child?.pid ? [{ pid: s.child.pid, marker: s.entry }] : [])),
      ...(temporal?.child.pid ? [{ pid: temporal.child.pid, marker: 'start-dev' }] : []),
      ...extraPids,
    ];
    writeFileSync(pidFileOf(config), JSON.stringify(pids));
  };

  const startService = (svc: Service) => {
    // Own process group: the terminal's Ctrl-C reaches only the stack, which stops services in order.
    const child = spawn(process.execPath, ['--import', 'tsx', svc.entry], { env, stdio: ['ignore', 'inherit', 'inherit'], detached: true, cwd: repoRoot });
    svc.child = child;
    recordPids();
    child.on('exit', (code, signal) => {
      if (svc.stopping || shuttingDown) return;
      const delay = Math.min(30_000, 1000 * 2 ** Math.min(svc.restarts, 5));
      svc.restarts++;
      log.error({ service: svc.name, code, signal, restartInMs: delay }, 'service exited; restarting');
      setTimeout(() => {
        if (!shuttingDown) startService(svc);
      }, delay).unref();
    });
  };

  const shutdown = async () => {
    shuttingDown = true;
    for (const svc of [...services].reverse()) {
      svc.stopping = true;
      if (svc.child) await stopChild(svc.child, svc.stopGraceMs);
    }
    await cloudStarting?.catch(() => undefined);
    await cloud?.stop();
    await temporal?.stop();
    await postgres?.stop();
    rmSync(pidFileOf(config), { force: true });
  };

  let signals = 0;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        log.warn('second interrupt: killing everything now');
        for (const svc of services) svc.child?.pid && process.kill(-svc.child.pid, 'SIGKILL');
        if (temporal?.child.pid) process.kill(-temporal.child.pid, 'SIGKILL');
        try {
          if (cloud?.moto.child.pid) process.kill(-cloud.moto.child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
        // The simulated hosts and their network stay: the next start removes them.
        process.exit(130);
      }
      log.info({ signal: sig }, 'stopping the stack (press Ctrl-C again to kill it)');
      shutdown().then(resolve, (err) => {
        log.error({ err }, 'shutdown failed');
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });

  try {
    if (simulated) {
      // Alongside PostgreSQL and Temporal: the emulator takes a few seconds to start.
      cloudStarting = startSimulatedCloud(config, log, (moto) => {
        if (moto.child.pid) extraPids.push({ pid: moto.child.pid, marker: 'moto_server' });
        recordPids();
      }).then((c) => {
        cloud = c;
      });
      cloudStarting.catch(() => undefined);
    }
    if (!config.database.url) {
      postgres = await startEmbeddedPostgres({ dataDir: config.database.embeddedDir, port: config.database.embeddedPort, database: 'markco', log });
      env.DATABASE_URL = postgres.url;
    }
    await migrateUp(env.DATABASE_URL!, log);

    if (!config.temporal.address) {
      temporal = await startTemporalDevServer({
        cli: temporalCli!,
        port: config.temporal.devPort,
        uiPort: config.temporal.uiPort,
        dbFile: config.temporal.devDbFile,
        namespace: config.temporal.namespace,
        log,
      });
      env.TEMPORAL_ADDRESS = temporal.address;
      recordPids();
    } else {
      const connection = await Connection.connect({ address: config.temporal.address });
      await ensureSearchAttributes(connection, config.temporal.namespace).finally(() => connection.close());
    }
    await ensureSchedules(config, env.TEMPORAL_ADDRESS!, log);

    if (cloudStarting) {
      await cloudStarting;
      // The worker launches into the emulator and reaches the booted hosts; no real AWS credentials go along.
      delete env.AWS_SESSION_TOKEN;
      delete env.AWS_PROFILE;
      Object.assign(env, cloud!.env);
    }

    // A Ctrl-C while the parts above came up has already stopped them: start nothing more.
    if (!shuttingDown) for (const svc of services) startService(svc);
    const edgeHost = config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host;
    const healthUrl = `http://${edgeHost}:${config.http.port}/api/health`;
    await waitFor(
      'the edge and the worker',
      async () => {
        if (shuttingDown) return;
        const res = await fetch(healthUrl, { signal: AbortSignal.timeout(5000) });
        if (res.status !== 200) throw new Error(`GET /api/health answered ${res.status}: ${await res.text()}`);
      },
      { timeoutMs: 120_000, intervalMs: 500 },
    );
    if (!shuttingDown) await registerBaseHost(config, env.TEMPORAL_ADDRESS!, log);
    if (!shuttingDown) {
      log.info(
        {
          edge: `http://${config.http.host}:${config.http.port}`,
          health: healthUrl,
          flight: flightLocation(config.http.host, config.flight.port),
          datasets: config.flight.datasetsDir,
          temporalUi: temporal?.uiUrl ?? '(external Temporal)',
          temporal: env.TEMPORAL_ADDRESS,
          database: postgres ? `embedded, ${postgres.dataDir}` : 'DATABASE_URL',
          cloud: config.cloud.provider,
          ...(config.http.caddyAdminUrl ? { caddy: config.http.caddyAdminUrl, front: config.http.publicUrl } : {}),
          ...(cloud ? { ec2Endpoint: cloud.moto.endpoint, simulatedNetwork: `${cloud.net.bridge} ${cloud.net.prefix}.0/24`, simulatedCloud: join(simulatedCloudDir(config), 'cloud.json') } : {}),
        },
        'markco is up; Ctrl-C stops it',
      );
      if (cloud) log.info(migrationWalkthrough(config, `http://${edgeHost}:${config.http.port}`, temporal?.uiUrl));
    }
  } catch (err) {
    if (!shuttingDown) {
      await shutdown();
      throw err;
    }
  }
  await stopped;
  log.info('stack stopped');
}

/** This machine is the base host: register it through the registerHost workflow, like any other host. */
export async function registerBaseHost(config: Config, address: string, log: Logger): Promise<void> {
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace });
    const input: RegisterHostInput = { hostId: config.hosts.baseHostId, kind: 'base', address: config.hosts.baseHostAddress };
    const result = await client.workflow.execute<typeof registerHost>('registerHost', {
      taskQueue: config.temporal.taskQueue,
      workflowId: workflowIds.registerHost(input.hostId),
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowExecutionTimeout: '5m',
    });
    log.info({ host: result.hostId, facts: result.facts }, 'base host registered');
  } catch (err) {
    log.error({ err }, 'registering the base host failed; see the registerHost workflow in the Temporal Web UI');
  } finally {
    await connection.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const config = loadConfigOrExit();
  const log = createLogger({ level: config.logLevel, name: 'stack' });
  try {
    await runStack(config, log);
    await sleep(10);
    process.exit(0);
  } catch (err) {
    if (err instanceof MissingPrerequisiteError) console.error(err.message);
    else log.fatal({ err }, 'the stack failed to start');
    process.exit(1);
  }
}
