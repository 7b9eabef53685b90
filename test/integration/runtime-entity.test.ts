import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WithStartWorkflowOperation } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Activities } from '../../activities/index.js';
import { entityStateQuery, loginUpdate, migrateUpdate, pressureSignal } from '../../workflows/contracts/runtime-entity.js';
import { temporalClient, useHarness } from '../support/context.js';

/**
 * The entity's ordering and bookkeeping with stand-in activities (the real ones are exercised by
 * migration.test.ts and migration-failures.test.ts): a login asked for during a migration starts only
 * after it, and continue-as-new keeps what the entity knows.
 */
const h = useHarness();

describe('runtime entity (stand-in activities)', () => {
  let connection: NativeConnection;
  let client: Awaited<ReturnType<typeof temporalClient>>;
  let releaseMigration: () => void = () => undefined;
  const started: string[] = [];

  const placement = { runtimeId: '7b1c2b7e-0000-4000-8000-00000000aaaa', hostId: 'base', tier: 'base', memoryLimitBytes: 256 * 1024 * 1024 };
  const fake: Partial<Activities> = {
    currentPlacement: async () => placement,
    runtimePolicySettings: async () => ({ scaleDownAfterMs: 60_000, gpu: null }),
    beginMigration: async () => {
      started.push('migrate');
      await new Promise<void>((resolve) => (releaseMigration = resolve));
      throw ApplicationFailure.create({ type: 'NotFound', message: 'stand-in: no runtime to migrate', nonRetryable: true });
    },
    planLogin: async () => {
      started.push('login');
      throw ApplicationFailure.create({ type: 'NotFound', message: 'stand-in: no such user', nonRetryable: true });
    },
    appendEvent: async () => undefined,
  };

  const entityStart = (userId: string, taskQueue: string, extra: Record<string, unknown> = {}) =>
    new WithStartWorkflowOperation('userRuntime', { workflowId: `runtime/${userId}`, taskQueue, args: [{ userId, ...extra }], workflowIdConflictPolicy: 'USE_EXISTING' });

  before(async () => {
    connection = await NativeConnection.connect({ address: h.state.temporal.address });
    client = await temporalClient(h.state);
  });
  after(async () => {
    await client.close();
    await connection.close();
  });

  test('a login asked for while a migration runs starts after it, as one operation at a time', async () => {
    const taskQueue = `test-${randomBytes(4).toString('hex')}`;
    const userId = `7b1c2b7e-0000-4000-8000-${randomBytes(6).toString('hex')}`;
    const worker = await Worker.create({ connection, namespace: h.state.temporal.namespace, taskQueue, activities: fake, workflowBundle: { codePath: h.state.workflowBundlePath } });
    await worker.runUntil(async () => {
      started.length = 0;
      const migration = await client.client.workflow.executeUpdateWithStart(migrateUpdate, { args: [{ target: 't3.small' }], startWorkflowOperation: entityStart(userId, taskQueue) });
      assert.equal(migration.workflowId, `user/${userId}/migrate`);
      let loginAnswered = false;
      const login = client.client.workflow
        .executeUpdateWithStart(loginUpdate, { args: [{ userId }], startWorkflowOperation: entityStart(userId, taskQueue) })
        .then((ref) => ((loginAnswered = true), ref));
      const again = await client.client.workflow.executeUpdateWithStart(migrateUpdate, { args: [{ target: 't3.small' }], startWorkflowOperation: entityStart(userId, taskQueue) });
      assert.deepEqual([again.runId, again.joined], [migration.runId, true], 'a second migrate joins the running one');
      await sleep(1500);
      assert.equal(loginAnswered, false, 'the login waits for the migration');
      const state = await client.client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      assert.deepEqual([state.running?.operation, state.queue], ['migrate', ['login']]);
      releaseMigration();
      const ref = await login;
      assert.deepEqual([ref.workflowId, ref.operation, ref.joined], [`user/${userId}/login`, 'login', false]);
      await client.client.workflow.getHandle(ref.workflowId, ref.runId).result().catch(() => undefined);
      assert.deepEqual(started, ['migrate', 'login'], 'never both at once');
      await client.client.workflow.getHandle(`runtime/${userId}`).terminate('test done');
    });
  });

  test('continue-as-new keeps the placement and the bands, and signals keep arriving', async () => {
    const taskQueue = `test-${randomBytes(4).toString('hex')}`;
    const userId = `7b1c2b7e-0000-4000-8000-${randomBytes(6).toString('hex')}`;
    const worker = await Worker.create({ connection, namespace: h.state.temporal.namespace, taskQueue, activities: fake, workflowBundle: { codePath: h.state.workflowBundlePath } });
    await worker.runUntil(async () => {
      const handle = await client.client.workflow.start('userRuntime', { workflowId: `runtime/${userId}`, taskQueue, args: [{ userId, maxHistoryEvents: 30 }] });
      const firstRun = handle.firstExecutionRunId;
      // Low readings only: nothing to act on, but each one adds to the history.
      for (let i = 0; i < 25; i++) {
        await handle.signal(pressureSignal, { ...placement, usedBytes: 10 * 1024 * 1024, at: Date.now(), source: 'test' });
      }
      const latest = client.client.workflow.getHandle(`runtime/${userId}`);
      const described = await (async () => {
        for (let i = 0; i < 100; i++) {
          const d = await latest.describe();
          if (d.runId !== firstRun) return d;
          await sleep(100);
        }
        throw new Error('the entity never continued as new');
      })();
      assert.equal(described.status.name, 'RUNNING');
      const state = await latest.query(entityStateQuery);
      assert.deepEqual(state.placement, placement, 'the placement is carried over');
      await latest.signal(pressureSignal, { ...placement, usedBytes: 10 * 1024 * 1024, at: Date.now(), source: 'test' });
      assert.equal((await latest.query(entityStateQuery)).running, null);
      await latest.terminate('test done');
    });
  });
});
