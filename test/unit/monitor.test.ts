import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MonitorTracker, type MonitoredRuntime } from '../../activities/monitor.js';
import { hostSamplerArgs, parseSamplerLine } from '../../activities/podman-commands.js';
import { validateResourceMonitorInput } from '../../workflows/monitor.js';

const MiB = 1024 * 1024;
const runtime = (over: Partial<MonitoredRuntime> = {}): MonitoredRuntime => ({ runtimeId: 'r1', userId: 'u1', containerName: 'rt-u1', memoryLimitBytes: 256 * MiB, lastActivityAt: null, since: 0, ...over });
const sample = (memoryMiB: number, cpuUsec: number, limitMiB: number | null = 256) => ({ name: 'rt-u1', memoryBytes: memoryMiB * MiB, limitBytes: limitMiB === null ? null : limitMiB * MiB, cpuUsageUsec: cpuUsec });

test('sampler lines parse; anything else is ignored', () => {
  assert.deepEqual(parseSamplerLine('s rt-a 1048576 268435456 123456'), { kind: 'sample', sample: { name: 'rt-a', memoryBytes: MiB, limitBytes: 256 * MiB, cpuUsageUsec: 123456 } });
  assert.deepEqual(parseSamplerLine('s rt-a 1048576 max 1'), { kind: 'sample', sample: { name: 'rt-a', memoryBytes: MiB, limitBytes: null, cpuUsageUsec: 1 } });
  assert.deepEqual(parseSamplerLine('t 1700000000000'), { kind: 'tick', at: 1_700_000_000_000 });
  for (const bad of ['', 's rt-a x 1 1', 's rt-a 1 1', 'podman: error', 't soon']) assert.equal(parseSamplerLine(bad), null, bad);
  assert.throws(() => hostSamplerArgs(10, 5), /at least 100 ms/);
});

test('a memory reading goes out when its band changes, not every sample, and at least each minute', () => {
  const t = new MonitorTracker({ hostId: 'base', idleAfterMs: 15 * 60_000 });
  const rts = new Map([['rt-u1', runtime()]]);
  const sent = (at: number, mib: number) => t.tick(at, [sample(mib, at * 1000)], rts).filter((d) => d.kind === 'pressure').map((d) => (d.kind === 'pressure' ? Math.round((d.event.usedBytes / MiB)) : 0));
  assert.deepEqual(sent(0, 40), [40], 'the first sample is sent');
  assert.deepEqual(sent(2000, 50), [], 'same band (below 30%)');
  assert.deepEqual(sent(4000, 130), [130], '50% crossed');
  assert.deepEqual(sent(6000, 131), []);
  assert.deepEqual(sent(8000, 200), [200], '75% crossed');
  assert.deepEqual(sent(70_000, 201), [201], 'a keep-alive after a minute');
});

test('the limit in force comes from the cgroup; the row\'s limit only when the cgroup has none', () => {
  const t = new MonitorTracker({ hostId: 'base', idleAfterMs: 60_000 });
  const rts = new Map([['rt-u1', runtime()]]);
  const [d] = t.tick(0, [sample(100, 0, 1536)], rts);
  assert.equal(d?.kind === 'pressure' && d.event.limitBytes, 1536 * MiB);
  const t2 = new MonitorTracker({ hostId: 'base', idleAfterMs: 60_000 });
  const [d2] = t2.tick(0, [sample(100, 0, null)], rts);
  assert.equal(d2?.kind === 'pressure' && d2.event.limitBytes, 256 * MiB);
});

test('idle-wake once when a runtime reported idle is busy again; readings say when the CPU was last busy', () => {
  const t = new MonitorTracker({ hostId: 'base', idleAfterMs: 10_000, keepAliveMs: 60_000 });
  const rts = new Map([['rt-u1', runtime()]]);
  const kinds = (at: number, cpuUsec: number) => t.tick(at, [sample(10, cpuUsec)], rts).map((d) => d.kind).filter((k) => k !== 'pressure');
  assert.deepEqual(kinds(0, 0), []);
  assert.deepEqual(kinds(10_000, 0), ['idle']);
  assert.deepEqual(kinds(12_000, 1_000_000), ['wake'], 'busy again');
  assert.deepEqual(kinds(14_000, 2_000_000), [], 'once');
  const reading = t.tick(80_000, [sample(10, 2_000_000)], rts).find((d) => d.kind === 'pressure');
  assert.equal(reading?.kind === 'pressure' ? reading.event.busyAt : undefined, 14_000, 'the keep-alive reading carries the last busy sample');
});

test('idle: no CPU and no traffic for the idle time; CPU or traffic resets it; containers without a runtime row are ignored', () => {
  const t = new MonitorTracker({ hostId: 'base', idleAfterMs: 10_000, keepAliveMs: 60_000 });
  let rts = new Map([['rt-u1', runtime()]]);
  const idleAt = (at: number, cpuUsec: number) => t.tick(at, [sample(10, cpuUsec), { ...sample(10, 0), name: 'sb-fork' }], rts).filter((d) => d.kind === 'idle').length;
  assert.equal(idleAt(0, 0), 0);
  assert.equal(idleAt(5000, 10_000), 0, '0.2% CPU is not work');
  assert.equal(idleAt(10_000, 20_000), 1, 'idle after 10 s');
  assert.equal(idleAt(12_000, 20_000), 0, 'once per idle period');
  assert.equal(idleAt(14_000, 1_020_000), 0, 'a busy second (50% CPU) resets it');
  assert.equal(idleAt(23_000, 1_020_000), 0);
  assert.equal(idleAt(24_000, 1_020_000), 1, '10 s after the busy sample');
  rts = new Map([['rt-u1', runtime({ lastActivityAt: 30_000 })]]);
  assert.equal(idleAt(31_000, 1_020_000), 0, 'the user typed at 30 s: not idle');
  assert.equal(idleAt(40_000, 1_020_000), 1, 'idle again 10 s after the traffic');
  assert.equal(idleAt(100_000, 1_020_000), 1, 'repeated each keep-alive while it lasts');
});

test('monitor input is checked', () => {
  assert.deepEqual(validateResourceMonitorInput({ intervalMs: 2000, idleAfterMs: 900_000 }), []);
  assert.match(validateResourceMonitorInput({ intervalMs: 5 }).join(), /intervalMs: expected whole milliseconds from 100/);
  assert.deepEqual(validateResourceMonitorInput([] as never), ['input must be a JSON object']);
});
