import { ApplicationFailure, CancellationScope, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ErrorType } from './contracts/errors.js';
import { hostIdPattern, HostKinds, type RegisterHostInput, type RegisterHostResult } from './contracts/hosts.js';
import { Operation } from './contracts/operations.js';
import { errorMessage, operatorControls, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { hostCommand, quick } from './options.js';

const db = proxyActivities<Activities>(quick);
const onHost = proxyActivities<Activities>(hostCommand);

export function validateRegisterHostInput(input: RegisterHostInput): string[] {
  const problems: string[] = [];
  if (typeof input !== 'object' || input === null) return ['input must be a JSON object'];
  if (typeof input.hostId !== 'string' || !hostIdPattern.test(input.hostId)) problems.push('hostId: expected lowercase letters, digits, dots and dashes (at most 63)');
  if (!HostKinds.includes(input.kind)) problems.push(`kind: expected one of ${HostKinds.join(', ')}`);
  if (typeof input.address !== 'string' || input.address.trim() === '') problems.push('address: expected the host address');
  if (input.sshPort !== undefined && (!Number.isInteger(input.sshPort) || input.sshPort < 1 || input.sshPort > 65535)) problems.push('sshPort: expected a TCP port');
  if (input.kind === 'ec2') {
    if (!input.hostKey) problems.push('hostKey: an EC2 host needs a pinned ssh host key');
    if (!input.instanceId) problems.push('instanceId: an EC2 host needs its instance id');
  }
  return problems;
}

/**
 * Records a host, probes it (podman, runc, CRIU versions, CPUs, memory) over the host-access layer and
 * marks it ready, or failed with the reason. Safe to run again for the same host.
 */
export async function registerHost(input: RegisterHostInput): Promise<RegisterHostResult> {
  const problems = validateRegisterHostInput(input);
  if (problems.length > 0) {
    throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid registerHost input: ${problems.join('; ')}`, nonRetryable: true });
  }
  let step = 'record';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.registerHost, targetHost: input.hostId, ...(input.instanceType ? { instanceType: input.instanceType } : {}) });
  const { workflowId } = workflowInfo();
  try {
    await db.recordHost(input);
    step = 'probe';
    const facts = await onHost.probeHost({ hostId: input.hostId });
    step = 'mark-ready';
    await db.markHostReady({ hostId: input.hostId, facts });
    await db.appendEvent({ type: 'host.registered', hostId: input.hostId, workflowId, payload: { ...facts } });
    step = 'done';
    setStatus('completed');
    return { hostId: input.hostId, state: 'ready', facts };
  } catch (err) {
    step = 'failed';
    // Compensation never masks the failure it compensates for: the caller sees the original error.
    await CancellationScope.nonCancellable(async () => {
      try {
        await db.markHostFailed({ hostId: input.hostId, error: errorMessage(err) });
        await db.appendEvent({ type: 'host.register-failed', hostId: input.hostId, workflowId, payload: { error: errorMessage(err) } });
      } catch (compensationError) {
        log.warn('recording the failure failed', { error: errorMessage(compensationError) });
      }
    });
    setEndStatus(err);
    throw err;
  }
}
