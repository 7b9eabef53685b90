import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../infra/dev/embedded-postgres.js';
import { resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { waitFor } from '../../infra/dev/processes.js';
import { startTemporalDevServer, type TemporalDevServer } from '../../infra/dev/temporal-dev.js';
import { createPool, migrateUp } from '../../lib/db.js';
import { createLogger } from '../../lib/logger.js';
import { defaultToolsDir } from '../../lib/paths.js';
import { createStore } from '../../lib/store.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import { useHarness } from '../support/context.js';
import { freePort } from '../support/harness.js';
import { activityAttempts, entitySettled, startFaultStack, type FaultDatabase, type FaultStack } from '../support/faults.js';

/**
 * Issue 10 item 3: the servers the control plane stands on restart under it. This file runs a Temporal
 * dev server (SQLite file, so a restart keeps its state, as the harness's infra/dev/temporal-dev.ts runs
 * it) and an embedded PostgreSQL (infra/dev/embedded-postgres.ts) of its own, so it can restart them
 * without touching the other files' servers.
 *
 * - Temporal killed (SIGKILL) while a migration's EC2 host is being launched, and started again on the
 *   same file and port: the migration completes, x is 42, the books balance.
 * - PostgreSQL restarted (fast shutdown, start) while three logins and a migration are in flight: every
 *   one completes, the worker process that was running keeps running (its pool recovers), the test's
 *   own pool (made by lib/db.ts's createPool, as the edge's is) answers again, and the books balance.
 */
describe('faults: Temporal and PostgreSQL restarted under running operations', () => {
  const h = useHarness();
  const log = createLogger({ level: process.env.MARKCO_TEST_LOG_LEVEL ?? 'warn', name: 'faults-servers' });
  let pgServer: EmbeddedPostgresHandle;
  let pgPort: number;
  let temporalServer: TemporalDevServer;
  let temporalPort: number;
  let dir: string;
  let db: FaultDatabase;
  let s: FaultStack;
  let userId: string;

  const startTemporal = () =>
    startTemporalDevServer({
      cli: resolveTemporalCli({ explicit: process.env.TEMPORAL_CLI, toolsDir: process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir }),
      port: temporalPort,
      uiPort: undefined,
      dbFile: join(dir, 'temporal', 'temporal.db'),
      namespace: 'default',
      log,
    });
  const startPostgres = () => startEmbeddedPostgres({ dataDir: join(dir, 'postgres', 'data'), port: pgPort, database: 'markco', log });

  before(async () => {
    dir = join(h.state.runDir, 'faults-servers');
    [pgPort, temporalPort] = await Promise.all([freePort(), freePort()]);
    [pgServer, temporalServer] = await Promise.all([startPostgres(), startTemporal()]);
    await migrateUp(pgServer.url, log);
    const pool = createPool(pgServer.url, { max: 5, application: 'markco-test' });
    db = { url: pgServer.url, pool, store: createStore(pool), drop: () => pool.end() };
    const connection = await Connection.connect({ address: temporalServer.address });
    const temporal = { client: new Client({ connection, namespace: 'default' }), close: () => connection.close() };
    s = await startFaultStack(h, { name: 'faults-servers', db, temporal, temporalAddress: temporalServer.address });
    await s.startWorker();
    userId = await s.newUser('faults-servers@example.test');
    await (await s.ops.startLogin({ userId })).handle.result();
    await s.execute(userId, 'x = 42');
  });

  after(async () => {
    await s?.close();
    await s?.temporal.close();
    await db?.drop();
    await temporalServer?.stop();
    await pgServer?.stop();
  });

  test('Temporal killed while a migration launches its EC2 host, started again on its SQLite file: the migration completes', async (t) => {
    const { handle } = await s.ops.startMigration(userId, { target: 't3.small' });
    const outcome = handle.result().then(
      (r) => ({ ok: true as const, r: r as MigrateRuntimeResult }),
      (err: unknown) => ({ ok: false as const, err }),
    );
    // The provisionHost child has recorded the host and waits for the instance to boot.
    await waitFor('the target host to be launching', async () => {
      const r = await db.pool.query(`SELECT state FROM hosts WHERE kind = 'ec2' AND state IN ('provisioning', 'booting')`);
      if (r.rows.length === 0) throw new Error('no host being launched');
    }, { timeoutMs: 60_000, intervalMs: 50 });
    const pid = temporalServer.child.pid!;
    process.kill(-pid, 'SIGKILL');
    await new Promise<void>((resolve) => (temporalServer.child.exitCode !== null || temporalServer.child.signalCode !== null ? resolve() : temporalServer.child.once('exit', () => resolve())));
    const killedAt = Date.now();
    await sleep(3000);
    temporalServer = await startTemporal();
    t.diagnostic(`Temporal was down ${Date.now() - killedAt} ms`);
    const settled = await Promise.race([outcome, sleep(240_000, undefined, { ref: false }).then(() => ({ ok: false as const, err: new Error('no outcome within 4 minutes of the restart') }))]);
    if (!settled.ok) {
      const { lines } = await activityAttempts(s.temporal.client, handle.workflowId).catch(() => ({ lines: ['(no history)'] }));
      assert.fail(`the migration did not complete across the restart: ${(settled.err as Error).message}\n${lines.join('\n')}\nworker:\n${s.worker().tail()}`);
    }
    assert.equal(settled.r.toTier, 't3.small');
    assert.equal(s.workers.length, 1, 'the same worker process throughout');
    const x = await s.execute(userId, 'x');
    assert.equal(x.result, '42');
    const rows = await db.pool.query(`SELECT status FROM migrations WHERE user_id = $1`, [userId]);
    assert.deepEqual(rows.rows, [{ status: 'completed' }], 'one migration, completed');
    await s.balance([{ userId, state: 'running' }]);
  });

  test('PostgreSQL restarted while three logins and a migration run: all complete, the pools recover, the books balance', async (t) => {
    await entitySettled(s.temporal.client, userId);
    const worker = s.worker();
    let workerExit: unknown;
    void worker.exited.then((e) => (workerExit = e));
    const others = await Promise.all([1, 2, 3].map((i) => s.newUser(`faults-servers-${i}@example.test`)));
    const started = Date.now();
    const operations = [
      (async () => (await (await s.ops.startMigration(userId, { target: 'base' })).handle.result()) as MigrateRuntimeResult)(),
      ...others.map(async (u) => (await s.ops.startLogin({ userId: u })).handle.result()),
    ].map((p) =>
      p.then(
        (r) => ({ ok: true as const, r }),
        (err: unknown) => ({ ok: false as const, err }),
      ),
    );
    // Mid-flight: the migration is moving and the logins are starting containers.
    await waitFor('the migration to be past its plan', async () => {
      const r = await db.pool.query(`SELECT step FROM migrations WHERE user_id = $1 AND status = 'running'`, [userId]);
      if (!['prepare', 'home', 'checkpoint', 'restore'].includes(r.rows[0]?.step)) throw new Error(JSON.stringify(r.rows));
    }, { timeoutMs: 60_000, intervalMs: 20 });
    const busy = await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = 'markco' AND application_name = 'markco-worker'`);
    await pgServer.stop();
    const stoppedAt = Date.now();
    t.diagnostic(`PostgreSQL stopped ${stoppedAt - started} ms into the load, with ${busy.rows[0].n} worker connections open`);
    await sleep(2000);
    pgServer = await startPostgres();
    t.diagnostic(`PostgreSQL was down ${Date.now() - stoppedAt} ms`);

    const outcomes = await Promise.race([Promise.all(operations), sleep(300_000, undefined, { ref: false }).then(() => undefined)]);
    assert.ok(outcomes, 'every operation ended within 5 minutes of the restart');
    assert.equal(workerExit, undefined, `the worker process survived the restart:\n${worker.tail()}`);
    for (const [i, o] of outcomes.entries()) assert.ok(o.ok, `${i === 0 ? 'the migration' : `login ${i}`} completed: ${o.ok ? '' : String((o as { err: unknown }).err)}`);
    assert.equal(s.workers.length, 1, 'no worker had to be restarted');
    // The test's own pool (lib/db.ts createPool, as the edge's) lost its connections and answers again.
    assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);

    assert.equal((await s.execute(userId, 'x')).result, '42');
    for (const u of others) assert.equal((await s.execute(u, '6 * 7')).result, '42');
    const rows = await db.pool.query(`SELECT status FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
    assert.deepEqual(rows.rows.map((r) => r.status), ['completed', 'completed']);
    await s.balance([userId, ...others].map((u) => ({ userId: u, state: 'running' as const })));
  });
});
