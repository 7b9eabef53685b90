import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { LocalShell } from '../../activities/host-shell.js';
import { waitFor } from './processes.js';

/**
 * Hosts that behave like runtime AMIs, on this one machine: each is a network namespace with a veth into
 * a bridge of its own run, its own sshd (reached by ssh2 at its own address, with a pinned host key) and
 * its own podman storage. The tests use them as EC2 hosts, and the simulated cloud boots one for every
 * running instance (infra/dev/simulated-cloud.ts). Only these 10.77.x.y addresses and loopback are
 * contacted.
 */
export interface TestNetwork {
  runId: string;
  bridge: string;
  /** "10.77.N": the bridge (this machine) is 10.77.N.1, static hosts 10.77.N.10+i, simulated instances .64 and up. */
  prefix: string;
  gateway: string;
}

export interface NamespaceHostInfo {
  hostId: string;
  netns: string;
  address: string;
  sshPort: number;
  sshUser: string;
  /** OpenSSH public key line of the host's sshd: what the control plane pins. */
  hostKey: string;
  dir: string;
  /** Where checkpoints and other files of this host live (like /var/lib/markco on an EC2 host); ssh sessions see it as MARKCO_HOST_SCRATCH_DIR. */
  scratchDir: string;
  env: { CONTAINERS_STORAGE_CONF: string; CONTAINERS_CONF: string };
  sshdPidFile: string;
}

export const testSubnetFirstOctets = '10.77';

/** The podman storage every image is built into; booted hosts use its images read-only, as an AMI would carry them. */
export const machineImageStore = '/var/lib/containers/storage';

/** PATH of an ssh session on Debian's sshd, which a host's own PATH entries go in front of. */
const sshdDefaultPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const local = new LocalShell('namespace-hosts', { commandTimeoutMs: 120_000 });
const run = (argv: string[], opts: { timeoutMs?: number; okExitCodes?: number[] } = {}) => local.run(argv, opts);

/** A local shell whose podman uses a host's own storage and configuration. */
export function hostEnvShell(h: { hostId: string; env: Record<string, string> }): LocalShell {
  return new LocalShell(h.hostId, { commandTimeoutMs: 120_000, env: { ...process.env, ...h.env } });
}

/** Runs podman as the namespace host's own podman (its storage, inside its network namespace). */
export function podmanOn(h: NamespaceHostInfo, args: string[], opts: { timeoutMs?: number; okExitCodes?: number[] } = {}) {
  return hostEnvShell(h).run(['nsenter', `--net=/var/run/netns/${h.netns}`, 'podman', ...args], opts);
}

async function usedPrefixes(): Promise<Set<string>> {
  const out = await run(['ip', '-4', '-o', 'addr', 'show']);
  const used = new Set<string>();
  for (const m of out.stdout.matchAll(/inet (10\.77\.\d+)\.\d+\//g)) used.add(m[1]!);
  return used;
}

export async function createTestNetwork(runId: string): Promise<TestNetwork> {
  const used = await usedPrefixes();
  const free = Array.from({ length: 250 }, (_, i) => `${testSubnetFirstOctets}.${i + 1}`).filter((p) => !used.has(p));
  const prefix = free[Math.floor(Math.random() * free.length)];
  if (!prefix) throw new Error('no free 10.77.N.0/24 test subnet left');
  const bridge = `mkt${runId}`;
  const gateway = `${prefix}.1`;
  await run(['ip', 'link', 'add', bridge, 'type', 'bridge']);
  await run(['ip', 'addr', 'add', `${gateway}/24`, 'dev', bridge]);
  await run(['ip', 'link', 'set', bridge, 'up']);
  return { runId, bridge, prefix, gateway };
}

export async function destroyTestNetwork(net: TestNetwork): Promise<void> {
  await run(['ip', 'link', 'del', net.bridge], { okExitCodes: [0, 1] });
}

/** A host's own podman storage; `sharedImageStore` adds a read-only store whose images it can use. */
export function storageConf(dir: string, sharedImageStore?: string): string {
  const shared = sharedImageStore ? `[storage.options]\nadditionalimagestores = ["${sharedImageStore}"]\n` : '';
  return `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/storage"\nrunroot = "${dir}/run"\n${shared}`;
}

/** CONTAINERS_CONF replaces every other containers.conf, so it repeats what the base host gets from bootstrap. */
export function containersConf(dir: string): string {
  return [
    '[containers]',
    'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
    '',
    '[engine]',
    'runtime = "runc"',
    `tmp_dir = "${dir}/tmp"`,
    '',
  ].join('\n');
}

function sshdConfig(h: { address: string; dir: string; authorizedKeys: string; env: NamespaceHostInfo['env']; hostId: string; pathPrefix: string[] }): string {
  const sessionEnv = [
    // Remote podman uses this host's storage, as a runtime AMI's podman would use its own disk.
    `CONTAINERS_STORAGE_CONF=${h.env.CONTAINERS_STORAGE_CONF}`,
    `CONTAINERS_CONF=${h.env.CONTAINERS_CONF}`,
    `MARKCO_HOST_ID=${h.hostId}`,
    `MARKCO_HOST_SCRATCH_DIR=${join(h.dir, 'scratch')}`,
    ...(h.pathPrefix.length > 0 ? [`PATH=${[...h.pathPrefix, sshdDefaultPath].join(':')}`] : []),
  ];
  return [
    `ListenAddress ${h.address}`,
    'Port 22',
    `HostKey ${h.dir}/ssh/host_ed25519_key`,
    `PidFile ${h.dir}/ssh/sshd.pid`,
    `AuthorizedKeysFile ${h.authorizedKeys}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'MaxSessions 64',
    'MaxStartups 64:30:128',
    'Subsystem sftp internal-sftp',
    `SetEnv ${sessionEnv.join(' ')}`,
    '',
  ].join('\n');
}

/** Resolves once something accepts TCP connections at address:port. */
export async function tcpOpen(address: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = connect({ host: address, port, timeout: 500 });
    s.once('connect', () => {
      s.destroy();
      resolve();
    });
    s.once('timeout', () => {
      s.destroy();
      reject(new Error('timeout'));
    });
    s.once('error', reject);
  });
}

export interface NamespaceHostOptions {
  net: TestNetwork;
  runDir: string;
  /** Names the namespace (mkt-<runId>-<index>) and the links (mkt<runId>h<index>); the address's last octet for booted instances. */
  index: number;
  /** Path of the authorized_keys file sshd reads. */
  authorizedKeys: string;
  /** `podman save` archives loaded into the host's storage (a slow copy; sharedImageStore is instant). */
  imageArchives?: string[];
  /** Default `<prefix>.<10 + index>`. */
  address?: string;
  /** Default `nh-<runId>-<index>`. */
  hostId?: string;
  /** The sshd host key to use (an instance's key from its UserData); generated when absent. */
  hostKeyPrivate?: string;
  /** A read-only image store (additionalimagestores), like images baked into an AMI. */
  sharedImageStore?: string;
  /** Directories put in front of PATH in ssh sessions (the simulated cloud's "bad AMI" shim). */
  pathPrefix?: string[];
}

/**
 * A host's network namespace: `netns` with eth0 at `address` on a veth into the run's bridge (link names
 * mkt<runId>h<index> / n<index>), lo up, the bridge as default route. The veth goes with the namespace.
 */
export async function addHostNetns(net: TestNetwork, index: number, netns: string, address: string): Promise<void> {
  const vethHost = `${net.bridge}h${index}`;
  const vethPeer = `${net.bridge}n${index}`;
  const inNs = (argv: string[]) => run(['nsenter', `--net=/var/run/netns/${netns}`, ...argv]);
  await run(['ip', 'netns', 'add', netns]);
  await run(['ip', 'link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethPeer]);
  await run(['ip', 'link', 'set', vethPeer, 'netns', netns]);
  await run(['ip', 'link', 'set', vethHost, 'master', net.bridge, 'up']);
  await inNs(['ip', 'link', 'set', 'lo', 'up']);
  await inNs(['ip', 'link', 'set', vethPeer, 'name', 'eth0']);
  await inNs(['ip', 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  await inNs(['ip', 'link', 'set', 'eth0', 'up']);
  await inNs(['ip', 'route', 'add', 'default', 'via', net.gateway]);
}

export async function createNamespaceHost(opts: NamespaceHostOptions): Promise<NamespaceHostInfo> {
  const { net, index } = opts;
  const hostId = opts.hostId ?? `nh-${net.runId}-${index}`;
  const netns = `mkt-${net.runId}-${index}`;
  const address = opts.address ?? `${net.prefix}.${10 + index}`;
  const dir = join(opts.runDir, 'hosts', hostId);
  for (const sub of ['storage', 'run', 'tmp', 'ssh', 'scratch']) mkdirSync(join(dir, sub), { recursive: true });
  const env = { CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'), CONTAINERS_CONF: join(dir, 'containers.conf') };
  writeFileSync(env.CONTAINERS_STORAGE_CONF, storageConf(dir, opts.sharedImageStore));
  writeFileSync(env.CONTAINERS_CONF, containersConf(dir));

  const keyFile = join(dir, 'ssh', 'host_ed25519_key');
  const info: NamespaceHostInfo = {
    hostId,
    netns,
    address,
    sshPort: 22,
    sshUser: 'root',
    hostKey: '',
    dir,
    scratchDir: join(dir, 'scratch'),
    env,
    sshdPidFile: join(dir, 'ssh', 'sshd.pid'),
  };
  const vethHost = `${net.bridge}h${index}`;
  try {
    await addHostNetns(net, index, netns, address);

    if (opts.hostKeyPrivate) {
      // sshd ignores a private host key that others can read.
      writeFileSync(keyFile, opts.hostKeyPrivate, { mode: 0o600 });
      writeFileSync(`${keyFile}.pub`, `${(await run(['ssh-keygen', '-y', '-f', keyFile])).stdout.trim()}\n`);
    } else {
      await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', hostId, '-f', keyFile]);
    }
    info.hostKey = readFileSync(`${keyFile}.pub`, 'utf8').trim();
    const sshdConfigPath = join(dir, 'ssh', 'sshd_config');
    writeFileSync(sshdConfigPath, sshdConfig({ address, dir, authorizedKeys: opts.authorizedKeys, env, hostId, pathPrefix: opts.pathPrefix ?? [] }));
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    // sshd daemonizes: it keeps running inside the namespace until teardown kills it by its pid file.
    await run(['nsenter', `--net=/var/run/netns/${netns}`, '/usr/sbin/sshd', '-f', sshdConfigPath, '-E', join(dir, 'ssh', 'sshd.log')]);
    await waitFor(`sshd of ${hostId} at ${address}:22`, () => tcpOpen(address, 22), { timeoutMs: 10_000, intervalMs: 50 });
    for (const archive of opts.imageArchives ?? []) await podmanOn(info, ['load', '--quiet', '--input', archive], { timeoutMs: 300_000 });
  } catch (err) {
    // Half a host is no host: take down what was made (the veth goes with the namespace).
    await destroyNamespaceHost(info).catch(() => undefined);
    await run(['ip', 'link', 'del', vethHost], { okExitCodes: [0, 1] }).catch(() => undefined);
    throw err;
  }
  return info;
}

function pidFrom(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Removes everything a namespace host holds: containers, processes, mounts, the namespace, its links. */
export async function destroyNamespaceHost(h: NamespaceHostInfo): Promise<void> {
  if (existsSync(`/var/run/netns/${h.netns}`)) {
    await podmanOn(h, ['rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125], timeoutMs: 60_000 }).catch(() => undefined);
  }
  const sshd = pidFrom(h.sshdPidFile);
  if (sshd) {
    try {
      process.kill(sshd, 'SIGKILL');
    } catch {
      /* already gone */
    }
    // SIGKILL leaves the pid file: a later destroy must not kill whatever process reuses the pid.
    rmSync(h.sshdPidFile, { force: true });
  }
  await removeNetns(h.netns);
}

/** Kills whatever still runs in a host's network namespace and deletes it (the veth goes with it). */
export async function removeNetns(netns: string): Promise<void> {
  if (!existsSync(`/var/run/netns/${netns}`)) return;
  const pids = await run(['ip', 'netns', 'pids', netns], { okExitCodes: [0, 1] });
  for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await run(['ip', 'netns', 'del', netns], { okExitCodes: [0, 1] });
}
