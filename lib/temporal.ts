import type { Connection } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import proto from '@temporalio/proto';
import { searchAttributeDefinitions } from '../workflows/contracts/search-attributes.js';

const indexedType = proto.temporal.api.enums.v1.IndexedValueType;

/**
 * Registers the custom search attributes every workflow uses, on any Temporal server (the dev server
 * and a production cluster alike). Idempotent: returns the names it had to add.
 */
export async function ensureSearchAttributes(connection: Connection | NativeConnection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const present = new Set(Object.keys(existing.customAttributes ?? {}));
  const missing = Object.keys(searchAttributeDefinitions).filter((name) => !present.has(name));
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((name) => [name, indexedType.INDEXED_VALUE_TYPE_KEYWORD])),
  });
  return missing;
}
