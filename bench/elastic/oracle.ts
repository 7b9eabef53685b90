/**
 * Prices and the oracle of the elastic cost simulation (bench/elastic-cost.ts).
 *
 * The oracle knows the whole trace. For every user it pays only while the user needs a runtime (from a
 * session's sign-in until its last activity: the user's last traffic or the end of the last cell, whichever
 * is later) and only for EC2: at every moment the cheapest tier of the user's plan whose runtime limit
 * holds the memory in use below the migrate band (75%: the level at which markco's own policy says the
 * runtime no longer fits), or the GPU tier from the first GPU cell to the end of the last one. It
 * changes tier instantly, checkpoints the moment a session ends and restores the moment the next begins.
 *
 * Variants (all reported):
 * - `strict`: the above; boot, checkpoint and transfer times are free. This is the oracle of the goal.
 * - `boot`: each EC2 stint (a run of one instance type) also pays that type's boot time before it starts
 *   (the oracle launches ahead, so nobody waits, but the instance bills while it boots).
 * - `online`: `boot`, plus the idle timeout after each session that ends on EC2: what any policy that
 *   learns of idleness only by waiting the idle timeout must pay (the timeout is a product setting, not
 *   policy waste).
 */
import type { Tier } from '../../lib/tiers.js';
import type { Plan } from '../../workflows/contracts/users.js';
import { idleStartOf, type Trace, type UserTrace } from './trace.js';

/**
 * On-demand, Linux, us-east-1, USD per hour. t3: AWS's list prices (unchanged since the family's launch;
 * t3.large $0.0832/h as quoted in 2026 by go-cloud.io's EC2 pricing guide); g5.xlarge $1.006/h (factualminds.com,
 * "EC2 On-Demand Pricing ... (2026)", dated 2026-06-17). Not re-read from aws.amazon.com/ec2/pricing on this machine.
 * EC2 bills Linux on-demand per second with a 60 s minimum per instance.
 */
export const onDemandUsdPerHour: Readonly<Record<string, number>> = Object.freeze({
  't3.small': 0.0208,
  't3.medium': 0.0416,
  't3.large': 0.0832,
  't3.xlarge': 0.1664,
  't3.2xlarge': 0.3328,
  'g5.xlarge': 1.006,
});
export const pricesSourceDate = '2026-06-17';
export const minimumBilledMs = 60_000;

export function priceOf(instanceType: string): number {
  const p = onDemandUsdPerHour[instanceType];
  if (p === undefined) throw new Error(`no on-demand price for ${instanceType}`);
  return p;
}

/** USD for one instance that ran `ms` (per-second billing, 60 s minimum). */
export function billedUsd(instanceType: string, ms: number): number {
  const billed = Math.max(minimumBilledMs, Math.ceil(ms / 1000) * 1000);
  return (priceOf(instanceType) * billed) / 3_600_000;
}

export interface OracleOptions {
  ladder: Record<Plan, Tier[]>;
  /** The GPU tier's instance type for plans that may hop (null: no GPU). */
  gpuInstanceType: string | null;
  gpuPlans: Plan[];
  /** The memory in use must stay below this percentage of a tier's limit for the tier to fit (default 75). */
  fitPercent?: number;
  /** Boot time per instance type family (ms), for the `boot` and `online` variants. */
  bootMs: (instanceType: string) => number;
  idleAfterMs: number;
}

export interface OracleStint {
  userId: string;
  instanceType: string;
  from: number;
  to: number;
}

export interface OracleResult {
  stints: OracleStint[];
  /** Instance-milliseconds per instance type, and the total, for each variant. */
  strict: Usage;
  boot: Usage;
  online: Usage;
}

export interface Usage {
  byType: Record<string, number>;
  totalMs: number;
  usd: number;
}

/** The cheapest tier of `tiers` (sorted by memory, so by price) holding `bytes` below `fitPercent` of its limit; the top one otherwise. */
export function cheapestFit(tiers: Tier[], bytes: number, fitPercent: number): Tier {
  return tiers.find((t) => bytes * 100 < fitPercent * t.memoryBytes) ?? tiers[tiers.length - 1]!;
}

/** The EC2 stints one user needs, by the oracle's rule. */
export function userStints(user: UserTrace, o: OracleOptions): OracleStint[] {
  const fit = o.fitPercent ?? 75;
  const tiers = o.ladder[user.plan];
  const gpuAllowed = o.gpuInstanceType !== null && o.gpuPlans.includes(user.plan);
  const stints: OracleStint[] = [];
  const push = (instanceType: string | null, from: number, to: number) => {
    if (instanceType === null || to <= from) return;
    const last = stints[stints.length - 1];
    if (last && last.instanceType === instanceType && last.to === from) last.to = to;
    else stints.push({ userId: user.userId, instanceType, from, to });
  };
  for (const s of user.sessions) {
    const end = idleStartOf(s);
    const gpuUses = gpuAllowed ? s.cells.filter((c) => c.gpu === 'use') : [];
    const gpuFrom = gpuUses.length > 0 ? gpuUses[0]!.at : Infinity;
    const gpuTo = gpuUses.length > 0 ? Math.max(...gpuUses.map((c) => c.at + c.busyMs)) : -Infinity;
    // Breakpoints: sign-in, every cell, the GPU window's edges, the end.
    const points = [...new Set([s.signIn, ...s.cells.map((c) => c.at), ...(gpuUses.length > 0 ? [gpuFrom, gpuTo] : []), end])].filter((p) => p >= s.signIn && p <= end).sort((a, b) => a - b);
    for (let k = 0; k + 1 < points.length; k++) {
      const from = points[k]!;
      const to = points[k + 1]!;
      if (from >= gpuFrom && to <= gpuTo) {
        push(o.gpuInstanceType, from, to);
        continue;
      }
      let mem = s.startMemory;
      for (const c of s.cells) if (c.at <= from) mem = c.memAfter;
      push(cheapestFit(tiers, mem, fit).instanceType, from, to);
    }
  }
  return stints;
}

function usageOf(parts: { instanceType: string; ms: number }[]): Usage {
  const byType: Record<string, number> = {};
  let usd = 0;
  for (const p of parts) {
    byType[p.instanceType] = (byType[p.instanceType] ?? 0) + p.ms;
    usd += (priceOf(p.instanceType) * p.ms) / 3_600_000;
  }
  return { byType, totalMs: Object.values(byType).reduce((a, b) => a + b, 0), usd };
}

export function oracle(trace: Trace, o: OracleOptions): OracleResult {
  const stints = trace.users.flatMap((u) => userStints(u, o));
  const strict = usageOf(stints.map((s) => ({ instanceType: s.instanceType, ms: s.to - s.from })));
  const boot = usageOf(stints.map((s) => ({ instanceType: s.instanceType, ms: s.to - s.from + o.bootMs(s.instanceType) })));
  // A session ending on EC2: its last stint ends at the session's end.
  const sessionEnds = new Set(trace.users.flatMap((u) => u.sessions.map((s) => `${u.userId}@${idleStartOf(s)}`)));
  const online = usageOf(
    stints.map((s) => ({ instanceType: s.instanceType, ms: s.to - s.from + o.bootMs(s.instanceType) + (sessionEnds.has(`${s.userId}@${s.to}`) ? o.idleAfterMs : 0) })),
  );
  return { stints, strict, boot, online };
}
