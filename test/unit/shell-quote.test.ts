import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { hostKeyMatcher, shellJoin, shellQuote } from '../../activities/host-shell.js';
import { createHash } from 'node:crypto';

test('quoted words reach the remote command exactly as given', () => {
  const words = ['plain', 'with space', "it's", '$HOME', '`id`', 'a;b|c&&d', 'new\nline', '', '*', '--flag=x y', '\\back'];
  // What an sshd does with the command line: hand it to `sh -c`.
  const out = execFileSync('sh', ['-c', `printf '%s\\0' ${shellJoin(words)}`]);
  assert.deepEqual(out.toString('utf8').split('\0').slice(0, -1), words);
});

test('safe words stay readable', () => {
  assert.equal(shellQuote('podman'), 'podman');
  assert.equal(shellQuote('/var/lib/markco/ck.tar'), '/var/lib/markco/ck.tar');
  assert.equal(shellQuote('a b'), "'a b'");
  assert.throws(() => shellJoin([]), /empty command/);
});

test('a pinned key matches only its own host key, as a key line or a fingerprint', () => {
  const type = Buffer.from('ssh-ed25519');
  const blob = Buffer.concat([Buffer.from([0, 0, 0, type.length]), type, Buffer.from([0, 0, 0, 32]), Buffer.alloc(32, 7)]);
  const line = `ssh-ed25519 ${blob.toString('base64')} nh-1`;
  assert.equal(hostKeyMatcher(line)(blob), true);
  assert.equal(hostKeyMatcher(line)(Buffer.concat([blob, Buffer.from([1])])), false);
  const fp = `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
  assert.equal(hostKeyMatcher(fp)(blob), true);
  assert.equal(hostKeyMatcher(fp)(Buffer.from('other')), false);
  assert.throws(() => hostKeyMatcher('not a key!'), /neither an OpenSSH public key line nor a SHA256/);
  assert.throws(() => hostKeyMatcher(`ssh-rsa ${blob.toString('base64')}`), /neither/, 'the type must match the blob');
});
