import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { DescribeInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import { emulatorEc2, freshDatabase, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';
import { entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import { hostEnvShell } from '../support/netns.js';

/**
 * What a user is left with when a migration goes wrong, and the critical path, on real parts (EC2
 * emulator + booted namespace hosts, CRIU, podman): a target whose restore fails leaves the runtime
 * serving on the source with no instance of ours running; 95% memory pauses the runtime at once and it
 * resumes on the bigger host with its state.
 */
describe('migration failures and the critical path', () => {
  const h = useHarness();

  describe('on the simulated cloud', () => {
    let db: TestDatabase;
    let shells: HostShells;
    let worker: Worker;
    let running: Promise<void>;
    let closeWorker: () => Promise<void>;
    let watcher: BootWatcher;
    let ec2: EC2Client;
    let temporal: { client: Client; close: () => Promise<void> };
    let ops: Operations;
    let deploymentId: string;
    let userId: string;

    const runtimeRow = async () => (await db.store.runtimes.live(userId))!;
    const execute = async (code: string) => {
      const rt = await runtimeRow();
      const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ code }),
        headersTimeout: 30_000,
      });
      assert.equal(res.statusCode, 200);
      return (await res.body.json()) as { result: string | null; executionCount: number };
    };
    const baseStatus = async () =>
      (await hostEnvShell(h.state.baseHost).run(['podman', 'container', 'inspect', '--format', '{{.State.Status}}', `rt-${userId}`], { okExitCodes: [0, 125] })).stdout.trim();
    const liveInstances = async () => {
      const out = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:deployment', Values: [deploymentId] }] }));
      return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).filter((i) => !['shutting-down', 'terminated'].includes(i.State?.Name ?? ''));
    };

    before(async () => {
      db = await freshDatabase(h.state);
      shells = testShells(h.state);
      await registerBaseHost(db.store, shells);
      deploymentId = `fail-${randomBytes(3).toString('hex')}`;
      watcher = startTestBootWatcher(h.state, { deploymentId });
      ec2 = emulatorEc2(h.state);
      // Scale-down after 2 s of low memory instead of 30 min.
      const started = await startTestWorker(h.state, { store: db.store, shells, cloud: testCloud(h.state, { deploymentId }), environment: { ...testEnvironment(h.state), scaleDownAfterMs: 2000 } });
      worker = started.worker;
      running = worker.run();
      closeWorker = () => started.connection.close();
      temporal = await temporalClient(h.state);
      ops = createOperations(temporal.client, started.taskQueue);
      userId = (await db.store.users.ensureByEmail({ email: 'fragile@example.test', name: 'Fragile' })).user.id;
      await (await ops.startLogin({ userId })).handle.result();
      await execute('x = 42');
    });

    after(async () => {
      const stopped = await stopTestWorker(worker, running);
      await closeWorker?.();
      await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
      await watcher?.stop();
      ec2?.destroy();
      await temporal?.close();
      await shells?.closeAll();
      await db?.drop();
      if (stopped) throw stopped;
    });

    test('the target restore fails: the runtime still answers on the source, unpaused, and no instance of ours is left', async () => {
      watcher.failNextBoot('restore');
      const { handle } = await ops.startMigration(userId, { target: 't3.small' });
      await assert.rejects(handle.result(), 'the migration fails');
      const rt = await runtimeRow();
      assert.deepEqual([rt.hostId, rt.state, rt.tier], ['base', 'running', 'base'], 'the runtimes row still names the source');
      assert.equal(await baseStatus(), 'running', 'the source is not left paused');
      assert.equal((await execute('x')).result, '42');
      const editor = (await db.store.editors.live(userId))!;
      assert.deepEqual([editor.runtimeHost, editor.runtimePort], [rt.address, rt.port], 'the editor keeps a working address');
      const row = await db.pool.query(`SELECT status, step, error FROM migrations WHERE user_id = $1`, [userId]);
      assert.equal(row.rows.length, 1);
      assert.equal(row.rows[0].status, 'failed');
      assert.equal(row.rows[0].step, 'restore');
      assert.match(row.rows[0].error, /restore/);
      assert.deepEqual(await liveInstances(), [], 'the target instance was terminated');
      const hosts = await db.pool.query(`SELECT state FROM hosts WHERE kind = 'ec2'`);
      assert.deepEqual(hosts.rows.map((r) => r.state), ['terminated']);
    });

    test('95% memory: the runtime is paused at once, then runs on the bigger host with x intact', async () => {
      const rt = await runtimeRow();
      const before = await execute('x');
      const signalledAt = Date.now();
      await ops.signalPressure(userId, { runtimeId: rt.id, hostId: rt.hostId!, usedBytes: Math.round(rt.memoryLimitBytes * 0.96), at: signalledAt, source: 'test' });
      const pausedAfterMs = await waitFor(
        'the runtime to be paused',
        async () => {
          if ((await baseStatus()) !== 'paused') throw new Error('not paused yet');
          return Date.now() - signalledAt;
        },
        { timeoutMs: 10_000, intervalMs: 50 },
      );
      assert.ok(pausedAfterMs < 2000, `paused ${pausedAfterMs} ms after the 95% reading`);
      const moved = await waitFor(
        'the runtime to run on an EC2 host',
        async () => {
          const now = await runtimeRow();
          if (now.hostId === 'base' || now.state !== 'running') throw new Error(`${now.hostId} ${now.state}`);
          return now;
        },
        { timeoutMs: 180_000, intervalMs: 250 },
      );
      assert.equal(moved.tier, 't3.small');
      const after = await execute('x');
      assert.equal(after.result, '42');
      assert.ok(after.executionCount > before.executionCount);
      const rows = await db.pool.query(`SELECT status, reason, frozen_ms FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
      assert.deepEqual(rows.rows.map((r) => `${r.reason} ${r.status}`), ['operator failed', 'critical completed']);
      assert.equal((await liveInstances()).length, 1);
      const listed = await temporal.client.workflow.list({ query: `MarkcoOperation="critical" AND MarkcoUserId="${userId}"` });
      const found: string[] = [];
      for await (const w of listed) found.push(w.workflowId);
      assert.deepEqual(found, [`user/${userId}/migrate`], 'the critical migration is searchable as such');
    });
    test('memory that stays low on the EC2 tier scales the runtime back down to the base server and ends the instance', async () => {
      const entity = temporal.client.workflow.getHandle(`runtime/${userId}`);
      await waitFor(
        'the entity to know the runtime is on t3.small',
        async () => {
          const s = await entity.query(entityStateQuery);
          if (s.running !== null || s.placement?.tier !== 't3.small') throw new Error(JSON.stringify(s));
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      const rt = await runtimeRow();
      const before = await execute('x');
      await ops.signalPressure(userId, { runtimeId: rt.id, hostId: rt.hostId!, usedBytes: Math.round(rt.memoryLimitBytes * 0.05), at: Date.now(), source: 'test' });
      const back = await waitFor(
        'the runtime to be back on the base server',
        async () => {
          const now = await runtimeRow();
          if (now.hostId !== 'base' || now.state !== 'running') throw new Error(`${now.hostId} ${now.state}`);
          return now;
        },
        { timeoutMs: 120_000, intervalMs: 250 },
      );
      assert.equal(back.tier, 'base');
      const after = await execute('x');
      assert.equal(after.result, '42');
      assert.ok(after.executionCount > before.executionCount);
      const rows = await db.pool.query(`SELECT reason, status FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
      assert.deepEqual(rows.rows.map((r) => `${r.reason} ${r.status}`), ['operator failed', 'critical completed', 'scale-down completed']);
      await waitFor('the EC2 instance to be terminated', async () => {
        if ((await liveInstances()).length > 0) throw new Error('still running');
      }, { timeoutMs: 30_000, intervalMs: 250 });
    });
  });
});
