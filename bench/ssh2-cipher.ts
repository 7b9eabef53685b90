import { execFile } from 'node:child_process';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client, type Algorithms, type ClientChannel } from 'ssh2';
import { shellJoin } from '../activities/host-shell.js';
import { startHarness } from '../test/support/harness.js';
import type { NamespaceHostInfo } from '../test/support/netns.js';
import { report } from './results.js';

/**
 * Does the cipher limit the ssh2 stream the migration uses (activities/transfer.ts relays through this
 * process over ssh2)? Moves a random file from namespace host A, in the same run:
 *   - ssh2 read into this process, with ssh2's default algorithms and with `algorithms.cipher` forced
 *     (aes128-gcm@openssh.com, aes128-ctr), printing the cipher each connection negotiated and this
 *     process's CPU time;
 *   - ssh2 upload from this process into `cat > /dev/null` on B (the saga's base -> host leg), and the ssh2
 *     relay A -> this process -> B (its host -> host leg), default and aes128-gcm;
 *   - OpenSSH `ssh A cat`, `ssh B 'cat > /dev/null' < file` and `ssh A cat | ssh B 'cat > /dev/null'`,
 *     default (chacha20-poly1305) and `-c aes128-gcm@openssh.com`, as the reference.
 * The hosts share this machine's disk, so the uploads read the same file locally.
 *   node --import tsx bench/ssh2-cipher.ts [MEGABYTES=256] [ROUNDS=3]
 */
const run = promisify(execFile);
const megabytes = Number(process.argv[2] ?? process.env.MEGABYTES ?? 256);
const rounds = Number(process.argv[3] ?? process.env.ROUNDS ?? 3);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const h = await startHarness({ hosts: 2 });
const clients: Client[] = [];
try {
  const [a, b] = h.state.hosts as [NamespaceHostInfo, NamespaceHostInfo];
  const privateKey = readFileSync(h.state.sshKeyPath);
  const knownHosts = join(h.state.runDir, 'cipher_known_hosts');
  writeFileSync(knownHosts, `${a.address} ${a.hostKey}\n${b.address} ${b.hostKey}\n`);
  const sshOpts = ['-i', h.state.sshKeyPath, '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes'];
  const file = join(a.scratchDir, 'cipher.bin');
  await run('ssh', [...sshOpts, `root@${a.address}`, '--', shellJoin(['sh', '-c', `head -c ${megabytes * 1024 * 1024} /dev/urandom > ${file}`])], { timeout: 600_000 });
  const bytes = megabytes * 1024 * 1024;

  /** An ssh2 connection with the pinned host key; resolves with the cipher the server and ssh2 agreed on. */
  async function connect(host: NamespaceHostInfo, algorithms?: Algorithms): Promise<{ client: Client; cipher: string }> {
    const pinned = Buffer.from(host.hostKey.split(/\s+/)[1]!, 'base64');
    const client = new Client();
    clients.push(client);
    let cipher = '?';
    client.on('handshake', (n) => (cipher = n.cs.cipher));
    await new Promise<void>((resolve, reject) => {
      client.once('ready', resolve).once('error', reject);
      client.connect({ host: host.address, port: 22, username: 'root', privateKey, hostVerifier: (key: Buffer) => key.equals(pinned), ...(algorithms ? { algorithms } : {}) });
    });
    return { client, cipher };
  }
  const exec = (client: Client, command: string) => new Promise<ClientChannel>((resolve, reject) => client.exec(command, (err, ch) => (err ? reject(err) : resolve(ch))));
  const ended = (ch: ClientChannel) => new Promise<void>((resolve, reject) => ch.once('close', (code: number | null) => (code === 0 || code === null ? resolve() : reject(new Error(`remote exit ${code}`)))));

  type Timing = { ms: number; cpuMs: number; cipher: string };
  async function ssh2Read(algorithms?: Algorithms): Promise<Timing> {
    const { client, cipher } = await connect(a, algorithms);
    const cpu = process.cpuUsage();
    const t = performance.now();
    const ch = await exec(client, `cat ${file}`);
    let got = 0;
    ch.on('data', (c: Buffer) => (got += c.length));
    ch.stderr.resume();
    await ended(ch);
    const ms = performance.now() - t;
    const used = process.cpuUsage(cpu);
    client.end();
    if (got !== bytes) throw new Error(`read ${got} bytes, expected ${bytes}`);
    return { ms, cpuMs: (used.user + used.system) / 1000, cipher };
  }
  /** Upload only: this process writes the file's bytes (read from this machine's disk) into `cat > /dev/null` on B. */
  async function ssh2Write(algorithms?: Algorithms): Promise<Timing> {
    const { client, cipher } = await connect(b, algorithms);
    const cpu = process.cpuUsage();
    const t = performance.now();
    const ch = await exec(client, 'cat > /dev/null');
    ch.resume();
    ch.stderr.resume();
    createReadStream(file).pipe(ch);
    await ended(ch);
    const ms = performance.now() - t;
    const used = process.cpuUsage(cpu);
    client.end();
    return { ms, cpuMs: (used.user + used.system) / 1000, cipher };
  }
  async function ssh2Relay(algorithms?: Algorithms): Promise<Timing> {
    const [from, to] = [await connect(a, algorithms), await connect(b, algorithms)];
    const cpu = process.cpuUsage();
    const t = performance.now();
    const src = await exec(from.client, `cat ${file}`);
    const dst = await exec(to.client, 'cat > /dev/null');
    src.stderr.resume();
    dst.stderr.resume();
    dst.resume();
    src.pipe(dst);
    await Promise.all([ended(src), ended(dst)]);
    const ms = performance.now() - t;
    const used = process.cpuUsage(cpu);
    from.client.end();
    to.client.end();
    return { ms, cpuMs: (used.user + used.system) / 1000, cipher: `${from.cipher} / ${to.cipher}` };
  }
  async function openssh(cipher: string | undefined, how: 'read' | 'write' | 'relay'): Promise<Timing> {
    const c = cipher ? `-c ${cipher} ` : '';
    const opts = sshOpts.join(' ');
    const pipeline = {
      read: `ssh ${c}${opts} root@${a.address} cat ${file} > /dev/null`,
      write: `ssh ${c}${opts} root@${b.address} 'cat > /dev/null' < ${file}`,
      relay: `ssh ${c}${opts} root@${a.address} cat ${file} | ssh ${c}${opts} root@${b.address} 'cat > /dev/null'`,
    }[how];
    const t = performance.now();
    await run('sh', ['-c', `set -e; ${pipeline}`], { timeout: 600_000 });
    return { ms: performance.now() - t, cpuMs: NaN, cipher: cipher ?? 'default' };
  }

  const cases: [string, () => Promise<Timing>][] = [
    ['ssh2 read, default algorithms', () => ssh2Read()],
    ['ssh2 read, cipher aes128-gcm@openssh.com', () => ssh2Read({ cipher: ['aes128-gcm@openssh.com'] })],
    ['ssh2 read, cipher aes128-ctr + hmac-sha2-256-etm', () => ssh2Read({ cipher: ['aes128-ctr'], hmac: ['hmac-sha2-256-etm@openssh.com'] })],
    ['ssh2 write node->B, default', () => ssh2Write()],
    ['ssh2 write node->B, aes128-gcm@openssh.com', () => ssh2Write({ cipher: ['aes128-gcm@openssh.com'] })],
    ['ssh2 relay A->node->B, default', () => ssh2Relay()],
    ['ssh2 relay A->node->B, aes128-gcm@openssh.com', () => ssh2Relay({ cipher: ['aes128-gcm@openssh.com'] })],
    ['OpenSSH ssh A cat, default', () => openssh(undefined, 'read')],
    ['OpenSSH ssh A cat, aes128-gcm@openssh.com', () => openssh('aes128-gcm@openssh.com', 'read')],
    ['OpenSSH ssh B cat < file, default', () => openssh(undefined, 'write')],
    ['OpenSSH ssh B cat < file, aes128-gcm@openssh.com', () => openssh('aes128-gcm@openssh.com', 'write')],
    ['OpenSSH ssh A | ssh B, default', () => openssh(undefined, 'relay')],
    ['OpenSSH ssh A | ssh B, aes128-gcm@openssh.com', () => openssh('aes128-gcm@openssh.com', 'relay')],
  ];
  const results = new Map<string, Timing[]>(cases.map(([name]) => [name, []]));
  await run('cat', [file]).catch(() => undefined); // page cache warm for every case alike
  for (let i = 0; i < rounds; i++) for (const [name, fn] of cases) results.get(name)!.push(await fn());

  console.log(`${megabytes} MiB from namespace host A, median of ${rounds}`);
  for (const [name, xs] of results) {
    const ms = median(xs.map((x) => x.ms));
    const cpu = median(xs.map((x) => x.cpuMs));
    console.log(
      `  ${name.padEnd(48)} ${String(Math.round(ms)).padStart(6)} ms  ${((megabytes / ms) * 1000).toFixed(0).padStart(4)} MiB/s  ${(ms / megabytes * 1.024).toFixed(1)} s/GiB` +
        `${Number.isNaN(cpu) ? '' : `  node CPU ${Math.round(cpu)} ms (${((cpu / ms) * 100).toFixed(0)}% of a core)`}  negotiated ${xs[0]!.cipher}  runs ${xs.map((x) => Math.round(x.ms)).join(', ')}`,
    );
  }
  // Each ssh2 leg against OpenSSH doing the same with the same cipher choice.
  const pairs: [string, string, string][] = [
    ['read A -> this process, default', 'ssh2 read, default algorithms', 'OpenSSH ssh A cat, default'],
    ['read A -> this process, aes128-gcm', 'ssh2 read, cipher aes128-gcm@openssh.com', 'OpenSSH ssh A cat, aes128-gcm@openssh.com'],
    ['write this process -> B, default', 'ssh2 write node->B, default', 'OpenSSH ssh B cat < file, default'],
    ['write this process -> B, aes128-gcm', 'ssh2 write node->B, aes128-gcm@openssh.com', 'OpenSSH ssh B cat < file, aes128-gcm@openssh.com'],
    ['relay A -> B, default', 'ssh2 relay A->node->B, default', 'OpenSSH ssh A | ssh B, default'],
    ['relay A -> B, aes128-gcm', 'ssh2 relay A->node->B, aes128-gcm@openssh.com', 'OpenSSH ssh A | ssh B, aes128-gcm@openssh.com'],
  ];
  for (const [name, ours, theirs] of pairs) {
    report({ name: `${megabytes} MiB ${name}: ssh2`, metric: 'wall time', unit: 'ms', better: 'lower', samples: results.get(ours)!.map((x) => x.ms), baseline: { name: 'OpenSSH, same cipher choice', samples: results.get(theirs)!.map((x) => x.ms) }, params: `${rounds} rounds` });
  }
} finally {
  for (const c of clients) c.end();
  await h.teardown();
}
