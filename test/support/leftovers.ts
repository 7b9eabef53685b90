import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LocalShell } from '../../activities/host-shell.js';

/** Every test run lives under this directory; a run's namespaces and links carry its id. */
export const testRunsRoot = '/var/tmp/markco-test';

/** Set in the environment of everything a run starts (inherited by sshd, podman, conmon, servers). */
export const runMarkerEnv = 'MARKCO_TEST_RUN';

const local = new LocalShell('test-harness', { commandTimeoutMs: 60_000 });

function pids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => p !== process.pid);
}

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Container ids created in the run's host storages (overlay-containers/<64 hex>). */
function containerIds(runDir: string): string[] {
  const hostsDir = join(runDir, 'hosts');
  if (!existsSync(hostsDir)) return [];
  return readdirSync(hostsDir).flatMap((h) => {
    const dir = join(hostsDir, h, 'storage', 'overlay-containers');
    return existsSync(dir) ? readdirSync(dir).filter((d) => /^[0-9a-f]{64}$/.test(d)) : [];
  });
}

export interface Leftovers {
  processes: { pid: number; what: string }[];
  namespaces: string[];
  links: string[];
  mounts: string[];
}

/** What a run would leave behind: processes that name its directory or sit in its containers' cgroups, namespaces, links, mounts. */
export async function findLeftovers(runDir: string, runId: string): Promise<Leftovers> {
  const ids = containerIds(runDir);
  const processes: Leftovers['processes'] = [];
  const marker = `\0${runMarkerEnv}=${runDir}\0`;
  for (const pid of pids()) {
    const cmdline = read(`/proc/${pid}/cmdline`).replace(/\0/g, ' ').trim();
    if (cmdline.includes(runDir) || `\0${read(`/proc/${pid}/environ`)}`.includes(marker)) {
      processes.push({ pid, what: cmdline.slice(0, 160) });
      continue;
    }
    if (ids.length > 0) {
      const cgroup = read(`/proc/${pid}/cgroup`);
      const id = ids.find((i) => cgroup.includes(i));
      if (id) processes.push({ pid, what: `container ${id.slice(0, 12)}: ${cmdline.slice(0, 120)}` });
    }
  }
  const netns = (await local.run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(`mkt-${runId}-`));
  const links = (await local.run(['ip', '-o', 'link', 'show'])).stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n.startsWith(`mkt${runId}`));
  const mounts = read('/proc/self/mountinfo')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(`${runDir}/`) || m === runDir);
  return { processes, namespaces: netns, links, mounts };
}

export function describeLeftovers(l: Leftovers): string[] {
  return [
    ...l.processes.map((p) => `process ${p.pid} (${p.what})`),
    ...l.namespaces.map((n) => `network namespace ${n}`),
    ...l.links.map((n) => `network link ${n}`),
    ...l.mounts.map((m) => `mount ${m}`),
  ];
}

/** Removes whatever a run left: kills its processes, unmounts, deletes namespaces and links, then its files. */
export async function removeLeftovers(runDir: string, runId: string): Promise<void> {
  const found = await findLeftovers(runDir, runId);
  for (const p of found.processes) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const m of found.mounts.sort((a, b) => b.length - a.length)) {
    await local.run(['umount', '--lazy', m], { okExitCodes: [0, 32] });
  }
  for (const n of found.namespaces) await local.run(['ip', 'netns', 'del', n], { okExitCodes: [0, 1] });
  for (const n of found.links) await local.run(['ip', 'link', 'del', n], { okExitCodes: [0, 1] });
  rmSync(runDir, { recursive: true, force: true });
}

/** A process's start time in clock ticks since boot: with the pid, it names one process for good. */
export function processStartTime(pid: number): string | undefined {
  const stat = read(`/proc/${pid}/stat`);
  // Field 22, counted after the command name, which is in parentheses and may contain spaces.
  return stat ? stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] : undefined;
}

export function ownerRecord(): { pid: number; startTime: string | undefined; startedAt: string } {
  return { pid: process.pid, startTime: processStartTime(process.pid), startedAt: new Date().toISOString() };
}

function ownerAlive(runDir: string): boolean {
  try {
    const { pid, startTime } = JSON.parse(readFileSync(join(runDir, 'owner.json'), 'utf8')) as { pid: number; startTime?: string };
    return startTime !== undefined && processStartTime(pid) === startTime;
  } catch {
    return false;
  }
}

/** Runs whose owning process is gone (killed, crashed) are removed before a new run starts. */
export async function sweepDeadRuns(): Promise<string[]> {
  if (!existsSync(testRunsRoot)) return [];
  const swept: string[] = [];
  for (const runId of readdirSync(testRunsRoot)) {
    if (runId === 'cache') continue;
    const runDir = join(testRunsRoot, runId);
    if (ownerAlive(runDir)) continue;
    await removeLeftovers(runDir, runId);
    swept.push(runId);
  }
  // Namespaces of runs whose directory is already gone.
  const orphans = (await local.run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => /^mkt-([0-9a-f]+)-\d+/.exec(l)?.[1])
    .filter((id): id is string => !!id && !existsSync(join(testRunsRoot, id)));
  for (const runId of new Set(orphans)) {
    await removeLeftovers(join(testRunsRoot, runId), runId);
    swept.push(runId);
  }
  return swept;
}
