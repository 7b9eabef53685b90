/**
 * Activities that give a user a running runtime and editor: each step checks what exists (rows in
 * PostgreSQL, containers on the host) and only makes what is missing, so a retry or a second login
 * never makes a twin.
 */
import { ApplicationFailure } from '@temporalio/common';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { posix } from 'node:path';
import { environmentAnswers, httpOk } from '../lib/environment-probe.js';
import type { DataServiceAccess } from '../lib/config.js';
import { reachableAddressOf, type HostRecord, type Store } from '../lib/store.js';
import type { EditorRecord, RuntimeRecord } from '../lib/runtime-store.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import {
  projectNamePattern,
  type EditorPlacement,
  type ImportProjectInput,
  type ImportProjectResult,
  type LoginPlan,
  type RuntimePlacement,
  type RuntimeStats,
} from '../workflows/contracts/user-environment.js';
import type { Plan } from '../workflows/contracts/users.js';
import { activitySignal, heartbeat } from './context.js';
import { HostCommandError, type HostShell, type HostShells } from './host-shell.js';
import { shellForHost } from './hosts.js';
import { containerStatusArgs, parseRawStats, rawStatsArgs, removeContainerArgs, runContainerArgs, runContainerCommand, startContainerArgs } from './podman-commands.js';
import { homeMarker, starterFiles } from './starter-project.js';
import {
  basePathOf,
  containerUserFor,
  editorContainerName,
  editorContainerSpec,
  planLimits,
  runtimeContainerName,
  runtimeContainerSpec,
} from './user-containers.js';

export interface UserEnvironmentDeps {
  store: Store;
  shells: HostShells;
  environment: UserEnvironmentConfig;
}

export interface UserEnvironmentConfig {
  /** The base server: editors live here, and runtimes start here. */
  baseHostId: string;
  /** Directory on every host under which each user's home is `<usersDir>/<userId>`. */
  usersDir: string;
  runtimeImage: string;
  editorImage: string;
  /** Project imports may clone from loopback and private addresses (tests only). */
  allowPrivateImports: boolean;
  /** Directory on every host for transient files such as checkpoint archives; next to usersDir by default. */
  scratchDir?: string;
  /** The entity's scale-down delay (MARKCO_SCALE_DOWN_AFTER_S); 30 min when absent. */
  scaleDownAfterMs?: number;
  /** Directory on the base server where checkpoint archives (idle, named snapshots) are kept; next to usersDir by default. */
  archivesDir?: string;
  /** An idle checkpoint also removes the editor container (MARKCO_IDLE_STOP_EDITOR); the next visit makes it again. */
  idleStopsEditor?: boolean;
  /**
   * The data service as runtimes reach it (flight/server.ts): a new runtime container gets its URL and a
   * data token of its own in MARKCO_DATA_URL and MARKCO_DATA_TOKEN. Absent: runtimes get neither.
   */
  dataService?: DataServiceAccess;
}

function fail(type: ErrorType, message: string): never {
  throw ApplicationFailure.create({ type, message, nonRetryable: true });
}

export type ContainerStatus = 'running' | 'missing' | 'stopped' | 'paused' | 'other';

/** A container's state on a host, folded into the few cases the activities decide on. */
export async function containerStatus(shell: HostShell, name: string): Promise<ContainerStatus> {
  const r = await shell.run(containerStatusArgs(name), { okExitCodes: [0, 125], timeoutMs: 30_000 });
  if (r.exitCode === 125) {
    if (/no such container/i.test(r.stderr)) return 'missing';
    throw new HostCommandError(shell.hostId, 'podman container inspect', r.exitCode, null, r.stderr, r.stdout);
  }
  const status = r.stdout.trim();
  if (status === 'running') return 'running';
  if (status === 'paused') return 'paused';
  if (['exited', 'created', 'stopped', 'configured'].includes(status)) return 'stopped';
  return 'other';
}

const portInUse = (err: unknown) => err instanceof HostCommandError && /address already in use|port is already allocated|bind: /i.test(err.stderr);
const nameInUse = (err: unknown) => err instanceof HostCommandError && /name .* is already in use|already in use by/i.test(err.stderr);

/**
 * Runs a container unless it exists; starts it if stopped. A port taken by something outside our leases
 * gets a new lease and the run is retried with it.
 */
async function ensureContainer(
  shell: HostShell,
  name: string,
  run: () => Promise<{ argv: string[]; stdin?: string }>,
  onPortTaken: () => Promise<void>,
  /** The row was just made, so the container almost surely does not exist: run first, look only if refused. */
  probablyMissing = false,
): Promise<'existed' | 'started' | 'created'> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const status = attempt === 0 && probablyMissing ? 'missing' : await containerStatus(shell, name);
    if (status === 'running') return 'existed';
    if (status === 'paused') return 'existed';
    if (status === 'stopped') {
      try {
        await shell.run(startContainerArgs(name), { timeoutMs: 60_000 });
        return 'started';
      } catch (err) {
        if (!portInUse(err)) throw err;
        await shell.run(removeContainerArgs(name));
        await onPortTaken();
        continue;
      }
    }
    if (status === 'other') await shell.run(removeContainerArgs(name));
    try {
      const { argv, stdin } = await run();
      await shell.run(argv, { timeoutMs: 120_000, ...(stdin !== undefined ? { stdin } : {}) });
      return 'created';
    } catch (err) {
      if (nameInUse(err)) continue;
      if (!portInUse(err)) throw err;
      // podman made the container before the bind failed: remove it so the next round starts clean.
      await shell.run(removeContainerArgs(name));
      await onPortTaken();
    }
  }
  throw new Error(`container ${name} could not be started after 5 attempts`);
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  let delay = 50;
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${what} did not answer within ${timeoutMs} ms`);
    heartbeat({ waitingFor: what, ms: Date.now() - started });
    if (activitySignal()?.aborted) throw new Error(`cancelled while waiting for ${what}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 500);
  }
}

/** The placement workflows exchange, from a runtime row that has a host (the callers check). */
export const runtimePlacement = (r: RuntimeRecord): RuntimePlacement => ({
  runtimeId: r.id,
  hostId: r.hostId!,
  containerName: r.containerName,
  port: r.port!,
  address: r.address!,
  state: r.state,
  tier: r.tier,
  memoryLimitBytes: r.memoryLimitBytes,
  cpuLimit: r.cpuLimit,
});

/** Removes an editor's container and gives its ports back, then records the row's end. Safe to repeat. */
export async function retireEditor(deps: Pick<UserEnvironmentDeps, 'store' | 'shells'>, row: EditorRecord, state: 'stopped' | 'failed'): Promise<void> {
  const { shell } = await shellForHost(deps, row.hostId);
  await shell.run(removeContainerArgs(row.containerName), { timeoutMs: 60_000 });
  await deps.store.editors.update(row.id, { state });
  for (const port of [row.port, row.syncPort]) if (port) await deps.store.ports.release({ hostId: row.hostId, port });
}

export const editorPlacement = (e: EditorRecord, address: string): EditorPlacement => ({
  editorId: e.id,
  hostId: e.hostId,
  containerName: e.containerName,
  port: e.port!,
  syncPort: e.syncPort!,
  address,
  state: e.state,
  url: basePathOf(e.userId),
});

/**
 * Makes a home once: the starter files (never overwriting a file that exists, from a half-finished earlier
 * attempt or the user), the `projects` link, ownership by the container user, then the marker.
 * Arguments: home, uid:gid, marker, then path and base64 content pairs.
 */
const prepareHomeScript = `set -eu
home=$1; owner=$2; marker=$3; shift 3
if [ -e "$marker" ]; then echo existing; exit 0; fi
mkdir -p "$home"
while [ $# -gt 1 ]; do
  mkdir -p "$(dirname "$1")"
  [ -e "$1" ] || printf '%s' "$2" | base64 -d > "$1"
  shift 2
done
[ -e "$home/projects" ] || [ -L "$home/projects" ] || ln -s Projects "$home/projects"
mkdir -p "$(dirname "$marker")"
chown -R "$owner" "$home"
touch "$marker"
echo initialized`;

/** Rejects addresses a user must not make the worker fetch from (loopback, private, link-local). */
export function isPrivateAddress(ip: string): boolean {
  if (isIP(ip) === 6) {
    const v = ip.toLowerCase();
    if (v === '::1' || v === '::') return true;
    if (v.startsWith('::ffff:')) return isPrivateAddress(v.slice(7));
    return /^(fc|fd|fe8|fe9|fea|feb)/.test(v);
  }
  const [a = 0, b = 0] = ip.split('.').map(Number);
  return a === 10 || a === 127 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127);
}

export function createUserEnvironmentActivities(deps: UserEnvironmentDeps) {
  const { store, environment: env } = deps;

  const homeOf = (userId: string) => posix.join(env.usersDir, userId);

  async function readyHost(hostId: string): Promise<{ host: HostRecord; shell: HostShell }> {
    const found = await shellForHost(deps, hostId);
    if (found.host.state !== 'ready') throw ApplicationFailure.create({ type: ErrorType.HostUnreachable, message: `host ${hostId} is ${found.host.state}, not ready` });
    return found;
  }

  /** Removes a runtime's container and gives its port back, then records the row's end and why. */
  async function retireRuntime(row: RuntimeRecord, state: 'stopped' | 'failed', event: string, payload?: Record<string, unknown>): Promise<void> {
    if (row.hostId) {
      const { host, shell } = await shellForHost(deps, row.hostId);
      // A terminated host took the container with it (an account deletion terminates the user's hosts first).
      if (host.state !== 'terminated') await shell.run(removeContainerArgs(row.containerName), { timeoutMs: 60_000 });
      if (row.port) await store.ports.release({ hostId: row.hostId, port: row.port });
    }
    await store.runtimes.update(row.id, { state });
    await store.events.append({ type: event, source: 'worker', userId: row.userId, runtimeId: row.id, hostId: row.hostId, ...(payload ? { payload } : {}) });
  }

  /**
   * A signed-in user whose runtime and editor already run is most logins: when both answer right now
   * (lib/environment-probe.ts, the same evidence the edge's sign-in uses), the login has nothing to make,
   * and answering here saves its five further activities. Anything else, or any check failing, leaves
   * the login to its full path, which looks before it makes.
   */
  async function warmPlacements(runtime: RuntimeRecord, editorAddress: string): Promise<LoginPlan['ready']> {
    const editor = await store.editors.live(runtime.userId);
    if (!editor || !(await environmentAnswers(runtime, editor, editorAddress, { retell: true }))) return undefined;
    return { runtime: runtimePlacement(runtime), editor: editorPlacement(editor, editorAddress) };
  }

  return {
    /** Who the user is and where their containers go: the host their runtime is on, else the base server. */
    async planLogin(input: { userId: string; plan?: Plan }): Promise<LoginPlan> {
      const user = await store.users.get(input.userId);
      if (!user) fail(ErrorType.NotFound, `user ${input.userId} does not exist`);
      // A sign-in racing the account's deletion must not bring containers back that the deletion removes.
      if (await store.accountDeletion.isDeleting(user.id)) fail(ErrorType.Conflict, `the account of user ${user.id} is being deleted`);
      if (input.plan && input.plan !== user.plan) await store.users.setPlan(user.id, input.plan);
      const plan = input.plan ?? user.plan;
      const runtime = await store.runtimes.live(user.id);
      // Checkpointed (idle), or a return that stopped half-way: the login brings it back first.
      const checkpointed = runtime?.state === 'checkpointed' || runtime?.state === 'restoring';
      if (runtime && !checkpointed && !['starting', 'running'].includes(runtime.state)) {
        fail(ErrorType.Conflict, `the runtime of user ${user.id} is ${runtime.state}; another operation owns it`);
      }
      const runtimeHostId = (!checkpointed && runtime?.hostId) || env.baseHostId;
      const editorHost = await store.hosts.get(env.baseHostId);
      if (!editorHost) fail(ErrorType.NotFound, `the base host ${env.baseHostId} is not registered (run the registerHost workflow for it)`);
      const ready = runtime?.state === 'running' && !(input.plan && input.plan !== user.plan) ? await warmPlacements(runtime, reachableAddressOf(editorHost)) : undefined;
      return {
        user: { id: user.id, name: user.name, email: user.email, plan },
        runtimeHostId,
        checkpointed,
        editorHostId: env.baseHostId,
        containerUser: containerUserFor(editorHost.facts),
        ...(ready ? { ready } : {}),
      };
    },

    /** Makes the user's home on a host, with the starter project the first time. */
    async prepareHome(input: { userId: string; hostId: string; uid: number; gid: number }): Promise<{ homeDir: string; initialized: boolean }> {
      const { shell } = await readyHost(input.hostId);
      const home = homeOf(input.userId);
      const marker = posix.join(home, homeMarker);
      const files = Object.entries(starterFiles).flatMap(([relative, content]) => [posix.join(home, relative), Buffer.from(content).toString('base64')]);
      // One command on the host, warm or cold: a first login is not eight round trips.
      const r = await shell.run(['sh', '-c', prepareHomeScript, 'sh', home, `${input.uid}:${input.gid}`, marker, ...files]);
      return { homeDir: home, initialized: r.stdout.trim() === 'initialized' };
    },

    /** The user's runtime container on its host, recorded first so its port is never given twice. */
    async ensureRuntime(input: { userId: string; hostId: string; plan: Plan; uid: number; gid: number }): Promise<RuntimePlacement> {
      const { host, shell } = await readyHost(input.hostId);
      const address = reachableAddressOf(host);
      const limits = planLimits[input.plan];
      let row = await store.runtimes.live(input.userId);
      let created = false;
      if (!row) {
        const port = await store.ports.lease({ hostId: host.id, userId: input.userId, purpose: 'runtime' });
        const made = await store.runtimes.ensure({
          userId: input.userId,
          containerName: runtimeContainerName(input.userId),
          hostId: host.id,
          port,
          address,
          tier: host.kind === 'base' ? 'base' : (host.instanceType ?? host.id),
          memoryLimitBytes: limits.memoryBytes,
          cpuLimit: limits.cpus,
          image: env.runtimeImage,
        });
        created = made.created;
        row = made;
      }
      if (row.hostId !== host.id) fail(ErrorType.Conflict, `the runtime of user ${input.userId} is on host ${row.hostId}, not ${host.id}`);
      let current = row;
      // One token per activity run, however many times ensureContainer tries `podman run`.
      let dataToken: string | undefined;
      await ensureContainer(
        shell,
        current.containerName,
        async () =>
          runContainerCommand(
            runtimeContainerSpec({
              userId: input.userId,
              image: current.image,
              homeDir: homeOf(input.userId),
              user: { uid: input.uid, gid: input.gid },
              limits: { memoryBytes: current.memoryLimitBytes, cpus: current.cpuLimit },
              hostPort: current.port!,
              publishAddress: current.address ?? address,
              // Issued in this activity and handed to podman on stdin: the token is never in workflow history.
              ...(env.dataService ? { data: { url: env.dataService.url, token: (dataToken ??= await store.dataTokens.issue(input.userId)) } } : {}),
            }),
          ),
        async () => {
          const port = await store.ports.lease({ hostId: host.id, userId: input.userId, purpose: 'runtime', avoid: [current.port!] });
          current = await store.runtimes.update(current.id, { port });
        },
        created,
      );
      return runtimePlacement(current);
    },

    /** Waits for MRP to answer `/capabilities`, then records the runtime as running. */
    async waitForRuntime(input: { runtimeId: string; address: string; port: number; timeoutMs?: number }): Promise<{ readyMs: number }> {
      const readyMs = await waitUntil(
        `the runtime's MRP at ${input.address}:${input.port}`,
        () => httpOk(`http://${input.address}:${input.port}/mrp/v1/capabilities`),
        input.timeoutMs ?? 60_000,
      );
      const row = await store.runtimes.get(input.runtimeId);
      if (row?.state === 'starting') await store.runtimes.update(input.runtimeId, { state: 'running' });
      return { readyMs };
    },

    /** The user's editor on the base server, pointed at the runtime's current address. */
    async ensureEditor(input: { userId: string; hostId: string; runtime: RuntimePlacement; uid: number; gid: number; profile: LoginPlan['user'] }): Promise<EditorPlacement> {
      const { host, shell } = await readyHost(input.hostId);
      let row = await store.editors.live(input.userId);
      let created = false;
      if (!row) {
        const [port, syncPort] = [
          await store.ports.lease({ hostId: input.hostId, userId: input.userId, purpose: 'editor' }),
          await store.ports.lease({ hostId: input.hostId, userId: input.userId, purpose: 'editor-sync' }),
        ];
        const made = await store.editors.ensure({
          userId: input.userId,
          runtimeId: input.runtime.runtimeId,
          containerName: editorContainerName(input.userId),
          hostId: input.hostId,
          port,
          syncPort,
          runtimeHost: input.runtime.address,
          runtimePort: input.runtime.port,
          image: env.editorImage,
        });
        created = made.created;
        row = made;
      }
      let current = row;
      const outcome = await ensureContainer(
        shell,
        current.containerName,
        async () => ({
          argv: runContainerArgs(
            editorContainerSpec({
              userId: input.userId,
              image: current.image ?? env.editorImage,
              homeDir: homeOf(input.userId),
              user: { uid: input.uid, gid: input.gid },
              port: current.port!,
              syncPort: current.syncPort!,
              runtimeHost: input.runtime.address,
              runtimePort: input.runtime.port,
              profile: input.profile,
            }),
          ),
        }),
        async () => {
          // With the host network the editor binds its ports itself: both may have been taken.
          const port = await store.ports.lease({ hostId: input.hostId, userId: input.userId, purpose: 'editor', avoid: [current.port!] });
          const syncPort = await store.ports.lease({ hostId: input.hostId, userId: input.userId, purpose: 'editor-sync', avoid: [current.syncPort!] });
          current = await store.editors.update(current.id, { port, syncPort });
        },
        created,
      );
      if (outcome === 'created') {
        current = await store.editors.update(current.id, { runtimeId: input.runtime.runtimeId, runtimeHost: input.runtime.address, runtimePort: input.runtime.port });
      }
      return editorPlacement(current, reachableAddressOf(host));
    },

    /** Waits for the editor's `/health`, tells it where the runtime is, and opens it to the edge. */
    async readyEditor(input: { editorId: string; userId: string; address: string; port: number; runtime: RuntimePlacement; timeoutMs?: number }): Promise<{ readyMs: number }> {
      const base = `http://${input.address}:${input.port}`;
      const readyMs = await waitUntil(`the editor at ${base}`, () => httpOk(`${base}/health`), input.timeoutMs ?? 60_000);
      // A restarted container reads its creation-time RUNTIME_* again: tell it the current address every time.
      const told = await httpOk(`${base}/api/runtime/update-port`, { method: 'POST', body: { port: input.runtime.port, host: input.runtime.address } });
      if (!told) throw new Error(`the editor at ${base} refused the runtime address ${input.runtime.address}:${input.runtime.port}`);
      await store.editors.update(input.editorId, {
        state: 'running',
        runtimeId: input.runtime.runtimeId,
        runtimeHost: input.runtime.address,
        runtimePort: input.runtime.port,
      });
      return { readyMs };
    },

    /** Removes a runtime that never became healthy, so the next login starts clean. */
    async discardRuntime(input: { runtimeId: string; reason: string }): Promise<void> {
      const row = await store.runtimes.get(input.runtimeId);
      if (!row || row.state === 'stopped' || row.state === 'failed') return;
      await retireRuntime(row, 'failed', 'runtime.discarded', { reason: input.reason.slice(0, 2000) });
    },

    async discardEditor(input: { userId: string; reason: string }): Promise<void> {
      const row = await store.editors.live(input.userId);
      if (!row || row.state === 'running') return;
      await retireEditor(deps, row, 'failed');
    },

    /** Stops and removes the user's editor container, running or not (the account is being deleted). */
    async removeEditor(input: { userId: string }): Promise<{ editorId: string | null }> {
      const row = await store.editors.live(input.userId);
      if (!row) return { editorId: null };
      await retireEditor(deps, row, 'stopped');
      return { editorId: row.id };
    },

    /** Stops and removes the user's runtime container; the editor stays and is re-pointed at the next login. */
    async removeRuntime(input: { userId: string }): Promise<{ runtimeId: string | null; hostId: string | null }> {
      const row = await store.runtimes.live(input.userId);
      if (!row) return { runtimeId: null, hostId: null };
      await retireRuntime(row, 'stopped', 'runtime.stopped');
      return { runtimeId: row.id, hostId: row.hostId };
    },

    /** Memory and CPU as the host's cgroup reports them right now. */
    async readRuntimeStats(input: { userId: string }): Promise<RuntimeStats | null> {
      const row = await store.runtimes.live(input.userId);
      if (!row?.hostId) return null;
      const { shell } = await shellForHost(deps, row.hostId);
      const r = await shell.run(rawStatsArgs(row.containerName), { okExitCodes: [0, 125], timeoutMs: 15_000 });
      if (r.exitCode !== 0) return null;
      return { ...parseRawStats(r.stdout), at: new Date().toISOString() };
    },

    /** `git clone --depth 1` of a public repository into the user's projects, within a time limit. */
    async importProject(input: ImportProjectInput & { uid: number; gid: number; hostId: string }): Promise<ImportProjectResult> {
      let url: URL;
      try {
        url = new URL(input.repoUrl);
      } catch {
        fail(ErrorType.InvalidInput, `repo_url: ${JSON.stringify(input.repoUrl)} is not a URL`);
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(ErrorType.InvalidInput, 'repo_url: only http(s) git URLs can be imported');
      if (url.username || url.password) fail(ErrorType.InvalidInput, 'repo_url: credentials in the URL are not accepted (public repositories only)');
      const name = input.name ?? posix.basename(url.pathname).replace(/\.git$/, '');
      if (!projectNamePattern.test(name)) fail(ErrorType.InvalidInput, `name: ${JSON.stringify(name)} is not a valid project name (letters, digits, '.', '_', '-'; at most 64)`);
      if (!env.allowPrivateImports) {
        const hostname = url.hostname.replace(/^\[|\]$/g, '');
        const addresses = isIP(hostname) ? [hostname] : (await lookup(hostname, { all: true }).catch(() => [])).map((a) => a.address);
        if (addresses.length === 0) fail(ErrorType.InvalidInput, `repo_url: cannot resolve ${hostname}`);
        if (addresses.some(isPrivateAddress)) fail(ErrorType.InvalidInput, `repo_url: ${hostname} is a private address`);
      }
      const { shell } = await readyHost(input.hostId);
      const projects = posix.join(homeOf(input.userId), 'Projects');
      const dest = posix.join(projects, name);
      if ((await shell.run(['test', '-e', dest], { okExitCodes: [0, 1] })).exitCode === 0) fail(ErrorType.Conflict, `a project named ${name} already exists`);
      const partial = posix.join(projects, `.import-${name}`);
      await shell.run(['rm', '-rf', partial]);
      await shell.run(['mkdir', '-p', projects]);
      const started = Date.now();
      try {
        await shell.run(
          ['env', 'GIT_TERMINAL_PROMPT=0', 'GIT_ASKPASS=/bin/true', 'git', '-c', 'protocol.allow=never', '-c', 'protocol.https.allow=always', '-c', 'protocol.http.allow=always', '-c', 'http.followRedirects=false',
            'clone', '--depth', '1', '--single-branch', '--no-tags', '--', url.href, partial],
          { timeoutMs: input.timeoutMs ?? 60_000, ...(activitySignal() ? { signal: activitySignal()! } : {}) },
        );
      } catch (err) {
        await shell.run(['rm', '-rf', partial]).catch(() => undefined);
        const detail = err instanceof HostCommandError ? err.stderr.trim().split('\n').slice(-2).join(' ') : (err as Error).message;
        fail(ErrorType.InvalidInput, `cloning ${url.href} failed: ${detail}`);
      }
      await shell.run(['chown', '-R', `${input.uid}:${input.gid}`, partial]);
      await shell.run(['mv', '-T', partial, dest]);
      return { project: name, path: `Projects/${name}`, url: `${basePathOf(input.userId)}?project=${encodeURIComponent(name)}`, durationMs: Date.now() - started };
    },
  };
}
