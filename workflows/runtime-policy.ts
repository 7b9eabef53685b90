/**
 * The memory-pressure policy of the per-user runtime entity `runtime/<userId>` (design:
 * docs/design/elastic-compute.md §2.4, hysteresis and dedupe).
 *
 * Pure and deterministic: it runs inside workflow code, so time is always passed in (`now`, workflow
 * time), nothing is random, and no function mutates its arguments; every change returns a new state.
 * The state is plain JSON, small enough to carry across continue-as-new.
 *
 * How the entity uses it:
 * - `pressure` signal: `({ state, action } = decide(state, event, now, config))`, then act on `action`
 *   (start `preProvisionHost`, queue a migration, or signal the running migration `escalate`);
 * - when a slot operation starts: `state = onOperationStarted(state)`;
 * - when it ends: `state = onOperationFinished(state, placementChanged)` and, with the new placement,
 *   `state = onPlacementChanged(state, placement)` (either order);
 * - a timer: when `scaleDownDue(state, now, config)` holds, or to retry a failed migration when no new
 *   event arrives, call `decide(state, state.latest, now, config)`: re-deciding on the latest event
 *   changes nothing except the scale-down and the stale-acted retry.
 */
import type { MigrationReason } from './contracts/elastic.js';

export interface PressureEvent {
  runtimeId: string;
  hostId: string;
  usedBytes: number;
  /** The limit the monitor saw; informative only, the policy uses `Placement.memoryLimitBytes`. */
  limitBytes?: number;
  /** When the usage was measured (ms epoch). */
  at: number;
  source: string;
}

export interface Placement {
  runtimeId: string;
  hostId: string;
  tier: string;
  /** The limit this system set for the runtime: the denominator of every percentage. */
  memoryLimitBytes: number;
  /** Since when the runtime runs here under this limit (ms epoch); older events are stale. */
  since: number;
}

export interface PolicyConfig {
  /** How long usage must stay low (below 30 %, never back to 40 %) before a scale-down. */
  scaleDownAfterMs: number;
  /** A migration band whose action did not move the runtime fires again after this, while still above. */
  staleActedMs: number;
}

export const defaultPolicyConfig: PolicyConfig = { scaleDownAfterMs: 1_800_000, staleActedMs: 300_000 };

export type Band = 'none' | 'pre-provision' | 'migrate' | 'urgent' | 'critical';
type ActingBand = Exclude<Band, 'none'>;

export interface PolicyState {
  placement: Placement | null;
  /** Bands that fired since their last re-arm (or were covered by a running operation). */
  acted: Record<ActingBand, boolean>;
  /** When a band last fired (workflow time, ms epoch); null when none has. */
  actedAt: number | null;
  /** Since when usage has been low on a tier other than base (workflow time); null when it is not. */
  lowSince: number | null;
  /** The last event that was not stale. */
  latest: PressureEvent | null;
  /** A slot operation (login, stopRuntime, a migration) is running. */
  busy: boolean;
}

export type PolicyAction =
  | { kind: 'none'; reason: string }
  | { kind: 'pre-provision' }
  | { kind: 'migrate'; reason: Extract<MigrationReason, 'pressure' | 'urgent' | 'critical' | 'scale-down'>; usedBytes: number }
  /** Critical pressure while a migration is already running: signal the child to pause the source now. */
  | { kind: 'escalate' };

/** Percentages of `Placement.memoryLimitBytes`: a band fires at `>= firesAt` and re-arms at `< rearmsBelow`. */
export const bands: readonly { band: ActingBand; firesAt: number; rearmsBelow: number }[] = Object.freeze([
  Object.freeze({ band: 'pre-provision', firesAt: 50, rearmsBelow: 45 } as const),
  Object.freeze({ band: 'migrate', firesAt: 75, rearmsBelow: 70 } as const),
  Object.freeze({ band: 'urgent', firesAt: 90, rearmsBelow: 85 } as const),
  Object.freeze({ band: 'critical', firesAt: 95, rearmsBelow: 90 } as const),
]);

/** The low band (scale down): starts below this percentage on a tier other than base... */
export const lowStartsBelow = 30;
/** ...and is cancelled by any event at or above this one. */
export const lowCancelsAt = 40;

/** Bands whose action is a migration: only these are retried after `staleActedMs`. */
const migrationBands: ReadonlySet<ActingBand> = new Set(['migrate', 'urgent', 'critical']);

const noneActed = (): Record<ActingBand, boolean> => ({ 'pre-provision': false, migrate: false, urgent: false, critical: false });

export function initialPolicyState(placement: Placement | null): PolicyState {
  return { placement: placement ? { ...placement } : null, acted: noneActed(), actedAt: null, lowSince: null, latest: null, busy: false };
}

/** `used / limit >= percent / 100`, in integers so no rounding decides a boundary. */
const atLeast = (used: number, limit: number, percent: number): boolean => used * 100 >= percent * limit;

/** Why `event` cannot be judged against `placement`, or null when it can. */
function staleness(placement: Placement | null, event: PressureEvent): string | null {
  if (!placement) return 'no placement: the runtime is not running';
  if (event.runtimeId !== placement.runtimeId) return `stale: runtime ${event.runtimeId} is not the current ${placement.runtimeId}`;
  if (event.hostId !== placement.hostId) return `stale: host ${event.hostId} is not the current ${placement.hostId}`;
  if (event.at < placement.since) return `stale: measured at ${event.at}, before the placement since ${placement.since}`;
  if (!(placement.memoryLimitBytes > 0)) return 'the placement has no memory limit';
  if (!Number.isFinite(event.usedBytes) || event.usedBytes < 0) return `invalid usage ${event.usedBytes}`;
  return null;
}

/** The highest band `usedBytes` reaches under `limitBytes`. */
function bandAt(usedBytes: number, limitBytes: number): Band {
  let band: Band = 'none';
  for (const b of bands) if (atLeast(usedBytes, limitBytes, b.firesAt)) band = b.band;
  return band;
}

/** The band of the latest event (for the `entityState` query); 'none' without one. */
export function currentBand(state: PolicyState): Band {
  if (!state.latest || staleness(state.placement, state.latest)) return 'none';
  return bandAt(state.latest.usedBytes, state.placement!.memoryLimitBytes);
}

export function decide(state: PolicyState, event: PressureEvent, now: number, config: PolicyConfig): { state: PolicyState; action: PolicyAction } {
  const stale = staleness(state.placement, event);
  if (stale) return { state, action: { kind: 'none', reason: stale } };
  const placement = state.placement!;
  const limit = placement.memoryLimitBytes;
  const used = event.usedBytes;

  // Re-arm every band the usage fell below; the acted set stays a run of the lowest bands.
  const acted = { ...state.acted };
  for (const b of bands) if (acted[b.band] && !atLeast(used, limit, b.rearmsBelow)) acted[b.band] = false;
  let actedAt = Object.values(acted).some(Boolean) ? state.actedAt : null;

  // The low band, tracked whether or not the slot is busy.
  let lowSince = state.lowSince;
  if (placement.tier === 'base' || atLeast(used, limit, lowCancelsAt)) lowSince = null;
  else if (!atLeast(used, limit, lowStartsBelow)) lowSince = lowSince ?? now;

  const next: PolicyState = { ...state, acted, actedAt, lowSince, latest: { ...event } };
  const done = (s: PolicyState, action: PolicyAction) => ({ state: s, action });

  const band = bandAt(used, limit);
  if (band !== 'none') {
    const staleActed = actedAt !== null && now - actedAt > config.staleActedMs;
    if (acted[band] && !(migrationBands.has(band) && !state.busy && staleActed)) {
      return done(next, { kind: 'none', reason: `${band} already acted (re-arms below ${rearmLevel(band)}%)` });
    }
    // Fire the highest band crossed; every band below it counts as acted too.
    for (const b of bands) if (atLeast(used, limit, b.firesAt)) acted[b.band] = true;
    actedAt = now;
    const fired = { ...next, acted, actedAt };
    if (band === 'pre-provision') return done(fired, { kind: 'pre-provision' });
    if (band === 'critical') return done(fired, state.busy ? { kind: 'escalate' } : { kind: 'migrate', reason: 'critical', usedBytes: used });
    if (state.busy) return done(fired, { kind: 'none', reason: `${band}: the running operation covers it` });
    return done(fired, { kind: 'migrate', reason: band === 'urgent' ? 'urgent' : 'pressure', usedBytes: used });
  }

  if (scaleDownDue(next, now, config)) {
    if (state.busy) return done(next, { kind: 'none', reason: 'scale-down due, waiting for the running operation' });
    return done({ ...next, lowSince: null }, { kind: 'migrate', reason: 'scale-down', usedBytes: used });
  }
  return done(next, { kind: 'none', reason: lowSince !== null ? `low since ${lowSince}` : 'below every band' });
}

function rearmLevel(band: ActingBand): number {
  return bands.find((b) => b.band === band)!.rearmsBelow;
}

/** A new placement (after a login or a migration, or null once stopped): bands and the low band restart. */
export function onPlacementChanged(state: PolicyState, placement: Placement | null): PolicyState {
  const p = placement ? { ...placement } : null;
  const latest = state.latest && !staleness(p, state.latest) ? state.latest : null;
  return { ...state, placement: p, acted: noneActed(), actedAt: null, lowSince: null, latest };
}

/** A slot operation started: migrate and urgent now only mark their band acted, critical escalates. */
export function onOperationStarted(state: PolicyState): PolicyState {
  return { ...state, busy: true };
}

/**
 * A slot operation ended. When the placement changed, band state restarts from the next fresh event
 * (as `onPlacementChanged`). When it did not (a failed migration), the acted flags stay until they re-arm,
 * or until an event still at or above a migration band arrives more than `staleActedMs` after `actedAt`.
 */
export function onOperationFinished(state: PolicyState, placementChanged: boolean): PolicyState {
  if (!placementChanged) return { ...state, busy: false };
  return { ...state, busy: false, acted: noneActed(), actedAt: null, lowSince: null };
}

/** For a timer: usage has been low long enough on a tier other than base to move down. */
export function scaleDownDue(state: PolicyState, now: number, config: PolicyConfig): boolean {
  return state.lowSince !== null && state.placement !== null && state.placement.tier !== 'base' && now - state.lowSince >= config.scaleDownAfterMs;
}
