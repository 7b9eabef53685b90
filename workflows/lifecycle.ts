import { ApplicationFailure, CancellationScope, isCancellation, log, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { ErrorType } from './contracts/errors.js';
import { cancelUpdate, stepQuery, type CancelRequest } from './contracts/messages.js';
import { workflowIds } from './contracts/operations.js';
import { SearchAttr } from './contracts/search-attributes.js';
import type { Operation, OperationStatus } from './contracts/operations.js';

/**
 * Tags the running workflow for the Web UI. Workflows set these themselves, so operations started from
 * the `temporal` CLI without --search-attribute flags are just as searchable.
 */
export function tagOperation(tags: {
  operation: Operation;
  userId?: string;
  sourceHost?: string;
  targetHost?: string;
  instanceType?: string;
}): void {
  const pairs = [
    { key: SearchAttr.operation, value: tags.operation },
    { key: SearchAttr.status, value: 'running' },
    ...(tags.userId ? [{ key: SearchAttr.userId, value: tags.userId }] : []),
    ...(tags.sourceHost ? [{ key: SearchAttr.sourceHost, value: tags.sourceHost }] : []),
    ...(tags.targetHost ? [{ key: SearchAttr.targetHost, value: tags.targetHost }] : []),
    ...(tags.instanceType ? [{ key: SearchAttr.instanceType, value: tags.instanceType }] : []),
  ];
  upsertSearchAttributes(pairs);
}

export function setStatus(status: OperationStatus): void {
  upsertSearchAttributes([{ key: SearchAttr.status, value: status }]);
}

/** The MarkcoStatus of a run that ends with this error: a cancellation (the CLI's or the update's) is not a failure. */
export function setEndStatus(err: unknown): void {
  setStatus(isCancellation(err) ? 'cancelled' : 'failed');
}

export interface OperatorControls {
  /** The step the workflow is on (the `step` query's answer). */
  step: () => string;
  /** Why the workflow cannot be cancelled at this step, or undefined when it can. */
  refuseCancel?: (step: string) => string | undefined;
  /** What cancelling means when it is not cancelling the whole run (the entity cancels its running child). */
  cancel?: (request: CancelRequest) => void;
}

/** A refuseCancel for workflows whose listed steps come after their commit: nothing is left to undo there. */
export function refuseCancelAt(steps: readonly string[], committed: string): (step: string) => string | undefined {
  return (step) =>
    steps.includes(step) ? `too late to cancel at step ${step}: ${committed}` : step === 'failed' ? 'it has already failed and is undoing its steps' : undefined;
}

/**
 * The `step` query and the `cancel` update. An accepted cancel cancels the workflow's scope, so its
 * own undo steps run exactly as for `temporal workflow cancel`; a refused one leaves it untouched and
 * answers why. Call it where the workflow body starts, in the scope to be cancelled.
 */
export function operatorControls(controls: OperatorControls): void {
  const scope = CancellationScope.current();
  setHandler(stepQuery, controls.step);
  setHandler(
    cancelUpdate,
    (request) => {
      const step = controls.step();
      log.info('cancel requested by an operator', { step, reason: request?.reason ?? '' });
      if (controls.cancel) controls.cancel(request ?? {});
      else scope.cancel();
      return { step };
    },
    {
      validator: (request) => {
        if (request !== undefined && (typeof request !== 'object' || request === null || (request.reason !== undefined && typeof request.reason !== 'string'))) {
          throw new Error('cancel takes {"reason"?: string}');
        }
        const refused = controls.refuseCancel?.(controls.step());
        if (refused) throw new Error(refused);
      },
    },
  );
}

export function errorMessage(err: unknown): string {
  let e: unknown = err;
  // ActivityFailure wraps the activity's ApplicationFailure: report the cause, which says what happened.
  while (e && typeof e === 'object' && 'cause' in e && (e as { cause?: unknown }).cause) e = (e as { cause: unknown }).cause;
  return e instanceof Error ? e.message : String(e);
}

/**
 * Operations that change a user's runtime run only as children of the user's entity, which runs one at
 * a time (invariant 1). A direct start is refused with the command that goes through the entity.
 */
export function requireEntityParent(userId: string, workflowType: string, updateName: string): void {
  const entity = workflowIds.runtime(userId);
  if (workflowInfo().parent?.workflowId === entity) return;
  throw ApplicationFailure.create({
    type: ErrorType.InvalidInput,
    nonRetryable: true,
    message:
      `${workflowType} runs only through the user's runtime entity ${entity}, one operation at a time: ` +
      `temporal workflow execute-update-with-start --type userRuntime --workflow-id ${entity} --id-conflict-policy UseExisting ` +
      `--task-queue <queue> --input '{"userId":"${userId}"}' --update-name ${updateName} --update-input '<the same JSON input>'`,
  });
}
