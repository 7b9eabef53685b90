/**
 * Activities of the migration saga (workflows/migrate.ts): each step looks at what exists before it
 * acts, so a retry after a worker crash continues where the last attempt stopped, and each has an undo
 * the workflow runs when a later step fails.
 */
import { ApplicationFailure } from '@temporalio/common';
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { reachableAddressOf } from '../lib/store.js';
import { defaultTierLadder, nextTier, smallestTierFor, tierNamed, type Tier } from '../lib/tiers.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import type { MigrationTimings } from '../workflows/contracts/elastic.js';
import type { EditorPlacement, RuntimePlacement } from '../workflows/contracts/user-environment.js';
import type { Plan } from '../workflows/contracts/users.js';
import { activitySignal, currentActivity, heartbeat } from './context.js';
import { HostCommandError, type HostShell } from './host-shell.js';
import { shellForHost } from './hosts.js';
import type { ActivityDeps } from './index.js';
import {
  cgroupMemoryLimitArgs,
  checkpointThenPauseArgs,
  parseCgroupMemoryLimit,
  parseCheckpointStats,
  parseRestoreStats,
  parseStorageRoots,
  relocateStoragePaths,
  setCheckpointMemoryLimit,
  storageRootsArgs,
  pauseArgs,
  removeContainerArgs,
  restoreArgs,
  unpauseArgs,
  updateMemoryArgs,
} from './podman-commands.js';
import { streamFileBetweenHosts, TarMemberRewriter } from './transfer.js';
import { basePathOf, containerUserFor, runtimeContainerPort } from './user-containers.js';
import { containerStatus } from './user-environment.js';

/** A tier as the workflow sees it (workflows cannot import lib/tiers.ts). */
export interface MigrationTier {
  name: string;
  instanceType: string | null;
  memoryBytes: number;
  cpus: number;
  gpu: boolean;
}

export interface MigrationPlan {
  migrationId: string;
  userId: string;
  plan: Plan;
  runtime: RuntimePlacement;
  /** The state the runtime was in before the migration (a critical migration may find it paused). */
  runtimeState: 'running' | 'paused';
  editor: EditorPlacement | null;
  sourceKind: 'base' | 'ec2';
  baseHostId: string;
  from: MigrationTier;
  to: MigrationTier;
  containerUser: { uid: number; gid: number };
}

export interface CheckpointResult {
  archivePath: string;
  archiveBytes: number;
  sha256: string;
  checkpointMs: number;
  transferMs: number;
  frozenMs: number | null;
  startedAt: number;
}

function fail(type: ErrorType, message: string): never {
  throw ApplicationFailure.create({ type, message, nonRetryable: true });
}

/**
 * Where a migration keeps its files on a host: a directory per role, so hosts that share a disk (test
 * hosts do) never remove each other's files.
 */
export function migrationScratch(scratchDir: string, migrationId: string): { sourceDir: string; targetDir: string; fifo: string; archive: string } {
  if (!/^[0-9a-f-]{36}$/.test(migrationId)) throw new Error(`invalid migration id ${migrationId}`);
  const dir = posix.join(scratchDir, 'migrations', migrationId);
  const sourceDir = posix.join(dir, 'source');
  const targetDir = posix.join(dir, 'target');
  return { sourceDir, targetDir, fifo: posix.join(sourceDir, 'out.fifo'), archive: posix.join(targetDir, 'in.tar') };
}

/**
 * A worker killed mid-transfer leaves its dump behind: podman opens the FIFO read-write, so it never sees
 * the reader go and blocks for ever, holding the container's lock (every later podman command on the
 * container hangs). Kills exactly this migration's dump (its FIFO path names the migration); `[-]` keeps
 * pkill from matching the shell that runs it.
 */
async function killStaleDump(shell: HostShell, fifo: string): Promise<void> {
  await shell.run(['pkill', '-KILL', '-f', '--', `-[-]export ${fifo}`], { okExitCodes: [0, 1], timeoutMs: 30_000 });
}

const connectedTcp = /Connected TCP socket|consider using --tcp-established/;

/**
 * podman only says "criu failed" and names CRIU's log; the reason (for example an established TCP
 * connection, which makes the runtime busy rather than broken) is in that log's tail.
 */
async function checkpointFailure(shell: HostShell, err: unknown): Promise<never> {
  if (err instanceof HostCommandError) {
    const log = /log file: (\/\S+\.log)/.exec(err.stderr)?.[1];
    const tail = log ? (await shell.run(['tail', '-n', '30', log], { okExitCodes: [0, 1] }).catch(() => undefined))?.stdout ?? '' : '';
    if (connectedTcp.test(tail) || connectedTcp.test(err.stderr)) {
      throw ApplicationFailure.create({
        type: ErrorType.RuntimeBusy,
        message: `the runtime holds an established TCP connection, which CRIU cannot move; retrying when it is closed (${tail.trim().split('\n').pop() ?? ''})`,
      });
    }
    if (tail) throw new HostCommandError(err.hostId, err.command, err.exitCode, err.signalName, `${err.stderr}\n${tail}`, err.stdout);
  }
  throw err;
}

export function createMigrationActivities(deps: ActivityDeps) {
  const { store, environment: env } = deps;
  const ladder = deps.tiers ?? defaultTierLadder;
  const scratchDir = env.scratchDir ?? posix.join(posix.dirname(env.usersDir), 'scratch');
  const homeOf = (userId: string) => posix.join(env.usersDir, userId);

  /**
   * `auto` sizes the target from the memory in use so the runtime lands at about half its new limit:
   * at least one rung up under pressure, the smallest rung that fits when scaling down.
   */
  function resolveAutoTier(plan: Plan, currentTier: string, usedBytes: number, reason: string): Tier {
    const fits = smallestTierFor(ladder, plan, usedBytes, 1.0);
    const tiers = ladder[plan];
    const at = tiers.findIndex((t) => t.name === currentTier);
    if (reason === 'scale-down') {
      if (tiers.indexOf(fits) >= at) fail(ErrorType.Conflict, `no smaller tier than ${currentTier} holds ${usedBytes} bytes with room to spare`);
      return fits;
    }
    const up = nextTier(ladder, plan, currentTier);
    if (!up) fail(ErrorType.Conflict, `the runtime is on the top tier of the ${plan} plan (${currentTier})`);
    return tiers.indexOf(fits) > tiers.indexOf(up) ? fits : up;
  }

  function resolveTier(plan: Plan, target: string): Tier {
    const byName = tierNamed(ladder, plan, target) ?? ladder[plan].find((t) => t.instanceType === target);
    if (!byName) {
      const names = ladder[plan].map((t) => t.name).join(', ');
      fail(ErrorType.InvalidInput, `target: ${JSON.stringify(target)} is not a tier of the ${plan} plan (one of ${names})`);
    }
    return byName;
  }

  return {
    /**
     * Reads the runtime and resolves the target tier, then records the migration (its id comes from the
     * workflow, so a retry finds its own row) and marks the runtime `migrating`.
     */
    async beginMigration(input: { migrationId: string; userId: string; target: string; reason: string; workflowId: string; targetHostId?: string; usedBytes?: number }): Promise<MigrationPlan> {
      const user = await store.users.get(input.userId);
      if (!user) fail(ErrorType.NotFound, `user ${input.userId} does not exist`);
      const runtime = await store.runtimes.live(input.userId);
      if (!runtime?.hostId || !runtime.port || !runtime.address) fail(ErrorType.NotFound, `user ${input.userId} has no runtime to migrate`);
      const existing = await store.migrations.get(input.migrationId);
      if (!existing && !['running', 'paused'].includes(runtime.state)) {
        fail(ErrorType.Conflict, `the runtime of user ${input.userId} is ${runtime.state}; only a running or paused runtime can be migrated`);
      }
      const to = input.target === 'auto' ? resolveAutoTier(user.plan, runtime.tier, input.usedBytes ?? runtime.memoryLimitBytes, input.reason) : resolveTier(user.plan, input.target);
      const from = tierNamed(ladder, user.plan, runtime.tier) ?? { name: runtime.tier, instanceType: null, memoryBytes: runtime.memoryLimitBytes, cpus: runtime.cpuLimit, gpu: false };
      const { host: source } = await shellForHost(deps, runtime.hostId);
      if (!existing && to.name === runtime.tier && !input.targetHostId) {
        fail(ErrorType.Conflict, `the runtime of user ${input.userId} is already on tier ${to.name} (host ${runtime.hostId})`);
      }
      if (input.targetHostId !== undefined) {
        if (input.targetHostId === runtime.hostId && !existing) fail(ErrorType.Conflict, `the runtime of user ${input.userId} is already on host ${runtime.hostId}`);
        const target = await store.hosts.get(input.targetHostId);
        if (!target || target.state !== 'ready') fail(ErrorType.InvalidInput, `targetHostId: host ${input.targetHostId} is not a ready host`);
        if (to.instanceType === null && target.kind !== 'base') fail(ErrorType.InvalidInput, `targetHostId: tier base runs on the base server, not on ${input.targetHostId}`);
      }
      const editorHost = await store.hosts.get(env.baseHostId);
      const runtimeState = existing ? (runtime.state === 'paused' ? 'paused' : 'running') : (runtime.state as 'running' | 'paused');
      await store.migrations.begin({
        id: input.migrationId,
        runtimeId: runtime.id,
        userId: input.userId,
        workflowId: input.workflowId,
        reason: input.reason,
        sourceHostId: runtime.hostId,
        fromType: from.name,
        toType: to.name,
      });
      if (runtime.state !== 'migrating') await store.runtimes.update(runtime.id, { state: 'migrating' });
      const editor = await store.editors.live(input.userId);
      const editorHostRecord = editor ? await store.hosts.get(editor.hostId) : undefined;
      await store.events.append({ type: 'runtime.migration-started', source: 'worker', userId: input.userId, runtimeId: runtime.id, hostId: runtime.hostId, workflowId: input.workflowId, payload: { from: from.name, to: to.name, reason: input.reason } });
      return {
        migrationId: input.migrationId,
        userId: input.userId,
        plan: user.plan,
        runtime: {
          runtimeId: runtime.id,
          hostId: runtime.hostId,
          containerName: runtime.containerName,
          port: runtime.port,
          address: runtime.address,
          state: runtimeState,
          tier: runtime.tier,
          memoryLimitBytes: runtime.memoryLimitBytes,
          cpuLimit: runtime.cpuLimit,
        },
        runtimeState,
        editor:
          editor && editorHostRecord && editor.port && editor.syncPort
            ? {
                editorId: editor.id,
                hostId: editor.hostId,
                containerName: editor.containerName,
                port: editor.port,
                syncPort: editor.syncPort,
                address: reachableAddressOf(editorHostRecord),
                state: editor.state,
                url: basePathOf(input.userId),
              }
            : null,
        sourceKind: source.kind,
        baseHostId: env.baseHostId,
        from: { name: from.name, instanceType: from.instanceType, memoryBytes: from.memoryBytes, cpus: from.cpus, gpu: from.gpu },
        to: { name: to.name, instanceType: to.instanceType, memoryBytes: to.memoryBytes, cpus: to.cpus, gpu: to.gpu },
        // The uid is fixed where the runtime was made (the base server decides it for every host).
        containerUser: containerUserFor(editorHost?.facts ?? source.facts),
      };
    },

    /** The entity's settings from the worker's configuration. */
    async runtimePolicySettings(): Promise<{ scaleDownAfterMs: number }> {
      return { scaleDownAfterMs: env.scaleDownAfterMs ?? 30 * 60_000 };
    },

    /** Where the user's runtime is now, for the entity's policy (null without a live runtime). */
    async currentPlacement(input: { userId: string }): Promise<{ runtimeId: string; hostId: string; tier: string; memoryLimitBytes: number } | null> {
      const rt = await store.runtimes.live(input.userId);
      if (!rt?.hostId || !['running', 'paused', 'migrating', 'starting'].includes(rt.state)) return null;
      return { runtimeId: rt.id, hostId: rt.hostId, tier: rt.tier, memoryLimitBytes: rt.memoryLimitBytes };
    },

    /** The undo of beginMigration: the row says what failed at which step; the runtime is `running` again. */
    async failMigration(input: { migrationId: string; runtimeId: string; step: string; error: string; paused?: boolean }): Promise<void> {
      await store.migrations.fail(input.migrationId, { step: input.step, error: input.error });
      const row = await store.runtimes.get(input.runtimeId);
      if (row && row.state === 'migrating') await store.runtimes.update(input.runtimeId, { state: input.paused ? 'paused' : 'running' });
      await store.events.append({ type: 'runtime.migration-failed', source: 'worker', userId: row?.userId ?? null, runtimeId: input.runtimeId, hostId: row?.hostId ?? null, payload: { migrationId: input.migrationId, step: input.step, error: input.error.slice(0, 2000) } });
    },

    async recordMigrationStep(input: { migrationId: string; step: string; targetHostId?: string }): Promise<void> {
      await store.migrations.setStep(input.migrationId, { step: input.step, ...(input.targetHostId ? { targetHostId: input.targetHostId } : {}) });
    },

    /** Freezes the runtime where it is (a critical migration: memory is about to run out). */
    async pauseRuntime(input: { hostId: string; containerName: string }): Promise<void> {
      const { shell } = await shellForHost(deps, input.hostId);
      if ((await containerStatus(shell, input.containerName)) === 'paused') return;
      await shell.run(pauseArgs(input.containerName), { timeoutMs: 30_000 });
    },

    /**
     * Idempotent: a runtime that is not paused (or not there) is left as it is. With a migration id, a dump
     * that migration left behind is stopped first (it would hold the container's lock).
     */
    async unpauseRuntime(input: { hostId: string; containerName: string; migrationId?: string }): Promise<void> {
      const { shell } = await shellForHost(deps, input.hostId);
      if (input.migrationId) await killStaleDump(shell, migrationScratch(scratchDir, input.migrationId).fifo);
      if ((await containerStatus(shell, input.containerName)) !== 'paused') return;
      await shell.run(unpauseArgs(input.containerName), { timeoutMs: 30_000 });
    },

    /**
     * Makes the target ready for the restore: a port (the source's if it is free there), the user's home
     * (a restore fails without the bind-mount source), and no stale container under the runtime's name.
     */
    async prepareTarget(input: { migrationId: string; userId: string; targetHostId: string; sourceHostId: string; containerName: string; preferPort: number; uid: number; gid: number }): Promise<{ port: number; address: string }> {
      const { host, shell } = await shellForHost(deps, input.targetHostId);
      if (host.state !== 'ready') fail(ErrorType.HostUnreachable, `target host ${host.id} is ${host.state}, not ready`);
      const port = await store.ports.lease({ hostId: host.id, userId: input.userId, purpose: 'runtime', prefer: input.preferPort });
      const home = homeOf(input.userId);
      const scratch = migrationScratch(scratchDir, input.migrationId);
      await shell.run(['sh', '-c', 'mkdir -p "$1" "$2" && chown "$3" "$1"', 'markco-prepare', home, scratch.targetDir, `${input.uid}:${input.gid}`]);
      if (input.targetHostId !== input.sourceHostId) {
        const s = await containerStatus(shell, input.containerName);
        // Left by an earlier attempt that never became the user's runtime (the row still names the source).
        if (s !== 'missing' && s !== 'running') await shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 });
      }
      return { port, address: reachableAddressOf(host) };
    },

    /**
     * Brings the user's files to the target. The base server's copy is canonical (the editor writes
     * there); leaving an EC2 host, files the runtime wrote there are pulled back first. Hosts that already
     * share the home (one disk, as test hosts do) are detected with a marker file and skipped.
     */
    async syncHome(input: { migrationId: string; userId: string; sourceHostId: string; targetHostId: string }): Promise<{ copiedBytes: number; shared: boolean }> {
      const home = homeOf(input.userId);
      const source = await shellForHost(deps, input.sourceHostId);
      const target = await shellForHost(deps, input.targetHostId);
      const marker = posix.join(home, `.markco-sync-${input.migrationId}`);
      const nonce = randomBytes(8).toString('hex');
      await source.shell.run(['sh', '-c', 'printf %s "$2" > "$1"', 'markco-mark', marker, nonce]);
      try {
        const seen = await target.shell.run(['cat', marker], { okExitCodes: [0, 1] });
        if (seen.stdout === nonce) return { copiedBytes: 0, shared: true };
        // Newer files win in both directions, so nothing either side wrote is lost.
        const tarOut = ['tar', '-C', home, '--exclude', `./.markco-sync-${input.migrationId}`, '-cf', '-', '.'];
        const tarIn = ['tar', '-C', home, '--keep-newer-files', '-xpf', '-'];
        let copied = 0;
        const copy = async (from: HostShell, to: HostShell) => {
          const reader = await from.openReader(tarOut, { timeoutMs: 600_000 });
          reader.stdout.on('data', (c: Buffer) => (copied += c.length));
          await Promise.all([reader.done, to.run(tarIn, { stdin: reader.stdout, timeoutMs: 600_000, okExitCodes: [0, 2] })]);
          heartbeat({ copied });
        };
        if (source.host.kind !== 'base') await copy(source.shell, (await shellForHost(deps, env.baseHostId)).shell);
        if (target.host.kind !== 'base') await copy((await shellForHost(deps, env.baseHostId)).shell, target.shell);
        return { copiedBytes: copied, shared: false };
      } finally {
        await source.shell.run(['rm', '-f', marker]).catch(() => undefined);
      }
    },

    /**
     * Checkpoints the source with --leave-running into a FIFO and streams the archive straight to the
     * target (no file on the source), hashing on the way; the target hashes what it wrote. Success needs
     * podman's exit 0 and matching hashes. The source is paused right after the dump (see
     * checkpointThenPauseArgs); the workflow unpauses it if anything later fails.
     */
    async checkpointToTarget(input: { migrationId: string; sourceHostId: string; targetHostId: string; containerName: string; wasPaused: boolean; memoryBytes: number }): Promise<CheckpointResult> {
      // ssh2 runs stream callbacks in the context of whichever activity opened the connection: heartbeat
      // through this activity's own context, captured here.
      const activity = currentActivity();
      const source = await shellForHost(deps, input.sourceHostId);
      const target = await shellForHost(deps, input.targetHostId);
      const onSource = migrationScratch(scratchDir, input.migrationId);
      const startedAt = Date.now();
      await killStaleDump(source.shell, onSource.fifo);
      // A previous attempt may have paused the source after its dump: resume it, then dump again.
      const current = await containerStatus(source.shell, input.containerName);
      if (current === 'missing') fail(ErrorType.NotFound, `the runtime container ${input.containerName} is gone from host ${input.sourceHostId}`);
      const wasPaused = current === 'paused';
      if (wasPaused && !input.wasPaused) await source.shell.run(unpauseArgs(input.containerName), { timeoutMs: 30_000 });
      await source.shell.run(['sh', '-c', 'mkdir -p "$1" && rm -f "$2" && mkfifo -m 600 "$2"', 'markco-fifo', onSource.sourceDir, onSource.fifo]);
      const [fromRoots, toRoots] = await Promise.all(
        [source.shell, target.shell].map(async (sh) => parseStorageRoots((await sh.run(storageRootsArgs, { timeoutMs: 30_000 })).stdout)),
      );
      // The archive's paths move to the target's storage roots and its spec gets the target tier's limit.
      const relocate = new TarMemberRewriter(['config.dump', 'spec.dump'], (_name, data) =>
        Buffer.from(setCheckpointMemoryLimit(relocateStoragePaths(data.toString('utf8'), fromRoots!, toRoots!), input.memoryBytes), 'utf8'),
      );
      const abort = new AbortController();
      const outer = activitySignal();
      outer?.addEventListener('abort', () => abort.abort(), { once: true });
      const checkpointStarted = Date.now();
      const dumping = source.shell
        .run(checkpointThenPauseArgs({ container: input.containerName, exportPath: onSource.fifo, leaveRunning: true, compress: 'none', wasPaused: input.wasPaused }), {
          timeoutMs: 30 * 60_000,
          signal: abort.signal,
        })
        .then((r) => ({ result: r, ms: Date.now() - checkpointStarted }));
      // A dump that fails before opening the FIFO would leave the reader waiting: stop the stream too.
      dumping.catch(() => abort.abort());
      const streaming = streamFileBetweenHosts({
        from: source.shell,
        fromPath: onSource.fifo,
        to: target.shell,
        toPath: onSource.archive,
        signal: abort.signal,
        timeoutMs: 30 * 60_000,
        progressEveryMs: 1000,
        onProgress: (p) => activity?.heartbeat({ step: 'transfer', bytes: p.bytes }),
        transform: relocate,
      });
      streaming.catch(() => abort.abort());
      const [dumped, streamed] = await Promise.allSettled([dumping, streaming]);
      await source.shell.run(['rm', '-rf', onSource.sourceDir]).catch(() => undefined);
      if (dumped.status === 'rejected') {
        await target.shell.run(['rm', '-f', onSource.archive, `${onSource.archive}.partial`]).catch(() => undefined);
        return checkpointFailure(source.shell, dumped.reason);
      }
      if (streamed.status === 'rejected') throw streamed.reason;
      const stats = (() => {
        try {
          return parseCheckpointStats(dumped.value.result.stdout);
        } catch {
          return undefined;
        }
      })();
      return {
        archivePath: onSource.archive,
        archiveBytes: streamed.value.bytes,
        sha256: streamed.value.sha256,
        checkpointMs: dumped.value.ms,
        transferMs: streamed.value.durationMs,
        frozenMs: stats?.frozenMs ?? null,
        startedAt,
      };
    },

    /**
     * Restores the archive on the target under the runtime's own name, published at the target's address
     * and the leased port, then applies the target tier's limits and checks the cgroup really has them.
     */
    async restoreOnTarget(input: { targetHostId: string; containerName: string; archivePath: string; address: string; port: number; memoryBytes: number; cpus: number }): Promise<{ restoreMs: number; memoryLimitBytes: number }> {
      const { host, shell } = await shellForHost(deps, input.targetHostId);
      const started = Date.now();
      const current = await containerStatus(shell, input.containerName);
      if (current !== 'running') {
        if (current !== 'missing') await shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 });
        const publishIp = host.kind === 'base' ? '127.0.0.1' : input.address;
        try {
          const r = await shell.run(
            restoreArgs({ importPath: input.archivePath, name: input.containerName, ports: [{ hostIp: publishIp, hostPort: input.port, containerPort: runtimeContainerPort }] }),
            { timeoutMs: 30 * 60_000, ...(activitySignal() ? { signal: activitySignal()! } : {}) },
          );
          try {
            parseRestoreStats(r.stdout);
          } catch {
            /* statistics are informative only */
          }
        } catch (err) {
          // A failed restore can leave a `Created` container behind: never leave half-made state.
          await shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 }).catch(() => undefined);
          throw err;
        }
      }
      await shell.run(updateMemoryArgs(input.containerName, input.memoryBytes, input.cpus), { timeoutMs: 30_000 });
      const limit = parseCgroupMemoryLimit((await shell.run(cgroupMemoryLimitArgs(input.containerName), { timeoutMs: 30_000 })).stdout);
      if (limit !== input.memoryBytes) {
        throw new Error(`the restored runtime on ${host.id} has a memory limit of ${limit ?? 'none'} bytes, not the tier's ${input.memoryBytes}`);
      }
      await shell.run(['rm', '-rf', posix.dirname(input.archivePath)]).catch(() => undefined);
      return { restoreMs: Date.now() - started, memoryLimitBytes: limit };
    },

    /** The undo of prepareTarget and restoreOnTarget: no copy of the runtime and no lease left on the target. */
    async discardTarget(input: { migrationId: string; userId: string; targetHostId: string; sourceHostId: string; containerName: string; port?: number }): Promise<void> {
      const target = await store.hosts.get(input.targetHostId);
      if (!target || target.state === 'terminated') return;
      const { shell } = await shellForHost(deps, input.targetHostId);
      const live = await store.runtimes.live(input.userId);
      // The container is the user's runtime only if the row already names this host (never after a failure before the commit).
      if (input.targetHostId !== input.sourceHostId && live?.hostId !== input.targetHostId) {
        await shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 });
        if (input.port) await store.ports.release({ hostId: input.targetHostId, port: input.port });
      }
      await shell.run(['rm', '-rf', migrationScratch(scratchDir, input.migrationId).targetDir]).catch(() => undefined);
    },

    /**
     * The commit point: the runtime row moves to the target (host, address, port, tier, limits) and the
     * migration row gets its timings. The edge follows through NOTIFY.
     */
    async completeMigration(input: {
      migrationId: string;
      runtimeId: string;
      targetHostId: string;
      port: number;
      address: string;
      tier: string;
      memoryLimitBytes: number;
      cpuLimit: number;
      /** When the dump began (epoch ms): the user waits from then until this commit. */
      checkpointStartedAt: number;
      timings: Omit<MigrationTimings, 'downtimeMs'> & { archiveSha256: string };
    }): Promise<MigrationTimings> {
      const { archiveSha256, ...rest } = input.timings;
      const timings: MigrationTimings = { ...rest, downtimeMs: Math.max(0, Date.now() - input.checkpointStartedAt) };
      await store.runtimes.update(input.runtimeId, {
        state: 'running',
        hostId: input.targetHostId,
        port: input.port,
        address: input.address,
        tier: input.tier,
        memoryLimitBytes: input.memoryLimitBytes,
        cpuLimit: input.cpuLimit,
      });
      await store.migrations.complete(input.migrationId, { targetHostId: input.targetHostId, ...timings, archiveSha256 });
      return timings;
    },

    /** After the commit: the source copy goes, with its port lease and files. Safe to repeat. */
    async removeSourceRuntime(input: { migrationId: string; userId: string; runtimeId: string; sourceHostId: string; targetHostId: string; containerName: string; port: number; timings: Record<string, unknown> }): Promise<void> {
      const source = await store.hosts.get(input.sourceHostId);
      if (source && source.state !== 'terminated') {
        const { shell } = await shellForHost(deps, input.sourceHostId);
        await shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 });
        await shell.run(['rm', '-rf', migrationScratch(scratchDir, input.migrationId).sourceDir]).catch(() => undefined);
      }
      await store.ports.release({ hostId: input.sourceHostId, port: input.port });
      await store.events.append({
        type: 'runtime.migrated',
        source: 'worker',
        userId: input.userId,
        runtimeId: input.runtimeId,
        hostId: input.targetHostId,
        payload: { migrationId: input.migrationId, from: input.sourceHostId, to: input.targetHostId, ...input.timings },
      });
    },
  };
}
