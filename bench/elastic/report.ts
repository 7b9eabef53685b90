/**
 * The elastic cost simulation's measures, from instance records (the emulator's launch and termination
 * times, or the fake cloud's): instance-hours and cost per type, idle-to-$0 per idle spell, percentiles.
 * Pure, so the unit tests check them on hand-made records.
 */
import { billedUsd } from './oracle.js';
import { idleStartOf, type Trace } from './trace.js';

export interface InstanceRecord {
  instanceId: string;
  instanceType: string;
  userId: string | null;
  hostId: string | null;
  launchedAt: number;
  /** null: still running when the records were read. */
  terminatedAt: number | null;
}

export interface InstanceUsage {
  byType: Record<string, { instances: number; ms: number; usd: number }>;
  totalMs: number;
  usd: number;
}

/** Instance-milliseconds and billed USD per instance type; a running instance counts until `until`. */
export function instanceUsage(records: InstanceRecord[], until: number): InstanceUsage {
  const byType: InstanceUsage['byType'] = {};
  for (const r of records) {
    const ms = Math.max(0, (r.terminatedAt ?? until) - r.launchedAt);
    const t = (byType[r.instanceType] ??= { instances: 0, ms: 0, usd: 0 });
    t.instances++;
    t.ms += ms;
    t.usd += billedUsd(r.instanceType, ms);
  }
  const totalMs = Object.values(byType).reduce((a, t) => a + t.ms, 0);
  const usd = Object.values(byType).reduce((a, t) => a + t.usd, 0);
  return { byType, totalMs, usd };
}

export interface IdleSpell {
  userId: string;
  /** The runtime's last activity (the user's last traffic or the end of the last cell). */
  idleStart: number;
  /** The next visit (or the end of the records). */
  nextSignIn: number;
  /** When the user's last instance alive in the spell was terminated; null when one still ran at the next visit. */
  zeroAt: number | null;
  /** zeroAt - idleStart, or (nextSignIn - idleStart) when $0 was never reached. */
  ms: number;
}

/**
 * Every idle spell of the trace in which the user had an EC2 instance alive (spells spent wholly on the
 * base server cost nothing and are only counted): the time from the spell's start until the user's last
 * instance alive in it was terminated.
 */
export function idleToZero(trace: Trace, records: InstanceRecord[], until: number): { spells: IdleSpell[]; baseOnly: number } {
  const spells: IdleSpell[] = [];
  let baseOnly = 0;
  for (const u of trace.users) {
    const mine = records.filter((r) => r.userId === u.userId);
    u.sessions.forEach((s, k) => {
      const idleStart = idleStartOf(s);
      const nextSignIn = u.sessions[k + 1]?.signIn ?? until;
      // EC2 (and moto) record times to the second: an instance the next visit launched shows up to 1 s before the visit.
      const alive = mine.filter((r) => r.launchedAt < nextSignIn - 1000 && (r.terminatedAt ?? Infinity) > idleStart);
      if (alive.length === 0) {
        baseOnly++;
        return;
      }
      const stillRunning = alive.some((r) => r.terminatedAt === null || r.terminatedAt > nextSignIn);
      const zeroAt = stillRunning ? null : Math.max(...alive.map((r) => r.terminatedAt!));
      spells.push({ userId: u.userId, idleStart, nextSignIn, zeroAt, ms: (zeroAt ?? nextSignIn) - idleStart });
    });
  }
  return { spells, baseOnly };
}

/** The nearest-rank percentile (p in 0..100) of `xs`; NaN for none. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

/** "User initiated (2026-12-07 09:30:05 UTC)": the time EC2 (and moto) records for a termination. */
export function terminationTimeOf(stateTransitionReason: string | undefined): number | null {
  const m = /\((\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) (?:UTC|GMT)\)/.exec(stateTransitionReason ?? '');
  return m ? Date.parse(`${m[1]}T${m[2]}Z`) : null;
}
