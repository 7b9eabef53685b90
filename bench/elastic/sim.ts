/**
 * The elastic cost simulation's engine: a discrete-event replay of a trace (trace.ts) on a virtual clock.
 *
 * Runs for real (the code markco runs, called with virtual time):
 * - the resource monitor's tracker (activities/monitor.ts `MonitorTracker`): samples in, the pressure,
 *   idle and wake signals the monitor would send out;
 * - the entity's memory policy (workflows/runtime-policy.ts `decide`, `onOperationStarted`,
 *   `onOperationFinished`, `onPlacementChanged`, `scaleDownDue`) and GPU policy (workflows/gpu-policy.ts);
 * - tier choices (lib/tiers.ts `nextTier`, `smallestTierFor`), the reaper's rule (activities/reap-decisions.ts
 *   `decideReap`) on the cloud's own instance list;
 * - every launch and terminate, through `SimCloud` (bench/elastic-cost.ts passes the real activities/ec2.ts
 *   activities against the EC2 emulator on the virtual clock).
 *
 * Modelled (model.ts): the durations of operations and boots. Mirrored from workflow code that cannot run
 * outside Temporal: the entity's queue and handlers (workflows/user-runtime.ts), the migration's target
 * choice (`resolveAutoTier` in activities/migration.ts, `acquireHost` in workflows/migrate.ts with
 * `claimReservation`), pre-provision (workflows/provision-host.ts), idle checkpoint and return
 * (workflows/snapshots.ts, `planReturn`). No operation fails.
 */
import { decideReap, type ReapRow } from '../../activities/reap-decisions.js';
import type { InstanceDescription } from '../../activities/ec2.js';
import { MonitorTracker, type Delivery, type MonitoredRuntime } from '../../activities/monitor.js';
import type { ContainerSample } from '../../activities/podman-commands.js';
import { nextTier, smallestTierFor, type Tier } from '../../lib/tiers.js';
import type { Plan } from '../../workflows/contracts/users.js';
import * as gpuPolicy from '../../workflows/gpu-policy.js';
import {
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
} from '../../workflows/runtime-policy.js';
import type { Durations } from './model.js';
import type { Trace, UserTrace } from './trace.js';

export interface LaunchRequest {
  hostId: string;
  userId: string;
  tier: string;
  instanceType: string;
  gpu: boolean;
}

/** The EC2 side: the bench passes the real activities against the emulator, the unit tests a fake. */
export interface SimCloud {
  launch(req: LaunchRequest, now: number): Promise<{ instanceId: string }>;
  terminate(instanceId: string, now: number): Promise<void>;
  listManaged(now: number): Promise<InstanceDescription[]>;
}

export interface SimOptions {
  trace: Trace;
  cloud: SimCloud;
  ladder: Record<Plan, Tier[]>;
  /** The GPU tier (MARKCO_GPU_INSTANCE_TYPE) and the plans that may hop; null: no GPU. */
  gpuTier: Tier | null;
  gpuPlans: Plan[];
  durations: Durations;
  deploymentId: string;
  idleAfterMs?: number;
  scaleDownAfterMs?: number;
  gpuIdleAfterMs?: number;
  reservationTtlMs?: number;
  reaperEveryMs?: number;
  reaperGraceSeconds?: number;
  /** The monitor's sampling interval (2 s in production). */
  tickMs?: number;
  /** Simulated time after the day ends, for the last idle checkpoints and reservations. */
  tailMs?: number;
  /**
   * What-if knobs of the model (the defaults are what the code does today): the headroom of a return's
   * tier (planReturn's `smallestTierFor(..., 0.25)`), of a migration's target (`resolveAutoTier`'s 1.0),
   * and whether the 50% band pre-provisions at all.
   */
  returnHeadroom?: number;
  migrateHeadroom?: number;
  preProvisionEnabled?: boolean;
  /** The idle checkpoint terminates the EC2 host once the archive is on the base server, before the S3 upload (today: after). */
  idleTerminateBeforeUpload?: boolean;
  /** Whether the monitor's busy CPU keeps GPU work from idling (gpu-policy.ts `onBusy`; true today). */
  gpuBusyCountsCpu?: boolean;
  /** Called every simulated hour (progress). */
  onHour?: (hour: number) => void;
}

type HostState = 'booting' | 'ready' | 'terminated';
export type HostPurpose = 'pre-provision' | 'migrate' | 'return';

export interface SimHost {
  id: string;
  instanceId: string;
  instanceType: string;
  tier: string;
  userId: string;
  gpu: boolean;
  purpose: HostPurpose;
  state: HostState;
  launchedAt: number;
  readyAt: number;
  reservedUntil: number | null;
  claimedBy: string | null;
  updatedAt: number;
  terminatedAt: number | null;
  terminatedBy: string | null;
  /** Until when something (a runtime, an operation, a reservation) held it: the end of its useful life. */
  lastHeldAt: number;
  /** Time it ran, seen at the monitor's ticks, with nothing holding it (an orphan). */
  orphanMs: number;
  /** A pre-provisioned host a migration or return claimed. */
  claimed: boolean;
}

type OpKind = 'login' | 'migrate' | 'gpu-hop' | 'idle';
interface QueuedOp {
  kind: OpKind;
  reason?: string;
  usedBytes?: number;
  target?: string;
  front?: boolean;
  requestedAt: number;
}

interface RunningOp extends QueuedOp {
  id: string;
  startedAt: number;
  sourceHostId: string | null;
  targetHostId: string | null;
}

interface PreProvision {
  workflowId: string;
  hostId: string | null;
}

export interface OpRecord {
  userId: string;
  kind: OpKind;
  reason: string | null;
  requestedAt: number;
  startedAt: number;
  endedAt: number;
  from: string | null;
  to: string | null;
  outcome: 'done' | 'conflict';
  launched: boolean;
  claimed: boolean;
  /** The user waited for it (a return at sign-in, a GPU hop holding a cell): from the request to its end. */
  waitMs: number | null;
}

export interface SimResult {
  hosts: SimHost[];
  ops: OpRecord[];
  reaperTerminated: { instanceId: string; at: number; reason: string }[];
  reaperRuns: number;
  /** Per user: how long the kernel wanted more memory than its limit gave (ms). */
  starvedMs: Record<string, number>;
  preProvisions: { userId: string; hostId: string; instanceType: string; outcome: 'claimed' | 'released' | 'conflict' }[];
  endedAt: number;
  signals: { pressure: number; idle: number; wake: number };
}

/** Everything one user's entity `runtime/<userId>` keeps (workflows/user-runtime.ts), plus the runtime row. */
interface Entity {
  user: UserTrace;
  runtimeId: string;
  policy: PolicyState;
  gpu: gpuPolicy.GpuState;
  gpuConfig: gpuPolicy.GpuPolicyConfig;
  queue: QueuedOp[];
  running: RunningOp | null;
  preProvisions: Map<string, PreProvision>;
  wakeAt: number | null;
  wakeGen: number;
  row: { state: 'none' | 'running' | 'checkpointed'; hostId: string | null; tier: string; limit: number; since: number; snapshotBytes: number; lastActivityAt: number | null };
  cpuUsec: number;
  cpuAt: number;
}

export async function simulate(o: SimOptions): Promise<SimResult> {
  const idleAfterMs = o.idleAfterMs ?? 900_000;
  const ttlMs = o.reservationTtlMs ?? 600_000;
  const tickMs = o.tickMs ?? 2000;
  const reaperEveryMs = o.reaperEveryMs ?? 300_000;
  const grace = o.reaperGraceSeconds ?? 900;
  const policyConfig: PolicyConfig = { ...defaultPolicyConfig, scaleDownAfterMs: o.scaleDownAfterMs ?? defaultPolicyConfig.scaleDownAfterMs };
  const gpuIdleAfterMs = o.gpuIdleAfterMs ?? 600_000;
  const d = o.durations;
  const { trace } = o;
  const dayEnd = trace.dayStart + trace.dayMs;
  const endAt = dayEnd + (o.tailMs ?? 2 * 3_600_000);
  const baseHostId = 'base';

  // --- the scheduler: events in time order; equal times keep their insertion order ---
  interface Ev {
    at: number;
    seq: number;
    run: () => Promise<void> | void;
  }
  const events: Ev[] = [];
  let seq = 0;
  let now = trace.dayStart;
  const schedule = (at: number, run: Ev['run']) => {
    const ev = { at: Math.max(at, now), seq: seq++, run };
    let lo = 0;
    let hi = events.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = events[mid]!;
      if (e.at < ev.at || (e.at === ev.at && e.seq < ev.seq)) lo = mid + 1;
      else hi = mid;
    }
    events.splice(lo, 0, ev);
  };

  // Work started by a handler (an EC2 call) finishes before the clock moves on: the real calls see the time they were made at.
  const pending: Promise<unknown>[] = [];
  const spawn = (p: Promise<unknown>) => {
    pending.push(p);
  };

  const hosts = new Map<string, SimHost>();
  const ops: OpRecord[] = [];
  const reaperTerminated: SimResult['reaperTerminated'] = [];
  const starvedMs: Record<string, number> = {};
  const preProvisions: SimResult['preProvisions'] = [];
  const signals = { pressure: 0, idle: 0, wake: 0 };
  let hostSeq = 0;
  let opSeq = 0;
  let reaperRuns = 0;

  const entities = new Map<string, Entity>();
  for (const user of trace.users) {
    const gpuTier = o.gpuTier && o.gpuPlans.includes(user.plan) ? o.gpuTier.name : null;
    entities.set(user.userId, {
      user,
      runtimeId: `rt-${user.userId}`,
      policy: initialPolicyState(null),
      gpu: gpuPolicy.initialGpuState,
      gpuConfig: { ...gpuPolicy.defaultGpuPolicyConfig, tier: gpuTier, idleAfterMs: gpuIdleAfterMs, hintCooldownMs: Math.max(gpuPolicy.defaultGpuPolicyConfig.retryAfterMs, gpuIdleAfterMs) },
      queue: [],
      running: null,
      preProvisions: new Map(),
      wakeAt: null,
      wakeGen: 0,
      row: { state: 'none', hostId: null, tier: 'base', limit: 0, since: 0, snapshotBytes: 0, lastActivityAt: null },
      cpuUsec: 0,
      cpuAt: trace.dayStart,
    });
  }

  const tiersOf = (plan: Plan) => o.ladder[plan];
  const tierByName = (e: Entity, name: string): Tier | undefined => tiersOf(e.user.plan).find((t) => t.name === name) ?? (o.gpuTier && o.gpuTier.name === name ? o.gpuTier : undefined);

  // --- hosts and the cloud ---
  async function launch(e: Entity, tier: Tier, purpose: HostPurpose, claimedBy: string | null, reservedUntil: number | null): Promise<SimHost> {
    const id = `ec2-${(++hostSeq).toString(16).padStart(12, '0')}`;
    const { instanceId } = await o.cloud.launch({ hostId: id, userId: e.user.userId, tier: tier.name, instanceType: tier.instanceType!, gpu: tier.gpu }, now);
    const h: SimHost = {
      id,
      instanceId,
      instanceType: tier.instanceType!,
      tier: tier.name,
      userId: e.user.userId,
      gpu: tier.gpu,
      purpose,
      state: 'booting',
      launchedAt: now,
      readyAt: now + d.bootMs(tier.instanceType!),
      reservedUntil,
      claimedBy,
      updatedAt: now,
      terminatedAt: null,
      terminatedBy: null,
      lastHeldAt: now,
      orphanMs: 0,
      claimed: false,
    };
    hosts.set(id, h);
    schedule(h.readyAt, () => {
      if (h.state === 'booting') {
        h.state = 'ready';
        h.updatedAt = now;
      }
    });
    return h;
  }

  async function terminate(h: SimHost, by: string): Promise<void> {
    if (h.state === 'terminated') return;
    await o.cloud.terminate(h.instanceId, now);
    h.state = 'terminated';
    h.terminatedAt = now;
    h.terminatedBy = by;
    h.updatedAt = now;
  }

  /** What keeps a host: the runtime on it, an operation using it, a live reservation (the reaper's keep reasons). */
  function holders(h: SimHost): string[] {
    const out: string[] = [];
    for (const e of entities.values()) {
      if (e.row.state === 'running' && e.row.hostId === h.id) out.push('live runtime');
      if (e.running && (e.running.sourceHostId === h.id || e.running.targetHostId === h.id)) out.push(`operation ${e.running.id}`);
      for (const p of e.preProvisions.values()) if (p.hostId === h.id) out.push(`pre-provision ${p.workflowId}`);
    }
    if (h.reservedUntil !== null && h.reservedUntil > now && h.claimedBy === null) out.push('reserved');
    // A claim keeps a host (lib/store.ts keepReasonsSql): the claiming operation is about to use it.
    if (h.claimedBy !== null) out.push(`claimed by ${h.claimedBy}`);
    return out;
  }

  // --- the entity (mirrors workflows/user-runtime.ts) ---
  function placementOf(e: Entity): Placement | null {
    return e.row.state === 'running' && e.row.hostId ? { runtimeId: e.runtimeId, hostId: e.row.hostId, tier: e.row.tier, memoryLimitBytes: e.row.limit, since: e.row.since } : null;
  }

  function request(e: Entity, op: Omit<QueuedOp, 'requestedAt'>): void {
    if (e.running?.kind === op.kind) return;
    if (e.queue.some((q) => q.kind === op.kind)) return;
    const entry = { ...op, requestedAt: now };
    if (op.front) e.queue.unshift(entry);
    else e.queue.push(entry);
    loop(e);
  }

  function act(e: Entity, action: PolicyAction): void {
    switch (action.kind) {
      case 'none':
        return;
      case 'pre-provision':
        if (o.preProvisionEnabled !== false) spawn(preProvision(e));
        return;
      case 'migrate':
        if (gpuPolicy.onGpuTier(e.policy.placement, e.gpuConfig)) return;
        request(e, { kind: 'migrate', target: 'auto', reason: action.reason, usedBytes: action.usedBytes, front: action.reason === 'critical' });
        return;
      case 'escalate':
        // A running migration pauses its source sooner; its duration is modelled the same either way.
        if (e.running?.kind !== 'migrate') request(e, { kind: 'migrate', target: 'auto', reason: 'critical', usedBytes: e.policy.latest?.usedBytes ?? 0, front: true });
        return;
    }
  }

  /** preProvisionHost under user/<uid>/pre-provision(-gpu): one at a time per id (startChild refuses a second). */
  async function preProvision(e: Entity, gpuTier?: string): Promise<void> {
    const workflowId = `user/${e.user.userId}/pre-provision${gpuTier ? '-gpu' : ''}`;
    if (e.preProvisions.has(workflowId)) return;
    // planPreProvision: the tier asked for, else the rung above the runtime's current one.
    const tier = gpuTier ? tierByName(e, gpuTier) : nextTier(o.ladder, e.user.plan, e.row.state === 'none' ? 'base' : e.row.tier);
    if (!tier || !tier.instanceType) {
      preProvisions.push({ userId: e.user.userId, hostId: '', instanceType: '', outcome: 'conflict' });
      return;
    }
    const p: PreProvision = { workflowId, hostId: null };
    e.preProvisions.set(workflowId, p);
    const bootAllowanceMs = 300_000;
    const h = await launch(e, tier, 'pre-provision', null, now + ttlMs + bootAllowanceMs);
    p.hostId = h.id;
    h.userId = e.user.userId;
    schedule(h.readyAt, () => {
      if (h.state === 'terminated') return;
      // The TTL counts from when the host is ready (renewReservation).
      if (h.claimedBy === null) h.reservedUntil = now + ttlMs;
      schedule(now + ttlMs, async () => {
        if (!e.preProvisions.has(workflowId) || e.preProvisions.get(workflowId) !== p) return;
        e.preProvisions.delete(workflowId);
        if (h.claimedBy === null && h.state !== 'terminated') {
          h.reservedUntil = null;
          await terminate(h, 'reservation expired');
          preProvisions.push({ userId: e.user.userId, hostId: h.id, instanceType: h.instanceType, outcome: 'released' });
        }
      });
    });
  }

  /** acquireHost (workflows/migrate.ts): the base server, a reserved host of the type (booting ones waited up to 2 min), else a launch. */
  async function acquireHost(e: Entity, tier: Tier, opId: string, purpose: HostPurpose): Promise<{ hostId: string; readyAt: number; launched: boolean; claimed: boolean }> {
    if (tier.instanceType === null) return { hostId: baseHostId, readyAt: now, launched: false, claimed: false };
    const candidate = [...hosts.values()].find(
      (h) => h.userId === e.user.userId && h.purpose === 'pre-provision' && h.instanceType === tier.instanceType && h.claimedBy === null && h.reservedUntil !== null && h.reservedUntil > now && h.state !== 'terminated',
    );
    if (candidate && candidate.readyAt - now <= 120_000) {
      candidate.claimedBy = opId;
      candidate.claimed = true;
      candidate.reservedUntil = null;
      candidate.updatedAt = now;
      // The reservation's wait ends ('claimed'): the pre-provision workflow completes.
      for (const [id, p] of e.preProvisions) {
        if (p.hostId === candidate.id) {
          e.preProvisions.delete(id);
          preProvisions.push({ userId: e.user.userId, hostId: candidate.id, instanceType: candidate.instanceType, outcome: 'claimed' });
        }
      }
      return { hostId: candidate.id, readyAt: Math.max(now, candidate.readyAt), launched: false, claimed: true };
    }
    const h = await launch(e, tier, purpose, opId, now + 3_600_000);
    return { hostId: h.id, readyAt: h.readyAt, launched: true, claimed: false };
  }

  /** resolveAutoTier (activities/migration.ts). */
  function resolveAutoTier(e: Entity, usedBytes: number, reason: string): Tier | string {
    const tiers = tiersOf(e.user.plan);
    const fits = smallestTierFor(o.ladder, e.user.plan, usedBytes, o.migrateHeadroom ?? 1.0);
    if (reason === 'gpu-idle' || reason === 'spot-interruption') return fits;
    if (e.gpuConfig.tier !== null && e.gpuConfig.tier === e.row.tier) return `on the GPU tier ${e.row.tier}`;
    const at = tiers.findIndex((t) => t.name === e.row.tier);
    if (reason === 'scale-down') {
      if (tiers.indexOf(fits) >= at) return `no smaller tier than ${e.row.tier} holds ${usedBytes} bytes`;
      return fits;
    }
    const up = nextTier(o.ladder, e.user.plan, e.row.tier);
    if (!up) return `top tier ${e.row.tier}`;
    return tiers.indexOf(fits) > tiers.indexOf(up) ? fits : up;
  }

  function usageOf(e: Entity, t: number): number {
    const demand = memoryAt(e, t);
    return e.row.state === 'running' ? Math.min(demand, e.row.limit) : demand;
  }

  function loop(e: Entity): void {
    if (e.running || e.queue.length === 0) {
      rearm(e);
      return;
    }
    const next = e.queue.shift()!;
    spawn(runOperation(e, next));
  }

  /** The entity's timer (the main loop's `condition(..., wakeAfter)`), restarted on every reading and after every operation. */
  function rearm(e: Entity): void {
    if (e.running) return;
    const gpuDue = gpuPolicy.nextDueAt(e.gpu, e.policy.placement, e.gpuConfig);
    const memoryWake = e.policy.lowSince !== null ? Math.max(1000, e.policy.lowSince + policyConfig.scaleDownAfterMs - now) : e.policy.actedAt !== null ? policyConfig.staleActedMs + 1000 : undefined;
    const gpuWake = gpuDue !== null ? Math.max(100, gpuDue - now) : undefined;
    const wakeAfter = memoryWake === undefined ? gpuWake : gpuWake === undefined ? memoryWake : Math.min(memoryWake, gpuWake);
    const gen = ++e.wakeGen;
    e.wakeAt = wakeAfter === undefined ? null : now + wakeAfter;
    if (e.wakeAt !== null) schedule(e.wakeAt, () => timer(e, gen));
  }

  function timer(e: Entity, gen: number): void {
    if (gen !== e.wakeGen || e.running || e.queue.length > 0) return;
    const gpuDue = gpuPolicy.nextDueAt(e.gpu, e.policy.placement, e.gpuConfig);
    if (gpuDue !== null && now >= gpuDue) {
      const decided = gpuPolicy.onTimer(e.gpu, e.policy.placement, now, e.gpuConfig);
      e.gpu = decided.state;
      if (decided.action.kind === 'return') {
        const latest = e.policy.latest && e.policy.placement && e.policy.latest.runtimeId === e.policy.placement.runtimeId ? e.policy.latest.usedBytes : undefined;
        request(e, { kind: 'migrate', target: 'auto', reason: 'gpu-idle', ...(latest !== undefined ? { usedBytes: latest } : {}) });
      }
      rearm(e);
      return;
    }
    if (e.policy.latest && (scaleDownDue(e.policy, now, policyConfig) || e.policy.actedAt !== null)) {
      const decided = decide(e.policy, e.policy.latest, now, policyConfig);
      e.policy = decided.state;
      act(e, decided.action);
    }
    rearm(e);
  }

  function onDelivery(del: Delivery): void {
    const e = entities.get(del.userId);
    if (!e) return;
    if (del.kind === 'pressure') {
      signals.pressure++;
      const ev = del.event;
      const at = typeof ev.at === 'number' ? ev.at : Date.parse(ev.at);
      if (e.policy.placement && ev.runtimeId === e.policy.placement.runtimeId && ev.hostId === e.policy.placement.hostId && o.gpuBusyCountsCpu !== false) e.gpu = gpuPolicy.onBusy(e.gpu, ev.busyAt);
      const decided = decide(e.policy, { runtimeId: ev.runtimeId, hostId: ev.hostId, usedBytes: ev.usedBytes, ...(ev.limitBytes !== undefined ? { limitBytes: ev.limitBytes } : {}), at, source: ev.source }, now, policyConfig);
      e.policy = decided.state;
      act(e, decided.action);
      rearm(e);
    } else if (del.kind === 'idle') {
      signals.idle++;
      if (!e.policy.placement || del.event.runtimeId !== e.policy.placement.runtimeId) return;
      if (e.running ? e.running.kind !== 'idle' : e.queue.length > 0) return;
      request(e, { kind: 'idle' });
    } else {
      signals.wake++;
      if (!e.policy.placement || del.event.runtimeId !== e.policy.placement.runtimeId) return;
      const at = e.queue.findIndex((q) => q.kind === 'idle');
      if (at >= 0) e.queue.splice(at, 1);
    }
  }

  async function runOperation(e: Entity, q: QueuedOp): Promise<void> {
    const id = `${q.kind}-${++opSeq}`;
    const r: RunningOp = { ...q, id, startedAt: now, sourceHostId: e.row.hostId, targetHostId: null };
    e.running = r;
    e.policy = onOperationStarted(e.policy);
    const record: OpRecord = { userId: e.user.userId, kind: q.kind, reason: q.reason ?? null, requestedAt: q.requestedAt, startedAt: now, endedAt: now, from: e.row.state === 'running' ? e.row.tier : null, to: null, outcome: 'done', launched: false, claimed: false, waitMs: null };
    const used = usageOf(e, now);
    const returning = e.row.state === 'checkpointed';
    let doneAt = now;
    let commit: (() => Promise<void>) | null = null;

    if (q.kind === 'login') {
      if (e.row.state === 'none') {
        const base = tiersOf(e.user.plan)[0]!;
        doneAt = now + d.loginMs;
        record.to = base.name;
        commit = async () => {
          e.row = { ...e.row, state: 'running', hostId: baseHostId, tier: base.name, limit: base.memoryBytes, since: now };
        };
      } else if (e.row.state === 'checkpointed') {
        // planReturn: sized from the archive with a quarter to spare.
        const tier = smallestTierFor(o.ladder, e.user.plan, e.row.snapshotBytes, o.returnHeadroom ?? 0.25);
        const got = await acquireHost(e, tier, id, 'return');
        r.targetHostId = got.hostId;
        record.launched = got.launched;
        record.claimed = got.claimed;
        doneAt = got.readyAt + d.returnMs(e.row.snapshotBytes, tier.instanceType !== null);
        record.to = tier.name;
        commit = async () => {
          e.row = { ...e.row, state: 'running', hostId: got.hostId, tier: tier.name, limit: tier.memoryBytes, since: now };
          const h = hosts.get(got.hostId);
          if (h) {
            h.claimedBy = null;
            h.reservedUntil = null;
          }
        };
      } else {
        doneAt = now + d.loginRunningMs;
        record.to = e.row.tier;
        commit = async () => {
          e.row = { ...e.row, since: now };
        };
      }
    } else if (q.kind === 'migrate' || q.kind === 'gpu-hop') {
      const usedBytes = q.usedBytes ?? e.row.limit;
      const resolved: Tier | string = q.target && q.target !== 'auto' ? (tierByName(e, q.target) ?? `unknown tier ${q.target}`) : resolveAutoTier(e, usedBytes, q.reason ?? 'pressure');
      const conflict = typeof resolved === 'string' ? resolved : resolved.name === e.row.tier && q.reason !== 'spot-interruption' ? `already on ${resolved.name}` : null;
      if (conflict !== null || typeof resolved === 'string' || e.row.state !== 'running') {
        record.outcome = 'conflict';
        doneAt = now + 200;
      } else {
        const to = resolved;
        const got = await acquireHost(e, to, id, 'migrate');
        r.targetHostId = got.hostId;
        record.launched = got.launched;
        record.claimed = got.claimed;
        record.to = to.name;
        doneAt = got.readyAt + d.migrateMs(used, e.row.hostId !== baseHostId, to.instanceType !== null);
        commit = async () => {
          const source = e.row.hostId;
          e.row = { ...e.row, state: 'running', hostId: got.hostId, tier: to.name, limit: to.memoryBytes, since: now };
          const h = hosts.get(got.hostId);
          if (h) {
            h.claimedBy = null;
            h.reservedUntil = null;
          }
          if (source && source !== baseHostId) {
            const src = hosts.get(source);
            // Cleanup: the source runtime removed, then its EC2 host terminated; the migration holds it until then.
            if (src) {
              cleanupHolds.set(id, source);
              schedule(now + d.cleanupMs, async () => {
                await terminate(src, `migration ${id}`);
                cleanupHolds.delete(id);
              });
            }
          }
        };
      }
    } else {
      // idle checkpoint
      const onEc2 = e.row.hostId !== baseHostId;
      doneAt = now + d.idleMs(used, onEc2);
      if (onEc2 && o.idleTerminateBeforeUpload) {
        const hostId = e.row.hostId;
        schedule(now + d.idleOffHostMs(used, onEc2), async () => {
          const h = hostId ? hosts.get(hostId) : undefined;
          if (h && e.running?.id === id) {
            r.sourceHostId = null;
            e.row = { ...e.row, hostId: null };
            await terminate(h, `idle ${id} (archive on the base server)`);
          }
        });
      }
      commit = async () => {
        const hostId = e.row.hostId;
        e.row = { ...e.row, state: 'checkpointed', hostId: null, snapshotBytes: usageOf(e, now) };
        if (hostId && hostId !== baseHostId) {
          const h = hosts.get(hostId);
          if (h) await terminate(h, `idle ${id}`);
        }
      };
    }

    schedule(doneAt, async () => {
      if (commit) await commit();
      const changed = commit !== null && record.outcome === 'done';
      const wasOnGpu = gpuPolicy.onGpuTier(e.policy.placement, e.gpuConfig);
      e.policy = onOperationFinished(e.policy, changed);
      if (changed) e.policy = onPlacementChanged(e.policy, placementOf(e));
      if (wasOnGpu && !gpuPolicy.onGpuTier(e.policy.placement, e.gpuConfig)) e.gpu = gpuPolicy.onLeftGpu(e.gpu);
      record.endedAt = now;
      // What the user waited for: a return at sign-in, a GPU cell held for the hop.
      if (q.kind === 'gpu-hop' || (q.kind === 'login' && record.from === null && record.to !== null && returning)) record.waitMs = now - q.requestedAt;
      ops.push(record);
      e.running = null;
      loop(e);
    });
  }
  const cleanupHolds = new Map<string, string>();

  // --- trace events: visits (logins), GPU code ---
  for (const e of entities.values()) {
    for (const s of e.user.sessions) {
      schedule(s.signIn, () => request(e, { kind: 'login' }));
      for (const c of s.cells) {
        if (c.gpu === 'hint') {
          schedule(c.at, () => {
            const decided = gpuPolicy.onHint(e.gpu, e.policy.placement, now, e.gpuConfig);
            e.gpu = decided.state;
            if (decided.action.kind === 'pre-provision') spawn(preProvision(e, decided.action.tier));
          });
        } else if (c.gpu === 'use') {
          schedule(c.at, () => {
            const decided = gpuPolicy.onUse(e.gpu, e.policy.placement, now, e.gpuConfig);
            e.gpu = decided.state;
            if (decided.action.kind === 'hop') request(e, { kind: 'gpu-hop', target: decided.action.tier, reason: 'gpu' });
            rearm(e);
          });
        }
      }
    }
  }

  // --- the monitor: one tracker per watched host, a sample every tickMs ---
  const trackers = new Map<string, MonitorTracker>();
  // Cursors over each user's trace (time only moves forward): memory steps, CPU-busy cells, presence.
  interface Cursors {
    mem: { at: number; bytes: number }[];
    memAt: number;
    cells: { at: number; end: number }[];
    cellAt: number;
    presence: { from: number; to: number }[];
    presenceAt: number;
  }
  const cursors = new Map<string, Cursors>();
  for (const e of entities.values()) {
    const mem: { at: number; bytes: number }[] = [{ at: -Infinity, bytes: e.user.baseMemory }];
    for (const s of e.user.sessions) {
      mem.push({ at: s.signIn, bytes: s.startMemory });
      for (const c of s.cells) mem.push({ at: c.at, bytes: c.memAfter });
    }
    cursors.set(e.user.userId, {
      mem,
      memAt: 0,
      cells: e.user.sessions.flatMap((s) => s.cells.map((c) => ({ at: c.at, end: c.at + c.busyMs }))),
      cellAt: 0,
      presence: e.user.sessions.flatMap((s) => s.presence),
      presenceAt: 0,
    });
  }
  /** The kernel's memory demand now (the trace's step function). */
  function memoryAt(e: Entity, t: number): number {
    const c = cursors.get(e.user.userId)!;
    while (c.memAt + 1 < c.mem.length && c.mem[c.memAt + 1]!.at <= t) c.memAt++;
    return c.mem[c.memAt]!.bytes;
  }
  const lastActivity = (e: Entity, t: number): number | null => {
    const c = cursors.get(e.user.userId)!;
    while (c.presenceAt + 1 < c.presence.length && c.presence[c.presenceAt + 1]!.from <= t) c.presenceAt++;
    const p = c.presence[c.presenceAt];
    if (!p || p.from > t) return null;
    return Math.min(p.to, t);
  };
  const busyOverlap = (e: Entity, from: number, to: number): number => {
    const c = cursors.get(e.user.userId)!;
    while (c.cellAt < c.cells.length && c.cells[c.cellAt]!.end <= from) c.cellAt++;
    let ms = 0;
    for (let i = c.cellAt; i < c.cells.length && c.cells[i]!.at < to; i++) {
      const a = Math.max(from, c.cells[i]!.at);
      const b = Math.min(to, c.cells[i]!.end);
      if (b > a) ms += b - a;
    }
    return ms;
  };

  async function monitorTick(): Promise<void> {
    const byHost = new Map<string, { samples: ContainerSample[]; runtimes: Map<string, MonitoredRuntime> }>();
    for (const e of entities.values()) {
      // CPU time accrues whether or not the runtime is sampled now (a paused or moving one is not).
      const busy = busyOverlap(e, e.cpuAt, now);
      e.cpuUsec += busy * 1000 + (now - e.cpuAt) * 1; // 0.1% of a core in the background
      e.cpuAt = now;
      if (e.row.state !== 'running' || !e.row.hostId) continue;
      const demand = memoryAt(e, now);
      if (demand > e.row.limit) starvedMs[e.user.userId] = (starvedMs[e.user.userId] ?? 0) + tickMs;
      const h = e.row.hostId === baseHostId ? null : hosts.get(e.row.hostId);
      if (h && h.state !== 'ready') continue;
      const name = `rt-${e.user.userId}`;
      const entry = byHost.get(e.row.hostId) ?? { samples: [] as ContainerSample[], runtimes: new Map<string, MonitoredRuntime>() };
      byHost.set(e.row.hostId, entry);
      entry.samples.push({ name, memoryBytes: Math.min(demand, e.row.limit), limitBytes: e.row.limit, cpuUsageUsec: e.cpuUsec });
      entry.runtimes.set(name, { runtimeId: e.runtimeId, userId: e.user.userId, containerName: name, memoryLimitBytes: e.row.limit, lastActivityAt: lastActivity(e, now), since: e.row.since });
    }
    for (const [hostId, { samples, runtimes }] of byHost) {
      let tracker = trackers.get(hostId);
      if (!tracker) trackers.set(hostId, (tracker = new MonitorTracker({ hostId, idleAfterMs })));
      for (const del of tracker.tick(now, samples, runtimes)) onDelivery(del);
    }
    for (const hostId of trackers.keys()) if (hostId !== baseHostId && hosts.get(hostId)?.state === 'terminated') trackers.delete(hostId);
    // Hold bookkeeping: when did each live host last have a reason to exist.
    for (const h of hosts.values()) {
      if (h.state === 'terminated') continue;
      if (holders(h).length > 0 || [...cleanupHolds.values()].includes(h.id)) h.lastHeldAt = now;
      else {
        h.orphanMs += tickMs;
      }
    }
  }

  async function reaper(): Promise<void> {
    reaperRuns++;
    const instances = await o.cloud.listManaged(now);
    const rows: ReapRow[] = [...hosts.values()].map((h) => {
      const reasons = holders(h);
      if ([...cleanupHolds.values()].includes(h.id)) reasons.push('cleanup');
      if (now - h.updatedAt < grace * 1000) reasons.push('updated within the grace period');
      return { host: { id: h.id, instanceId: h.instanceId, state: h.state === 'terminated' ? 'terminated' : h.state === 'booting' ? 'provisioning' : 'ready' }, live: h.state !== 'terminated', keepReasons: reasons };
    });
    const { decisions } = decideReap({ instances, rows, deploymentId: o.deploymentId, graceSeconds: grace, now: new Date(now) });
    for (const dcs of decisions.filter((x) => x.action === 'terminate')) {
      const h = dcs.hostId ? hosts.get(dcs.hostId) : [...hosts.values()].find((x) => x.instanceId === dcs.instanceId);
      if (h) await terminate(h, `reaper: ${dcs.reason}`);
      else await o.cloud.terminate(dcs.instanceId, now);
      reaperTerminated.push({ instanceId: dcs.instanceId, at: now, reason: dcs.reason });
    }
  }

  for (let t = trace.dayStart; t <= endAt; t += tickMs) schedule(t, monitorTick);
  for (let t = trace.dayStart + 60_000; t <= endAt; t += reaperEveryMs) schedule(t, reaper);
  let hour = -1;
  while (events.length > 0) {
    const ev = events.shift()!;
    now = ev.at;
    const h = Math.floor((now - trace.dayStart) / 3_600_000);
    if (h !== hour) {
      hour = h;
      o.onHour?.(h);
    }
    await ev.run();
    while (pending.length > 0) await pending.shift();
  }
  return { hosts: [...hosts.values()], ops, reaperTerminated, reaperRuns, starvedMs, preProvisions, endedAt: now, signals };
}
