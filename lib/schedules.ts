import { ScheduleAlreadyRunning, WorkflowExecutionAlreadyStartedError, ScheduleOverlapPolicy, type Client, type ScheduleOptionsStartWorkflowAction, type ScheduleUpdateOptions } from '@temporalio/client';
import type { ReapInstancesInput } from '../workflows/contracts/elastic.js';
import { workflowIds } from '../workflows/contracts/operations.js';
import type { reapInstances } from '../workflows/reaper.js';
import type { expireSandboxes } from '../workflows/snapshots.js';
import type { ResourceMonitorInput } from '../workflows/monitor.js';

/** The reaper's schedule id (also the prefix of its runs' workflow ids: markco-reaper-<time>). */
export const reaperScheduleId = workflowIds.reaper;

/**
 * Creates the schedule that runs reapInstances every 5 minutes, or brings an existing one to this
 * definition (a changed task queue or interval after a deploy). Overlap Skip: a slow reaper run is
 * never joined by a second one. Idempotent; returns whether it had to create the schedule.
 */
export async function ensureReaperSchedule(
  client: Client,
  taskQueue: string,
  opts: { every?: string; input?: ReapInstancesInput } = {},
): Promise<{ created: boolean }> {
  const action: ScheduleOptionsStartWorkflowAction<typeof reapInstances> = {
    type: 'startWorkflow',
    workflowType: 'reapInstances',
    workflowId: reaperScheduleId,
    taskQueue,
    args: [opts.input ?? {}],
    workflowExecutionTimeout: '10m',
  };
  const definition: ScheduleUpdateOptions<ScheduleOptionsStartWorkflowAction<typeof reapInstances>> = {
    spec: { intervals: [{ every: opts.every ?? '5m' }] },
    action,
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '5m', pauseOnFailure: false },
    state: { note: 'Terminates managed EC2 instances that nothing needs (docs/runbook.md)' },
  };
  return ensureSchedule(client, reaperScheduleId, definition);
}

/** The schedule id of the sandbox expiry (its runs' workflow ids: markco-sandbox-expiry-<time>). */
export const sandboxExpiryScheduleId = workflowIds.sandboxExpiry;

/**
 * Creates (or brings up to date) the schedule that destroys expired AI sandboxes every minute
 * (expireSandboxes). `scheduleId` is for tests, which run one of their own.
 */
export async function ensureSandboxExpirySchedule(client: Client, taskQueue: string, opts: { every?: string; scheduleId?: string } = {}): Promise<{ created: boolean }> {
  const scheduleId = opts.scheduleId ?? sandboxExpiryScheduleId;
  const definition: ScheduleUpdateOptions<ScheduleOptionsStartWorkflowAction<typeof expireSandboxes>> = {
    spec: { intervals: [{ every: opts.every ?? '1m' }] },
    action: { type: 'startWorkflow', workflowType: 'expireSandboxes', workflowId: scheduleId, taskQueue, args: [], workflowExecutionTimeout: '10m' },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '5m', pauseOnFailure: false },
    state: { note: 'Destroys AI sandboxes past their expiry (docs/runbook.md)' },
  };
  return ensureSchedule(client, scheduleId, definition);
}

async function ensureSchedule(client: Client, scheduleId: string, definition: ScheduleUpdateOptions<ScheduleOptionsStartWorkflowAction<any>>): Promise<{ created: boolean }> {
  try {
    await client.schedule.create({ scheduleId, ...definition } as never);
    return { created: true };
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    // Keep an operator's pause: only the definition is brought up to date.
    await client.schedule.getHandle(scheduleId).update((previous) => ({ ...definition, state: { ...definition.state, paused: previous.state.paused, ...(previous.state.note ? { note: previous.state.note } : {}) } }) as never);
    return { created: false };
  }
}

/**
 * Starts the resource monitor (workflow `markco-monitor`) unless it runs; a running one keeps its
 * input (terminate it to change the interval or the idle time). Returns whether it was started.
 */
export async function ensureResourceMonitor(client: Client, taskQueue: string, input: ResourceMonitorInput): Promise<{ started: boolean }> {
  try {
    await client.workflow.start('resourceMonitor', { workflowId: workflowIds.monitor, taskQueue, args: [input], workflowIdConflictPolicy: 'FAIL' });
    return { started: true };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { started: false };
    throw err;
  }
}
