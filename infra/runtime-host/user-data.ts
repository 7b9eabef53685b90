import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { repoRoot } from '../../lib/paths.js';

/**
 * cloud-init user-data that runs the runtime-host recipe (provision.sh, next to this file) on an instance's
 * first boot: the script is embedded as it is (gzip + base64, so it stays well under EC2's 16 KiB
 * user-data limit) and run with the given settings. Nothing here copies the recipe: it is read from
 * provision.sh every time.
 *
 *   npx tsx infra/runtime-host/user-data.ts --authorized-keys ~/.ssh/markco.pub \
 *     --image-archive https://…/markco-runtime.tar > user-data.yaml
 */
export const provisionScriptPath = join(repoRoot, 'infra', 'runtime-host', 'provision.sh');
export const provisionedScriptPath = '/usr/local/sbin/markco-provision-runtime-host';
/** EC2 refuses user-data above 16 KiB. */
export const ec2UserDataLimitBytes = 16 * 1024;

export interface RuntimeHostUserDataOptions {
  /** The workers' OpenSSH public key line(s); they become MARKCO_SSH_USER's only authorised keys. */
  authorizedKeys?: string[];
  /** Whose authorized_keys (default root; `ubuntu` for Ubuntu's default user). */
  sshUser?: string;
  /** `podman save` archives to load: paths on the instance, or http(s) URLs (S3 presigned URLs work). */
  imageArchives?: string[];
  /** The script's bytes (default: provision.sh as it is on disk). */
  script?: Buffer;
}

const yamlString = (v: string) => JSON.stringify(v);
const envLine = (name: string, value: string) => {
  if (/[\r\n]/.test(value) && name !== 'MARKCO_AUTHORIZED_KEYS') throw new Error(`${name} must be one line`);
  return `${name}=${value}`;
};

export function runtimeHostUserData(opts: RuntimeHostUserDataOptions = {}): string {
  const script = opts.script ?? readFileSync(provisionScriptPath);
  const env: string[] = [];
  const keys = (opts.authorizedKeys ?? []).map((k) => k.trim()).filter(Boolean);
  for (const k of keys) if (!/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( [^\r\n]*)?$/.test(k)) throw new Error('an authorised key must be one OpenSSH public key line');
  if (keys.length > 0) env.push(envLine('MARKCO_AUTHORIZED_KEYS', keys.join('\n')));
  if (opts.sshUser) {
    if (!/^[a-z_][a-z0-9_-]*$/.test(opts.sshUser)) throw new Error('sshUser must be a login name');
    env.push(envLine('MARKCO_SSH_USER', opts.sshUser));
  }
  for (const a of opts.imageArchives ?? []) if (/\s/.test(a)) throw new Error('an image archive path or URL cannot contain spaces');
  if (opts.imageArchives?.length) env.push(envLine('MARKCO_IMAGE_ARCHIVES', opts.imageArchives.join(' ')));
  // `env` takes each setting as one argv word; cloud-init runs a list-form runcmd without a shell.
  const runcmd = ['env', ...env, '/bin/sh', provisionedScriptPath];
  return [
    '#cloud-config',
    '# markco runtime host: runs infra/runtime-host/provision.sh on first boot (output in /var/log/cloud-init-output.log)',
    'write_files:',
    `  - path: ${provisionedScriptPath}`,
    "    permissions: '0755'",
    '    owner: root:root',
    '    encoding: gz+b64',
    `    content: ${gzipSync(script, { level: 9 }).toString('base64')}`,
    'runcmd:',
    `  - [${runcmd.map(yamlString).join(', ')}]`,
    '',
  ].join('\n');
}

function main(argv: string[]): void {
  const opts: RuntimeHostUserDataOptions = { authorizedKeys: [], imageArchives: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--authorized-keys') opts.authorizedKeys!.push(...readFileSync(value, 'utf8').split('\n').filter((l) => l.trim()));
    else if (flag === '--ssh-user') opts.sshUser = value;
    else if (flag === '--image-archive') opts.imageArchives!.push(value);
    else throw new Error(`unknown argument ${flag} (flags: --authorized-keys FILE, --ssh-user NAME, --image-archive PATH|URL)`);
  }
  const text = runtimeHostUserData(opts);
  if (Buffer.byteLength(text) > ec2UserDataLimitBytes) throw new Error(`the user-data is ${Buffer.byteLength(text)} bytes, above EC2's 16 KiB`);
  process.stdout.write(text);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main(process.argv.slice(2));
