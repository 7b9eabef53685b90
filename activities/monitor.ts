/**
 * The resource monitor's activities. One long-running sampler per host (hostSamplerArgs) prints every
 * runtime container's memory, limit and CPU time every interval; this side turns samples into the few
 * events the user's entity needs: a memory reading when its band changes (and a keep-alive reading each
 * minute, which the scale-down timer lives on), and `idle` once per idle period. The entity's policy
 * owns the thresholds and the once-per-crossing rule; the monitor only keeps the signal rate low.
 */
import { ApplicationFailure } from '@temporalio/common';
import { activitySignal, currentActivity } from './context.js';
import { HostAbortError } from './host-shell.js';
import { shellForHost } from './hosts.js';
import type { ActivityDeps } from './index.js';
import { hostSamplerArgs, parseSamplerLine, type ContainerSample } from './podman-commands.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import type { PressureSignal, WakeEvent } from '../workflows/contracts/runtime-entity.js';

export interface IdleSignal {
  runtimeId: string;
  hostId: string;
  /** Since when neither the runtime's CPU (above 1%) nor the user's traffic was seen (epoch ms). */
  idleSince: number;
  at: number;
  source: string;
}

/** How the monitor reaches users' entities (the worker's Temporal client). */
export interface EntitySignals {
  pressure(userId: string, event: PressureSignal): Promise<boolean>;
  idle(userId: string, event: IdleSignal): Promise<boolean>;
  wake(userId: string, event: WakeEvent): Promise<boolean>;
}

export interface MonitoredRuntime {
  runtimeId: string;
  userId: string;
  containerName: string;
  memoryLimitBytes: number;
  lastActivityAt: number | null;
  /** When the row last changed (a restore or a move): idleness counts from no earlier. */
  since: number;
}

export interface MonitorOptions {
  hostId: string;
  idleAfterMs: number;
  /** CPU above this percentage of one core is work. */
  busyCpuPercent?: number;
  keepAliveMs?: number;
}

/** Memory levels (percent of the limit in force) at which a reading is worth sending: the policy's band edges. */
const levels = [30, 40, 45, 50, 70, 75, 85, 90, 95];
const levelOf = (percent: number) => levels.filter((l) => percent >= l).length;

interface Tracked {
  lastUsage: number;
  lastAt: number;
  lastBusyAt: number;
  sentLevel: number;
  sentAt: number;
  idleSent: boolean;
  idleSentAt: number;
}

export type Delivery = { kind: 'pressure'; userId: string; event: PressureSignal } | { kind: 'idle'; userId: string; event: IdleSignal } | { kind: 'wake'; userId: string; event: WakeEvent };

/** Pure: samples in, the signals worth sending out. */
export class MonitorTracker {
  private readonly tracked = new Map<string, Tracked>();
  constructor(private readonly o: MonitorOptions) {}

  tick(at: number, samples: ContainerSample[], runtimes: Map<string, MonitoredRuntime>): Delivery[] {
    const out: Delivery[] = [];
    const seen = new Set<string>();
    const busyPercent = this.o.busyCpuPercent ?? 1;
    const keepAliveMs = this.o.keepAliveMs ?? 60_000;
    for (const s of samples) {
      const rt = runtimes.get(s.name);
      if (!rt) continue;
      seen.add(s.name);
      const key = `${rt.runtimeId}:${s.name}`;
      const t = this.tracked.get(key);
      if (!t) {
        this.tracked.set(key, { lastUsage: s.cpuUsageUsec, lastAt: at, lastBusyAt: Math.max(at, rt.since), sentLevel: -1, sentAt: 0, idleSent: false, idleSentAt: 0 });
      }
      const state = this.tracked.get(key)!;
      const cpuPercent = t && at > t.lastAt ? ((s.cpuUsageUsec - t.lastUsage) / ((at - t.lastAt) * 1000)) * 100 : 0;
      state.lastUsage = s.cpuUsageUsec;
      state.lastAt = at;
      if (cpuPercent > busyPercent) state.lastBusyAt = at;
      const limit = s.limitBytes ?? rt.memoryLimitBytes;
      const level = levelOf((s.memoryBytes / limit) * 100);
      if (level !== state.sentLevel || at - state.sentAt >= keepAliveMs) {
        state.sentLevel = level;
        state.sentAt = at;
        out.push({ kind: 'pressure', userId: rt.userId, event: { runtimeId: rt.runtimeId, hostId: this.o.hostId, usedBytes: s.memoryBytes, limitBytes: limit, busyAt: state.lastBusyAt, at, source: 'monitor' } });
      }
      const idleSince = Math.max(state.lastBusyAt, rt.lastActivityAt ?? 0, rt.since);
      if (at - idleSince >= this.o.idleAfterMs) {
        // Again each keep-alive period while it lasts: the entity ignores it while an operation runs.
        if (!state.idleSent || at - state.idleSentAt >= keepAliveMs) {
          state.idleSent = true;
          state.idleSentAt = at;
          out.push({ kind: 'idle', userId: rt.userId, event: { runtimeId: rt.runtimeId, hostId: this.o.hostId, idleSince, at, source: 'monitor' } });
        }
      } else if (state.idleSent) {
        // idle-wake: busy or used again after idle-sleep went out; an idle checkpoint not yet started is dropped.
        state.idleSent = false;
        out.push({ kind: 'wake', userId: rt.userId, event: { runtimeId: rt.runtimeId, hostId: this.o.hostId, at, source: 'monitor' } });
      }
    }
    for (const key of this.tracked.keys()) if (!seen.has(key.slice(key.indexOf(':') + 1))) this.tracked.delete(key);
    return out;
  }
}

export function createMonitorActivities(deps: ActivityDeps) {
  const { store } = deps;

  async function runtimesOn(hostId: string): Promise<Map<string, MonitoredRuntime>> {
    const r = await store.pool.query<{ id: string; user_id: string; container_name: string; memory_limit_bytes: string; last_activity_at: Date | null; updated_at: Date }>(
      `SELECT id, user_id, container_name, memory_limit_bytes, last_activity_at, updated_at FROM runtimes WHERE host_id = $1 AND kind = 'user' AND state = 'running'`,
      [hostId],
    );
    return new Map(
      r.rows.map((row) => [
        row.container_name,
        { runtimeId: row.id, userId: row.user_id, containerName: row.container_name, memoryLimitBytes: Number(row.memory_limit_bytes), lastActivityAt: row.last_activity_at?.getTime() ?? null, since: row.updated_at.getTime() },
      ]),
    );
  }

  return {
    /** The hosts the monitor watches: every ready host. */
    async monitoredHosts(): Promise<string[]> {
      const r = await store.pool.query<{ id: string }>(`SELECT id FROM hosts WHERE state = 'ready' ORDER BY id`);
      return r.rows.map((row) => row.id);
    },

    /**
     * Watches one host for `forMs` (then returns, so the workflow's history stays short): samples every
     * `intervalMs`, signals the users' entities, heartbeats each sample. A worker that dies loses only the
     * heartbeat: the workflow runs the watch again on another worker.
     */
    async watchHost(input: { hostId: string; intervalMs: number; idleAfterMs: number; forMs: number }): Promise<{ samples: number; signals: number }> {
      const entities = deps.entities;
      if (!entities) throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: 'this worker has no Temporal client for signals (ActivityDeps.entities)', nonRetryable: true });
      const { shell } = await shellForHost(deps, input.hostId);
      const activity = currentActivity();
      const abort = new AbortController();
      activitySignal()?.addEventListener('abort', () => abort.abort(), { once: true });
      const stopAt = setTimeout(() => abort.abort(), input.forMs);
      const tracker = new MonitorTracker({ hostId: input.hostId, idleAfterMs: input.idleAfterMs });
      let runtimes = await runtimesOn(input.hostId);
      let runtimesAt = Date.now();
      let samples = 0;
      let signals = 0;
      let pending: ContainerSample[] = [];
      let buffered = '';
      const reader = await shell.openReader(hostSamplerArgs(input.intervalMs, 5), { signal: abort.signal, timeoutMs: input.forMs + 60_000 });
      // Cancelled or stopped, the stream errors too: `reader.done` reports it, so this only keeps it from being uncaught.
      reader.stdout.on('error', () => undefined);
      const deliver = async (d: Delivery) => {
        const sent = d.kind === 'pressure' ? await entities.pressure(d.userId, d.event) : d.kind === 'idle' ? await entities.idle(d.userId, d.event) : await entities.wake(d.userId, d.event);
        if (sent) signals++;
      };
      let chain = Promise.resolve();
      reader.stdout.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = parseSamplerLine(buffered.slice(0, nl));
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          if (line.kind === 'sample') {
            pending.push(line.sample);
            continue;
          }
          const batch = pending;
          pending = [];
          samples++;
          chain = chain
            .then(async () => {
              // The rows change rarely (a move, a restore, the edge's activity every few seconds): read them every 2 s.
              if (Date.now() - runtimesAt >= 2000) {
                runtimes = await runtimesOn(input.hostId);
                runtimesAt = Date.now();
              }
              for (const d of tracker.tick(line.at, batch, runtimes)) await deliver(d).catch(() => undefined);
              activity?.heartbeat({ samples, signals });
            })
            .catch(() => undefined);
        }
      });
      try {
        await reader.done;
      } catch (err) {
        if (!(err instanceof HostAbortError) && !abort.signal.aborted) throw err;
      } finally {
        clearTimeout(stopAt);
        abort.abort();
      }
      await chain;
      if (activitySignal()?.aborted) throw new Error('the watch was cancelled');
      return { samples, signals };
    },
  };
}
