import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
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
export class ByteMeter extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  private lastReport = 0;
  private readonly started = Date.now();
  constructor(private readonly onProgress?: (p: TransferProgress) => void, private readonly everyMs = 1000) {
    super();
  }
  /** The sha256 of everything that passed (call once, after the end). */
  hex(): string {
    return this.hash.digest('hex');
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
  /** Rewrites the bytes on the way (before hashing, so both ends agree on what the target got). */
  transform?: Transform;
  /** The file is kept only if the target's hash is this one. */
  expectedSha256?: string;
}): Promise<TransferResult> {
  assertTransferPath(opts.fromPath);
  const common = { signal: opts.signal, timeoutMs: opts.timeoutMs };
  const reader = await opts.from.openReader(['cat', '--', opts.fromPath], common);
  opts.transform?.on('error', () => undefined);
  const source = opts.transform ? reader.stdout.pipe(opts.transform) : reader.stdout;
  reader.stdout.on('error', (err) => opts.transform?.destroy(err));
  return writeStreamToHost({ ...opts, source, sourceDone: reader.done });
}

function assertTransferPath(p: string): void {
  if (!p.startsWith('/') || p.includes('\0')) throw new Error(`transfer paths must be absolute: ${JSON.stringify(p)}`);
}

/**
 * Writes a stream into a file on a host, hashing it here on the way while the host hashes what it wrote;
 * only a file whose two hashes agree (and equal `expectedSha256`, when the stream's origin gave one) is
 * renamed into place, and a failed or mismatched write leaves nothing behind.
 */
export async function writeStreamToHost(opts: {
  source: Readable;
  /** Settles when whatever produces `source` is done (a reader command); its failure fails the write. */
  sourceDone?: Promise<unknown>;
  to: HostShell;
  toPath: string;
  expectedSha256?: string;
  onProgress?: (p: TransferProgress) => void;
  progressEveryMs?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}): Promise<TransferResult> {
  assertTransferPath(opts.toPath);
  const started = Date.now();
  const partial = `${opts.toPath}.partial`;
  const meter = new ByteMeter(opts.onProgress, opts.progressEveryMs ?? 1000);
  // A broken source destroys the meter with its error; the read side's promise reports it, so this
  // listener only keeps an unhandled 'error' from taking the whole worker down.
  meter.on('error', () => undefined);
  opts.source.on('error', (err: Error) => meter.destroy(err));
  const common = { signal: opts.signal, timeoutMs: opts.timeoutMs };
  const writing = opts.to.run(
    // openssl hashes a GiB in about 1.2 s against coreutils' 7 s on our hosts; sha256sum where openssl is missing.
    ['sh', '-c', 'umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && { openssl dgst -sha256 -r "$1" 2>/dev/null || sha256sum -- "$1"; }', 'markco-receive', partial],
    { ...common, stdin: opts.source.pipe(meter) },
  );
  let written: string;
  try {
    const [readResult, writeResult] = await Promise.allSettled([opts.sourceDone ?? Promise.resolve(), writing]);
    if (readResult.status === 'rejected') throw readResult.reason;
    if (writeResult.status === 'rejected') throw writeResult.reason;
    written = writeResult.value.stdout.trim().split(/\s+/)[0] ?? '';
  } catch (err) {
    await opts.to.run(['rm', '-f', '--', partial]).catch(() => undefined);
    throw err;
  }
  const sent = meter.hash.digest('hex');
  const expected = opts.expectedSha256 ?? sent;
  if (written !== sent || sent !== expected) {
    await opts.to.run(['rm', '-f', '--', partial]).catch(() => undefined);
    throw new ChecksumMismatchError(expected, written !== sent ? written : sent, opts.to.hostId);
  }
  await opts.to.run(['mv', '-f', '--', partial, opts.toPath]);
  return { bytes: meter.bytes, sha256: sent, durationMs: Date.now() - started };
}

const BLOCK = 512;

function octal(field: Buffer): number {
  // GNU base-256 for sizes beyond the 11 octal digits (8 GiB): high bit of the first byte set.
  if (field[0]! & 0x80) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text === '' ? 0 : Number.parseInt(text, 8);
}

function setOctal(header: Buffer, offset: number, length: number, value: number): void {
  header.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'latin1');
}

function withChecksum(header: Buffer): Buffer {
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return header;
}

/**
 * Rewrites named small members of a tar stream as it passes (the rest flows through untouched, and once
 * every named member has been seen, without parsing). Used for a checkpoint archive's config.dump and
 * spec.dump, which sit before the memory images.
 */
export class TarMemberRewriter extends Transform {
  private buffered: Buffer = Buffer.alloc(0);
  private remaining: Set<string>;
  /** Bytes of the current member (data + padding) still to pass through unparsed. */
  private passBytes = 0;
  private passthrough = false;
  private paxSize: number | undefined;
  private longName: string | undefined;
  private pending: { header: Buffer; name: string; size: number; data: Buffer[]; got: number; kind: 'rewrite' | 'pax' | 'longname' } | undefined;
  private headChunks: Buffer[] | undefined = [];
  private settleHead!: { resolve: (head: Buffer) => void; reject: (err: Error) => void };
  /**
   * Everything emitted up to the end of the last named member, as a tar of its own (end-of-archive
   * blocks appended): a streamed restore hands it to podman before the rest arrives (ImportMode).
   * Rejects when the archive ends, or the stream fails, before every named member was seen.
   */
  readonly head: Promise<Buffer> = new Promise<Buffer>((resolve, reject) => {
    this.settleHead = { resolve, reject };
  });

  constructor(
    members: string[],
    private readonly rewrite: (name: string, data: Buffer) => Buffer,
    private readonly maxMemberBytes = 4 * 1024 * 1024,
  ) {
    super();
    this.remaining = new Set(members);
    this.head.catch(() => undefined);
    this.on('error', (err) => this.endHead(err));
  }

  private headBytes = 0;

  private forward(chunk: Buffer): void {
    if (this.headChunks) {
      this.headChunks.push(Buffer.from(chunk));
      this.headBytes += chunk.length;
      // The named members sit near the start; a head this big means they are not where expected.
      if (this.headBytes > 256 * 1024 * 1024) this.endHead(new Error('no head within the first 256 MiB of the archive'));
    }
    this.push(chunk);
  }

  private endHead(failure?: Error): void {
    const chunks = this.headChunks;
    if (!chunks) return;
    this.headChunks = undefined;
    if (failure) this.settleHead.reject(failure);
    else this.settleHead.resolve(Buffer.concat([...chunks, Buffer.alloc(2 * BLOCK)]));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      if (this.passthrough) return cb(null, chunk);
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
      this.drain();
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.buffered.length) this.push(this.buffered);
    this.buffered = Buffer.alloc(0);
    this.endHead(new Error(`the archive ended before ${[...this.remaining].join(', ') || 'its head'}`));
    cb();
  }

  private drain(): void {
    for (;;) {
      if (this.passthrough) {
        if (this.buffered.length) this.push(this.buffered);
        this.endHead(this.remaining.size === 0 ? undefined : new Error(`the archive ended before ${[...this.remaining].join(', ')}`));
        this.buffered = Buffer.alloc(0);
        return;
      }
      if (this.passBytes > 0) {
        const n = Math.min(this.passBytes, this.buffered.length);
        if (n === 0) return;
        this.forward(this.buffered.subarray(0, n));
        this.buffered = this.buffered.subarray(n);
        this.passBytes -= n;
        continue;
      }
      if (this.pending) {
        const padded = Math.ceil(this.pending.size / BLOCK) * BLOCK;
        if (this.buffered.length < padded) return;
        const data = this.buffered.subarray(0, this.pending.size);
        const whole = this.buffered.subarray(0, padded);
        this.buffered = this.buffered.subarray(padded);
        const p = this.pending;
        this.pending = undefined;
        if (p.kind === 'pax') {
          this.paxSize = Number(/(?:^|\n)\d+ size=(\d+)\n/.exec(data.toString('utf8'))?.[1] ?? NaN) || undefined;
          this.forward(p.header);
          this.forward(whole);
        } else if (p.kind === 'longname') {
          this.longName = data.toString('utf8').replace(/\0+$/, '');
          this.forward(p.header);
          this.forward(whole);
        } else {
          const replaced = this.rewrite(p.name, Buffer.from(data));
          const header = Buffer.from(p.header);
          setOctal(header, 124, 12, replaced.length);
          this.forward(withChecksum(header));
          this.forward(replaced);
          const pad = (BLOCK - (replaced.length % BLOCK)) % BLOCK;
          if (pad) this.forward(Buffer.alloc(pad));
          this.remaining.delete(p.name);
          if (this.remaining.size === 0) {
            this.endHead();
            this.passthrough = true;
          }
        }
        continue;
      }
      if (this.buffered.length < BLOCK) return;
      const header = Buffer.from(this.buffered.subarray(0, BLOCK));
      this.buffered = this.buffered.subarray(BLOCK);
      if (header.every((b) => b === 0)) {
        // End of archive (two zero blocks): nothing more to rewrite.
        this.forward(header);
        this.passthrough = true;
        continue;
      }
      const type = String.fromCharCode(header[156]!);
      const prefix = header.subarray(345, 500).toString('latin1').replace(/\0.*$/s, '');
      const shortName = header.subarray(0, 100).toString('latin1').replace(/\0.*$/s, '');
      const name = this.longName ?? (prefix ? `${prefix}/${shortName}` : shortName);
      const size = this.paxSize ?? octal(header.subarray(124, 136));
      this.paxSize = undefined;
      this.longName = undefined;
      if (type === 'x' || type === 'g') {
        this.pending = { header, name, size, data: [], got: 0, kind: 'pax' };
      } else if (type === 'L') {
        this.pending = { header, name, size, data: [], got: 0, kind: 'longname' };
      } else if ((type === '0' || type === '\0') && this.remaining.has(name) && size <= this.maxMemberBytes) {
        this.pending = { header, name, size, data: [], got: 0, kind: 'rewrite' };
      } else {
        this.forward(header);
        this.passBytes = Math.ceil(size / BLOCK) * BLOCK;
      }
    }
  }
}
