import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { runner } from 'node-pg-migrate';
import { migrateUp } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { migrationsDir } from '../../lib/paths.js';
import { freshDatabase, useHarness, type TestDatabase } from '../support/context.js';

const log = createLogger({ level: 'silent', name: 'test' });

describe('database migrations', () => {
  const h = useHarness();
  let db: TestDatabase;
  before(async () => {
    db = await freshDatabase(h.state, { empty: true });
  });
  after(() => db.drop());

  test('all migrations apply to an empty database, and a second run applies none', async () => {
    const files = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
    assert.deepEqual(await migrateUp(db.url, log), files);
    assert.deepEqual(await migrateUp(db.url, log), []);
    const tables = await db.pool.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`);
    for (const t of ['users', 'sessions', 'invites', 'hosts', 'runtimes', 'editors', 'snapshots', 'migrations', 'events']) {
      assert.ok(tables.rows.some((r) => r.table_name === t), `table ${t} exists`);
    }
  });

  test('runtimes, snapshots and migrations reference users and hosts (the seeds had no such keys)', async () => {
    await assert.rejects(
      db.pool.query(`INSERT INTO runtimes (user_id, container_name, memory_limit_bytes, cpu_limit, image) VALUES (gen_random_uuid(), 'rt-x', 1, 1, 'img')`),
      /runtimes_user_id_fkey/,
    );
    const user = await db.pool.query<{ id: string }>(`INSERT INTO users (email, username) VALUES ('a@example.com', 'alice') RETURNING id`);
    const userId = user.rows[0]!.id;
    await assert.rejects(
      db.pool.query(`INSERT INTO runtimes (user_id, container_name, host_id, memory_limit_bytes, cpu_limit, image) VALUES ($1, 'rt-x', 'no-such-host', 1, 1, 'img')`, [userId]),
      /runtimes_host_id_fkey/,
    );
    await db.pool.query(`INSERT INTO hosts (id, kind, address, state) VALUES ('base', 'base', '127.0.0.1', 'ready')`);
    await db.pool.query(`INSERT INTO runtimes (user_id, container_name, host_id, state, memory_limit_bytes, cpu_limit, image) VALUES ($1, 'rt-a', 'base', 'running', 268435456, 0.5, 'img')`, [userId]);
    await assert.rejects(
      db.pool.query(`INSERT INTO runtimes (user_id, container_name, host_id, state, memory_limit_bytes, cpu_limit, image) VALUES ($1, 'rt-b', 'base', 'running', 268435456, 0.5, 'img')`, [userId]),
      /runtimes_one_live_per_user/,
      'one live runtime per user',
    );
    await db.pool.query(`INSERT INTO sessions (user_id, token_hash, expires_at) VALUES ($1, sha256('t'::bytea), now() + interval '1 day')`, [userId]);
    await db.pool.query('DELETE FROM users WHERE id = $1', [userId]);
    const left = await db.pool.query(`SELECT (SELECT count(*) FROM sessions)::int AS s, (SELECT count(*) FROM runtimes)::int AS r`);
    assert.deepEqual(left.rows[0], { s: 0, r: 0 }, "deleting a user removes the user's sessions and runtimes");
  });

  test('tokens can only be stored as 32-byte hashes', async () => {
    const user = await db.pool.query<{ id: string }>(`INSERT INTO users (email, username) VALUES ('b@example.com', 'bob') RETURNING id`);
    await assert.rejects(
      db.pool.query(`INSERT INTO sessions (user_id, token_hash, expires_at) VALUES ($1, 'plain-token'::bytea, now())`, [user.rows[0]!.id]),
      /sessions_token_hash_check/,
    );
  });

  test('every migration can be rolled back and applied again', async () => {
    const down = await runner({ databaseUrl: db.url, dir: migrationsDir, direction: 'down', count: Infinity, migrationsTable: 'pgmigrations', logger: { info: () => undefined, warn: () => undefined, error: () => undefined } });
    assert.ok(down.length > 0);
    const tables = await db.pool.query(`SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'pgmigrations'`);
    assert.equal(tables.rows[0].n, 0);
    assert.equal((await migrateUp(db.url, log)).length, down.length);
  });
});
