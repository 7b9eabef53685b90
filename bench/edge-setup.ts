import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import type { HostShells } from '../activities/host-shell.js';
import { waitFor } from '../infra/dev/processes.js';
import { repoRoot } from '../lib/paths.js';
import { freshDatabase, registerBaseHost, testEnvironment, testShells, type TestDatabase } from '../test/support/context.js';
import { startEdgeWorker } from '../test/support/edge.js';
import { freePort, startHarness, type HarnessState, type RunningHarness } from '../test/support/harness.js';
import { hostEnvShell } from '../test/support/netns.js';

/** The stack the edge benchmarks measure: real PostgreSQL, Temporal, worker, podman and the edge. */
export interface EdgeBench {
  harness: RunningHarness;
  db: TestDatabase;
  shells: HostShells;
  edge: { url: string; close(): Promise<void> };
  podman(args: string[]): Promise<string>;
  devLogin(email: string): Promise<{ id: string; cookie: string; operationId: string | undefined }>;
  close(): Promise<void>;
}

export async function startEdgeBench(): Promise<EdgeBench> {
  const harness = await startHarness({ hosts: 0 });
  const db = await freshDatabase(harness.state);
  const shells = testShells(harness.state);
  await registerBaseHost(db.store, shells);
  const worker = await startEdgeWorker(harness.state, db, shells);
  const edge = await startEdgeProcess(harness.state, db, worker.taskQueue);
  const base = hostEnvShell(harness.state.baseHost);
  return {
    harness,
    db,
    shells,
    edge,
    podman: async (args) => (await base.run(['podman', ...args], { timeoutMs: 120_000 })).stdout,
    devLogin: async (email) => {
      const res = await fetch(`${edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email }) });
      if (!res.ok) throw new Error(`dev login answered ${res.status}: ${await res.text()}`);
      // No operation_id: both containers answered, so the sign-in was ready with no workflow to wait for.
      const body = (await res.json()) as { user: { id: string }; operation_id?: string };
      return { id: body.user.id, cookie: (res.headers.get('set-cookie') ?? '').split(';')[0]!, operationId: body.operation_id };
    },
    close: async () => {
      await edge.close();
      await worker.stop();
      await base.run(['podman', 'rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125] }).catch(() => undefined);
      await shells.closeAll();
      await db.drop();
      await harness.teardown();
    },
  };
}

/**
 * The edge as production runs it: the main command's own entry (api/server.ts) in a process of its own,
 * with the default log level, so it gets a core the benchmark's load generator does not share (the peers
 * it is compared with, configurable-http-proxy and Caddy, are separate processes too).
 */
async function startEdgeProcess(state: HarnessState, db: TestDatabase, taskQueue: string): Promise<{ url: string; close(): Promise<void> }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = join(state.runDir, `edge-${port}.log`);
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'api', 'server.ts')], {
    cwd: repoRoot,
    stdio: ['ignore', out, out],
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      TEMPORAL_ADDRESS: state.temporal.address,
      TEMPORAL_NAMESPACE: state.temporal.namespace,
      TEMPORAL_TASK_QUEUE: taskQueue,
      MARKCO_HOST: '127.0.0.1',
      MARKCO_PORT: String(port),
      MARKCO_PUBLIC_URL: `http://localhost:${port}`,
      MARKCO_DEV_LOGIN: '1',
      MARKCO_USERS_DIR: testEnvironment(state).usersDir,
      MARKCO_CADDY_ADMIN_URL: '',
      MARKCO_LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
    },
  });
  closeSync(out);
  let exited: number | null | undefined;
  child.once('exit', (code) => (exited = code));
  await waitFor(`the edge at ${url} (log: ${logFile})`, async () => {
    if (exited !== undefined) throw new Error(`the edge exited with ${exited}; see ${logFile}`);
    const res = await fetch(`${url}/api/health`);
    await res.body?.cancel();
  }, { timeoutMs: 60_000, intervalMs: 200 });
  return {
    url,
    close: async () => {
      if (exited !== undefined) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
      if (exited === undefined) child.kill('SIGKILL');
    },
  };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const range = (xs: number[]) => `${Math.min(...xs)}-${Math.max(...xs)}`;

/** Small GET requests per second from `connections` keep-alive clients for `seconds`; anything but 200 fails the run. */
export async function requestsPerSecond(origin: string, path: string, headers: Record<string, string>, load: { connections: number; seconds: number }): Promise<number> {
  const pool = new Pool(origin, { connections: load.connections, pipelining: 1 });
  const deadline = Date.now() + load.seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: load.connections }, async () => {
      while (Date.now() < deadline) {
        const res = await pool.request({ path, method: 'GET', headers });
        await res.body.dump();
        if (res.statusCode !== 200) throw new Error(`${origin}${path} answered ${res.statusCode}`);
        done++;
      }
    }),
  );
  await pool.close();
  return done / load.seconds;
}
