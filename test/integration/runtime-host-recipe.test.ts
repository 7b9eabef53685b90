import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { request } from 'undici';
import { LocalShell, type HostShells } from '../../activities/host-shell.js';
import { createDebootstrapHost, destroyDebootstrapHost, inDebootstrapHost, type DebootstrapHostInfo } from '../../infra/dev/debootstrap-host.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import { workflowIds, type RegisterHostInput } from '../../workflows/contracts/index.js';
import type { LoginResult } from '../../workflows/contracts/user-environment.js';
import type { registerHost } from '../../workflows/register-host.js';
import { freshDatabase, registerBaseHost, startTestWorker, stopTestWorker, temporalClient, type TestDatabase, testShells, useHarness } from '../support/context.js';
import { imageArchive } from '../support/harness.js';
import { runMarkerEnv } from '../support/leftovers.js';
import { hostEnvShell } from '../support/netns.js';

/**
 * The runtime-host recipe (infra/runtime-host/provision.sh) on the nearest thing to a fresh instance this
 * machine has: a plain `debootstrap --variant=minbase bookworm` root, provisioned by the recipe and booted
 * as a namespace host running only what the recipe installed (infra/dev/debootstrap-host.ts). The control
 * plane registers it through registerHost over ssh2 with the pinned key (the facts recorded are the
 * root's), and a user's running runtime migrates to it with x intact, answering at the new host's address.
 */
const h = useHarness();
const local = new LocalShell('runtime-host-recipe', { commandTimeoutMs: 600_000 });


describe('the runtime-host recipe on a debootstrap root', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let temporal: { client: Client; close: () => Promise<void> };
  let ops: Operations;
  let taskQueue: string;
  let userId: string;
  let host: DebootstrapHostInfo | undefined;
  const timings: Record<string, number> = {};

  async function execute(code: string): Promise<{ result: string; executionCount: number }> {
    const rt = (await db.store.runtimes.live(userId))!;
    const res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ code }),
    });
    assert.equal(res.statusCode, 200);
    return (await res.body.json()) as { result: string; executionCount: number };
  }

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    const started = await startTestWorker(h.state, { store: db.store, shells });
    worker = started.worker;
    taskQueue = started.taskQueue;
    running = worker.run();
    temporal = await temporalClient(h.state);
    ops = createOperations(temporal.client, taskQueue);
    userId = (await db.store.users.ensureByEmail({ email: 'recipe@example.test', name: 'Recipe' })).user.id;

    // The host is built while the user's runtime starts on the base server.
    const t0 = Date.now();
    const building = (async () => {
      const archive = await imageArchive(h.state.images.runtime);
      host = await createDebootstrapHost({
        net: h.state.network,
        runDir: h.state.runDir,
        // Clear of the harness's static hosts (.11, .12) and of simulated instances (.64 and up).
        index: 30,
        authorizedKeys: readFileSync(`${h.state.sshKeyPath}.pub`, 'utf8'),
        imageArchives: [archive],
        env: { [runMarkerEnv]: h.state.runDir },
      });
      timings.hostReadyMs = Date.now() - t0;
      timings.recipeMs = host.provisionMs;
    })();
    const login = (async () => (await (await ops.startLogin({ userId })).handle.result()) as LoginResult)();
    const results = await Promise.allSettled([building, login]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  });

  after(async () => {
    if (host) await destroyDebootstrapHost(host);
    await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    const stopped = await stopTestWorker(worker, running);
    await temporal?.close();
    await shells?.closeAll();
    await db?.drop();
    console.log(`runtime-host recipe timings: ${JSON.stringify(timings)}`);
    if (stopped) throw stopped;
  });

  test('registerHost probes the host over ssh2 and records the debootstrap root\'s podman, runc and CRIU', async () => {
    const hst = host!;
    const recipeLog = readFileSync(hst.provisionLog, 'utf8');
    assert.match(recipeLog, /criu 4\.\d+(\.\d+)?: criu check passes/);
    assert.match(recipeLog, /\[runtime-host\] ready: /);

    const input: RegisterHostInput = { hostId: hst.hostId, kind: 'ec2', instanceId: `i-${randomBytes(8).toString('hex')}`, instanceType: 't3.small', address: hst.address, sshUser: 'root', hostKey: hst.hostKey };
    const t = Date.now();
    const result = await temporal.client.workflow.execute<typeof registerHost>('registerHost', { taskQueue, workflowId: `${workflowIds.registerHost(hst.hostId)}-${randomBytes(3).toString('hex')}`, args: [input], workflowExecutionTimeout: '2m' });
    timings.registerMs = Date.now() - t;
    assert.equal(result.state, 'ready');

    // What the root itself says, asked from inside the host (not over ssh).
    const inside = async (argv: string[]) => (await inDebootstrapHost(hst, argv)).stdout.trim();
    const rootPodman = await inside(['podman', 'version', '--format', '{{.Client.Version}}']);
    const rootCriu = /Version:\s*(\S+)/.exec(await inside(['criu', '--version']))?.[1];
    assert.equal(result.facts.podmanVersion, rootPodman);
    assert.equal(result.facts.criuVersion, rootCriu);
    assert.equal(result.facts.ociRuntime, 'runc');
    assert.ok((await inside(['podman', 'info', '--format', '{{.Host.OCIRuntime.Path}}'])).startsWith('/usr/'), "the root's runc");
    const row = await db.store.hosts.get(hst.hostId);
    assert.equal(row?.state, 'ready');
    assert.deepEqual(row?.facts, result.facts);

    // The ssh session the control plane gets runs in the debootstrap root: its / is that tree, its
    // packages are the ones the recipe installed there, and only the recipe's files say where scratch goes.
    const session = shells.for({ hostId: hst.hostId, kind: 'ec2', address: hst.address, sshPort: 22, sshUser: 'root', hostKey: hst.hostKey });
    const rootStat = statSync(hst.root);
    assert.equal((await session.run(['stat', '-c', '%d:%i', '/'])).stdout.trim(), `${rootStat.dev}:${rootStat.ino}`);
    const pkgs = ['podman', 'runc', 'criu', 'openssh-server'];
    const remotePkgs = (await session.run(['dpkg-query', '-W', ...pkgs])).stdout;
    const rootPkgs = (await local.run(['dpkg-query', `--admindir=${join(hst.root, 'var/lib/dpkg')}`, '-W', ...pkgs])).stdout;
    assert.equal(remotePkgs, rootPkgs);
    assert.match(remotePkgs, /^criu\t4\.\d/m);
    assert.equal((await session.run(['sh', '-c', 'echo "$MARKCO_HOST_SCRATCH_DIR"'])).stdout.trim(), '/var/lib/markco/scratch');
    // This sshd often answers a short command's request, status and close in one segment: each status counts.
    const many = await Promise.all(Array.from({ length: 40 }, (_, i) => session.run(['sh', '-c', `exit ${i % 3}`], { okExitCodes: [0, 1, 2] })));
    assert.deepEqual(many.map((r) => r.exitCode), Array.from({ length: 40 }, (_, i) => i % 3));
    assert.equal(readFileSync(join(hst.root, 'root/.ssh/authorized_keys'), 'utf8'), readFileSync(`${h.state.sshKeyPath}.pub`, 'utf8').trim() + '\n', 'only the workers\' key');
    assert.match(await inside(['podman', 'images', '--format', '{{.Repository}}:{{.Tag}}']), new RegExp(h.state.images.runtime.replace(/[.:/]/g, '\\$&')));
  });

  test('a running runtime migrates to the host: x is still 42 and it answers at the host\'s address', async () => {
    const hst = host!;
    await execute('x = 42');
    const before = await execute('x');
    assert.equal(before.result, '42');

    const t = Date.now();
    const moved = (await (await ops.startMigration(userId, { target: 't3.small', targetHostId: hst.hostId })).handle.result()) as MigrateRuntimeResult;
    timings.migrateMs = Date.now() - t;
    assert.equal(moved.targetHostId, hst.hostId);
    const rt = (await db.store.runtimes.live(userId))!;
    assert.deepEqual([rt.hostId, rt.address, rt.state], [hst.hostId, hst.address, 'running']);
    const after = await execute('x');
    assert.equal(after.result, '42');
    assert.ok(after.executionCount > before.executionCount, 'the execution count continues');

    // The runtime is the host's own container, and the base server keeps no copy.
    const there = (await inDebootstrapHost(hst, ['podman', 'ps', '--format', '{{.Names}}'])).stdout.split('\n');
    assert.ok(there.includes(`rt-${userId}`), `rt-${userId} runs in the debootstrap host (${there.join(', ')})`);
    const base = (await hostEnvShell(h.state.baseHost).run(['podman', 'ps', '--all', '--format', '{{.Names}}'])).stdout.split('\n');
    assert.ok(!base.includes(`rt-${userId}`));
  });
});
