import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { HostAbortError, HostCommandError, HostTimeoutError, LocalShell, type HostShell, type RunResult } from '../../activities/host-shell.js';
import { ChecksumMismatchError, streamFileBetweenHosts } from '../../activities/transfer.js';

const shell = new LocalShell('base', { commandTimeoutMs: 10_000 });

test('runs argv without a shell and returns its output', async () => {
  const r = await shell.run(['printf', '%s|', 'a b', '$HOME']);
  assert.equal(r.stdout, 'a b|$HOME|');
  assert.equal(r.exitCode, 0);
});

test('a failing command rejects with its exit code and stderr', async () => {
  await assert.rejects(shell.run(['sh', '-c', 'echo boom >&2; exit 3']), (err: unknown) => {
    assert.ok(err instanceof HostCommandError);
    assert.equal(err.exitCode, 3);
    assert.match(err.message, /on host base exited with 3: boom/);
    return true;
  });
  const ok = await shell.run(['sh', '-c', 'exit 1'], { okExitCodes: [0, 1] });
  assert.equal(ok.exitCode, 1);
  await assert.rejects(shell.run(['no-such-binary-here']), /command not found/);
});

test('a command that runs too long is killed with everything it started', async () => {
  const started = Date.now();
  await assert.rejects(shell.run(['sh', '-c', 'sleep 30 & sleep 30'], { timeoutMs: 300 }), HostTimeoutError);
  assert.ok(Date.now() - started < 5000);
});

test('cancellation stops the command', async () => {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(shell.run(['sleep', '30'], { signal: ac.signal }), HostAbortError);
});

test('stdin from a string or a stream; stdout as a stream', async () => {
  assert.equal((await shell.run(['cat'], { stdin: 'hello' })).stdout, 'hello');
  assert.equal((await shell.run(['wc', '-c'], { stdin: Readable.from([Buffer.alloc(70_000, 1)]) })).stdout.trim(), '70000');
  const { stdout, done } = await shell.openReader(['head', '-c', '200000', '/dev/zero']);
  let n = 0;
  for await (const chunk of stdout) n += (chunk as Buffer).length;
  await done;
  assert.equal(n, 200000);
});

test('captured stdout is capped and marked truncated', async () => {
  const r = await shell.run(['head', '-c', '5000', '/dev/zero'], { maxStdoutBytes: 1000 });
  assert.equal(r.stdout.length, 1000);
  assert.equal(r.stdoutTruncated, true);
});

test('a transfer lands byte for byte, verified by checksum', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-transfer-'));
  try {
    await shell.run(['sh', '-c', `head -c 3000000 /dev/urandom > ${dir}/src`]);
    const result = await streamFileBetweenHosts({ from: shell, fromPath: `${dir}/src`, to: shell, toPath: `${dir}/sub/dst` });
    assert.equal(result.bytes, 3_000_000);
    assert.ok(readFileSync(`${dir}/src`).equals(readFileSync(`${dir}/sub/dst`)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a target that writes something else fails the transfer and keeps no file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-transfer-'));
  // A target whose checksum does not match what was sent (a corrupting disk, say): decision logic only.
  const corrupting: HostShell = {
    hostId: 'corrupt',
    openReader: (argv, o) => shell.openReader(argv, o),
    close: async () => undefined,
    run: async (argv, o): Promise<RunResult> => {
      const r = await shell.run(argv, o);
      return argv[0] === 'sh' ? { ...r, stdout: `${'0'.repeat(64)}  x\n` } : r;
    },
  };
  try {
    await shell.run(['sh', '-c', `echo data > ${dir}/src`]);
    await assert.rejects(streamFileBetweenHosts({ from: shell, fromPath: `${dir}/src`, to: corrupting, toPath: `${dir}/dst` }), ChecksumMismatchError);
    const left = await shell.run(['ls', dir]);
    assert.equal(left.stdout.trim(), 'src', 'neither the file nor its .partial is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('piped commands: the producer\'s stdout is the consumer\'s stdin, unread here; a failing consumer rejects its done and nothing else', async () => {
  const shell = new LocalShell('base', { commandTimeoutMs: 10_000 });
  const producer = shell.startPiped(['sh', '-c', 'head -c 300000 /dev/zero; echo done >&2'], {});
  const consumer = shell.startPiped(['sh', '-c', 'wc -c'], { stdinFrom: producer.stdout, stdout: 'capture' });
  const [p, c] = await Promise.all([producer.done, consumer.done]);
  assert.equal(p.stdout, '');
  assert.equal(p.stderr, 'done\n');
  assert.equal(c.stdout.trim(), '300000');
  const failing = shell.startPiped(['sh', '-c', 'cat >/dev/null; echo refused >&2; exit 3'], { stdinFrom: shell.startPiped(['printf', 'abc'], {}).stdout, stdout: 'capture' });
  await assert.rejects(failing.done, (err: HostCommandError) => err.exitCode === 3 && /refused/.test(err.stderr));
  // A producer whose stdout was already read cannot feed a consumer any more.
  const read = shell.startPiped(['printf', 'abc'], {});
  read.stdout.resume();
  await read.done;
  assert.throws(() => shell.startPiped(['cat'], { stdinFrom: read.stdout }), /same turn/);
});
