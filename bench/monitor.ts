import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Connection, WorkflowNotFoundError } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShell, HostShells } from '../activities/host-shell.js';
import { probeHostFacts } from '../activities/hosts.js';
import type { EntitySignals } from '../activities/monitor.js';
import { createOperations, type Operations } from '../lib/operations.js';
import { workflowIds } from '../workflows/contracts/operations.js';
import type { PressureSignal } from '../workflows/contracts/runtime-entity.js';
import type { ResourceMonitorInput } from '../workflows/monitor.js';
import { createWorker, entitySignals } from '../workers/worker.js';
import { connectionTo, emulatorEc2, freshDatabase, registerBaseHost, temporalClient, testCloud, testEnvironment, testShells, type TestDatabase } from '../test/support/context.js';
import { startHarness, type RunningHarness } from '../test/support/harness.js';
import { hostEnvShell, type NamespaceHostInfo } from '../test/support/netns.js';
import { report } from './results.js';
import { cleanUpOnSignal, stopBenchParts } from './teardown.js';

/**
 * The resource monitor at scale: CONTAINERS runtime-labelled containers spread over the harness's two
 * namespace hosts, sampled every 2 s by the real `resourceMonitor` workflow (one `watchHost` activity per
 * ready host, each running the `hostSamplerArgs` shell on its host: over ssh2 on the namespace hosts,
 * locally on the base server), against the obvious alternative in the same run:
 *
 * - markco CPU over a window of SECONDS after a warm-up: the sampler shells' process trees on every host
 *   (utime+stime of the shell, of its live descendants and of its reaped children, from /proc), the sshd
 *   session process that carries a namespace host's sampler stream, and this process (the worker: the
 *   watchHost activities parsing the streams over ssh2, the tracker, the entity signals, the heartbeats,
 *   the monitor workflow), as a percentage of one core. Every container has a `runtimes` row (of a user
 *   of its own), so the tracker follows each one and sends it a reading when its band changes and a
 *   keep-alive each minute, as it would for real users; those users have no entity running, so their
 *   signals are answered "not found" (one round trip to Temporal each all the same).
 * - baseline CPU over a window of the same length: `podman stats --no-stream --format json` started every
 *   2 s (or as soon as the previous one ends, when it takes longer) on every host, through the same
 *   transport (ssh2 channel, local process), its JSON parsed in this process.
 * - event latency: one real user (login through the worker, a real MRP runtime on the base server under
 *   the free plan's 256 MiB) fills memory with a cell until its own cgroup reads >= 50% of the limit, then
 *   >= 75%, then frees it; each crossing's time is taken inside the container by the cell, the moment
 *   the cgroup counter the monitor reads passes the threshold. Latency is from there to the start time
 *   (Temporal's, describe()) of the workflow the user's entity starts: `user/<uid>/pre-provision` for 50%,
 *   `user/<uid>/migrate` for 75%. The worker runs with MARKCO_CLOUD=none, so both workflows start and
 *   then fail at once (no EC2 host can be launched): only their start is measured, and nothing moves.
 *
 * Goal (issue 6): the monitor under 10% of one core for 200 containers polled every 2 s; from a crossing
 * to the workflow's start under 3 s.
 *
 *   node --import tsx bench/monitor.ts [CONTAINERS=200] [SECONDS=60]     (CYCLES=8 crossings of each band)
 */
const containers = Number(process.argv[2] ?? process.env.CONTAINERS ?? 200);
const seconds = Number(process.argv[3] ?? process.env.SECONDS ?? 60);
const cycles = Number(process.env.CYCLES ?? 8);
const intervalMs = 2000;
const warmupMs = 12_000;
if (!(Number.isInteger(containers) && containers >= 0 && containers <= 1000) || !(Number.isInteger(seconds) && seconds >= 10) || !(Number.isInteger(cycles) && cycles >= 1)) {
  console.error(`usage: bench/monitor.ts [CONTAINERS, 0..1000] [SECONDS >= 10] (CYCLES >= 1 in the environment); got ${process.argv.slice(2).join(' ')}`);
  process.exit(2);
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
// Each container: conmon and a sleeping process (a few MiB), its 64 MiB limit is never used.
const containerLimitBytes = 64 * MiB;
const memAvailable = Number(/MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
const memNeeded = 3 * GiB + containers * 8 * MiB;
if (memAvailable < memNeeded) {
  console.error(`bench/monitor needs about ${(memNeeded / GiB).toFixed(1)} GiB of available memory for ${containers} containers (the stack, a runtime, ~8 MiB per container); this machine has ${(memAvailable / GiB).toFixed(1)} GiB`);
  process.exit(1);
}
const clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// ---------------------------------------------------------------- statistics
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const pct = (x: number) => `${x.toFixed(2)}%`;
const ms = (x: number) => `${Math.round(x)} ms`;

// ---------------------------------------------------------------- processes, from /proc
interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, clock ticks. */
  own: number;
  /** cutime + cstime: children that exited and were reaped. */
  reaped: number;
}

function readProcs(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch {
      continue;
    }
    const close = stat.lastIndexOf(')');
    const f = stat.slice(close + 2).split(' ');
    out.set(Number(d), { pid: Number(d), ppid: Number(f[1]), comm: stat.slice(stat.indexOf('(') + 1, close), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) });
  }
  return out;
}

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

function netnsOf(pid: number | 'self'): string {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return '';
  }
}

function descends(procs: Map<number, Proc>, pid: number, ancestor: number): boolean {
  for (let p = procs.get(pid)?.ppid; p !== undefined && p > 1; p = procs.get(p)?.ppid) if (p === ancestor) return true;
  return false;
}

/**
 * CPU ticks a process tree has used: the root's own and reaped children's, plus every live descendant's
 * (own and reaped). A child's time moves into its parent's reaped count when it is waited for, so nothing
 * is counted twice and nothing finished is lost.
 */
function treeTicks(procs: Map<number, Proc>, root: number): number {
  const r = procs.get(root);
  if (!r) return NaN;
  let total = r.own + r.reaped;
  for (const p of procs.values()) if (p.pid !== root && descends(procs, p.pid, root)) total += p.own + p.reaped;
  return total;
}

interface HostRef {
  hostId: string;
  /** The `net:[inode]` of the host's namespace (this machine's own for the base server). */
  netns: string;
  /** The base server's commands are children of this process; a namespace host's come from its sshd. */
  local: boolean;
}

/** The shell of `marker` (argv[3] of `sh -c SCRIPT marker ...`) running for `host` in this run. */
function findRoot(procs: Map<number, Proc>, host: HostRef, marker: string): number | undefined {
  const found: number[] = [];
  for (const p of procs.values()) {
    if (p.comm !== 'sh') continue;
    const argv = argvOf(p.pid);
    if (argv[0] !== 'sh' || argv[1] !== '-c' || argv[3] !== marker) continue;
    if (netnsOf(p.pid) !== host.netns) continue;
    if (host.local && !descends(procs, p.pid, process.pid)) continue;
    // The outermost one: a subshell of the script has the same argv.
    if (procs.get(p.ppid)?.comm === 'sh' && argvOf(p.ppid)[3] === marker) continue;
    found.push(p.pid);
  }
  if (found.length > 1) throw new Error(`${found.length} ${marker} shells for ${host.hostId} (pids ${found.join(', ')}); expected one`);
  return found[0];
}

interface HostCpu {
  hostId: string;
  root: number;
  rootTicks: number;
  /** The sshd session process that carries the stream (namespace hosts). */
  sshd?: number;
  sshdTicks: number;
}

interface Snapshot {
  at: number;
  node: NodeJS.CpuUsage;
  hosts: HostCpu[];
  /** Direct children of this process other than the measured shells, by command name. */
  backend: Map<string, number>;
}

function snapshot(hosts: HostRef[], marker: string): Snapshot {
  const procs = readProcs();
  const at = performance.now();
  const node = process.cpuUsage();
  const measured: HostCpu[] = [];
  const roots = new Set<number>();
  for (const h of hosts) {
    const root = findRoot(procs, h, marker);
    if (root === undefined) throw new Error(`no ${marker} shell is running for ${h.hostId}`);
    roots.add(root);
    const parent = procs.get(procs.get(root)!.ppid);
    const sshd = !h.local && parent?.comm === 'sshd' ? parent : undefined;
    measured.push({ hostId: h.hostId, root, rootTicks: treeTicks(procs, root), ...(sshd ? { sshd: sshd.pid } : {}), sshdTicks: sshd ? sshd.own : 0 });
  }
  const backend = new Map<string, number>();
  for (const p of procs.values()) {
    if (p.ppid !== process.pid || roots.has(p.pid) || p.comm === 'sh') continue;
    backend.set(p.comm, (backend.get(p.comm) ?? 0) + treeTicks(procs, p.pid));
  }
  return { at, node, hosts: measured, backend };
}

interface WindowCpu {
  seconds: number;
  /** Percent of one core, per host: the command's process tree, and the sshd carrying it. */
  hosts: { hostId: string; command: number; sshd: number | undefined }[];
  hostSide: number;
  node: number;
  total: number;
  backend: [string, number][];
}

function windowCpu(a: Snapshot, b: Snapshot): WindowCpu {
  const secs = (b.at - a.at) / 1000;
  const ofTicks = (t: number) => (t / clockTicks / secs) * 100;
  const hosts = a.hosts.map((ha) => {
    const hb = b.hosts.find((x) => x.hostId === ha.hostId);
    if (!hb || hb.root !== ha.root) throw new Error(`the command on ${ha.hostId} was restarted during the window (pid ${ha.root} -> ${hb?.root}); the window is not comparable`);
    if (hb.sshd !== ha.sshd) throw new Error(`the sshd carrying the command on ${ha.hostId} changed during the window`);
    return { hostId: ha.hostId, command: ofTicks(hb.rootTicks - ha.rootTicks), sshd: ha.sshd === undefined ? undefined : ofTicks(hb.sshdTicks - ha.sshdTicks) };
  });
  const hostSide = hosts.reduce((s, h) => s + h.command + (h.sshd ?? 0), 0);
  const node = ((b.node.user - a.node.user + b.node.system - a.node.system) / 1e6 / secs) * 100;
  const backend = [...b.backend].map(([comm, t]) => [comm, ofTicks(t - (a.backend.get(comm) ?? t))] as [string, number]).filter(([, v]) => v > 0.05);
  return { seconds: secs, hosts, hostSide, node, total: hostSide + node, backend };
}

function printWindow(label: string, w: WindowCpu): void {
  console.log(`${label}: ${pct(w.total)} of one core over ${w.seconds.toFixed(1)} s (hosts ${pct(w.hostSide)}, this process ${pct(w.node)})`);
  for (const h of w.hosts) console.log(`    ${h.hostId.padEnd(16)} command ${pct(h.command)}${h.sshd === undefined ? '' : `, sshd ${pct(h.sshd)}`}`);
  if (w.backend.length > 0) console.log(`    not counted: ${w.backend.map(([c, v]) => `${c} ${pct(v)}`).join(', ')}`);
}

// ---------------------------------------------------------------- the stack
let h: RunningHarness | undefined;
let db: TestDatabase | undefined;
let shells: HostShells | undefined;
let worker: Worker | undefined;
let workerRunning: Promise<void> | undefined;
let closeWorkerConnections: (() => Promise<void>) | undefined;
let ec2: ReturnType<typeof emulatorEc2> | undefined;
let temporal: { client: Client; close: () => Promise<void> } | undefined;
let ops: Operations;
let userId = '';
let monitorId = '';
const baselineAborts: AbortController[] = [];
const benchLabel = 'ai.markco.bench=monitor';

async function removeBenchContainers(): Promise<void> {
  const st = h?.state;
  if (!st) return;
  const removeLabelled = ['sh', '-c', `podman ps -aq --filter label=${benchLabel} | xargs -r podman rm --force --time 0 >/dev/null`];
  await Promise.allSettled(st.hosts.map((host) => onHost(host, removeLabelled, 600_000)));
}

async function cleanup(): Promise<void> {
  for (const a of baselineAborts) a.abort();
  if (temporal && monitorId) await temporal.client.workflow.getHandle(monitorId).terminate('bench over').catch(() => undefined);
  if (h && userId) await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
  await removeBenchContainers().catch(() => undefined);
  await stopBenchParts({ worker, workerRunning, closers: [() => closeWorkerConnections?.(), () => ec2?.destroy(), () => temporal?.close(), () => shells?.closeAll(), () => db?.drop()], harness: h });
}

const signalled = cleanUpOnSignal(cleanup);

/** A command run by a namespace host's own podman setup (its storage, inside its network namespace). */
function onHost(host: NamespaceHostInfo, argv: string[], timeoutMs = 120_000) {
  return hostEnvShell(host).run(['nsenter', `--net=/var/run/netns/${host.netns}`, ...argv], { timeoutMs });
}

/** Records a namespace host as a ready EC2 host, so the monitor watches it (as bench/migrate.ts does). */
async function registerHost(host: NamespaceHostInfo): Promise<void> {
  await db!.store.hosts.upsert({ id: host.hostId, kind: 'ec2', address: host.address, state: 'booting', sshUser: host.sshUser, hostKey: host.hostKey, instanceId: `i-${host.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.large' });
  await db!.store.hosts.markReady(host.hostId, await probeHostFacts(shells!.for(connectionTo(host))));
}

/**
 * `count` sleeping containers on each host in turn (labelled as runtimes, with a memory limit, no network:
 * the sampler reads only their cgroups), each with a `runtimes` row of a user of its own.
 */
async function startContainers(hosts: NamespaceHostInfo[], count: number, image: string): Promise<void> {
  const perHost = hosts.map((host, i) => ({ host, names: Array.from({ length: count }, (_, n) => n).filter((n) => n % hosts.length === i).map((n) => `bench-mon-${n}`) }));
  const script = `image=$1; shift
for name in "$@"; do
  podman run --detach --pull never --name "$name" --label ai.markco.role=runtime --label ${benchLabel} --memory ${containerLimitBytes} --network none "$image" sleep infinity >/dev/null || exit 1
done`;
  const t = performance.now();
  await Promise.all(perHost.map(({ host, names }) => (names.length > 0 ? onHost(host, ['sh', '-c', script, 'markco-bench-containers', image, ...names], 1_800_000) : undefined)));
  console.log(`started ${count} containers (${perHost.map((p) => `${p.names.length} on ${p.host.hostId}`).join(', ')}) in ${ms(performance.now() - t)}`);
  if (count === 0) return;
  const users = await db!.pool.query<{ id: string; username: string }>(
    `INSERT INTO users (email, username, name) SELECT 'bench-mon-' || i || '@example.test', 'benchmon' || i, 'Bench' FROM generate_series(0, $1::int - 1) AS i RETURNING id, username`,
    [count],
  );
  const userOf = new Map(users.rows.map((r) => [Number(r.username.slice('benchmon'.length)), r.id]));
  const rows = perHost.flatMap(({ host, names }) => names.map((name) => ({ userId: userOf.get(Number(name.slice('bench-mon-'.length)))!, name, hostId: host.hostId })));
  await db!.pool.query(
    `INSERT INTO runtimes (user_id, kind, container_name, host_id, state, tier, memory_limit_bytes, cpu_limit, image)
     SELECT u, 'user', c, hst, 'running', 't3.large', $4, 0.5, $5 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(u, c, hst)`,
    [rows.map((r) => r.userId), rows.map((r) => r.name), rows.map((r) => r.hostId), containerLimitBytes, image],
  );
  for (const { host, names } of perHost) {
    const running = (await onHost(host, ['podman', 'ps', '--filter', `label=${benchLabel}`, '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean).length;
    if (running !== names.length) throw new Error(`${host.hostId} runs ${running} bench containers, expected ${names.length}`);
  }
}

// ---------------------------------------------------------------- the user's runtime through MRP
async function execute(code: string): Promise<string> {
  const rt = await db!.store.runtimes.live(userId);
  if (!rt?.address || !rt.port) throw new Error(`user ${userId} has no live runtime`);
  const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json', connection: 'close' }, body: JSON.stringify({ code }), headersTimeout: 120_000, bodyTimeout: 120_000 });
  const text = await res.body.text();
  const body = JSON.parse(text) as { result?: string; success?: boolean };
  if (res.statusCode !== 200 || body.success === false || body.result === undefined) throw new Error(`MRP execute failed: ${text.slice(0, 500)}`);
  return body.result;
}

/** The runtime's own cgroup memory counter (what the host's sampler reads for it), from inside the container. */
const setupCode = [
  'import gc, time',
  'def _bench_usage_path():',
  '    import os',
  "    for p in ('/sys/fs/cgroup/memory/memory.usage_in_bytes', '/sys/fs/cgroup/memory.current'):",
  '        if os.path.exists(p): return p',
  "    raise RuntimeError('no cgroup memory counter in the container')",
  '_bench_path = _bench_usage_path()',
  'def _bench_usage():',
  '    with open(_bench_path) as f: return int(f.read())',
  // Anonymous maps of 1 MiB, written through: freeing them unmaps at once. (1 MiB bytearrays come from
  // malloc, which after the first frees keeps them in its heap, and the cgroup's usage would not drop.)
  'import mmap',
  'class Holder:',
  "    ones = b'\\x01' * (1 << 20)",
  '    def __init__(self): self.parts = []',
  '    def add(self):',
  '        m = mmap.mmap(-1, 1 << 20)',
  '        m.write(Holder.ones)',
  '        self.parts.append(m)',
  '    def clear(self):',
  '        for m in self.parts: m.close()',
  '        self.parts.clear()',
  "    def __repr__(self): return f'<Holder {len(self.parts)}>'",
  'held = Holder()',
  '_bench_path',
].join('\n');

const numbers = (s: string) => (s.match(/-?\d+(\.\d+)?/g) ?? []).map(Number);

/** Allocates and writes 1 MiB at a time until the cgroup counter reaches `target`; answers the crossing time (epoch ms) and the usage. */
async function fillTo(target: number): Promise<{ crossedAt: number; usage: number }> {
  const r = await execute(
    [`while _bench_usage() < ${target}: held.add()`, '_bench_crossed = time.time() * 1000', 'f"{_bench_crossed:.1f} {_bench_usage()}"'].join('\n'),
  );
  const [crossedAt, usage] = numbers(r) as [number, number];
  return { crossedAt, usage };
}

async function release(): Promise<number> {
  return numbers(await execute('held.clear()\ngc.collect()\n_bench_usage()'))[0]!;
}

// ---------------------------------------------------------------- the monitor's signals (the real ones, recorded)
interface SentReading {
  userId: string;
  event: PressureSignal;
  sentAt: number;
  doneAt: number;
  delivered: boolean;
}
const readings: SentReading[] = [];
let idleSignals = 0;

async function startWorker(): Promise<string> {
  const st = h!.state;
  // Errors only: terminating the monitor makes every watch log its cancellation as a warning.
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  const taskQueue = `bench-monitor-${randomBytes(4).toString('hex')}`;
  const connection = await NativeConnection.connect({ address: st.temporal.address });
  const clientConnection = await Connection.connect({ address: st.temporal.address });
  closeWorkerConnections = async () => {
    await connection.close();
    await clientConnection.close();
  };
  const real = entitySignals(new Client({ connection: clientConnection, namespace: st.temporal.namespace }), taskQueue);
  // The worker's own signals, with every pressure reading recorded (who, what, when it was sent and answered).
  const entities: EntitySignals = {
    ...real,
    pressure: async (user, event) => {
      const sentAt = Date.now();
      const r: SentReading = { userId: user, event, sentAt, doneAt: NaN, delivered: false };
      readings.push(r);
      const delivered = await real.pressure(user, event);
      r.doneAt = Date.now();
      r.delivered = delivered;
      return delivered;
    },
    idle: async (user, event) => {
      idleSignals++;
      return real.idle(user, event);
    },
  };
  ec2 = emulatorEc2(st);
  worker = await createWorker({
    connection,
    namespace: st.temporal.namespace,
    taskQueue,
    // MARKCO_CLOUD=none: a crossing's pre-provision or migration starts (what is measured), then fails at once.
    deps: { store: db!.store, shells: shells!, ec2, environment: testEnvironment(st), cloud: { ...testCloud(st), provider: 'none' }, entities },
    workflowBundlePath: st.workflowBundlePath,
    shutdownGraceTime: '2s',
  });
  workerRunning = worker.run();
  return taskQueue;
}

// ---------------------------------------------------------------- event latency
interface Crossing {
  band: 'pre-provision' | 'migrate';
  percent: number;
  crossedAt: number;
  /** The sample that carried the crossing (sampler clock, epoch ms), and when its signal was answered. */
  sampledAt: number;
  signalledAt: number;
  startedAt: number;
  latencyMs: number;
}

async function startedAfter(workflowId: string, after: number, timeoutMs = 30_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const d = await temporal!.client.workflow.getHandle(workflowId).describe();
      if (d.startTime.getTime() >= after) return d.startTime.getTime();
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    if (Date.now() > until) throw new Error(`no new run of ${workflowId} started within ${timeoutMs / 1000} s of the crossing`);
    await sleep(50);
  }
}

async function cross(band: Crossing['band'], percent: number, limit: number): Promise<Crossing> {
  const workflowId = band === 'pre-provision' ? workflowIds.preProvision(userId) : workflowIds.migrate(userId);
  // A crossing lands anywhere between two samples: without this, the 75% fill would always start just
  // after the sample that carried the 50% one, and wait for almost a whole interval.
  await sleep(Math.random() * intervalMs);
  const before = Date.now();
  const { crossedAt, usage } = await fillTo(Math.ceil((limit * percent) / 100) + MiB);
  const startedAt = await startedAfter(workflowId, before);
  const carried = readings.find((r) => r.userId === userId && r.sentAt >= before && r.event.usedBytes * 100 >= percent * limit);
  const c: Crossing = {
    band,
    percent,
    crossedAt,
    sampledAt: carried ? Number(carried.event.at) : NaN,
    signalledAt: carried?.doneAt ?? NaN,
    startedAt,
    latencyMs: startedAt - crossedAt,
  };
  console.log(
    `  ${band.padEnd(13)} ${percent}% (usage ${(usage / MiB).toFixed(0)} MiB): started ${ms(c.latencyMs)} after the crossing (sampled +${ms(c.sampledAt - crossedAt)}, signal answered +${ms(c.signalledAt - crossedAt)})`,
  );
  return c;
}

/** Frees the cell's memory and waits until the entity has a reading below 45% (both bands re-armed). */
async function rearm(limit: number): Promise<void> {
  const usage = await release();
  if (usage * 100 >= 45 * limit) throw new Error(`after freeing its memory the runtime still uses ${(usage / MiB).toFixed(0)} MiB, not under 45% of ${(limit / MiB).toFixed(0)} MiB`);
  const until = Date.now() + 20_000;
  // The monitor signals a change of band: the user's latest reading, delivered, is the low one.
  const latestIsLow = () => {
    const last = readings.filter((r) => r.userId === userId).at(-1);
    return last !== undefined && last.delivered && last.event.usedBytes * 100 < 45 * limit;
  };
  while (!latestIsLow()) {
    if (Date.now() > until) throw new Error('no reading below 45% reached the entity within 20 s of freeing the memory');
    await sleep(100);
  }
  // The failed pre-provision and migration must have ended (a running one would cover the next crossing,
  // or refuse a second start under its id), and the entity must have seen its child end.
  for (const id of [workflowIds.preProvision(userId), workflowIds.migrate(userId)]) {
    while (await temporal!.client.workflow.getHandle(id).describe().then((d) => d.status.name === 'RUNNING', () => false)) {
      if (Date.now() > until) throw new Error(`${id} was still running 20 s after the memory was freed`);
      await sleep(100);
    }
  }
  await sleep(1000);
}

// ---------------------------------------------------------------- the baseline: podman stats every 2 s
const statsMarker = 'markco-bench-stats';
const statsScript = `interval_ms=$1
while :; do
  start=$(date +%s%3N)
  podman stats --no-stream --format json
  end=$(date +%s%3N)
  echo "--round $start $end"
  left=$((interval_ms - (end - start)))
  if [ "$left" -gt 0 ]; then sleep "$((left / 1000)).$(printf %03d $((left % 1000)))"; fi
done`;

interface StatsRound {
  hostId: string;
  durationMs: number;
  containers: number;
  endedAt: number;
}

async function startPodmanStats(hostId: string, shell: HostShell, rounds: StatsRound[]): Promise<{ done: Promise<unknown> }> {
  const abort = new AbortController();
  baselineAborts.push(abort);
  const reader = await shell.openReader(['sh', '-c', statsScript, statsMarker, String(intervalMs)], { signal: abort.signal, timeoutMs: 3_600_000 });
  reader.stdout.on('error', () => undefined);
  let buffered = '';
  let json = '';
  reader.stdout.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const m = /^--round (\d+) (\d+)$/.exec(line);
      if (!m) {
        json += `${line}\n`;
        continue;
      }
      // What a consumer does with each round: parse it.
      let parsed: unknown[] = [];
      try {
        parsed = JSON.parse(json) as unknown[];
      } catch {
        /* an empty host prints nothing parseable */
      }
      json = '';
      rounds.push({ hostId, durationMs: Number(m[2]) - Number(m[1]), containers: Array.isArray(parsed) ? parsed.length : 0, endedAt: Date.now() });
    }
  });
  return { done: reader.done.catch(() => undefined) };
}

// ---------------------------------------------------------------- the run
const loadAtStart = loadavg();
const benchStarted = performance.now();
try {
  h = await startHarness({ hosts: 2 });
  const st = h.state;
  const nsHosts = st.hosts;
  db = await freshDatabase(st);
  shells = testShells(st, { commandTimeoutMs: 600_000 });
  await registerBaseHost(db.store, shells);
  for (const host of nsHosts) await registerHost(host);
  const hostRefs: HostRef[] = [
    { hostId: 'base', netns: netnsOf('self'), local: true },
    ...nsHosts.map((host) => ({ hostId: host.hostId, netns: `net:[${statSync(`/var/run/netns/${host.netns}`).ino}]`, local: false })),
  ];

  const taskQueue = await startWorker();
  temporal = await temporalClient(st);
  ops = createOperations(temporal.client, taskQueue);
  userId = (await db.store.users.ensureByEmail({ email: 'bench-monitor@example.test', name: 'Bench' })).user.id;
  await (await ops.startLogin({ userId })).handle.result();
  const limit = (await db.store.runtimes.live(userId))!.memoryLimitBytes;
  const counter = await execute(setupCode);
  const idleUsage = numbers(await execute('_bench_usage()'))[0]!;
  console.log(`user ${userId}: runtime on base, limit ${(limit / MiB).toFixed(0)} MiB, using ${(idleUsage / MiB).toFixed(0)} MiB (${((idleUsage / limit) * 100).toFixed(0)}%, read from ${counter} inside the container)`);
  if (idleUsage * 100 >= 45 * limit) throw new Error('the idle runtime already uses 45% of its limit: the bands cannot be crossed from below');

  await startContainers(nsHosts, containers, st.baseImage);

  // ---------------------------------------------------------------- markco: the resource monitor
  monitorId = `bench-monitor-${randomBytes(3).toString('hex')}`;
  const monitorInput: ResourceMonitorInput = { intervalMs, idleAfterMs: 3_600_000, watchForMs: 3_600_000, rescanMs: 30_000 };
  await temporal.client.workflow.start('resourceMonitor', { workflowId: monitorId, taskQueue, args: [monitorInput] });
  const watchUntil = Date.now() + 60_000;
  while (hostRefs.some((ref) => findRoot(readProcs(), ref, 'markco-sampler') === undefined)) {
    if (Date.now() > watchUntil) throw new Error('the monitor did not start a sampler on every host within 60 s');
    await sleep(200);
  }
  const monitorStarted = Date.now();
  await sleep(warmupMs);
  console.log(`\nmarkco resource monitor, ${containers} containers + 1 runtime on ${hostRefs.length} hosts, every ${intervalMs} ms; measuring ${seconds} s after a ${warmupMs / 1000} s warm-up`);
  const seenAtStart = new Set(readings.filter((r) => r.sentAt >= monitorStarted - 5000).map((r) => r.event.runtimeId)).size;
  console.log(`  runtimes the monitor sent readings for during the warm-up: ${seenAtStart} (expected ${containers + 1})`);
  const readingsBefore = readings.length;
  const a = snapshot(hostRefs, 'markco-sampler');
  await sleep(seconds * 1000);
  const b = snapshot(hostRefs, 'markco-sampler');
  const markco = windowCpu(a, b);
  const windowReadings = readings.slice(readingsBefore).filter((r) => r.sentAt >= monitorStarted);
  const tracked = new Set(windowReadings.map((r) => r.event.runtimeId)).size;
  printWindow('  markco', markco);
  console.log(`    readings signalled in the window: ${windowReadings.length} for ${tracked} runtimes (${windowReadings.filter((r) => r.delivered).length} delivered to a running entity); idle signals ${idleSignals}`);

  // ---------------------------------------------------------------- latency, with the monitor still watching everything
  console.log(`\nevent latency, ${cycles} cycle(s): fill to 50%, then 75%, then free`);
  const crossings: Crossing[] = [];
  await rearm(limit);
  for (let i = 0; i < cycles; i++) {
    crossings.push(await cross('pre-provision', 50, limit));
    crossings.push(await cross('migrate', 75, limit));
    await rearm(limit);
  }
  await temporal.client.workflow.getHandle(monitorId).terminate('measured');
  const goneUntil = Date.now() + 60_000;
  while (hostRefs.some((ref) => findRoot(readProcs(), ref, 'markco-sampler') !== undefined)) {
    if (Date.now() > goneUntil) throw new Error('the samplers were still running 60 s after the monitor was terminated');
    await sleep(200);
  }

  // ---------------------------------------------------------------- baseline: podman stats on every host
  console.log(`\nbaseline: podman stats --no-stream --format json every ${intervalMs} ms on every host`);
  const rounds: StatsRound[] = [];
  const running: Promise<unknown>[] = [];
  running.push((await startPodmanStats('base', shells.for({ hostId: 'base', kind: 'base', address: '127.0.0.1' }), rounds)).done);
  for (const host of nsHosts) running.push((await startPodmanStats(host.hostId, shells.for(connectionTo(host)), rounds)).done);
  const warmUntil = Date.now() + 120_000;
  while (hostRefs.some((ref) => rounds.filter((r) => r.hostId === ref.hostId).length < 2)) {
    if (Date.now() > warmUntil) throw new Error('podman stats did not complete two rounds on every host within 120 s');
    await sleep(200);
  }
  const ba = snapshot(hostRefs, statsMarker);
  const roundsBefore = rounds.length;
  await sleep(seconds * 1000);
  const bb = snapshot(hostRefs, statsMarker);
  const baseline = windowCpu(ba, bb);
  const inWindow = rounds.slice(roundsBefore);
  for (const ab of baselineAborts) ab.abort();
  await Promise.all(running);
  printWindow('  podman stats', baseline);
  for (const ref of hostRefs) {
    const r = inWindow.filter((x) => x.hostId === ref.hostId);
    console.log(`    ${ref.hostId.padEnd(16)} ${r.length} rounds (one every ${((baseline.seconds * 1000) / Math.max(1, r.length) / 1000).toFixed(2)} s), podman stats took ${ms(median(r.map((x) => x.durationMs)))} median, ${r[0]?.containers ?? 0} containers`);
  }

  // ---------------------------------------------------------------- report
  const lat = crossings.map((c) => c.latencyMs);
  const byBand = (band: Crossing['band']) => crossings.filter((c) => c.band === band).map((c) => c.latencyMs);
  console.log(`\nsummary (${containers} containers on ${nsHosts.length} namespace hosts + the base server, every ${intervalMs} ms, ${seconds} s windows)`);
  console.log(`  markco monitor: ${pct(markco.total)} of one core (hosts ${pct(markco.hostSide)}, worker ${pct(markco.node)}); goal < 10%: ${markco.total < 10 ? 'met' : 'missed'}`);
  console.log(`  podman stats:   ${pct(baseline.total)} of one core (hosts ${pct(baseline.hostSide)}, parsing ${pct(baseline.node)})`);
  console.log(`  ratio markco/podman stats: ${(markco.total / baseline.total).toFixed(3)}x (hosts only ${(markco.hostSide / baseline.hostSide).toFixed(3)}x)`);
  console.log(`  latency crossing -> workflow start: median ${ms(median(lat))}, max ${ms(Math.max(...lat))} (n=${lat.length}); pre-provision median ${ms(median(byBand('pre-provision')))}, migrate median ${ms(median(byBand('migrate')))}; goal < 3 s: ${Math.max(...lat) < 3000 ? 'met' : 'missed'}`);
  const sampled = crossings.map((c) => c.sampledAt - c.crossedAt).filter((x) => !Number.isNaN(x));
  const afterSample = crossings.map((c) => c.startedAt - c.sampledAt).filter((x) => !Number.isNaN(x));
  console.log(`    of which crossing -> sample ${ms(median(sampled))} median (${ms(Math.max(...sampled))} max), sample -> workflow start ${ms(median(afterSample))} median (${ms(Math.max(...afterSample))} max)`);
  const params = `${containers} containers, ${seconds} s windows, every ${intervalMs} ms`;
  report({ name: 'resource monitor CPU, hosts + worker', metric: 'CPU over one window', unit: '% of a core', better: 'lower', samples: [markco.total], baseline: { name: 'podman stats --no-stream every 2 s on every host, JSON parsed', samples: [baseline.total] }, goal: { on: 'median', op: '<', value: 10, source: 'issue 6' }, params });
  report({ name: 'resource monitor CPU, hosts only', metric: 'CPU over one window', unit: '% of a core', better: 'lower', samples: [markco.hostSide], baseline: { name: 'podman stats on every host', samples: [baseline.hostSide] }, params });
  report({ name: 'memory crossing to workflow start', metric: 'latency', unit: 'ms', better: 'lower', samples: lat, goal: { on: 'max', op: '<', value: 3000, source: 'issue 6' }, params: `${cycles} cycles, 50% and 75%` });
  console.log(`load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}, at end ${loadavg().map((l) => l.toFixed(2)).join(' ')}; bench took ${((performance.now() - benchStarted) / 1000).toFixed(0)} s`);
} finally {
  if (!signalled.stopping) await cleanup();
}
