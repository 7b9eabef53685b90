import pg from 'pg';
import { runner } from 'node-pg-migrate';
import type { Logger } from './logger.js';
import { migrationsDir } from './paths.js';

export type Pool = pg.Pool;

export function createPool(databaseUrl: string, opts: { max?: number; application?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: opts.max ?? 10,
    application_name: opts.application ?? 'markco',
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle connection that PostgreSQL ends (a restart, a failover) is reported as the pool's 'error';
  // unheard, it would crash the edge or the worker. The pool has dropped that client; the next query connects anew.
  pool.on('error', () => undefined);
  return pool;
}

/** Applies every pending migration under infra/db/migrations; safe to run from several processes at once. */
export async function migrateUp(databaseUrl: string, log: Logger): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    checkOrder: true,
    singleTransaction: true,
    advisoryLockMode: 'wait',
    logger: {
      debug: (msg: string) => log.debug(msg),
      info: (msg: string) => log.debug(msg),
      warn: (msg: string) => log.warn(msg),
      error: (msg: string) => log.error(msg),
    },
  });
  const names = applied.map((m) => m.name);
  if (names.length > 0) log.info({ migrations: names }, 'database migrations applied');
  return names;
}

/** Answers whether the database accepts queries, within a short time. */
export async function pingDatabase(pool: pg.Pool, timeoutMs = 2000): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query(`SET statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
    await client.query('SELECT 1');
  } finally {
    client.release();
  }
}

/** Runs `fn` in one transaction on one connection: committed if it resolves, rolled back if it throws. */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A connection whose ROLLBACK failed is in an unknown state: it is destroyed, not returned to the pool.
  let broken = false;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}
