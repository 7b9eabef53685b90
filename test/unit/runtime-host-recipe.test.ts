import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { repoRoot } from '../../lib/paths.js';
import { ec2UserDataLimitBytes, provisionedScriptPath, provisionScriptPath, runtimeHostUserData } from '../../infra/runtime-host/user-data.js';

/**
 * What can be checked of the runtime-host recipe without an EC2 instance or Packer (neither runs here;
 * test/integration/runtime-host-recipe.test.ts runs the script itself on a debootstrap root).
 */
const script = readFileSync(provisionScriptPath);
const workerKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxYbWk0dGVzdGtleXRlc3RrZXl0ZXN0a2V5dGVzdGtleQ markco-workers';

test('the user-data embeds provision.sh byte for byte and runs it with the settings', () => {
  const text = runtimeHostUserData({ authorizedKeys: [workerKey], sshUser: 'ubuntu', imageArchives: ['https://example.invalid/rt.tar?X-Amz-Signature=abc'] });
  assert.ok(text.startsWith('#cloud-config\n'));
  const content = /^    content: (\S+)$/m.exec(text)?.[1];
  assert.ok(content, 'a write_files content line');
  assert.match(text, /^    encoding: gz\+b64$/m);
  assert.match(text, new RegExp(`^  - path: ${provisionedScriptPath}$`, 'm'));
  assert.ok(gunzipSync(Buffer.from(content, 'base64')).equals(script), 'the embedded script is provision.sh, unchanged');
  const runcmd = JSON.parse(/^runcmd:\n  - (\[.*\])$/m.exec(text)![1]!) as string[];
  assert.deepEqual(runcmd, ['env', `MARKCO_AUTHORIZED_KEYS=${workerKey}`, 'MARKCO_SSH_USER=ubuntu', 'MARKCO_IMAGE_ARCHIVES=https://example.invalid/rt.tar?X-Amz-Signature=abc', '/bin/sh', provisionedScriptPath]);
  assert.ok(Buffer.byteLength(text) < ec2UserDataLimitBytes, `${Buffer.byteLength(text)} bytes fit EC2's user-data limit`);
  // Made from the file each time: a different script gives a different document.
  assert.notEqual(runtimeHostUserData({ script: Buffer.from('#!/bin/sh\necho other\n') }), runtimeHostUserData());
});

test('the user-data refuses settings that would break out of their argument', () => {
  assert.throws(() => runtimeHostUserData({ authorizedKeys: ['not a key'] }), /one OpenSSH public key line/);
  assert.throws(() => runtimeHostUserData({ authorizedKeys: [`${workerKey}\nssh-rsa AAAA x`] }), /one OpenSSH public key line/);
  assert.throws(() => runtimeHostUserData({ sshUser: 'root; rm -rf /' }), /login name/);
  assert.throws(() => runtimeHostUserData({ imageArchives: ['/a b.tar'] }), /spaces/);
});

test('the Packer template bakes an Ubuntu 24.04 AMI from Canonical with provision.sh', () => {
  const hcl = readFileSync(join(repoRoot, 'infra', 'runtime-host', 'runtime-host.pkr.hcl'), 'utf8');
  assert.match(hcl, /source "amazon-ebs" "runtime_host"/);
  assert.match(hcl, /name\s*=\s*"ubuntu\/images\/hvm-ssd-gp3\/ubuntu-noble-24\.04-\$\{var\.arch\}-server-\*"/);
  assert.match(hcl, /owners\s*=\s*\["099720109477"\]/, "Canonical's account");
  assert.match(hcl, /script\s*=\s*"\$\{path\.root\}\/provision\.sh"/, 'the same script, by path');
  assert.match(hcl, /MARKCO_IMAGE_ARCHIVES=\$\{var\.image_archive\}/);
  assert.match(hcl, /rm -f \/etc\/ssh\/ssh_host_\*_key/, 'no baked host key ships');
});

test('provision.sh is valid sh and pins CRIU from forky exactly as bootstrap.sh does', () => {
  const syntax = spawnSync('sh', ['-n', provisionScriptPath], { encoding: 'utf8' });
  assert.equal(syntax.status, 0, syntax.stderr);
  const bootstrap = readFileSync(join(repoRoot, 'infra', 'dev', 'bootstrap.sh'), 'utf8');
  const text = script.toString('utf8');
  const pin = 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n\nPackage: *\nPin: release n=forky\nPin-Priority: 100';
  assert.ok(bootstrap.includes(pin) && text.includes(pin), 'the same apt pin');
  assert.ok(bootstrap.includes('Suites: trixie forky') && text.includes('Suites: trixie forky'));
  assert.match(text, /apt_install -t forky criu/);
  assert.match(text, /add-apt-repository -y "\$CRIU_PPA"/);
  assert.match(text, /CRIU_MIN=4\.2/);
});
