import { writeFileSync } from 'node:fs';
import { request } from 'undici';
import { probeHostFacts } from '../activities/hosts.js';
import type { MigrateRuntimeResult } from '../workflows/contracts/elastic.js';
import { createOperations } from '../lib/operations.js';
import { connectionTo, freshDatabase, registerBaseHost, temporalClient, testShells } from '../test/support/context.js';
import { startEdgeWorker, startTestEdge } from '../test/support/edge.js';
import { startHarness } from '../test/support/harness.js';
import { hostEnvShell, podmanOn, storageConf } from '../test/support/netns.js';
import { report } from './results.js';

/**
 * Load (issue 10 item 2): N users sign in at once through the edge, each runs cells through `/u/<id>/`,
 * then M of them migrate at once to two other hosts, on this one machine. The runtime is the stand-in
 * image (images/runtime-standin, ~11 MB per container instead of mrmd-python's 60+) so N pairs of
 * containers fit; the editor, the edge, the worker, PostgreSQL and Temporal are the real ones.
 * Reports errors, login-to-ready p50/p95/max (goal p95 < 10 s), cell round trips, migrations, and the
 * longest workflow history of each kind against Temporal's limits.
 *   LOAD_USERS=200 LOAD_MIGRATING=20 node --import tsx bench/load.ts   (or npm run bench load)
 */
const users = Number(process.argv[2] ?? process.env.LOAD_USERS ?? 200);
const migrating = Math.min(users, Number(process.argv[3] ?? process.env.LOAD_MIGRATING ?? 20));
const standin = process.env.MARKCO_RUNTIME_STANDIN_IMAGE ?? 'localhost/markco-runtime-standin:0.1';

const pct = (xs: number[], p: number) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!);
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

const harness = await startHarness({ hosts: 2 });
harness.state.images = { ...harness.state.images, runtime: standin };
const db = await freshDatabase(harness.state);
const shells = testShells(harness.state);
const errors: string[] = [];
let worker: Awaited<ReturnType<typeof startEdgeWorker>> | undefined;
let edge: Awaited<ReturnType<typeof startTestEdge>> | undefined;
try {
  await registerBaseHost(db.store, shells);
  for (const host of harness.state.hosts) {
    // Runtime AMIs carry the images: the namespace hosts read the machine's built images.
    writeFileSync(host.env.CONTAINERS_STORAGE_CONF, storageConf(host.dir, '/var/lib/containers/storage'));
    await db.store.hosts.upsert({ id: host.hostId, kind: 'ec2', address: host.address, state: 'booting', sshUser: host.sshUser, hostKey: host.hostKey, instanceId: `i-${host.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.small' });
    await db.store.hosts.markReady(host.hostId, await probeHostFacts(shells.for(connectionTo(host))));
  }
  worker = await startEdgeWorker(harness.state, db, shells);
  edge = await startTestEdge(harness.state, db, worker.taskQueue);
  const edgeUrl = edge.url;

  // 1. Everyone signs in at once; ready = the login operation completed (runtime and editor answer).
  console.log(`${users} users sign in at once (runtime ${standin}, editor ${harness.state.images.editor})`);
  const started = performance.now();
  const signedIn = await Promise.all(
    Array.from({ length: users }, async (_, i) => {
      const t0 = performance.now();
      try {
        const login = await request(`${edgeUrl}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: `load-${i}@example.test` }) });
        if (login.statusCode !== 200) throw new Error(`dev login answered ${login.statusCode}: ${await login.body.text()}`);
        const body = (await login.body.json()) as { user: { id: string }; operation_id?: string };
        const cookie = String(login.headers['set-cookie']).split(';')[0]!;
        // Without operation_id both containers already answered: nothing to wait for.
        let state: { status: string; error?: string; message?: string } = { status: body.operation_id ? 'running' : 'completed' };
        while (state.status === 'running') {
          const op = await request(`${edgeUrl}/api/operations/${body.operation_id}?wait=300`, { headers: { cookie }, headersTimeout: 330_000, bodyTimeout: 330_000 });
          state = (await op.body.json()) as typeof state;
          if (op.statusCode >= 400) throw new Error(`operation answered ${op.statusCode}: ${state.message ?? ''}`);
        }
        if (state.status !== 'completed') throw new Error(`login ${state.status}: ${state.error ?? ''}`);
        return { id: body.user.id, cookie, readyMs: performance.now() - t0 };
      } catch (err) {
        errors.push(`user ${i} login: ${(err as Error).message}`);
        return undefined;
      }
    }),
  );
  const ready = signedIn.filter((u): u is NonNullable<typeof u> => u !== undefined);
  const readyTimes = ready.map((u) => u.readyMs);
  const allReadyMs = performance.now() - started;

  // 2. Each runs cells through the edge: x = 42, then x.
  const cellTimes: number[] = [];
  const execute = async (u: { id: string; cookie: string }, code: string) => {
    const rt = (await db.store.runtimes.live(u.id))!;
    const t0 = performance.now();
    const r = await request(`${edgeUrl}/u/${u.id}/proxy/${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { cookie: u.cookie, 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
    const answer = (await r.body.json()) as { result: string | null };
    cellTimes.push(performance.now() - t0);
    if (r.statusCode !== 200) throw new Error(`execute answered ${r.statusCode}`);
    return answer.result;
  };
  await Promise.all(
    ready.map(async (u) => {
      try {
        await execute(u, 'x = 42');
        if ((await execute(u, 'x')) !== '42') throw new Error('x is not 42');
      } catch (err) {
        errors.push(`user ${u.id} cells: ${(err as Error).message}`);
      }
    }),
  );

  // 3. Some of them migrate at once, half to each other host, and x is still 42 there.
  const temporal = await temporalClient(harness.state);
  const ops = createOperations(temporal.client, worker.taskQueue);
  const migrationTimes: number[] = [];
  await Promise.all(
    ready.slice(0, migrating).map(async (u, i) => {
      const target = harness.state.hosts[i % harness.state.hosts.length]!;
      const t0 = performance.now();
      try {
        const r = (await (await ops.startMigration(u.id, { target: 't3.small', targetHostId: target.hostId })).handle.result()) as MigrateRuntimeResult;
        migrationTimes.push(performance.now() - t0);
        if (r.targetHostId !== target.hostId) throw new Error(`moved to ${r.targetHostId}`);
        if ((await execute(u, 'x')) !== '42') throw new Error('x is not 42 after the migration');
      } catch (err) {
        errors.push(`user ${u.id} migration: ${(err as Error).message}`);
      }
    }),
  );

  // 4. The longest history of each kind (Temporal warns at 10,240 events and ends a run at 51,200).
  const longest: Record<string, { events: number; bytes: number }> = {};
  for await (const wf of temporal.client.workflow.list({ query: `TaskQueue="${worker.taskQueue}"` })) {
    const d = await temporal.client.workflow.getHandle(wf.workflowId, wf.runId).describe();
    const kind = wf.type;
    const events = d.historyLength;
    const bytes = Number(d.raw.workflowExecutionInfo?.historySizeBytes ?? 0);
    const seen = longest[kind] ?? { events: 0, bytes: 0 };
    longest[kind] = { events: Math.max(seen.events, events), bytes: Math.max(seen.bytes, bytes) };
  }
  await temporal.close();

  console.log(`load: ${users} users at once, ${migrating} migrating, on ${(await import('node:os')).cpus().length} cores`);
  console.log(`  errors: ${errors.length}${errors.length > 0 ? `\n    ${errors.slice(0, 10).join('\n    ')}` : ''}`);
  console.log(`  login to ready: p50 ${s(pct(readyTimes, 50))}, p95 ${s(pct(readyTimes, 95))}, max ${s(pct(readyTimes, 100))} (goal p95 < 10 s); all ${ready.length} ready after ${s(allReadyMs)}`);
  console.log(`  cell round trip through the edge: p50 ${pct(cellTimes, 50).toFixed(1)} ms, p95 ${pct(cellTimes, 95).toFixed(1)} ms`);
  console.log(`  migrations at once: ${migrationTimes.length}/${migrating} done, p50 ${s(pct(migrationTimes, 50))}, max ${s(pct(migrationTimes, 100))}`);
  for (const [kind, l] of Object.entries(longest).sort()) console.log(`  longest ${kind} history: ${l.events} events, ${(l.bytes / 1024).toFixed(0)} KiB (limit 51,200 events / 50 MiB)`);
  const base = hostEnvShell(harness.state.baseHost);
  const running = (await base.run(['podman', 'ps', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean).length;
  const remote = await Promise.all(harness.state.hosts.map(async (h) => (await podmanOn(h, ['ps', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean).length));
  console.log(`  containers running: base ${running}, other hosts ${remote.join(' + ')}`);
  const params = `${users} users, ${migrating} migrating, stand-in runtime`;
  report({ name: 'errors under load', metric: 'failed logins, cells and migrations', unit: 'count', better: 'lower', samples: [errors.length], goal: { on: 'median', op: '<=', value: 0, source: 'issue 10' }, params });
  report({ name: 'login to ready, p95 of all users at once', metric: 'p95 wall time', unit: 's', better: 'lower', samples: [pct(readyTimes, 95) / 1000], goal: { on: 'median', op: '<', value: 10, source: 'issue 10' }, params });
  report({ name: 'login to ready, each user', metric: 'wall time', unit: 's', better: 'lower', samples: readyTimes.map((t) => t / 1000), params });
  report({ name: 'migration under load, each', metric: 'wall time', unit: 's', better: 'lower', samples: migrationTimes.map((t) => t / 1000), params });
  const maxEvents = Math.max(...Object.values(longest).map((l) => l.events));
  report({ name: 'longest workflow history', metric: 'events', unit: 'events', better: 'lower', samples: [maxEvents], goal: { on: 'median', op: '<', value: 10_240, source: "Temporal's warning limit" }, params });
  process.exitCode = errors.length > 0 ? 1 : 0;
} finally {
  await edge?.close().catch(() => undefined);
  await worker?.stop().catch(() => undefined);
  await hostEnvShell(harness.state.baseHost).run(['podman', 'rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125], timeoutMs: 600_000 }).catch(() => undefined);
  await shells.closeAll();
  await db.drop();
  await harness.teardown();
}
