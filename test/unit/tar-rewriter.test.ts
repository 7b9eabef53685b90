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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
