import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { liveHostStates, type Store } from '../../lib/store.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import type { ReapInstancesResult } from '../../workflows/contracts/elastic.js';
import { entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import { emulatorEc2, liveInstancesOfUser, registerBaseHost, startTestBootWatcher, testShells } from './context.js';
import type { HarnessState } from './harness.js';
import { hostEnvShell, podmanOn, type NamespaceHostInfo } from './netns.js';
import { startWorkerProcess, testWorkerEnv, type WorkerProcess } from './worker-process.js';

/**
 * What the fault-injection tests (test/integration/faults-*.test.ts) share: a database, a boot watcher
 * for the file's simulated EC2 instances, workers as separate processes (so they can be killed), and
 * the check that the books balance after a fault: nothing the reaper would reap, no container, instance,
 * port lease or reservation beyond the user's one runtime.
 */
export interface FaultDatabase {
  url: string;
  pool: pg.Pool;
  store: Store;
  drop(): Promise<void>;
}

export interface FaultStack {
  db: FaultDatabase;
  shells: HostShells;
  watcher: BootWatcher;
  ec2: EC2Client;
  temporal: { client: Client; close: () => Promise<void> };
  ops: Operations;
  deploymentId: string;
  taskQueue: string;
  workerEnv: Record<string, string>;
  workers: WorkerProcess[];
  logDir: string;
  /** Starts a worker process and waits until it polls. */
  startWorker(name?: string): Promise<WorkerProcess>;
  /** The newest worker process. */
  worker(): WorkerProcess;
  /** Runs Python in the user's runtime through MRP, where PostgreSQL says it runs. */
  execute(userId: string, code: string): Promise<{ result: string | null; executionCount: number }>;
  newUser(email: string): Promise<string>;
  /** Asserts the books balance for these users (see assertBooksBalance). */
  balance(users: { userId: string; state: 'running' | 'checkpointed' }[]): Promise<BooksReport>;
  close(): Promise<void>;
}

export async function startFaultStack(
  h: { readonly state: HarnessState },
  opts: { name: string; db: FaultDatabase; temporal: { client: Client; close: () => Promise<void> }; temporalAddress?: string; env?: Record<string, string> },
): Promise<FaultStack> {
  const state = h.state;
  const shells = testShells(state);
  await registerBaseHost(opts.db.store, shells);
  const deploymentId = `${opts.name}-${randomBytes(3).toString('hex')}`;
  const taskQueue = `test-${opts.name}-${randomBytes(4).toString('hex')}`;
  const logDir = join(state.runDir, opts.name);
  const watcher = startTestBootWatcher(state, { deploymentId });
  const ec2 = emulatorEc2(state);
  const workerEnv = {
    ...testWorkerEnv(state, { databaseUrl: opts.db.url, taskQueue, deploymentId, dataDir: join(logDir, 'data') }),
    ...(opts.temporalAddress ? { TEMPORAL_ADDRESS: opts.temporalAddress } : {}),
    MARKCO_S3_BUCKET: `markco-${opts.name}-${randomBytes(3).toString('hex')}`,
    MARKCO_S3_PART_MIB: '5',
    ...opts.env,
  };
  const workers: WorkerProcess[] = [];
  let count = 0;
  const ops = createOperations(opts.temporal.client, taskQueue);
  const stack: FaultStack = {
    db: opts.db,
    shells,
    watcher,
    ec2,
    temporal: opts.temporal,
    ops,
    deploymentId,
    taskQueue,
    workerEnv,
    workers,
    logDir,
    async startWorker(name) {
      const w = startWorkerProcess(workerEnv, { logDir, name: name ?? `worker-${++count}` });
      workers.push(w);
      await w.ready;
      return w;
    },
    worker() {
      const w = workers.at(-1);
      if (!w) throw new Error('no worker started');
      return w;
    },
    async execute(userId, code) {
      const rt = await opts.db.store.runtimes.live(userId);
      assert.ok(rt?.address && rt.port, `user ${userId} has a runtime with an address: ${JSON.stringify(rt)}`);
      const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', connection: 'close' },
        body: JSON.stringify({ code }),
        headersTimeout: 60_000,
        bodyTimeout: 60_000,
      });
      const text = await res.body.text();
      assert.equal(res.statusCode, 200, text);
      return JSON.parse(text) as { result: string | null; executionCount: number };
    },
    async newUser(email) {
      return (await opts.db.store.users.ensureByEmail({ email, name: email.split('@')[0]! })).user.id;
    },
    balance: (users) => assertBooksBalance(stack, state, users),
    async close() {
      for (const w of workers) {
        w.killGroup('SIGKILL');
        await w.exited;
      }
      await watcher.stop().catch(() => undefined);
      ec2.destroy();
      await shells.closeAll();
    },
  };
  return stack;
}

/** Big random bytes behind a short repr, so the runtime's variable view stays small. */
export function ballastCode(name: string, mib: number): string {
  return ['import os', `class _Ballast_${name}:`, '    def __init__(self, n): self._b = os.urandom(n)', "    def __repr__(self): return 'ballast'", `${name} = _Ballast_${name}(${mib} << 20)`].join('\n');
}

/** Activity types a workflow run scheduled, in the order each was first scheduled. */
export async function activitiesOf(client: Client, workflowId: string, runId?: string): Promise<string[]> {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const seen: string[] = [];
  for (const e of history.events ?? []) {
    const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (name && !seen.includes(name)) seen.push(name);
  }
  return seen;
}

/** Every attempt of every activity of a run, as its history records them (for assertions and failure messages). */
export async function activityAttempts(client: Client, workflowId: string, runId?: string): Promise<{ attempts: Record<string, number[]>; lines: string[] }> {
  const handle = client.workflow.getHandle(workflowId, runId);
  const history = await handle.fetchHistory();
  const names = new Map<string, string>();
  const attempts: Record<string, number[]> = {};
  const lines: string[] = [];
  for (const e of history.events ?? []) {
    const id = String(e.eventId);
    const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (name) names.set(id, name);
    const started = e.activityTaskStartedEventAttributes;
    const ended = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes;
    if (started) {
      const n = names.get(String(started.scheduledEventId)) ?? '?';
      (attempts[n] ??= []).push(started.attempt ?? 0);
      lines.push(`started ${n} attempt ${started.attempt}${started.lastFailure ? ` (previous: ${started.lastFailure.message})` : ''}`);
    } else if (ended) {
      const n = names.get(String(ended.scheduledEventId)) ?? '?';
      const failure = e.activityTaskFailedEventAttributes?.failure ?? e.activityTaskTimedOutEventAttributes?.failure;
      lines.push(`${e.activityTaskCompletedEventAttributes ? 'completed' : e.activityTaskFailedEventAttributes ? 'failed' : 'timed out'} ${n}${failure ? `: ${failure.message}${failure.cause?.message ? ` / ${failure.cause.message}` : ''}` : ''}`);
    }
  }
  const described = await handle.describe().catch(() => undefined);
  for (const a of described?.raw.pendingActivities ?? []) lines.push(`pending ${a.activityType?.name} attempt ${a.attempt}${a.lastFailure ? ` (last failure: ${a.lastFailure.message})` : ''}`);
  return { attempts, lines };
}

/** The user's entity has no operation running or queued (its bookkeeping after a child is done). */
export async function entitySettled(client: Client, userId: string, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    `the entity of ${userId} to run nothing`,
    async () => {
      const s = await client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      if (s.running !== null || s.queue.length > 0) throw new Error(JSON.stringify({ running: s.running, queue: s.queue }));
    },
    { timeoutMs, intervalMs: 250 },
  );
}

/** Processes whose command line names an id (a migration's or a snapshot's scratch, FIFOs, receivers). */
export function processesNaming(id: string): string[] {
  const r = spawnSync('pgrep', ['-af', id], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.trim() !== '' && !l.includes('pgrep'));
}

export interface BooksReport {
  reaper: ReapInstancesResult;
  containers: Record<string, string[]>;
  instances: string[];
}

/**
 * The reaper's books balance: its own plan (workflows/reaper.ts in dry run, grace 0, against the
 * emulator) would terminate nothing and close no row; every running instance of the deployment is a
 * live host row that holds a live runtime and vice versa; each user has exactly their runtime container
 * (running, where PostgreSQL says) and their editor, nothing else on any host; one runtime port lease,
 * on the runtime's host and port (none when checkpointed); no unclaimed reservation; no migration left
 * running; no process of any of the users' migrations left.
 */
export async function assertBooksBalance(s: FaultStack, state: HarnessState, users: { userId: string; state: 'running' | 'checkpointed' }[]): Promise<BooksReport> {
  const { pool } = s.db;
  for (const u of users) await entitySettled(s.temporal.client, u.userId);

  const reaper = (await s.temporal.client.workflow.execute('reapInstances', {
    taskQueue: s.taskQueue,
    workflowId: `faults-reaper-dry-run-${randomBytes(4).toString('hex')}`,
    args: [{ dryRun: true, graceSeconds: 0 }],
  })) as ReapInstancesResult;
  assert.deepEqual(reaper.terminated, [], `the reaper would terminate: ${JSON.stringify(reaper.terminated)}`);
  assert.deepEqual(reaper.rowsClosed, [], `the reaper would close host rows: ${JSON.stringify(reaper.rowsClosed)}`);

  // Instances against host rows against runtimes.
  const instances = (await Promise.all(users.map((u) => liveInstancesOfUser(s.ec2, u.userId, s.deploymentId)))).flat().map((i) => i.InstanceId!).sort();
  const liveHosts = await pool.query<{ id: string; instance_id: string; runtimes: string }>(
    `SELECT h.id, h.instance_id, (SELECT count(*) FROM runtimes r WHERE r.host_id = h.id AND r.state NOT IN ('stopped', 'failed', 'checkpointed'))::text AS runtimes
       FROM hosts h WHERE h.kind = 'ec2' AND h.state = ANY($1)`,
    [liveHostStates],
  );
  assert.deepEqual(liveHosts.rows.map((r) => r.instance_id).sort(), instances, `running instances ${JSON.stringify(instances)} are exactly the live EC2 host rows ${JSON.stringify(liveHosts.rows)}`);
  for (const r of liveHosts.rows) assert.equal(r.runtimes, '1', `live EC2 host ${r.id} holds a runtime (else nothing uses it)`);
  const reserved = await pool.query(`SELECT id, reserved_for, reserved_until, claimed_by FROM hosts WHERE claimed_by IS NULL AND reserved_until > now() AND state = ANY($1)`, [liveHostStates]);
  assert.deepEqual(reserved.rows, [], 'no unclaimed reservation is left');

  // Containers on every host the run has: the base server, the static namespace hosts, the booted instances.
  const psArgs = ['ps', '--all', '--format', 'json'];
  const hosts: { id: string; list: () => Promise<string> }[] = [
    { id: 'base', list: async () => (await hostEnvShell(state.baseHost).run(['podman', ...psArgs])).stdout },
    ...[...state.hosts, ...s.watcher.booted()].map((b: NamespaceHostInfo) => ({
      id: b.hostId,
      list: async () => {
        try {
          return (await podmanOn(b, psArgs)).stdout;
        } catch (err) {
          // An instance just terminated is being torn down under the command: it holds nothing.
          if (s.watcher.booted().some((x) => x.hostId === b.hostId) || state.hosts.includes(b)) throw err;
          return '[]';
        }
      },
    })),
  ];
  const containers: Record<string, string[]> = {};
  for (const host of hosts) {
    const listed = JSON.parse((await host.list()) || '[]') as { Names: string[]; State: string }[];
    const names = listed.map((c) => `${c.Names[0]} ${c.State}`).filter((l) => users.some((u) => l.includes(u.userId)));
    if (names.length > 0) containers[host.id] = names.sort();
  }
  const expected: Record<string, string[]> = {};
  for (const u of users) {
    const rt = await pool.query<{ host_id: string; port: number; state: string; container_name: string }>(
      `SELECT host_id, port, state, container_name FROM runtimes WHERE user_id = $1 AND kind = 'user' AND state NOT IN ('stopped', 'failed')`,
      [u.userId],
    );
    assert.equal(rt.rows.length, 1, `user ${u.userId} has one runtime row: ${JSON.stringify(rt.rows)}`);
    const row = rt.rows[0]!;
    assert.equal(row.state, u.state, `the runtime of ${u.userId} is ${u.state}`);
    const hostId = row.host_id === 'base' ? 'base' : await hostIdOfRow(s, state, row.host_id);
    if (u.state === 'running') (expected[hostId] ??= []).push(`${row.container_name} running`);
    const editors = await pool.query<{ container_name: string }>(`SELECT container_name FROM editors WHERE user_id = $1 AND state NOT IN ('stopped', 'failed')`, [u.userId]);
    for (const e of editors.rows) (expected.base ??= []).push(`${e.container_name} running`);

    const leases = await pool.query<{ host_id: string; port: number; purpose: string }>(`SELECT host_id, port, purpose FROM port_leases WHERE user_id = $1 ORDER BY purpose`, [u.userId]);
    const runtimeLeases = leases.rows.filter((l) => l.purpose === 'runtime').map((l) => [l.host_id, l.port]);
    assert.deepEqual(runtimeLeases, u.state === 'running' ? [[row.host_id, row.port]] : [], `the runtime port leases of ${u.userId}: ${JSON.stringify(leases.rows)}`);
    assert.deepEqual(leases.rows.filter((l) => l.purpose === 'sandbox'), [], 'no sandbox lease');
    for (const p of ['editor', 'editor-sync']) assert.ok(leases.rows.filter((l) => l.purpose === p).length <= editors.rows.length, `at most one ${p} lease per live editor: ${JSON.stringify(leases.rows)}`);

    const migrations = await pool.query<{ id: string; status: string }>(`SELECT id, status FROM migrations WHERE user_id = $1`, [u.userId]);
    assert.deepEqual(migrations.rows.filter((m) => !['completed', 'failed', 'cancelled'].includes(m.status)), [], 'no migration is left running');
    for (const m of migrations.rows) assert.deepEqual(processesNaming(m.id), [], `no process of migration ${m.id} is left`);
  }
  for (const k of Object.keys(expected)) expected[k]!.sort();
  assert.deepEqual(containers, expected, 'each user has their runtime (where PostgreSQL says, running) and editor, and nothing else on any host');
  return { reaper, containers, instances };
}

/** Container listings are keyed by the harness's host ids; a booted instance's host row id is the same. */
async function hostIdOfRow(s: FaultStack, state: HarnessState, rowHostId: string): Promise<string> {
  if (state.hosts.some((h) => h.hostId === rowHostId) || s.watcher.booted().some((b) => b.hostId === rowHostId)) return rowHostId;
  const row = await s.db.pool.query<{ address: string }>(`SELECT address FROM hosts WHERE id = $1`, [rowHostId]);
  const byAddress = [...state.hosts, ...s.watcher.booted()].find((b) => b.address === row.rows[0]?.address);
  return byAddress?.hostId ?? rowHostId;
}
