import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../activities/host-shell.js';
import { cgroupMemoryLimitArgs, parseCgroupMemoryLimit } from '../activities/podman-commands.js';
import type { ArchiveBucket } from '../activities/snapshots.js';
import { createOperations, type Operations } from '../lib/operations.js';
import type { Tier } from '../lib/tiers.js';
import type { IdleCheckpointResult } from '../workflows/contracts/snapshots.js';
import { Plans, type Plan } from '../workflows/contracts/users.js';
import { emulatorArchiveBucket, emulatorCredentials, freshDatabase, registerBaseHost, startTestWorker, temporalClient, testEnvironment, testShells, type TestDatabase } from '../test/support/context.js';
import { startHarness, type RunningHarness } from '../test/support/harness.js';
import { hostEnvShell } from '../test/support/netns.js';
import { report } from './results.js';
import { cleanUpOnSignal, stopBenchParts } from './teardown.js';

/**
 * Idle checkpoint and return of a runtime holding SIZES MiB of random bytes (default 100 and 1024),
 * against raw podman on the same container in the same run:
 *
 * - markco idle: the `idle` update through the user's entity until its child completes (checkpoint with
 *   the runtime paused after the dump, SHA-256, multipart upload to S3 (the emulator on this machine),
 *   commit, container removed), with the `checkpoint_ms` and `upload_ms` it records.
 * - markco return: a login (what the user's visit starts) until it completes (the child `returnRuntime`
 *   restores the base server's archive, health-checks MRP, re-points the editor; then login checks the
 *   editor), with the return's own `restoreMs` and `totalMs` (plan to commit) from its event.
 * - raw idle: `podman container checkpoint --export F --compress none` then `podman rm`; and the same
 *   with what the idle operation also does, run back to back: `openssl dgst -sha256 F` and `aws s3 cp F`
 *   to the same emulator bucket (AWS CLI defaults: 8 MiB parts, 10 threads). Raw return:
 *   `podman container restore --import F` under the same name and port, until MRP answers.
 * - orchestration overhead (issue 10, goal <= 10%): markco idle against the raw idle with hash and
 *   upload, and the return (returnRuntime, plan to commit) against the raw return.
 *
 * Goal (issue 5): return from a local archive within 1 s + 2 s per GiB.
 *
 *   node --import tsx bench/idle-return.ts [SIZES_MIB=100,1024] [ROUNDS=2]
 */
const run = promisify(execFile);
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sizes = (process.argv[2] ?? process.env.SIZES_MIB ?? '100,1024').split(',').map(Number);
const rounds = Number(process.argv[3] ?? process.env.ROUNDS ?? 2);
if (sizes.some((s) => !(Number.isInteger(s) && s >= 4 && s <= 4096)) || !Number.isInteger(rounds) || rounds < 1) {
  console.error(`usage: bench/idle-return.ts [SIZES_MIB, each 4..4096] [ROUNDS >= 1]; got ${sizes.join(',')} ${rounds}`);
  process.exit(2);
}
await run('sh', ['-c', 'command -v aws && command -v openssl']).catch(() => {
  console.error('bench/idle-return needs the AWS CLI (aws) and openssl on this machine for its raw upload');
  process.exit(1);
});
const largest = Math.max(...sizes) * MiB;
const ceilingBytes = Math.ceil(largest / GiB + 1.5) * GiB;
// One tier, the base server, big enough for the largest size: every return lands on this machine.
const tiers = Object.fromEntries(Plans.map((p) => [p, [{ name: 'base', instanceType: null, memoryBytes: ceilingBytes, cpus: 2, gpu: false } satisfies Tier]])) as Record<Plan, Tier[]>;

const memAvailable = Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
if (memAvailable < 2 * largest + 2 * GiB) {
  console.error(`bench/idle-return needs about ${((2 * largest + 2 * GiB) / GiB).toFixed(1)} GiB of available memory; this machine has ${(memAvailable / GiB).toFixed(1)} GiB`);
  process.exit(1);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const ms = (x: number) => `${Math.round(x)} ms`;
const summary = (xs: number[]) => `${ms(median(xs))} (${Math.round(Math.min(...xs))}-${Math.round(Math.max(...xs))}, n=${xs.length})`;

let h: RunningHarness | undefined;
let db: TestDatabase | undefined;
let shells: HostShells | undefined;
let worker: Worker | undefined;
let workerRunning: Promise<void> | undefined;
let temporal: { client: Client; close: () => Promise<void> } | undefined;
let archives: ArchiveBucket | undefined;
let ops: Operations;
let userId = '';

async function cleanup(): Promise<void> {
  if (h && userId) await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
  await stopBenchParts({ worker, workerRunning, closers: [() => archives?.s3.destroy(), () => temporal?.close(), () => shells?.closeAll(), () => db?.drop()], harness: h });
}
const signalled = cleanUpOnSignal(cleanup);

async function runtime() {
  const rt = await db!.store.runtimes.live(userId);
  if (!rt) throw new Error('no runtime row');
  return rt;
}

async function execute(code: string): Promise<string> {
  const rt = await runtime();
  const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body: JSON.stringify({ code }), headersTimeout: 300_000, bodyTimeout: 300_000 });
  const text = await res.body.text();
  const body = JSON.parse(text) as { result?: string; success?: boolean };
  if (res.statusCode !== 200 || body.success === false || body.result === undefined) throw new Error(`MRP execute failed: ${text.slice(0, 300)}`);
  return body.result;
}

async function mrpAnswers(address: string, port: number, timeoutMs = 120_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await request(`http://${address}:${port}/mrp/v1/capabilities`, { headers: { connection: 'close' }, headersTimeout: 2000 });
      await r.body.text();
      if (r.statusCode === 200) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > until) throw new Error('MRP did not answer');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The runtime's container is created with the ceiling so it can hold the largest size (see bench/migrate.ts, recreateRuntime). */
async function recreateRuntime(): Promise<void> {
  const rt = await runtime();
  await db!.store.runtimes.update(rt.id, { memoryLimitBytes: ceilingBytes, cpuLimit: 2 });
  const base = hostEnvShell(h!.state.baseHost);
  await base.run(['podman', 'rm', '--force', '--time', '0', rt.containerName]);
  await (await ops.startLogin({ userId })).handle.result();
  const limit = parseCgroupMemoryLimit((await base.run(cgroupMemoryLimitArgs(rt.containerName))).stdout);
  if (limit !== ceilingBytes) throw new Error(`the recreated runtime has a memory limit of ${limit}, not ${ceilingBytes}`);
}

const checkCode = 'import hashlib\n(len(ballast.b), hashlib.sha256(ballast.b[:1 << 20]).hexdigest(), hashlib.sha256(ballast.b[-(1 << 20):]).hexdigest())';

async function fill(bytes: number): Promise<string> {
  await execute(
    [
      'import os, gc',
      'class Ballast:',
      '    def __init__(self, n): self.b = bytearray(n)',
      "    def __repr__(self): return f'<Ballast {len(self.b)} bytes>'",
      "if 'ballast' in globals(): del ballast",
      'gc.collect()',
      `ballast = Ballast(${bytes})`,
      'v = memoryview(ballast.b)',
      `for i in range(${bytes / (4 * MiB)}): v[i << 22:(i + 1) << 22] = os.urandom(1 << 22)`,
      'del v, i',
    ].join('\n'),
  );
  return execute(checkCode);
}

interface Round {
  mib: number;
  rawIdleMs: number;
  rawReturnMs: number;
  /** Raw idle with the hash and the upload the idle operation also does: checkpoint, rm, sha256, aws s3 cp. */
  rawIdleUploadMs: number;
  idleMs: number;
  checkpointMs: number;
  uploadMs: number;
  archiveBytes: number;
  loginMs: number;
  returnTotalMs: number;
  returnRestoreMs: number;
}

async function oneRound(mib: number): Promise<Round> {
  const expected = await fill(mib * MiB);
  const base = hostEnvShell(h!.state.baseHost);
  const rt = await runtime();
  const file = join(h!.state.runDir, `bench-idle-${mib}.tar`);
  await run('sync');

  // Raw: podman alone, on the same container (it stops, goes, and comes back under its name and port).
  let t = performance.now();
  await base.run(['podman', 'container', 'checkpoint', '--export', file, '--compress', 'none', rt.containerName], { timeoutMs: 600_000 });
  await base.run(['podman', 'rm', '--force', '--time', '0', rt.containerName]);
  const rawIdleMs = performance.now() - t;
  const rawKey = `raw/${mib}-${Date.now()}.tar`;
  await run('openssl', ['dgst', '-sha256', file], { timeout: 600_000 });
  await run('aws', ['--endpoint-url', h!.state.moto.endpoint, 's3', 'cp', '--only-show-errors', '--sse', 'AES256', file, `s3://${archives!.bucket}/${rawKey}`], {
    timeout: 600_000,
    env: { ...process.env, AWS_ACCESS_KEY_ID: emulatorCredentials.accessKeyId, AWS_SECRET_ACCESS_KEY: emulatorCredentials.secretAccessKey, AWS_DEFAULT_REGION: 'ca-central-1' },
  });
  const rawIdleUploadMs = performance.now() - t;
  await archives!.s3.send(new DeleteObjectCommand({ Bucket: archives!.bucket, Key: rawKey }));
  await run('sync');
  t = performance.now();
  await base.run(['podman', 'container', 'restore', '--import', file, '--name', rt.containerName, '--publish', `127.0.0.1:${rt.port}:8888`], { timeoutMs: 600_000 });
  await mrpAnswers(rt.address!, rt.port!);
  const rawReturnMs = performance.now() - t;
  await base.run(['rm', '-f', file]);
  if ((await execute(checkCode)) !== expected) throw new Error('the raw restore lost the ballast');
  await run('sync');

  // markco: the idle operation, then the visit's login (which runs the return).
  t = performance.now();
  const idle = (await (await ops.startIdleCheckpoint({ userId, reason: 'operator' })).handle.result()) as IdleCheckpointResult;
  const idleMs = performance.now() - t;
  await run('sync');
  t = performance.now();
  await (await ops.startLogin({ userId })).handle.result();
  const loginMs = performance.now() - t;
  const event = await db!.pool.query(`SELECT payload FROM events WHERE type = 'runtime.returned' AND user_id = $1 ORDER BY id DESC LIMIT 1`, [userId]);
  const returned = event.rows[0]!.payload as { totalMs: number; restoreMs: number; archiveFrom: string };
  if (returned.archiveFrom !== 'local') throw new Error(`the return used ${returned.archiveFrom}, not the local archive`);
  if ((await execute(checkCode)) !== expected) throw new Error('the return lost the ballast');
  const r: Round = { mib, rawIdleMs, rawReturnMs, rawIdleUploadMs, idleMs, checkpointMs: idle.checkpointMs, uploadMs: idle.uploadMs, archiveBytes: idle.archiveBytes, loginMs, returnTotalMs: returned.totalMs, returnRestoreMs: returned.restoreMs };
  console.log(
    `  ${String(mib).padStart(5)} MiB  raw idle ${ms(rawIdleMs)} (with sha256 and aws s3 cp ${ms(rawIdleUploadMs)}), raw return ${ms(rawReturnMs)} | markco idle ${ms(idleMs)} (checkpoint ${ms(r.checkpointMs)}, upload ${ms(r.uploadMs)}), return ${ms(r.returnTotalMs)} (restore ${ms(r.returnRestoreMs)}), visit to editor ready ${ms(loginMs)}; archive ${(r.archiveBytes / MiB).toFixed(0)} MiB`,
  );
  return r;
}

const results: Round[] = [];
const loadAtStart = loadavg();
try {
  h = await startHarness({ hosts: 0 });
  db = await freshDatabase(h.state);
  shells = testShells(h.state, { commandTimeoutMs: 600_000 });
  await registerBaseHost(db.store, shells);
  // The production part size (MARKCO_S3_PART_MIB's default), not the tests' small one.
  archives = { ...(await emulatorArchiveBucket(h.state)), partBytes: 16 * MiB };
  const started = await startTestWorker(h.state, { store: db.store, shells, tiers, archives, environment: { ...testEnvironment(h.state), archivesDir: join(h.state.baseHost.dataDir, 'archives') } });
  worker = started.worker;
  workerRunning = worker.run();
  temporal = await temporalClient(h.state);
  ops = createOperations(temporal.client, started.taskQueue);
  userId = (await db.store.users.ensureByEmail({ email: 'bench-idle@example.test', name: 'Bench' })).user.id;
  await (await ops.startLogin({ userId })).handle.result();
  await recreateRuntime();
  console.log(`idle and return of runtimes holding ${sizes.join(', ')} MiB of random bytes, ${rounds} round(s); load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  for (let round = 0; round < rounds; round++) for (const mib of sizes) results.push(await oneRound(mib));

  console.log('\nmedians (min-max)');
  for (const mib of sizes) {
    const r = results.filter((x) => x.mib === mib);
    const gib = mib / 1024;
    const goalMs = 1000 + 2000 * gib;
    console.log(`${mib} MiB (archive ${(median(r.map((x) => x.archiveBytes)) / MiB).toFixed(0)} MiB)`);
    console.log(`  idle:   markco ${summary(r.map((x) => x.idleMs))} (checkpoint ${summary(r.map((x) => x.checkpointMs))}, S3 upload ${summary(r.map((x) => x.uploadMs))}); raw ${summary(r.map((x) => x.rawIdleMs))}; ratio ${(median(r.map((x) => x.idleMs)) / median(r.map((x) => x.rawIdleMs))).toFixed(2)}x`);
    const back = median(r.map((x) => x.returnTotalMs));
    console.log(`  return: markco ${summary(r.map((x) => x.returnTotalMs))} (restore ${summary(r.map((x) => x.returnRestoreMs))}); raw ${summary(r.map((x) => x.rawReturnMs))}; ratio ${(back / median(r.map((x) => x.rawReturnMs))).toFixed(2)}x`);
    console.log(`          goal 1 s + 2 s/GiB = ${ms(goalMs)}: ${back <= goalMs ? 'met' : 'missed'}; the visit until the editor is ready ${summary(r.map((x) => x.loginMs))}`);
    const params = `${mib} MiB, ${r.length} round(s)`;
    const overheadGoal = { on: 'overhead' as const, op: '<=' as const, value: 0.1, source: 'issue 10' };
    const idle = report({ name: `idle checkpoint, ${mib} MiB`, metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: r.map((x) => x.idleMs), baseline: { name: 'checkpoint --export --compress none, rm, openssl dgst -sha256, aws s3 cp', samples: r.map((x) => x.rawIdleUploadMs) }, goal: overheadGoal, params });
    const ret = report({ name: `return, ${mib} MiB (returnRuntime, plan to commit)`, metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: r.map((x) => x.returnTotalMs), baseline: { name: 'restore --import, until MRP answers', samples: r.map((x) => x.rawReturnMs) }, goal: overheadGoal, params });
    report({ name: `return, ${mib} MiB, against issue 5's goal`, metric: 'wall time', unit: 'ms', better: 'lower', samples: r.map((x) => x.returnTotalMs), goal: { on: 'median', op: '<=', value: goalMs, source: 'issue 5: 1 s + 2 s/GiB' }, params });
    report({ name: `visit until the editor is ready, ${mib} MiB (login, return included)`, metric: 'wall time', unit: 'ms', better: 'lower', samples: r.map((x) => x.loginMs), baseline: { name: 'restore --import, until MRP answers (no editor)', samples: r.map((x) => x.rawReturnMs) }, params });
    const pct = (x: number | null) => (x === null ? '?' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`);
    console.log(`  orchestration overhead (markco/raw - 1, goal <= 10%): idle ${pct(idle.goal!.actual)} against ${summary(r.map((x) => x.rawIdleUploadMs))} raw with hash and upload; return ${pct(ret.goal!.actual)}`);
  }
  console.log(`load average at end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
} finally {
  if (!signalled.stopping) await cleanup();
}
