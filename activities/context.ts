import { Context } from '@temporalio/activity';

/** The running activity's context, or undefined when a function is called outside one (tools, tests). */
export function currentActivity(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** Cancellation for the running activity; never aborts outside an activity. */
export function activitySignal(): AbortSignal | undefined {
  return currentActivity()?.cancellationSignal;
}

/** Records progress (and lets cancellation arrive) when inside an activity; a no-op elsewhere. */
export function heartbeat(details?: unknown): void {
  currentActivity()?.heartbeat(details);
}
