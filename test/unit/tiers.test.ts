import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planLimits } from '../../activities/user-containers.js';
import { defaultTierLadder, hostReserveBytes, nextTier, parseTierLadder, previousTier, smallestTierFor, tierNamed } from '../../lib/tiers.js';

const GiB = 1024 ** 3;

test("every plan's ladder starts on the base server with the plan's own limits and only grows", () => {
  for (const [plan, tiers] of Object.entries(defaultTierLadder)) {
    assert.equal(tiers[0]!.name, 'base');
    assert.equal(tiers[0]!.memoryBytes, planLimits[plan as keyof typeof planLimits].memoryBytes, `${plan} base memory`);
    assert.equal(tiers[0]!.cpus, planLimits[plan as keyof typeof planLimits].cpus);
    for (let i = 1; i < tiers.length; i++) assert.ok(tiers[i]!.memoryBytes > tiers[i - 1]!.memoryBytes, `${plan} rung ${i} grows`);
  }
  assert.equal(tierNamed(defaultTierLadder, 'pro', 't3.large')!.memoryBytes, 8 * GiB - hostReserveBytes, 'the host keeps its reserve');
});

test('climbing and descending the ladder: base -> t3.small -> t3.medium, and back; the top has no next', () => {
  assert.equal(nextTier(defaultTierLadder, 'free', 'base')?.name, 't3.small');
  assert.equal(nextTier(defaultTierLadder, 'free', 't3.small')?.name, 't3.medium');
  assert.equal(nextTier(defaultTierLadder, 'free', 't3.large'), undefined, "the free plan's top rung");
  assert.equal(previousTier(defaultTierLadder, 'pro', 't3.medium')?.name, 't3.small');
  assert.equal(previousTier(defaultTierLadder, 'pro', 'base'), undefined);
});

test('the smallest tier that holds a snapshot with headroom; the top rung when nothing does', () => {
  assert.equal(smallestTierFor(defaultTierLadder, 'pro', 100 * 1024 * 1024).name, 'base');
  assert.equal(smallestTierFor(defaultTierLadder, 'pro', 1 * GiB).name, 't3.small');
  assert.equal(smallestTierFor(defaultTierLadder, 'pro', 5 * GiB).name, 't3.large');
  assert.equal(smallestTierFor(defaultTierLadder, 'free', 64 * GiB).name, 't3.large');
});

test('MARKCO_TIER_LADDER replaces the plans it names and says exactly what is wrong', () => {
  const custom = parseTierLadder(
    JSON.stringify({ team: [{ name: 'base', instanceType: null, memoryBytes: GiB, cpus: 2 }, { name: 'r6i.large', instanceType: 'r6i.large', memoryBytes: 15 * GiB, cpus: 2 }] }),
  );
  assert.deepEqual(custom.team.map((t) => t.name), ['base', 'r6i.large']);
  assert.equal(custom.free, defaultTierLadder.free, 'plans not named keep their default');
  assert.equal(parseTierLadder(undefined), defaultTierLadder);
  assert.throws(() => parseTierLadder('{nope'), /MARKCO_TIER_LADDER is not JSON/);
  assert.throws(
    () => parseTierLadder(JSON.stringify({ pro: [{ name: 't3.small', instanceType: 't3.small', memoryBytes: GiB, cpus: 2 }] })),
    /pro\.0: the first tier of every plan is the base server/,
  );
  assert.throws(
    () =>
      parseTierLadder(
        JSON.stringify({ pro: [{ name: 'base', instanceType: null, memoryBytes: 2 * GiB, cpus: 1 }, { name: 't3.small', instanceType: 't3.small', memoryBytes: GiB, cpus: 2 }] }),
      ),
    /pro\.1: each tier must give more memory than the one before/,
  );
  assert.throws(() => parseTierLadder(JSON.stringify({ gold: [] })), /gold/);
});

test('a bad MARKCO_TIER_LADDER stops start-up with a message naming the variable', async () => {
  const { loadConfig, ConfigError } = await import('../../lib/config.js');
  assert.throws(() => loadConfig({ MARKCO_TIER_LADDER: '[]' }), (err: unknown) => err instanceof ConfigError && /MARKCO_TIER_LADDER/.test(err.message));
  assert.equal(loadConfig({}).tiers.pro[1]!.name, 't3.small');
});
