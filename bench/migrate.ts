import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import { shellJoin, type HostShells } from '../activities/host-shell.js';
import { probeHostFacts } from '../activities/hosts.js';
import { cgroupMemoryLimitArgs, parseCgroupMemoryLimit, parseCheckpointStats, parseRestoreStats } from '../activities/podman-commands.js';
import { createOperations, type Operations } from '../lib/operations.js';
import type { HostFacts } from '../workflows/contracts/hosts.js';
import type { Tier } from '../lib/tiers.js';
import type { MigrateRuntimeResult } from '../workflows/contracts/elastic.js';
import { Plans, type Plan } from '../workflows/contracts/users.js';
import { connectionTo, freshDatabase, registerBaseHost, startTestWorker, temporalClient, testShells, type TestDatabase } from '../test/support/context.js';
import { freePort, startHarness, type RunningHarness } from '../test/support/harness.js';
import { hostEnvShell, machineImageStore, storageConf, type NamespaceHostInfo } from '../test/support/netns.js';
import { report } from './results.js';
import { cleanUpOnSignal, stopBenchParts } from './teardown.js';

/**
 * Live migration of a runtime holding GIB of random bytes, host to host, against the seeds' raw pipeline
 * measured in the same run on the same container:
 *
 * - markco: the `migrate` update through the user's entity (ops.startMigration with an operator-named
 *   target host), timed from the update until the child workflow completes, plus the timings the saga
 *   records on its migrations row (checkpoint, transfer, restore, downtime, CRIU frozen time, size).
 * - raw: `podman container checkpoint --leave-running --export F` on the source (podman's default zstd,
 *   as the seeds ran it, and again with `--compress none`), `scp` from the base server or `scp -3` between
 *   two hosts (OpenSSH defaults), `podman container restore --import F --name … -p …` on the target
 *   (run over `ssh`); the restored copy and the files are removed afterwards, untimed.
 *
 * Scenarios, each round: base -> host A and host A -> host B (both with a raw baseline), then host B ->
 * base to close the cycle (markco only). The two namespace hosts of the test harness are registered as
 * ready EC2 hosts, as test/integration/migration-hosts.test.ts does. Rounds put the raw variants first
 * and second in turn; the filesystem is synced before every timed operation.
 *
 *   node --import tsx bench/migrate.ts [GIB=1] [ROUNDS]      (or GIB=0.25 ROUNDS=3 in the environment)
 */
const run = promisify(execFile);
const GiB = 1024 ** 3;
const gib = Number(process.argv[2] ?? process.env.GIB ?? 1);
const rounds = Number(process.argv[3] ?? process.env.ROUNDS ?? (gib >= 1 ? 2 : 3));
if (!(gib > 0 && gib <= 4) || !Number.isInteger(rounds) || rounds < 1) {
  console.error(`usage: bench/migrate.ts [GIB in (0, 4]] [ROUNDS >= 1]; got GIB=${gib} ROUNDS=${rounds}`);
  process.exit(2);
}
const chunks = Math.max(1, Math.round(gib * 64)); // 16 MiB each
const fillBytes = chunks * 16 * 1024 * 1024;

/**
 * The runtime's container is created with this limit (its podman spec, which travels inside every
 * checkpoint), then every tier applies its own with `podman update`. See the note at `recreateRuntime`.
 */
const ceilingBytes = Math.ceil(gib + 1.5) * GiB;
const benchLadder: Tier[] = [
  { name: 'base', instanceType: null, memoryBytes: ceilingBytes, cpus: 2, gpu: false },
  { name: 't3.large', instanceType: 't3.large', memoryBytes: ceilingBytes + GiB, cpus: 2, gpu: false },
];
const tiers = Object.fromEntries(Plans.map((p) => [p, benchLadder])) as Record<Plan, Tier[]>;

// ---------------------------------------------------------------- preflight: the machine must hold it
const memAvailable = Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
const needed = 3 * fillBytes + 2 * GiB; // source, a restored copy, a raw copy's overlap, plus the stack
if (memAvailable < needed) {
  console.error(`bench/migrate needs about ${(needed / GiB).toFixed(1)} GiB of available memory for GIB=${gib}; this machine has ${(memAvailable / GiB).toFixed(1)} GiB`);
  process.exit(1);
}
for (const tool of ['scp', 'ssh', 'sync', 'openssl', 'sha256sum']) await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
  throw new Error(`bench/migrate needs ${tool} on this machine`);
});

// ---------------------------------------------------------------- statistics
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const ms = (x: number) => `${Math.round(x)} ms`;
const summary = (xs: number[]) => `${ms(median(xs))} (${Math.round(Math.min(...xs))}-${Math.round(Math.max(...xs))}, n=${xs.length})`;

interface MarkcoRun {
  scenario: string;
  wallMs: number;
  /** Until the commit: the runtimes row names the target and the editor uses it (the source's removal follows). */
  toCommitMs: number;
  /** Share of the machine's CPU time that was busy during the run (0..1). */
  cpuBusy: number;
  checkpointMs: number;
  transferMs: number;
  restoreMs: number;
  downtimeMs: number;
  frozenMs: number | null;
  archiveBytes: number;
}
interface RawRun {
  cpuBusy: number;
  scenario: string;
  compress: 'zstd' | 'none';
  wallMs: number;
  checkpointMs: number;
  copyMs: number;
  restoreMs: number;
  frozenMs: number;
  archiveBytes: number;
  criuRestoreMs: number;
  /** From the checkpoint's start until the restored copy's MRP answers (what the saga's wall includes: its health check). */
  untilMrpMs: number;
}

// ---------------------------------------------------------------- the stack
let h: RunningHarness | undefined;
let db: TestDatabase | undefined;
let shells: HostShells | undefined;
let worker: Worker | undefined;
let workerRunning: Promise<void> | undefined;
let temporal: { client: Client; close: () => Promise<void> } | undefined;
let userId = '';
const rawNames: { where: Place; name: string }[] = [];
const benchFiles: string[] = [];

type Place = { kind: 'base' } | { kind: 'host'; host: NamespaceHostInfo };

async function cleanup(): Promise<void> {
  const st = h?.state;
  if (st) {
    const base = hostEnvShell(st.baseHost);
    for (const { where, name } of rawNames.splice(0)) await removeOn(where, name).catch(() => undefined);
    if (userId) {
      await base.run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
      for (const host of st.hosts) await ssh(host, ['podman', 'rm', '--force', '--time', '0', `rt-${userId}`]).catch(() => undefined);
    }
  }
  for (const f of benchFiles.splice(0)) rmSync(f, { recursive: true, force: true });
  await stopBenchParts({ worker, workerRunning, closers: [() => temporal?.close(), () => shells?.closeAll(), () => db?.drop()], harness: h });
}

const signalled = cleanUpOnSignal(cleanup);

let knownHosts = '';
const sshOpts = () => ['-i', h!.state.sshKeyPath, '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes'];

/** A command on a namespace host over OpenSSH (the session has the host's podman storage in its environment). */
async function ssh(host: NamespaceHostInfo, argv: string[], timeoutMs = 600_000): Promise<{ stdout: string; stderr: string }> {
  return run('ssh', [...sshOpts(), `root@${host.address}`, '--', shellJoin(argv)], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
}

async function onPlace(where: Place, argv: string[]): Promise<{ stdout: string; stderr: string }> {
  if (where.kind === 'host') return ssh(where.host, argv);
  const r = await hostEnvShell(h!.state.baseHost).run(argv, { timeoutMs: 600_000 });
  return { stdout: r.stdout, stderr: r.stderr };
}

async function removeOn(where: Place, name: string): Promise<void> {
  await onPlace(where, ['podman', 'rm', '--force', '--ignore', '--time', '0', name]);
}

const placeName = (p: Place) => (p.kind === 'base' ? 'base' : p.host.hostId);
const benchDirOf = (p: Place) => (p.kind === 'base' ? join(h!.state.runDir, 'bench-base') : join(p.host.scratchDir, 'bench'));

async function settle(): Promise<void> {
  // Writeback of the previous run's files must not land in the next run's timing.
  await run('sync');
  await new Promise((r) => setTimeout(r, 500));
}

// ---------------------------------------------------------------- the user's runtime through MRP
async function execute(code: string, timeoutMs = 300_000): Promise<{ result: string; executionCount: number }> {
  const rt = await db!.store.runtimes.live(userId);
  if (!rt?.address || !rt.port) throw new Error(`user ${userId} has no live runtime`);
  const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', connection: 'close' },
    body: JSON.stringify({ code }),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`MRP execute answered ${res.statusCode}: ${text.slice(0, 500)}`);
  const body = JSON.parse(text) as { result?: string; executionCount?: number; success?: boolean; error?: unknown };
  if (body.success === false || body.result === undefined) throw new Error(`MRP execute failed: ${text.slice(0, 500)}`);
  return body as { result: string; executionCount: number };
}

let expected = { length: '', sample: '' };
const checkCode = 'import hashlib\n(len(ballast.b), hashlib.sha256(ballast.b[:1 << 20]).hexdigest(), hashlib.sha256(ballast.b[-(1 << 20):]).hexdigest())';

async function checkContent(after: string): Promise<void> {
  const r = await execute(checkCode);
  if (r.result !== expected.sample) throw new Error(`after ${after} the runtime holds ${r.result}, expected ${expected.sample}`);
  // The check's connection must be gone before the next checkpoint (CRIU refuses established TCP).
  await new Promise((res) => setTimeout(res, 300));
}

// ---------------------------------------------------------------- hosts
const factsOf = new Map<string, HostFacts>();

/** Records a namespace host as a ready EC2 host (again after a migration away from it terminated its row). */
async function registerHost(host: NamespaceHostInfo): Promise<void> {
  const row = await db!.store.hosts.get(host.hostId);
  if (row?.state === 'ready') return;
  await db!.store.hosts.upsert({
    id: host.hostId,
    kind: 'ec2',
    address: host.address,
    state: 'booting',
    sshUser: host.sshUser,
    hostKey: host.hostKey,
    instanceId: `i-${host.hostId.replace(/[^a-z0-9]/g, '')}`,
    instanceType: 't3.large',
  });
  let facts = factsOf.get(host.hostId);
  if (!facts) {
    facts = await probeHostFacts(shells!.for(connectionTo(host)));
    factsOf.set(host.hostId, facts);
  }
  await db!.store.hosts.markReady(host.hostId, facts);
}

/**
 * The test hosts have storage roots of their own, and podman 4.3.1 restores a checkpoint's ConmonPidFile
 * and PidFile as they are. A copy restored from the runtime (which already moved once) names the run
 * directory of a container on another host, gone once a migration removed it, so a raw restore fails
 * ("Failed to write conmon pidfile … No such file or directory", or runc's "open …/userdata/.pidfile").
 * The saga rewrites those paths to the target's roots in the stream (TarMemberRewriter); hosts that all
 * use podman's default roots presumably need neither (not measured here). The raw pipeline gets the
 * directory made on the target instead, untimed.
 */
async function keepFirstRunDir(from: Place, to: Place): Promise<void> {
  const paths = (await onPlace(from, ['podman', 'container', 'inspect', '--format', '{{.ConmonPidFile}}\n{{.PidFile}}', `rt-${userId}`])).stdout.split('\n').filter((p) => p.startsWith('/'));
  const dirs = [...new Set(paths.map((p) => dirname(p)))];
  if (dirs.length > 0) await onPlace(to, ['mkdir', '-p', ...dirs]);
}

// ---------------------------------------------------------------- the two pipelines
let ops: Operations;

/** CPU time of the whole machine from /proc/stat: what share of both cores a pipeline kept busy. */
function cpuSample(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
function busyShare(from: { busy: number; total: number }): number {
  const to = cpuSample();
  return to.total > from.total ? (to.busy - from.busy) / (to.total - from.total) : NaN;
}

async function markco(scenario: string, target: string, targetHostId: string): Promise<MarkcoRun> {
  await settle();
  const t0 = performance.now();
  const t0Epoch = Date.now();
  const cpu = cpuSample();
  const started = await ops.startMigration(userId, { target, targetHostId });
  const result = (await started.handle.result()) as MigrateRuntimeResult;
  const wallMs = performance.now() - t0;
  const cpuBusy = busyShare(cpu);
  if (result.targetHostId !== targetHostId) throw new Error(`the migration went to ${result.targetHostId}, not ${targetHostId}`);
  const row = (
    await db!.pool.query(`SELECT status, checkpoint_ms, transfer_ms, restore_ms, downtime_ms, frozen_ms, archive_bytes, completed_at FROM migrations WHERE id = $1`, [result.migrationId])
  ).rows[0] as (Record<string, string | number | null> & { completed_at: Date }) | undefined;
  if (!row || row.status !== 'completed') throw new Error(`migration ${result.migrationId} has no completed row: ${JSON.stringify(row)}`);
  await checkContent(`markco ${scenario}`);
  const out: MarkcoRun = {
    scenario,
    wallMs,
    cpuBusy,
    // completed_at is written by the commit, on this machine's clock.
    toCommitMs: row.completed_at.getTime() - t0Epoch,
    checkpointMs: Number(row.checkpoint_ms),
    transferMs: Number(row.transfer_ms),
    restoreMs: Number(row.restore_ms),
    downtimeMs: Number(row.downtime_ms),
    frozenMs: row.frozen_ms === null ? null : Number(row.frozen_ms),
    archiveBytes: Number(row.archive_bytes),
  };
  console.log(
    `  markco ${scenario.padEnd(14)} ${ms(wallMs).padStart(9)}  (to commit ${ms(out.toCommitMs)})  checkpoint ${out.checkpointMs} transfer ${out.transferMs} restore ${out.restoreMs} downtime ${out.downtimeMs} frozen ${out.frozenMs} ms, archive ${(out.archiveBytes / 2 ** 20).toFixed(0)} MiB, CPU ${(out.cpuBusy * 100).toFixed(0)}% busy`,
  );
  return out;
}

let rawCount = 0;

/**
 * The seeds' pipeline: checkpoint to a file on the source, copy it with OpenSSH, restore it on the target
 * under a name of its own, published on the target's address. The source keeps running throughout.
 */
async function raw(scenario: string, from: Place, to: Place, compress: 'zstd' | 'none', measureHashes = false): Promise<RawRun> {
  const n = ++rawCount;
  const src = join(benchDirOf(from), `raw-${n}.tar${compress === 'zstd' ? '.zst' : ''}`);
  const dst = join(benchDirOf(to), `raw-${n}-in.tar${compress === 'zstd' ? '.zst' : ''}`);
  benchFiles.push(src, dst);
  const name = `raw-${n}-${userId.slice(0, 8)}`;
  const address = to.kind === 'base' ? '127.0.0.1' : to.host.address;
  const port = await freePort();
  await settle();

  await keepFirstRunDir(from, to);
  const t0 = performance.now();
  const cpu = cpuSample();
  const checkpoint = ['podman', 'container', 'checkpoint', '--leave-running', '--print-stats', '--export', src, ...(compress === 'none' ? ['--compress', 'none'] : []), `rt-${userId}`];
  const cp = await onPlace(from, checkpoint);
  const t1 = performance.now();
  if (from.kind === 'base' && to.kind === 'host') {
    await run('scp', ['-q', ...sshOpts(), src, `root@${to.host.address}:${dst}`], { timeout: 600_000 });
  } else if (from.kind === 'host' && to.kind === 'host') {
    await run('scp', ['-3', '-q', ...sshOpts(), `root@${from.host.address}:${src}`, `root@${to.host.address}:${dst}`], { timeout: 600_000 });
  } else {
    throw new Error(`raw ${placeName(from)} -> ${placeName(to)} is not a scenario of this bench`);
  }
  const t2 = performance.now();
  rawNames.push({ where: to, name });
  const rs = await onPlace(to, ['podman', 'container', 'restore', '--print-stats', '--import', dst, '--name', name, '--publish', `${address}:${port}:8888`]);
  const t3 = performance.now();
  const cpuBusy = busyShare(cpu);
  await mrpAnswers(address, port);
  const t4 = performance.now();

  const cpStats = parseCheckpointStats(cp.stdout);
  const rsStats = parseRestoreStats(rs.stdout);
  const state = (await onPlace(to, ['podman', 'container', 'inspect', '--format', '{{.State.Status}}', name])).stdout.trim();
  if (state !== 'running') throw new Error(`the raw copy ${name} on ${placeName(to)} is ${state} after its restore`);
  const archiveBytes = Number((await run('stat', ['-c', '%s', dst])).stdout.trim());
  const out: RawRun = { cpuBusy, scenario, compress, wallMs: t3 - t0, checkpointMs: t1 - t0, copyMs: t2 - t1, restoreMs: t3 - t2, frozenMs: cpStats.frozenMs, archiveBytes, criuRestoreMs: rsStats.restoreMs, untilMrpMs: t4 - t0 };
  console.log(
    `  raw    ${scenario.padEnd(14)} ${ms(out.wallMs).padStart(9)}  ${compress.padEnd(4)} checkpoint ${Math.round(out.checkpointMs)} copy ${Math.round(out.copyMs)} restore ${Math.round(out.restoreMs)} ms (CRIU frozen ${out.frozenMs}, restore ${out.criuRestoreMs} ms), MRP answers at ${Math.round(out.untilMrpMs)} ms, archive ${(archiveBytes / 2 ** 20).toFixed(0)} MiB, CPU ${(cpuBusy * 100).toFixed(0)}% busy`,
  );
  if (measureHashes) await hashEvidence(dst);
  // Untimed: the copy and both files go.
  await removeOn(to, name);
  rawNames.splice(rawNames.findIndex((r) => r.name === name), 1);
  rmSync(src, { force: true });
  rmSync(dst, { force: true });
  return out;
}

/** Polls the restored copy's MRP until it answers (as the saga's health check does). */
async function mrpAnswers(address: string, port: number, timeoutMs = 120_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await request(`http://${address}:${port}/mrp/v1/capabilities`, { headers: { connection: 'close' }, headersTimeout: 2000 });
      await r.body.text();
      if (r.statusCode === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > until) throw new Error(`the raw copy's MRP on ${address}:${port} did not answer within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What hashing the received archive costs on this machine (the receiver runs sha256sum after writing). */
const hashes: { tool: string; ms: number; bytes: number }[] = [];
async function hashEvidence(file: string): Promise<void> {
  const bytes = Number((await run('stat', ['-c', '%s', file])).stdout.trim());
  for (const [tool, argv] of [
    ['sha256sum', ['sha256sum', file]],
    ['openssl dgst -sha256', ['openssl', 'dgst', '-sha256', file]],
  ] as const) {
    const t = performance.now();
    await run(argv[0], argv.slice(1), { timeout: 600_000 });
    hashes.push({ tool, ms: performance.now() - t, bytes });
  }
}

// ---------------------------------------------------------------- the run
const markcoRuns: MarkcoRun[] = [];
const rawRuns: RawRun[] = [];
const loadAtStart = loadavg();
const benchStarted = performance.now();
try {
  h = await startHarness({ hosts: 2 });
  const st = h.state;
  const [hostA, hostB] = st.hosts as [NamespaceHostInfo, NamespaceHostInfo];
  for (const host of [hostA, hostB]) {
    // The runtime AMI has the images baked in: the namespace host reads the machine's built images.
    writeFileSync(host.env.CONTAINERS_STORAGE_CONF, storageConf(host.dir, machineImageStore));
    mkdirSync(join(host.scratchDir, 'bench'), { recursive: true });
  }
  mkdirSync(join(st.runDir, 'bench-base'), { recursive: true });
  knownHosts = join(st.runDir, 'bench_known_hosts');
  writeFileSync(knownHosts, `${hostA.address} ${hostA.hostKey}\n${hostB.address} ${hostB.hostKey}\n`);

  db = await freshDatabase(st);
  shells = testShells(st, { commandTimeoutMs: 600_000 });
  await registerBaseHost(db.store, shells);
  for (const host of [hostA, hostB]) await registerHost(host);
  const started = await startTestWorker(st, { store: db.store, shells, tiers });
  worker = started.worker;
  workerRunning = worker.run();
  temporal = await temporalClient(st);
  ops = createOperations(temporal.client, started.taskQueue);

  userId = (await db.store.users.ensureByEmail({ email: 'bench-migrate@example.test', name: 'Bench' })).user.id;
  await (await ops.startLogin({ userId })).handle.result();
  await recreateRuntime();

  let t = performance.now();
  // Allocated once and filled in place, inside an object with a short repr: after every execute, MRP lists
  // the variables and previews each with repr(), which for a bare 1 GiB bytearray builds a ~4 GiB string
  // (the cgroup's OOM killer took the runtime at a 3 GiB limit).
  const filled = await execute(
    [
      'import os',
      'class Ballast:',
      '    def __init__(self, n):',
      '        self.b = bytearray(n)',
      '    def __repr__(self):',
      "        return f'<Ballast {len(self.b)} bytes>'",
      `ballast = Ballast(${fillBytes})`,
      'v = memoryview(ballast.b)',
      `for i in range(${chunks}): v[i << 24:(i + 1) << 24] = os.urandom(1 << 24)`,
      'del v, i',
      'len(ballast.b)',
    ].join('\n'),
  );
  if (filled.result !== String(fillBytes)) throw new Error(`the fill answered ${filled.result}, expected ${fillBytes}`);
  console.log(`filled ${(fillBytes / GiB).toFixed(2)} GiB of os.urandom in the runtime in ${ms(performance.now() - t)}`);
  expected = { length: String(fillBytes), sample: (await execute(checkCode)).result };
  await new Promise((r) => setTimeout(r, 300));

  const base: Place = { kind: 'base' };
  const A: Place = { kind: 'host', host: hostA };
  const B: Place = { kind: 'host', host: hostB };
  console.log(`migrating ${(fillBytes / GiB).toFixed(2)} GiB, ${rounds} round(s); load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  for (let round = 0; round < rounds; round++) {
    console.log(`round ${round + 1}`);
    const variants: ('zstd' | 'none')[] = round % 2 === 0 ? ['zstd', 'none'] : ['none', 'zstd'];
    for (const v of variants) rawRuns.push(await raw('base -> host', base, A, v, round === 0 && v === 'none'));
    await registerHost(hostA);
    markcoRuns.push(await markco('base -> host', 't3.large', hostA.hostId));
    for (const v of variants) rawRuns.push(await raw('host -> host', A, B, v));
    await registerHost(hostB);
    markcoRuns.push(await markco('host -> host', 't3.large', hostB.hostId));
    markcoRuns.push(await markco('host -> base', 'base', 'base'));
  }

  // ---------------------------------------------------------------- report
  const loadAtEnd = loadavg();
  const gibMoved = fillBytes / GiB;
  console.log(`\nmigration of a runtime holding ${gibMoved.toFixed(2)} GiB of random bytes, ${rounds} round(s), medians (min-max)`);
  for (const scenario of ['base -> host', 'host -> host', 'host -> base']) {
    const m = markcoRuns.filter((r) => r.scenario === scenario);
    const wall = median(m.map((r) => r.wallMs));
    console.log(`${scenario}`);
    const archiveGib = median(m.map((r) => r.archiveBytes)) / GiB;
    console.log(`  markco wall        ${summary(m.map((r) => r.wallMs))}  = ${(wall / 1000 / gibMoved).toFixed(1)} s per GiB of random bytes (goal <= 4 s/GiB), ${(wall / 1000 / archiveGib).toFixed(1)} s per GiB of archive`);
    const toCommit = median(m.map((r) => r.toCommitMs));
    console.log(`  markco to commit   ${summary(m.map((r) => r.toCommitMs))}  (the user runs on the target; the source's removal follows)`);
    console.log(`    checkpoint_ms ${summary(m.map((r) => r.checkpointMs))}, transfer_ms ${summary(m.map((r) => r.transferMs))}, restore_ms ${summary(m.map((r) => r.restoreMs))}`);
    console.log(`    downtime_ms ${summary(m.map((r) => r.downtimeMs))}, CRIU frozen_ms ${summary(m.map((r) => r.frozenMs ?? NaN))}, archive ${(median(m.map((r) => r.archiveBytes)) / 2 ** 20).toFixed(0)} MiB`);
    for (const compress of ['zstd', 'none'] as const) {
      const r = rawRuns.filter((x) => x.scenario === scenario && x.compress === compress);
      if (r.length === 0) continue;
      const rw = median(r.map((x) => x.wallMs));
      console.log(`  raw ${compress.padEnd(4)} wall      ${summary(r.map((x) => x.wallMs))}  = ${(rw / 1000 / gibMoved).toFixed(1)} s/GiB`);
      console.log(`    checkpoint ${summary(r.map((x) => x.checkpointMs))}, copy ${summary(r.map((x) => x.copyMs))}, restore ${summary(r.map((x) => x.restoreMs))}`);
      console.log(`    CRIU frozen ${summary(r.map((x) => x.frozenMs))}, CRIU restore ${summary(r.map((x) => x.criuRestoreMs))}, archive ${(median(r.map((x) => x.archiveBytes)) / 2 ** 20).toFixed(0)} MiB`);
      console.log(`  ratio markco/raw ${compress}: ${(wall / rw).toFixed(2)}x  (goal <= 0.7x); to commit ${(toCommit / rw).toFixed(2)}x`);
    }
    const params = `${gibMoved.toFixed(2)} GiB, ${rounds} round(s)`;
    const wallSamples = m.map((r) => r.wallMs);
    const zstd = rawRuns.filter((x) => x.scenario === scenario && x.compress === 'zstd');
    const none = rawRuns.filter((x) => x.scenario === scenario && x.compress === 'none');
    if (zstd.length > 0) {
      report({ name: `${scenario}: markco vs the seeds' pipeline`, metric: 'wall time', unit: 'ms', better: 'lower', samples: wallSamples, baseline: { name: 'checkpoint --export (zstd), scp, restore --import', samples: zstd.map((x) => x.wallMs) }, goal: { on: 'ratio', op: '<=', value: 0.7 }, params });
    }
    if (none.length > 0) {
      const o = report({ name: `${scenario}: migration`, metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: wallSamples, baseline: { name: 'checkpoint --export --compress none, scp, restore --import, until MRP answers', samples: none.map((x) => x.untilMrpMs) }, goal: { on: 'overhead', op: '<=', value: 0.1, source: 'issue 10' }, params });
      console.log(`  orchestration overhead against raw none until MRP answers (${summary(none.map((x) => x.untilMrpMs))}): ${o.goal!.actual === null ? '?' : `${(o.goal!.actual * 100).toFixed(1)}%`} (goal <= 10%)`);
    }
    report({ name: `${scenario}: seconds per GiB`, metric: 'wall time per GiB moved', unit: 's/GiB', better: 'lower', samples: wallSamples.map((x) => x / 1000 / gibMoved), goal: { on: 'median', op: '<=', value: 4 }, params });
  }
  for (const x of hashes) console.log(`hashing the received ${(x.bytes / 2 ** 20).toFixed(0)} MiB archive: ${x.tool} ${ms(x.ms)} (${((x.ms / 1000) * (GiB / x.bytes)).toFixed(1)} s/GiB)`);
  console.log(`load average at end ${loadAtEnd.map((l) => l.toFixed(2)).join(' ')}; bench took ${((performance.now() - benchStarted) / 1000).toFixed(0)} s`);
} finally {
  if (!signalled.stopping) await cleanup();
}

/**
 * Login creates the runtime with the plan's starting limit (256 MiB on free) in its podman spec, and every
 * later tier is applied with `podman update`, which the spec does not record. A checkpoint carries the
 * spec, so a restore recreates the cgroup with the starting limit and CRIU is killed by the cgroup's OOM
 * killer as soon as the runtime holds more than that (verified: a 128 MiB container raised to 1 GiB,
 * holding 320 MiB, fails `podman container restore` with "criu ... killed by signal 9" and the kernel's
 * "Memory cgroup out of memory: Killed process (criu)"). Until the runtime is created with a ceiling, the
 * bench gives the runtime row the ceiling and lets login recreate the container from it, through the
 * same code path (ensureRuntime) the product uses.
 */
async function recreateRuntime(): Promise<void> {
  const rt = await db!.store.runtimes.live(userId);
  if (!rt) throw new Error('login left no runtime row');
  await db!.store.runtimes.update(rt.id, { memoryLimitBytes: ceilingBytes, cpuLimit: 2 });
  const base = hostEnvShell(h!.state.baseHost);
  await base.run(['podman', 'rm', '--force', '--time', '0', rt.containerName]);
  await (await ops.startLogin({ userId })).handle.result();
  const limit = parseCgroupMemoryLimit((await base.run(cgroupMemoryLimitArgs(rt.containerName))).stdout);
  if (limit !== ceilingBytes) throw new Error(`the recreated runtime has a memory limit of ${limit}, not ${ceilingBytes}`);
}
