import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `probe` until it resolves; the error names what never came up and the last reason. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T>,
  opts: { timeoutMs: number; intervalMs?: number; fatal?: () => boolean },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      return await probe();
    } catch (err) {
      last = err;
      if (opts.fatal?.()) break;
    }
    if (Date.now() >= deadline) break;
    await sleep(opts.intervalMs ?? 200);
  }
  throw new Error(`${what} did not come up within ${opts.timeoutMs} ms: ${last instanceof Error ? last.message : String(last)}`);
}

/** Whether a process with this pid exists (signal 0 checks without signalling). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A signal (SIGTERM by default) to the child's process group, SIGKILL after a grace period; resolves once it has exited. */
export async function stopChild(child: ChildProcess, graceMs: number, first: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (sig: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  };
  signal(first);
  const timer = setTimeout(() => signal('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
