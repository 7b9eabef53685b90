import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { test } from 'node:test';
import { TarMemberRewriter } from '../../activities/transfer.js';

/** A tar made by GNU tar (as podman's Go archive/tar output is read by podman) rewritten in small chunks. */
test('named tar members are rewritten in a stream of small chunks; everything else passes unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-tar-'));
  try {
    writeFileSync(join(dir, 'config.dump'), '{"path":"/old/root/x"}');
    writeFileSync(join(dir, 'big.img'), Buffer.alloc(70_000, 7));
    writeFileSync(join(dir, 'spec.dump'), 'spec /old/root');
    writeFileSync(join(dir, 'a'.repeat(120)), 'long name');
    execFileSync('tar', ['-C', dir, '--format=gnu', '-cf', join(dir, 'in.tar'), 'config.dump', 'a'.repeat(120), 'spec.dump', 'big.img']);
    const input = readFileSync(join(dir, 'in.tar'));
    const chunks = Array.from({ length: Math.ceil(input.length / 333) }, (_, i) => input.subarray(i * 333, (i + 1) * 333));
    const seen: string[] = [];
    const rewriter = new TarMemberRewriter(['config.dump', 'spec.dump'], (name, data) => {
      seen.push(name);
      return Buffer.from(data.toString().replaceAll('/old/root', '/a/much/longer/new/root'));
    });
    writeFileSync(join(dir, 'out.tar'), await buffer(Readable.from(chunks).pipe(rewriter)));
    const read = (member: string) => execFileSync('tar', ['-xOf', join(dir, 'out.tar'), member]).toString();
    assert.deepEqual(seen, ['config.dump', 'spec.dump']);
    assert.equal(read('config.dump'), '{"path":"/a/much/longer/new/root/x"}');
    assert.equal(read('spec.dump'), 'spec /a/much/longer/new/root');
    assert.equal(read('a'.repeat(120)), 'long name');
    assert.ok(execFileSync('tar', ['-xOf', join(dir, 'out.tar'), 'big.img']).equals(Buffer.alloc(70_000, 7)));
    // The head is a tar of its own: the members up to the last rewritten one, rewritten, and nothing after.
    writeFileSync(join(dir, 'head.tar'), await rewriter.head);
    assert.deepEqual(execFileSync('tar', ['-tf', join(dir, 'head.tar')]).toString().trim().split('\n'), ['config.dump', 'a'.repeat(120), 'spec.dump']);
    assert.equal(execFileSync('tar', ['-xOf', join(dir, 'head.tar'), 'spec.dump']).toString(), 'spec /a/much/longer/new/root');
    assert.ok((await rewriter.head).length < 70_000, 'the memory image is not part of the head');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an archive without the named members has no head, and says which member was missing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-tar-'));
  try {
    writeFileSync(join(dir, 'config.dump'), '{}');
    writeFileSync(join(dir, 'pages.img'), Buffer.alloc(5000, 1));
    execFileSync('tar', ['-C', dir, '--format=gnu', '-cf', join(dir, 'in.tar'), 'config.dump', 'pages.img']);
    const rewriter = new TarMemberRewriter(['config.dump', 'spec.dump'], (_name, data) => data);
    const out = await buffer(Readable.from([readFileSync(join(dir, 'in.tar'))]).pipe(rewriter));
    assert.ok(out.equals(readFileSync(join(dir, 'in.tar'))), 'the bytes still pass unchanged');
    await assert.rejects(rewriter.head, /ended before spec\.dump/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
