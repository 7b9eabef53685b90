import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { EC2Client } from '@aws-sdk/client-ec2';
import { HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { WithStartWorkflowOperation, type Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { HostShells } from '../../activities/host-shell.js';
import type { ArchiveBucket } from '../../activities/snapshots.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { createS3Client } from '../../lib/aws.js';
import { decodeOperationId } from '../../lib/operations.js';
import type { DeleteAccountResult } from '../../workflows/contracts/accounts.js';
import { codeHintSignal, deleteAccountUpdate, entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import { emulatorArchiveBucket, emulatorCredentials, emulatorEc2, freshDatabase, liveInstancesOfUser, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { edgeClient, type EdgeAnswer, type TestSession } from '../support/edge-client.js';
import { hostEnvShell } from '../support/netns.js';

/**
 * A TCP relay in front of the S3 emulator for the worker's S3 client: `cut()` drops every connection and
 * refuses new ones until `restore()`, a real network failure on the way to a real S3 (not a fake client).
 */
async function startRelay(endpoint: string): Promise<{ url: string; cut(): void; restore(): void; close(): Promise<void> }> {
  const target = new URL(endpoint);
  let refusing = false;
  const open = new Set<Socket>();
  const server: Server = createServer((client) => {
    if (refusing) return void client.destroy();
    const upstream = connect(Number(target.port), target.hostname);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      refusing = true;
      for (const s of open) s.destroy();
    },
    restore: () => {
      refusing = false;
    },
    close: () => {
      for (const s of open) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/**
 * Account deletion as the user and an operator do it, on real parts: the edge, the worker, podman and
 * CRIU on the base server, the EC2/S3 emulator with a reserved host booted as a namespace host.
 */
describe('account deletion', () => {
  const h = useHarness();
  const email = 'Delete.Me@example.test';
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  let edge: RunningEdge;
  let watcher: BootWatcher;
  let ec2: EC2Client;
  let archives: ArchiveBucket;
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let temporal: { client: Client; close: () => Promise<void> };
  let deploymentId: string;
  let taskQueue: string;
  let userId: string;
  let me: TestSession;
  /** Another user, collaborating with the one deleted in both directions; their account stays. */
  let bob: TestSession | undefined;
  const archivesDir = () => join(h.state.baseHost.dataDir, 'archives');
  const home = () => join(testEnvironment(h.state).usersDir, userId);
  const base = () => hostEnvShell(h.state.baseHost);

  const { call, devLogin, wsOpen } = edgeClient(() => edge.url);
  const admin = { authorization: `Bearer ${testAdminToken}` };
  const dashboard = async (session: Pick<TestSession, 'cookie'>) => (await call('/dashboard', { session })).status;
  /** A WebSocket event awaited with a bound, so a test that fails says what it waited for instead of hanging. */
  const within = <T>(what: string, ms: number, p: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
  };
  /** `from` invites `to` to a project of theirs; `to` takes the link and opens a WebSocket into `from`'s editor. */
  const collaborate = async (from: TestSession, to: TestSession) => {
    const made = await call('/api/invites', { session: from, body: { project: 'notes', role: 'editor' } });
    assert.equal(made.status, 201, made.text);
    const joined = await call(`/join/${made.json.token}`, { session: to, headers: { accept: 'application/json' } });
    assert.equal(joined.status, 303, joined.text);
    const { ws } = await within(`a WebSocket of ${to.id} into ${from.id}'s editor`, 30_000, wsOpen(`/u/${from.id}/events`, to));
    assert.ok(ws, `${to.id} has a WebSocket into ${from.id}'s editor`);
    ws.on('error', () => undefined);
    // Wrapped: an async function's returned promise would be awaited through.
    return { closed: new Promise<void>((resolve) => ws.once('close', () => resolve())) };
  };
  const membershipsOf = async (id: string, live: boolean) =>
    (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM memberships WHERE (owner_id = $1 OR member_id = $1) ${live ? 'AND revoked_at IS NULL' : ''}`, [id])).rows[0]!.n;
  const execute = async (code: string) => {
    const rt = (await db.store.runtimes.live(userId))!;
    const res = await call(`/u/${userId}/proxy/${rt.port}/mrp/v1/execute`, { session: me, body: { code } });
    assert.equal(res.status, 200, res.text);
    return res.json as { result: string | null };
  };
  const done = async (res: EdgeAnswer) => {
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.status, 'completed', res.text);
    return res.json.result;
  };
  const containersOnBase = async () => (await base().run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean);
  const liveInstances = () => liveInstancesOfUser(ec2, userId, deploymentId);
  const s3Keys = async () => (await archives.s3.send(new ListObjectsV2Command({ Bucket: archives.bucket, Prefix: `archives/${userId}/` }))).Contents?.map((o) => o.Key) ?? [];
  /** Waits until the deletion run keeps failing on S3 (the relay is cut): the activity has been tried at least twice. */
  const stuckOnS3 = (operationId: string) =>
    waitFor('the deletion to be retrying its S3 delete', async () => {
      const ids = decodeOperationId(operationId)!;
      const d = await temporal.client.workflow.getHandle(ids.workflowId, ids.runId).describe();
      const pending = d.raw.pendingActivities ?? [];
      const s3Step = pending.find((a) => ['deleteSnapshot', 'purgeUserArchives'].includes(a.activityType?.name ?? ''));
      if (!s3Step || (s3Step.attempt ?? 0) < 2) throw new Error(JSON.stringify(pending.map((a) => [a.activityType?.name, a.attempt])));
    }, { timeoutMs: 120_000, intervalMs: 500 });

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    deploymentId = `del-${randomBytes(3).toString('hex')}`;
    watcher = startTestBootWatcher(h.state, { deploymentId });
    ec2 = emulatorEc2(h.state);
    archives = await emulatorArchiveBucket(h.state);
    relay = await startRelay(h.state.moto.endpoint);
    // The worker reaches the same bucket through the relay; the test looks at it directly.
    const workerArchives = { ...archives, s3: createS3Client({ region: 'ca-central-1', endpoint: relay.url, snapshotBucket: archives.bucket }, emulatorCredentials) };
    const started = await startTestWorker(h.state, {
      store: db.store,
      shells,
      cloud: testCloud(h.state, { deploymentId }),
      archives: workerArchives,
      environment: { ...testEnvironment(h.state), archivesDir: archivesDir() },
    });
    worker = started.worker;
    taskQueue = started.taskQueue;
    running = worker.run();
    closeWorker = async () => {
      await started.connection.close();
      workerArchives.s3.destroy();
    };
    edge = await startTestEdge(h.state, db, started.taskQueue);
    temporal = await temporalClient(h.state);
    me = await devLogin(email);
    userId = me.id;
    await waitFor('the runtime and editor to run', async () => {
      const d = await call('/dashboard', { session: me });
      if (d.json?.runtime?.state !== 'running' || d.json?.editor?.state !== 'running') throw new Error(d.text);
    }, { timeoutMs: 120_000, intervalMs: 250 });
  });

  after(async () => {
    await edge?.close();
    const stopped = await stopTestWorker(worker, running);
    await closeWorker?.();
    for (const id of [userId, bob?.id].filter(Boolean)) {
      await base().run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${id}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    }
    await watcher?.stop();
    ec2?.destroy();
    archives?.s3.destroy();
    await relay?.close();
    await temporal?.close();
    await shells?.closeAll();
    await db?.drop();
    if (stopped) throw stopped;
  });

  test('a stray or wrong request deletes nothing: no confirmation or the wrong email is 400, no session is 401', async () => {
    const missing = await call('/api/account', { method: 'DELETE', session: me, body: {} });
    assert.equal(missing.status, 400, missing.text);
    assert.match(missing.json.message, /confirm/);
    const wrong = await call('/api/account', { method: 'DELETE', session: me, body: { confirm: 'someone-else@example.test' } });
    assert.equal(wrong.status, 400, wrong.text);
    assert.match(wrong.json.message, /email address/);
    assert.equal((await call('/api/account', { method: 'DELETE', session: me, body: { confirm: email, everything: true } })).status, 400, 'unknown fields are refused');
    assert.equal((await call('/api/account', { method: 'DELETE', session: { cookie: 'markco_session=nope' }, body: { confirm: email } })).status, 401);
    assert.equal((await call(`/api/users/${userId}`, { method: 'DELETE', session: me })).status, 403, "the user's own session is not an operator's");
    assert.equal((await call('/api/users/not-a-user', { method: 'DELETE', headers: admin })).status, 400);
    assert.equal((await call(`/api/users/${userId}`, { method: 'DELETE', headers: admin, body: { confirm: email } })).status, 400, 'an operator sends no body: one is a mistake');
    assert.equal((await call('/api/users/00000000-0000-4000-8000-000000000000', { method: 'DELETE', headers: admin })).status, 404);

    const row = await db.pool.query<{ deleting_at: Date | null }>('SELECT deleting_at FROM users WHERE id = $1', [userId]);
    assert.equal(row.rows[0]?.deleting_at, null, 'the user is not marked');
    assert.equal(await dashboard(me), 200, 'the session still works');
    assert.ok((await containersOnBase()).includes(`rt-${userId}`), 'the runtime still runs');
  });

  test('DELETE /api/account removes sessions, memberships, containers, snapshots (local and S3), files and reserved hosts; a run terminated mid-way and one whose S3 delete fails are finished by the next', async () => {
    // What the user has: a file in their home, a named snapshot (base server and S3), a sandbox, a second
    // signed-in device, a WebSocket open into the editor, an EC2 host reserved for them, and a
    // collaborator in each direction.
    await execute("open('/home/user/notes.md', 'w').write('private notes')");
    assert.ok(existsSync(join(home(), 'notes.md')));
    const snapshot = await done(await call(`/api/runtimes/${userId}/snapshot?wait=110`, { session: me, body: { name: 'keep' } }));
    const localArchive = join(archivesDir(), userId, `${snapshot.snapshotId}.tar`);
    assert.ok(existsSync(localArchive), 'the snapshot is on the base server');
    assert.equal((await archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: snapshot.s3Key }))).ContentLength, snapshot.sizeBytes, 'and in S3');
    const sandbox = await done(await call(`/api/runtimes/${userId}/sandbox?wait=110`, { session: me, body: {} }));
    assert.ok((await containersOnBase()).includes(sandbox.containerName));
    const other = await devLogin(email);
    assert.equal(await dashboard(other), 200, 'a second device is signed in');
    await temporal.client.workflow.getHandle(`runtime/${userId}`).signal(codeHintSignal, { kind: 'big-ram-hint', at: Date.now(), source: 'test' });
    const reserved = await waitFor('an EC2 host reserved for the user', async () => {
      const r = await db.pool.query<{ id: string; state: string }>(`SELECT id, state FROM hosts WHERE reserved_for = $1`, [userId]);
      if (r.rows[0]?.state !== 'ready') throw new Error(JSON.stringify(r.rows));
      return r.rows[0].id;
    }, { timeoutMs: 180_000, intervalMs: 500 });
    assert.equal((await liveInstances()).length, 1);
    const { ws } = await within('a WebSocket into the editor', 30_000, wsOpen(`/u/${userId}/events`, me));
    assert.ok(ws, 'a WebSocket is open into the editor');
    ws.on('error', () => undefined);
    const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    // Bob works in the user's project and the user in Bob's, each with a WebSocket open.
    bob = await devLogin('bob.collaborator@example.test');
    await waitFor("Bob's editor to run", async () => {
      const d = await call('/dashboard', { session: bob });
      if (d.json?.editor?.state !== 'running') throw new Error(d.text);
    }, { timeoutMs: 120_000, intervalMs: 250 });
    const bobCut = await collaborate(me, bob);
    const userCut = await collaborate(bob, me);
    assert.equal(await membershipsOf(userId, true), 2);

    // S3 fails from now on: the run gets as far as the snapshots and keeps retrying there.
    relay.cut();
    const deleted = await call('/api/account', { method: 'DELETE', session: me, body: { confirm: email.toUpperCase() } });
    assert.equal(deleted.status, 202, deleted.text);
    assert.match(String(deleted.headers['set-cookie']), /markco_session=;.*Max-Age=0/, 'the cookie is cleared');
    const firstRun = deleted.json.operation_id as string;
    assert.ok(decodeOperationId(firstRun)?.workflowId === `user/${userId}/delete-account`);
    await within("the user's WebSocket to be cut", 10_000, wsClosed);
    await within("Bob's WebSocket into the user's editor to be cut", 10_000, bobCut.closed);
    await within("the user's WebSocket into Bob's editor to be cut", 10_000, userCut.closed);
    assert.equal(await membershipsOf(userId, true), 0, 'the memberships on both sides are revoked');
    assert.equal(await dashboard(bob), 200, 'Bob stays signed in');
    assert.equal(await dashboard(me), 401, 'the session stopped working at once');
    assert.equal(await dashboard(other), 401, 'every session of the user did');
    assert.equal((await within('a WebSocket to be refused', 30_000, wsOpen(`/u/${userId}/events`, me))).status, 401, 'the editor cannot be reached again');
    const joined = await call(`/api/users/${userId}`, { method: 'DELETE', headers: admin });
    assert.equal(joined.status, 202, joined.text);
    assert.equal(joined.json.operation_id, firstRun, 'a second request joins the running deletion');

    await stuckOnS3(firstRun);
    // Half-way: everything but S3 and the row is gone, and the user stays signed out and refused.
    const marked = await db.pool.query<{ deleting_at: Date | null }>('SELECT deleting_at FROM users WHERE id = $1', [userId]);
    assert.ok(marked.rows[0]?.deleting_at, 'the user is marked as being deleted');
    assert.deepEqual((await containersOnBase()).filter((n) => n.includes(userId) || n === sandbox.containerName), [], 'runtime, editor and sandbox are gone');
    assert.ok(!existsSync(home()), 'the home directory is gone');
    assert.deepEqual(await liveInstances(), [], 'the reserved instance is terminated');
    // Signing in again is refused, saying why; no session is handed out.
    const signInAgain = await call('/auth/dev/login', { body: { email } });
    assert.equal(signInAgain.status, 403, signInAgain.text);
    assert.match(signInAgain.json.message, /being deleted/);
    assert.equal(signInAgain.headers['set-cookie'], undefined, 'no session cookie');
    assert.ok(!(await containersOnBase()).some((n) => n.includes(userId)), 'nor containers');
    const entity = await temporal.client.workflow.getHandle(`runtime/${userId}`).describe();
    assert.equal(entity.status.name, 'RUNNING');

    // The run dies mid-way (an operator terminates it): the user stays marked, signed out, refused.
    const ids = decodeOperationId(firstRun)!;
    await temporal.client.workflow.getHandle(ids.workflowId, ids.runId).terminate('test: the deletion fails mid-way');
    // Until the entity has seen its child end, a request would join the ended run.
    await waitFor('the entity to see the run end', async () => {
      const state = await temporal.client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      if (state.running || !state.deleting) throw new Error(JSON.stringify(state));
    }, { timeoutMs: 30_000, intervalMs: 200 });
    assert.equal(await dashboard(other), 401);
    assert.ok((await db.pool.query('SELECT 1 FROM users WHERE id = $1 AND deleting_at IS NOT NULL', [userId])).rowCount === 1);

    // An operator starts it again, from the start; S3 still fails once more, then comes back.
    const restarted = await call(`/api/users/${userId}`, { method: 'DELETE', headers: admin });
    assert.equal(restarted.status, 202, restarted.text);
    const secondRun = restarted.json.operation_id as string;
    assert.notEqual(secondRun, firstRun, 'a new run');
    await stuckOnS3(secondRun);
    relay.restore();
    const finished = await waitFor('the second run to finish', async () => {
      const state = await call(`/api/operations/${secondRun}?wait=60`, { headers: admin });
      if (state.json?.status === 'running') throw new Error(state.text);
      return state;
    }, { timeoutMs: 300_000, intervalMs: 100 });
    assert.equal(finished.json?.status, 'completed', finished.text);
    const result = finished.json.result as DeleteAccountResult;
    assert.equal(result.userRemoved, true);

    for (const session of [me, other]) assert.equal(await dashboard(session), 401);
    assert.deepEqual((await containersOnBase()).filter((n) => n.includes(userId) || n === sandbox.containerName), []);
    assert.ok(!existsSync(localArchive) && !existsSync(join(archivesDir(), userId)), 'the archive is gone from the base server');
    await assert.rejects(archives.s3.send(new HeadObjectCommand({ Bucket: archives.bucket, Key: snapshot.s3Key })), /NotFound|404/, 'and from S3');
    assert.deepEqual(await s3Keys(), [], 'nothing is left under the user’s prefix');
    assert.ok(!existsSync(home()));
    const left = await db.pool.query(
      `SELECT (SELECT count(*) FROM users WHERE id = $1)::int AS users, (SELECT count(*) FROM sessions WHERE user_id = $1)::int AS sessions,
              (SELECT count(*) FROM runtimes WHERE user_id = $1)::int AS runtimes, (SELECT count(*) FROM editors WHERE user_id = $1)::int AS editors,
              (SELECT count(*) FROM snapshots WHERE user_id = $1)::int AS snapshots, (SELECT count(*) FROM port_leases WHERE user_id = $1)::int AS leases,
              (SELECT count(*) FROM events WHERE user_id = $1)::int AS linked_events`,
      [userId],
    );
    assert.deepEqual(left.rows[0], { users: 0, sessions: 0, runtimes: 0, editors: 0, snapshots: 0, leases: 0, linked_events: 0 });
    assert.equal(await membershipsOf(userId, false), 0, 'no membership names the user');
    assert.equal(await dashboard(bob), 200, "Bob's account is untouched");
    assert.ok((await containersOnBase()).includes(`ed-${bob.id}`), "and so are Bob's containers");
    const host = await db.store.hosts.get(reserved);
    assert.deepEqual([host?.state, host?.reservedFor], ['terminated', null]);
    // The log keeps what happened under the user's id as plain text, without the user's own words.
    const events = await db.pool.query<{ type: string; payload: Record<string, unknown> }>(`SELECT type, payload FROM events WHERE payload->>'unrecordedUserId' = $1 ORDER BY id`, [userId]);
    const types = events.rows.map((e) => e.type);
    for (const t of ['user.login-ready', 'runtime.snapshot-started', 'account.deletion-started', 'account.deleted']) assert.ok(types.includes(t), `${t} is kept (${types.join(', ')})`);
    assert.ok(events.rows.every((e) => !('name' in e.payload)), 'snapshot names are not kept');
    assert.equal(events.rows.find((e) => e.type === 'account.deleted')?.payload.requestedBy, 'operator');

    await waitFor('the user’s entity to end', async () => {
      const d = await temporal.client.workflow.getHandle(`runtime/${userId}`).describe();
      if (d.status.name !== 'COMPLETED') throw new Error(d.status.name);
    }, { timeoutMs: 30_000, intervalMs: 250 });
  });

  test('deleting again: the operator route answers 404, and the workflow run again finds nothing and completes', async () => {
    assert.equal((await call(`/api/users/${userId}`, { method: 'DELETE', headers: admin })).status, 404);
    const ref = await temporal.client.workflow.executeUpdateWithStart(deleteAccountUpdate, {
      args: [{ userId }],
      startWorkflowOperation: new WithStartWorkflowOperation('userRuntime', {
        workflowId: `runtime/${userId}`,
        taskQueue,
        args: [{ userId }],
        workflowIdConflictPolicy: 'USE_EXISTING',
      }),
    });
    const result = (await temporal.client.workflow.getHandle(ref.workflowId, ref.runId).result()) as DeleteAccountResult;
    assert.deepEqual([result.userRemoved, result.snapshotsDeleted, result.runtimeRemoved, result.hostsTerminated], [false, 0, false, []]);
  });
});
