import { request } from 'undici';
import { join } from 'node:path';
import { mkdirSync, chownSync } from 'node:fs';
import { probeHostFacts } from '../activities/hosts.js';
import { removeContainerArgs, runContainerArgs } from '../activities/podman-commands.js';
import { containerUserFor, editorContainerSpec, planLimits, runtimeContainerSpec } from '../activities/user-containers.js';
import { freePort } from '../test/support/harness.js';
import { hostEnvShell } from '../test/support/netns.js';
import { median, range, startEdgeBench } from './edge-setup.js';
import { report } from './results.js';

/**
 * Login to ready, through the edge as a browser does it: dev login, then the login operation until it has
 * health-checked the runtime (MRP) and the editor. Cold: a new user (home, ports, rows, both containers).
 * Warm: the same user signing in again while the containers run. Each is set beside its baseline, run in
 * the same process: the raw podman commands and health polls back to back, without Temporal, PostgreSQL or
 * the edge.
 *   node --import tsx bench/login.ts [USERS]
 */
const users = Number(process.argv[2] ?? 5);
const bench = await startEdgeBench();
const base = hostEnvShell(bench.harness.state.baseHost);
const images = bench.harness.state.images;

async function until(url: string): Promise<void> {
  for (;;) {
    try {
      const res = await request(url, { headers: { connection: 'close' }, headersTimeout: 2000 });
      await res.body.text();
      if (res.statusCode === 200) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function loginToReady(email: string): Promise<number> {
  const started = performance.now();
  const login = await bench.devLogin(email);
  if (!login.operationId) return performance.now() - started;
  const res = await request(`${bench.edge.url}/api/operations/${login.operationId}?wait=120`, { headers: { cookie: login.cookie } });
  const state = (await res.body.json()) as { status: string; error?: unknown };
  if (state.status !== 'completed') throw new Error(`login of ${email} ended ${state.status}: ${JSON.stringify(state.error)}`);
  return performance.now() - started;
}

/** The same two containers by hand: podman run, poll MRP, podman run, poll /health. */
async function rawColdStart(i: number): Promise<number> {
  const userId = `00000000-0000-4000-8000-${String(900000000000 + i)}`;
  const user = containerUserFor(await probeHostFacts(base));
  const home = join(bench.harness.state.baseHost.dataDir, 'raw', userId);
  mkdirSync(home, { recursive: true });
  chownSync(home, user.uid, user.gid);
  const [rtPort, edPort, syncPort] = [await freePort(), await freePort(), await freePort()];
  const started = performance.now();
  await base.run(runContainerArgs(runtimeContainerSpec({ userId, image: images.runtime, homeDir: home, user, limits: planLimits.free, hostPort: rtPort, publishAddress: '127.0.0.1' })));
  await until(`http://127.0.0.1:${rtPort}/mrp/v1/capabilities`);
  await base.run(
    runContainerArgs(
      editorContainerSpec({ userId, image: images.editor, homeDir: home, user, port: edPort, syncPort, runtimeHost: '127.0.0.1', runtimePort: rtPort, profile: { id: userId, plan: 'free' } }),
    ),
  );
  await until(`http://127.0.0.1:${edPort}/health`);
  const ms = performance.now() - started;
  await base.run(removeContainerArgs(`rt-${userId}`));
  await base.run(removeContainerArgs(`ed-${userId}`));
  return ms;
}

/** What a warm login must at least do to know both are up: inspect both containers, poll both health URLs. */
async function rawWarmCheck(userId: string, rtPort: number, edPort: number): Promise<number> {
  const started = performance.now();
  await base.run(['podman', 'container', 'inspect', '--format', '{{.State.Status}}', `rt-${userId}`]);
  await until(`http://127.0.0.1:${rtPort}/mrp/v1/capabilities`);
  await base.run(['podman', 'container', 'inspect', '--format', '{{.State.Status}}', `ed-${userId}`]);
  await until(`http://127.0.0.1:${edPort}/health`);
  return performance.now() - started;
}

try {
  const cold: number[] = [];
  const rawCold: number[] = [];
  for (let i = 0; i < users; i++) {
    cold.push(await loginToReady(`bench-${i}@example.test`));
    rawCold.push(await rawColdStart(i));
  }
  const warm: number[] = [];
  const rawWarm: number[] = [];
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < users; i++) {
      warm.push(await loginToReady(`bench-${i}@example.test`));
      const { user } = await bench.db.store.users.ensureByEmail({ email: `bench-${i}@example.test` });
      const [rt, ed] = [await bench.db.store.runtimes.live(user.id), await bench.db.store.editors.live(user.id)];
      rawWarm.push(await rawWarmCheck(user.id, rt!.port!, ed!.port!));
    }
  }
  const fmt = (xs: number[]) => `p50 ${median(xs).toFixed(0)} ms (range ${range(xs.map((x) => Math.round(x)))}, n=${xs.length})`;
  console.log(`login to ready through the edge (${users} users)`);
  console.log(`  cold  markco: ${fmt(cold)}`);
  console.log(`  cold  raw podman run + health polls: ${fmt(rawCold)}`);
  console.log(`  cold  ratio raw/markco: ${(median(rawCold) / median(cold)).toFixed(2)}x`);
  console.log(`  warm  markco: ${fmt(warm)}   goal p50 <= 1500 ms`);
  console.log(`  warm  raw inspect + health polls: ${fmt(rawWarm)}`);
  console.log(`  warm  ratio raw/markco: ${(median(rawWarm) / median(warm)).toFixed(2)}x`);
  const overheadGoal = { on: 'overhead' as const, op: '<=' as const, value: 0.1, source: 'issue 10' };
  const cold10 = report({ name: 'cold login to ready (new user)', metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: cold, baseline: { name: 'podman run + MRP poll, podman run + /health poll, back to back', samples: rawCold }, goal: overheadGoal, params: `${users} users` });
  const warm10 = report({ name: 'warm login to ready (containers running)', metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: warm, baseline: { name: 'podman inspect + MRP poll, podman inspect + /health poll, back to back', samples: rawWarm }, goal: overheadGoal, params: `${users} users x 3 rounds` });
  report({ name: 'warm login to ready, p50', metric: 'wall time', unit: 'ms', better: 'lower', samples: warm, goal: { on: 'median', op: '<=', value: 1500 }, params: `${users} users x 3 rounds` });
  const pct = (x: number | null) => (x === null ? '?' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`);
  console.log(`  orchestration overhead (markco/raw - 1, goal <= 10%): cold ${pct(cold10.goal!.actual)}, warm ${pct(warm10.goal!.actual)}`);
} finally {
  await bench.close();
}
