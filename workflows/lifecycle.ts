import { ApplicationFailure, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { ErrorType } from './contracts/errors.js';
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
