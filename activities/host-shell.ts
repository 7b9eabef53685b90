import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { Client, type ClientChannel, type ConnectConfig } from 'ssh2';
import type { HostConnection } from '../workflows/contracts/hosts.js';

/**
 * One interface to run a command on a host and to stream bytes in and out of it: local child processes
 * for the base server, ssh2 for every other host. Commands are argv arrays; nothing passes through a
 * local shell, and remote commands are quoted here, in one place.
 */
export interface HostShell {
  readonly hostId: string;
  /** Runs argv to completion. Rejects with HostCommandError on an unexpected exit code (stderr included). */
  run(argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Starts argv and hands its stdout over as a stream; `done` settles when the command has exited. */
  openReader(argv: readonly string[], opts?: RunOptions): Promise<{ stdout: Readable; done: Promise<RunResult> }>;
  /**
   * Starts argv as a process of this machine (a local child, or an OpenSSH client for a bulk command on an
   * ssh host) for an OS-level pipeline: its stdout is the process's own pipe, left unread for the next
   * command's `stdinFrom`, and with `stdinFrom` its stdin is that pipe itself. Bytes between two such
   * commands never pass through this process. Undefined where the shell cannot (a host reached only
   * through ssh2); absent on shells that never can.
   */
  startPiped?(argv: readonly string[], opts: PipedRunOptions): PipedCommand | undefined;
  /** Whether startPiped can start commands here. */
  canPipe?(): boolean;
  close(): Promise<void>;
}

export interface PipedRunOptions extends Omit<RunOptions, 'stdin' | 'bulk'> {
  /** The stdout of another piped command: becomes this command's stdin (and is closed in this process). */
  stdinFrom?: Readable;
  /** `pipe` (default): stdout is handed over for a next command; `capture`: collected into the result, as run() does. */
  stdout?: 'pipe' | 'capture';
}

export interface PipedCommand {
  /** The command's stdout pipe (with `stdout: 'pipe'`): hand it to the next command's `stdinFrom`; never read it here. */
  stdout: Readable;
  /** Settles when the command has exited; with a piped stdout its result's stdout is empty, stderr is kept. */
  done: Promise<RunResult>;
}

export interface RunOptions {
  /** Bytes or a stream fed to the command's stdin (closed afterwards). */
  stdin?: string | Buffer | Readable;
  /** Kill the command after this long (default: the shell's command timeout). */
  timeoutMs?: number;
  /** Cancellation (for example an activity's cancellationSignal()). */
  signal?: AbortSignal;
  /** Exit codes that count as success (default [0]). */
  okExitCodes?: readonly number[];
  /** Cap on captured stdout; beyond it the result is marked truncated (default 16 MiB). */
  maxStdoutBytes?: number;
  /**
   * The command moves bulk bytes (a checkpoint): on an ssh host it runs under an OpenSSH client process
   * instead of an ssh2 channel, so the bytes never pass through JavaScript's ssh framing (measured 2-3x
   * slower, docs/benchmarks.md). Same key, same pinned host key, same quoting and kill semantics.
   */
  bulk?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  durationMs: number;
  stdoutTruncated: boolean;
}

const STDERR_TAIL_BYTES = 8192;
const pgidMarker = 'markco-pgid:';
const DEFAULT_MAX_STDOUT = 16 * 1024 * 1024;

export class HostCommandError extends Error {
  constructor(
    readonly hostId: string,
    readonly command: string,
    readonly exitCode: number | null,
    readonly signalName: string | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    const how = exitCode === null ? `was killed by ${signalName ?? 'a signal'}` : `exited with ${exitCode}`;
    const detail = (stderr.trim() || stdout.trim()).slice(-2000);
    super(`command \`${abbreviate(command)}\` on host ${hostId} ${how}${detail ? `: ${detail}` : ''}`);
    this.name = 'HostCommandError';
  }
}

export class HostTimeoutError extends Error {
  constructor(
    readonly hostId: string,
    readonly command: string,
    readonly timeoutMs: number,
    readonly stderr: string,
  ) {
    super(`command \`${abbreviate(command)}\` on host ${hostId} did not finish within ${timeoutMs} ms${stderr.trim() ? `: ${stderr.trim().slice(-1000)}` : ''}`);
    this.name = 'HostTimeoutError';
  }
}

export type ConnectFailure = 'timeout' | 'auth' | 'host-key' | 'refused' | 'unreachable' | 'no-host-key' | 'other';

export class HostConnectError extends Error {
  constructor(
    readonly hostId: string,
    readonly reason: ConnectFailure,
    message: string,
  ) {
    super(`cannot reach host ${hostId}: ${message}`);
    this.name = 'HostConnectError';
  }
}

export class HostAbortError extends Error {
  constructor(readonly hostId: string, readonly command: string) {
    super(`command \`${abbreviate(command)}\` on host ${hostId} was cancelled`);
    this.name = 'AbortError';
  }
}

/** `work`, or the abort's error as soon as `signal` aborts (the work itself runs on and is left to end). */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, abortError: () => Error): Promise<T> {
  if (!signal) return work;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(abortError());
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  work.catch(() => undefined);
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

function abbreviate(command: string): string {
  return command.length > 300 ? `${command.slice(0, 300)}...` : command;
}

/** POSIX shell quoting of one word; the only place remote command lines are assembled. */
export function shellQuote(word: string): string {
  if (word === '') return "''";
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error('empty command');
  return argv.map(shellQuote).join(' ');
}

/** Collects stdout up to a cap and the tail of stderr. */
class OutputCollector {
  private readonly out: Buffer[] = [];
  private outBytes = 0;
  truncated = false;
  private err = Buffer.alloc(0);
  constructor(private readonly maxStdout: number) {}
  stdout(chunk: Buffer): void {
    if (this.outBytes >= this.maxStdout) {
      this.truncated = true;
      return;
    }
    const room = this.maxStdout - this.outBytes;
    if (chunk.length > room) this.truncated = true;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.out.push(kept);
    this.outBytes += kept.length;
  }
  stderr(chunk: Buffer): void {
    const joined = Buffer.concat([this.err, chunk]);
    this.err = joined.length > STDERR_TAIL_BYTES ? joined.subarray(joined.length - STDERR_TAIL_BYTES) : joined;
  }
  get stdoutText(): string {
    return Buffer.concat(this.out).toString('utf8');
  }
  get stderrText(): string {
    return this.err.toString('utf8');
  }
}

/** Why a finished command failed, or undefined when it succeeded. */
function failureOf(
  hostId: string,
  command: string,
  o: { stoppedFor: 'timeout' | 'abort' | undefined; timeoutMs: number; exitCode: number | null; signalName: string | null; result: RunResult; ok: readonly number[] | undefined },
): Error | undefined {
  if (o.stoppedFor === 'timeout') return new HostTimeoutError(hostId, command, o.timeoutMs, o.result.stderr);
  if (o.stoppedFor === 'abort') return new HostAbortError(hostId, command);
  if (o.exitCode === null || !(o.ok ?? [0]).includes(o.exitCode)) {
    return new HostCommandError(hostId, command, o.exitCode, o.signalName, o.result.stderr, o.result.stdout);
  }
  return undefined;
}

/**
 * Calls `stop` once when the command outlives its deadline or is cancelled; `settle` runs the outcome
 * exactly once and disarms both.
 */
function commandLifetime(timeoutMs: number, signal: AbortSignal | undefined, stop: (why: 'timeout' | 'abort') => void): { settle(fn: () => void): void; readonly settled: boolean } {
  let settled = false;
  const timer = setTimeout(() => stop('timeout'), timeoutMs);
  const onAbort = () => stop('abort');
  if (signal?.aborted) queueMicrotask(onAbort);
  else signal?.addEventListener('abort', onAbort, { once: true });
  return {
    get settled() {
      return settled;
    },
    settle(fn) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    },
  };
}

/** How long a stopped command waits for the host to confirm its channel closed before giving up on the connection. */
const unansweredCloseMs = 5000;

function feedStdin(stdin: RunOptions['stdin'], sink: NodeJS.WritableStream & { end(): void }): void {
  if (stdin === undefined) {
    sink.end();
  } else if (typeof stdin === 'string' || Buffer.isBuffer(stdin)) {
    sink.end(stdin);
  } else {
    stdin.pipe(sink);
  }
}

/** The base server: commands run as child processes of the worker, no shell involved. */
export class LocalShell implements HostShell {
  constructor(
    readonly hostId: string,
    private readonly defaults: { commandTimeoutMs: number; env?: NodeJS.ProcessEnv } = { commandTimeoutMs: 120_000 },
  ) {}

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const { done } = this.start(argv, opts, true);
    return done;
  }

  async openReader(argv: readonly string[], opts: RunOptions = {}): Promise<{ stdout: Readable; done: Promise<RunResult> }> {
    const stdout = new PassThrough();
    const { done } = this.start(argv, opts, false, stdout);
    return { stdout, done };
  }

  canPipe(): boolean {
    return true;
  }

  startPiped(argv: readonly string[], opts: PipedRunOptions): PipedCommand {
    assertUnread(opts.stdinFrom);
    let stdout: Readable | undefined;
    const { done } = this.start(argv, opts, opts.stdout === 'capture', undefined, pipedSpawn(opts, (s) => (stdout = s)));
    return { stdout: stdout ?? standInStdout(done), done };
  }

  async close(): Promise<void> {}

  private start(argv: readonly string[], opts: RunOptions, capture: boolean, stdoutSink?: PassThrough, piped?: PipedSpawn): { done: Promise<RunResult> } {
    const command = shellJoin(argv);
    const [file, ...args] = argv as [string, ...string[]];
    const timeoutMs = opts.timeoutMs ?? this.defaults.commandTimeoutMs;
    const started = Date.now();
    const collector = new OutputCollector(opts.maxStdoutBytes ?? DEFAULT_MAX_STDOUT);
    const done = new Promise<RunResult>((resolve, reject) => {
      if (opts.signal?.aborted) return reject(new HostAbortError(this.hostId, command));
      // A process group of its own, so a timeout or a cancel kills everything the command started.
      const child = spawn(file, args, { stdio: [piped?.stdinFrom ?? 'pipe', 'pipe', 'pipe'], detached: true, env: this.defaults.env ?? process.env });
      // This process's copy of the producer's pipe goes: the consumer alone reads it, and a producer
      // whose consumer died gets EPIPE instead of blocking on a reader that never reads.
      piped?.stdinFrom?.destroy();
      let killedFor: 'timeout' | 'abort' | undefined;
      const { settle: finish } = commandLifetime(timeoutMs, opts.signal, (why) => {
        killedFor = why;
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      });
      if (piped?.onStdout) piped.onStdout(child.stdout!);
      else if (capture || !stdoutSink) child.stdout!.on('data', (c: Buffer) => collector.stdout(c));
      else child.stdout!.pipe(stdoutSink);
      child.stderr!.on('data', (c: Buffer) => collector.stderr(c));
      child.stdin?.on('error', () => {
        /* the command may exit without reading all of stdin; its exit status tells the story */
      });
      child.on('error', (err: NodeJS.ErrnoException) =>
        finish(() => {
          stdoutSink?.destroy(err);
          reject(
            err.code === 'ENOENT'
              ? new HostCommandError(this.hostId, command, 127, null, `${file}: command not found`, '')
              : err,
          );
        }),
      );
      child.on('close', (code, signal) =>
        finish(() => {
          const result: RunResult = {
            stdout: collector.stdoutText,
            stderr: collector.stderrText,
            exitCode: code ?? -1,
            durationMs: Date.now() - started,
            stdoutTruncated: collector.truncated,
          };
          const failure = failureOf(this.hostId, command, { stoppedFor: killedFor, timeoutMs, exitCode: code, signalName: signal, result, ok: opts.okExitCodes });
          if (failure) {
            stdoutSink?.destroy(failure);
            return reject(failure);
          }
          resolve(result);
        }),
      );
      if (child.stdin) feedStdin(opts.stdin, child.stdin);
    });
    done.catch(() => undefined);
    return { done };
  }
}

/**
 * The producer's stdout must reach the consumer unread: Node starts reading a child's stdout pipe on the
 * event loop's next turn, so the consumer has to be started in the same turn as the producer.
 */
function assertUnread(stdinFrom: Readable | undefined): void {
  if (!stdinFrom) return;
  const read = (stdinFrom as Readable & { bytesRead?: number }).bytesRead ?? 0;
  if (read > 0 || stdinFrom.readableLength > 0 || stdinFrom.destroyed) {
    throw new Error('a piped command must be started in the same turn as the command whose stdout it reads');
  }
}

interface PipedSpawn {
  stdinFrom: Readable | undefined;
  /** Receives the child's stdout pipe; absent when stdout is captured. */
  onStdout?: (stdout: Readable) => void;
}

function pipedSpawn(opts: PipedRunOptions, onStdout: (stdout: Readable) => void): PipedSpawn {
  return { stdinFrom: opts.stdinFrom, ...(opts.stdout === 'capture' ? {} : { onStdout }) };
}

/**
 * The stdout of a piped command whose own pipe is not handed over (captured, or the command never
 * started): it ends, or fails as the command did. Its failure is reported through `done`; the stream's
 * own error needs no listener of its caller's.
 */
function standInStdout(done: Promise<RunResult>): Readable {
  const stdout = new PassThrough();
  stdout.on('error', () => undefined);
  done.then(
    () => stdout.end(),
    (err: Error) => stdout.destroy(err),
  );
  return stdout;
}

export interface SshShellOptions {
  privateKey: Buffer | string;
  /** The same key as a file, for OpenSSH bulk transfers; without it bulk commands use ssh2 too. */
  privateKeyPath?: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /** Channels open at once on one connection (sshd's MaxSessions defaults to 10). */
  maxChannels?: number;
}

/** Decodes a pinned key: the key blob of an OpenSSH public key line, or a SHA256 fingerprint. */
export function hostKeyMatcher(pinned: string): (presented: Buffer) => boolean {
  const trimmed = pinned.trim();
  if (trimmed.startsWith('SHA256:')) {
    const want = trimmed.slice('SHA256:'.length).replace(/=+$/, '');
    return (key) => createHash('sha256').update(key).digest('base64').replace(/=+$/, '') === want;
  }
  // "<type> <base64 blob> [comment]": the blob itself starts with its key type (a length-prefixed string).
  const [type, blob] = trimmed.split(/\s+/);
  const want = blob && /^[A-Za-z0-9+/]+={0,2}$/.test(blob) ? Buffer.from(blob, 'base64') : Buffer.alloc(0);
  const typeLength = want.length >= 4 ? want.readUInt32BE(0) : 0;
  if (!type || typeLength === 0 || want.subarray(4, 4 + typeLength).toString('latin1') !== type) {
    throw new Error('pinned host key is neither an OpenSSH public key line nor a SHA256: fingerprint');
  }
  return (key) => key.equals(want);
}

/** The fingerprint operators see in `ssh-keygen -lf`, for error messages and the hosts table. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function classifySshError(err: Error & { level?: string; code?: string }): ConnectFailure {
  if (err.level === 'client-authentication') return 'auth';
  if (err.level === 'client-timeout' || /timed out/i.test(err.message)) return 'timeout';
  if (/verification failed|host denied/i.test(err.message)) return 'host-key';
  if (err.code === 'ECONNREFUSED') return 'refused';
  if (err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH' || err.code === 'ETIMEDOUT') return 'unreachable';
  return 'other';
}

/**
 * Strips the first stderr line a remote command prints about itself (its process group, see
 * SshShell.remoteCommand) and passes the rest on. `pgid` is 0 once a first line without it was seen.
 */
class PgidPreamble {
  pgid: number | undefined;
  private head = '';
  constructor(private readonly rest: (chunk: Buffer) => void) {}
  push(chunk: Buffer): void {
    if (this.pgid !== undefined) return this.rest(chunk);
    this.head += chunk.toString('latin1');
    const nl = this.head.indexOf('\n');
    if (nl < 0) return;
    const first = this.head.slice(0, nl);
    const after = Buffer.from(this.head.slice(nl + 1), 'latin1');
    this.head = '';
    if (first.startsWith(pgidMarker)) this.pgid = Number(first.slice(pgidMarker.length)) || 0;
    else {
      this.pgid = 0;
      this.rest(Buffer.from(`${first}\n`, 'latin1'));
    }
    if (after.length) this.rest(after);
  }
}

let knownHostsDir: string | undefined;
let knownHostsFiles = 0;

/** A known_hosts file holding only the host's pinned key, private to this process. */
function writeKnownHosts(hostId: string, line: string): string {
  knownHostsDir ??= mkdtempSync(join(tmpdir(), 'markco-known-hosts-'));
  // One file per shell: two shells for one host id (a re-registered host) must not share a pin.
  const file = join(knownHostsDir, `${hostId.replace(/[^A-Za-z0-9_.-]/g, '_')}-${++knownHostsFiles}`);
  writeFileSync(file, line, { mode: 0o600 });
  return file;
}

/** A small counting semaphore: ssh servers cap the sessions one connection may open. */
class Slots {
  private waiters: (() => void)[] = [];
  constructor(private free: number) {}
  /** Waits for a free channel; a cancel while waiting leaves the queue at once (AbortError from `abort`). */
  async take(signal?: AbortSignal, abort?: () => Error): Promise<() => void> {
    if (this.free > 0) this.free--;
    else
      await new Promise<void>((resolve, reject) => {
        const waiter = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          reject(abort ? abort() : new Error('cancelled'));
        };
        this.waiters.push(waiter);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.free++;
    };
  }
}

/** Every non-base host: one ssh2 connection, reused across commands, with a pinned host key. */
export class SshShell implements HostShell {
  readonly hostId: string;
  private connection: Promise<Client> | undefined;
  private readonly slots: Slots;
  private readonly matches: (key: Buffer) => boolean;
  private knownHostsFile: string | undefined;

  constructor(
    private readonly host: HostConnection,
    private readonly opts: SshShellOptions,
  ) {
    this.hostId = host.hostId;
    if (!host.hostKey) throw new HostConnectError(host.hostId, 'no-host-key', 'no pinned host key is recorded for it; refusing to connect');
    this.matches = hostKeyMatcher(host.hostKey);
    this.slots = new Slots(opts.maxChannels ?? 8);
  }

  async run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return (await this.exec(argv, opts, true)).done;
  }

  async openReader(argv: readonly string[], opts: RunOptions = {}): Promise<{ stdout: Readable; done: Promise<RunResult> }> {
    const stdout = new PassThrough();
    const { done } = await this.exec(argv, opts, false, stdout);
    return { stdout, done };
  }

  canPipe(): boolean {
    return this.openSshArgs() !== undefined;
  }

  startPiped(argv: readonly string[], opts: PipedRunOptions): PipedCommand | undefined {
    const openssh = this.openSshArgs();
    if (!openssh) return undefined;
    assertUnread(opts.stdinFrom);
    let stdout: Readable | undefined;
    const { done } = this.execOpenSsh(openssh, argv, opts, opts.stdout === 'capture', undefined, pipedSpawn(opts, (s) => (stdout = s)));
    return { stdout: stdout ?? standInStdout(done), done };
  }

  async close(): Promise<void> {
    const conn = this.connection;
    this.connection = undefined;
    if (!conn) return;
    const client = await conn.catch(() => undefined);
    client?.end();
  }

  /**
   * sshd runs each session as its own process-group leader. The command line first reports that pid on
   * stderr (then execs, keeping it), so a timeout or a cancel can kill the whole group: a signal to the
   * session alone would leave its children holding the channel open.
   */
  private remoteCommand(argv: readonly string[]): string {
    return `printf '${pgidMarker}%s\\n' "$$" >&2; exec ${this.privileged(argv)}`;
  }

  private privileged(argv: readonly string[]): string {
    return shellJoin(this.host.sudo ? ['sudo', '-n', '--', ...argv] : argv);
  }

  /**
   * Opens the command's channel. sshd answers at once on a live connection; on one whose host went
   * silent the request is never answered, so the command's deadline and its cancel bound the wait too.
   */
  private openChannel(client: Client, argv: readonly string[], command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<ClientChannel> {
    return new Promise<ClientChannel>((resolve, reject) => {
      const lifetime = commandLifetime(timeoutMs, signal, (why) =>
        lifetime.settle(() => {
          this.abandon(client);
          reject(why === 'abort' ? new HostAbortError(this.hostId, command) : new HostTimeoutError(this.hostId, command, timeoutMs, 'the host did not open a session'));
        }),
      );
      client.exec(this.remoteCommand(argv), (err, ch) => {
        // A session that opens after the command was given up is closed unused.
        if (lifetime.settled) {
          ch?.close();
          return;
        }
        lifetime.settle(() => (err ? reject(err) : resolve(ch)));
      });
    });
  }

  /** Drops a connection that stopped answering, so the next command connects afresh. */
  private abandon(client: Client): void {
    if (this.connection) {
      const current = this.connection;
      void current.then((c) => {
        if (c === client && this.connection === current) this.connection = undefined;
      }, () => undefined);
    }
    client.destroy();
  }

  /** Kills a command's process group through a channel of its own (best effort, bounded). */
  private async killGroup(pgid: number): Promise<void> {
    const client = await this.connection?.catch(() => undefined);
    if (!client) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000);
      client.exec(this.privileged(['kill', '-KILL', '--', `-${pgid}`]), (err, ch) => {
        if (err) {
          clearTimeout(timer);
          return resolve();
        }
        ch.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        ch.resume();
        ch.stderr.resume();
      });
    });
  }

  private connect(): Promise<Client> {
    if (this.connection) return this.connection;
    const client = new Client();
    let presented: Buffer | undefined;
    const config: ConnectConfig = {
      host: this.host.address,
      port: this.host.sshPort ?? 22,
      username: this.host.sshUser ?? 'root',
      privateKey: this.opts.privateKey,
      readyTimeout: this.opts.connectTimeoutMs,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
      hostVerifier: (key: Buffer) => {
        presented = key;
        return this.matches(key);
      },
    };
    const pending = new Promise<Client>((resolve, reject) => {
      const onError = (err: Error & { level?: string; code?: string }) => {
        this.connection = undefined;
        const reason = presented && !this.matches(presented) ? 'host-key' : classifySshError(err);
        const detail =
          reason === 'host-key' && presented
            ? `the host presented key ${fingerprintOf(presented)}, which is not the pinned key`
            : `${this.host.address}:${config.port}: ${err.message}`;
        reject(new HostConnectError(this.hostId, reason, detail));
      };
      client.once('ready', () => {
        client.removeListener('error', onError);
        client.on('error', () => {
          this.connection = undefined;
        });
        resolve(client);
      });
      client.once('error', onError);
      client.on('close', () => {
        if (this.connection === pending) this.connection = undefined;
      });
      client.connect(config);
    });
    this.connection = pending;
    return pending;
  }

  /**
   * `ssh` arguments that reach this host as ssh2 does: the same user, port and key, and only the pinned
   * host key accepted (a known_hosts file of one line). Undefined when OpenSSH cannot be used: no key file,
   * or a host pinned by fingerprint only (known_hosts needs the whole key).
   */
  private openSshArgs(): string[] | undefined {
    const keyPath = this.opts.privateKeyPath;
    const pinned = this.host.hostKey?.trim() ?? '';
    if (!keyPath || pinned.startsWith('SHA256:')) return undefined;
    const port = this.host.sshPort ?? 22;
    const hostPattern = port === 22 ? this.host.address : `[${this.host.address}]:${port}`;
    this.knownHostsFile ??= writeKnownHosts(this.hostId, `${hostPattern} ${pinned.split(/\s+/).slice(0, 2).join(' ')}\n`);
    return [
      '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${this.knownHostsFile}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', 'IdentitiesOnly=yes',
      '-o', `ConnectTimeout=${Math.max(1, Math.ceil(this.opts.connectTimeoutMs / 1000))}`,
      '-o', 'ServerAliveInterval=15',
      '-o', 'ServerAliveCountMax=4',
      // AES-GCM runs on the CPU's AES instructions: 1 GiB in about 3 s against chacha20's 4.5 s here.
      '-o', 'Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com',
      '-o', 'Compression=no',
      '-o', 'LogLevel=ERROR',
      '-i', keyPath,
      '-p', String(port),
      '-l', this.host.sshUser ?? 'root',
      '--',
      this.host.address,
    ];
  }

  private execOpenSsh(sshArgs: string[], argv: readonly string[], opts: RunOptions, capture: boolean, stdoutSink?: PassThrough, piped?: PipedSpawn): { done: Promise<RunResult> } {
    const command = this.privileged(argv);
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs;
    const started = Date.now();
    const collector = new OutputCollector(opts.maxStdoutBytes ?? DEFAULT_MAX_STDOUT);
    const done = new Promise<RunResult>((resolve, reject) => {
      if (opts.signal?.aborted) return reject(new HostAbortError(this.hostId, command));
      const child = spawn('ssh', [...sshArgs, this.remoteCommand(argv)], { stdio: [piped?.stdinFrom ?? 'pipe', 'pipe', 'pipe'] });
      piped?.stdinFrom?.destroy();
      let stoppedFor: 'timeout' | 'abort' | undefined;
      const stderr = new PgidPreamble((c) => collector.stderr(c));
      const { settle } = commandLifetime(timeoutMs, opts.signal, (why) => {
        if (stoppedFor) return;
        stoppedFor = why;
        const killLocal = () => child.kill('SIGKILL');
        // The remote group first: killing only the local client can leave the command running there.
        if (stderr.pgid) void this.killGroup(stderr.pgid).then(killLocal, killLocal);
        else killLocal();
      });
      if (piped?.onStdout) piped.onStdout(child.stdout!);
      else if (capture || !stdoutSink) child.stdout!.on('data', (c: Buffer) => collector.stdout(c));
      else child.stdout!.pipe(stdoutSink);
      child.stderr!.on('data', (c: Buffer) => stderr.push(c));
      child.stdin?.on('error', () => {
        /* the command may exit without reading all of stdin; its exit status tells the story */
      });
      child.on('error', (err) => settle(() => (stdoutSink?.destroy(err), reject(err))));
      child.on('close', (code, signal) =>
        settle(() => {
          const result: RunResult = { stdout: collector.stdoutText, stderr: collector.stderrText, exitCode: code ?? -1, durationMs: Date.now() - started, stdoutTruncated: collector.truncated };
          // ssh itself exits 255 when it cannot connect or authenticate; its message is on stderr.
          if (code === 255 && !stoppedFor && !stderr.pgid) {
            const failure = new HostConnectError(this.hostId, /Host key verification failed/i.test(result.stderr) ? 'host-key' : 'other', result.stderr.trim().slice(-500));
            stdoutSink?.destroy(failure);
            return reject(failure);
          }
          const failure = failureOf(this.hostId, command, { stoppedFor, timeoutMs, exitCode: code, signalName: signal, result, ok: opts.okExitCodes });
          if (failure) {
            stdoutSink?.destroy(failure);
            return reject(failure);
          }
          resolve(result);
        }),
      );
      if (child.stdin) feedStdin(opts.stdin, child.stdin);
    });
    done.catch(() => undefined);
    return { done };
  }

  private async exec(argv: readonly string[], opts: RunOptions, capture: boolean, stdoutSink?: PassThrough): Promise<{ done: Promise<RunResult> }> {
    // What errors show: the command as the host runs it, without the process-group preamble.
    const command = this.privileged(argv);
    if (opts.signal?.aborted) throw new HostAbortError(this.hostId, command);
    const openssh = opts.bulk ? this.openSshArgs() : undefined;
    if (openssh) return this.execOpenSsh(openssh, argv, opts, capture, stdoutSink);
    const release = await this.slots.take(opts.signal, () => new HostAbortError(this.hostId, command));
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs;
    let client: Client;
    let channel: ClientChannel;
    try {
      // The connection being made runs on for the commands after this one; a cancel stops waiting for it at once.
      client = await untilAborted(this.connect(), opts.signal, () => new HostAbortError(this.hostId, command));
      channel = await this.openChannel(client, argv, command, timeoutMs, opts.signal);
    } catch (err) {
      release();
      if (err instanceof HostConnectError || err instanceof HostAbortError) throw err;
      // The connection went away between commands: let the next call reconnect.
      this.connection = undefined;
      throw new HostConnectError(this.hostId, 'other', (err as Error).message);
    }
    const started = Date.now();
    const collector = new OutputCollector(opts.maxStdoutBytes ?? DEFAULT_MAX_STDOUT);
    const done = new Promise<RunResult>((resolve, reject) => {
      let exitCode: number | null = null;
      let exitSignal: string | null = null;
      let stoppedFor: 'timeout' | 'abort' | undefined;
      const preamble = new PgidPreamble((c) => collector.stderr(c));
      const lifetime = commandLifetime(timeoutMs, opts.signal, (why) => {
        if (stoppedFor) return;
        stoppedFor = why;
        const closeChannel = () => channel.close();
        if (preamble.pgid) void this.killGroup(preamble.pgid).then(closeChannel, closeChannel);
        else closeChannel();
        // A host that stopped answering never confirms the close, and the caller must not wait for it:
        // the connection is given up (the next command reconnects) and the command ends as stopped.
        setTimeout(() => {
          if (lifetime.settled) return;
          this.abandon(client);
          end();
        }, unansweredCloseMs).unref();
      });
      const finish = (fn: () => void) =>
        lifetime.settle(() => {
          release();
          fn();
        });
      if (capture || !stdoutSink) channel.on('data', (c: Buffer) => collector.stdout(c));
      else channel.pipe(stdoutSink);
      channel.stderr.on('data', (c: Buffer) => preamble.push(c));
      channel.on('error', (err: Error) => finish(() => reject(err)));
      // The outcome from what arrived so far: on the channel's close, or when a stopped command's host never closes it.
      const end = () =>
        finish(() => {
          const result: RunResult = {
            stdout: collector.stdoutText,
            stderr: collector.stderrText,
            exitCode: exitCode ?? -1,
            durationMs: Date.now() - started,
            stdoutTruncated: collector.truncated,
          };
          const failure = failureOf(this.hostId, command, { stoppedFor, timeoutMs, exitCode, signalName: exitSignal, result, ok: opts.okExitCodes });
          if (failure) {
            stdoutSink?.destroy(failure);
            return reject(failure);
          }
          resolve(result);
        });
      // The status comes with the close, not from 'exit': ssh2 parses a whole inbound chunk at once, so a fast
      // host's session reply, exit status and close can arrive together and emit 'exit' before this listener
      // exists (the channel is handed over a microtask later). ssh2 keeps the status and passes it to 'close'.
      channel.on('close', (code?: number | null, signalName?: string) => {
        if (code !== undefined) {
          exitCode = code;
          exitSignal = signalName ?? null;
        }
        end();
      });
      feedStdin(opts.stdin, channel);
    });
    done.catch(() => undefined);
    return { done };
  }
}

export interface HostShellFactoryOptions {
  baseHostId: string;
  sshKeyPath: string;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /** Environment of the base server's commands (tests point podman at a storage of their own). */
  localEnv?: NodeJS.ProcessEnv;
}

/**
 * Hands out one shell per host and keeps ssh connections open between activities. The base host is
 * always local; every other host needs an address and a pinned key.
 */
export class HostShells {
  private readonly shells = new Map<string, { key: string; shell: HostShell }>();
  private privateKey: Buffer | undefined;

  constructor(private readonly opts: HostShellFactoryOptions) {}

  for(host: HostConnection): HostShell {
    const key = JSON.stringify([host.kind, host.address, host.sshPort, host.sshUser, host.hostKey, host.sudo]);
    const existing = this.shells.get(host.hostId);
    if (existing && existing.key === key) return existing.shell;
    if (existing) void existing.shell.close();
    const shell: HostShell =
      host.kind === 'base' && host.hostId === this.opts.baseHostId
        ? new LocalShell(host.hostId, { commandTimeoutMs: this.opts.commandTimeoutMs, ...(this.opts.localEnv ? { env: this.opts.localEnv } : {}) })
        : new SshShell(host, {
            privateKey: this.loadKey(),
            privateKeyPath: this.opts.sshKeyPath,
            connectTimeoutMs: this.opts.connectTimeoutMs,
            commandTimeoutMs: this.opts.commandTimeoutMs,
          });
    this.shells.set(host.hostId, { key, shell });
    return shell;
  }

  async closeAll(): Promise<void> {
    const all = [...this.shells.values()];
    this.shells.clear();
    await Promise.all(all.map((s) => s.shell.close()));
  }

  private loadKey(): Buffer {
    if (!this.privateKey) {
      try {
        this.privateKey = readFileSync(this.opts.sshKeyPath);
      } catch (err) {
        throw new Error(`cannot read the ssh private key for hosts at ${this.opts.sshKeyPath} (MARKCO_SSH_KEY_PATH): ${(err as Error).message}`);
      }
    }
    return this.privateKey;
  }
}
