import type { ActivityOptions } from '@temporalio/workflow';
import { permanentErrorTypes } from './contracts/errors.js';

/** Named activity presets: every retry is bounded and permanent failure types are never retried. */
export const quick: ActivityOptions = {
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '15s', maximumAttempts: 8, nonRetryableErrorTypes: permanentErrorTypes },
};

/** Commands on a host: a host that is briefly unreachable is retried for a few minutes. */
export const hostCommand: ActivityOptions = {
  startToCloseTimeout: '2m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 10, nonRetryableErrorTypes: permanentErrorTypes },
};

/** Health waits and home syncs: they poll inside one activity and heartbeat, so a dead worker shows within 30 s. */
export const heartbeatingWait: ActivityOptions = {
  startToCloseTimeout: '3m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '1s', maximumAttempts: 3, nonRetryableErrorTypes: permanentErrorTypes },
};
