import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, type WorkflowHandle } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { containerUserFor } from '../../activities/user-containers.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import type { LoginResult } from '../../workflows/contracts/user-environment.js';
import { freshDatabase, registerBaseHost, startTestWorker, stopTestWorker, temporalClient, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';
import { hostEnvShell } from '../support/netns.js';

/**
 * The login workflow on real parts: podman on this machine (the run's storage), the built runtime and
 * editor images, PostgreSQL and Temporal. Checks what a user and an operator would see: one runtime and
 * one editor however many logins race, ports and state in PostgreSQL, a starter project, the runtime
 * answering MRP, the editor pointed at it.
 */
const h = useHarness();

/** The activities a run scheduled, in order: what an operator sees in its history. */
async function activitiesOf(handle: WorkflowHandle): Promise<string[]> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((e) => (e.activityTaskScheduledEventAttributes?.activityType?.name ? [e.activityTaskScheduledEventAttributes.activityType.name] : []));
}

describe('login workflow', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let temporal: { client: Client; close: () => Promise<void> };
  let ops: Operations;
  let userId: string;

  const podman = (args: string[]) => hostEnvShell(h.state.baseHost).run(['podman', ...args]);
  const containersOf = async (id: string) =>
    (JSON.parse((await podman(['ps', '--all', '--filter', `label=ai.markco.user=${id}`, '--format', 'json'])).stdout) as { Names: string[]; State: string }[])
      .map((c) => `${c.Names[0]} ${c.State}`)
      .sort();

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    const started = await startTestWorker(h.state, { store: db.store, shells });
    worker = started.worker;
    running = worker.run();
    temporal = await temporalClient(h.state);
    ops = createOperations(temporal.client, started.taskQueue);
    userId = (await db.store.users.ensureByEmail({ email: 'ada@example.test', name: 'Ada' })).user.id;
  });

  after(async () => {
    for (const name of await containersOf(userId).catch(() => [])) await podman(['rm', '--force', '--time', '0', name.split(' ')[0]!]).catch(() => undefined);
    const stopped = await stopTestWorker(worker, running);
    await temporal.close();
    await shells.closeAll();
    await db.drop();
    if (stopped) throw stopped;
  });

  test('two concurrent logins of one user run as one and leave one runtime and one editor', async () => {
    const [a, b] = await Promise.all([ops.startLogin({ userId }), ops.startLogin({ userId })]);
    assert.equal(a.operationId, b.operationId, 'the second login joined the first');
    const result = (await a.handle.result()) as LoginResult;
    assert.deepEqual(await containersOf(userId), [`ed-${userId} running`, `rt-${userId} running`]);
    const runtimes = await db.pool.query('SELECT state, port, host_id FROM runtimes WHERE user_id = $1', [userId]);
    assert.deepEqual(runtimes.rows, [{ state: 'running', port: result.runtime.port, host_id: 'base' }]);
    const editors = await db.pool.query('SELECT state, port, sync_port, runtime_port FROM editors WHERE user_id = $1', [userId]);
    assert.deepEqual(editors.rows, [{ state: 'running', port: result.editor.port, sync_port: result.editor.syncPort, runtime_port: result.runtime.port }]);
    const leases = await db.store.ports.listForUser(userId);
    assert.deepEqual(leases.map((l) => l.purpose).sort(), ['editor', 'editor-sync', 'runtime']);
  });

  test('the runtime answers MRP with the plan limits and the editor knows its address', async () => {
    const result = (await (await ops.startLogin({ userId })).handle.result()) as LoginResult;
    const exec = await request(`http://127.0.0.1:${result.runtime.port}/mrp/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ code: '6 * 7' }),
    });
    assert.equal(((await exec.body.json()) as { result: string }).result, '42');
    const inspect = JSON.parse((await podman(['container', 'inspect', `rt-${userId}`])).stdout)[0];
    assert.equal(inspect.HostConfig.Memory, 256 * 1024 * 1024, 'the free plan limit');
    const editorRuntime = await request(`http://127.0.0.1:${result.editor.port}/api/runtime`);
    const seen = (await editorRuntime.body.json()) as { port: number; host: string };
    assert.equal(seen.port, result.runtime.port);
    assert.equal(seen.host, '127.0.0.1');
  });

  test("a new user's home holds the starter project, owned by the container user", async () => {
    const home = join(testEnvironment(h.state).usersDir, userId);
    const config = join(home, 'Projects', 'Welcome', 'mrmd.md');
    assert.match(readFileSync(config, 'utf8'), /```yaml config/);
    assert.ok(existsSync(join(home, 'Projects', 'Welcome', '01-first-notebook.md')));
    assert.ok(existsSync(join(home, 'projects')), 'the lowercase projects link');
    assert.equal(statSync(config).uid, containerUserFor((await db.store.hosts.get('base'))!.facts).uid);
  });

  test('a second login is warm: the same containers and ports, nothing made again', async () => {
    const before = (await db.store.runtimes.live(userId))!;
    const createdBefore = JSON.parse((await podman(['container', 'inspect', `rt-${userId}`])).stdout)[0].Created;
    const { handle } = await ops.startLogin({ userId });
    const result = (await handle.result()) as LoginResult;
    assert.equal(result.runtime.runtimeId, before.id);
    assert.equal(result.runtime.port, before.port);
    assert.equal(JSON.parse((await podman(['container', 'inspect', `rt-${userId}`])).stdout)[0].Created, createdBefore);
    // What an operator sees in the run: the plan found both up and answering, so nothing else ran.
    const activities = await activitiesOf(handle);
    assert.deepEqual(activities, ['planLogin', 'appendEvent']);
    const seen = (await (await request(`http://127.0.0.1:${result.editor.port}/api/runtime`)).body.json()) as { port: number };
    assert.equal(seen.port, result.runtime.port, 'the editor still points at the runtime');
  });

  test('a warm-looking login whose runtime stopped answering takes the full path and brings it back', async () => {
    const before = (await db.store.runtimes.live(userId))!;
    // The rows still say running; the container is stopped behind their back (as a crash would leave it).
    await podman(['stop', '--time', '0', `rt-${userId}`]);
    const { handle } = await ops.startLogin({ userId });
    const result = (await handle.result()) as LoginResult;
    assert.equal(result.runtime.runtimeId, before.id);
    assert.ok((await containersOf(userId)).includes(`rt-${userId} running`), 'the runtime runs again');
    const mrp = await request(`http://${result.runtime.address}:${result.runtime.port}/mrp/v1/capabilities`);
    assert.equal(mrp.statusCode, 200);
    await mrp.body.dump();
    const activities = await activitiesOf(handle);
    assert.ok(activities.includes('ensureRuntime') && activities.includes('readyEditor'), activities.join(', '));
  });

  test('after the runtime is stopped, the next login makes a new one and re-points the editor', async () => {
    const stopped = await ops.startStopRuntime({ userId });
    await stopped.handle.result();
    assert.deepEqual(await containersOf(userId), [`ed-${userId} running`]);
    assert.equal(await db.store.runtimes.live(userId), undefined);
    const result = (await (await ops.startLogin({ userId })).handle.result()) as LoginResult;
    const seen = (await (await request(`http://127.0.0.1:${result.editor.port}/api/runtime`)).body.json()) as { port: number };
    assert.equal(seen.port, result.runtime.port, 'the editor follows the new runtime');
    assert.equal((await db.pool.query(`SELECT count(*)::int AS n FROM runtimes WHERE user_id = $1 AND state = 'stopped'`, [userId])).rows[0].n, 1);
  });

  test('bad input and unknown users fail with a clear, typed error and make nothing', async () => {
    const bad = await ops.startLogin({ userId: 'not-a-uuid' } as never).catch((e: Error) => e);
    if (!(bad instanceof Error)) {
      const described = await ops.describe(bad.operationId, { waitMs: 20_000 });
      assert.equal(described?.status, 'failed');
      assert.equal(described?.error?.type, 'InvalidInput');
      assert.match(described!.error!.message, /userId: expected a lowercase UUID/);
    }
    const ghost = '00000000-0000-4000-8000-00000000dead';
    const started = await ops.startLogin({ userId: ghost });
    const described = await ops.describe(started.operationId, { waitMs: 20_000 });
    assert.equal(described?.status, 'failed');
    assert.equal(described?.error?.type, 'NotFound');
    assert.deepEqual(await containersOf(ghost), []);
  });
});
