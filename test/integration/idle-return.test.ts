import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import type { ArchiveBucket } from '../../activities/snapshots.js';
import { waitFor } from '../../infra/dev/processes.js';
import { entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { emulatorArchiveBucket, emulatorEc2, freshDatabase, liveInstancesOfUser, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { hostEnvShell, podmanOn } from '../support/netns.js';

/**
 * Idle to $0 and back, as the user and an operator see it, on real parts: a runtime on an EC2 host (the
 * emulator's instance booted as a namespace host) is checkpointed into S3 (the emulator's) and the base
 * server, its instance terminated; the next visit to /u/<id>/ gets the waiting page and then the same
 * Python process, `x` still 42 and the execution count going on.
 */
describe('idle checkpoint to $0 and the user’s return', () => {
  const h = useHarness();
  const MiB = 1024 * 1024;
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  let edge: RunningEdge;
  let watcher: BootWatcher;
  let ec2: EC2Client;
  let archives: ArchiveBucket;
  let temporal: { client: Client; close: () => Promise<void> };
  let deploymentId: string;
  let userId: string;
  let cookie: string;
  let lastCount = 0;
  const archivesDir = () => join(h.state.baseHost.dataDir, 'archives');

  const call = async (path: string, init: { body?: unknown; admin?: boolean; method?: string } = {}) => {
    const res = await request(`${edge.url}${path}`, {
      method: (init.method ?? (init.body === undefined ? 'GET' : 'POST')) as 'GET',
      headers: {
        ...(init.admin ? { authorization: `Bearer ${testAdminToken}` } : { cookie }),
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
        accept: 'application/json',
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      headersTimeout: 300_000,
      bodyTimeout: 300_000,
    });
    const text = await res.body.text();
    return { status: res.statusCode, text, json: (text.startsWith('{') ? JSON.parse(text) : undefined) as Record<string, any> };
  };
  const runtimeRow = async () => (await db.store.runtimes.live(userId))!;
  const execute = async (code: string) => {
    const rt = await runtimeRow();
    const res = await call(`/u/${userId}/proxy/${rt.port}/mrp/v1/execute`, { body: { code } });
    assert.equal(res.status, 200, res.text);
    return res.json as { result: string | null; executionCount: number };
  };
  const assertSameKernel = async (when: string) => {
    const r = await execute('x');
    assert.equal(r.result, '42', `${when}: x survived`);
    assert.ok(r.executionCount > lastCount, `${when}: the execution count continued (${r.executionCount} after ${lastCount})`);
    lastCount = r.executionCount;
  };
  const liveInstances = () => liveInstancesOfUser(ec2, userId, deploymentId);
  /** `rt-<id>` containers on the base server and every booted host. */
  const runtimeContainers = async () => {
    const mine = (names: string) => names.split('\n').filter((n) => n.startsWith(`rt-${userId}`)).length;
    let count = mine((await hostEnvShell(h.state.baseHost).run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout);
    for (const host of watcher.booted()) {
      try {
        count += mine((await podmanOn(host, ['ps', '--all', '--format', '{{.Names}}'])).stdout);
      } catch (err) {
        if (watcher.booted().some((b) => b.hostId === host.hostId)) throw err;
      }
    }
    return count;
  };
  /** The visit: the waiting page first (the runtime is being brought back), then the editor. */
  const visitUntilBack = async () => {
    const first = await request(`${edge.url}/u/${userId}/`, { headers: { cookie, accept: 'text/html' } });
    const page = await first.body.text();
    assert.equal(first.statusCode, 503, 'the first visit waits');
    assert.match(page, /Bringing back your runtime/);
    await waitFor(
      'the runtime to be back',
      async () => {
        const r = await request(`${edge.url}/u/${userId}/`, { headers: { cookie, accept: 'text/html' } });
        await r.body.text();
        if (r.statusCode !== 200) throw new Error(`status ${r.statusCode}`);
        const rt = await runtimeRow();
        if (rt.state !== 'running') throw new Error(rt.state);
      },
      { timeoutMs: 240_000, intervalMs: 500 },
    );
  };
  /** The login a visit started may still be finishing: idle is refused (409) until it has. */
  const quiet = () =>
    waitFor('no operation of the user to run', async () => {
      const entity = await temporal.client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      if (entity.running || entity.queue.length > 0) throw new Error(JSON.stringify(entity));
    }, { timeoutMs: 120_000, intervalMs: 500 });
  const idle = async () => {
    await quiet();
    const res = await call(`/api/runtimes/${userId}/idle?wait=240`, { admin: true, body: {} });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.status, 'completed', res.text);
    return res.json.result as { snapshotId: string; s3Key: string; archiveBytes: number; sha256: string; terminatedHostId: string | null };
  };

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    deploymentId = `idle-${randomBytes(3).toString('hex')}`;
    watcher = startTestBootWatcher(h.state, { deploymentId });
    ec2 = emulatorEc2(h.state);
    archives = await emulatorArchiveBucket(h.state);
    const started = await startTestWorker(h.state, { store: db.store, shells, cloud: testCloud(h.state, { deploymentId }), archives, environment: { ...testEnvironment(h.state), archivesDir: archivesDir() } });
    worker = started.worker;
    running = worker.run();
    closeWorker = () => started.connection.close();
    edge = await startTestEdge(h.state, db, started.taskQueue);
    temporal = await temporalClient(h.state);
    const login = await request(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'idle@example.test' }) });
    userId = ((await login.body.json()) as { user: { id: string } }).user.id;
    cookie = String(login.headers['set-cookie']).split(';')[0]!;
    await waitFor(
      'the runtime and editor to run',
      async () => {
        const d = await call('/dashboard');
        if (d.json?.runtime?.state !== 'running' || d.json?.editor?.state !== 'running') throw new Error(d.text);
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );
  });

  after(async () => {
    await edge?.close();
    const stopped = await stopTestWorker(worker, running);
    await closeWorker?.();
    await hostEnvShell(h.state.baseHost).run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${userId}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    await watcher?.stop();
    ec2?.destroy();
    archives?.s3.destroy();
    await temporal?.close();
    await shells?.closeAll();
    await db?.drop();
    if (stopped) throw stopped;
  });

  test('on an EC2 host: idle puts the archive in S3 and on the base server and terminates the instance; the visit brings back the same process on a host that fits it', async () => {
    await execute('x = 42');
    const moved = await call(`/api/runtimes/${userId}/migrate?wait=240`, { admin: true, body: { target_type: 't3.small' } });
    assert.equal(moved.json?.status, 'completed', moved.text);
    const onEc2 = await runtimeRow();
    assert.equal(onEc2.tier, 't3.small');
    // About 220 MiB in use: more than the free plan's base tier (256 MiB) holds with room, so the return needs t3.small again.
    // In an object with a short repr: MRP previews every variable after each execute (repr of a bare bytearray is 4x its size).
    await execute(["class Ballast:", "    def __init__(self, n): self.b = bytearray(b'\\x01') * n", "    def __repr__(self): return f'<Ballast {len(self.b)}>'", 'blob = Ballast(220 * 1024 * 1024)'].join('\n'));
    lastCount = (await execute('x')).executionCount;

    const result = await idle();
    assert.equal(result.terminatedHostId, onEc2.hostId, 'the EC2 host it ran on was terminated');
    assert.ok(result.archiveBytes > 200 * MiB, `the archive holds the blob (${result.archiveBytes} bytes)`);
    const head = await archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: result.s3Key }));
    assert.equal(head.ContentLength, result.archiveBytes, 'the archive is in S3');
    assert.equal(head.ServerSideEncryption, 'AES256');
    const local = join(archivesDir(), userId, `${result.snapshotId}.tar`);
    assert.ok(existsSync(local), 'the archive is on the base server');
    assert.deepEqual(await liveInstances(), [], 'no instance of ours is running');
    const rt = await runtimeRow();
    assert.deepEqual([rt.state, rt.hostId, rt.port], ['checkpointed', null, null]);
    assert.equal(await runtimeContainers(), 0, 'no runtime container is left anywhere');
    const dash = await call('/dashboard');
    assert.equal(dash.json.runtime.state, 'checkpointed');

    await visitUntilBack();
    const back = await runtimeRow();
    assert.equal(back.tier, 't3.small', 'the archive did not fit the base tier: a t3.small host was launched for it');
    assert.notEqual(back.hostId, 'base');
    await assertSameKernel('after the return to EC2');
    assert.equal((await execute('len(blob.b)')).result, String(220 * MiB));
    assert.equal(await runtimeContainers(), 1);
    assert.equal((await liveInstances()).length, 1);
    // The row says `deleted` once both copies are gone (the base server's first, then S3's).
    await waitFor('the used archive to be deleted', async () => {
      const snapshot = await db.store.snapshots.get(result.snapshotId);
      if (snapshot?.state !== 'deleted') throw new Error(snapshot?.state ?? 'no row');
    }, { timeoutMs: 30_000, intervalMs: 250 });
    assert.ok(!existsSync(local), 'gone from the base server');
    await assert.rejects(archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: result.s3Key })), /NotFound|404/, 'and its S3 copy');
  });

  test('a named snapshot of the runtime on the EC2 host is kept on the base server and restored there', async () => {
    await quiet();
    const onHost = await runtimeRow();
    assert.notEqual(onHost.hostId, 'base');
    const snap = await call(`/api/runtimes/${userId}/snapshot?wait=180`, { body: { name: 'on-ec2' } });
    assert.equal(snap.json?.status, 'completed', snap.text);
    assert.ok(existsSync(join(archivesDir(), userId, `${snap.json.result.snapshotId}.tar`)), 'the archive came to the base server');
    await execute('x = 7');
    const restored = await call(`/api/runtimes/${userId}/restore?wait=180`, { body: { name: 'on-ec2' } });
    assert.equal(restored.json?.status, 'completed', restored.text);
    assert.equal(restored.json.result.hostId, onHost.hostId, 'restored on the host the runtime runs on');
    const after = await runtimeRow();
    assert.deepEqual([after.hostId, after.containerName], [onHost.hostId, restored.json.result.containerName]);
    assert.equal((await execute('x')).result, '42');
    assert.equal((await execute('len(blob.b)')).result, String(220 * MiB));
    lastCount = (await execute('x')).executionCount;
    assert.equal(await runtimeContainers(), 1, 'the replaced runtime is gone from the host');
  });

  test('with the base server’s copy gone, the return (an operator’s wake) restores from S3, onto the base server when it fits', async () => {
    await execute('del blob');
    const result = await idle();
    assert.ok(result.terminatedHostId, 'the EC2 host went again');
    assert.ok(result.archiveBytes < 150 * MiB, `the archive is small now (${result.archiveBytes} bytes)`);
    rmSync(join(archivesDir(), userId, `${result.snapshotId}.tar`));

    const woke = await call(`/api/runtimes/${userId}/wake?wait=240`, { admin: true, body: {} });
    assert.equal(woke.status, 200, woke.text);
    assert.equal(woke.json.status, 'completed', woke.text);
    const back = await runtimeRow();
    assert.deepEqual([back.state, back.hostId, back.tier], ['running', 'base', 'base']);
    await assertSameKernel('after the return from S3');
    const returned = await db.pool.query(`SELECT payload FROM events WHERE type = 'runtime.returned' AND user_id = $1 ORDER BY id`, [userId]);
    assert.deepEqual(returned.rows.map((r) => r.payload.archiveFrom), ['local', 's3']);
    assert.deepEqual(await liveInstances(), []);
    assert.equal(await runtimeContainers(), 1);
  });

  test('bad requests: idle is for operators, a second idle is refused, an unknown user is 404', async () => {
    await quiet();
    assert.equal((await call(`/api/runtimes/${userId}/idle`, { body: {} })).status, 403, 'the owner cannot send their runtime idle (a signed-in user who is not an operator)');
    assert.equal((await call(`/api/runtimes/${userId}/idle`, { admin: true, body: { now: true } })).status, 400);
    const unknown = await call('/api/runtimes/00000000-0000-4000-8000-000000000000/idle', { admin: true, body: {} });
    assert.equal(unknown.status, 404, unknown.text);
    const first = await call(`/api/runtimes/${userId}/idle`, { admin: true, body: {} });
    assert.equal(first.status, 202, first.text);
    const second = await call(`/api/runtimes/${userId}/idle`, { admin: true, body: {} });
    assert.equal(second.status, 409, second.text);
    assert.match(second.json.message, /another operation \(idle\)/);
    const done = await call(`/api/operations/${first.json.operation_id}?wait=120`, { admin: true });
    assert.equal(done.json.status, 'completed', done.text);
    // Back for whatever runs after: the dashboard's visit wakes it.
    await call('/dashboard');
    await waitFor('the runtime to run again', async () => {
      if ((await runtimeRow()).state !== 'running') throw new Error('not yet');
    }, { timeoutMs: 120_000, intervalMs: 500 });
    await assertSameKernel('after the dashboard woke it');
  });
});

/** MARKCO_IDLE_STOP_EDITOR: the idle checkpoint removes the editor too; the visit makes it again, pointed at the restored runtime. */
describe('idle checkpoint that stops the editor too', () => {
  const h = useHarness();
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  let edge: RunningEdge;
  let userId: string;
  let cookie: string;
  const base = () => hostEnvShell(h.state.baseHost);

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    const started = await startTestWorker(h.state, { store: db.store, shells, environment: { ...testEnvironment(h.state), idleStopsEditor: true } });
    worker = started.worker;
    running = worker.run();
    closeWorker = () => started.connection.close();
    edge = await startTestEdge(h.state, db, started.taskQueue);
    const login = await request(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'idle-editor@example.test' }) });
    userId = ((await login.body.json()) as { user: { id: string } }).user.id;
    cookie = String(login.headers['set-cookie']).split(';')[0]!;
  });
  after(async () => {
    await edge?.close();
    const stopped = await stopTestWorker(worker, running);
    await closeWorker?.();
    await base().run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${userId}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    await shells?.closeAll();
    await db?.drop();
    if (stopped) throw stopped;
  });

  test('both containers go (no S3 configured: the archive stays on the base server); the visit brings both back with x intact', async () => {
    const dashboard = async () => {
      const r = await request(`${edge.url}/dashboard`, { headers: { cookie, accept: 'application/json' } });
      return (await r.body.json()) as { runtime: { state: string; port: number }; editor: { state: string } };
    };
    const ready = () =>
      waitFor('the runtime and editor to run', async () => {
        const d = await dashboard();
        if (d.runtime.state !== 'running' || d.editor.state !== 'running') throw new Error(JSON.stringify(d));
        return d;
      }, { timeoutMs: 120_000, intervalMs: 250 });
    const execute = async (port: number, code: string) => {
      const r = await request(`${edge.url}/u/${userId}/proxy/${port}/mrp/v1/execute`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
      const text = await r.body.text();
      assert.equal(r.statusCode, 200, text);
      return JSON.parse(text) as { result: string };
    };
    let d = await ready();
    await execute(d.runtime.port, 'x = 42');
    const idle = await request(`${edge.url}/api/runtimes/${userId}/idle?wait=120`, { method: 'POST', headers: { authorization: `Bearer ${testAdminToken}`, 'content-type': 'application/json' }, body: '{}' });
    const body = (await idle.body.json()) as { status: string; result: { editorStopped: boolean; s3Key: string | null } };
    assert.equal(body.status, 'completed', JSON.stringify(body));
    assert.deepEqual([body.result.editorStopped, body.result.s3Key], [true, null]);
    const names = (await base().run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n');
    assert.deepEqual(names.filter((n) => n.endsWith(userId)), [], 'neither container is left');
    const waiting = await request(`${edge.url}/u/${userId}/`, { headers: { cookie, accept: 'application/json' } });
    assert.equal(waiting.statusCode, 503);
    assert.equal(((await waiting.body.json()) as { status: string }).status, 'starting', 'no editor yet: the visit starts everything');
    d = await ready();
    assert.equal((await execute(d.runtime.port, 'x')).result, '42');
  });
});
