import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { DescribeInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { cgroupMemoryLimitArgs, parseCgroupMemoryLimit } from '../../activities/podman-commands.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import { connectionOf } from '../../lib/store.js';
import { defaultTierLadder } from '../../lib/tiers.js';
import { entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import { emulatorEc2, freshDatabase, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testShells, useHarness } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { hostEnvShell, podmanOn } from '../support/netns.js';

/**
 * Elastic compute as a user and an operator see it, on real parts: the edge, the worker with the real
 * activities, the EC2 emulator whose instances boot as namespace hosts (sshd + podman at the instance's
 * private address), CRIU. A Python variable set through the edge survives base -> EC2 -> EC2 -> base.
 */
describe('elastic compute: pressure, pre-provision and migration through the edge', () => {
  const h = useHarness();
  const MiB = 1024 * 1024;
  const ladder = defaultTierLadder.free;

  describe('three hops', () => {
    let db: TestDatabase;
    let shells: HostShells;
    let worker: Worker;
    let running: Promise<void>;
    let closeWorker: () => Promise<void>;
    let edge: RunningEdge;
    let watcher: BootWatcher;
    let ec2: EC2Client;
    let temporal: { client: Client; close: () => Promise<void> };
    let ops: Operations;
    let deploymentId: string;
    let userId: string;
    let cookie: string;
    let runtimePort: number;
    let lastCount = 0;

    const call = async (path: string, init: { body?: unknown; admin?: boolean } = {}) => {
      const res = await request(`${edge.url}${path}`, {
        method: init.body === undefined ? 'GET' : 'POST',
        headers: {
          ...(init.admin ? { authorization: `Bearer ${testAdminToken}` } : { cookie }),
          ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        headersTimeout: 300_000,
        bodyTimeout: 300_000,
      });
      const text = await res.body.text();
      return { status: res.statusCode, text, json: (text.startsWith('{') ? JSON.parse(text) : undefined) as Record<string, any> };
    };
    const execute = async (code: string) => {
      const res = await call(`/u/${userId}/proxy/${runtimePort}/mrp/v1/execute`, { body: { code } });
      assert.equal(res.status, 200, res.text);
      return res.json as { result: string | null; executionCount: number };
    };
    /** x is still 42 and the kernel's execution count went on: the same process, not a fresh one. */
    const assertSameKernel = async (hop: string) => {
      const r = await execute('x');
      assert.equal(r.result, '42', `${hop}: x survived`);
      assert.ok(r.executionCount > lastCount, `${hop}: the execution count continued (${r.executionCount} after ${lastCount})`);
      lastCount = r.executionCount;
    };
    const instancesOfUser = async () => {
      const out = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:user', Values: [userId] }, { Name: 'tag:markco:deployment', Values: [deploymentId] }] }));
      return (out.Reservations ?? []).flatMap((r) => r.Instances ?? []).map((i) => ({ id: i.InstanceId!, state: i.State?.Name ?? '', type: i.InstanceType ?? '' }));
    };
    const runtimeRow = async () => (await db.store.runtimes.live(userId))!;
    /** Every `rt-<id>` container on the base server and on every booted host: a migration leaves exactly one. */
    const runtimeCopies = async () => {
      const name = `rt-${userId}`;
      const base = (await hostEnvShell(h.state.baseHost).run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n === name).length;
      let elsewhere = 0;
      for (const host of watcher.booted()) {
        try {
          elsewhere += (await podmanOn(host, ['ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n === name).length;
        } catch (err) {
          // A host whose instance was just terminated is being torn down under the command: it holds nothing.
          if (watcher.booted().some((b) => b.hostId === host.hostId)) throw err;
        }
      }
      return base + elsewhere;
    };
    const cgroupLimitOfRuntime = async () => {
      const rt = await runtimeRow();
      const host = (await db.store.hosts.get(rt.hostId!))!;
      const shell = shells.for(connectionOf(host));
      return parseCgroupMemoryLimit((await shell.run(cgroupMemoryLimitArgs(rt.containerName))).stdout);
    };
    const pressure = (percent: number) =>
      runtimeRow().then((rt) =>
        ops.signalPressure(userId, { runtimeId: rt.id, hostId: rt.hostId!, usedBytes: Math.round((rt.memoryLimitBytes * percent) / 100), at: Date.now(), source: 'test' }),
      );

    before(async () => {
      db = await freshDatabase(h.state);
      shells = testShells(h.state);
      await registerBaseHost(db.store, shells);
      deploymentId = `mig-${randomBytes(3).toString('hex')}`;
      watcher = startTestBootWatcher(h.state, { deploymentId });
      ec2 = emulatorEc2(h.state);
      const started = await startTestWorker(h.state, { store: db.store, shells, cloud: testCloud(h.state, { deploymentId }) });
      worker = started.worker;
      running = worker.run();
      closeWorker = () => started.connection.close();
      edge = await startTestEdge(h.state, db, started.taskQueue);
      temporal = await temporalClient(h.state);
      ops = createOperations(temporal.client, started.taskQueue);
      const login = await request(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'elastic@example.test' }) });
      const body = (await login.body.json()) as { user: { id: string } };
      userId = body.user.id;
      cookie = String(login.headers['set-cookie']).split(';')[0]!;
      const ready = await waitFor(
        'the runtime and editor to run',
        async () => {
          const d = await call('/dashboard');
          if (d.json?.runtime?.state !== 'running' || d.json?.editor?.state !== 'running') throw new Error(d.text);
          return d.json;
        },
        { timeoutMs: 90_000, intervalMs: 250 },
      );
      runtimePort = ready.runtime.port;
    });

    after(async () => {
      await edge?.close();
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

    test('hop 1, base -> EC2: 50% reserves the next tier, then five 75% events make one migration onto the reserved host', async () => {
      await execute('x = 42');
      lastCount = (await execute('x')).executionCount;
      await pressure(50);
      const reserved = await waitFor(
        'the pre-provisioned host to be ready',
        async () => {
          const rows = await db.pool.query(`SELECT id, state FROM hosts WHERE reserved_for = $1 AND kind = 'ec2'`, [userId]);
          if (rows.rows[0]?.state !== 'ready') throw new Error(JSON.stringify(rows.rows));
          return rows.rows[0].id as string;
        },
        { timeoutMs: 120_000, intervalMs: 250 },
      );
      for (let i = 0; i < 5; i++) await pressure(75 + i);
      const moved = await waitFor(
        'the runtime to run on the reserved host',
        async () => {
          const rt = await runtimeRow();
          if (rt.hostId !== reserved || rt.state !== 'running') throw new Error(`${rt.hostId} ${rt.state}`);
          return rt;
        },
        { timeoutMs: 180_000, intervalMs: 250 },
      );
      assert.equal(moved.tier, 't3.small');
      await assertSameKernel('hop 1');
      const migrations = await db.pool.query(`SELECT status FROM migrations WHERE user_id = $1`, [userId]);
      assert.deepEqual(migrations.rows, [{ status: 'completed' }], 'five 75% events made one migration');
      assert.deepEqual((await instancesOfUser()).map((i) => i.type), ['t3.small'], 'the migration used the reserved host: one RunInstances');
      assert.equal(await cgroupLimitOfRuntime(), ladder.find((t) => t.name === 't3.small')!.memoryBytes, "the cgroup holds t3.small's limit");
      assert.equal(await runtimeCopies(), 1);
      const entity = await temporal.client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      assert.deepEqual([entity.running, entity.placement?.hostId, entity.placement?.tier], [null, reserved, 't3.small']);
    });

    test('hop 2, EC2 -> EC2 by an operator: the old instance is terminated and its host is gone', async () => {
      const before = await runtimeRow();
      const oldInstance = (await db.store.hosts.get(before.hostId!))!.instanceId!;
      const bad = await call(`/api/runtimes/${userId}/migrate`, { admin: true, body: { target_type: 'x1e.32xlarge' } });
      assert.equal(bad.status, 400);
      assert.match(bad.json.message, /target_type: x1e.32xlarge is not a tier of the free plan/);
      assert.equal((await call(`/api/runtimes/${userId}/migrate`, { body: { target_type: 't3.medium' } })).status, 403, 'a signed-in user is not an operator');
      const res = await call(`/api/runtimes/${userId}/migrate?wait=240`, { admin: true, body: { target_type: 't3.medium' } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.status, 'completed', res.text);
      assert.equal(res.json.result.toTier, 't3.medium');
      const rt = await runtimeRow();
      assert.notEqual(rt.hostId, before.hostId);
      await assertSameKernel('hop 2');
      assert.equal(await cgroupLimitOfRuntime(), ladder.find((t) => t.name === 't3.medium')!.memoryBytes);
      const instances = await instancesOfUser();
      assert.ok(['shutting-down', 'terminated'].includes(instances.find((i) => i.id === oldInstance)!.state), 'the old instance is terminated');
      await waitFor('the old host to be gone', async () => {
        if (watcher.hostOf(oldInstance)) throw new Error('still booted');
      }, { timeoutMs: 30_000, intervalMs: 250 });
      assert.equal(await runtimeCopies(), 1);
      const again = await call(`/api/runtimes/${userId}/migrate`, { admin: true, body: { target_type: 't3.medium' } });
      assert.equal(again.status, 409, 'already on that tier');
    });

    test('hop 3, EC2 -> base: the runtime is back on the base server with its limit, and no instance of ours runs', async () => {
      const res = await call(`/api/runtimes/${userId}/migrate?wait=240`, { admin: true, body: { target_type: 'base' } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.status, 'completed', res.text);
      const rt = await runtimeRow();
      assert.deepEqual([rt.hostId, rt.tier], ['base', 'base']);
      await assertSameKernel('hop 3');
      assert.equal(await cgroupLimitOfRuntime(), ladder[0]!.memoryBytes);
      assert.equal(await runtimeCopies(), 1);
      assert.deepEqual((await instancesOfUser()).filter((i) => !['shutting-down', 'terminated'].includes(i.state)), [], 'no instance of ours is left running');
      const rows = await db.pool.query(
        `SELECT status, from_type, to_type, checkpoint_ms, transfer_ms, restore_ms, downtime_ms, frozen_ms, archive_bytes, archive_sha256 FROM migrations WHERE user_id = $1 ORDER BY started_at`,
        [userId],
      );
      assert.deepEqual(rows.rows.map((r) => `${r.from_type}->${r.to_type} ${r.status}`), ['base->t3.small completed', 't3.small->t3.medium completed', 't3.medium->base completed']);
      for (const r of rows.rows) {
        for (const k of ['checkpoint_ms', 'transfer_ms', 'restore_ms', 'downtime_ms']) assert.ok(r[k] > 0, `${k} recorded`);
        assert.ok(Number(r.archive_bytes) > MiB && /^[0-9a-f]{64}$/.test(r.archive_sha256));
      }
    });
  });
});
