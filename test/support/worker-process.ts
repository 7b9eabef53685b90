import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../../infra/dev/processes.js';
import { repoRoot } from '../../lib/paths.js';
import { emulatorCredentials, testEnvironment } from './context.js';
import type { HarnessState } from './harness.js';

/**
 * The worker as production runs it: `workers/worker.ts` in a process of its own, configured only through
 * its environment (lib/config.ts). Tests that kill a worker mid-activity use it; the in-process
 * startTestWorker cannot die without taking the test with it.
 */
export interface WorkerProcess {
  pid: number;
  /** Where its stdout and stderr go (pino JSON lines). */
  logPath: string;
  /** The last lines it printed, for failure messages. */
  tail(): string;
  /** Resolves when the worker logged that it polls its task queue; rejects if it exits first. */
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Signals the worker's whole process group (the worker and whatever it started without a group of its own). */
  killGroup(signal: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after graceMs; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
  /**
   * Calls `listener` synchronously with every whole line the worker prints (its pino JSON), as it
   * arrives: a test can kill the worker in the same tick as the line it waits for. Returns the unsubscriber.
   */
  onLine(listener: (line: string) => void): () => void;
}

/**
 * The environment that makes a worker process the test's worker: the test's database and task queue,
 * the run's Temporal, bundle, ssh key, base-host storage and simulated cloud (instances tagged with
 * `deploymentId`).
 */
export function testWorkerEnv(state: HarnessState, opts: { databaseUrl: string; taskQueue: string; deploymentId: string; dataDir: string }): Record<string, string> {
  const environment = testEnvironment(state);
  return {
    LOG_LEVEL: 'info',
    MARKCO_DATA_DIR: opts.dataDir,
    DATABASE_URL: opts.databaseUrl,
    TEMPORAL_ADDRESS: state.temporal.address,
    TEMPORAL_NAMESPACE: state.temporal.namespace,
    TEMPORAL_TASK_QUEUE: opts.taskQueue,
    MARKCO_WORKFLOW_BUNDLE: state.workflowBundlePath,
    MARKCO_BASE_HOST_ID: environment.baseHostId,
    MARKCO_BASE_HOST_ADDRESS: '127.0.0.1',
    MARKCO_USERS_DIR: environment.usersDir,
    MARKCO_RUNTIME_IMAGE: environment.runtimeImage,
    MARKCO_EDITOR_IMAGE: environment.editorImage,
    MARKCO_IMPORT_ALLOW_PRIVATE: environment.allowPrivateImports ? '1' : '0',
    MARKCO_SSH_KEY_PATH: state.sshKeyPath,
    MARKCO_SSH_CONNECT_TIMEOUT_MS: '5000',
    MARKCO_TIER_LADDER: '',
    // podman on "base" is this machine's podman on the run's own storage.
    ...state.baseHost.env,
    // The simulated cloud: MARKCO_CLOUD, AWS_ENDPOINT_URL, subnet, security group, AMIs, ssh user.
    ...state.cloud.env,
    AWS_ENDPOINT_URL: state.moto.endpoint,
    AWS_REGION: 'ca-central-1',
    AWS_ACCESS_KEY_ID: emulatorCredentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: emulatorCredentials.secretAccessKey,
    MARKCO_DEPLOYMENT_ID: opts.deploymentId,
  };
}

/** Starts `node --import tsx workers/worker.ts` detached (a process group of its own) with `env` over this process's. */
export function startWorkerProcess(env: Record<string, string>, opts: { logDir: string; name: string }): WorkerProcess {
  mkdirSync(opts.logDir, { recursive: true });
  const logPath = join(opts.logDir, `${opts.name}.log`);
  const log = createWriteStream(logPath, { flags: 'a' });
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'workers', 'worker.ts')], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (!child.pid) throw new Error('the worker process did not start');
  const pid = child.pid;
  let recent = '';
  let polling = false;
  const listeners = new Set<(line: string) => void>();
  const partial = { stdout: '', stderr: '' };
  const onData = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    log.write(chunk);
    const text = chunk.toString('utf8');
    recent = (recent + text).slice(-16_000);
    if (!polling && recent.includes('"msg":"worker polling"')) polling = true;
    if (listeners.size === 0) {
      partial[stream] = '';
      return;
    }
    const lines = (partial[stream] + text).split('\n');
    partial[stream] = lines.pop() ?? '';
    for (const line of lines) for (const l of listeners) l(line);
  };
  child.stdout!.on('data', onData('stdout'));
  child.stderr!.on('data', onData('stderr'));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      log.end();
      resolve({ code, signal });
    }),
  );
  const tail = () => recent.split('\n').slice(-40).join('\n');
  const ready = waitFor(
    `worker process ${opts.name} to poll its task queue`,
    async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the worker exited (${child.exitCode ?? child.signalCode}):\n${tail()}`);
      if (!polling) throw new Error(`not polling yet:\n${tail()}`);
    },
    { timeoutMs: 90_000, intervalMs: 100, fatal: () => child.exitCode !== null || child.signalCode !== null },
  );
  ready.catch(() => undefined);
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  const groupAlive = () => {
    try {
      process.kill(-pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    pid,
    logPath,
    tail,
    ready,
    exited,
    killGroup,
    onLine(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup('SIGTERM');
      const timer = setTimeout(() => killGroup('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
      // What it started in its own group may outlive it.
      if (groupAlive()) killGroup('SIGKILL');
    },
  };
}
