import {
  ApplicationFailure,
  CancellationScope,
  defineSignal,
  executeChild,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  setHandler,
  sleep,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { CheckpointResult, MigrationPlan, MigrationTier } from '../activities/migration.js';
import { MigrationReasons, type MigrateRuntimeInput, type MigrateRuntimeResult } from './contracts/elastic.js';
import { reservationClaimedSignal } from './contracts/reservations.js';
import { ErrorType, permanentErrorTypes } from './contracts/errors.js';
import { hostIdPattern } from './contracts/hosts.js';
import { Operation, workflowIds } from './contracts/operations.js';
import type { RuntimePlacement } from './contracts/user-environment.js';
import { userIdPattern } from './contracts/users.js';
import { errorMessage, operatorControls, requireEntityParent, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { heartbeatingWait, hostCommand, quick } from './options.js';
import { provisionHost } from './provision-host.js';

/** Critical pressure arrived while this migration runs: pause the source now if the dump has not started. */
export const escalateSignal = defineSignal('escalate');

const db = proxyActivities<Activities>(quick);
const onHost = proxyActivities<Activities>(hostCommand);
const waiting = proxyActivities<Activities>(heartbeatingWait);
/** Cleanup after the commit keeps trying: the user already runs on the target, only leftovers are at stake. */
const cleanup = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  scheduleToCloseTimeout: '1h',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '2m', nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});

const GiB = 1024 ** 3;

/** Checkpoint and restore scale with the runtime's memory; each heartbeats its progress. */
function bulkActivities(memoryBytes: number) {
  const seconds = 120 + Math.ceil((30 * memoryBytes) / GiB);
  return proxyActivities<Activities>({
    startToCloseTimeout: `${seconds}s`,
    heartbeatTimeout: '30s',
    retry: { initialInterval: '2s', maximumAttempts: 3, nonRetryableErrorTypes: [...permanentErrorTypes, ErrorType.RuntimeBusy, ErrorType.ChecksumMismatch] },
  });
}

export function validateMigrateInput(input: MigrateRuntimeInput): string[] {
  if (typeof input !== 'object' || input === null) return ['input must be a JSON object'];
  const problems: string[] = [];
  if (typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) problems.push('userId: expected a lowercase UUID');
  if (typeof input.target !== 'string' || !/^[a-z0-9][a-z0-9.-]{0,40}$/.test(input.target)) problems.push('target: expected "base", a tier name or an instance type such as t3.medium');
  if (!MigrationReasons.includes(input.reason)) problems.push(`reason: expected one of ${MigrationReasons.join(', ')}`);
  if (input.usedBytes !== undefined && (!Number.isInteger(input.usedBytes) || input.usedBytes < 0)) problems.push('usedBytes: expected a byte count');
  if (input.target === 'auto' && input.usedBytes === undefined && input.reason === 'scale-down') problems.push('usedBytes: a scale-down to "auto" needs the memory in use');
  if (input.targetHostId !== undefined && (typeof input.targetHostId !== 'string' || !hostIdPattern.test(input.targetHostId))) problems.push('targetHostId: expected a recorded host id');
  return problems;
}

/** The MarkcoOperation a migration carries, so critical and scale-down moves stay searchable as such. */
export function migrationOperation(reason: MigrateRuntimeInput['reason']) {
  if (reason === 'critical') return Operation.critical;
  if (reason === 'scale-down') return Operation.scaleDown;
  if (reason === 'gpu') return Operation.gpuHop;
  if (reason === 'gpu-idle') return Operation.gpuReturn;
  if (reason === 'spot-interruption') return Operation.spotInterruption;
  return Operation.migrate;
}

/**
 * Moves a user's running runtime to another host: any host to any host (base, EC2). The source keeps
 * serving until the target answers; anything failing before the editor is switched leaves the user on
 * the source, running, with no target instance left behind, and the migrations row naming the step.
 */
export async function migrateRuntime(input: MigrateRuntimeInput): Promise<MigrateRuntimeResult> {
  const problems = validateMigrateInput(input);
  if (problems.length > 0) {
    throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid migrateRuntime input: ${problems.join('; ')}`, nonRetryable: true });
  }
  requireEntityParent(input.userId, 'migrateRuntime', 'migrate');
  let step = 'begin';
  let escalated = input.reason === 'critical';
  operatorControls({
    step: () => step,
    refuseCancel: (at) =>
      at === 'cleanup' || at === 'done'
        ? `too late to cancel: the runtime already runs on the target (step ${at}); the migration is only removing the source`
        : at === 'failed'
          ? 'the migration has already failed and is undoing its steps'
          : undefined,
  });
  setHandler(escalateSignal, () => {
    escalated = true;
  });
  const { workflowId } = workflowInfo();
  tagOperation({ operation: migrationOperation(input.reason), userId: input.userId });
  const migrationId = uuid4();
  /** Undo steps, run newest first when a step before the commit fails. */
  const undo: { name: string; run: () => Promise<unknown> }[] = [];
  let plan: MigrationPlan | undefined;
  let paused = false;
  try {
    plan = await db.beginMigration({
      migrationId,
      userId: input.userId,
      target: input.target,
      reason: input.reason,
      workflowId,
      ...(input.targetHostId ? { targetHostId: input.targetHostId } : {}),
      ...(input.usedBytes !== undefined ? { usedBytes: input.usedBytes } : {}),
    });
    const source = plan.runtime;
    const targetTier = plan.to;
    const imageSwap = plan.from.gpu !== targetTier.gpu ? { image: targetTier.gpu ? ('gpu' as const) : ('cpu' as const) } : {};
    const bulk = bulkActivities(Math.max(plan.from.memoryBytes, plan.to.memoryBytes));
    paused = plan.runtimeState === 'paused';
    tagOperation({ operation: migrationOperation(input.reason), userId: input.userId, sourceHost: source.hostId, instanceType: plan.to.instanceType ?? 'base' });

    const pauseSource = async () => {
      if (paused) return;
      await onHost.pauseRuntime({ hostId: source.hostId, containerName: source.containerName });
      paused = true;
    };
    undo.push({ name: 'resume the source', run: () => onHost.unpauseRuntime({ hostId: source.hostId, containerName: source.containerName, migrationId }) });
    if (escalated) {
      step = 'pause';
      await pauseSource();
    }

    step = 'target';
    const target = await chooseTarget(plan, input, workflowId);
    if (target.owned) undo.push({ name: 'terminate the target host', run: () => db.terminateHost({ hostId: target.hostId, reason: `migration ${migrationId} failed` }) });
    await db.recordMigrationStep({ migrationId, step, targetHostId: target.hostId });
    tagOperation({ operation: migrationOperation(input.reason), userId: input.userId, sourceHost: source.hostId, targetHost: target.hostId, instanceType: plan.to.instanceType ?? 'base' });

    step = 'prepare';
    await db.recordMigrationStep({ migrationId, step });
    const { uid, gid } = plan.containerUser;
    const prepared = await onHost.prepareTarget({ migrationId, userId: input.userId, targetHostId: target.hostId, sourceHostId: source.hostId, containerName: source.containerName, preferPort: source.port, uid, gid });
    undo.push({
      name: 'remove the copy on the target',
      run: () => onHost.discardTarget({ migrationId, userId: input.userId, targetHostId: target.hostId, sourceHostId: source.hostId, containerName: source.containerName, port: prepared.port }),
    });

    step = 'home';
    await db.recordMigrationStep({ migrationId, step });
    await waiting.syncHome({ migrationId, userId: input.userId, sourceHostId: source.hostId, targetHostId: target.hostId });

    step = 'checkpoint';
    await db.recordMigrationStep({ migrationId, step });
    if (escalated) await pauseSource();
    // One activity from dump to restore: the target unpacks the archive while it streams in. It moves
    // the row's step to 'restore' once the archive is across.
    const moved = await checkpointWhenIdle(
      () =>
        bulk.checkpointIntoTarget({
          migrationId,
          sourceHostId: source.hostId,
          targetHostId: target.hostId,
          containerName: source.containerName,
          wasPaused: paused,
          address: prepared.address,
          port: prepared.port,
          memoryBytes: targetTier.memoryBytes,
          cpus: targetTier.cpus,
          // Onto or off a GPU host, the runtime restores on that host's runtime image (same lower layers).
          ...imageSwap,
        }),
      escalated || input.reason === 'urgent',
    );
    paused = true;

    step = 'health';
    await db.recordMigrationStep({ migrationId, step });
    await waiting.waitForRuntime({ runtimeId: source.runtimeId, address: prepared.address, port: prepared.port });

    step = 'switch';
    await db.recordMigrationStep({ migrationId, step });
    const placed: RuntimePlacement = { ...source, hostId: target.hostId, address: prepared.address, port: prepared.port, state: 'running', tier: plan.to.name, memoryLimitBytes: moved.memoryLimitBytes, cpuLimit: plan.to.cpus };
    const editor = plan.editor;
    if (editor) {
      // Registered before the call: a switch that half-applies must still be pointed back.
      undo.push({ name: 'point the editor back at the source', run: () => waiting.readyEditor({ editorId: editor.editorId, userId: input.userId, address: editor.address, port: editor.port, runtime: source }) });
      await waiting.readyEditor({ editorId: editor.editorId, userId: input.userId, address: editor.address, port: editor.port, runtime: placed });
    }
    // The commit and what follows it are never cancelled: a cancel arriving while completeMigration runs
    // would otherwise undo a move PostgreSQL has already recorded.
    const timings = await CancellationScope.nonCancellable(() => db.completeMigration({
      migrationId,
      runtimeId: source.runtimeId,
      targetHostId: target.hostId,
      port: prepared.port,
      address: prepared.address,
      tier: targetTier.name,
      memoryLimitBytes: moved.memoryLimitBytes,
      cpuLimit: targetTier.cpus,
      checkpointStartedAt: moved.startedAt,
      timings: { checkpointMs: moved.checkpointMs, transferMs: moved.transferMs, restoreMs: moved.restoreMs, frozenMs: moved.frozenMs, archiveBytes: moved.archiveBytes, archiveSha256: moved.sha256 },
    }));
    // Committed: the user runs on the target. Nothing below may undo that.
    undo.length = 0;

    step = 'cleanup';
    const sourceKind = plan.sourceKind;
    await CancellationScope.nonCancellable(async () => {
      await cleanup.removeSourceRuntime({ migrationId, userId: input.userId, runtimeId: source.runtimeId, sourceHostId: source.hostId, targetHostId: target.hostId, containerName: source.containerName, port: source.port, timings: { ...timings } });
      if (sourceKind === 'ec2') await cleanup.terminateHost({ hostId: source.hostId, reason: `runtime moved to ${target.hostId}` });
    });
    step = 'done';
    setStatus('completed');
    return {
      migrationId,
      userId: input.userId,
      runtimeId: source.runtimeId,
      sourceHostId: source.hostId,
      targetHostId: target.hostId,
      fromTier: plan.from.name,
      toTier: plan.to.name,
      memoryLimitBytes: moved.memoryLimitBytes,
      timings,
    };
  } catch (err) {
    // The restore runs inside the checkpoint activity (the archive streams into it): name it when it failed.
    const failedAt = (err as { cause?: { type?: string } }).cause?.type === ErrorType.RestoreFailed ? 'restore' : step;
    step = 'failed';
    await CancellationScope.nonCancellable(async () => {
      // Newest first, except that the source resumes first: undoing on an unreachable target retries for
      // minutes, and the user's runtime must not stay paused meanwhile.
      const ordered = undo.reverse();
      const resume = ordered.findIndex((u) => u.name === 'resume the source');
      if (resume > 0) ordered.unshift(...ordered.splice(resume, 1));
      for (const u of ordered) {
        try {
          await u.run();
        } catch (undoError) {
          log.warn(`undo step "${u.name}" failed`, { error: errorMessage(undoError) });
        }
      }
      if (plan) {
        try {
          await db.failMigration({ migrationId, runtimeId: plan.runtime.runtimeId, step: failedAt, error: errorMessage(err) });
        } catch (recordError) {
          log.warn('recording the failed migration failed', { error: errorMessage(recordError) });
        }
      }
    });
    setEndStatus(err);
    throw err;
  }
}

/** The host the runtime moves to, and whether this migration launched or claimed it (and so must give it back on failure). */
async function chooseTarget(plan: MigrationPlan, input: MigrateRuntimeInput, workflowId: string): Promise<{ hostId: string; owned: boolean }> {
  if (input.targetHostId) return { hostId: input.targetHostId, owned: false };
  return acquireHost({ userId: input.userId, tier: plan.to, baseHostId: plan.baseHostId, workflowId });
}

/**
 * A host of the tier for the user's runtime: the base server for the base tier, else the user's
 * reserved EC2 host of that type if one is ready, else a newly launched one. `owned`: the caller launched
 * or claimed it and must terminate it if it fails.
 */
export async function acquireHost(o: { userId: string; tier: MigrationTier; baseHostId: string; workflowId: string }): Promise<{ hostId: string; owned: boolean }> {
  if (o.tier.instanceType === null) return { hostId: o.baseHostId, owned: false };
  const claimed = await db.claimReservation({ userId: o.userId, instanceType: o.tier.instanceType, claimedBy: o.workflowId, waitMs: 120_000 });
  if (claimed) {
    // Ends the reservation's wait now; the claim itself is already in PostgreSQL if the signal is lost.
    await getExternalWorkflowHandle(o.tier.gpu ? workflowIds.preProvisionGpu(o.userId) : workflowIds.preProvision(o.userId))
      .signal(reservationClaimedSignal, { hostId: claimed.hostId, claimedBy: o.workflowId })
      .catch(() => undefined);
    return { hostId: claimed.hostId, owned: true };
  }
  const hostId = `ec2-${uuid4().replace(/-/g, '').slice(0, 12)}`;
  const launched = await executeChild(provisionHost, {
    workflowId: workflowIds.provisionHost(hostId),
    args: [{ hostId, userId: o.userId, tier: o.tier.name, instanceType: o.tier.instanceType, reserveForSeconds: 3600, claimedBy: o.workflowId, gpu: o.tier.gpu }],
  });
  return { hostId: launched.hostId, owned: true };
}

/**
 * CRIU refuses a runtime holding an established TCP connection (an in-flight request, the user's own
 * socket). Such a runtime is busy, not broken: try again for up to a minute (10 s when urgent).
 */
export async function checkpointWhenIdle<T>(checkpoint: () => Promise<T>, urgent: boolean): Promise<T> {
  const budgetMs = urgent ? 10_000 : 60_000;
  let waitedMs = 0;
  let delayMs = 1000;
  for (;;) {
    try {
      return await checkpoint();
    } catch (err) {
      const busy = (err as { cause?: { type?: string } }).cause?.type === ErrorType.RuntimeBusy;
      if (!busy || waitedMs >= budgetMs) throw err;
      await sleep(delayMs);
      waitedMs += delayMs;
      delayMs = Math.min(delayMs * 2, 8000);
    }
  }
}
