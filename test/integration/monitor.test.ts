import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { DescribeInstancesCommand } from '@aws-sdk/client-ec2';
import { request } from 'undici';
import { WebSocket } from 'ws';
import { cgroupMemoryLimitArgs, parseCgroupMemoryLimit } from '../../activities/podman-commands.js';
import { waitFor } from '../../infra/dev/processes.js';
import { connectionOf } from '../../lib/store.js';
import { defaultTierLadder } from '../../lib/tiers.js';
import { testAdminToken } from '../support/edge.js';
import { monitoredStack } from '../support/monitored-stack.js';

const MiB = 1024 * 1024;

describe('resource monitor: memory filling step by step', () => {
  const { s, signIn, runtimeOf, execute } = monitoredStack({ intervalMs: 500, idleAfterMs: 3_600_000, rescanMs: 2000 }, { cloud: true });

  test('50% reserves the next tier, 75% migrates onto it, each once; the runtime keeps running with the new limit', async () => {
    const user = await signIn('filling@example.test');
    await execute(user, 'x = 42');
    await execute(user, ["class Holder:", "    def __init__(self): self.parts = []", "    def __repr__(self): return f'<Holder {len(self.parts)}>'", 'held = Holder()'].join('\n'));
    const limit = (await runtimeOf(user.id)).memoryLimitBytes;
    let reservedAtPercent: number | null = null;
    for (let step = 0; step < 14; step++) {
      const rt = await runtimeOf(user.id);
      if (rt.state !== 'running') break;
      const used = Number((await execute(user, 'held.parts.append(bytearray(b"\\x01") * (12 * 1024 * 1024)); len(held.parts)')).result) * 12 * MiB;
      await sleep(1500);
      const reserved = await s.db.pool.query(`SELECT id FROM hosts WHERE reserved_for = $1`, [user.id]);
      if (reservedAtPercent === null && reserved.rows.length > 0) reservedAtPercent = Math.round((used / limit) * 100);
      if ((await s.db.pool.query(`SELECT 1 FROM migrations WHERE user_id = $1`, [user.id])).rows.length > 0) break;
    }
    assert.ok(reservedAtPercent !== null, 'a host was reserved on the way up');
    const moved = await waitFor('the runtime to run on the reserved EC2 host', async () => {
      const rt = await runtimeOf(user.id);
      if (rt.state !== 'running' || rt.hostId === 'base') throw new Error(`${rt.state} on ${rt.hostId}`);
      return rt;
    }, { timeoutMs: 240_000, intervalMs: 500 });
    assert.equal(moved.tier, 't3.small');
    const host = (await s.db.store.hosts.get(moved.hostId!))!;
    assert.equal(host.reservedFor ?? user.id, user.id);
    const cgroup = parseCgroupMemoryLimit((await s.shells.for(connectionOf(host)).run(cgroupMemoryLimitArgs(moved.containerName))).stdout);
    assert.equal(cgroup, defaultTierLadder.free.find((t) => t.name === 't3.small')!.memoryBytes, 'the new limit is in force');
    assert.equal((await execute(user, 'x')).result, '42');
    // Readings keep coming from the new host (the monitor follows the move); nothing fires again.
    await sleep(4000);
    const migrations = await s.db.pool.query(`SELECT status FROM migrations WHERE user_id = $1`, [user.id]);
    assert.deepEqual(migrations.rows, [{ status: 'completed' }], 'one migration');
    const instances = await s.ec2!.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:user', Values: [user.id] }, { Name: 'tag:markco:deployment', Values: [s.deploymentId] }] }));
    assert.equal((instances.Reservations ?? []).flatMap((r) => r.Instances ?? []).length, 1, 'one instance: the reserved one was used');
  });
});

describe('resource monitor: idle-sleep', () => {
  const idleAfterMs = 20_000;
  const { s, signIn, runtimeOf, execute } = monitoredStack({ intervalMs: 500, idleAfterMs, rescanMs: 2000 });

  test('a runtime with no CPU and no traffic is checkpointed; one whose user types, or one running a long loop, is not', async () => {
    const [quiet, typing, looping] = [await signIn('quiet@example.test'), await signIn('typing@example.test'), await signIn('looping@example.test')];
    for (const u of [quiet, typing, looping]) await execute(u, 'x = 42');
    // The typing user's browser keeps a WebSocket to the editor and sends on it.
    const ws = new WebSocket(`${s.edge.url.replace('http', 'ws')}/u/${typing.id}/events`, { headers: { cookie: typing.cookie } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const keys = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'keystroke', at: Date.now() })), 2000);
    // The looping user's cell burns CPU for longer than the test watches (its answer is not awaited).
    const loop = execute(looping, 'import time\nend = time.time() + 75\nwhile time.time() < end: pass\n1').catch(() => undefined);
    try {
      const started = Date.now();
      await waitFor('the quiet runtime to be checkpointed', async () => {
        if ((await runtimeOf(quiet.id)).state !== 'checkpointed') throw new Error((await runtimeOf(quiet.id)).state);
      }, { timeoutMs: 90_000, intervalMs: 500 });
      assert.ok(Date.now() - started >= idleAfterMs - 5000, 'not before the idle time');
      const events = await s.db.pool.query(`SELECT workflow_id FROM events WHERE type = 'runtime.idle-checkpoint-started' AND user_id = $1`, [quiet.id]);
      assert.equal(events.rows.length, 1, 'one idle checkpoint');
      await sleep(8000);
      assert.equal((await runtimeOf(typing.id)).state, 'running', 'the typing user keeps their runtime');
      assert.equal((await runtimeOf(looping.id)).state, 'running', 'a busy kernel is never idle');
    } finally {
      clearInterval(keys);
      ws.close();
    }
    await loop;
    // The quiet user comes back: the same kernel.
    await request(`${s.edge.url}/dashboard`, { headers: { cookie: quiet.cookie, accept: 'application/json' } }).then((r) => r.body.text());
    await waitFor('the quiet runtime to be back', async () => {
      if ((await runtimeOf(quiet.id)).state !== 'running') throw new Error('not yet');
    }, { timeoutMs: 120_000, intervalMs: 500 });
    assert.equal((await execute(quiet, 'x')).result, '42');
  });

  test('POST /hooks/resource: external events need the operators\' token, are checked, and reach the user\'s entity', async () => {
    const user = s.users[0]!;
    const rt = await runtimeOf(user.id);
    const hook = async (body: unknown, token = true) => {
      const r = await request(`${s.edge.url}/hooks/resource`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${testAdminToken}` } : {}) }, body: JSON.stringify(body) });
      return { status: r.statusCode, json: (await r.body.json()) as Record<string, any> };
    };
    const reading = { type: 'memory', runtime_id: rt.id, memory_used: Math.round(rt.memoryLimitBytes * 0.2), timestamp: new Date().toISOString() };
    assert.equal((await hook(reading, false)).status, 401, 'the seeds took events from anyone');
    const noType = await hook({ runtime_id: rt.id });
    assert.equal(noType.status, 400);
    assert.match(noType.json.message, /type: expected one of/);
    assert.equal((await hook({ ...reading, runtime_id: '00000000-0000-4000-8000-000000000000' })).status, 404);
    assert.match((await hook({ type: 'migrate', runtime_id: rt.id })).json.message, /memory_used: a migrate event needs the memory in use/);
    const ok = await hook(reading);
    assert.deepEqual([ok.status, ok.json], [202, { received: true, delivered: true }]);
    assert.equal((await hook({ type: 'gpu-hint', runtime_id: rt.id })).status, 202);
    const recorded = await s.db.pool.query(`SELECT type FROM events WHERE user_id = $1 AND type LIKE 'resource.%' ORDER BY id`, [user.id]);
    assert.deepEqual(recorded.rows.map((r) => r.type), ['resource.memory', 'resource.gpu-hint']);
  });
});
