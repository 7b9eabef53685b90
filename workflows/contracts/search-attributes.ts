import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Custom search attributes every lifecycle workflow carries, so operators can filter in the Web UI
 * ("all migrations of user X", "everything stuck in transfer"). Ids and states only, never personal data.
 */
export const SearchAttr = {
  userId: defineSearchAttributeKey('MarkcoUserId', SearchAttributeType.KEYWORD),
  operation: defineSearchAttributeKey('MarkcoOperation', SearchAttributeType.KEYWORD),
  sourceHost: defineSearchAttributeKey('MarkcoSourceHost', SearchAttributeType.KEYWORD),
  targetHost: defineSearchAttributeKey('MarkcoTargetHost', SearchAttributeType.KEYWORD),
  instanceType: defineSearchAttributeKey('MarkcoInstanceType', SearchAttributeType.KEYWORD),
  status: defineSearchAttributeKey('MarkcoStatus', SearchAttributeType.KEYWORD),
  /** On the entity `runtime/<userId>`: running, migrating, starting, stopping, stopped. */
  runtimeState: defineSearchAttributeKey('MarkcoRuntimeState', SearchAttributeType.KEYWORD),
  /** On the entity: the host the runtime is on now. */
  host: defineSearchAttributeKey('MarkcoHost', SearchAttributeType.KEYWORD),
} as const;

/** name -> type, as the `temporal` CLI and the operator service take them. */
export const searchAttributeDefinitions: Record<string, 'Keyword'> = Object.fromEntries(
  Object.values(SearchAttr).map((k) => [k.name, 'Keyword' as const]),
);
