import { ApplicationFailure, CancellationScope, executeChild, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ErrorType } from './contracts/errors.js';
import { Operation, workflowIds } from './contracts/operations.js';
import { SearchAttr } from './contracts/search-attributes.js';
import type {
  ImportProjectInput,
  ImportProjectResult,
  LoginInput,
  LoginResult,
  RuntimePlacement,
  RuntimeStats,
  StopRuntimeInput,
  StopRuntimeResult,
} from './contracts/user-environment.js';
import { Plans, userIdPattern } from './contracts/users.js';
import { errorMessage, operatorControls, requireEntityParent, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { hostCommand, quick } from './options.js';
import { returnRuntime } from './snapshots.js';

const db = proxyActivities<Activities>(quick);
const onHost = proxyActivities<Activities>(hostCommand);
/** Health waits poll inside one activity and heartbeat, so a dead worker is noticed within seconds. */
const waiting = proxyActivities<Activities>({
  startToCloseTimeout: '90s',
  heartbeatTimeout: '15s',
  retry: { initialInterval: '1s', maximumAttempts: 2, nonRetryableErrorTypes: [ErrorType.InvalidInput, ErrorType.NotFound] },
});
const statsReader = proxyActivities<Activities>({ startToCloseTimeout: '20s', retry: { maximumAttempts: 2 } });
const cloning = proxyActivities<Activities>({
  startToCloseTimeout: '3m',
  retry: { initialInterval: '2s', maximumAttempts: 3, nonRetryableErrorTypes: [ErrorType.InvalidInput, ErrorType.NotFound, ErrorType.Conflict] },
});

function invalid(operation: string, problems: string[]): never {
  throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid ${operation} input: ${problems.join('; ')}`, nonRetryable: true });
}

function userIdProblems(input: { userId?: unknown } | null | undefined): string[] {
  if (typeof input !== 'object' || input === null) return ['input must be a JSON object'];
  return typeof input.userId === 'string' && userIdPattern.test(input.userId) ? [] : ['userId: expected a lowercase UUID'];
}

export function validateLoginInput(input: LoginInput): string[] {
  const problems = userIdProblems(input);
  if (problems.length === 0 && input.plan !== undefined && !Plans.includes(input.plan)) problems.push(`plan: expected one of ${Plans.join(', ')}`);
  return problems;
}

/**
 * Makes sure the user's runtime and editor exist and answer (MRP `/capabilities`, editor `/health`),
 * the editor pointed at the runtime. Every step looks before it makes, so running it again, or twice at
 * once (the edge starts it with USE_EXISTING), leaves one runtime and one editor.
 */
export async function login(input: LoginInput): Promise<LoginResult> {
  const problems = validateLoginInput(input);
  if (problems.length > 0) invalid('login', problems);
  requireEntityParent(input.userId, 'login', 'login');
  let step = 'plan';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.login, userId: input.userId });
  const { workflowId } = workflowInfo();
  let runtime: RuntimePlacement | undefined;
  let runtimeHealthy = false;
  let editorMade = false;
  try {
    let plan = await db.planLogin({ userId: input.userId, ...(input.plan ? { plan: input.plan } : {}) });
    if (plan.checkpointed) {
      // The seeds started a fresh runtime here and lost the user's state (their bug J): restore it first.
      step = 'return';
      await executeChild(returnRuntime, {
        workflowId: workflowIds.returnRuntime(input.userId),
        args: [{ userId: input.userId }],
        typedSearchAttributes: [
          { key: SearchAttr.userId, value: input.userId },
          { key: SearchAttr.operation, value: Operation.returnRuntime },
        ],
      });
      plan = await db.planLogin({ userId: input.userId });
    }
    if (plan.ready) {
      step = 'done';
      await db.appendEvent({ type: 'user.login-ready', userId: input.userId, workflowId, payload: { runtimeHost: plan.ready.runtime.hostId, warm: true } });
      setStatus('completed');
      return { userId: input.userId, runtime: plan.ready.runtime, editor: plan.ready.editor, homeInitialized: false, timings: { runtimeReadyMs: 0, editorReadyMs: 0 } };
    }
    const { uid, gid } = plan.containerUser;
    step = 'prepare-home';
    const hostsOfUser = [...new Set([plan.runtimeHostId, plan.editorHostId])];
    const homes = await Promise.all(hostsOfUser.map((hostId) => onHost.prepareHome({ userId: input.userId, hostId, uid, gid })));
    step = 'start-runtime';
    runtime = await onHost.ensureRuntime({ userId: input.userId, hostId: plan.runtimeHostId, plan: plan.user.plan, uid, gid });
    // The editor starts while the runtime boots; both settle before anything else happens, so a
    // compensation never races a step still running.
    step = 'start-editor';
    editorMade = true;
    const [runtimeWait, editorStart] = await Promise.allSettled([
      waiting.waitForRuntime({ runtimeId: runtime.runtimeId, address: runtime.address, port: runtime.port }),
      onHost.ensureEditor({ userId: input.userId, hostId: plan.editorHostId, runtime, uid, gid, profile: plan.user }),
    ]);
    if (runtimeWait.status === 'rejected') {
      step = 'wait-runtime';
      throw runtimeWait.reason;
    }
    runtimeHealthy = true;
    const runtimeReady = runtimeWait.value;
    if (editorStart.status === 'rejected') throw editorStart.reason;
    const editor = editorStart.value;
    step = 'wait-editor';
    const editorReady = await waiting.readyEditor({ editorId: editor.editorId, userId: input.userId, address: editor.address, port: editor.port, runtime });
    step = 'done';
    await db.appendEvent({
      type: 'user.login-ready',
      userId: input.userId,
      workflowId,
      payload: { runtimeHost: runtime.hostId, runtimeReadyMs: runtimeReady.readyMs, editorReadyMs: editorReady.readyMs },
    });
    setStatus('completed');
    return {
      userId: input.userId,
      runtime: { ...runtime, state: 'running' },
      editor: { ...editor, state: 'running' },
      homeInitialized: homes.some((h) => h.initialized),
      timings: { runtimeReadyMs: runtimeReady.readyMs, editorReadyMs: editorReady.readyMs },
    };
  } catch (err) {
    const failedAt = step;
    step = 'failed';
    await CancellationScope.nonCancellable(async () => {
      try {
        // Only what this login made and never saw healthy is removed; a healthy runtime keeps serving.
        if (runtime && !runtimeHealthy) await onHost.discardRuntime({ runtimeId: runtime.runtimeId, reason: `login failed at ${failedAt}: ${errorMessage(err)}` });
        if (editorMade) await onHost.discardEditor({ userId: input.userId, reason: errorMessage(err) });
        await db.appendEvent({ type: 'user.login-failed', userId: input.userId, workflowId, payload: { step: failedAt, error: errorMessage(err) } });
      } catch (compensationError) {
        log.warn('compensating a failed login failed', { error: errorMessage(compensationError) });
      }
    });
    setEndStatus(err);
    throw err;
  }
}

/** Removes the user's runtime container (the compute API's DELETE); the editor stays for the next login. */
export async function stopRuntime(input: StopRuntimeInput): Promise<StopRuntimeResult> {
  const problems = userIdProblems(input);
  if (problems.length > 0) invalid('stopRuntime', problems);
  requireEntityParent(input.userId, 'stopRuntime', 'stopRuntime');
  let step = 'remove';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.stopRuntime, userId: input.userId });
  try {
    const removed = await onHost.removeRuntime({ userId: input.userId });
    step = 'done';
    setStatus('completed');
    return { userId: input.userId, ...removed };
  } catch (err) {
    step = 'failed';
    setEndStatus(err);
    throw err;
  }
}

/** Live memory and CPU of the user's runtime, read on its host (GET /api/runtimes/:userId). */
export async function runtimeStats(input: { userId: string }): Promise<RuntimeStats | null> {
  const problems = userIdProblems(input);
  if (problems.length > 0) invalid('runtimeStats', problems);
  tagOperation({ operation: Operation.runtimeStats, userId: input.userId });
  operatorControls({ step: () => 'read' });
  const stats = await statsReader.readRuntimeStats({ userId: input.userId });
  setStatus('completed');
  return stats;
}

/** Clones a public git repository into the user's projects (POST /projects/import). */
export async function importProject(input: ImportProjectInput): Promise<ImportProjectResult> {
  const problems = userIdProblems(input);
  if (typeof input?.repoUrl !== 'string' || input.repoUrl.length === 0) problems.push('repoUrl: expected a git URL');
  if (input?.timeoutMs !== undefined && (!Number.isInteger(input.timeoutMs) || input.timeoutMs < 1000 || input.timeoutMs > 600_000)) problems.push('timeoutMs: expected 1000 to 600000');
  if (problems.length > 0) invalid('importProject', problems);
  let step = 'plan';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.importProject, userId: input.userId });
  try {
    const plan = await db.planLogin({ userId: input.userId });
    step = 'clone';
    const result = await cloning.importProject({ ...input, hostId: plan.editorHostId, uid: plan.containerUser.uid, gid: plan.containerUser.gid });
    step = 'done';
    setStatus('completed');
    return result;
  } catch (err) {
    step = 'failed';
    setEndStatus(err);
    throw err;
  }
}
