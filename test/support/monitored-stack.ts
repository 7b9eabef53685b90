import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import type { GpuSettings } from '../../lib/tiers.js';
import type { ResourceMonitorInput } from '../../workflows/monitor.js';
import { emulatorEc2, freshDatabase, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testShells, useHarness } from './context.js';
import { startTestEdge, type RunningEdge } from './edge.js';
import { hostEnvShell } from './netns.js';

export type SignedInUser = { id: string; cookie: string };

/** A worker, an edge and the resource monitor (its own workflow on the test's queue), for one describe. */
export function monitoredStack(monitorInput: ResourceMonitorInput, opts: { cloud?: boolean; gpu?: GpuSettings; gpuWaitMs?: number } = {}) {
  const h = useHarness();
  const s = {
    h,
    db: undefined as unknown as TestDatabase,
    shells: undefined as unknown as HostShells,
    edge: undefined as unknown as RunningEdge,
    temporal: undefined as unknown as { client: Client; close: () => Promise<void> },
    watcher: undefined as BootWatcher | undefined,
    ec2: undefined as EC2Client | undefined,
    deploymentId: `mon-${randomBytes(3).toString('hex')}`,
    users: [] as { id: string; cookie: string }[],
  };
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  const monitorId = `test-monitor-${randomBytes(3).toString('hex')}`;

  before(async () => {
    s.db = await freshDatabase(h.state);
    s.shells = testShells(h.state);
    await registerBaseHost(s.db.store, s.shells);
    if (opts.cloud) {
      s.watcher = startTestBootWatcher(h.state, { deploymentId: s.deploymentId });
      s.ec2 = emulatorEc2(h.state);
    }
    const started = await startTestWorker(h.state, { store: s.db.store, shells: s.shells, cloud: testCloud(h.state, { deploymentId: s.deploymentId }), ...(opts.gpu ? { gpu: opts.gpu } : {}) });
    worker = started.worker;
    running = worker.run();
    closeWorker = () => started.connection.close();
    s.edge = await startTestEdge(h.state, s.db, started.taskQueue, opts.gpuWaitMs !== undefined ? { gpuWaitMs: opts.gpuWaitMs } : {});
    s.temporal = await temporalClient(h.state);
    await s.temporal.client.workflow.start('resourceMonitor', { workflowId: monitorId, taskQueue: started.taskQueue, args: [monitorInput] });
  });

  after(async () => {
    await s.temporal?.client.workflow.getHandle(monitorId).terminate('test over').catch(() => undefined);
    await s.edge?.close();
    const stopped = await stopTestWorker(worker, running);
    await closeWorker?.();
    for (const u of s.users) {
      await hostEnvShell(h.state.baseHost).run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${u.id}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    }
    await s.watcher?.stop();
    s.ec2?.destroy();
    await s.temporal?.close();
    await s.shells?.closeAll();
    await s.db?.drop();
    if (stopped) throw stopped;
  });

  const signIn = async (email: string) => {
    const login = await request(`${s.edge.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email }) });
    const user = { id: ((await login.body.json()) as { user: { id: string } }).user.id, cookie: String(login.headers['set-cookie']).split(';')[0]! };
    s.users.push(user);
    await waitFor('the runtime and editor to run', async () => {
      const r = await request(`${s.edge.url}/dashboard`, { headers: { cookie: user.cookie, accept: 'application/json' } });
      const d = (await r.body.json()) as { runtime: { state: string }; editor: { state: string } };
      if (d.runtime.state !== 'running' || d.editor.state !== 'running') throw new Error(JSON.stringify(d));
    }, { timeoutMs: 90_000, intervalMs: 250 });
    return user;
  };
  const runtimeOf = async (userId: string) => (await s.db.store.runtimes.live(userId))!;
  /** MRP through the edge, as the editor's browser code calls it. */
  const execute = async (user: { id: string; cookie: string }, code: string) => {
    const rt = await runtimeOf(user.id);
    const r = await request(`${s.edge.url}/u/${user.id}/proxy/${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { cookie: user.cookie, 'content-type': 'application/json' }, body: JSON.stringify({ code }), headersTimeout: 120_000, bodyTimeout: 120_000 });
    const text = await r.body.text();
    assert.equal(r.statusCode, 200, text);
    return JSON.parse(text) as { result: string | null; executionCount: number };
  };
  return { s, signIn, runtimeOf, execute };
}

