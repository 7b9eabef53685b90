import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection } from '@temporalio/client';
import { ConfigError, loadConfig, type Config } from '../../lib/config.js';
import { migrateUp } from '../../lib/db.js';
import { createLogger, type Logger } from '../../lib/logger.js';
import { repoRoot } from '../../lib/paths.js';
import { ensureSearchAttributes } from '../../lib/temporal.js';
import { workflowIds, type RegisterHostInput } from '../../workflows/contracts/index.js';
import type { registerHost } from '../../workflows/register-host.js';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from './embedded-postgres.js';
import { MissingPrerequisiteError, requireContainerTools, requireExecutable, resolveTemporalCli } from './prerequisites.js';
import { stopChild, waitFor } from './processes.js';
import { startTemporalDevServer, type TemporalDevServer } from './temporal-dev.js';

/**
 * The main command: the whole control plane on this machine with embedded defaults. PostgreSQL
 * (embedded unless DATABASE_URL), Temporal (dev server with Web UI unless TEMPORAL_ADDRESS), the worker
 * and the edge; this machine is the base host. Ctrl-C stops everything it started, in reverse order.
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

export async function runStack(config: Config, log: Logger): Promise<void> {
  requireContainerTools();
  const temporalCli = config.temporal.address ? undefined : resolveTemporalCli({ explicit: config.temporal.cli, toolsDir: config.toolsDir });
  mkdirSync(join(config.dataDir, 'run'), { recursive: true, mode: 0o755 });
  await stopLeftovers(config, log);
  ensureHostKey(config.hosts.sshKeyPath, log);

  const env: NodeJS.ProcessEnv = { ...process.env };
  let postgres: EmbeddedPostgresHandle | undefined;
  let temporal: TemporalDevServer | undefined;
  const services: Service[] = [
    { name: 'worker', entry: join(repoRoot, 'workers', 'worker.ts'), restarts: 0, stopping: false, stopGraceMs: 40_000 },
    { name: 'edge', entry: join(repoRoot, 'api', 'server.ts'), restarts: 0, stopping: false, stopGraceMs: 15_000 },
  ];
  let shuttingDown = false;

  const recordPids = () => {
    const pids = [
      ...services.flatMap((s) => (s.child?.pid ? [{ pid: s.child.pid, marker: s.entry }] : [])),
      ...(temporal?.child.pid ? [{ pid: temporal.child.pid, marker: 'start-dev' }] : []),
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

    for (const svc of services) startService(svc);
    const healthUrl = `http://${config.http.host === '0.0.0.0' ? '127.0.0.1' : config.http.host}:${config.http.port}/api/health`;
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
          temporalUi: temporal?.uiUrl ?? '(external Temporal)',
          temporal: env.TEMPORAL_ADDRESS,
          database: postgres ? `embedded, ${postgres.dataDir}` : 'DATABASE_URL',
        },
        'markco is up; Ctrl-C stops it',
      );
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
async function registerBaseHost(config: Config, address: string, log: Logger): Promise<void> {
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
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : String(err));
    process.exit(2);
  }
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
