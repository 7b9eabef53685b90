import { ApplicationFailure, CancellationScope, log, proxyActivities, setHandler, uuid4, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ErrorType, permanentErrorTypes } from './contracts/errors.js';
import { Operation, workflowIds } from './contracts/operations.js';
import {
  sandboxTtl,
  validateForkSandboxInput,
  validateIdleCheckpointInput,
  validateRestoreSnapshotInput,
  validateSandboxIdInput,
  validateSnapshotRuntimeInput,
  validateUserOnlyInput,
  type DeleteSnapshotInput,
  type DestroySandboxInput,
  type ForkSandboxInput,
  type IdleCheckpointInput,
  type IdleCheckpointResult,
  type RestoreSnapshotInput,
  type RestoreSnapshotResult,
  type ReturnRuntimeInput,
  type ReturnRuntimeResult,
  type SnapshotRuntimeInput,
  type SnapshotRuntimeResult,
} from './contracts/snapshots.js';
import type { SandboxResult, SnapshotPlan } from '../activities/snapshots.js';
import { errorMessage, operatorControls, refuseCancelAt, requireEntityParent, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { acquireHost, checkpointWhenIdle } from './migrate.js';
import { heartbeatingWait, hostCommand, quick } from './options.js';

const db = proxyActivities<Activities>(quick);
const onHost = proxyActivities<Activities>(hostCommand);
const waiting = proxyActivities<Activities>(heartbeatingWait);
/** Checkpoint, copy, upload and restore heartbeat their progress; their length follows the archive's. */
const bulk = proxyActivities<Activities>({
  startToCloseTimeout: '2h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', maximumAttempts: 3, nonRetryableErrorTypes: [...permanentErrorTypes, ErrorType.RuntimeBusy, ErrorType.ChecksumMismatch, ErrorType.RestoreFailed] },
});
/** After the commit: only leftovers are at stake, so keep trying. */
const cleanup = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  scheduleToCloseTimeout: '1h',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '2m', nonRetryableErrorTypes: [ErrorType.InvalidInput, ErrorType.NotFound] },
});

function invalid(workflow: string, problems: string[]): void {
  if (problems.length > 0) throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid ${workflow} input: ${problems.join('; ')}`, nonRetryable: true });
}

const failureType = (err: unknown) => (err as { cause?: { type?: string } }).cause?.type;

/** Runs undo steps newest first, never cancelled, logging (not throwing) what fails. */
async function runUndo(undo: { name: string; run: () => Promise<unknown> }[]): Promise<void> {
  await CancellationScope.nonCancellable(async () => {
    for (const u of undo.reverse()) {
      try {
        await u.run();
      } catch (err) {
        log.warn(`undo step "${u.name}" failed`, { error: errorMessage(err) });
      }
    }
  });
}

/** Tracks a workflow's step for the `step` query and the Web UI's status. */
function stepper(refuseCancel?: (step: string) => string | undefined): { set(s: string): void; get(): string } {
  let step = 'begin';
  operatorControls({ step: () => step, ...(refuseCancel ? { refuseCancel } : {}) });
  return { set: (s) => void (step = s), get: () => step };
}

/**
 * Checkpoints the runtime into an archive on its host, brings it to the base server if it was made
 * elsewhere, and uploads it to S3: what an idle checkpoint and a named snapshot share.
 */
async function archiveRuntime(plan: SnapshotPlan, step: { set(s: string): void }, opts: { pauseAfter: boolean }) {
  const { snapshotId, runtime } = plan;
  step.set('checkpoint');
  const archive = await checkpointWhenIdle(
    () => bulk.checkpointToArchive({ snapshotId, hostId: runtime.hostId, containerName: runtime.containerName, path: plan.hostArchivePath, pauseAfter: opts.pauseAfter, wasPaused: plan.runtimeState === 'paused' }),
    false,
  );
  if (runtime.hostId !== plan.baseHostId) {
    step.set('copy-to-base');
    await bulk.keepArchiveOnBase({ snapshotId, fromHostId: runtime.hostId, fromPath: plan.hostArchivePath, toPath: plan.baseArchivePath, sha256: archive.sha256 });
  }
  step.set('upload');
  const uploaded = await bulk.uploadArchive({ snapshotId });
  return { archive, uploaded };
}

/** Restores a snapshot on a host; a base-server copy that fails its checksum is replaced by S3's, the archive as it was checkpointed. */
async function restoreArchive(input: Parameters<Activities['restoreSnapshotOnHost']>[0]) {
  try {
    return await bulk.restoreSnapshotOnHost(input);
  } catch (err) {
    if (failureType(err) !== ErrorType.ChecksumMismatch) throw err;
    log.warn('the local archive failed its checksum; restoring from S3', { error: errorMessage(err) });
    return bulk.restoreSnapshotOnHost({ ...input, skipLocal: true });
  }
}

/**
 * The user went idle: the runtime is checkpointed into an archive kept on the base server and in S3,
 * its container removed and its EC2 host (if any) terminated, so it costs nothing until the next visit.
 * Anything failing before the commit leaves it running where it was.
 */
export async function idleCheckpoint(input: IdleCheckpointInput): Promise<IdleCheckpointResult> {
  invalid('idleCheckpoint', validateIdleCheckpointInput(input));
  requireEntityParent(input.userId, 'idleCheckpoint', 'idle');
  const step = stepper(refuseCancelAt(['commit', 'terminate-host', 'done'], 'the runtime is checkpointed and its container gone'));
  tagOperation({ operation: Operation.idle, userId: input.userId });
  const snapshotId = uuid4();
  const undo: { name: string; run: () => Promise<unknown> }[] = [];
  let runtimeId: string | undefined;
  try {
    const plan = await db.beginSnapshot({ snapshotId, userId: input.userId, name: `idle-${snapshotId.slice(0, 8)}`, kind: 'idle', workflowId: workflowInfo().workflowId, ...(input.idleSince !== undefined ? { idleSince: input.idleSince } : {}) });
    runtimeId = plan.runtime.runtimeId;
    tagOperation({ operation: Operation.idle, userId: input.userId, sourceHost: plan.runtime.hostId });
    undo.push({ name: 'resume the runtime', run: () => onHost.unpauseRuntime({ hostId: plan.runtime.hostId, containerName: plan.runtime.containerName }) });

    const { archive, uploaded } = await archiveRuntime(plan, step, { pauseAfter: true });

    step.set('commit');
    // Never cancelled from here: a cancel during the commit would undo what PostgreSQL has recorded.
    const committed = await CancellationScope.nonCancellable(() => db.commitIdle({ userId: input.userId, runtimeId: plan.runtime.runtimeId, snapshotId, hostId: plan.runtime.hostId, containerName: plan.runtime.containerName, port: plan.runtime.port }));
    undo.length = 0;

    let terminatedHostId: string | null = null;
    if (plan.hostKind === 'ec2') {
      step.set('terminate-host');
      await CancellationScope.nonCancellable(() => cleanup.terminateHost({ hostId: plan.runtime.hostId, reason: `runtime of user ${input.userId} checkpointed (idle)` }));
      terminatedHostId = plan.runtime.hostId;
    }
    step.set('done');
    setStatus('completed');
    return {
      userId: input.userId,
      runtimeId: plan.runtime.runtimeId,
      snapshotId,
      archiveBytes: archive.bytes,
      sha256: archive.sha256,
      s3Key: uploaded.key,
      checkpointMs: archive.checkpointMs,
      uploadMs: uploaded.uploadMs,
      frozenMs: archive.frozenMs,
      terminatedHostId,
      editorStopped: committed.editorStopped,
    };
  } catch (err) {
    const failedAt = step.get();
    step.set('failed');
    await runUndo(undo);
    if (runtimeId) {
      const id = runtimeId;
      await CancellationScope.nonCancellable(() => db.failIdle({ runtimeId: id, snapshotId, error: `${failedAt}: ${errorMessage(err)}` })).catch((e: unknown) => log.warn('recording the failed idle checkpoint failed', { error: errorMessage(e) }));
    }
    setEndStatus(err);
    throw err;
  }
}

/**
 * The user came back: the idle checkpoint is restored on a host sized from it (the base server if it
 * fits the plan's base tier), from the base server's copy or else S3, and answers before the runtime row
 * says `running`. A child of the user's login, which then re-points the editor. Failing leaves the runtime
 * checkpointed, its archive untouched, and no host of this return running.
 */
export async function returnRuntime(input: ReturnRuntimeInput): Promise<ReturnRuntimeResult> {
  invalid('returnRuntime', validateUserOnlyInput(input));
  const parent = workflowInfo().parent?.workflowId;
  if (parent !== workflowIds.login(input.userId)) requireEntityParent(input.userId, 'returnRuntime', 'login');
  const step = stepper(refuseCancelAt(['commit', 'cleanup', 'done'], 'the runtime runs again; only its idle archive is being deleted'));
  tagOperation({ operation: Operation.returnRuntime, userId: input.userId });
  const started = Date.now();
  const undo: { name: string; run: () => Promise<unknown> }[] = [];
  let runtimeId: string | undefined;
  try {
    const plan = await db.planReturn({ userId: input.userId });
    if (plan.alreadyRunning || !plan.snapshotId) {
      step.set('done');
      setStatus('completed');
      return { userId: input.userId, runtimeId: plan.runtimeId, restored: false, snapshotId: null, hostId: '', tier: plan.to.name, archiveFrom: null, stageMs: 0, restoreMs: 0, totalMs: Date.now() - started };
    }
    runtimeId = plan.runtimeId;
    const snapshotId = plan.snapshotId;

    step.set('host');
    const target = await acquireHost({ userId: input.userId, tier: plan.to, baseHostId: plan.baseHostId, workflowId: workflowInfo().workflowId });
    if (target.owned) undo.push({ name: 'terminate the host', run: () => db.terminateHost({ hostId: target.hostId, reason: `return of user ${input.userId} failed` }) });
    tagOperation({ operation: Operation.returnRuntime, userId: input.userId, targetHost: target.hostId, instanceType: plan.to.instanceType ?? 'base' });

    step.set('prepare');
    const leased = await db.leaseRuntimePort({ userId: input.userId, hostId: target.hostId });
    undo.push({ name: 'remove the restored copy', run: () => onHost.discardRestored({ hostId: target.hostId, containerName: plan.containerName, port: leased.port }) });
    const { uid, gid } = plan.containerUser;
    await onHost.prepareHome({ userId: input.userId, hostId: target.hostId, uid, gid });
    if (target.hostId !== plan.baseHostId) await waiting.syncHome({ migrationId: uuid4(), userId: input.userId, sourceHostId: plan.baseHostId, targetHostId: target.hostId });

    step.set('restore');
    const restored = await restoreArchive({ userId: input.userId, snapshotId, hostId: target.hostId, containerName: plan.containerName, port: leased.port, memoryBytes: plan.to.memoryBytes, cpus: plan.to.cpus });

    step.set('health');
    await waiting.waitForRuntime({ runtimeId: plan.runtimeId, address: leased.address, port: leased.port });

    // The editor stayed through the idle time (unless configured away): it is told the new address before
    // the runtime row says `running`, so the edge never sends the user to an editor with a stale runtime.
    step.set('switch');
    if (plan.editor) {
      const runtime = { runtimeId: plan.runtimeId, hostId: target.hostId, containerName: plan.containerName, port: leased.port, address: leased.address, state: 'running', tier: plan.to.name, memoryLimitBytes: restored.memoryLimitBytes, cpuLimit: plan.to.cpus };
      await waiting.readyEditor({ editorId: plan.editor.editorId, userId: input.userId, address: plan.editor.address, port: plan.editor.port, runtime });
    }

    step.set('commit');
    const totalMs = Date.now() - started;
    await CancellationScope.nonCancellable(() => db.commitReturn({
      userId: input.userId,
      runtimeId: plan.runtimeId,
      snapshotId,
      hostId: target.hostId,
      port: leased.port,
      address: leased.address,
      containerName: plan.containerName,
      tier: plan.to.name,
      memoryLimitBytes: restored.memoryLimitBytes,
      cpuLimit: plan.to.cpus,
      timings: { stageMs: restored.stageMs, restoreMs: restored.restoreMs, totalMs, archiveFrom: restored.from },
    }));
    undo.length = 0;

    step.set('cleanup');
    // The idle archive is done with: the runtime has moved on from it.
    await CancellationScope.nonCancellable(() => cleanup.deleteSnapshot({ userId: input.userId, snapshotId, force: true }));
    step.set('done');
    setStatus('completed');
    return { userId: input.userId, runtimeId: plan.runtimeId, restored: true, snapshotId, hostId: target.hostId, tier: plan.to.name, archiveFrom: restored.from, stageMs: restored.stageMs, restoreMs: restored.restoreMs, totalMs };
  } catch (err) {
    step.set('failed');
    await runUndo(undo);
    if (runtimeId) {
      const id = runtimeId;
      await CancellationScope.nonCancellable(() => db.failReturn({ runtimeId: id })).catch(() => undefined);
    }
    setEndStatus(err);
    throw err;
  }
}

/** A named snapshot of the running runtime (`--leave-running`: the user keeps working), kept on the base server and in S3. */
export async function snapshotRuntime(input: SnapshotRuntimeInput): Promise<SnapshotRuntimeResult> {
  invalid('snapshotRuntime', validateSnapshotRuntimeInput(input));
  requireEntityParent(input.userId, 'snapshotRuntime', 'snapshot');
  const step = stepper();
  tagOperation({ operation: Operation.snapshot, userId: input.userId });
  const snapshotId = uuid4();
  const name = input.name ?? `snapshot-${new Date(Date.now()).toISOString().replace(/[:]/g, '-').replace(/\..*$/, 'Z')}`;
  let begun = false;
  try {
    const plan = await db.beginSnapshot({ snapshotId, userId: input.userId, name, kind: 'named', workflowId: workflowInfo().workflowId });
    begun = true;
    tagOperation({ operation: Operation.snapshot, userId: input.userId, sourceHost: plan.runtime.hostId });
    const { archive, uploaded } = await archiveRuntime(plan, step, { pauseAfter: false });
    await db.finishSnapshot({ snapshotId });
    step.set('done');
    setStatus('completed');
    return { snapshotId, userId: input.userId, name, sizeBytes: archive.bytes, sha256: archive.sha256, s3Key: uploaded.key, checkpointMs: archive.checkpointMs, frozenMs: archive.frozenMs };
  } catch (err) {
    const failedAt = step.get();
    step.set('failed');
    if (begun) await CancellationScope.nonCancellable(() => db.failSnapshot({ snapshotId, error: `${failedAt}: ${errorMessage(err)}` })).catch(() => undefined);
    setEndStatus(err);
    throw err;
  }
}

/**
 * Puts the user's runtime back to a named snapshot: the snapshot is restored beside the current runtime
 * (a container and port of its own), and only once it answers is the editor pointed at it and the
 * previous runtime removed. Failing leaves the previous runtime serving.
 */
export async function restoreSnapshot(input: RestoreSnapshotInput): Promise<RestoreSnapshotResult> {
  invalid('restoreSnapshot', validateRestoreSnapshotInput(input));
  requireEntityParent(input.userId, 'restoreSnapshot', 'restoreSnapshot');
  const step = stepper(refuseCancelAt(['done'], 'the snapshot runs'));
  tagOperation({ operation: Operation.restoreSnapshot, userId: input.userId });
  const restoreId = uuid4();
  const undo: { name: string; run: () => Promise<unknown> }[] = [];
  try {
    const plan = await db.planRestore({ userId: input.userId, restoreId, ...(input.snapshotId ? { snapshotId: input.snapshotId } : {}), ...(input.name !== undefined ? { name: input.name } : {}) });
    const { runtime } = plan;
    tagOperation({ operation: Operation.restoreSnapshot, userId: input.userId, targetHost: runtime.hostId });
    step.set('prepare');
    const leased = await db.leaseRuntimePort({ userId: input.userId, hostId: runtime.hostId, holder: restoreId });
    undo.push({ name: 'remove the restored copy', run: () => onHost.discardRestored({ hostId: runtime.hostId, containerName: plan.containerName, port: leased.port }) });

    step.set('restore');
    const restored = await restoreArchive({ userId: input.userId, snapshotId: plan.snapshotId, hostId: runtime.hostId, containerName: plan.containerName, port: leased.port, memoryBytes: runtime.memoryLimitBytes, cpus: runtime.cpuLimit });
    step.set('health');
    await waiting.waitForRuntime({ runtimeId: runtime.runtimeId, address: leased.address, port: leased.port });

    step.set('switch');
    const placed = { ...runtime, containerName: plan.containerName, port: leased.port, address: leased.address, state: 'running' };
    const editor = plan.editor;
    if (editor) {
      undo.push({ name: 'point the editor back', run: () => waiting.readyEditor({ editorId: editor.editorId, userId: input.userId, address: editor.address, port: editor.port, runtime }) });
      await waiting.readyEditor({ editorId: editor.editorId, userId: input.userId, address: editor.address, port: editor.port, runtime: placed });
    }
    await CancellationScope.nonCancellable(() => db.commitRestore({
      userId: input.userId,
      runtimeId: runtime.runtimeId,
      snapshotId: plan.snapshotId,
      hostId: runtime.hostId,
      port: leased.port,
      address: leased.address,
      containerName: plan.containerName,
      previous: { containerName: runtime.containerName, port: runtime.port, hostId: runtime.hostId },
      tier: runtime.tier,
      memoryLimitBytes: restored.memoryLimitBytes,
      cpuLimit: runtime.cpuLimit,
    }));
    undo.length = 0;
    step.set('done');
    setStatus('completed');
    return { userId: input.userId, snapshotId: plan.snapshotId, name: plan.snapshotName, runtimeId: runtime.runtimeId, containerName: plan.containerName, hostId: runtime.hostId, port: leased.port, archiveFrom: restored.from, restoreMs: restored.restoreMs };
  } catch (err) {
    step.set('failed');
    await runUndo(undo);
    setEndStatus(err);
    throw err;
  }
}

/**
 * A CRIU clone of the user's running runtime for the AI assistant: same variables, its own container,
 * port, network and copy of the files, never the user's editor traffic. Destroyed by DELETE or, at the
 * latest, by the expiry schedule.
 */
export async function forkSandbox(input: ForkSandboxInput): Promise<SandboxResult> {
  invalid('forkSandbox', validateForkSandboxInput(input));
  requireEntityParent(input.userId, 'forkSandbox', 'sandbox');
  const step = stepper();
  tagOperation({ operation: Operation.sandbox, userId: input.userId });
  const sandboxId = uuid4();
  let planned = false;
  try {
    const plan = await db.planSandbox({ userId: input.userId, sandboxId, ttlSeconds: input.ttlSeconds ?? sandboxTtl.defaultSeconds, ...(input.hostId ? { hostId: input.hostId } : {}) });
    planned = true;
    tagOperation({ operation: Operation.sandbox, userId: input.userId, sourceHost: plan.runtime.hostId, targetHost: plan.hostId });
    step.set('fork');
    const result = await checkpointWhenIdle(() => bulk.forkSandbox({ sandboxId }), false);
    step.set('done');
    setStatus('completed');
    return result;
  } catch (err) {
    step.set('failed');
    if (planned) await CancellationScope.nonCancellable(() => cleanup.destroySandbox({ sandboxId, reason: `fork failed: ${errorMessage(err)}` })).catch(() => undefined);
    setEndStatus(err);
    throw err;
  }
}

/** Removes a sandbox (container, port, files). Safe to repeat; not through the entity (the user's runtime is untouched). */
export async function destroySandbox(input: DestroySandboxInput): Promise<{ sandboxId: string; destroyed: boolean }> {
  invalid('destroySandbox', validateSandboxIdInput(input, 'sandboxId'));
  const step = stepper();
  tagOperation({ operation: Operation.destroySandbox, userId: input.userId });
  step.set('destroy');
  const r = await cleanup.destroySandbox({ sandboxId: input.sandboxId, reason: input.reason ?? 'destroyed on request' });
  step.set('done');
  setStatus('completed');
  return { sandboxId: input.sandboxId, ...r };
}

/** Deletes a snapshot's archive from the base server and S3. Safe to repeat. */
export async function deleteSnapshot(input: DeleteSnapshotInput): Promise<{ snapshotId: string; deleted: boolean }> {
  invalid('deleteSnapshot', validateSandboxIdInput(input, 'snapshotId'));
  const step = stepper();
  tagOperation({ operation: Operation.deleteSnapshot, userId: input.userId });
  step.set('delete');
  try {
    const r = await cleanup.deleteSnapshot({ userId: input.userId, snapshotId: input.snapshotId });
    step.set('done');
    setStatus('completed');
    return { snapshotId: input.snapshotId, ...r };
  } catch (err) {
    step.set('failed');
    setEndStatus(err);
    throw err;
  }
}

/** The schedule's run (markco-sandbox-expiry, every minute): every sandbox past its expiry is destroyed. */
export async function expireSandboxes(): Promise<{ destroyed: string[] }> {
  const step = stepper();
  tagOperation({ operation: Operation.sandboxExpiry });
  const expired = await db.expiredSandboxes();
  step.set('destroy');
  const destroyed: string[] = [];
  for (const s of expired) {
    try {
      if ((await cleanup.destroySandbox({ sandboxId: s.sandboxId, reason: 'expired' })).destroyed) destroyed.push(s.sandboxId);
    } catch (err) {
      log.warn('destroying an expired sandbox failed', { sandboxId: s.sandboxId, error: errorMessage(err) });
    }
  }
  step.set('done');
  setStatus('completed');
  return { destroyed };
}
