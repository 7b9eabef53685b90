import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { probeHostFacts } from '../../activities/hosts.js';
import { removeSandboxNetworkArgs } from '../../activities/podman-commands.js';
import { sandboxNetworkName, type ArchiveBucket } from '../../activities/snapshots.js';
import { waitFor } from '../../infra/dev/processes.js';
import { ensureSandboxExpirySchedule } from '../../lib/schedules.js';
import { connectionTo, emulatorArchiveBucket, freshDatabase, registerBaseHost, startTestWorker, stopTestWorker, temporalClient, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { hostEnvShell, machineImageStore, podmanOn, storageConf } from '../support/netns.js';

/**
 * Named snapshots and AI sandboxes through the compute API, as the owner uses them, on real parts (the
 * edge, the worker, podman and CRIU on the base server, S3 of the emulator).
 */
describe('named snapshots and sandbox forks', () => {
  const h = useHarness();
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  let edge: RunningEdge;
  let archives: ArchiveBucket;
  let temporal: { client: Client; close: () => Promise<void> };
  let userId: string;
  let cookie: string;
  const scheduleId = `test-sandbox-expiry-${randomBytes(3).toString('hex')}`;
  const base = () => hostEnvShell(h.state.baseHost);
  const usersDir = () => testEnvironment(h.state).usersDir;

  const call = async (path: string, init: { body?: unknown; admin?: boolean; method?: 'GET' | 'POST' | 'DELETE'; cookie?: string } = {}) => {
    const res = await request(`${edge.url}${path}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: {
        ...(init.admin ? { authorization: `Bearer ${testAdminToken}` } : { cookie: init.cookie ?? cookie }),
        ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}),
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
  const executeIn = async (address: string, port: number, code: string) => {
    const res = await request(`http://${address}:${port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
    const body = (await res.body.json()) as { result: string | null };
    assert.equal(res.statusCode, 200, JSON.stringify(body));
    return body;
  };
  const containers = async (prefix: string) => (await base().run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n.startsWith(prefix));
  /** The owner's operation, waited for. */
  const done = async (res: { status: number; text: string; json: Record<string, any> }) => {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.status, 'completed', res.text);
    return res.json.result;
  };

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    archives = await emulatorArchiveBucket(h.state);
    const started = await startTestWorker(h.state, { store: db.store, shells, archives });
    worker = started.worker;
    running = worker.run();
    closeWorker = () => started.connection.close();
    edge = await startTestEdge(h.state, db, started.taskQueue);
    temporal = await temporalClient(h.state);
    await ensureSandboxExpirySchedule(temporal.client, started.taskQueue, { every: '3s', scheduleId });
    const login = await request(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'snapshots@example.test' }) });
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
    await temporal?.client.schedule.getHandle(scheduleId).delete().catch(() => undefined);
    // A failed test may leave a sandbox: its container, network and firewall rules go with the run.
    for (const s of userId ? await db.store.sandboxes.liveForUser(userId) : []) {
      await base().run(['podman', 'rm', '--force', '--time', '0', s.containerName], { okExitCodes: [0, 1] }).catch(() => undefined);
      await base().run(removeSandboxNetworkArgs(sandboxNetworkName(s.id), sandboxNetworkName(s.id))).catch(() => undefined);
    }
    await edge?.close();
    const stopped = await stopTestWorker(worker, running);
    await closeWorker?.();
    await base().run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${userId}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    await temporal?.close();
    archives?.s3.destroy();
    await shells?.closeAll();
    await db?.drop();
    if (stopped) throw stopped;
  });

  test("snapshot 'before' at x = 1, x = 2, restore 'before': x is 1, and restoring it again works", async () => {
    await execute('x = 1');
    const snap = await done(await call(`/api/runtimes/${userId}/snapshot?wait=120`, { body: { name: 'before' } }));
    assert.equal(snap.name, 'before');
    const head = await archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: snap.s3Key }));
    assert.equal(head.ContentLength, snap.sizeBytes, 'the snapshot is in S3 too');
    assert.equal((await execute('x')).result, '1', 'the user kept working through the snapshot (--leave-running)');
    await execute('x = 2');

    const list = await call(`/api/runtimes/${userId}/snapshots`);
    assert.deepEqual(list.json.snapshots.map((s: { name: string; state: string; on_base_server: boolean; in_s3: boolean }) => [s.name, s.state, s.on_base_server, s.in_s3]), [['before', 'ready', true, true]]);

    const first = await done(await call(`/api/runtimes/${userId}/restore?wait=120`, { body: { name: 'before' } }));
    assert.equal(first.snapshotId, snap.snapshotId);
    assert.equal((await execute('x')).result, '1', 'restored to the snapshot');
    await execute('x = 3');
    const second = await done(await call(`/api/runtimes/${userId}/restore?wait=120`, { body: { snapshot_id: snap.snapshotId } }));
    assert.notEqual(second.containerName, first.containerName, 'each restore has a container name of its own');
    assert.equal((await execute('x')).result, '1', 'the same snapshot restored twice');
    assert.deepEqual(await containers(`rt-${userId}`), [second.containerName], 'the replaced runtimes are gone: one runtime container');
    const leases = (await db.store.ports.listForUser(userId)).filter((l) => l.purpose === 'runtime');
    assert.deepEqual(leases.map((l) => l.port), [(await runtimeRow()).port], 'one runtime port is leased: the current one');
    const dash = await call('/dashboard');
    assert.equal(dash.json.editor.state, 'running', 'the editor points at the restored runtime');
  });

  test('bad requests: an unknown snapshot is 404, a taken name and a request while another operation runs are 409, another user gets 403', async () => {
    const unknown = await call(`/api/runtimes/${userId}/restore`, { body: { snapshot_id: '00000000-0000-4000-8000-000000000000' } });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal((await call(`/api/runtimes/${userId}/restore`, { body: { name: 'nope' } })).status, 404);
    const both = await call(`/api/runtimes/${userId}/restore`, { body: { name: 'before', snapshot_id: '00000000-0000-4000-8000-000000000000' } });
    assert.equal(both.status, 400);
    assert.match(both.json.message, /exactly one of snapshot_id and name/);
    assert.equal((await call(`/api/runtimes/${userId}/snapshot`, { body: { name: '../etc' } })).status, 400);
    assert.equal((await call(`/api/runtimes/${userId}/snapshot`, { body: { name: 'before' } })).status, 409, 'the name is taken');
    assert.equal((await call(`/api/runtimes/${userId}/snapshots/00000000-0000-4000-8000-000000000000`, { method: 'DELETE' })).status, 404);

    const other = await request(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'someone-else@example.test' }) });
    await other.body.text();
    const otherCookie = String(other.headers['set-cookie']).split(';')[0]!;
    const forbidden = await call(`/api/runtimes/${userId}/snapshots`, { cookie: otherCookie });
    assert.equal(forbidden.status, 403, forbidden.text);
    assert.equal((await call(`/api/runtimes/${userId}/sandbox`, { cookie: otherCookie, body: {} })).status, 403);

    const started = await call(`/api/runtimes/${userId}/snapshot`, { body: { name: 'busy' } });
    assert.equal(started.status, 202, started.text);
    const refused = await call(`/api/runtimes/${userId}/restore`, { body: { name: 'before' } });
    assert.equal(refused.status, 409, refused.text);
    assert.match(refused.json.message, /another operation \(snapshot\)/);
    const finished = await call(`/api/operations/${started.json.operation_id}?wait=120`);
    assert.equal(finished.json.status, 'completed', finished.text);

    const deleted = await call(`/api/runtimes/${userId}/snapshots/${finished.json.result.snapshotId}?wait=60`, { method: 'DELETE' });
    assert.equal(deleted.json.status, 'completed', deleted.text);
    await assert.rejects(archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: finished.json.result.s3Key })), /NotFound|404/);
    const names = (await call(`/api/runtimes/${userId}/snapshots`)).json.snapshots.map((s: { name: string }) => s.name);
    assert.deepEqual(names, ['before']);
  });

  test('a sandbox fork sees x and changes only its own copy; it cannot reach the runtime or the host; DELETE removes it', async () => {
    await execute('x = 42');
    const sandbox = await done(await call(`/api/runtimes/${userId}/sandbox?wait=120`, { body: {} }));
    assert.match(sandbox.containerName, /^sb-/);
    assert.equal((await executeIn(sandbox.address, sandbox.port, 'x')).result, '42', 'the fork has the runtime’s variables');
    await executeIn(sandbox.address, sandbox.port, 'x = 99');
    await executeIn(sandbox.address, sandbox.port, "import os; open(os.path.expanduser('~/sandbox-was-here'), 'w').write('fork')");
    assert.equal((await execute('x')).result, '42', 'the user’s runtime is unchanged');
    assert.ok(!existsSync(join(usersDir(), userId, 'sandbox-was-here')), 'the fork wrote into its own copy of the files, not the user’s');

    const rt = await runtimeRow();
    const runtimeIp = (await base().run(['podman', 'inspect', rt.containerName, '--format', '{{.NetworkSettings.IPAddress}}'])).stdout.trim();
    const editor = (await db.store.editors.live(userId))!;
    const probe = `
import socket
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return 'open'
    except Exception as e:
        return type(e).__name__
gateway = [l.split() for l in open('/proc/net/route') if l.split()[1] == '00000000'][0][2]
gateway = '.'.join(str(int(gateway[i:i+2], 16)) for i in (6, 4, 2, 0))
[reach('127.0.0.1', 8888), reach('${runtimeIp}', 8888), reach(gateway, ${editor.port}), reach(gateway, ${rt.port})]`;
    const reached = await executeIn(sandbox.address, sandbox.port, probe);
    const [own, runtime, editorPort, runtimePort] = JSON.parse(reached.result!.replace(/'/g, '"')) as string[];
    assert.equal(own, 'open', 'the probe itself works (the fork reaches its own MRP)');
    assert.notEqual(runtime, 'open', 'the fork cannot reach the user’s runtime on its network');
    assert.notEqual(editorPort, 'open', 'nor the editor on the host');
    assert.notEqual(runtimePort, 'open', 'nor the runtime through the host');

    const live = await call(`/api/runtimes/${userId}/sandboxes`);
    assert.deepEqual(live.json.sandboxes.map((s: { sandbox_id: string }) => s.sandbox_id), [sandbox.sandboxId]);
    const destroyed = await call(`/api/runtimes/${userId}/sandbox/${sandbox.sandboxId}?wait=60`, { method: 'DELETE' });
    assert.equal(destroyed.json.status, 'completed', destroyed.text);
    assert.deepEqual(await containers(sandbox.containerName), [], 'its container is gone');
    assert.equal((await db.store.sandboxes.get(sandbox.sandboxId))!.state, 'stopped');
    assert.equal((await base().run(['podman', 'network', 'exists', `markco-${sandbox.containerName}`], { okExitCodes: [0, 1] })).exitCode, 1, 'and its network');
    assert.equal((await call(`/api/runtimes/${userId}/sandbox/00000000-0000-4000-8000-000000000000`, { method: 'DELETE' })).status, 404);
    assert.equal((await execute('x')).result, '42');
  });

  test('an operator forks the sandbox onto another host: it runs there with x, and goes with DELETE', async () => {
    const remote = h.state.hosts[1]!;
    // The runtime AMI has the images baked in: the namespace host reads the machine's built images.
    writeFileSync(remote.env.CONTAINERS_STORAGE_CONF, storageConf(remote.dir, machineImageStore));
    await db.store.hosts.upsert({ id: remote.hostId, kind: 'ec2', address: remote.address, state: 'booting', sshUser: remote.sshUser, hostKey: remote.hostKey, instanceId: `i-${remote.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.small' });
    await db.store.hosts.markReady(remote.hostId, await probeHostFacts(shells.for(connectionTo(remote))));
    assert.equal((await call(`/api/runtimes/${userId}/sandbox`, { body: { host_id: remote.hostId } })).status, 403, 'only operators choose the host');
    const sandbox = await done(await call(`/api/runtimes/${userId}/sandbox?wait=120`, { admin: true, body: { host_id: remote.hostId } }));
    assert.deepEqual([sandbox.hostId, sandbox.address], [remote.hostId, remote.address]);
    assert.equal((await executeIn(sandbox.address, sandbox.port, 'x')).result, '42');
    const there = async () => (await podmanOn(remote, ['ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n').filter((n) => n === sandbox.containerName);
    assert.deepEqual(await there(), [sandbox.containerName]);
    const destroyed = await call(`/api/runtimes/${userId}/sandbox/${sandbox.sandboxId}?wait=60`, { admin: true, method: 'DELETE' });
    assert.equal(destroyed.json.status, 'completed', destroyed.text);
    assert.deepEqual(await there(), []);
  });

  test('an expired sandbox is destroyed by the schedule', async () => {
    const sandbox = await done(await call(`/api/runtimes/${userId}/sandbox?wait=120`, { body: { ttl_seconds: 10 } }));
    assert.deepEqual(await containers(sandbox.containerName), [sandbox.containerName]);
    await waitFor(
      'the schedule to destroy the expired sandbox',
      async () => {
        if ((await db.store.sandboxes.get(sandbox.sandboxId))!.state !== 'stopped') throw new Error('still live');
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    assert.deepEqual(await containers(sandbox.containerName), []);
    const events = await db.pool.query(`SELECT payload FROM events WHERE type = 'sandbox.destroyed' AND runtime_id = $1`, [sandbox.sandboxId]);
    assert.equal(events.rows[0]?.payload.reason, 'expired');
  });
});
