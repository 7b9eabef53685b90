import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import type { Client } from '@temporalio/client';
import { request } from 'undici';
import { waitFor } from '../../infra/dev/processes.js';
import { createS3Client } from '../../lib/aws.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import { stepQuery } from '../../workflows/contracts/messages.js';
import type { IdleCheckpointResult } from '../../workflows/contracts/snapshots.js';
import { emulatorCredentials, freshDatabase, registerBaseHost, temporalClient, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { hostEnvShell } from '../support/netns.js';
import { startWorkerProcess, testWorkerEnv, type WorkerProcess } from '../support/worker-process.js';

/**
 * The worker dies (SIGKILL of its process group) while an idle checkpoint uploads its archive to S3, and
 * a new worker process takes over: the checkpoint completes once, with one whole S3 object and no
 * unfinished multipart upload left billing, and the next login brings the same Python process back.
 */
describe('idle checkpoint across a worker crash', () => {
  const h = useHarness();
  let db: TestDatabase;
  let temporal: { client: Client; close: () => Promise<void> };
  let ops: Operations;
  let s3: S3Client;
  let workerEnv: Record<string, string>;
  const workers: WorkerProcess[] = [];
  let userId: string;
  const bucket = `markco-idle-crash-${randomBytes(3).toString('hex')}`;
  const logDir = () => join(h.state.runDir, 'idle-crash');

  const startWorker = async (name: string) => {
    const w = startWorkerProcess(workerEnv, { logDir: logDir(), name });
    workers.push(w);
    await w.ready;
    return w;
  };
  const execute = async (code: string) => {
    const rt = (await db.store.runtimes.live(userId))!;
    const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body: JSON.stringify({ code }), headersTimeout: 120_000 });
    const text = await res.body.text();
    assert.equal(res.statusCode, 200, text);
    return JSON.parse(text) as { result: string | null; executionCount: number };
  };

  before(async () => {
    db = await freshDatabase(h.state);
    const shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    await shells.closeAll();
    const taskQueue = `test-idle-crash-${randomBytes(4).toString('hex')}`;
    // The worker process makes its bucket in the emulator at start (simulated cloud).
    workerEnv = { ...testWorkerEnv(h.state, { databaseUrl: db.url, taskQueue, deploymentId: `idle-crash-${randomBytes(3).toString('hex')}`, dataDir: join(logDir(), 'data') }), MARKCO_S3_BUCKET: bucket, MARKCO_S3_PART_MIB: '5' };
    await startWorker('worker-1');
    temporal = await temporalClient(h.state);
    ops = createOperations(temporal.client, taskQueue);
    s3 = createS3Client({ region: 'ca-central-1', endpoint: h.state.moto.endpoint, snapshotBucket: bucket }, emulatorCredentials);
    userId = (await db.store.users.ensureByEmail({ email: 'idle-crash@example.test', name: 'Idle crash' })).user.id;
    // pro: a 512 MiB base tier holds the 250 MiB the upload is made of.
    await (await ops.startLogin({ userId, plan: 'pro' })).handle.result();
  });

  after(async () => {
    for (const w of workers) {
      w.killGroup('SIGKILL');
      await w.exited;
    }
    await hostEnvShell(h.state.baseHost).run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${userId}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    s3?.destroy();
    await temporal?.close();
    await db?.drop();
  });

  test('killed during the upload, restarted: one archive in S3, no unfinished upload, and x is 42 after the return', async () => {
    await execute('x = 42');
    await execute(["import os", "class Ballast:", "    def __init__(self, n): self.b = os.urandom(n)", "    def __repr__(self): return 'ballast'", 'blob = Ballast(250 * 1024 * 1024)'].join('\n'));
    const before = (await execute('x')).executionCount;
    const { handle } = await ops.startIdleCheckpoint({ userId, reason: 'operator' });
    const idleHandle = temporal.client.workflow.getHandle(handle.workflowId);
    await waitFor('the upload to begin', async () => {
      const step = await idleHandle.query(stepQuery);
      if (step !== 'upload') throw new Error(step);
      const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      if ((uploads.Uploads ?? []).length === 0) throw new Error('no multipart upload yet');
    }, { timeoutMs: 120_000, intervalMs: 100 });
    workers[0]!.killGroup('SIGKILL');
    await workers[0]!.exited;
    const left = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.equal((left.Uploads ?? []).length, 1, 'the killed attempt left its unfinished upload');

    await startWorker('worker-2');
    const result = (await handle.result()) as IdleCheckpointResult;
    const objects = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `archives/${userId}/` }));
    assert.deepEqual((objects.Contents ?? []).map((o) => [o.Key, o.Size]), [[result.s3Key, result.archiveBytes]], 'one whole archive');
    const unfinished = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual(unfinished.Uploads ?? [], [], 'the killed attempt’s parts were aborted');
    const rt = (await db.store.runtimes.live(userId))!;
    assert.equal(rt.state, 'checkpointed');
    const snapshots = await db.pool.query(`SELECT state FROM snapshots WHERE user_id = $1`, [userId]);
    assert.deepEqual(snapshots.rows, [{ state: 'ready' }], 'one snapshot, made once');

    await (await ops.startLogin({ userId })).handle.result();
    const x = await execute('x');
    assert.equal(x.result, '42');
    assert.ok(x.executionCount > before, 'the same kernel: its execution count went on');
    assert.equal(spawnSync('pgrep', ['-af', result.snapshotId], { encoding: 'utf8' }).stdout.trim(), '', 'nothing of the killed attempt still runs');
  });
});
