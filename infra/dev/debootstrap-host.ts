import { spawn } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalShell } from '../../activities/host-shell.js';
import { repoRoot } from '../../lib/paths.js';
import { addHostNetns, removeNetns, tcpOpen, type TestNetwork } from './namespace-hosts.js';
import { waitFor } from './processes.js';

/**
 * A runtime host made the way a fresh instance is: a plain `debootstrap --variant=minbase bookworm` root
 * that infra/runtime-host/provision.sh turns into a runtime host, then "boots" in a network namespace of
 * its own. The host is a private mount namespace and PID namespace whose root is that tree (pivot_root, so
 * CRIU sees a proper mount tree), with /proc, /sys (cgroups), /dev and a tmpfs /run; its init is the root's
 * own /bin/sh and its only service the root's own sshd, on the host's own 10.77.x.y address. Everything
 * the control plane runs there over ssh (podman, runc, conmon, CRIU) is what the recipe installed in the
 * root; nothing of the machine's is visible in it.
 *
 * Killing the namespace's launcher kills its init (unshare --kill-child), and with it every process of the
 * PID namespace (containers included); the mount namespace and every mount in it go with the last one.
 * Nothing is mounted in the machine's own mount namespace.
 *
 * The mirror: the untouched debootstrap tree is cached as a tarball, the recipe's downloaded packages and
 * the apt lists it fetched are cached too (under .markco/cache/runtime-host), so only the first build
 * reaches the Debian mirror; the recipe itself runs in full every time.
 */
export const runtimeHostCacheDir = join(repoRoot, '.markco', 'cache', 'runtime-host');
export const provisionScript = join(repoRoot, 'infra', 'runtime-host', 'provision.sh');

export interface DebootstrapHostInfo {
  hostId: string;
  netns: string;
  address: string;
  sshPort: number;
  sshUser: string;
  /** The ed25519 key the root's sshd presents (generated in the root by its openssh-server): what the control plane pins. */
  hostKey: string;
  dir: string;
  /** The host's root filesystem, as seen from the machine. */
  root: string;
  /** Pid (in the machine's PID namespace) of the launcher whose death ends the host. */
  launcherPidFile: string;
  /** What the recipe printed, and how long it took. */
  provisionLog: string;
  provisionMs: number;
  bootLog: string;
}

export interface DebootstrapHostOptions {
  net: TestNetwork;
  runDir: string;
  index: number;
  /** The workers' OpenSSH public key line(s): the recipe makes them root's only authorised keys. */
  authorizedKeys: string;
  /** `podman save` archives the recipe loads (bound read-only into the root for the provisioning). */
  imageArchives: string[];
  hostId?: string;
  address?: string;
  mirror?: string;
  cacheDir?: string;
  /** Extra environment of every process started (e.g. a test run's marker). */
  env?: Record<string, string>;
}

const local = new LocalShell('debootstrap-host', { commandTimeoutMs: 600_000 });
const run = (argv: string[], opts: { timeoutMs?: number; okExitCodes?: number[] } = {}) => local.run(argv, opts);
const cleanPath = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The untouched minbase bookworm tree as a tarball, made once (about a minute) and reused. */
export async function debootstrapTarball(opts: { mirror?: string; cacheDir?: string } = {}): Promise<string> {
  const cacheDir = opts.cacheDir ?? runtimeHostCacheDir;
  const tarball = join(cacheDir, 'debootstrap-bookworm-minbase.tar');
  if (existsSync(tarball)) return tarball;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = join(cacheDir, `debootstrap-${process.pid}.partial`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    await run(['debootstrap', '--variant=minbase', 'bookworm', tmp, opts.mirror ?? process.env.MARKCO_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian'], { timeoutMs: 900_000 });
    await run(['tar', '-C', tmp, '-cf', `${tarball}.partial`, '.']);
    renameSync(`${tarball}.partial`, tarball);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(`${tarball}.partial`, { force: true });
  }
  return tarball;
}

/**
 * The shell run by the launcher inside the new mount and PID namespaces: mounts what a booted machine has,
 * pivots into the root and execs the command there. Arguments: ROOT [BIND_SRC BIND_DST]... -- COMMAND...
 * (each bind is read-only, onto a file made under the root's tmpfs /run).
 */
const bootScript = `set -eu
R=$1; shift
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"; mount --make-rslave "$R/sys"
mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
while [ "$1" != -- ]; do
  mkdir -p "$(dirname "$R$2")"; : > "$R$2"
  mount --bind "$1" "$R$2"; mount -o remount,bind,ro "$R$2"
  shift 2
done
shift
cd "$R"
pivot_root . .
umount -l .
exec "$@"
`;

function launcherArgs(root: string, binds: [string, string][], command: string[]): string[] {
  return ['unshare', '--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private', '--', 'sh', '-c', bootScript, 'markco-host-boot', root, ...binds.flat(), '--', ...command];
}

function spawnLauncher(argv: string[], env: Record<string, string>, logFile: string) {
  const fd = openSync(logFile, 'a');
  try {
    return spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], env, detached: true });
  } finally {
    closeSync(fd);
  }
}

function copyDirContents(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from)) if (name !== 'lock' && name !== 'partial') cpSync(join(from, name), join(to, name), { recursive: true });
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export async function createDebootstrapHost(opts: DebootstrapHostOptions): Promise<DebootstrapHostInfo> {
  const { net, index } = opts;
  const cacheDir = opts.cacheDir ?? runtimeHostCacheDir;
  const hostId = opts.hostId ?? `dh-${net.runId}-${index}`;
  const netns = `mkt-${net.runId}-${index}`;
  const address = opts.address ?? `${net.prefix}.${10 + index}`;
  const dir = join(opts.runDir, 'hosts', hostId);
  const root = join(dir, 'root');
  mkdirSync(root, { recursive: true });
  const info: DebootstrapHostInfo = {
    hostId,
    netns,
    address,
    sshPort: 22,
    sshUser: 'root',
    hostKey: '',
    dir,
    root,
    launcherPidFile: join(dir, 'launcher.pid'),
    provisionLog: join(dir, 'provision.log'),
    provisionMs: 0,
    bootLog: join(dir, 'boot.log'),
  };
  const baseEnv = { PATH: cleanPath, LANG: 'C.UTF-8', ...(opts.env ?? {}) };

  // 1. A fresh instance: the plain debootstrap tree.
  const tarball = await debootstrapTarball({ ...(opts.mirror ? { mirror: opts.mirror } : {}), cacheDir });
  await run(['tar', '-C', root, '-xf', tarball]);

  // 2. What the install step finds, as an instance would: this machine's apt settings for its mirror
  // (a frozen snapshot here, so its Valid-Until dates have passed), and the apt state cached by earlier builds.
  const aptConf = '/etc/apt/apt.conf.d';
  if (existsSync(aptConf)) {
    for (const f of readdirSync(aptConf)) {
      const text = readFileSync(join(aptConf, f), 'utf8');
      if (/Acquire::Check-(Valid-Until|Date)/.test(text)) writeFileSync(join(root, aptConf, f), text);
    }
  }
  const listsCache = join(cacheDir, 'apt-lists');
  const debsCache = join(cacheDir, 'apt-archives');
  mkdirSync(debsCache, { recursive: true });
  if (existsSync(listsCache)) copyDirContents(listsCache, join(root, 'var/lib/apt/lists'));
  copyDirContents(debsCache, join(root, 'var/cache/apt/archives'));

  // 3. The recipe, in the root, in the machine's network namespace (it reaches the mirror on a first build only).
  const binds: [string, string][] = [[provisionScript, '/run/markco/provision.sh']];
  opts.imageArchives.forEach((a, i) => binds.push([a, `/run/markco/images/${i}.tar`]));
  const recipeEnv = {
    ...baseEnv,
    MARKCO_AUTHORIZED_KEYS: opts.authorizedKeys.trim(),
    MARKCO_SSH_USER: 'root',
    MARKCO_IMAGE_ARCHIVES: opts.imageArchives.map((_, i) => `/run/markco/images/${i}.tar`).join(' '),
    ...(opts.mirror ? { MARKCO_DEBIAN_MIRROR: opts.mirror } : {}),
  };
  const started = Date.now();
  writeFileSync(info.provisionLog, '');
  const recipe = spawnLauncher(launcherArgs(root, binds, ['/bin/sh', '/run/markco/provision.sh']), recipeEnv, info.provisionLog);
  const code = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => recipe.kill('SIGKILL'), 900_000);
    recipe.once('error', (e) => (clearTimeout(timer), reject(e)));
    recipe.once('exit', (c, sig) => (clearTimeout(timer), resolve(c ?? (sig ? 128 : 1))));
  });
  info.provisionMs = Date.now() - started;
  if (code !== 0) throw new Error(`the runtime-host recipe failed in ${hostId}'s debootstrap root (exit ${code}):\n${tail(info.provisionLog)}`);

  // Keep what the recipe downloaded for the next build.
  if (readFileSync(info.provisionLog, 'utf8').includes('apt-get update') || !existsSync(listsCache)) {
    const tmp = `${listsCache}.${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    copyDirContents(join(root, 'var/lib/apt/lists'), tmp);
    rmSync(listsCache, { recursive: true, force: true });
    renameSync(tmp, listsCache);
  }
  for (const f of readdirSync(join(root, 'var/cache/apt/archives'))) {
    if (f.endsWith('.deb') && !existsSync(join(debsCache, f))) cpSync(join(root, 'var/cache/apt/archives', f), join(debsCache, f));
  }
  info.hostKey = readFileSync(join(root, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');

  // 4. Boot: the host's network namespace, then its init (the root's sh) and the root's sshd on its address.
  try {
    await addHostNetns(net, index, netns, address);
    const sshd = `/usr/sbin/sshd -D -e -o ListenAddress=${address} -o HostKey=/etc/ssh/ssh_host_ed25519_key -o PidFile=none`;
    writeFileSync(info.bootLog, '');
    const launcher = spawnLauncher(['nsenter', `--net=/var/run/netns/${netns}`, ...launcherArgs(root, [], ['/bin/sh', '-c', `mkdir -p /run/sshd && ${sshd} & wait`])], baseEnv, info.bootLog);
    launcher.unref();
    writeFileSync(info.launcherPidFile, String(launcher.pid));
    let exited: number | null | undefined;
    launcher.once('exit', (c) => (exited = c));
    await waitFor(
      `sshd of ${hostId} at ${address}:22`,
      async () => {
        if (exited !== undefined) throw new Error(`the host's init exited (${exited}): ${tail(info.bootLog)}`);
        await tcpOpen(address, 22);
      },
      { timeoutMs: 15_000, intervalMs: 50 },
    );
  } catch (err) {
    await destroyDebootstrapHost(info).catch(() => undefined);
    throw err;
  }
  return info;
}

/** The pid (in the machine's namespace) of the host's init, the launcher's only child. */
function initPid(h: DebootstrapHostInfo): number | undefined {
  const launcher = pidFrom(h.launcherPidFile);
  if (!launcher) return undefined;
  try {
    const children = readFileSync(`/proc/${launcher}/task/${launcher}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return children[0];
  } catch {
    return undefined;
  }
}

function pidFrom(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Runs argv inside the host (its mount, PID and network namespaces and its root), as its own processes
 * would: for checks from the machine's side, and teardown.
 */
export async function inDebootstrapHost(h: DebootstrapHostInfo, argv: string[], opts: { timeoutMs?: number; okExitCodes?: number[] } = {}) {
  const pid = initPid(h);
  if (!pid) throw new Error(`host ${h.hostId} is not running`);
  return local.run(['nsenter', `--target=${pid}`, '--mount', '--pid', '--net', '--root', '--wd=/', '--', 'env', '-i', `PATH=${cleanPath}`, ...argv], opts);
}

/** Removes the host: its containers (so podman cleans their cgroups), every process in it, its namespaces and link. */
export async function destroyDebootstrapHost(h: DebootstrapHostInfo): Promise<void> {
  if (initPid(h)) await inDebootstrapHost(h, ['podman', 'rm', '--all', '--force', '--time', '0'], { okExitCodes: [0, 1, 2, 125], timeoutMs: 60_000 }).catch(() => undefined);
  const launcher = pidFrom(h.launcherPidFile);
  if (launcher) {
    const init = initPid(h);
    for (const pid of [launcher, init]) {
      if (!pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(h.launcherPidFile, { force: true });
    // The PID namespace ends when its init does: wait until the kernel has reaped every process of it.
    if (init) await waitFor(`the end of ${h.hostId}'s processes`, async () => {
      if (existsSync(`/proc/${init}`)) throw new Error('still running');
    }, { timeoutMs: 10_000, intervalMs: 50 }).catch(() => undefined);
  }
  await removeNetns(h.netns);
}
