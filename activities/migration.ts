/**
 * Activities of the migration saga (workflows/migrate.ts): each step looks at what exists before it
 * acts, so a retry after a worker crash continues where the last attempt stopped, and each has an undo
 * the workflow runs when a later step fails.
 */
import { ApplicationFailure } from '@temporalio/common';
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { reachableAddressOf, type HostRecord } from '../lib/store.js';
import { defaultTierLadder, gpuTierFor, nextTier, smallestTierFor, tierNamed, type Tier } from '../lib/tiers.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import type { MigrationTimings } from '../workflows/contracts/elastic.js';
import type { EditorPlacement, RuntimePlacement } from '../workflows/contracts/user-environment.js';
import type { Plan } from '../workflows/contracts/users.js';
import { activitySignal, currentActivity, heartbeat } from './context.js';
import { HostAbortError, HostCommandError, type HostShell, type RunResult } from './host-shell.js';
import { readPodmanVersion, readStorageRoots, shellForHost } from './hosts.js';
import type { ActivityDeps } from './index.js';
import {
  cgroupMemoryLimitArgs,
  cgroupFreezerArgs,
  checkpointThenPauseArgs,
  parseCgroupFreezer,
  readExportFreezingArgs,
  frozenContainerArgs,
  parseCgroupMemoryLimit,
  parseCheckpointStats,
  parseReceiveOutput,
  parseSentReport,
  readExportPipedArgs,
  relocateStoragePaths,
  sentProgressArgs,
  setCheckpointImage,
  setCheckpointMemoryLimit,
  pauseArgs,
  removeContainerArgs,
  receiveAndRestoreArgs,
  streamedImportVerified,
  unpauseArgs,
  updateMemoryArgs,
  type CgroupFreezer,
  type ImportMode,
  type RestoreSpec,
} from './podman-commands.js';
import { ByteMeter, ChecksumMismatchError, TarMemberRewriter } from './transfer.js';
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
  /** From the archive's last byte until the restored runtime holds the tier's limits. */
  restoreMs: number;
  memoryLimitBytes: number;
  importMode: ImportMode;
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

/** The same for a receiver left by a killed worker: its restore must not race the retry's. */
async function killStaleReceive(shell: HostShell, targetDir: string): Promise<void> {
  await shell.run(['pkill', '-KILL', '-f', '--', `[m]arkco-receive-restore ${targetDir} |-[-]import ${targetDir}/in.tar`], { okExitCodes: [0, 1], timeoutMs: 30_000 });
}

const connectedTcp = /Connected TCP socket|consider using --tcp-established/;

/** The target's receive-and-restore command failed in podman itself, not in receiving (exit 70, 71). */
export function restoreFailed(err: unknown): boolean {
  return err instanceof HostCommandError && err.exitCode !== null && err.exitCode !== 70 && err.exitCode !== 71;
}

/**
 * podman only says "criu failed" and names CRIU's log; the reason (for example an established TCP
 * connection, which makes the runtime busy rather than broken) is in that log's tail.
 */

export async function checkpointFailure(shell: HostShell, err: unknown): Promise<never> {
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

/** How many of the archive's first bytes a piped transfer keeps for its head (config.dump and spec.dump sit in the first 64 KiB). */
export const headWindowBytes = 1024 * 1024;

/** One way the archive moves from the source's export to the target's restore. */
interface ArchiveTransfer {
  /** The source's reading: what it sent, counted and hashed. */
  sent: Promise<{ bytes: number; sha256: string }>;
  /** The archive's rewritten head reaching the target, where it travels on its own. */
  head: Promise<void>;
  /** The target's receive-and-restore command. */
  received: Promise<RunResult>;
}

interface TransferSpec {
  source: HostShell;
  target: HostShell;
  scratch: ReturnType<typeof migrationScratch>;
  freezer: CgroupFreezer;
  /** Rewrites config.dump and spec.dump; its `head` is what podman's definition reads get. */
  relocate: TarMemberRewriter;
  restore: RestoreSpec;
  bulk: { timeoutMs: number; signal: AbortSignal; bulk: true };
  /** The head is known: from now on the bytes are the transfer's. */
  onHead(): void;
  /** The source has sent its last byte. */
  onSent(): void;
}

/**
 * The archive flows source -> target through OS pipes between two processes of this machine (local, or
 * OpenSSH clients): it never passes through this process, which only reads the first bytes the source
 * kept (`head.raw`), rewrites config.dump and spec.dump from them, and writes that head to the target as
 * a file of its own. podman's definition reads get that head; its unpacking takes the whole archive as
 * sent, where both members are skipped. Source and target hash the same bytes.
 */
function pipeArchive(o: TransferSpec): ArchiveTransfer {
  const src = o.source.startPiped!(readExportPipedArgs({ fifo: o.scratch.fifo, freezer: o.freezer, dir: o.scratch.sourceDir, headMax: headWindowBytes }), o.bulk)!;
  // Started in the same turn as the source: its stdout must reach the target unread.
  const dst = o.target.startPiped!(receiveAndRestoreArgs({ dir: o.scratch.targetDir, mode: 'stream', headBytes: 0, restore: o.restore }), { ...o.bulk, stdinFrom: src.stdout, stdout: 'capture' })!;
  const sent = src.done.then((r) => {
    o.onSent();
    return parseSentReport(r.stderr);
  });
  const head = (async () => {
    const raw = await readFileOnceWritten(o.source, posix.join(o.scratch.sourceDir, 'head.raw'), o.bulk);
    o.onHead();
    await sendRewrittenHead(o.target, o.scratch.targetDir, o.relocate, raw, o.bulk.signal);
  })();
  return { sent, head, received: dst.done };
}

/**
 * The archive flows source -> worker -> target, rewritten and hashed here on the way: for targets that
 * write the file before restoring (their whole archive needs the rewritten members) and hosts reached
 * only through ssh2.
 */
function relayArchive(o: TransferSpec & { importMode: ImportMode; onBytes(bytes: number): void }): ArchiveTransfer {
  const meter = new ByteMeter((p) => o.onBytes(p.bytes), 2000);
  // The bytes already read wait here while the head is sent ahead: the head is only known once they
  // have passed, and stream buffers alone would stop the source first (the head is capped at 256 MiB).
  const body = new PassThrough({ highWaterMark: 256 * 1024 * 1024 });
  const metered = new Promise<void>((resolve, reject) => {
    meter.on('end', () => {
      o.onSent();
      resolve();
    });
    meter.on('error', reject);
  });
  metered.catch(() => undefined);
  const sent = (async () => {
    const reader = await o.source.openReader(readExportFreezingArgs(o.scratch.fifo, o.freezer), o.bulk);
    reader.stdout.on('error', (err) => o.relocate.destroy(err));
    o.relocate.on('error', (err) => meter.destroy(err));
    const archive = reader.stdout.pipe(o.relocate).pipe(meter);
    archive.pipe(body);
    archive.on('error', (err) => body.destroy(err));
    await Promise.all([reader.done, metered]);
    return { bytes: meter.bytes, sha256: meter.hex() };
  })();
  const received = (async () => {
    const head = o.importMode === 'stream' ? await o.relocate.head : undefined;
    o.onHead();
    const stdin = new PassThrough();
    if (head) stdin.write(head);
    body.pipe(stdin);
    body.on('error', (err) => stdin.destroy(err));
    return o.target.run(receiveAndRestoreArgs({ dir: o.scratch.targetDir, mode: o.importMode, headBytes: head?.length ?? 0, restore: o.restore }), { ...o.bulk, stdin });
  })();
  return { sent, head: Promise.resolve(), received };
}

/**
 * Rewrites config.dump and spec.dump in the archive's first bytes and writes that head to the receiver's
 * directory as `head.tar` (renamed into place: the receiver waits for the file).
 */
export async function sendRewrittenHead(target: HostShell, targetDir: string, relocate: TarMemberRewriter, raw: Buffer, signal?: AbortSignal): Promise<void> {
  relocate.resume();
  relocate.end(raw);
  const rewritten = await relocate.head;
  await target.run(['sh', '-c', 'cat > "$1.part" && mv -f "$1.part" "$1"', 'markco-head', posix.join(targetDir, 'head.tar')], { stdin: rewritten, timeoutMs: 60_000, ...(signal ? { signal } : {}) });
}

/** The first `max` bytes of a file on a host, as bytes. */
export async function readFileHead(shell: HostShell, path: string, max: number, opts: { timeoutMs: number; signal?: AbortSignal }): Promise<Buffer> {
  const reader = await shell.openReader(['head', '-c', String(max), '--', path], opts);
  const chunks: Buffer[] = [];
  reader.stdout.on('data', (c: Buffer) => chunks.push(c));
  await reader.done;
  return Buffer.concat(chunks);
}

/**
 * The runtime image a restore on this host should use (GPU or CPU) with its id there, and the images a
 * checkpoint may be moved between; undefined when no GPU hop is configured (nothing to swap).
 */
export async function runtimeImageOn(deps: Pick<ActivityDeps, 'gpu' | 'environment'>, shell: HostShell, gpu: boolean): Promise<{ name: string; id: string; swappable: string[] } | undefined> {
  if (!deps.gpu) return undefined;
  const name = gpu ? deps.gpu.runtimeImage : deps.environment.runtimeImage;
  const inspected = await shell.run(['podman', 'image', 'inspect', '--format', '{{.Id}}', name], { timeoutMs: 30_000 }).catch((err: unknown) => {
    throw ApplicationFailure.create({ type: ErrorType.HostUnsupported, message: `host ${shell.hostId} has no image ${name} for the runtime: ${(err as Error).message}`, nonRetryable: true });
  });
  return { name, id: inspected.stdout.trim().replace(/^sha256:/, ''), swappable: [deps.environment.runtimeImage, deps.gpu.runtimeImage] };
}

/** Sets the tier's limits on a restored runtime and checks them in its cgroup; answers the limit in force. */
export async function applyTierLimits(shell: HostShell, container: string, memoryBytes: number, cpus: number): Promise<number> {
  await shell.run(updateMemoryArgs(container, memoryBytes, cpus), { timeoutMs: 30_000 });
  const limit = parseCgroupMemoryLimit((await shell.run(cgroupMemoryLimitArgs(container), { timeoutMs: 30_000 })).stdout);
  if (limit !== memoryBytes) throw new Error(`the restored runtime ${container} on ${shell.hostId} has a memory limit of ${limit ?? 'none'} bytes, not the tier's ${memoryBytes}`);
  return limit;
}

/** A file's bytes once it exists (written elsewhere and renamed into place), waiting for it. */
async function readFileOnceWritten(shell: HostShell, path: string, opts: { timeoutMs: number; signal: AbortSignal }): Promise<Buffer> {
  const reader = await shell.openReader(['sh', '-c', 'until [ -f "$1" ]; do sleep 0.05; done; exec cat "$1"', 'markco-wait-file', path], opts);
  const chunks: Buffer[] = [];
  reader.stdout.on('data', (c: Buffer) => chunks.push(c));
  await reader.done;
  return Buffer.concat(chunks);
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
    // Off the GPU host (its work is idle, or its spot capacity is being reclaimed): the CPU tier that fits.
    if (reason === 'gpu-idle' || reason === 'spot-interruption') return fits;
    if (gpuTierFor(deps.gpu, plan)?.name === currentTier) fail(ErrorType.Conflict, `the runtime is on the GPU tier ${currentTier}; it leaves it when its GPU work is idle, not for memory`);
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

  /** A tier of the plan's ladder, or its GPU tier, by name or instance type. */
  function tierOfPlan(plan: Plan, name: string): Tier | undefined {
    const gpu = gpuTierFor(deps.gpu, plan);
    return tierNamed(ladder, plan, name) ?? ladder[plan].find((t) => t.instanceType === name) ?? (gpu && (gpu.name === name || gpu.instanceType === name) ? gpu : undefined);
  }

  function resolveTier(plan: Plan, target: string): Tier {
    const byName = tierOfPlan(plan, target);
    if (!byName) {
      const gpu = gpuTierFor(deps.gpu, plan);
      const names = [...ladder[plan].map((t) => t.name), ...(gpu ? [`${gpu.name} (GPU)`] : [])].join(', ');
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
      const from = tierOfPlan(user.plan, runtime.tier) ?? { name: runtime.tier, instanceType: null, memoryBytes: runtime.memoryLimitBytes, cpus: runtime.cpuLimit, gpu: false };
      const { host: source } = await shellForHost(deps, runtime.hostId);
      // A spot interruption moves the runtime to another host of the same tier when that is the one that fits.
      if (!existing && to.name === runtime.tier && !input.targetHostId && input.reason !== 'spot-interruption') {
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

    /** The entity's settings from the worker's configuration; the GPU tier is the user's plan's (null: none). */
    async runtimePolicySettings(input?: { userId?: string }): Promise<{ scaleDownAfterMs: number; gpu: { tier: string; idleAfterMs: number } | null }> {
      const user = input?.userId ? await store.users.get(input.userId) : undefined;
      const gpu = user ? gpuTierFor(deps.gpu, user.plan) : undefined;
      return { scaleDownAfterMs: env.scaleDownAfterMs ?? 30 * 60_000, gpu: gpu && deps.gpu ? { tier: gpu.name, idleAfterMs: deps.gpu.idleAfterMs } : null };
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
      await shell.run(frozenContainerArgs(input.containerName, 'thaw'), { timeoutMs: 30_000 });
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
          // Counted on the way through, not by a 'data' listener of its own: that would start the stream
          // flowing before the target's channel is open, and the bytes read meanwhile would never arrive.
          const counted = reader.stdout.pipe(
            new Transform({
              transform(c: Buffer, _enc, done) {
                copied += c.length;
                done(null, c);
              },
            }),
          );
          await Promise.all([reader.done, to.run(tarIn, { stdin: counted, timeoutMs: 600_000, okExitCodes: [0, 2] })]);
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
     * Moves the runtime: checkpoints the source with --leave-running into a FIFO and streams the archive
     * to the target, where podman restores it under the runtime's own name, published at the target's
     * address and the leased port; then the target tier's limits are applied and checked in the cgroup.
     *
     * The bytes go source → worker → target through OpenSSH processes (bulk host commands); the worker
     * rewrites config.dump and spec.dump on the way (the target's storage roots, the tier's memory) and
     * hashes every byte, the target hashes what it received, and both must agree. Where podman's import
     * sequence is verified (ImportMode), the target unpacks the archive while it arrives; elsewhere it
     * writes the file first. The source is paused right after the dump (checkpointThenPauseArgs); the
     * workflow unpauses it if anything later fails.
     */
    async checkpointIntoTarget(input: {
      migrationId: string;
      sourceHostId: string;
      targetHostId: string;
      containerName: string;
      wasPaused: boolean;
      address: string;
      port: number;
      memoryBytes: number;
      cpus: number;
      /** Restore on the CPU or the GPU runtime image (a hop onto or off a GPU host); the checkpoint's own when absent. */
      image?: 'cpu' | 'gpu';
    }): Promise<CheckpointResult> {
      // ssh2 runs stream callbacks in the context of whichever activity opened the connection: heartbeat
      // through this activity's own context, captured here.
      const activity = currentActivity();
      const source = await shellForHost(deps, input.sourceHostId);
      const target = await shellForHost(deps, input.targetHostId);
      const scratch = migrationScratch(scratchDir, input.migrationId);
      const startedAt = Date.now();
      await Promise.all([killStaleDump(source.shell, scratch.fifo), killStaleReceive(target.shell, scratch.targetDir)]);
      // A previous attempt may have paused the source after its dump (or frozen it, then died): resume
      // it, then dump again.
      await source.shell.run(frozenContainerArgs(input.containerName, 'thaw'), { timeoutMs: 30_000 });
      const current = await containerStatus(source.shell, input.containerName);
      if (current === 'missing') fail(ErrorType.NotFound, `the runtime container ${input.containerName} is gone from host ${input.sourceHostId}`);
      if (current === 'paused' && !input.wasPaused) await source.shell.run(unpauseArgs(input.containerName), { timeoutMs: 30_000 });
      if (input.targetHostId !== input.sourceHostId) {
        // Left by an earlier attempt; never the user's runtime (the row still names the source).
        if ((await containerStatus(target.shell, input.containerName)) !== 'missing') await target.shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 });
      }
      await Promise.all([
        source.shell.run(['sh', '-c', 'mkdir -p "$1" && rm -f "$2" && mkfifo -m 600 "$2"', 'markco-fifo', scratch.sourceDir, scratch.fifo]),
        // A head an earlier attempt left would be taken for this one's (the receiver waits for the file).
        target.shell.run(['rm', '-f', posix.join(scratch.targetDir, 'head.tar')]),
      ]);
      // Host facts from registration where recorded; asked for otherwise (hosts probed before they were).
      const rootsOf = (h: { host: HostRecord; shell: HostShell }) => h.host.facts.storageRoots ?? readStorageRoots(h.shell, { timeoutMs: 30_000 });
      const [fromRoots, toRoots, targetPodman, freezer] = await Promise.all([
        rootsOf(source),
        rootsOf(target),
        target.host.facts.podmanVersion ?? readPodmanVersion(target.shell, { timeoutMs: 30_000 }),
        source.shell.run(cgroupFreezerArgs(input.containerName), { timeoutMs: 30_000 }).then((r) => parseCgroupFreezer(r.stdout)),
      ]);
      const importMode: ImportMode = streamedImportVerified(targetPodman) ? 'stream' : 'file';
      const image = input.image ? await runtimeImageOn(deps, target.shell, input.image === 'gpu') : undefined;
      // The archive's paths move to the target's storage roots, its spec gets the target tier's limit, and
      // across a GPU hop its image becomes the target's runtime image.
      const relocate = new TarMemberRewriter(['config.dump', 'spec.dump'], (name, data) => {
        const text = setCheckpointMemoryLimit(relocateStoragePaths(data.toString('utf8'), fromRoots!, toRoots!), input.memoryBytes);
        return Buffer.from(name === 'config.dump' && image ? setCheckpointImage(text, image, image.swappable) : text, 'utf8');
      });
      let phase = 'checkpoint';
      let progressBytes = 0;
      const abort = new AbortController();
      activitySignal()?.addEventListener('abort', () => abort.abort(), { once: true });
      const bulk = { timeoutMs: 30 * 60_000, signal: abort.signal, bulk: true as const };
      const publishIp = target.host.kind === 'base' ? '127.0.0.1' : input.address;
      const restore = {
        importPath: posix.join(scratch.targetDir, 'in.tar'),
        name: input.containerName,
        ports: [{ hostIp: publishIp, hostPort: input.port, containerPort: runtimeContainerPort }],
      };
      // Piped: the bytes go source -> target through OS pipes between the two ssh (or local) processes and
      // never through this process, whose only part is the archive's head. Elsewhere (a host reached only
      // through ssh2, or a target that writes the file first) they are relayed here.
      const piped = importMode === 'stream' && !!source.shell.canPipe?.() && !!target.shell.canPipe?.();
      let streamEndedAt = 0;
      let checkpointEndedAt = 0;
      const endOfStream = () => {
        streamEndedAt = Date.now();
        phase = 'restore';
        void store.migrations.setStep(input.migrationId, { step: 'restore' }).catch(() => undefined);
      };
      const beat = setInterval(() => {
        if (piped && phase === 'transfer') {
          void source.shell
            .run(sentProgressArgs(scratch.sourceDir), { timeoutMs: 5000 })
            .then((r) => (progressBytes = Number(r.stdout.trim()) || progressBytes))
            .catch(() => undefined);
        }
        activity?.heartbeat({ step: phase, bytes: progressBytes });
      }, 2000);
      try {
        const dumping = source.shell
          .run(checkpointThenPauseArgs({ container: input.containerName, exportPath: scratch.fifo, leaveRunning: true, compress: 'none', wasPaused: input.wasPaused, freezer }), {
            timeoutMs: 30 * 60_000,
            signal: abort.signal,
          })
          .finally(() => (checkpointEndedAt = Date.now()));
        const transfer = piped
          ? pipeArchive({ source: source.shell, target: target.shell, scratch, freezer, relocate, restore, bulk, onHead: () => (phase = 'transfer'), onSent: endOfStream })
          : relayArchive({ source: source.shell, target: target.shell, scratch, freezer, relocate, importMode, restore, bulk, onHead: () => (phase = 'transfer'), onSent: endOfStream, onBytes: (n) => (progressBytes = n) });
        // Whichever part fails first stops the others: a dump that never opens the FIFO would leave the
        // reader waiting, and a failed restore would leave the dump writing into a full pipe.
        // The first part to fail is the cause; the others fail because they were stopped.
        const failures: { part: 'dump' | 'read' | 'head' | 'restore'; err: unknown }[] = [];
        const watch = <T>(part: 'dump' | 'read' | 'head' | 'restore', p: Promise<T>) =>
          p.catch((err: unknown) => {
            if (!(err instanceof HostAbortError)) failures.push({ part, err });
            abort.abort();
            throw err;
          });
        const [dumped, sent, , received] = await Promise.allSettled([watch('dump', dumping), watch('read', transfer.sent), watch('head', transfer.head), watch('restore', transfer.received)]);
        const cause = failures[0];
        if (cause?.part === 'dump') return await checkpointFailure(source.shell, cause.err);
        if (cause?.part === 'restore' && restoreFailed(cause.err)) {
          throw ApplicationFailure.create({ type: ErrorType.RestoreFailed, message: `the restore on host ${input.targetHostId} failed: ${(cause.err as Error).message}` });
        }
        if (cause) throw cause.err;
        if (dumped.status === 'rejected') throw dumped.reason;
        if (sent.status === 'rejected') throw sent.reason;
        if (received.status === 'rejected') throw received.reason;
        const { sha256: written } = parseReceiveOutput(received.value.stdout);
        const { sha256: sentSha, bytes: archiveBytes } = sent.value;
        if (written !== sentSha) {
          await target.shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 }).catch(() => undefined);
          throw ApplicationFailure.create({ type: ErrorType.ChecksumMismatch, message: String(new ChecksumMismatchError(sentSha, written, input.targetHostId).message) });
        }
        phase = 'limits';
        const limit = await applyTierLimits(target.shell, input.containerName, input.memoryBytes, input.cpus);
        const stats = (() => {
          try {
            return parseCheckpointStats(dumped.value.stdout);
          } catch {
            return undefined;
          }
        })();
        return {
          archivePath: restore.importPath,
          archiveBytes,
          sha256: sentSha,
          checkpointMs: checkpointEndedAt - startedAt,
          transferMs: streamEndedAt - startedAt,
          restoreMs: Date.now() - streamEndedAt,
          frozenMs: stats?.frozenMs ?? null,
          memoryLimitBytes: limit,
          importMode,
          startedAt,
        };
      } catch (err) {
        // A failed restore can leave a `Created` container behind: never leave half-made state.
        if (input.targetHostId !== input.sourceHostId) await target.shell.run(removeContainerArgs(input.containerName), { timeoutMs: 60_000 }).catch(() => undefined);
        throw err;
      } finally {
        clearInterval(beat);
        abort.abort();
        await Promise.all([
          source.shell.run(['rm', '-rf', scratch.sourceDir]).catch(() => undefined),
          target.shell.run(['rm', '-rf', scratch.targetDir]).catch(() => undefined),
        ]);
      }
    },

    /** The undo of prepareTarget and checkpointIntoTarget: no copy of the runtime and no lease left on the target. */
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
        // Still frozen since its export: it must die without answering what it had queued.
        if (input.sourceHostId !== input.targetHostId) await shell.run(frozenContainerArgs(input.containerName, 'kill'), { timeoutMs: 30_000 });
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
