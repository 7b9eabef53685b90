import { upsertSearchAttributes } from '@temporalio/workflow';
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
