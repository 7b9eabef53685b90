import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalShell } from '../../activities/host-shell.js';
import { parseReceiveOutput, parseSentReport, readExportPipedArgs, receiveAndRestoreArgs, streamedImportVerified } from '../../activities/podman-commands.js';

/**
 * A stand-in `podman` that opens its --import path the way podman 4.3.1 does (verified with strace):
 * twice for the definition (only config.dump and spec.dump are needed), then once to unpack the rest.
 * The real podman runs the same script in the migration tests.
 */
const fakePodman = `#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --import ] && in=$2; shift; done
out=$(dirname "$in")/unpacked; mkdir -p "$out"
tar -B -xOf "$in" config.dump > "$out/config.1" || exit 125
tar -B -xOf "$in" spec.dump > "$out/spec.2" || exit 125
tar -B -xf "$in" -C "$out" --exclude config.dump --exclude spec.dump || exit 125
[ -f "$out/pages.img" ] || { echo "no pages in the archive" >&2; exit 125; }
echo '{"podman_restore_duration": 1}'
`;

function run(argv: string[], stdin: Buffer[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.stdin.on('error', () => undefined);
    for (const chunk of stdin) child.stdin.write(chunk);
    child.stdin.end();
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function fixture() {
  const dir = mkdtempSync(join(tmpdir(), 'markco-receive-'));
  const bin = join(dir, 'bin');
  execFileSync('mkdir', ['-p', bin, join(dir, 'src')]);
  writeFileSync(join(bin, 'podman'), fakePodman);
  chmodSync(join(bin, 'podman'), 0o755);
  writeFileSync(join(dir, 'src', 'config.dump'), '{"rewritten":true}');
  writeFileSync(join(dir, 'src', 'spec.dump'), '{"spec":1}');
  writeFileSync(join(dir, 'src', 'pages.img'), Buffer.alloc(3_000_000, 9));
  execFileSync('tar', ['-C', join(dir, 'src'), '--format=gnu', '-cf', join(dir, 'head.tar'), 'config.dump', 'spec.dump']);
  execFileSync('tar', ['-C', join(dir, 'src'), '--format=gnu', '-cf', join(dir, 'full.tar'), 'config.dump', 'spec.dump', 'pages.img']);
  return { dir, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } };
}

test('a streamed import gives the definition reads the head and the unpacking read the whole archive, hashed as received', async () => {
  const { dir, env } = fixture();
  try {
    const head = readFileSync(join(dir, 'head.tar'));
    const full = readFileSync(join(dir, 'full.tar'));
    const rx = join(dir, 'rx');
    const argv = receiveAndRestoreArgs({ dir: rx, mode: 'stream', headBytes: head.length, restore: { importPath: `${rx}/in.tar`, name: 'rt-x' } });
    const chunks = [head, ...Array.from({ length: 40 }, (_, i) => full.subarray(i * 100_000, (i + 1) * 100_000)).filter((c) => c.length)];
    const r = await run(argv, chunks, env);
    assert.equal(r.code, 0, r.stderr);
    const { sha256, restoreOutput } = parseReceiveOutput(r.stdout);
    assert.equal(sha256, createHash('sha256').update(full).digest('hex'), 'the hash covers the archive, not the head sent ahead');
    assert.match(restoreOutput, /podman_restore_duration/);
    assert.equal(readFileSync(join(rx, 'unpacked', 'config.1'), 'utf8'), '{"rewritten":true}');
    assert.equal(readFileSync(join(rx, 'unpacked', 'pages.img')).length, 3_000_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file mode writes the archive, then restores it', async () => {
  const { dir, env } = fixture();
  try {
    const full = readFileSync(join(dir, 'full.tar'));
    const rx = join(dir, 'rx');
    const r = await run(receiveAndRestoreArgs({ dir: rx, mode: 'file', headBytes: 0, restore: { importPath: `${rx}/in.tar`, name: 'rt-x' } }), [full], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(parseReceiveOutput(r.stdout).sha256, createHash('sha256').update(full).digest('hex'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a restore that fails stops the receiver at once and reports podman\'s error; nothing keeps feeding', async () => {
  const { dir, env } = fixture();
  try {
    const head = readFileSync(join(dir, 'head.tar'));
    const rx = join(dir, 'rx');
    // The archive lacks its memory pages: the stand-in podman refuses it after unpacking.
    const started = Date.now();
    const r = await run(receiveAndRestoreArgs({ dir: rx, mode: 'stream', headBytes: head.length, restore: { importPath: `${rx}/in.tar`, name: 'rt-x' } }), [head, head], env);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /no pages in the archive/);
    assert.ok(Date.now() - started < 10_000);
    assert.equal(spawnSync('pgrep', ['-f', rx]).stdout.toString().trim(), '', 'no process of the receiver is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('streamed import is used only where podman\'s open sequence was verified; bad specs are refused', () => {
  assert.equal(streamedImportVerified('4.3.1\n'), true);
  assert.equal(streamedImportVerified('4.9.3'), false);
  assert.equal(streamedImportVerified('5.2.0'), false);
  assert.throws(() => receiveAndRestoreArgs({ dir: '/x', mode: 'stream', headBytes: -1, restore: { importPath: '/x/in.tar' } }), /head/);
  assert.throws(() => receiveAndRestoreArgs({ dir: '/x', mode: 'stream', headBytes: 1.5, restore: { importPath: '/x/in.tar' } }), /head/);
  assert.throws(() => readExportPipedArgs({ fifo: 'rel/f', freezer: { file: '/f', frozen: 'FROZEN', thawed: 'THAWED' }, dir: '/d', headMax: 4096 }), /absolute/);
  assert.throws(() => readExportPipedArgs({ fifo: '/f', freezer: { file: '/f', frozen: 'FROZEN', thawed: 'THAWED' }, dir: '/d', headMax: 512 }), /headMax/);
  assert.throws(() => parseSentReport('markco-sent 12\n'), /no byte count and hash/);
  assert.throws(() => receiveAndRestoreArgs({ dir: '/x', mode: 'file', headBytes: 0, restore: { importPath: '/y/in.tar' } }), /in\.tar/);
  assert.throws(() => parseReceiveOutput('garbage'), /unexpected receive output/);
});

test('piped: the export goes source -> target through OS pipes unread; the head travels as a file; both ends hash the same bytes', async () => {
  const { dir, env } = fixture();
  try {
    // The archive as the source exports it: config.dump still names the source; the rewritten head says otherwise.
    writeFileSync(join(dir, 'src', 'config.dump'), '{"rewritten":false}');
    execFileSync('tar', ['-C', join(dir, 'src'), '--format=gnu', '-cf', join(dir, 'exported.tar'), 'config.dump', 'spec.dump', 'pages.img']);
    const exported = readFileSync(join(dir, 'exported.tar'));
    const head = readFileSync(join(dir, 'head.tar'));
    const sourceDir = join(dir, 'source');
    const rx = join(dir, 'rx');
    execFileSync('mkdir', ['-p', sourceDir, rx]);
    const fifo = join(sourceDir, 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const freezerFile = join(dir, 'freezer.state');
    writeFileSync(freezerFile, 'THAWED');
    const shell = new LocalShell('base', { commandTimeoutMs: 60_000, env });
    const src = shell.startPiped(readExportPipedArgs({ fifo, freezer: { file: freezerFile, frozen: 'FROZEN', thawed: 'THAWED' }, dir: sourceDir, headMax: 1024 * 1024 }), {});
    const dst = shell.startPiped(receiveAndRestoreArgs({ dir: rx, mode: 'stream', headBytes: 0, restore: { importPath: `${rx}/in.tar`, name: 'rt-x' } }), { stdinFrom: src.stdout, stdout: 'capture' });
    // The export: podman writes the archive into the FIFO.
    const exporting = run(['sh', '-c', 'cat "$1" > "$2"', 'export', join(dir, 'exported.tar'), fifo], [], env);
    // The worker's part: the first bytes the source kept, then the rewritten head on the target.
    const raw = await shell.run(['sh', '-c', 'until [ -f "$1" ]; do sleep 0.05; done; exec cat "$1"', 'wait', join(sourceDir, 'head.raw')]);
    assert.equal(raw.stdout.length, 1024 * 1024);
    assert.equal(readFileSync(freezerFile, 'utf8'), 'FROZEN', 'the runtime is frozen once the first block is read');
    writeFileSync(join(rx, 'head.tar.part'), head);
    execFileSync('mv', [join(rx, 'head.tar.part'), join(rx, 'head.tar')]);
    const [sent, received] = await Promise.all([src.done, dst.done, exporting]);
    const want = createHash('sha256').update(exported).digest('hex');
    assert.deepEqual(parseSentReport(sent.stderr), { bytes: exported.length, sha256: want });
    assert.equal(sent.stdout, '', 'no byte of the archive passed through this process');
    assert.equal(parseReceiveOutput(received.stdout).sha256, want);
    assert.equal(readFileSync(join(rx, 'unpacked', 'config.1'), 'utf8'), '{"rewritten":true}', 'the definition came from the rewritten head');
    assert.equal(readFileSync(join(rx, 'unpacked', 'pages.img')).length, 3_000_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a stored archive restores from its file on the host: the head comes as head.tar, the rest streams from the file, hashed', async () => {
  const { dir, env } = fixture();
  try {
    const full = readFileSync(join(dir, 'full.tar'));
    const rx = join(dir, 'rx');
    execFileSync('mkdir', ['-p', rx]);
    // The worker writes the rewritten head while the receiver waits for it.
    setTimeout(() => writeFileSync(join(rx, 'head.tar'), readFileSync(join(dir, 'head.tar'))), 200);
    const argv = receiveAndRestoreArgs({ dir: rx, mode: 'stream', headBytes: 0, restore: { importPath: `${rx}/in.tar`, name: 'rt-x' }, fromFile: join(dir, 'full.tar') });
    const r = await run(argv, [], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(parseReceiveOutput(r.stdout).sha256, createHash('sha256').update(full).digest('hex'), 'the hash is of the file as read');
    assert.equal(readFileSync(join(rx, 'unpacked', 'pages.img')).length, 3_000_000);
    const missing = await run(receiveAndRestoreArgs({ dir: join(dir, 'rx2'), mode: 'stream', headBytes: 0, restore: { importPath: `${join(dir, 'rx2')}/in.tar`, name: 'rt-x' }, fromFile: join(dir, 'nope.tar') }), [], env);
    assert.equal(missing.code, 71, 'a missing archive fails before anything is restored');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
