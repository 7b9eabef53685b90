import type { Worker } from '@temporalio/worker';

/**
 * The end of a bench that started the real parts: the worker stopped (bounded: an activity ignoring its
 * cancellation must not hold the teardown), then the clients, the database and the harness, each
 * failure ignored so the rest still goes. Every bench calls it on success, on failure and on a signal.
 */
export async function stopBenchParts(parts: {
  worker?: Worker | undefined;
  workerRunning?: Promise<void> | undefined;
  closers?: (() => Promise<unknown> | unknown)[];
  harness?: { teardown(): Promise<void> } | undefined;
}): Promise<void> {
  if (parts.worker) {
    parts.worker.shutdown();
    const stuck = await Promise.race([parts.workerRunning?.then(() => false, () => false) ?? Promise.resolve(false), new Promise<boolean>((r) => setTimeout(() => r(true), 30_000).unref())]);
    if (stuck) console.error('the worker did not stop within 30 s of its shutdown (an activity ignored its cancellation); tearing down anyway');
  }
  for (const close of parts.closers ?? []) {
    try {
      await close();
    } catch {
      // Best effort: the harness's teardown removes what is left on the hosts.
    }
  }
  await parts.harness?.teardown();
}

/** Ctrl-C or a kill runs the bench's cleanup once, then exits 130. */
export function cleanUpOnSignal(cleanup: () => Promise<void>): { readonly stopping: boolean } {
  const state = { stopping: false };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      if (state.stopping) return;
      state.stopping = true;
      console.error(`\n${sig}: cleaning up`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  return state;
}
