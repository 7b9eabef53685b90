import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';
import {
  bands,
  currentBand,
  decide,
  defaultPolicyConfig,
  initialPolicyState,
  onOperationFinished,
  onOperationStarted,
  onPlacementChanged,
  scaleDownDue,
  type Placement,
  type PolicyAction,
  type PolicyConfig,
  type PolicyState,
  type PressureEvent,
} from '../../workflows/runtime-policy.js';

/** A limit of 10^9 bytes makes every whole percentage an exact byte count. */
const LIMIT = 1_000_000_000;
const pct = (p: number) => Math.round((p * LIMIT) / 100);
const T0 = 1_700_000_000_000;
const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const config: PolicyConfig = { scaleDownAfterMs: 30 * MIN, staleActedMs: 5 * MIN };

const place = (over: Partial<Placement> = {}): Placement => ({
  runtimeId: 'rt-1',
  hostId: 'host-a',
  tier: 't3.medium',
  memoryLimitBytes: LIMIT,
  since: T0,
  ...over,
});

const ev = (usedBytes: number, at: number, over: Partial<PressureEvent> = {}): PressureEvent => ({
  runtimeId: 'rt-1',
  hostId: 'host-a',
  usedBytes,
  limitBytes: LIMIT,
  at,
  source: 'test',
  ...over,
});

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * Feeds percentages (each a second apart, or at explicit times) through `decide`, always with deep-frozen
 * inputs, checking that the input state is left exactly as it was. Returns the actions and the final state.
 */
function run(state: PolicyState, steps: (number | { p: number; at: number; used?: number })[], cfg = config) {
  const actions: PolicyAction[] = [];
  let t = (state.latest?.at ?? T0) + SEC;
  for (const s of steps) {
    const { p, at, used } = typeof s === 'number' ? { p: s, at: t, used: undefined } : s;
    t = at + SEC;
    const before = structuredClone(state);
    const r = decide(deepFreeze(state), deepFreeze(ev(used ?? pct(p), at)), at, deepFreeze({ ...cfg }));
    assert.deepEqual(state, before, 'decide left its input state alone');
    actions.push(r.action);
    state = r.state;
  }
  return { actions, state };
}

const fresh = (over: Partial<Placement> = {}) => initialPolicyState(place(over));
const kinds = (actions: PolicyAction[]) => actions.map((a) => (a.kind === 'migrate' ? `migrate:${a.reason}` : a.kind));
const acting = (actions: PolicyAction[]) => kinds(actions).filter((k) => k !== 'none');

test('the band table: fires at 50/75/90/95, re-arms below 45/70/85/90, frozen', () => {
  assert.deepEqual(
    bands.map((b) => [b.band, b.firesAt, b.rearmsBelow]),
    [
      ['pre-provision', 50, 45],
      ['migrate', 75, 70],
      ['urgent', 90, 85],
      ['critical', 95, 90],
    ],
  );
  assert.ok(Object.isFrozen(bands) && bands.every((b) => Object.isFrozen(b)));
  assert.deepEqual(defaultPolicyConfig, { scaleDownAfterMs: 1_800_000, staleActedMs: 300_000 });
});

test('initialPolicyState: nothing acted, no low band, nothing seen, idle; the placement is copied', () => {
  const p = place();
  const s = initialPolicyState(p);
  assert.deepEqual(s, {
    placement: p,
    acted: { 'pre-provision': false, migrate: false, urgent: false, critical: false },
    actedAt: null,
    lowSince: null,
    latest: null,
    busy: false,
  });
  assert.notEqual(s.placement, p);
  assert.equal(initialPolicyState(null).placement, null);
});

const bandAction: Record<string, string> = {
  'pre-provision': 'pre-provision',
  migrate: 'migrate:pressure',
  urgent: 'migrate:urgent',
  critical: 'migrate:critical',
};

for (const b of bands) {
  test(`${b.band}: fires exactly at ${b.firesAt}% once, stays acted at ${b.rearmsBelow}%, re-arms just below it`, () => {
    const below = { p: 0, at: T0 + SEC, used: pct(b.firesAt) - 1 };
    const { actions, state } = run(fresh(), [
      below,
      { p: b.firesAt, at: T0 + 2 * SEC },
      { p: b.firesAt, at: T0 + 3 * SEC },
      { p: b.rearmsBelow, at: T0 + 4 * SEC },
      { p: b.firesAt, at: T0 + 5 * SEC },
      { p: 0, at: T0 + 6 * SEC, used: pct(b.rearmsBelow) - 1 },
      { p: b.firesAt, at: T0 + 7 * SEC },
    ]);
    const k = kinds(actions);
    assert.notEqual(k[0], bandAction[b.band], 'one byte under the firing level is not this band');
    assert.equal(k[1], bandAction[b.band], 'fires at the level');
    assert.deepEqual(k.slice(2, 6), ['none', 'none', 'none', 'none'], 'no second firing until re-armed');
    assert.equal(k[6], bandAction[b.band], 'fires again after re-arming');
    assert.equal(state.acted[b.band], true);
    assert.equal(state.actedAt, T0 + 7 * SEC);
    const migrate = actions[1]!;
    if (migrate.kind === 'migrate') assert.equal(migrate.usedBytes, pct(b.firesAt));
  });
}

test('stale events are dropped with a reason and change nothing: runtime, host, before the placement, no placement', () => {
  const start = run(fresh(), [40]).state;
  const cases: [PressureEvent, RegExp][] = [
    [ev(pct(80), T0 + MIN, { runtimeId: 'rt-old' }), /stale: runtime rt-old/],
    [ev(pct(80), T0 + MIN, { hostId: 'host-b' }), /stale: host host-b/],
    [ev(pct(80), T0 - 1), /stale: measured at .* before the placement/],
    [ev(Number.NaN, T0 + MIN), /invalid usage/],
    [ev(-1, T0 + MIN), /invalid usage/],
  ];
  for (const [e, reason] of cases) {
    const r = decide(deepFreeze(start), deepFreeze(e), T0 + MIN, config);
    assert.equal(r.action.kind, 'none');
    assert.match((r.action as { reason: string }).reason, reason);
    assert.equal(r.state, start, 'the state is returned untouched; latest keeps the last fresh event');
  }
  const none = decide(initialPolicyState(null), ev(pct(99), T0), T0, config);
  assert.deepEqual(none, { state: initialPolicyState(null), action: { kind: 'none', reason: 'no placement: the runtime is not running' } });
  const noLimit = decide(fresh({ memoryLimitBytes: 0 }), ev(pct(99), T0), T0, config);
  assert.equal(noLimit.action.kind, 'none');
  assert.equal(noLimit.state.latest, null);
  // An event measured exactly at `since` is fresh.
  assert.equal(decide(fresh(), ev(pct(80), T0), T0, config).action.kind, 'migrate');
});

test("the percentage is taken from the placement's limit, never from the event's limitBytes", () => {
  // 80% of the placement, but the monitor thinks the limit is 100x bigger (0.8%): migrate.
  const a = decide(fresh(), ev(pct(80), T0 + SEC, { limitBytes: LIMIT * 100 }), T0 + SEC, config);
  assert.deepEqual(a.action, { kind: 'migrate', reason: 'pressure', usedBytes: pct(80) });
  // 40% of the placement, but the monitor reports a limit that would make it 100%: nothing.
  const b = decide(fresh(), ev(pct(40), T0 + SEC, { limitBytes: pct(40) }), T0 + SEC, config);
  assert.equal(b.action.kind, 'none');
  // No limit in the event at all.
  const { limitBytes: _omit, ...bare } = ev(pct(96), T0 + SEC);
  assert.deepEqual(decide(fresh(), bare, T0 + SEC, config).action, { kind: 'migrate', reason: 'critical', usedBytes: pct(96) });
});

test('five 75% events give exactly one migration', () => {
  const { actions } = run(fresh(), [75, 75, 75, 75, 75]);
  assert.deepEqual(acting(actions), ['migrate:pressure']);
  assert.equal(kinds(actions)[0], 'migrate:pressure', 'the first one');
});

test('50% then 75%: pre-provision, then migrate', () => {
  const { actions, state } = run(fresh(), [50, 75]);
  assert.deepEqual(kinds(actions), ['pre-provision', 'migrate:pressure']);
  assert.deepEqual(state.acted, { 'pre-provision': true, migrate: true, urgent: false, critical: false });
});

test('pre-provision never fires twice while acted, busy or not, however long it stays', () => {
  let s = run(fresh(), [60]).state;
  s = onOperationStarted(s);
  const r = run(s, [{ p: 55, at: T0 + 10 * MIN }, { p: 62, at: T0 + 60 * MIN }]);
  s = onOperationFinished(r.state, false);
  const r2 = run(s, [{ p: 70, at: T0 + 120 * MIN }]);
  assert.deepEqual(kinds([...r.actions, ...r2.actions]), ['none', 'none', 'none']);
  // Pre-provision does not take the slot: it fires while busy.
  const busy = run(onOperationStarted(fresh()), [50]);
  assert.deepEqual(kinds(busy.actions), ['pre-provision']);
});

test('96% from 40%: one critical migration with every band acted; a later 80% does nothing', () => {
  const first = run(fresh(), [40, 96]);
  assert.deepEqual(kinds(first.actions), ['none', 'migrate:critical']);
  assert.deepEqual(first.actions[1], { kind: 'migrate', reason: 'critical', usedBytes: pct(96) });
  assert.deepEqual(first.state.acted, { 'pre-provision': true, migrate: true, urgent: true, critical: true });
  const { actions, state } = run(first.state, [80, 78, 96]);
  assert.deepEqual(kinds(actions).slice(0, 2), ['none', 'none'], 'migrate was marked acted by the critical firing');
  // 80% re-armed urgent (< 85) and critical (< 90) but not migrate (< 70): climbing back to 96% is a new crossing.
  assert.equal(kinds(actions)[2], 'migrate:critical');
  assert.deepEqual(state.acted, { 'pre-provision': true, migrate: true, urgent: true, critical: true });
});

test('only the highest band crossed acts: 91% from nothing is one urgent migration', () => {
  const { actions, state } = run(fresh(), [91, 86, 76]);
  assert.deepEqual(kinds(actions), ['migrate:urgent', 'none', 'none']);
  assert.deepEqual(state.acted, { 'pre-provision': true, migrate: true, urgent: false, critical: false }, '76% re-armed urgent only');
});

test('95% while a migration runs: escalate once, then nothing', () => {
  let s = run(fresh(), [80]).state;
  s = onOperationStarted(s);
  const { actions, state } = run(s, [95, 97, 99, 96]);
  assert.deepEqual(kinds(actions), ['escalate', 'none', 'none', 'none']);
  assert.equal(state.acted.critical, true);
  // Even long after, while still busy, it does not escalate again.
  const later = run(state, [{ p: 99, at: T0 + 30 * MIN }]);
  assert.deepEqual(kinds(later.actions), ['none']);
});

test('migrate and urgent while busy: nothing (the running operation covers it), but recorded as acted', () => {
  const { actions, state } = run(onOperationStarted(fresh()), [76, 91]);
  assert.deepEqual(kinds(actions), ['none', 'none']);
  assert.match((actions[0] as { reason: string }).reason, /migrate: the running operation covers it/);
  assert.match((actions[1] as { reason: string }).reason, /urgent: the running operation covers it/);
  assert.deepEqual(state.acted, { 'pre-provision': true, migrate: true, urgent: true, critical: false });
  assert.equal(state.actedAt, T0 + 2 * SEC);
  // The operation ends where it was (no move): within 5 min nothing fires.
  const after = run(onOperationFinished(state, false), [{ p: 92, at: T0 + 3 * MIN }]);
  assert.deepEqual(kinds(after.actions), ['none']);
});

test('re-arm: 75% -> 65% -> 76% fires again; 75% -> 70% -> 76% does not', () => {
  assert.deepEqual(kinds(run(fresh(), [75, 65, 76]).actions), ['migrate:pressure', 'none', 'migrate:pressure']);
  assert.deepEqual(kinds(run(fresh(), [75, 70, 76]).actions), ['migrate:pressure', 'none', 'none']);
  // Dropping to 65% re-arms migrate but not pre-provision (45%): no second reservation on the way back up.
  const s = run(fresh(), [50, 75, 65]).state;
  assert.deepEqual(s.acted, { 'pre-provision': true, migrate: false, urgent: false, critical: false });
  // Below 45% everything is re-armed and actedAt is cleared.
  const low = run(fresh(), [96, 44]).state;
  assert.deepEqual(low.acted, { 'pre-provision': false, migrate: false, urgent: false, critical: false });
  assert.equal(low.actedAt, null);
});

test('a failed migration: 80% within 5 min does nothing, after 5 min migrates again, and never in a storm', () => {
  let s = run(fresh(), [{ p: 75, at: T0 }]).state; // migrate fired at T0
  assert.equal(s.actedAt, T0);
  s = onOperationStarted(s);
  s = run(s, [{ p: 80, at: T0 + 6 * MIN }]).state; // still running after 5 min: no retry while busy
  s = onOperationFinished(s, false);
  assert.deepEqual(s.acted, { 'pre-provision': true, migrate: true, urgent: false, critical: false }, 'acted flags stay');
  assert.equal(s.busy, false);
  // The event seen while busy did not move actedAt: the first event after the failure retries at once.
  assert.deepEqual(kinds(run(s, [{ p: 80, at: T0 + 6 * MIN + SEC }]).actions), ['migrate:pressure']);

  // Within / at / after the window, from a fresh failure at T1.
  const T1 = T0 + HOUR;
  const f = onOperationFinished(onOperationStarted(run(fresh(), [{ p: 75, at: T1 }]).state), false);
  const r = run(f, [
    { p: 80, at: T1 + 1 * MIN },
    { p: 80, at: T1 + 4 * MIN },
    { p: 80, at: T1 + 5 * MIN }, // exactly 5 min: not yet "more than"
    { p: 80, at: T1 + 5 * MIN + 1 },
    { p: 80, at: T1 + 5 * MIN + 2 },
    { p: 80, at: T1 + 9 * MIN },
    { p: 80, at: T1 + 10 * MIN + 2 },
  ]);
  assert.deepEqual(kinds(r.actions), ['none', 'none', 'none', 'migrate:pressure', 'none', 'none', 'migrate:pressure']);
  assert.equal(r.state.actedAt, T1 + 10 * MIN + 2);
});

test('a failed urgent or critical migration is retried with its own reason; pre-provision is not retried', () => {
  const urgent = onOperationFinished(onOperationStarted(run(fresh(), [{ p: 91, at: T0 }]).state), false);
  assert.deepEqual(kinds(run(urgent, [{ p: 91, at: T0 + 6 * MIN }]).actions), ['migrate:urgent']);
  // Usage dropped from urgent into the migrate band (not re-armed): the retry is a plain pressure migration.
  assert.deepEqual(kinds(run(urgent, [{ p: 86, at: T0 + 6 * MIN }]).actions), ['migrate:pressure']);
  const critical = onOperationFinished(onOperationStarted(run(fresh(), [{ p: 96, at: T0 }]).state), false);
  assert.deepEqual(kinds(run(critical, [{ p: 97, at: T0 + 6 * MIN }]).actions), ['migrate:critical']);
  const pre = run(fresh(), [{ p: 55, at: T0 }]).state;
  assert.deepEqual(kinds(run(pre, [{ p: 55, at: T0 + 6 * MIN }, { p: 60, at: T0 + 60 * MIN }]).actions), ['none', 'none']);
});

test('low band: starts below 30% on a bigger tier, is kept until 40%, and a scale-down is due after the delay', () => {
  const { actions, state } = run(fresh({ tier: 't3.large' }), [
    { p: 50, at: T0 + SEC },
    { p: 25, at: T0 + 10 * SEC }, // starts
    { p: 20, at: T0 + 20 * SEC }, // kept
    { p: 35, at: T0 + 30 * SEC }, // between 30 and 40: kept
    { p: 30, at: T0 + 40 * SEC }, // 30% is not below 30: kept, not restarted
  ]);
  assert.equal(actions[0]!.kind, 'pre-provision');
  assert.equal(state.lowSince, T0 + 10 * SEC);
  assert.match((actions[4] as { reason: string }).reason, /low since/);
  assert.equal(scaleDownDue(state, T0 + 10 * SEC + 30 * MIN - 1, config), false);
  assert.equal(scaleDownDue(state, T0 + 10 * SEC + 30 * MIN, config), true);

  // Any event at 40% cancels it; below 30% restarts it from then.
  const cancelled = run(state, [{ p: 40, at: T0 + 50 * SEC }]).state;
  assert.equal(cancelled.lowSince, null);
  assert.equal(scaleDownDue(cancelled, T0 + 2 * HOUR, config), false);
  assert.equal(run(cancelled, [{ p: 29, at: T0 + 60 * SEC }]).state.lowSince, T0 + 60 * SEC);

  // The next event once due is a scale-down migration carrying the usage, and it clears lowSince.
  const due = run(state, [{ p: 22, at: T0 + 31 * MIN }]);
  assert.deepEqual(due.actions, [{ kind: 'migrate', reason: 'scale-down', usedBytes: pct(22) }]);
  assert.equal(due.state.lowSince, null);
  assert.equal(scaleDownDue(due.state, T0 + 3 * HOUR, config), false, 'it does not fire twice');
  // A 35% event once due also scales down (the band was never cancelled).
  assert.equal(kinds(run(state, [{ p: 35, at: T0 + 31 * MIN }]).actions)[0], 'migrate:scale-down');
});

test('low band: a timer re-deciding on the latest event scales down; nothing else happens twice', () => {
  const s = run(fresh({ tier: 't3.small' }), [{ p: 75, at: T0 + SEC }, { p: 10, at: T0 + 2 * SEC }]).state;
  const now = T0 + 2 * SEC + 30 * MIN;
  assert.ok(scaleDownDue(s, now, config));
  const r = decide(deepFreeze(s), s.latest!, now, config);
  assert.deepEqual(r.action, { kind: 'migrate', reason: 'scale-down', usedBytes: pct(10) });
  // Re-deciding on an event that already acted changes nothing.
  const t = run(fresh(), [{ p: 80, at: T0 + SEC }]).state;
  const again = decide(t, t.latest!, T0 + 2 * SEC, config);
  assert.equal(again.action.kind, 'none');
  assert.deepEqual(again.state, t);
});

test('low band: never on the base tier', () => {
  const { actions, state } = run(fresh({ tier: 'base' }), [{ p: 5, at: T0 + SEC }, { p: 1, at: T0 + 2 * HOUR }]);
  assert.deepEqual(kinds(actions), ['none', 'none']);
  assert.equal(state.lowSince, null);
  // Even with a lowSince carried over from elsewhere, the base tier is never due.
  assert.equal(scaleDownDue({ ...state, lowSince: T0 }, T0 + 10 * HOUR, config), false);
  assert.equal(scaleDownDue({ ...initialPolicyState(null), lowSince: T0 }, T0 + 10 * HOUR, config), false);
});

test('low band: no scale-down while busy; lowSince is kept so it runs once the slot is free', () => {
  let s = run(fresh({ tier: 't3.medium' }), [{ p: 10, at: T0 + SEC }]).state;
  s = onOperationStarted(s);
  const busy = run(s, [{ p: 12, at: T0 + 40 * MIN }]);
  assert.equal(busy.actions[0]!.kind, 'none');
  assert.match((busy.actions[0] as { reason: string }).reason, /scale-down due, waiting/);
  assert.equal(busy.state.lowSince, T0 + SEC);
  s = onOperationFinished(busy.state, false);
  assert.ok(scaleDownDue(s, T0 + 41 * MIN, config));
  assert.deepEqual(decide(s, s.latest!, T0 + 41 * MIN, config).action, { kind: 'migrate', reason: 'scale-down', usedBytes: pct(12) });
});

test('onPlacementChanged resets bands, actedAt and the low band; events from the old host are then ignored', () => {
  let s = run(fresh({ tier: 't3.small' }), [{ p: 96, at: T0 + SEC }]).state;
  s = onOperationStarted(s);
  const before = structuredClone(s);
  const moved = onPlacementChanged(deepFreeze(s), deepFreeze(place({ runtimeId: 'rt-2', hostId: 'host-b', tier: 't3.large', since: T0 + 5 * MIN })));
  assert.deepEqual(s, before, 'input untouched');
  assert.deepEqual(moved.acted, { 'pre-provision': false, migrate: false, urgent: false, critical: false });
  assert.equal(moved.actedAt, null);
  assert.equal(moved.lowSince, null);
  assert.equal(moved.latest, null, 'the old host’s event is not the latest of the new placement');
  assert.equal(moved.busy, true, 'busy is onOperationFinished’s business');
  assert.equal(moved.placement?.hostId, 'host-b');

  const done = onOperationFinished(moved, true);
  // A 75% from the old host after the move is ignored; from the new host it fires afresh.
  const old = decide(done, ev(pct(90), T0 + 6 * MIN), T0 + 6 * MIN, config);
  assert.match((old.action as { reason: string }).reason, /stale: runtime rt-1/);
  const late = decide(done, ev(pct(90), T0 + 4 * MIN, { runtimeId: 'rt-2', hostId: 'host-b' }), T0 + 6 * MIN, config);
  assert.match((late.action as { reason: string }).reason, /before the placement/);
  const fresh2 = decide(done, ev(pct(76), T0 + 6 * MIN, { runtimeId: 'rt-2', hostId: 'host-b' }), T0 + 6 * MIN, config);
  assert.deepEqual(fresh2.action, { kind: 'migrate', reason: 'pressure', usedBytes: pct(76) });

  // The same placement again (say a login that kept the runtime) keeps the latest event; null clears everything.
  const same = run(fresh(), [{ p: 60, at: T0 + SEC }]).state;
  assert.equal(onPlacementChanged(same, place()).latest?.usedBytes, pct(60));
  const stopped = onPlacementChanged(same, null);
  assert.equal(stopped.placement, null);
  assert.equal(stopped.latest, null);
  assert.equal(decide(stopped, ev(pct(99), T0 + MIN), T0 + MIN, config).action.kind, 'none');
});

test('onOperationFinished: a move resets the bands, a failure keeps them; both free the slot', () => {
  const s = onOperationStarted(run(fresh({ tier: 't3.small' }), [{ p: 76, at: T0 + SEC }]).state);
  const frozen = deepFreeze(structuredClone(s));
  const failed = onOperationFinished(frozen, false);
  assert.deepEqual(failed, { ...s, busy: false });
  const movedOn = onOperationFinished(frozen, true);
  assert.equal(movedOn.busy, false);
  assert.deepEqual(movedOn.acted, { 'pre-provision': false, migrate: false, urgent: false, critical: false });
  assert.equal(movedOn.actedAt, null);
  assert.equal(movedOn.lowSince, null);
  assert.deepEqual(onOperationStarted(frozen), s, 'starting while started is harmless');
});

test('currentBand reports the band of the latest fresh event', () => {
  assert.equal(currentBand(fresh()), 'none');
  const table: [number, string][] = [[10, 'none'], [49, 'none'], [50, 'pre-provision'], [74, 'pre-provision'], [75, 'migrate'], [90, 'urgent'], [95, 'critical'], [120, 'critical']];
  for (const [p, band] of table) assert.equal(currentBand(run(fresh(), [p]).state), band, `${p}%`);
  assert.equal(currentBand(onPlacementChanged(run(fresh(), [80]).state, place({ hostId: 'host-b' }))), 'none');
});

test('deterministic and pure: frozen inputs, equal outputs for equal inputs, no clock or randomness in the source', () => {
  const scenario = (): PolicyAction[] => {
    let s = fresh({ tier: 't3.large' });
    const out: PolicyAction[] = [];
    const step = (p: number, at: number) => {
      const r = decide(deepFreeze(s), deepFreeze(ev(pct(p), at)), at, deepFreeze({ ...config }));
      out.push(r.action);
      s = r.state;
    };
    step(50, T0 + 1);
    step(96, T0 + 2);
    s = deepFreeze(onOperationStarted(deepFreeze(s)));
    step(99, T0 + 3);
    s = deepFreeze(onOperationFinished(deepFreeze(s), false));
    step(97, T0 + 10 * MIN);
    s = deepFreeze(onPlacementChanged(deepFreeze(s), deepFreeze(place({ tier: 't3.large', since: T0 + 11 * MIN }))));
    step(10, T0 + 12 * MIN);
    step(10, T0 + 50 * MIN);
    return out;
  };
  const a = scenario();
  assert.deepEqual(a, scenario());
  assert.deepEqual(kinds(a), ['pre-provision', 'migrate:critical', 'none', 'migrate:critical', 'none', 'migrate:scale-down']);

  const src = readFileSync(join(repoRoot, 'workflows/runtime-policy.ts'), 'utf8');
  const imports = [...src.matchAll(/^\s*import\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)];
  for (const m of imports) {
    assert.ok(m[1], `only type imports: ${m[0]}`);
    assert.match(m[2]!, /^\.\/contracts\//);
  }
  assert.doesNotMatch(src, /\b(Date|Math\.random|setTimeout|setInterval|process)\b/);
});
