import { ApplicationFailure } from '@temporalio/workflow';
import type { MigrateRuntimeInput, MigrateRuntimeResult } from './contracts/elastic.js';

export async function migrateRuntime(_input: MigrateRuntimeInput): Promise<MigrateRuntimeResult> {
  throw ApplicationFailure.nonRetryable('migrateRuntime is not built yet');
}
