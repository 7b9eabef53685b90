import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import type { HostShell } from './host-shell.js';

export interface TransferProgress {
  bytes: number;
  elapsedMs: number;
}

export interface TransferResult {
  bytes: number;
  sha256: string;
  durationMs: number;
}

export class ChecksumMismatchError extends Error {
  constructor(readonly expected: string, readonly actual: string, readonly targetHost: string) {
    super(`checksum mismatch after transfer to host ${targetHost}: sent ${expected}, the target wrote ${actual}`);
    this.name = 'ChecksumMismatchError';
  }
}

/** Counts and hashes the bytes passing through, and reports progress at most every `everyMs`. */
class Meter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  private lastReport = 0;
  private readonly started = Date.now();
  constructor(private readonly onProgress: ((p: TransferProgress) => void) | undefined, private readonly everyMs: number) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    const now = Date.now();
    if (this.onProgress && now - this.lastReport >= this.everyMs) {
      this.lastReport = now;
      this.onProgress({ bytes: this.bytes, elapsedMs: now - this.started });
    }
    cb(null, chunk);
  }
}

/**
 * Streams a file from one host to another through this process (no intermediate file), hashing on the
 * way; the target hashes what it wrote, and only a matching file is renamed into place. Works between
 * any two hosts, local or ssh.
 */
export async function streamFileBetweenHosts(opts: {
  from: HostShell;
  fromPath: string;
  to: HostShell;
  toPath: string;
  onProgress?: (p: TransferProgress) => void;
  progressEveryMs?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}): Promise<TransferResult> {
  for (const p of [opts.fromPath, opts.toPath]) {
    if (!p.startsWith('/') || p.includes('\0')) throw new Error(`transfer paths must be absolute: ${JSON.stringify(p)}`);
  }
  const started = Date.now();
  const partial = `${opts.toPath}.partial`;
  const meter = new Meter(opts.onProgress, opts.progressEveryMs ?? 1000);
  const common = { signal: opts.signal, timeoutMs: opts.timeoutMs };
  const reader = await opts.from.openReader(['cat', '--', opts.fromPath], common);
  reader.stdout.on('error', (err) => meter.destroy(err));
  const writing = opts.to.run(
    ['sh', '-c', 'umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && sha256sum -- "$1"', 'markco-receive', partial],
    { ...common, stdin: reader.stdout.pipe(meter) },
  );
  let written: string;
  try {
    const [readResult, writeResult] = await Promise.allSettled([reader.done, writing]);
    if (readResult.status === 'rejected') throw readResult.reason;
    if (writeResult.status === 'rejected') throw writeResult.reason;
    written = writeResult.value.stdout.trim().split(/\s+/)[0] ?? '';
  } catch (err) {
    await opts.to.run(['rm', '-f', '--', partial]).catch(() => undefined);
    throw err;
  }
  const sent = meter.hash.digest('hex');
  if (written !== sent) {
    await opts.to.run(['rm', '-f', '--', partial]).catch(() => undefined);
    throw new ChecksumMismatchError(sent, written, opts.to.hostId);
  }
  await opts.to.run(['mv', '-f', '--', partial, opts.toPath]);
  return { bytes: meter.bytes, sha256: sent, durationMs: Date.now() - started };
}
