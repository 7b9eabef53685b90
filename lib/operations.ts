import { randomBytes } from 'node:crypto';
import { WithStartWorkflowOperation, WorkflowFailedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, TemporalFailure, type SignalDefinition } from '@temporalio/common';
import type { ImportProjectInput, ImportProjectResult, LoginInput, LoginResult, RuntimeStats, StopRuntimeInput, StopRuntimeResult } from '../workflows/contracts/user-environment.js';
import type { MigrateRuntimeResult } from '../workflows/contracts/elastic.js';
import { workflowIds } from '../workflows/contracts/operations.js';
import type { DeletionRequester } from '../workflows/contracts/accounts.js';
import {
  codeHintSignal,
  deleteAccountUpdate,
  gpuUseUpdate,
  idleSignal,
  idleUpdate,
  loginUpdate,
  migrateUpdate,
  pressureSignal,
  restoreSnapshotUpdate,
  sandboxUpdate,
  snapshotUpdate,
  stopRuntimeUpdate,
  spotInterruptionSignal,
  wakeSignal,
  type CodeHintEvent,
  type GpuUseAnswer,
  type GpuUseRequest,
  type IdleEvent,
  type MigrateRequest,
  type OperationRef,
  type PressureSignal,
  type SpotInterruptionEvent,
  type WakeEvent,
} from '../workflows/contracts/runtime-entity.js';
import type { ForkSandboxInput, IdleCheckpointInput, RestoreSnapshotInput, SnapshotRuntimeInput } from '../workflows/contracts/snapshots.js';
import { stepQuery } from '../workflows/contracts/messages.js';

/**
 * How the edge (and scripts) start lifecycle operations and report on them. An operation id names one
 * workflow run: `<workflowId>~<runId>`, base64url-encoded so it travels in a URL path segment.
 */
export interface OperationState {
  operation_id: string;
  workflow_id: string;
  status: 'running' | 'completed' | 'failed';
  step: string;
  result?: unknown;
  error?: { type: string | null; message: string };
}

export function encodeOperationId(workflowId: string, runId: string): string {
  return Buffer.from(`${workflowId}~${runId}`, 'utf8').toString('base64url');
}

export function decodeOperationId(id: string): { workflowId: string; runId: string } | undefined {
  if (!/^[A-Za-z0-9_-]{8,400}$/.test(id)) return undefined;
  const text = Buffer.from(id, 'base64url').toString('utf8');
  const at = text.lastIndexOf('~');
  if (at <= 0) return undefined;
  const [workflowId, runId] = [text.slice(0, at), text.slice(at + 1)];
  return /^[0-9a-f-]{36}$/.test(runId) ? { workflowId, runId } : undefined;
}

/** The innermost failure: the activity's own type and message, not "Activity task failed". */
function rootFailure(err: unknown): { type: string | null; message: string } {
  let e: unknown = err;
  let type: string | null = null;
  while (e) {
    if (e instanceof ApplicationFailure && e.type) type = e.type;
    const cause = (e as { cause?: unknown }).cause;
    if (!cause) break;
    e = cause;
  }
  return { type, message: e instanceof Error ? e.message : String(e) };
}

export function createOperations(client: Client, taskQueue: string) {
  const start = async <A, R>(type: string, workflowId: string, args: A, joinRunning: boolean) => {
    const handle = await client.workflow.start<(input: A) => Promise<R>>(type, {
      workflowId,
      taskQueue,
      args: [args],
      // A second login while one runs joins it; nothing else should run twice for a user.
      workflowIdConflictPolicy: joinRunning ? 'USE_EXISTING' : 'FAIL',
    });
    return { handle, operationId: encodeOperationId(workflowId, handle.firstExecutionRunId) };
  };

  /**
   * Login, stop and migrate go through the user's entity `runtime/<userId>` (started on first use): it
   * runs them one at a time and answers with the child run doing the work, which is the operation.
   */
  type EntityUpdate = typeof loginUpdate | typeof stopRuntimeUpdate | typeof migrateUpdate | typeof idleUpdate | typeof snapshotUpdate | typeof restoreSnapshotUpdate | typeof sandboxUpdate | typeof deleteAccountUpdate;
  const throughEntity = async <R>(userId: string, update: EntityUpdate, input: unknown) => {
    let ref: OperationRef;
    try {
      ref = await client.workflow.executeUpdateWithStart(update as typeof migrateUpdate, {
        args: [input as MigrateRequest],
        startWorkflowOperation: new WithStartWorkflowOperation('userRuntime', {
          workflowId: workflowIds.runtime(userId),
          taskQueue,
          args: [{ userId }],
          workflowIdConflictPolicy: 'USE_EXISTING',
        }),
      });
    } catch (err) {
      // The entity's validator or handler refused: surface its typed failure, as a failed start would.
      if (err instanceof WorkflowUpdateFailedError && err.cause) throw err.cause;
      throw err;
    }
    const handle = client.workflow.getHandle<() => Promise<R>>(ref.workflowId, ref.runId, { firstExecutionRunId: ref.runId });
    return { handle, operationId: encodeOperationId(ref.workflowId, ref.runId), joined: ref.joined };
  };

  /** Signals the user's entity; false when it does not exist (the user has never had a runtime). */
  const signalEntity = async <T>(userId: string, signal: SignalDefinition<[T]>, event: T): Promise<boolean> => {
    try {
      await client.workflow.getHandle(workflowIds.runtime(userId)).signal(signal, event);
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  };

  return {
    startLogin: (input: LoginInput) => throughEntity<LoginResult>(input.userId, loginUpdate, input),
    startStopRuntime: (input: StopRuntimeInput) => throughEntity<StopRuntimeResult>(input.userId, stopRuntimeUpdate, input),
    startMigration: (userId: string, request: MigrateRequest) => throughEntity<MigrateRuntimeResult>(userId, migrateUpdate, request),
    startIdleCheckpoint: (input: IdleCheckpointInput) => throughEntity(input.userId, idleUpdate, input),
    startSnapshot: (input: SnapshotRuntimeInput) => throughEntity(input.userId, snapshotUpdate, input),
    startRestoreSnapshot: (input: RestoreSnapshotInput) => throughEntity(input.userId, restoreSnapshotUpdate, input),
    startSandbox: (input: ForkSandboxInput) => throughEntity(input.userId, sandboxUpdate, input),
    /** The entity's last operation: a second request while it runs or waits joins it (the same operation id). */
    startAccountDeletion: (userId: string, requestedBy: DeletionRequester) => throughEntity(userId, deleteAccountUpdate, { userId, requestedBy }),
    /** Not through the entity: safe to repeat, and a second request joins the first (same workflow id). */
    startDeleteSnapshot: (userId: string, snapshotId: string) => start('deleteSnapshot', workflowIds.deleteSnapshot(userId, snapshotId), { userId, snapshotId }, true),
    startDestroySandbox: (userId: string, sandboxId: string) => start('destroySandbox', workflowIds.destroySandbox(userId, sandboxId), { userId, sandboxId }, true),

    /** A memory reading for the user's entity; dropped (false) when the user has none running. */
    signalPressure: (userId: string, event: PressureSignal) => signalEntity(userId, pressureSignal, event),
    /** The monitor's idle-sleep for the user's entity; dropped (false) when the user has none running. */
    signalIdle: (userId: string, event: IdleEvent) => signalEntity(userId, idleSignal, event),
    /** The monitor's idle-wake: a queued idle checkpoint is dropped. */
    signalWake: (userId: string, event: WakeEvent) => signalEntity(userId, wakeSignal, event),
    /** gpu-hint or big-ram-hint from the code the user runs. */
    signalCodeHint: (userId: string, event: CodeHintEvent) => signalEntity(userId, codeHintSignal, event),
    signalSpotInterruption: (userId: string, event: SpotInterruptionEvent) => signalEntity(userId, spotInterruptionSignal, event),

    /**
     * A cell is about to use the GPU: the entity hops the runtime onto its GPU host (or says why not).
     * Answers when the runtime is on the GPU, when it cannot be, or after `waitMs` (the cell then runs where it is).
     */
    async awaitGpu(userId: string, request: GpuUseRequest, waitMs: number): Promise<{ outcome: 'on-gpu' | 'moved' | 'not-moved' | 'timed-out'; reason?: string; operationId?: string }> {
      let answer: GpuUseAnswer;
      try {
        answer = await client.workflow.getHandle(workflowIds.runtime(userId)).executeUpdate(gpuUseUpdate, { args: [request] });
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return { outcome: 'not-moved', reason: 'the user has no runtime entity' };
        if (err instanceof WorkflowUpdateFailedError && err.cause) return { outcome: 'not-moved', reason: err.cause.message };
        throw err;
      }
      if (answer.onGpu) return { outcome: 'on-gpu' };
      if (!answer.operation) return { outcome: 'not-moved', ...(answer.reason ? { reason: answer.reason } : {}) };
      const operationId = encodeOperationId(answer.operation.workflowId, answer.operation.runId);
      const hop = client.workflow.getHandle(answer.operation.workflowId, answer.operation.runId);
      let timer: NodeJS.Timeout | undefined;
      const settled = await Promise.race([
        hop.result().then(
          () => ({ outcome: 'moved' as const, operationId }),
          (err: unknown) => ({ outcome: 'not-moved' as const, reason: rootFailure(err instanceof WorkflowFailedError ? err.cause : err).message, operationId }),
        ),
        new Promise<{ outcome: 'timed-out'; operationId: string }>((r) => (timer = setTimeout(() => r({ outcome: 'timed-out', operationId }), waitMs))),
      ]);
      clearTimeout(timer);
      return settled;
    },

    startImportProject: (input: ImportProjectInput) =>
      start<ImportProjectInput, ImportProjectResult>('importProject', workflowIds.importProject(input.userId, input.name ?? randomBytes(4).toString('hex')), input, false),

    async runtimeStats(userId: string): Promise<RuntimeStats | null> {
      return client.workflow.execute<(input: { userId: string }) => Promise<RuntimeStats | null>>('runtimeStats', {
        workflowId: workflowIds.runtimeStats(userId, randomBytes(6).toString('hex')),
        taskQueue,
        args: [{ userId }],
        workflowExecutionTimeout: '30s',
      });
    },

    /** The operation's state; with waitMs, waits up to that long for it to finish first. */
    async describe(operationId: string, opts: { waitMs?: number } = {}): Promise<OperationState | undefined> {
      const ids = decodeOperationId(operationId);
      if (!ids) return undefined;
      const handle: WorkflowHandle = client.workflow.getHandle(ids.workflowId, ids.runId);
      const base = { operation_id: operationId, workflow_id: ids.workflowId };
      if (opts.waitMs && opts.waitMs > 0) {
        const settled = await Promise.race([
          handle.result().then(
            (result) => ({ status: 'completed' as const, result }),
            (err: unknown) => (err instanceof WorkflowNotFoundError ? undefined : { status: 'failed' as const, error: rootFailure(err instanceof WorkflowFailedError ? err.cause : err) }),
          ),
          new Promise<null>((r) => setTimeout(() => r(null), opts.waitMs).unref()),
        ]);
        if (settled === undefined) return undefined;
        if (settled) return { ...base, step: settled.status === 'completed' ? 'done' : 'failed', ...settled };
      }
      let description;
      try {
        description = await handle.describe();
      } catch (err) {
        if (err instanceof WorkflowNotFoundError) return undefined;
        throw err;
      }
      const status = description.status.name;
      if (status === 'RUNNING') {
        const step = await handle.query(stepQuery).catch(() => 'waiting for a worker');
        return { ...base, status: 'running', step };
      }
      if (status === 'COMPLETED') return { ...base, status: 'completed', step: 'done', result: await handle.result() };
      try {
        await handle.result();
      } catch (err) {
        const cause = err instanceof WorkflowFailedError ? err.cause : err;
        return { ...base, status: 'failed', step: 'failed', error: cause instanceof TemporalFailure || cause instanceof Error ? rootFailure(cause) : { type: null, message: String(cause) } };
      }
      return { ...base, status: 'failed', step: 'failed', error: { type: null, message: `workflow ${status.toLowerCase()}` } };
    },

    /** Who an operation belongs to (its MarkcoUserId search attribute), for authorising its owner. */
    async ownerOf(operationId: string): Promise<string | undefined> {
      const ids = decodeOperationId(operationId);
      if (!ids) return undefined;
      const m = /^user\/([0-9a-f-]{36})\//.exec(ids.workflowId);
      return m?.[1];
    },
  };
}

export type Operations = ReturnType<typeof createOperations>;
