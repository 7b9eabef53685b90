import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { probeHostFacts } from '../../activities/hosts.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import { defaultTierLadder } from '../../lib/tiers.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import type { LoginResult } from '../../workflows/contracts/user-environment.js';
import { connectionTo, freshDatabase, registerBaseHost, startTestWorker, stopTestWorker, temporalClient, type TestDatabase, testShells, useHarness } from '../support/context.js';
import { hostEnvShell, podmanOn, storageConf } from '../support/netns.js';

/**
 * The migration saga on real parts, between hosts an operator names (`targetHostId`): the base server
 * and a namespace host reached over ssh2. A Python variable survives every hop, the execution count
 * continues, the container's cgroup limit is the target tier's, and exactly one copy of the runtime
 * exists afterwards. A restore that fails leaves the user running on the source.
 */
const h = useHarness();

function innermostMessage(err: unknown): string {
  let e = err as { cause?: unknown; message?: string };
  while (e.cause) e = e.cause as typeof e;
  return e.message ?? '';
}

describe('migration between registered hosts', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let temporal: { client: Client; close: () => Promise<void> };
  let ops: Operations;
  let taskQueue: string;
  let userId: string;
  let remoteId: string;

  const runtimeOf = async () => (await db.store.runtimes.live(userId))!;
  async function execute(code: string): Promise<{ result: string; executionCount: number }> {
    const rt = await runtimeOf();
    const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ code }),
    });
    assert.equal(res.statusCode, 200);
    return (await res.body.json()) as { result: string; executionCount: number };
  }
  const copiesOn = async () => {
    const remote = h.state.hosts[0]!;
    const names = async (out: string) => out.split('\n').filter((n) => n === `rt-${userId}`);
    const base = await names((await hostEnvShell(h.state.baseHost).run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout);
    const there = await names((await podmanOn(remote, ['ps', '--all', '--format', '{{.Names}}'])).stdout);
    return { base: base.length, remote: there.length };
  };
  const migrate = async (target: string, targetHostId: string) => (await (await ops.startMigration(userId, { target, targetHostId })).handle.result()) as MigrateRuntimeResult;

  /** The namespace host as a ready EC2 host (again: leaving an EC2 host for base terminates it). */
  async function registerRemote(): Promise<void> {
    const remote = h.state.hosts[0]!;
    await db.store.hosts.upsert({ id: remote.hostId, kind: 'ec2', address: remote.address, state: 'booting', sshUser: remote.sshUser, hostKey: remote.hostKey, instanceId: `i-${remote.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.small' });
    await db.store.hosts.markReady(remote.hostId, await probeHostFacts(shells.for(connectionTo(remote))));
  }

  before(async () => {
    const remote = h.state.hosts[0]!;
    // The runtime AMI has the images baked in: the namespace host reads the machine's built images.
    writeFileSync(remote.env.CONTAINERS_STORAGE_CONF, storageConf(remote.dir, '/var/lib/containers/storage'));
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    remoteId = remote.hostId;
    await registerRemote();
    const started = await startTestWorker(h.state, { store: db.store, shells });
    worker = started.worker;
    taskQueue = started.taskQueue;
    running = worker.run();
    temporal = await temporalClient(h.state);
    ops = createOperations(temporal.client, taskQueue);
    userId = (await db.store.users.ensureByEmail({ email: 'mig@example.test', name: 'Mig' })).user.id;
    (await (await ops.startLogin({ userId })).handle.result()) as LoginResult;
  });

  after(async () => {
    await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    await podmanOn(h.state.hosts[0]!, ['rm', '--force', '--time', '0', `rt-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    const stopped = await stopTestWorker(worker, running);
    await temporal.close();
    await shells.closeAll();
    await db.drop();
    if (stopped) throw stopped;
  });

  test('x survives base -> host -> base, with the tier limit in the cgroup and one copy left', async () => {
    await execute('x = 42');
    const before = await execute('x');
    assert.equal(before.result, '42');

    const there = await migrate('t3.small', remoteId);
    assert.equal(there.targetHostId, remoteId);
    const small = defaultTierLadder.free.find((t) => t.name === 't3.small')!;
    assert.equal(there.memoryLimitBytes, small.memoryBytes, "the cgroup holds the target tier's limit");
    const rt = await runtimeOf();
    assert.deepEqual([rt.hostId, rt.tier, rt.state, rt.memoryLimitBytes], [remoteId, 't3.small', 'running', small.memoryBytes]);
    const after1 = await execute('x');
    assert.equal(after1.result, '42');
    assert.ok(after1.executionCount > before.executionCount, 'the execution count continues');
    assert.deepEqual(await copiesOn(), { base: 0, remote: 1 });

    const back = await migrate('base', 'base');
    assert.equal(back.targetHostId, 'base');
    const after2 = await execute('x');
    assert.equal(after2.result, '42');
    assert.ok(after2.executionCount > after1.executionCount);
    assert.deepEqual(await copiesOn(), { base: 1, remote: 0 });
    const rows = await db.pool.query(`SELECT status, checkpoint_ms, transfer_ms, restore_ms, downtime_ms, archive_bytes FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
    assert.equal(rows.rows.length, 2);
    for (const r of rows.rows) {
      assert.equal(r.status, 'completed');
      for (const k of ['checkpoint_ms', 'transfer_ms', 'restore_ms', 'downtime_ms']) assert.ok(r[k] > 0, `${k} recorded`);
      assert.ok(Number(r.archive_bytes) > 1_000_000);
    }
  });

  test('bad input is refused with a message naming the field', async () => {
    await assert.rejects(ops.startMigration(userId, { target: 'T3 SMALL', reason: 'whim' as never }), (err: Error & { type?: string }) => {
      assert.equal(err.type, 'InvalidInput');
      assert.match(err.message, /target: .*reason: /);
      return true;
    });
    await assert.rejects(
      temporal.client.workflow.execute('migrateRuntime', { taskQueue, workflowId: `user/${userId}/migrate-direct`, args: [{ userId, target: 't3.small', reason: 'operator' }] }),
      (err: Error) => /runs only through the user's runtime entity/.test(innermostMessage(err)),
      'a direct start would bypass the one-operation-at-a-time entity',
    );
    await assert.rejects(migrate('t3.nope', remoteId), (err: Error) => /not a tier of the free plan/.test(innermostMessage(err)));
    assert.equal((await runtimeOf()).state, 'running', 'a refused migration leaves the runtime as it was');
  });

  test('the source answers nothing once its archive is being exported: a request then fails instead of vanishing on the target', async () => {
    // 200 MiB behind a short repr, so the export lasts long enough to be caught.
    await execute(['import os', 'class Blob:', '    def __init__(self, n):', '        self._data = os.urandom(n)', '    def __repr__(self):', "        return f'<Blob {len(self._data)}>'", 'b = Blob(200 << 20)'].join('\n'));
    const source = await runtimeOf();
    assert.equal(source.hostId, 'base');
    await registerRemote();
    const migrating = migrate('t3.small', remoteId);
    let refused: unknown;
    migrating.catch((err: unknown) => (refused = err));
    // The target's receiver tees the archive into podman only after the export has begun.
    const deadline = Date.now() + 60_000;
    let migrationId: string | undefined;
    for (;;) {
      if (refused) assert.fail(`the migration failed: ${innermostMessage(refused)}`);
      if (Date.now() > deadline) {
        const rows = await db.pool.query(`SELECT status, step, error FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId]);
        assert.fail(`the export never began: ${JSON.stringify(rows.rows)}`);
      }
      migrationId ??= (await db.pool.query(`SELECT id FROM migrations WHERE user_id = $1 AND status = 'running'`, [userId])).rows[0]?.id as string | undefined;
      if (migrationId && spawnSync('pgrep', ['-f', `tee -p .*${migrationId}.*hash.fifo`]).status === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const answer = await request(`http://${source.address}:${source.port}/mrp/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ code: 'late = 7' }),
      headersTimeout: 1500,
      bodyTimeout: 1500,
    }).then(
      (r) => `answered ${r.statusCode}`,
      (err: Error) => `no answer (${err.name})`,
    );
    assert.match(answer, /^no answer/, 'the frozen source must not accept work the target will not have');
    const moved = await migrating;
    assert.equal(moved.targetHostId, remoteId);
    assert.equal((await execute('x')).result, '42');
    assert.match((await execute("'late' in globals()")).result, /False/, 'the request the source never answered is not on the target either');
  });
});
