import { ApplicationFailure } from '@temporalio/workflow';
import type { PreProvisionInput, PreProvisionResult, ProvisionedHost, ProvisionHostInput } from './contracts/elastic.js';

// Placeholder until the EC2-hosts work lands.
export async function provisionHost(_input: ProvisionHostInput): Promise<ProvisionedHost> {
  throw ApplicationFailure.nonRetryable('provisionHost is not built yet');
}

export async function preProvisionHost(_input: PreProvisionInput): Promise<PreProvisionResult> {
  throw ApplicationFailure.nonRetryable('preProvisionHost is not built yet');
}
