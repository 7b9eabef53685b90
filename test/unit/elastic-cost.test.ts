import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultTierLadder, gpuTierOf } from '../../lib/tiers.js';
import { createFakeCloud } from '../../bench/elastic/fake-cloud.js';
import { measuredDurations } from '../../bench/elastic/model.js';
import { billedUsd, cheapestFit, oracle, userStints, type OracleOptions } from '../../bench/elastic/oracle.js';
import { idleToZero, instanceUsage, percentile, terminationTimeOf, type InstanceRecord } from '../../bench/elastic/report.js';
import { simulate } from '../../bench/elastic/sim.js';
import { GiB, MiB, generateTrace, idleStartOf, memoryAt, prng, traceSummary, type Trace, type UserTrace } from '../../bench/elastic/trace.js';

const MIN = 60_000;
const oracleOptions: OracleOptions = { ladder: defaultTierLadder, gpuInstanceType: 'g5.xlarge', gpuPlans: ['pro', 'team'], bootMs: measuredDurations.bootMs, idleAfterMs: 15 * MIN };

test('the trace is reproducible from its seed and differs between seeds', () => {
  const a = generateTrace({ seed: 7 });
  const b = generateTrace({ seed: 7 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(generateTrace({ seed: 8 }).users, a.users);
  assert.equal(prng(1)(), prng(1)());
});

test('the trace has 50 users over one day, idle spells past the idle timeout, users above the base tier and one GPU session', () => {
  const t = generateTrace({ seed: 20261207 });
  const s = traceSummary(t);
  assert.equal(s.users, 50);
  assert.ok(s.sessions >= 100, `${s.sessions} sessions`);
  for (const u of t.users) {
    assert.ok(u.sessions.length >= 1, `${u.userId} has a session`);
    for (let k = 0; k < u.sessions.length; k++) {
      const cur = u.sessions[k]!;
      assert.ok(cur.signIn >= t.dayStart && idleStartOf(cur) < t.dayStart + t.dayMs, 'sessions within the day');
      for (let c = 1; c < cur.cells.length; c++) assert.ok(cur.cells[c]!.at > cur.cells[c - 1]!.at, 'cells in time order');
      const next = u.sessions[k + 1];
      if (next) assert.ok(next.signIn - idleStartOf(cur) > 15 * MIN, 'every spell between sessions exceeds the idle timeout');
      // Pauses at the desk stay well under the idle timeout.
      for (let p = 1; p < cur.presence.length; p++) assert.ok(cur.presence[p]!.from - cur.presence[p - 1]!.to < 10 * MIN);
    }
  }
  const above = t.users.filter((u) => u.sessions.some((x) => x.cells.some((c) => c.memAfter > defaultTierLadder[u.plan][0]!.memoryBytes * 0.75)));
  assert.ok(above.length >= 10, `${above.length} users need more than the base tier`);
  assert.ok(t.users.some((u) => u.sessions.some((x) => x.cells.some((c) => c.memAfter > 3 * GiB))), 'some users need a t3.large or more');
  const gpu = t.users.filter((u) => u.gpu);
  assert.equal(gpu.length, 1);
  const cells = gpu[0]!.sessions.flatMap((x) => x.cells);
  const hint = cells.findIndex((c) => c.gpu === 'hint');
  const use = cells.findIndex((c) => c.gpu === 'use');
  assert.ok(hint >= 0 && use > hint, 'gpu-hint, then gpu-use');
  assert.ok(cells.slice(use).some((c) => !c.gpu), 'CPU work after the GPU cells');
});

function oneUser(plan: UserTrace['plan'], sessions: UserTrace['sessions']): UserTrace {
  return { userId: '00000000-0000-4000-8000-000000000001', plan, profile: 'medium', baseMemory: 100 * MiB, sessions, gpu: false };
}

test('memoryAt follows the session start and the cells', () => {
  const u = oneUser('pro', [
    { signIn: 1000, startMemory: 100 * MiB, leave: 5000, presence: [{ from: 1000, to: 5000 }], cells: [{ at: 2000, busyMs: 100, memAfter: 900 * MiB }] },
    { signIn: 10_000, startMemory: 80 * MiB, leave: 12_000, presence: [{ from: 10_000, to: 12_000 }], cells: [] },
  ]);
  assert.equal(memoryAt(u, 0), 100 * MiB);
  assert.equal(memoryAt(u, 2500), 900 * MiB);
  assert.equal(memoryAt(u, 9000), 900 * MiB);
  assert.equal(memoryAt(u, 10_500), 80 * MiB);
});

test('the oracle pays the cheapest tier under 75% while the user is there, and the GPU tier between GPU cells', () => {
  const pro = defaultTierLadder.pro;
  assert.equal(cheapestFit(pro, 300 * MiB, 75).name, 'base');
  assert.equal(cheapestFit(pro, 400 * MiB, 75).name, 't3.small');
  assert.equal(cheapestFit(pro, 1.2 * GiB, 75).name, 't3.medium');
  const u = oneUser('pro', [
    {
      signIn: 0,
      startMemory: 100 * MiB,
      leave: 60 * MIN,
      presence: [{ from: 0, to: 60 * MIN }],
      cells: [
        { at: 10 * MIN, busyMs: 1000, memAfter: 1.2 * GiB },
        { at: 20 * MIN, busyMs: 5 * MIN, memAfter: 1.2 * GiB, gpu: 'use' },
        { at: 40 * MIN, busyMs: 1000, memAfter: 200 * MiB },
      ],
    },
  ]);
  const stints = userStints(u, oracleOptions);
  assert.deepEqual(
    stints.map((s) => [s.instanceType, s.from / MIN, s.to / MIN]),
    [
      ['t3.medium', 10, 20],
      ['g5.xlarge', 20, 25],
      ['t3.medium', 25, 40],
    ],
  );
  const trace: Trace = { seed: 0, dayStart: 0, dayMs: 86_400_000, users: [u] };
  const r = oracle(trace, oracleOptions);
  assert.equal(r.strict.totalMs, 30 * MIN);
  assert.equal(r.boot.totalMs, 30 * MIN + 40_000 * 2 + 90_000);
  // The session ends on the base server: no idle timeout to pay.
  assert.equal(r.online.totalMs, r.boot.totalMs);
});

test('billing is per second with a 60 s minimum', () => {
  assert.equal(billedUsd('t3.large', 3_600_000), 0.0832);
  assert.equal(billedUsd('t3.large', 10_000), (0.0832 * 60) / 3600);
  assert.throws(() => billedUsd('m9.huge', 1000));
});

test('instance usage and idle-to-$0 from instance records', () => {
  const u = oneUser('pro', [
    { signIn: 0, startMemory: 100 * MiB, leave: 10 * MIN, presence: [{ from: 0, to: 10 * MIN }], cells: [] },
    { signIn: 60 * MIN, startMemory: 100 * MiB, leave: 70 * MIN, presence: [{ from: 60 * MIN, to: 70 * MIN }], cells: [] },
  ]);
  const trace: Trace = { seed: 0, dayStart: 0, dayMs: 86_400_000, users: [u] };
  const rec = (instanceId: string, launchedAt: number, terminatedAt: number | null): InstanceRecord => ({ instanceId, instanceType: 't3.medium', userId: u.userId, hostId: instanceId, launchedAt, terminatedAt });
  const records = [rec('a', 1 * MIN, 26 * MIN), rec('b', 5 * MIN, 20 * MIN), rec('c', 60 * MIN - 500, null)];
  const usage = instanceUsage(records, 100 * MIN);
  assert.equal(usage.byType['t3.medium']!.instances, 3);
  assert.equal(usage.totalMs, 25 * MIN + 15 * MIN + 40 * MIN + 500);
  const { spells, baseOnly } = idleToZero(trace, records, 100 * MIN);
  assert.equal(baseOnly, 0);
  // First spell: the last instance went at 26 min, 16 min after the idle start. The instance of the next
  // visit (launched within the second the visit came) is not part of it.
  assert.equal(spells[0]!.ms, 16 * MIN);
  // Second spell: c still runs at the end of the records.
  assert.equal(spells[1]!.zeroAt, null);
  assert.equal(spells[1]!.ms, 30 * MIN);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95), 10);
  assert.equal(percentile([5, 1, 3], 50), 3);
  assert.equal(terminationTimeOf('User initiated (2026-12-07 09:30:05 UTC)'), Date.parse('2026-12-07T09:30:05Z'));
  assert.equal(terminationTimeOf(''), null);
});

test('the replay of a small day against a fake cloud: every instance terminated by its own workflow, none orphaned, idle ends on $0', async () => {
  const trace = generateTrace({ seed: 11, users: 8 });
  const cloud = createFakeCloud('unit');
  const r = await simulate({ trace, cloud, ladder: defaultTierLadder, gpuTier: gpuTierOf('g5.xlarge'), gpuPlans: ['pro', 'team'], durations: measuredDurations, deploymentId: 'unit' });
  assert.ok(cloud.instances.length > 0, 'some instance was launched');
  assert.ok(cloud.instances.every((i) => i.terminatedAt !== null), 'every instance is terminated at the end');
  assert.equal(r.reaperTerminated.length, 0, 'the reaper had nothing to do');
  assert.equal(r.hosts.reduce((a, h) => a + h.orphanMs, 0), 0, 'no instance ran with nothing holding it');
  // Every session started with a login and ended with an idle checkpoint.
  const sessions = trace.users.reduce((a, u) => a + u.sessions.length, 0);
  assert.equal(r.ops.filter((o) => o.kind === 'login').length, sessions);
  assert.equal(r.ops.filter((o) => o.kind === 'idle').length, sessions);
  const records = cloud.instances.map((i) => ({ instanceId: i.instanceId, instanceType: i.instanceType, userId: i.tags['markco:user'] ?? null, hostId: i.tags['markco:host'] ?? null, launchedAt: i.launchedAt, terminatedAt: i.terminatedAt }));
  const { spells } = idleToZero(trace, records, r.endedAt);
  assert.ok(spells.every((s) => s.zeroAt !== null), 'every idle spell reached $0 before the next visit');
  // The same seed replays to the same instances.
  const again = createFakeCloud('unit');
  await simulate({ trace, cloud: again, ladder: defaultTierLadder, gpuTier: gpuTierOf('g5.xlarge'), gpuPlans: ['pro', 'team'], durations: measuredDurations, deploymentId: 'unit' });
  assert.deepEqual(
    again.instances.map((i) => [i.instanceType, i.launchedAt, i.terminatedAt]),
    cloud.instances.map((i) => [i.instanceType, i.launchedAt, i.terminatedAt]),
  );
});
