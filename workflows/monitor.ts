import { ApplicationFailure, CancellationScope, condition, continueAsNew, isCancellation, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { ErrorType } from './contracts/errors.js';
import { Operation } from './contracts/operations.js';
import { errorMessage, operatorControls, tagOperation } from './lifecycle.js';
import { quick } from './options.js';

const db = proxyActivities<Activities>(quick);

export interface ResourceMonitorInput {
  /** Sampling interval per host (ms; default 2000). */
  intervalMs?: number;
  /** No CPU above 1% and no traffic from the user for this long makes a runtime idle (ms; default 15 min). */
  idleAfterMs?: number;
  /** How long one watch of a host runs before it is renewed (ms; default 5 min). */
  watchForMs?: number;
  /** How often the list of hosts is read again (ms; default 30 s). */
  rescanMs?: number;
}

export function validateResourceMonitorInput(input: ResourceMonitorInput): string[] {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return ['input must be a JSON object'];
  const problems: string[] = [];
  const check = (name: keyof ResourceMonitorInput, min: number, max: number) => {
    const v = input[name];
    if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) problems.push(`${name}: expected whole milliseconds from ${min} to ${max}`);
  };
  check('intervalMs', 100, 60_000);
  check('idleAfterMs', 1000, 7 * 86_400_000);
  check('watchForMs', 5000, 3_600_000);
  check('rescanMs', 1000, 600_000);
  return problems;
}

/**
 * The resource monitor (one, id `markco-monitor`): a heartbeating watch of every ready host, each
 * sampling its runtime containers every `intervalMs` and signalling the users' entities (memory
 * readings, idle-sleep). Durable: a watch whose worker died times out on its heartbeat and is started
 * again; a new host is picked up at the next rescan; continue-as-new keeps the history short.
 */
export async function resourceMonitor(input: ResourceMonitorInput = {}): Promise<void> {
  const given = input ?? {};
  const problems = validateResourceMonitorInput(given);
  if (problems.length > 0) throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid resourceMonitor input: ${problems.join('; ')}`, nonRetryable: true });
  const intervalMs = given.intervalMs ?? 2000;
  const idleAfterMs = given.idleAfterMs ?? 15 * 60_000;
  const watchForMs = given.watchForMs ?? 5 * 60_000;
  const rescanMs = given.rescanMs ?? 30_000;
  tagOperation({ operation: Operation.monitor });
  const watching = new Map<string, CancellationScope>();
  operatorControls({ step: () => `watching ${[...watching.keys()].join(', ') || 'no host'}` });
  const watcher = proxyActivities<Activities>({
    startToCloseTimeout: watchForMs + 120_000,
    heartbeatTimeout: Math.max(15_000, intervalMs * 5),
    retry: { maximumAttempts: 1 },
  });
  let finished = 0;

  const watch = (hostId: string) => {
    const scope = new CancellationScope();
    watching.set(hostId, scope);
    scope
      .run(() => watcher.watchHost({ hostId, intervalMs, idleAfterMs, forMs: watchForMs }))
      .catch((err: unknown) => {
        if (!isCancellation(err)) log.warn('a host watch ended with an error; it starts again at the next rescan', { hostId, error: errorMessage(err) });
      })
      .finally(() => {
        if (watching.get(hostId) === scope) watching.delete(hostId);
        finished++;
      });
  };

  for (;;) {
    const hosts = await db.monitoredHosts();
    for (const hostId of hosts) if (!watching.has(hostId)) watch(hostId);
    for (const [hostId, scope] of watching) if (!hosts.includes(hostId)) scope.cancel();
    const seen = finished;
    await condition(() => finished !== seen, rescanMs);
    if (workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > 2000) {
      for (const scope of watching.values()) scope.cancel();
      await condition(() => watching.size === 0);
      await continueAsNew<typeof resourceMonitor>(given);
    }
  }
}
