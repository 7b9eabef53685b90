/**
 * A seeded, reproducible day of activity for the elastic cost simulation (bench/elastic-cost.ts): who signs
 * in when, how long they stay, what their cells do to memory and CPU, when they go away and come back, and
 * one user's GPU session. Pure: the same seed gives the same trace, byte for byte.
 *
 * Shape of a day (all times UTC, the day starts at `dayStart`):
 * - sign-ins come in working-hour bursts: a morning wave around 08:00-10:00, a wave after lunch around
 *   13:00-14:30, and a few evening users;
 * - each user has 2-4 sessions; between two sessions an idle spell of 20 min to 3 h (always longer than the
 *   idle timeout, so every spell ends in an idle checkpoint); inside a session, pauses shorter than 8 min
 *   (never idle) and cells every 1-6 min, each busy on the CPU for 5 s to 2 min;
 * - memory is the user's kernel: it grows cell by cell toward the session's peak (most users stay small,
 *   some cross the base tier and need a t3.small/medium/large, a few need more), sometimes drops (del,
 *   a restarted kernel), and is kept across idle spells (the checkpoint holds it);
 * - one user imports torch (gpu-hint), runs GPU cells a few minutes later (gpu-use), then works on the CPU
 *   and goes away (the GPU work idles out).
 */
import type { Plan } from '../../workflows/contracts/users.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
const MIN = 60_000;
const HOUR = 60 * MIN;

/** Mulberry32: a small, fast, seedable PRNG (deterministic across platforms). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Profile = 'light' | 'medium' | 'heavy';

/** A cell: CPU busy from `at` for `busyMs`; the kernel's memory becomes `memAfter` at `at` (the allocation comes first). */
export interface Cell {
  at: number;
  busyMs: number;
  memAfter: number;
  /** GPU code: `hint` imports a GPU library (gpu-hint), `use` puts work on the GPU (gpu-use, held at the edge). */
  gpu?: 'hint' | 'use';
}

/** A stretch of time the user is at the editor: their traffic keeps the runtime active. */
export interface Presence {
  from: number;
  to: number;
}

export interface Session {
  /** The visit that signs in (a login, or a return from an idle checkpoint). */
  signIn: number;
  /** The kernel's memory when the session starts (the checkpointed memory, or a restarted kernel's baseline). */
  startMemory: number;
  /** The user's last traffic of this session; after it the runtime is idle once its last cell is done. */
  leave: number;
  presence: Presence[];
  cells: Cell[];
}

export interface UserTrace {
  userId: string;
  plan: Plan;
  profile: Profile;
  /** The kernel's memory right after a fresh start. */
  baseMemory: number;
  sessions: Session[];
  gpu: boolean;
}

export interface Trace {
  seed: number;
  dayStart: number;
  dayMs: number;
  users: UserTrace[];
}

export interface TraceOptions {
  seed: number;
  users?: number;
  dayStart?: number;
  /** The idle timeout the spells between sessions must exceed (default 15 min, MARKCO_IDLE_AFTER_S). */
  idleAfterMs?: number;
}

/** 2026-12-07, a Monday, 00:00 UTC. */
export const defaultDayStart = Date.UTC(2026, 11, 7);

/** A deterministic lowercase UUID for user `i` (the entity and EC2 tags expect one). */
export function userIdOf(i: number): string {
  const hex = (i + 1).toString(16).padStart(12, '0');
  return `00000000-0000-4000-8000-${hex}`;
}

export function generateTrace(opts: TraceOptions): Trace {
  const rand = prng(opts.seed);
  const users = opts.users ?? 50;
  const dayStart = opts.dayStart ?? defaultDayStart;
  const dayMs = 24 * HOUR;
  const idleAfterMs = opts.idleAfterMs ?? 15 * MIN;
  const between = (lo: number, hi: number) => lo + rand() * (hi - lo);
  const out: UserTrace[] = [];
  // The GPU user: a pro user of medium profile, chosen by position so the seed does not move it away.
  const gpuIndex = 3;
  for (let i = 0; i < users; i++) {
    const planRoll = rand();
    const plan: Plan = i === gpuIndex ? 'pro' : planRoll < 0.2 ? 'free' : planRoll < 0.8 ? 'pro' : 'team';
    const profRoll = rand();
    const profile: Profile = i === gpuIndex ? 'medium' : profRoll < 0.55 ? 'light' : profRoll < 0.85 ? 'medium' : 'heavy';
    // Peaks per session; a free plan's ladder ends at t3.large (7.5 GiB), so its heavy users stay below it.
    const peakFor = (): number => {
      if (profile === 'light') return between(100, 340) * MiB;
      if (profile === 'medium') return between(0.6, 2.6) * GiB;
      return between(3, plan === 'free' ? 5 : 10) * GiB;
    };
    const baseMemory = between(70, 110) * MiB;
    const wave = rand();
    // Start of the day: morning wave (70%), after lunch (20%), evening (10%).
    let t = dayStart + (wave < 0.7 ? between(7.5, 10) * HOUR : wave < 0.9 ? between(12.75, 14.5) * HOUR : between(17, 20) * HOUR);
    const sessionCount = 2 + Math.floor(rand() * 3);
    const sessions: Session[] = [];
    let mem = baseMemory;
    const gpu = i === gpuIndex;
    for (let s = 0; s < sessionCount; s++) {
      const signIn = Math.round(t);
      const length = between(30, 180) * MIN;
      const end = signIn + length;
      if (end > dayStart + dayMs - 30 * MIN) break;
      // A restarted kernel at the start of a session (30%): memory back to the baseline.
      if (s > 0 && rand() < 0.3) mem = baseMemory;
      const startMemory = mem;
      const peak = Math.max(mem, peakFor());
      const cells: Cell[] = [];
      const presence: Presence[] = [];
      let at = signIn + between(5, 60) * 1000;
      let presentFrom = signIn;
      let gpuPhase = gpu && s === 0 ? 0 : -1;
      while (at < end - 2 * MIN) {
        const busyMs = Math.round(between(5, 120) * 1000);
        // Grow toward the peak in steps of 3-20% of it; sometimes (10%) a del frees a good part.
        if (rand() < 0.1 && mem > baseMemory * 2) mem = Math.max(baseMemory, mem * between(0.3, 0.7));
        else mem = Math.min(peak, mem + peak * between(0.03, 0.2));
        const cell: Cell = { at: Math.round(at), busyMs, memAfter: Math.round(mem) };
        if (gpuPhase >= 0 && at - signIn > 20 * MIN && gpuPhase < 4) {
          // import torch, then three GPU cells of 2-5 min, a few minutes apart.
          cell.gpu = gpuPhase === 0 ? 'hint' : 'use';
          if (cell.gpu === 'use') cell.busyMs = Math.round(between(120, 300) * 1000);
          gpuPhase++;
        }
        cells.push(cell);
        let next = at + busyMs + between(1, 6) * MIN;
        // A pause at the desk (coffee, a call): shorter than the idle timeout by a wide margin.
        if (rand() < 0.15) {
          const pause = between(2, 8) * MIN;
          presence.push({ from: Math.round(presentFrom), to: Math.round(at + busyMs) });
          presentFrom = at + busyMs + pause;
          next = presentFrom + between(0.5, 2) * MIN;
        }
        at = next;
      }
      const lastBusyEnd = cells.reduce((m, c) => Math.max(m, c.at + c.busyMs), signIn);
      const leave = Math.round(Math.max(lastBusyEnd, Math.min(end, at)));
      presence.push({ from: Math.round(Math.min(presentFrom, leave)), to: leave });
      sessions.push({ signIn, startMemory: Math.round(startMemory), leave, presence, cells });
      // The idle spell: 20 min to 3 h, always beyond the idle timeout.
      t = leave + Math.max(idleAfterMs + 5 * MIN, between(20, 180) * MIN);
    }
    out.push({ userId: userIdOf(i), plan, profile, baseMemory: Math.round(baseMemory), sessions, gpu });
  }
  return { seed: opts.seed, dayStart, dayMs, users: out };
}

/** The kernel's memory demand at `t` (bytes): the baseline before the first session. Sessions and cells are sorted by time. */
export function memoryAt(user: UserTrace, t: number): number {
  let mem = user.baseMemory;
  for (const s of user.sessions) {
    if (s.signIn > t) return mem;
    mem = s.startMemory;
    for (const c of s.cells) {
      if (c.at > t) return mem;
      mem = c.memAfter;
    }
  }
  return mem;
}

/** The end of the runtime's last activity in a session: the later of the user's last traffic and the last cell's end. */
export function idleStartOf(session: Session): number {
  return Math.max(session.leave, ...session.cells.map((c) => c.at + c.busyMs));
}

/** Summary figures of a trace (for the report and the tests). */
export function traceSummary(trace: Trace): { users: number; sessions: number; idleSpells: number; cells: number; gpuCells: number; peakGiB: number } {
  let sessions = 0;
  let cells = 0;
  let gpuCells = 0;
  let peak = 0;
  let idleSpells = 0;
  for (const u of trace.users) {
    sessions += u.sessions.length;
    idleSpells += u.sessions.length;
    for (const s of u.sessions) for (const c of s.cells) {
      cells++;
      if (c.gpu) gpuCells++;
      peak = Math.max(peak, c.memAfter);
    }
  }
  return { users: trace.users.length, sessions, idleSpells, cells, gpuCells, peakGiB: peak / GiB };
}
