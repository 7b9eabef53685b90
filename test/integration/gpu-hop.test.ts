import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { DescribeInstancesCommand } from '@aws-sdk/client-ec2';
import { request } from 'undici';
import { cgroupMemoryLimitArgs, parseCgroupMemoryLimit } from '../../activities/podman-commands.js';
import { waitFor } from '../../infra/dev/processes.js';
import { connectionOf } from '../../lib/store.js';
import { gpuTierOf, type GpuSettings } from '../../lib/tiers.js';
import { testImages } from '../support/harness.js';
import { testAdminToken } from '../support/edge.js';
import { monitoredStack, type SignedInUser } from '../support/monitored-stack.js';

/**
 * The GPU hop on hosts marked as GPU hosts (no GPU here: docs/gpu.md says what a run on real GPU hardware
 * must verify). The users are on the free plan, which these settings let hop.
 */
const gpuIdleMs = 25_000;
const gpu: GpuSettings = { tier: gpuTierOf('g5.xlarge'), plans: ['free'], idleAfterMs: gpuIdleMs, market: 'spot-then-on-demand', runtimeImage: testImages.runtimeGpu };

/** A cell that "puts a tensor on the GPU": the edge sees `.cuda()`; Python runs this stand-in's method. */
const gpuCell = ['class Tensor:', '    def cuda(self):', "        return 'on the GPU host'", 't = Tensor().cuda()', 'x + 1'].join('\n');

describe('the GPU hop', () => {
  const { s, signIn, runtimeOf, execute } = monitoredStack({ intervalMs: 1000, idleAfterMs: 3_600_000, rescanMs: 2000 }, { cloud: true, gpu, gpuWaitMs: 240_000 });

  const instancesOf = async (userId: string) => {
    const r = await s.ec2!.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:user', Values: [userId] }, { Name: 'tag:markco:deployment', Values: [s.deploymentId] }] }));
    return (r.Reservations ?? []).flatMap((x) => x.Instances ?? []);
  };
  const imageOnHost = async (hostId: string, container: string) => {
    const host = (await s.db.store.hosts.get(hostId))!;
    return (await s.shells.for(connectionOf(host)).run(['podman', 'inspect', '--format', '{{.ImageName}}', container])).stdout.trim();
  };
  const migrationsOf = async (userId: string) =>
    (await s.db.pool.query<{ reason: string; status: string; to_type: string }>(`SELECT reason, status, to_type FROM migrations WHERE user_id = $1 ORDER BY started_at`, [userId])).rows;
  const onCpuAgain = (user: SignedInUser, gpuHostId: string) =>
    waitFor('the runtime to leave the GPU host', async () => {
      const rt = await runtimeOf(user.id);
      if (rt.state !== 'running' || rt.hostId === gpuHostId) throw new Error(`${rt.state} on ${rt.hostId}`);
      return rt;
    }, { timeoutMs: 180_000, intervalMs: 500 });

  test('import torch pre-provisions a GPU spot host; a .cuda() cell waits for the hop and runs there; idle GPU work moves it back and terminates the instance', async () => {
    const user = await signIn('gpu@example.test');
    await execute(user, 'x = 42');
    const hintStarted = Date.now();
    await execute(user, 'try:\n    import torch\nexcept ImportError:\n    torch = None');
    assert.ok(Date.now() - hintStarted < 5000, 'a hint does not hold the cell');
    const reserved = await waitFor('a GPU host reserved for the user, ready', async () => {
      const r = await s.db.pool.query<{ id: string; instance_id: string; gpu: boolean; lifecycle: string; state: string }>(`SELECT id, instance_id, gpu, lifecycle, state FROM hosts WHERE reserved_for = $1 AND instance_type = 'g5.xlarge'`, [user.id]);
      if (r.rows[0]?.state !== 'ready') throw new Error(JSON.stringify(r.rows));
      return r.rows[0];
    }, { timeoutMs: 180_000, intervalMs: 500 });
    assert.equal(reserved.gpu, true, 'marked as a GPU host');
    assert.equal(reserved.lifecycle, 'spot', 'spot first');
    assert.equal((await runtimeOf(user.id)).hostId, 'base', 'a hint alone does not move the runtime');

    const cell = await execute(user, gpuCell);
    assert.equal(cell.result, '43', 'the GPU cell ran, after the hop, in the same Python process');
    const onGpu = await runtimeOf(user.id);
    assert.equal(onGpu.hostId, reserved.id, 'it ran on the reserved GPU host');
    assert.equal(onGpu.tier, 'g5.xlarge');
    assert.equal(await imageOnHost(onGpu.hostId!, onGpu.containerName), testImages.runtimeGpu, 'restored on the GPU runtime image');
    const cgroup = parseCgroupMemoryLimit((await s.shells.for(connectionOf((await s.db.store.hosts.get(onGpu.hostId!))!)).run(cgroupMemoryLimitArgs(onGpu.containerName))).stdout);
    assert.equal(cgroup, gpu.tier.memoryBytes, "the GPU tier's memory limit is in force");
    assert.deepEqual(await migrationsOf(user.id), [{ reason: 'gpu', status: 'completed', to_type: 'g5.xlarge' }]);
    // More GPU cells on the GPU host: no second hop.
    assert.equal((await execute(user, gpuCell)).result, '43');

    const leftAt = Date.now();
    const back = await onCpuAgain(user, reserved.id);
    assert.ok(Date.now() - leftAt >= gpuIdleMs - 8000, 'not before the GPU idle time');
    assert.equal(back.hostId, 'base', 'the CPU tier that fits: the base server');
    assert.equal(await imageOnHost('base', back.containerName), testImages.runtime, 'back on the CPU runtime image');
    assert.equal((await execute(user, 'x')).result, '42', 'x is still 42');
    assert.deepEqual((await migrationsOf(user.id)).map((m) => m.reason), ['gpu', 'gpu-idle']);
    await waitFor('the GPU instance to be terminated', async () => {
      const states = (await instancesOf(user.id)).map((i) => i.State?.Name);
      if (states.length !== 1 || !['terminated', 'shutting-down'].includes(states[0]!)) throw new Error(JSON.stringify(states));
    }, { timeoutMs: 60_000, intervalMs: 500 });
  });

  test('a spot interruption notice moves the runtime off the GPU host at once; a cell without GPU code is never held', async () => {
    const user = await signIn('spot@example.test');
    await execute(user, 'x = 42');
    // No hint first: the hop launches its own GPU host while the cell waits.
    assert.equal((await execute(user, gpuCell)).result, '43');
    const onGpu = await runtimeOf(user.id);
    assert.equal(onGpu.tier, 'g5.xlarge');
    const hook = await request(`${s.edge.url}/hooks/resource`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${testAdminToken}` },
      body: JSON.stringify({ type: 'spot-interruption', host: onGpu.hostId, timestamp: new Date().toISOString() }),
    });
    assert.equal(hook.statusCode, 202, await hook.body.text());
    const noticedAt = Date.now();
    const back = await onCpuAgain(user, onGpu.hostId!);
    assert.ok(Date.now() - noticedAt < gpuIdleMs, 'moved by the notice, not by GPU idleness');
    assert.deepEqual((await migrationsOf(user.id)).map((m) => m.reason), ['gpu', 'spot-interruption']);
    assert.equal((await execute(user, 'x')).result, '42');
    const plain = Date.now();
    await execute(user, 'y = [i * i for i in range(1000)]; len(y)');
    assert.ok(Date.now() - plain < 5000);
    assert.equal((await runtimeOf(user.id)).hostId, back.hostId, 'plain code stays on the CPU');
    await sleep(1000);
  });

  test('a big read through the edge boots the next tier in the background (big-ram-hint), once', async () => {
    const user = await signIn('bigread@example.test');
    const readCell = ['try:', '    import pandas as pd', "    df = pd.read_csv('/nonexistent/huge.csv')", 'except Exception:', '    df = None'].join('\n');
    const started = Date.now();
    await execute(user, readCell);
    assert.ok(Date.now() - started < 5000, 'the cell is not held');
    await execute(user, readCell);
    await waitFor('the next tier reserved for the user', async () => {
      const r = await s.db.pool.query<{ instance_type: string; state: string }>(`SELECT instance_type, state FROM hosts WHERE reserved_for = $1`, [user.id]);
      if (r.rows[0]?.state !== 'ready') throw new Error(JSON.stringify(r.rows));
      assert.deepEqual(r.rows.map((h) => h.instance_type), ['t3.small'], 'one host, of the tier above base');
    }, { timeoutMs: 120_000, intervalMs: 500 });
    assert.equal((await runtimeOf(user.id)).hostId, 'base', 'a hint does not move the runtime');
  });

  test('bad hook input is answered 400 and names what is wrong', async () => {
    const r = await request(`${s.edge.url}/hooks/resource`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${testAdminToken}` }, body: JSON.stringify({ type: 'spot-interruption' }) });
    assert.equal(r.statusCode, 400);
    assert.match(((await r.body.json()) as { message: string }).message, /host: a spot-interruption event names the host id/);
  });
});
