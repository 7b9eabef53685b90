import { ApplicationFailure } from '@temporalio/workflow';
import type { ReapInstancesInput, ReapInstancesResult } from './contracts/elastic.js';

// Placeholder until the EC2-hosts work lands.
export async function reapInstances(_input: ReapInstancesInput): Promise<ReapInstancesResult> {
  throw ApplicationFailure.nonRetryable('reapInstances is not built yet');
}
