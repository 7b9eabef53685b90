import type { IncomingMessage } from 'node:http';
import { analyzeCode, executeCodeOf } from '../../lib/code-hints.js';
import type { Logger } from '../../lib/logger.js';
import type { Operations } from '../../lib/operations.js';

/**
 * Code hints at the edge (issue 6): the MRP execute requests a user's browser sends to their runtime are
 * read on the way through. GPU libraries and big reads are signalled to the user's entity (which boots a
 * host in the background); a cell that puts work on the GPU is held until the runtime has hopped onto a
 * GPU host (bounded by `gpuWaitMs`; then it runs where it is), so it runs where the GPU is.
 */
export function createExecuteHints(deps: { operations: Pick<Operations, 'signalCodeHint' | 'awaitGpu'>; gpuWaitMs: number; log: Pick<Logger, 'info' | 'warn'> }) {
  /** The same hint for the same user at most this often: the entity dedupes too, this spares it the signals. */
  const hintEveryMs = 30_000;
  const hinted = new Map<string, number>();
  /** Users whose runtime was on the GPU at their last GPU cell: their next one need not wait for the answer. */
  const onGpuUntil = new Map<string, number>();

  const hint = (userId: string, kind: 'gpu-hint' | 'big-ram-hint', matched: string[]) => {
    const key = `${userId}:${kind}`;
    const now = Date.now();
    if ((hinted.get(key) ?? 0) + hintEveryMs > now) return;
    hinted.set(key, now);
    if (hinted.size > 100_000) hinted.clear();
    deps.operations.signalCodeHint(userId, { kind, matched, at: now, source: 'edge' }).catch((err: unknown) => {
      hinted.delete(key);
      deps.log.warn({ err, userId, kind }, 'could not signal a code hint');
    });
  };

  return {
    /** Reads the whole request body (an execute request is a small JSON document); forwarded as read. */
    async readBody(req: IncomingMessage): Promise<Buffer> {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },

    /** Signals what the cell's code hints at; resolves when the cell may go on (at once unless it uses the GPU). */
    async beforeExecute(userId: string, body: Buffer): Promise<void> {
      const code = executeCodeOf(body);
      if (code === undefined) return;
      const hints = analyzeCode(code);
      if (hints.bigRam) hint(userId, 'big-ram-hint', hints.matched);
      if (!hints.gpuHint) return;
      if (!hints.gpuUse) {
        hint(userId, 'gpu-hint', hints.matched);
        return;
      }
      const request = { userId, matched: hints.matched, source: 'edge' };
      if ((onGpuUntil.get(userId) ?? 0) > Date.now()) {
        // Still counts as GPU use (the idle clock), but the cell does not wait for the answer.
        void deps.operations.awaitGpu(userId, request, 0).catch(() => undefined);
        return;
      }
      const started = Date.now();
      const result = await deps.operations.awaitGpu(userId, request, deps.gpuWaitMs).catch((err: unknown) => ({ outcome: 'not-moved' as const, reason: (err as Error).message }));
      if (result.outcome === 'on-gpu' || result.outcome === 'moved') onGpuUntil.set(userId, Date.now() + 10_000);
      if (result.outcome !== 'on-gpu') deps.log.info({ userId, ...result, heldMs: Date.now() - started }, 'a GPU cell waited for the GPU hop');
    },
  };
}

export type ExecuteHints = ReturnType<typeof createExecuteHints>;
