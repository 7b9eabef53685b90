import {
  allHandlersFinished,
  ApplicationFailure,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  ParentClosePolicy,
  proxyActivities,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  WorkflowIdReusePolicy,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { validateDeleteAccountInput, type DeleteAccountInput } from './contracts/accounts.js';
import type { MigrateRuntimeInput, MigrateRuntimeResult } from './contracts/elastic.js';
import { ErrorType } from './contracts/errors.js';
import { Operation, workflowIds } from './contracts/operations.js';
import {
  codeHintSignal,
  deleteAccountUpdate,
  entityStateQuery,
  gpuUseUpdate,
  idleSignal,
  spotInterruptionSignal,
  wakeSignal,
  idleUpdate,
  loginUpdate,
  restoreSnapshotUpdate,
  sandboxUpdate,
  snapshotUpdate,
  migrateUpdate,
  pressureSignal,
  stopRuntimeUpdate,
  type CodeHintEvent,
  type EntityOperationKind,
  type GpuUseAnswer,
  type IdleEvent,
  type MigrateRequest,
  type OperationRef,
  type PressureSignal,
  type SpotInterruptionEvent,
  type UserRuntimeInput,
  type WakeEvent,
} from './contracts/runtime-entity.js';
import { SearchAttr } from './contracts/search-attributes.js';
import type { LoginInput, LoginResult, StopRuntimeInput } from './contracts/user-environment.js';
import {
  validateForkSandboxInput,
  validateIdleCheckpointInput,
  validateRestoreSnapshotInput,
  validateSnapshotRuntimeInput,
  type ForkSandboxInput,
  type IdleCheckpointInput,
  type RestoreSnapshotInput,
  type RestoreSnapshotResult,
  type SnapshotRuntimeInput,
} from './contracts/snapshots.js';
import { userIdPattern } from './contracts/users.js';
import { errorMessage, operatorControls, tagOperation } from './lifecycle.js';
import * as gpuPolicy from './gpu-policy.js';
import { escalateSignal, migrationOperation, validateMigrateInput } from './migrate.js';
import { quick } from './options.js';
import {
  currentBand,
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
} from './runtime-policy.js';
import { validateLoginInput } from './user-environment.js';

const db = proxyActivities<Activities>(quick);

interface QueuedOperation {
  kind: EntityOperationKind;
  input: LoginInput | StopRuntimeInput | MigrateRuntimeInput | IdleCheckpointInput | SnapshotRuntimeInput | RestoreSnapshotInput | ForkSandboxInput | DeleteAccountInput;
  started?: OperationRef;
  failedToStart?: string;
}

interface Carried {
  policy: PolicyState;
  gpu?: gpuPolicy.GpuState;
  interruptedHosts?: string[];
  operationsRun: number;
  /** The account is being deleted (a deletion that failed is retried through the same entity). */
  deleting?: boolean;
}

const childTypes: Record<EntityOperationKind, string> = {
  login: 'login',
  'stop-runtime': 'stopRuntime',
  migrate: 'migrateRuntime',
  'gpu-hop': 'migrateRuntime',
  idle: 'idleCheckpoint',
  snapshot: 'snapshotRuntime',
  restore: 'restoreSnapshot',
  sandbox: 'forkSandbox',
  'delete-account': 'deleteAccount',
};

const childIds: Record<EntityOperationKind, (userId: string) => string> = {
  login: workflowIds.login,
  'stop-runtime': workflowIds.stopRuntime,
  migrate: workflowIds.migrate,
  'gpu-hop': workflowIds.migrate,
  idle: workflowIds.idle,
  snapshot: workflowIds.snapshot,
  restore: workflowIds.restoreSnapshot,
  sandbox: workflowIds.sandbox,
  'delete-account': workflowIds.deleteAccount,
};

const childOperations: Record<Exclude<EntityOperationKind, 'migrate' | 'gpu-hop'>, Operation> = {
  login: Operation.login,
  'stop-runtime': Operation.stopRuntime,
  idle: Operation.idle,
  snapshot: Operation.snapshot,
  restore: Operation.restoreSnapshot,
  sandbox: Operation.sandbox,
  'delete-account': Operation.deleteAccount,
};

function invalid(problems: string[]): never {
  throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: problems.join('; '), nonRetryable: true });
}

function epochOf(at: string | number): number {
  return typeof at === 'number' ? at : Date.parse(at);
}

/**
 * The user's runtime, as one long-lived workflow: it runs login, stop and migrate as children one at a
 * time (invariant 1), joins a request to an operation of the same kind already running or queued, and
 * turns memory readings into at most one action per threshold crossing (invariant 2, runtime-policy.ts).
 */
export async function userRuntime(input: UserRuntimeInput): Promise<void> {
  if (typeof input !== 'object' || input === null || typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) {
    invalid(['invalid userRuntime input: userId: expected a lowercase UUID']);
  }
  const { userId } = input;
  let config: PolicyConfig = { ...defaultPolicyConfig, ...(input.scaleDownAfterMs !== undefined ? { scaleDownAfterMs: input.scaleDownAfterMs } : {}) };
  const maxHistoryEvents = input.maxHistoryEvents ?? 5000;
  const carried = input.carried as Carried | undefined;
  let policy: PolicyState = carried?.policy ?? initialPolicyState(null);
  let operationsRun = carried?.operationsRun ?? 0;
  let gpu: gpuPolicy.GpuState = carried?.gpu ?? gpuPolicy.initialGpuState;
  let gpuConfig: gpuPolicy.GpuPolicyConfig = gpuPolicy.defaultGpuPolicyConfig;
  /** Hosts whose spot capacity is being reclaimed: the runtime leaves them as soon as nothing else runs. */
  const interruptedHosts = new Set<string>(carried?.interruptedHosts ?? []);
  let bigRamHintAt: number | null = null;
  const queue: QueuedOperation[] = [];
  let running: (QueuedOperation & { started: OperationRef }) | undefined;
  const preProvisioning = new Set<string>();
  /** Once set, only deleteAccount is accepted; once the deletion has succeeded, the entity ends. */
  let deleting = carried?.deleting ?? false;
  let deleted = false;
  const beingDeleted = () => `the account of user ${userId} is being deleted`;

  tagOperation({ operation: Operation.runtime, userId });
  const step = () => (running ? `running ${running.kind} (${running.started.workflowId})` : queue.length > 0 ? `starting ${queue[0]!.kind}` : 'idle');
  // The entity outlives its operations: cancelling it means cancelling the operation it runs now, whose
  // own undo steps then run (queued operations stay queued).
  operatorControls({
    step,
    refuseCancel: () => (running ? undefined : `nothing to cancel: the entity of user ${userId} runs no operation (${step()})`),
    cancel: () => {
      if (running) void getExternalWorkflowHandle(running.started.workflowId, running.started.runId).cancel().catch(() => undefined);
    },
  });
  setHandler(entityStateQuery, () => ({
    userId,
    running: running ? { operation: running.kind, workflowId: running.started.workflowId, runId: running.started.runId } : null,
    queue: queue.map((q) => q.kind),
    placement: policy.placement
      ? { runtimeId: policy.placement.runtimeId, hostId: policy.placement.hostId, tier: policy.placement.tier, memoryLimitBytes: policy.placement.memoryLimitBytes }
      : null,
    band: currentBand(policy),
    lowSince: policy.lowSince === null ? null : new Date(policy.lowSince).toISOString(),
    gpu: {
      tier: gpuConfig.tier,
      hintedAt: iso(gpu.hintedAt),
      lastUseAt: iso(gpu.lastUseAt),
      onGpu: gpuPolicy.onGpuTier(policy.placement, gpuConfig),
      idleSince: iso(gpuPolicy.gpuIdleSince(gpu, policy.placement, gpuConfig)),
    },
    operationsRun,
    deleting,
  }));

  /** Queues a request, or joins the running or queued operation of the same kind; answers once its child has started. */
  async function request(kind: EntityOperationKind, childInput: QueuedOperation['input'], front = false): Promise<OperationRef> {
    if (deleting && kind !== 'delete-account') throw ApplicationFailure.create({ type: ErrorType.Conflict, message: beingDeleted(), nonRetryable: true });
    if (running?.kind === kind) return { ...running.started, joined: true };
    const queued = queue.find((q) => q.kind === kind);
    const entry = queued ?? { kind, input: childInput };
    if (!queued) {
      if (front) queue.unshift(entry);
      else queue.push(entry);
    }
    await condition(() => entry.started !== undefined || entry.failedToStart !== undefined);
    if (entry.failedToStart !== undefined) throw ApplicationFailure.create({ type: ErrorType.Conflict, message: entry.failedToStart, nonRetryable: true });
    return { ...entry.started!, joined: queued !== undefined };
  }

  setHandler(loginUpdate, (login) => request('login', login), {
    validator: (login) => {
      const problems = validateLoginInput(login);
      if (problems.length > 0 || login.userId !== userId) invalid([`invalid login input: ${[...problems, ...(login.userId !== userId ? [`userId: this entity is ${userId}`] : [])].join('; ')}`]);
    },
  });
  setHandler(stopRuntimeUpdate, (stop) => request('stop-runtime', stop), {
    validator: (stop) => {
      if (stop?.userId !== userId) invalid([`invalid stopRuntime input: userId: this entity is ${userId}`]);
    },
  });
  /** Validates an exclusive request, then refuses it while another operation of the user runs or waits (the API's 409). */
  const exclusive = <T extends { userId: string }>(kind: EntityOperationKind, validate: (i: T) => string[]) => ({
    validator: (i: T) => {
      const problems = validate(i);
      if (problems.length === 0 && i.userId !== userId) problems.push(`userId: this entity is ${userId}`);
      if (problems.length > 0) invalid([`invalid ${kind} input: ${problems.join('; ')}`]);
      const busy = running?.kind ?? queue[0]?.kind;
      if (busy !== undefined) {
        throw ApplicationFailure.create({ type: ErrorType.Conflict, message: `another operation (${busy}) of user ${userId} is running; try ${kind} again when it has finished`, nonRetryable: true });
      }
    },
  });
  setHandler(idleUpdate, (i) => request('idle', i), exclusive('idle', validateIdleCheckpointInput));
  setHandler(snapshotUpdate, (i) => request('snapshot', i), exclusive('snapshot', validateSnapshotRuntimeInput));
  setHandler(restoreSnapshotUpdate, (i) => request('restore', i), exclusive('restore', validateRestoreSnapshotInput));
  setHandler(sandboxUpdate, (i) => request('sandbox', i), exclusive('sandbox', validateForkSandboxInput));
  setHandler(
    deleteAccountUpdate,
    async (d) => {
      if (!deleting) {
        deleting = true;
        // What waits is refused: it would act on an account that is going. The running operation finishes first.
        for (const waiting of queue.splice(0)) waiting.failedToStart = beingDeleted();
      }
      // Signed out and refused at once, even while the deletion waits for the running operation.
      await db.beginAccountDeletion({ userId, workflowId: workflowIds.deleteAccount(userId) });
      return request('delete-account', { userId, requestedBy: d.requestedBy ?? 'operator' } satisfies DeleteAccountInput, true);
    },
    {
      validator: (d) => {
        const problems = validateDeleteAccountInput(d);
        if (problems.length === 0 && d.userId !== userId) problems.push(`userId: this entity is ${userId}`);
        if (problems.length > 0) invalid([`invalid deleteAccount input: ${problems.join('; ')}`]);
      },
    },
  );
  setHandler(migrateUpdate, (m) => request('migrate', migrationInput(m)), {
    validator: (m) => {
      const problems = validateMigrateInput(migrationInput(m));
      if (problems.length > 0) invalid([`invalid migrate input: ${problems.join('; ')}`]);
      if (policy.placement && m.target === policy.placement.tier && !m.targetHostId && !running && queue.length === 0) {
        throw ApplicationFailure.create({ type: ErrorType.Conflict, message: `the runtime is already on tier ${m.target}`, nonRetryable: true });
      }
    },
  });

  function migrationInput(m: MigrateRequest): MigrateRuntimeInput {
    return {
      userId,
      target: m?.target,
      reason: m?.reason ?? 'operator',
      ...(m?.usedBytes !== undefined ? { usedBytes: m.usedBytes } : {}),
      ...(m?.targetHostId !== undefined ? { targetHostId: m.targetHostId } : {}),
    };
  }

  function act(action: PolicyAction): void {
    switch (action.kind) {
      case 'none':
        return;
      case 'pre-provision':
        void preProvision();
        return;
      case 'migrate': {
        // The GPU tier is left when its GPU work is idle (gpu-policy.ts), not by memory.
        if (gpuPolicy.onGpuTier(policy.placement, gpuConfig)) {
          log.info('memory action ignored on the GPU tier', { reason: action.reason });
          return;
        }
        const m = { userId, target: 'auto', reason: action.reason, usedBytes: action.usedBytes } satisfies MigrateRuntimeInput;
        // The answer goes nowhere: the policy is the caller. A failure to start is logged by the loop.
        request('migrate', m, action.reason === 'critical').catch(() => undefined);
        return;
      }
      case 'escalate':
        if (running?.kind === 'migrate') {
          getExternalWorkflowHandle(running.started.workflowId, running.started.runId)
            .signal(escalateSignal)
            .catch((err: unknown) => log.warn('could not escalate the running migration', { error: errorMessage(err) }));
        } else {
          const used = policy.latest?.usedBytes ?? 0;
          request('migrate', { userId, target: 'auto', reason: 'critical', usedBytes: used }, true).catch(() => undefined);
        }
        return;
    }
  }

  /**
   * Reserves a host beside the slot: a login or migration never waits for an EC2 boot. The next tier's
   * (memory pressure, big-RAM hint), or the GPU tier's (gpu-hint), each under its own workflow id.
   */
  async function preProvision(gpuTier?: string): Promise<void> {
    const workflowId = gpuTier ? workflowIds.preProvisionGpu(userId) : workflowIds.preProvision(userId);
    if (deleting || preProvisioning.has(workflowId)) return;
    preProvisioning.add(workflowId);
    try {
      await startChild('preProvisionHost', {
        workflowId,
        args: [gpuTier ? { userId, tier: gpuTier } : { userId }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
        typedSearchAttributes: [
          { key: SearchAttr.userId, value: userId },
          { key: SearchAttr.operation, value: Operation.preProvision },
        ],
      });
    } catch (err) {
      // Already running for this user: the reservation being made is the one wanted.
      log.info('pre-provision not started', { error: errorMessage(err) });
    } finally {
      preProvisioning.delete(workflowId);
    }
  }

  let readings = 0;
  setHandler(pressureSignal, (event: PressureSignal) => {
    readings++;
    const at = epochOf(event?.at);
    if (!event || typeof event.usedBytes !== 'number' || !Number.isFinite(at)) return;
    if (policy.placement && event.runtimeId === policy.placement.runtimeId && event.hostId === policy.placement.hostId) gpu = gpuPolicy.onBusy(gpu, event.busyAt);
    const decided = decide(policy, { runtimeId: event.runtimeId, hostId: event.hostId, usedBytes: event.usedBytes, ...(event.limitBytes !== undefined ? { limitBytes: event.limitBytes } : {}), at, source: event.source }, Date.now(), config);
    policy = decided.state;
    act(decided.action);
  });

  // idle-sleep from the monitor: only for the runtime where it is now, and never over another operation
  // (a login in progress is a user coming back). Repeats while idle join the idle already running.
  setHandler(idleSignal, (event: IdleEvent) => {
    const idleSince = epochOf(event?.idleSince);
    if (!event || !policy.placement || event.runtimeId !== policy.placement.runtimeId || !Number.isFinite(idleSince)) return;
    if (running ? running.kind !== 'idle' : queue.length > 0) return;
    request('idle', { userId, reason: 'idle', idleSince: Math.round(idleSince) }).catch(() => undefined);
  });

  // idle-wake from the monitor: the user or the kernel is back before the idle checkpoint started.
  setHandler(wakeSignal, (event: WakeEvent) => {
    if (!event || !policy.placement || event.runtimeId !== policy.placement.runtimeId) return;
    const at = queue.findIndex((q) => q.kind === 'idle');
    if (at < 0) return;
    const [dropped] = queue.splice(at, 1);
    dropped!.failedToStart = 'the runtime is in use again (idle-wake)';
  });

  setHandler(codeHintSignal, (event: CodeHintEvent) => {
    readings++;
    const now = Date.now();
    if (event?.kind === 'gpu-hint') {
      const decided = gpuPolicy.onHint(gpu, policy.placement, now, gpuConfig);
      gpu = decided.state;
      if (decided.action.kind === 'pre-provision') void preProvision(decided.action.tier);
    } else if (event?.kind === 'big-ram-hint') {
      // A big read is coming: the next tier boots now (once per reservation's life, not once per cell).
      if (!policy.placement || gpuPolicy.onGpuTier(policy.placement, gpuConfig) || (bigRamHintAt !== null && now - bigRamHintAt < gpuConfig.hintCooldownMs)) return;
      bigRamHintAt = now;
      void preProvision();
    }
  });

  setHandler(
    gpuUseUpdate,
    async (): Promise<GpuUseAnswer> => {
      readings++;
      const decided = gpuPolicy.onUse(gpu, policy.placement, Date.now(), gpuConfig);
      gpu = decided.state;
      if (decided.action.kind === 'none') return { onGpu: gpuPolicy.onGpuTier(policy.placement, gpuConfig), reason: decided.action.reason };
      if (decided.action.kind !== 'hop') return { onGpu: false, reason: 'nothing to do' };
      const operation = await request('gpu-hop', { userId, target: decided.action.tier, reason: 'gpu' } satisfies MigrateRuntimeInput);
      return { onGpu: false, operation };
    },
    {
      validator: (r) => {
        if (r?.userId !== userId) invalid([`invalid gpuUse input: userId: this entity is ${userId}`]);
      },
    },
  );

  setHandler(spotInterruptionSignal, (event: SpotInterruptionEvent) => {
    if (typeof event?.hostId !== 'string') return;
    readings++;
    interruptedHosts.add(event.hostId);
    if (interruptedHosts.size > 20) interruptedHosts.delete(interruptedHosts.values().next().value!);
  });

  // Handlers are registered above before anything awaits: the update that started this run is handled.
  // The worker's configuration applies unless the input sets the delay (tests, an operator's override).
  const settings = await db.runtimePolicySettings({ userId });
  if (input.scaleDownAfterMs === undefined) config = { ...config, scaleDownAfterMs: settings.scaleDownAfterMs };
  if (settings.gpu) gpuConfig = { ...gpuConfig, tier: settings.gpu.tier, idleAfterMs: settings.gpu.idleAfterMs, hintCooldownMs: Math.max(gpuConfig.retryAfterMs, settings.gpu.idleAfterMs) };
  if (!policy.placement) policy = onPlacementChanged(policy, await placementNow(userId));

  for (;;) {
    // A spot host being reclaimed is left first, before anything else queued.
    if (!running && policy.placement && interruptedHosts.has(policy.placement.hostId)) {
      const decided = gpuPolicy.onSpotInterruption(gpu, policy.placement, policy.placement.hostId, Date.now());
      gpu = decided.state;
      interruptedHosts.delete(policy.placement.hostId);
      if (decided.action.kind === 'return') requestReturn('spot-interruption', true);
    }
    const gpuDue = gpuPolicy.nextDueAt(gpu, policy.placement, gpuConfig);
    const memoryWake = policy.lowSince !== null ? Math.max(1000, policy.lowSince + config.scaleDownAfterMs - Date.now()) : policy.actedAt !== null ? config.staleActedMs + 1000 : undefined;
    const gpuWake = gpuDue !== null ? Math.max(100, gpuDue - Date.now()) : undefined;
    const wakeAfter = memoryWake === undefined ? gpuWake : gpuWake === undefined ? memoryWake : Math.min(memoryWake, gpuWake);
    const seenReadings = readings;
    // A new reading can start (or cancel) the low-memory clock: wake to re-arm the timer.
    const woke = await condition(() => queue.length > 0 || historyTooLong(maxHistoryEvents) || readings !== seenReadings, wakeAfter);
    if (woke && readings !== seenReadings && queue.length === 0) continue;
    if (!woke && queue.length === 0 && gpuDue !== null && Date.now() >= gpuDue) {
      const decided = gpuPolicy.onTimer(gpu, policy.placement, Date.now(), gpuConfig);
      gpu = decided.state;
      if (decided.action.kind === 'return') requestReturn('gpu-idle', false);
      continue;
    }
    if (!woke && policy.latest && queue.length === 0) {
      // No fresh reading arrived: a due scale-down, or the retry of a failed migration, is decided on the last one.
      if (scaleDownDue(policy, Date.now(), config) || policy.actedAt !== null) {
        const decided = decide(policy, policy.latest, Date.now(), config);
        policy = decided.state;
        act(decided.action);
      }
      continue;
    }
    if (queue.length === 0 && historyTooLong(maxHistoryEvents)) {
      // A request arriving meanwhile is served first (its handler waits for its child, so handlers only
      // finish once the queue is drained): never wait for an empty queue here.
      await condition(() => queue.length > 0 || allHandlersFinished());
      if (queue.length === 0) await continueAsNew<typeof userRuntime>({ ...input, carried: { policy, gpu, interruptedHosts: [...interruptedHosts], operationsRun, deleting } satisfies Carried });
      continue;
    }
    const next = queue.shift();
    if (!next) continue;
    await runOperation(next);
    if (deleted) {
      // The user is gone: nothing is left for this entity to serve. Requests still in flight get their refusal first.
      await condition(allHandlersFinished);
      return;
    }
  }

  /** Off the GPU host (or any spot host being reclaimed), sized from the last reading. */
  function requestReturn(reason: 'gpu-idle' | 'spot-interruption', front: boolean): void {
    const latest = policy.latest && policy.placement && policy.latest.runtimeId === policy.placement.runtimeId ? policy.latest.usedBytes : undefined;
    const m = { userId, target: 'auto', reason, ...(latest !== undefined ? { usedBytes: latest } : {}) } satisfies MigrateRuntimeInput;
    request('migrate', m, front).catch((err: unknown) => log.warn(`could not start the ${reason} migration`, { error: errorMessage(err) }));
  }

  async function runOperation(next: QueuedOperation): Promise<void> {
    const childId = childIds[next.kind](userId);
    let handle: ChildWorkflowHandle<(i: unknown) => Promise<unknown>>;
    try {
      handle = await startWithRetry(next, childId);
    } catch (err) {
      next.failedToStart = `could not start ${next.kind} for user ${userId}: ${errorMessage(err)}`;
      log.warn(next.failedToStart);
      return;
    }
    next.started = { workflowId: childId, runId: handle.firstExecutionRunId, operation: next.kind, joined: false };
    running = next as QueuedOperation & { started: OperationRef };
    operationsRun++;
    policy = onOperationStarted(policy);
    tagRuntime(runtimeStateDuring[next.kind], policy.placement?.hostId);
    let placementChanged = false;
    let placement: Placement | null | undefined;
    try {
      const result = await handle.result();
      placement = placementFrom(next.kind, result);
      placementChanged = placement !== undefined;
      if (next.kind === 'delete-account') deleted = true;
    } catch (err) {
      log.info(`${next.kind} failed`, { error: errorMessage(err) });
      // A failed migration, snapshot or fork leaves the runtime where it was; a failed login may still have made one.
      if (!['migrate', 'gpu-hop', 'snapshot', 'sandbox'].includes(next.kind)) {
        placement = await placementNow(userId);
        placementChanged = true;
      }
    }
    running = undefined;
    const wasOnGpu = gpuPolicy.onGpuTier(policy.placement, gpuConfig);
    policy = onOperationFinished(policy, placementChanged);
    if (placement !== undefined) policy = onPlacementChanged(policy, placement);
    if (wasOnGpu && !gpuPolicy.onGpuTier(policy.placement, gpuConfig)) gpu = gpuPolicy.onLeftGpu(gpu);
    tagRuntime(deleted ? 'deleted' : policy.placement ? 'running' : next.kind === 'idle' && placementChanged ? 'checkpointed' : 'stopped', policy.placement?.hostId);
  }

  async function startWithRetry(next: QueuedOperation, childId: string): Promise<ChildWorkflowHandle<(i: unknown) => Promise<unknown>>> {
    const operation = next.kind === 'migrate' || next.kind === 'gpu-hop' ? migrationOperation((next.input as MigrateRuntimeInput).reason) : childOperations[next.kind];
    const options = {
      workflowId: childId,
      args: [next.input] as [unknown],
      parentClosePolicy: ParentClosePolicy.ABANDON,
      workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
      typedSearchAttributes: [
        { key: SearchAttr.userId, value: userId },
        { key: SearchAttr.operation, value: operation },
      ],
    };
    // A run under the same id that started outside this entity (before it existed) must finish first.
    for (let attempt = 0; ; attempt++) {
      try {
        return await startChild<(i: unknown) => Promise<unknown>>(childTypes[next.kind], options);
      } catch (err) {
        if (attempt >= 60 || !/already started|AlreadyStarted/i.test(errorMessage(err) + String((err as Error).name))) throw err;
        await sleep(2000);
      }
    }
  }

  /** Where the runtime is after a child finished: null when it has none running, undefined when unchanged. */
  function placementFrom(kind: EntityOperationKind, result: unknown): Placement | null | undefined {
    const now = Date.now();
    if (kind === 'stop-runtime' || kind === 'idle' || kind === 'delete-account') return null;
    if (kind === 'snapshot' || kind === 'sandbox') return undefined;
    if (kind === 'restore') {
      const r = result as RestoreSnapshotResult;
      return policy.placement ? { ...policy.placement, hostId: r.hostId, since: now } : undefined;
    }
    if (kind === 'login') {
      const r = (result as LoginResult).runtime;
      return { runtimeId: r.runtimeId, hostId: r.hostId, tier: r.tier, memoryLimitBytes: r.memoryLimitBytes, since: now };
    }
    const m = result as MigrateRuntimeResult;
    return { runtimeId: m.runtimeId, hostId: m.targetHostId, tier: m.toTier, memoryLimitBytes: m.memoryLimitBytes, since: now };
  }
}

const runtimeStateDuring: Record<EntityOperationKind, string> = {
  login: 'starting',
  'stop-runtime': 'stopping',
  migrate: 'migrating',
  'gpu-hop': 'migrating',
  idle: 'checkpointing',
  snapshot: 'snapshotting',
  restore: 'restoring',
  sandbox: 'forking',
  'delete-account': 'deleting',
};

async function placementNow(userId: string): Promise<Placement | null> {
  const p = await db.currentPlacement({ userId });
  return p ? { ...p, since: Date.now() } : null;
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function historyTooLong(maxHistoryEvents: number): boolean {
  const info = workflowInfo();
  return info.continueAsNewSuggested || info.historyLength > maxHistoryEvents;
}

/** MarkcoRuntimeState and MarkcoHost: "where is user X's runtime and what is it doing" in the Web UI. */
function tagRuntime(state: string, hostId?: string): void {
  upsertSearchAttributes([
    { key: SearchAttr.runtimeState, value: state },
    ...(hostId ? [{ key: SearchAttr.host, value: hostId }] : []),
  ]);
}
