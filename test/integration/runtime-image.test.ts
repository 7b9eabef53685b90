import assert from 'node:assert/strict';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import type { LocalShell } from '../../activities/host-shell.js';
import { probeHostFacts } from '../../activities/hosts.js';
import { checkpointArgs, removeContainerArgs, restoreArgs, runContainerArgs } from '../../activities/podman-commands.js';
import { containerUserFor, planLimits, runtimeContainerName, runtimeContainerSpec } from '../../activities/user-containers.js';
import { waitFor } from '../../infra/dev/processes.js';
import { freePort } from '../support/harness.js';
import { hostEnvShell } from '../support/netns.js';
import { useHarness } from '../support/context.js';

/**
 * The runtime image as the platform runs it: mrmd-python 0.4.2 answering MRP on the published loopback
 * port, its log in `podman logs`, its plan's memory limit in force, the user's files as its home, and
 * a CRIU checkpoint of it restoring with the Python state intact.
 */
const harness = useHarness();
const userId = '5d1c2b7e-0000-4000-8000-00000000a001';

// No keep-alive: CRIU refuses to dump a process holding established TCP connections, and a fork
// (a restore under a new name) cannot take them along (podman refuses --tcp-established with --name).
const noKeepAlive = new Agent({ pipelining: 0 });

async function mrp(port: number, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await request(`http://127.0.0.1:${port}/mrp/v1/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    dispatcher: noKeepAlive,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  assert.equal(res.statusCode, 200, `${path} answered ${res.statusCode}`);
  return (await res.body.json()) as Record<string, unknown>;
}

async function waitForMrp(port: number): Promise<void> {
  await waitFor(`MRP on port ${port}`, () => mrp(port, 'capabilities'), { timeoutMs: 30_000, intervalMs: 200 });
}

describe('runtime image', () => {
  let shell: LocalShell;
  let home: string;
  let port: number;
  let user: { uid: number; gid: number };
  const name = runtimeContainerName(userId);
  const restored = `${name}-restored`;

  before(async () => {
    const base = harness.state.baseHost;
    shell = hostEnvShell(base);
    user = containerUserFor(await probeHostFacts(shell));
    home = join(base.dataDir, userId);
    mkdirSync(home, { recursive: true });
    chownSync(home, user.uid, user.gid);
    port = await freePort();
    await shell.run(
      runContainerArgs(runtimeContainerSpec({ userId, image: harness.state.images.runtime, homeDir: home, user, limits: planLimits.free, hostPort: port, publishAddress: '127.0.0.1' })),
    );
    await waitForMrp(port);
  });

  after(async () => {
    await noKeepAlive.close();
    await shell.run(removeContainerArgs(name));
    await shell.run(removeContainerArgs(restored));
  });

  test('answers MRP on its published port and keeps state between calls', async () => {
    const caps = await mrp(port, 'capabilities');
    assert.equal(caps.runtime, 'mrmd-python');
    assert.equal(((caps.environment as Record<string, unknown>).cwd as string), '/home/user');
    assert.equal((await mrp(port, 'execute', { code: 'x = 42' })).success, true);
    const read = await mrp(port, 'execute', { code: 'x' });
    assert.equal(read.result, '42');
  });

  test("its log reaches `podman logs`, not the user's files", async () => {
    const logs = await shell.run(['podman', 'logs', name]);
    assert.match(logs.stdout + logs.stderr, /Starting runtime daemon default on port 8888/);
  });

  test("runs with the plan's memory limit, as the host's container user, with the user's files as home", async () => {
    const inspect = JSON.parse((await shell.run(['podman', 'container', 'inspect', name])).stdout)[0];
    assert.equal(inspect.HostConfig.Memory, planLimits.free.memoryBytes);
    const id = (await shell.run(['podman', 'exec', name, 'id', '-u'])).stdout.trim();
    assert.equal(id, String(user.uid));
    await mrp(port, 'execute', { code: "open('/home/user/hello.txt', 'w').write('from the runtime')" });
    const onHost = (await shell.run(['cat', join(home, 'hello.txt')])).stdout;
    assert.equal(onHost, 'from the runtime');
  });

  test('a CRIU checkpoint (a fork) restores beside it with x still 42 and the execution count continuing', async () => {
    await mrp(port, 'execute', { code: 'x = 42' });
    const before = (await mrp(port, 'execute', { code: 'x' })).executionCount as number;
    const archive = join(harness.state.baseHost.dir, 'tmp', 'runtime-checkpoint.tar');
    await shell.run(checkpointArgs({ container: name, exportPath: archive, leaveRunning: true }));
    const restoredPort = await freePort();
    await shell.run(restoreArgs({ importPath: archive, name: restored, ports: [{ hostIp: '127.0.0.1', hostPort: restoredPort, containerPort: 8888 }] }));
    await waitForMrp(restoredPort);
    const read = await mrp(restoredPort, 'execute', { code: 'x' });
    assert.equal(read.result, '42');
    assert.ok((read.executionCount as number) > before, `execution count ${read.executionCount} should continue after ${before}`);
    assert.equal((await mrp(port, 'execute', { code: 'x' })).result, '42', 'the source keeps running');
  });

  test('a stale registry file from an earlier life does not stop the runtime from starting again', async () => {
    writeFileSync(join(home, '.mrmd', 'runtimes', 'default.json'), JSON.stringify({ id: 'default', pid: 1, port: 8888, host: 'localhost' }));
    await shell.run(['podman', 'restart', '--time', '2', name]);
    await waitForMrp(port);
    const read = await mrp(port, 'execute', { code: 'x' });
    assert.equal((read.error as { type?: string } | null)?.type, 'NameError', 'a restarted runtime is a fresh process');
  });
});
