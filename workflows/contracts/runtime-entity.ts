import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { DeleteAccountInput } from './accounts.js';
import type { MigrationReason } from './elastic.js';
import type { ForkSandboxInput, IdleCheckpointInput, RestoreSnapshotInput, SnapshotRuntimeInput } from './snapshots.js';
import type { LoginInput, StopRuntimeInput } from './user-environment.js';

/**
 * The per-user entity `runtime/<userId>` (type `userRuntime`): every operation that changes the user's
 * runtime runs as its child, one at a time, in arrival order. Login, stop and migrate are updates that
 * answer as soon as the child has started; memory pressure arrives as a signal.
 */
export interface UserRuntimeInput {
  userId: string;
  /** State handed over by continue-as-new; absent on a first start. */
  carried?: unknown;
  /** Continue as new after this many history events (default 5000; tests use less). */
  maxHistoryEvents?: number;
  /** How long memory must stay low on a big tier before scaling down (ms; default 30 min). */
  scaleDownAfterMs?: number;
}

/**
 * Which child an entity runs; each has a fixed workflow id per user (workflowIds). Idle, snapshot,
 * restore and sandbox never join or queue behind another operation: a request while any operation of
 * the user runs or waits is refused (Conflict, the API's 409), since each names what it does (a
 * snapshot's name, the snapshot to restore) and would otherwise act on a runtime that changed meanwhile.
 * `delete-account` is the entity's last: it goes before anything queued (which is refused), waits only
 * for the running operation, and once it has succeeded the entity ends.
 */
export type EntityOperationKind = 'login' | 'stop-runtime' | 'migrate' | 'gpu-hop' | 'idle' | 'snapshot' | 'restore' | 'sandbox' | 'delete-account';

/** What an update answers: the child run that does the work, as the compute API's operation id is made from it. */
export interface OperationRef {
  workflowId: string;
  runId: string;
  operation: EntityOperationKind;
  /** True when the request joined an operation of the same kind that was already running or queued. */
  joined: boolean;
}

export interface MigrateRequest {
  /** `base`, a tier name or instance type of the user's plan, or `auto` (sized from `usedBytes`). */
  target: string;
  reason?: MigrationReason;
  usedBytes?: number;
  targetHostId?: string;
}

/** A memory reading of the user's runtime (the monitor, the webhook, tests). */
export interface PressureSignal {
  runtimeId: string;
  hostId: string;
  usedBytes: number;
  limitBytes?: number;
  /** When the monitor last saw the runtime's CPU busy (epoch ms): GPU work is not idle while it is. */
  busyAt?: number;
  /** When it was measured: ISO time or epoch milliseconds. */
  at: string | number;
  source: string;
}

export interface EntityState {
  userId: string;
  /** The GPU hop: the tier this user may hop to (null: none), and what the policy knows. */
  gpu: { tier: string | null; hintedAt: string | null; lastUseAt: string | null; onGpu: boolean; idleSince: string | null };
  running: { operation: EntityOperationKind; workflowId: string; runId: string } | null;
  queue: EntityOperationKind[];
  placement: { runtimeId: string; hostId: string; tier: string; memoryLimitBytes: number } | null;
  band: string;
  lowSince: string | null;
  operationsRun: number;
  /** The account is being deleted: every request but deleteAccount is refused. */
  deleting: boolean;
}

export const loginUpdate = defineUpdate<OperationRef, [LoginInput]>('login');
export const stopRuntimeUpdate = defineUpdate<OperationRef, [StopRuntimeInput]>('stopRuntime');
export const migrateUpdate = defineUpdate<OperationRef, [MigrateRequest]>('migrate');
export const idleUpdate = defineUpdate<OperationRef, [IdleCheckpointInput]>('idle');
export const snapshotUpdate = defineUpdate<OperationRef, [SnapshotRuntimeInput]>('snapshot');
export const restoreSnapshotUpdate = defineUpdate<OperationRef, [RestoreSnapshotInput]>('restoreSnapshot');
export const sandboxUpdate = defineUpdate<OperationRef, [ForkSandboxInput]>('sandbox');
/** Marks the user deleted at once (sessions revoked), then runs deleteAccount as the entity's last child. */
export const deleteAccountUpdate = defineUpdate<OperationRef, [DeleteAccountInput]>('deleteAccount');
export const pressureSignal = defineSignal<[PressureSignal]>('pressure');
/** The monitor saw neither CPU nor the user's traffic for the idle time: checkpoint the runtime (idle-sleep). */
export const idleSignal = defineSignal<[IdleEvent]>('idle');

export interface IdleEvent {
  runtimeId: string;
  hostId: string;
  /** Since when the runtime has been idle (epoch ms or ISO). */
  idleSince: string | number;
  at: string | number;
  source: string;
}
export const entityStateQuery = defineQuery<EntityState>('entityState');

/** A finding about the code the user runs (the edge reads MRP execute requests; the webhook relays others'). */
export interface CodeHintEvent {
  kind: 'gpu-hint' | 'big-ram-hint';
  /** The patterns that matched (lib/code-hints.ts), for the event log. */
  matched?: string[];
  at: string | number;
  source: string;
}
/** gpu-hint: boot a GPU host in the background; big-ram-hint: boot the next tier's host (pre-provision). */
export const codeHintSignal = defineSignal<[CodeHintEvent]>('codeHint');

/** A cell is about to put work on the GPU (the edge holds it until this answers and the hop is done). */
export interface GpuUseRequest {
  userId: string;
  matched?: string[];
  source?: string;
}
export interface GpuUseAnswer {
  /** The runtime is on a GPU host already: run the cell now. */
  onGpu: boolean;
  /** The hop that was started or joined: the cell waits for it. */
  operation?: OperationRef;
  /** Why there is no hop (no GPU for this plan, no runtime running, ...). */
  reason?: string;
}
export const gpuUseUpdate = defineUpdate<GpuUseAnswer, [GpuUseRequest]>('gpuUse');

/** EC2's two-minute notice that a spot host is being reclaimed: move the runtime off it now. */
export interface SpotInterruptionEvent {
  hostId: string;
  at: string | number;
  source: string;
}
export const spotInterruptionSignal = defineSignal<[SpotInterruptionEvent]>('spotInterruption');

/** The monitor saw CPU or the user's traffic again after idle-sleep (idle-wake): an idle checkpoint not yet started is dropped. */
export interface WakeEvent {
  runtimeId: string;
  hostId: string;
  at: string | number;
  source: string;
}
export const wakeSignal = defineSignal<[WakeEvent]>('wake');
