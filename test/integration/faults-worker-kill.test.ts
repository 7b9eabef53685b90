import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { decodeOperationId } from '../../lib/operations.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import { workflowIds } from '../../workflows/contracts/operations.js';
import { freshDatabase, temporalClient, useHarness, type TestDatabase } from '../support/context.js';
import { activitiesOf, activityAttempts, entitySettled, startFaultStack, type FaultStack } from '../support/faults.js';

/**
 * Issue 10 item 3: the worker killed at every activity boundary of migrateRuntime and of returnRuntime.
 *
 * The boundary is the moment an activity starts on the worker: the server has handed the attempt to
 * the worker, which dies before running it (the worker's test-only hook, MARKCO_TEST_STOP_AT_ACTIVITY_FILE
 * in workers/worker.ts, stops the process as that activity's first attempt begins; the test then
 * SIGKILLs its process group). The attempt is lost, the server only learns of it from the activity's
 * own timeout, and a new worker process, started at once, must run the retry and everything after it. The activities are those a real run of each workflow scheduled (read from its
 * history, so a new activity is covered without editing this file), in both directions of a migration
 * (base -> t3.small launches an instance, t3.small -> base terminates it).
 *
 * After each: the operation completed once (the killed activity's history shows attempt 1 lost and a
 * later one succeeding), x is 42 in the same kernel, and the books balance (assertBooksBalance: the
 * reaper's dry run, containers on every host, instances, port leases, reservations).
 *
 * Each kill costs the killed activity's timeout (30 s for database steps and heartbeating ones, 2 min
 * for host commands and post-commit cleanup). By default a representative set runs (about 5 minutes):
 * the commit of a migration to EC2, the health wait after the transfer back to base, and the restore
 * and the commit of a return. MARKCO_FAULTS_FULL=1 runs every activity of both workflows (about 20 minutes).
 */
const full = process.env.MARKCO_FAULTS_FULL === '1';
const representative = {
  up: ['completeMigration'],
  down: ['waitForRuntime'],
  return: ['restoreSnapshotOnHost', 'commitReturn'],
};

describe('faults: the worker killed as each activity of migrateRuntime and returnRuntime starts', () => {
  const h = useHarness();
  let db: TestDatabase;
  let s: FaultStack;
  let userId: string;
  let stopFile: string;
  let before42 = 0;
  const lists: { up: string[]; down: string[]; return: string[] } = { up: [], down: [], return: [] };

  before(async () => {
    db = await freshDatabase(h.state);
    const temporal = await temporalClient(h.state);
    stopFile = join(h.state.runDir, 'faults-kill-stop-at');
    writeFileSync(stopFile, '');
    s = await startFaultStack(h, { name: 'faults-kill', db, temporal, env: { MARKCO_TEST_STOP_AT_ACTIVITY_FILE: stopFile } });
    await s.startWorker();
    userId = await s.newUser('faults-kill@example.test');
    await (await s.ops.startLogin({ userId })).handle.result();
    await s.execute(userId, 'x = 42');
  });

  after(async () => {
    await s?.close();
    await s?.temporal.close();
    await db?.drop();
  });

  const where = async () => (await db.store.runtimes.live(userId))!;
  const migrate = async (target: string) => (await (await s.ops.startMigration(userId, { target })).handle.result()) as MigrateRuntimeResult;
  const checkX = async () => {
    const x = await s.execute(userId, 'x');
    assert.equal(x.result, '42', 'x survived');
    assert.ok(x.executionCount > before42, `the same kernel: its execution count went on (${before42} -> ${x.executionCount})`);
    before42 = x.executionCount;
  };

  /**
   * Kills the worker as `activity` of a `workflowType` run starts (its first attempt), starts a new
   * worker, and answers the operation's outcome.
   */
  async function killAt<T>(t: TestContext, workflowType: string, activity: string, start: () => Promise<{ outcome: Promise<T> }>): Promise<T> {
    const w = s.worker();
    let killedAt = 0;
    const off = w.onLine((line) => {
      if (killedAt || !line.includes('"stopped at activity"')) return;
      const e = JSON.parse(line) as { activityType?: string; workflowType?: string };
      assert.deepEqual([e.workflowType, e.activityType], [workflowType, activity]);
      w.killGroup('SIGKILL');
      killedAt = Date.now();
    });
    // The worker stops itself (SIGSTOP) as that activity's first attempt begins, before it runs.
    writeFileSync(stopFile, `${workflowType}:${activity}`);
    const started = Date.now();
    let result;
    try {
      result = (await start()).outcome.then(
        (r) => ({ ok: true as const, r }),
        (err: unknown) => ({ ok: false as const, err }),
      );
    } catch (err) {
      off();
      writeFileSync(stopFile, '');
      throw err;
    }
    const exited = await Promise.race([w.exited, result.then(() => 'ended' as const), sleep(180_000, undefined, { ref: false }).then(() => 'timeout' as const)]);
    off();
    writeFileSync(stopFile, '');
    assert.ok(killedAt > 0, `${activity} of ${workflowType} never started (${typeof exited === 'string' ? exited : 'the worker exited by itself'})`);
    assert.deepEqual(exited, { code: null, signal: 'SIGKILL' });
    const replacement = s.startWorker();
    await replacement;
    const settled = await Promise.race([result, sleep(300_000, undefined, { ref: false }).then(() => ({ ok: false as const, err: new Error('no outcome within 5 minutes of the kill') }))]);
    t.diagnostic(`killed ${killedAt - started} ms after the start; outcome ${Date.now() - killedAt} ms after the kill`);
    if (!settled.ok) throw settled.err;
    return settled.r;
  }

  /** The killed activity lost its first attempt and a later attempt succeeded; nothing ran twice as a new operation. */
  async function lostAndRetried(workflowId: string, runId: string | undefined, activity: string) {
    const { attempts, lines } = await activityAttempts(s.temporal.client, workflowId, runId);
    assert.ok((attempts[activity] ?? []).some((a) => a >= 2), `${activity} was retried after the kill:\n${lines.join('\n')}`);
  }

  async function migrationBoundary(t: TestContext, direction: 'up' | 'down', activity: string) {
    const target = direction === 'up' ? 't3.small' : 'base';
    if ((await where()).tier === target) {
      await migrate(direction === 'up' ? 'base' : 't3.small');
      await entitySettled(s.temporal.client, userId);
    }
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM migrations WHERE user_id = $1`, [userId])).rows[0].n as number;
    let runId: string | undefined;
    const result = await killAt(t, 'migrateRuntime', activity, async () => {
      const { handle, operationId } = await s.ops.startMigration(userId, { target });
      runId = decodeOperationId(operationId)?.runId;
      return { outcome: handle.result() as Promise<MigrateRuntimeResult> };
    });
    assert.equal(result.toTier, target === 'base' ? 'base' : 't3.small');
    await lostAndRetried(workflowIds.migrate(userId), runId, activity);
    const rows = await db.pool.query(`SELECT status FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
    assert.equal(rows.rows.length, before + 1, 'one migration more, not two');
    assert.equal(rows.rows.at(-1).status, 'completed');
    const rt = await where();
    assert.deepEqual([rt.tier, rt.state], [result.toTier, 'running']);
    await checkX();
    await s.balance([{ userId, state: 'running' }]);
  }

  async function returnBoundary(t: TestContext, activity: string) {
    if ((await where()).tier !== 'base') await migrate('base');
    await entitySettled(s.temporal.client, userId);
    await (await s.ops.startIdleCheckpoint({ userId, reason: 'operator' })).handle.result();
    await entitySettled(s.temporal.client, userId);
    await killAt(t, 'returnRuntime', activity, async () => ({ outcome: (await s.ops.startLogin({ userId })).handle.result() }));
    await lostAndRetried(workflowIds.returnRuntime(userId), undefined, activity);
    const snapshots = await db.pool.query(`SELECT state FROM snapshots WHERE user_id = $1 AND state NOT IN ('deleted')`, [userId]);
    assert.deepEqual(snapshots.rows, [], `the idle archive is gone once the runtime is back: ${JSON.stringify(snapshots.rows)}`);
    assert.equal((await where()).state, 'running');
    await checkX();
    await s.balance([{ userId, state: 'running' }]);
  }

  test('a clean run of each: the activities each workflow schedules, and the books balance after it', async (t) => {
    before42 = (await s.execute(userId, 'x')).executionCount;
    const up = await migrate('t3.small');
    lists.up = await activitiesOf(s.temporal.client, workflowIds.migrate(userId));
    await checkX();
    await s.balance([{ userId, state: 'running' }]);
    await entitySettled(s.temporal.client, userId);
    await migrate('base');
    lists.down = await activitiesOf(s.temporal.client, workflowIds.migrate(userId));
    await checkX();
    await entitySettled(s.temporal.client, userId);
    await (await s.ops.startIdleCheckpoint({ userId, reason: 'operator' })).handle.result();
    await s.balance([{ userId, state: 'checkpointed' }]);
    await entitySettled(s.temporal.client, userId);
    await (await s.ops.startLogin({ userId })).handle.result();
    lists.return = await activitiesOf(s.temporal.client, workflowIds.returnRuntime(userId));
    await checkX();
    await s.balance([{ userId, state: 'running' }]);
    t.diagnostic(`migrateRuntime base -> t3.small (${up.targetHostId}): ${lists.up.join(', ')}`);
    t.diagnostic(`migrateRuntime t3.small -> base: ${lists.down.join(', ')}`);
    t.diagnostic(`returnRuntime: ${lists.return.join(', ')}`);
    for (const [k, names] of Object.entries(representative)) {
      for (const n of names) assert.ok(lists[k as keyof typeof lists].includes(n), `the representative boundary ${n} is still an activity of ${k}: ${lists[k as keyof typeof lists].join(', ')}`);
    }
  });

  test(`migrateRuntime: the worker killed as each ${full ? '' : 'representative '}activity starts, in both directions`, async (t) => {
    assert.ok(lists.up.length > 0, 'the clean run found the activities');
    const up = full ? lists.up : representative.up;
    const down = full ? lists.down : representative.down;
    // Alternate directions so that each killed migration also moves the runtime where the next one starts
    // (a boundary whose direction does not follow is preceded by a clean migration).
    const plan: { direction: 'up' | 'down'; activity: string }[] = [];
    for (let i = 0; i < Math.max(up.length, down.length); i++) {
      if (up[i]) plan.push({ direction: 'up', activity: up[i]! });
      if (down[i]) plan.push({ direction: 'down', activity: down[i]! });
    }
    for (const step of plan) {
      await entitySettled(s.temporal.client, userId);
      await t.test(`${step.direction === 'up' ? 'base -> t3.small' : 't3.small -> base'}: killed as ${step.activity} starts`, (st) => migrationBoundary(st, step.direction, step.activity));
    }
  });

  test(`returnRuntime: the worker killed as each ${full ? '' : 'representative '}activity starts`, async (t) => {
    assert.ok(lists.return.length > 0, 'the clean run found the activities');
    for (const activity of full ? lists.return : representative.return) {
      await entitySettled(s.temporal.client, userId);
      await t.test(`killed as ${activity} starts`, (st) => returnBoundary(st, activity));
    }
  });
});
