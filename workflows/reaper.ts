import { ApplicationFailure, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { ReapInstancesInput, ReapInstancesResult } from './contracts/elastic.js';
import { ErrorType } from './contracts/errors.js';
import { Operation } from './contracts/operations.js';
import { operatorControls, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { quick } from './options.js';

const db = proxyActivities<Activities>(quick);

export function validateReapInstancesInput(input: ReapInstancesInput): string[] {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return ['input must be a JSON object'];
  const problems: string[] = [];
  if (input.graceSeconds !== undefined && (!Number.isInteger(input.graceSeconds) || input.graceSeconds < 0 || input.graceSeconds > 30 * 86_400)) {
    problems.push('graceSeconds: expected whole seconds from 0 to 2592000');
  }
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean') problems.push('dryRun: expected true or false');
  return problems;
}

/**
 * The backstop against paying for forgotten machines (schedule markco-reaper, every 5 min): terminates
 * this deployment's managed instances that nothing needs any more, and closes host rows whose instance
 * is gone. Never touches an instance without the markco:managed tag. With dryRun it only reports what
 * it would do.
 */
export async function reapInstances(input: ReapInstancesInput = {}): Promise<ReapInstancesResult> {
  const given = input ?? {};
  const problems = validateReapInstancesInput(given);
  if (problems.length > 0) {
    throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid reapInstances input: ${problems.join('; ')}`, nonRetryable: true });
  }
  let step = 'plan';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.reaper });
  try {
    const plan = await db.planReap(given.graceSeconds !== undefined ? { graceSeconds: given.graceSeconds } : {});
    const chosen = plan.decisions.filter((d) => d.action === 'terminate');
    const terminated: ReapInstancesResult['terminated'] = [];
    const rowsClosed: string[] = [];
    if (given.dryRun) {
      terminated.push(...chosen.map(({ instanceId, hostId, reason }) => ({ instanceId, hostId, reason })));
      rowsClosed.push(...plan.lostHosts);
    } else {
      step = 'terminate';
      for (const d of chosen) {
        const r = await db.reapInstance({ instanceId: d.instanceId, hostId: d.hostId, graceSeconds: plan.graceSeconds, reason: d.reason });
        if (r.terminated) terminated.push({ instanceId: d.instanceId, hostId: d.hostId, reason: d.reason });
      }
      step = 'close-rows';
      for (const hostId of plan.lostHosts) if ((await db.closeLostHost({ hostId })).closed) rowsClosed.push(hostId);
    }
    step = 'done';
    setStatus('completed');
    return { examined: plan.examined, terminated, kept: plan.examined - terminated.length, rowsClosed };
  } catch (err) {
    step = 'failed';
    setEndStatus(err);
    throw err;
  }
}
