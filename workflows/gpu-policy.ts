/**
 * The GPU hop's policy inside the user's entity `runtime/<userId>` (docs/gpu.md). Pure and deterministic
 * like runtime-policy.ts: time comes in as `now`, nothing mutates its arguments, the state is small JSON
 * carried across continue-as-new.
 *
 * - gpu-hint (GPU libraries imported or installed): pre-provision a host of the plan's GPU tier, at most
 *   once per `hintCooldownMs` (the reservation it makes lives about that long).
 * - GPU use (a cell about to put work on the GPU, held at the edge): hop onto the GPU tier now.
 * - On the GPU tier, GPU work idle for `idleAfterMs` (no GPU cell run, CPU not seen busy, since the hop):
 *   move back to the CPU tier that fits; the migration terminates the GPU host. A failed attempt is
 *   retried after `retryAfterMs`, never in a loop.
 * - A spot interruption notice for the host the runtime is on: move away at once (any tier).
 */
export interface GpuPolicyConfig {
  /** The plan's GPU tier; null when this user has none (no GPU configured, or not on this plan). */
  tier: string | null;
  idleAfterMs: number;
  hintCooldownMs: number;
  retryAfterMs: number;
}

export const defaultGpuPolicyConfig: GpuPolicyConfig = { tier: null, idleAfterMs: 600_000, hintCooldownMs: 600_000, retryAfterMs: 60_000 };

export interface GpuState {
  hintedAt: number | null;
  lastUseAt: number | null;
  /** When the monitor last saw the runtime's CPU busy (its readings carry it). */
  busyAt: number | null;
  /** When the last move back to a CPU tier was asked for (retry spacing). */
  returnAskedAt: number | null;
}

export const initialGpuState: GpuState = { hintedAt: null, lastUseAt: null, busyAt: null, returnAskedAt: null };

/** Where the runtime is, as far as this policy cares. */
export interface GpuPlacement {
  hostId: string;
  tier: string;
  /** Since when it runs there (ms epoch). */
  since: number;
}

export type GpuAction = { kind: 'none'; reason: string } | { kind: 'pre-provision'; tier: string } | { kind: 'hop'; tier: string } | { kind: 'return'; reason: 'gpu-idle' | 'spot-interruption' };

export function onGpuTier(placement: GpuPlacement | null, config: GpuPolicyConfig): boolean {
  return placement !== null && config.tier !== null && placement.tier === config.tier;
}

export function onHint(state: GpuState, placement: GpuPlacement | null, now: number, config: GpuPolicyConfig): { state: GpuState; action: GpuAction } {
  if (config.tier === null) return { state, action: { kind: 'none', reason: 'no GPU tier for this user' } };
  if (onGpuTier(placement, config)) return { state, action: { kind: 'none', reason: 'already on the GPU tier' } };
  if (state.hintedAt !== null && now - state.hintedAt < config.hintCooldownMs) return { state, action: { kind: 'none', reason: `a GPU host was reserved at ${new Date(state.hintedAt).toISOString()}` } };
  return { state: { ...state, hintedAt: now }, action: { kind: 'pre-provision', tier: config.tier } };
}

export function onUse(state: GpuState, placement: GpuPlacement | null, now: number, config: GpuPolicyConfig): { state: GpuState; action: GpuAction } {
  const next = { ...state, lastUseAt: now };
  if (config.tier === null) return { state: next, action: { kind: 'none', reason: 'no GPU tier for this user' } };
  if (placement === null) return { state: next, action: { kind: 'none', reason: 'no runtime is running' } };
  if (onGpuTier(placement, config)) return { state: next, action: { kind: 'none', reason: 'already on the GPU tier' } };
  return { state: next, action: { kind: 'hop', tier: config.tier } };
}

export function onBusy(state: GpuState, busyAt: number | undefined): GpuState {
  if (busyAt === undefined || !Number.isFinite(busyAt) || (state.busyAt !== null && busyAt <= state.busyAt)) return state;
  return { ...state, busyAt };
}

/** Since when GPU work has been idle on the GPU tier; null when not on it. */
export function gpuIdleSince(state: GpuState, placement: GpuPlacement | null, config: GpuPolicyConfig): number | null {
  if (!onGpuTier(placement, config)) return null;
  return Math.max(placement!.since, state.lastUseAt ?? 0, state.busyAt ?? 0);
}

/** When the policy next has something to decide on its own (a move back), or null. */
export function nextDueAt(state: GpuState, placement: GpuPlacement | null, config: GpuPolicyConfig): number | null {
  const since = gpuIdleSince(state, placement, config);
  if (since === null) return null;
  const due = since + config.idleAfterMs;
  return state.returnAskedAt !== null ? Math.max(due, state.returnAskedAt + config.retryAfterMs) : due;
}

/** On a timer: move back to a CPU tier when GPU work has been idle long enough. */
export function onTimer(state: GpuState, placement: GpuPlacement | null, now: number, config: GpuPolicyConfig): { state: GpuState; action: GpuAction } {
  const due = nextDueAt(state, placement, config);
  if (due === null) return { state, action: { kind: 'none', reason: 'not on the GPU tier' } };
  if (now < due) return { state, action: { kind: 'none', reason: `GPU work idle since ${new Date(gpuIdleSince(state, placement, config)!).toISOString()}` } };
  return { state: { ...state, returnAskedAt: now }, action: { kind: 'return', reason: 'gpu-idle' } };
}

/** The host the runtime is on will be reclaimed: move away, whatever the tier. */
export function onSpotInterruption(state: GpuState, placement: GpuPlacement | null, hostId: string, now: number): { state: GpuState; action: GpuAction } {
  if (placement === null || placement.hostId !== hostId) return { state, action: { kind: 'none', reason: `the runtime is not on ${hostId}` } };
  return { state: { ...state, returnAskedAt: now }, action: { kind: 'return', reason: 'spot-interruption' } };
}

/** Back on a CPU tier: the next hop starts afresh (a new hint pre-provisions again). */
export function onLeftGpu(state: GpuState): GpuState {
  return { ...state, hintedAt: null, returnAskedAt: null };
}
