import { Pool } from 'undici';
import type { HostShells } from '../activities/host-shell.js';
import { freshDatabase, registerBaseHost, testShells, type TestDatabase } from '../test/support/context.js';
import { startEdgeWorker, startTestEdge, type RunningEdge } from '../test/support/edge.js';
import { startHarness, type RunningHarness } from '../test/support/harness.js';
import { hostEnvShell } from '../test/support/netns.js';

/** The stack the edge benchmarks measure: real PostgreSQL, Temporal, worker, podman and the edge. */
export interface EdgeBench {
  harness: RunningHarness;
  db: TestDatabase;
  shells: HostShells;
  edge: RunningEdge;
  podman(args: string[]): Promise<string>;
  devLogin(email: string): Promise<{ id: string; cookie: string; operationId: string }>;
  close(): Promise<void>;
}

export async function startEdgeBench(): Promise<EdgeBench> {
  const harness = await startHarness({ hosts: 0 });
  const db = await freshDatabase(harness.state);
  const shells = testShells(harness.state);
  await registerBaseHost(db.store, shells);
  const worker = await startEdgeWorker(harness.state, db, shells);
  const edge = await startTestEdge(harness.state, db, worker.taskQueue);
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
      const body = (await res.json()) as { user: { id: string }; operation_id: string };
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
