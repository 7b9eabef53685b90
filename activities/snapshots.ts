/**
 * Activities of idle checkpoints, user return, named snapshots and sandbox forks (workflows/snapshots.ts).
 * A checkpoint becomes one archive file: made on the runtime's host, kept on the base server, copied to
 * S3; a restore reads such a file on the host it restores on. Every step looks at what exists first, so
 * a retry after a worker crash continues, and PostgreSQL says where each archive is after every step.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { S3Client } from '@aws-sdk/client-s3';
import { posix } from 'node:path';
import type { SnapshotKind, SnapshotRecord, StorageRoots } from '../lib/snapshot-store.js';
import { reachableAddressOf } from '../lib/store.js';
import { defaultTierLadder, smallestTierFor, tierNamed } from '../lib/tiers.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import type { EditorPlacement, RuntimePlacement } from '../workflows/contracts/user-environment.js';
import { userIdPattern, type Plan } from '../workflows/contracts/users.js';
import { archiveKey, deleteArchive, deleteArchivesOfUser, downloadArchiveToHost, uploadArchiveFromHost, type ArchiveStoreOptions } from './archive-store.js';
import { activitySignal, currentActivity } from './context.js';
import type { HostShell } from './host-shell.js';
import { readStorageRoots, shellForHost } from './hosts.js';
import type { ActivityDeps } from './index.js';
import { applyTierLimits, checkpointFailure, headWindowBytes, readFileHead, restoreFailed, runtimeImageOn, sendRewrittenHead, type MigrationTier } from './migration.js';
import {
  checkpointArgs,
  checkpointThenPauseArgs,
  frozenContainerArgs,
  parseCheckpointStats,
  parseReceiveOutput,
  receiveAndRestoreArgs,
  relocateStoragePaths,
  removeContainerArgs,
  removeSandboxNetworkArgs,
  sandboxNetworkArgs,
  setCheckpointMemoryLimit,
  setCheckpointImage,
  setCheckpointNetwork,
} from './podman-commands.js';
import { streamFileBetweenHosts, TarMemberRewriter } from './transfer.js';
import { basePathOf, containerUserFor, runtimeContainerPort } from './user-containers.js';
import { containerStatus, editorPlacement, retireEditor, runtimePlacement } from './user-environment.js';

/** Where archives go in S3; without it (the embedded stack) archives stay on the base server only. */
export interface ArchiveBucket extends ArchiveStoreOptions {
  s3: S3Client;
}

export interface SnapshotPlan {
  snapshotId: string;
  userId: string;
  name: string;
  kind: SnapshotKind;
  runtime: RuntimePlacement;
  runtimeState: 'running' | 'paused';
  hostKind: 'base' | 'ec2';
  baseHostId: string;
  /** Where the checkpoint is written on the runtime's host, and where the archive is kept on the base server. */
  hostArchivePath: string;
  baseArchivePath: string;
}

export interface ArchiveFacts {
  bytes: number;
  sha256: string;
  checkpointMs: number;
  frozenMs: number | null;
}

export interface ReturnPlan {
  userId: string;
  runtimeId: string;
  /** Nothing to do: the runtime already runs (a second visit raced the first). */
  alreadyRunning: boolean;
  snapshotId: string | null;
  containerName: string;
  previousPort: number | null;
  to: MigrationTier;
  baseHostId: string;
  containerUser: { uid: number; gid: number };
  editor: EditorPlacement | null;
}

export interface RestorePlan {
  userId: string;
  snapshotId: string;
  snapshotName: string;
  runtime: RuntimePlacement;
  /** The runtime made beside the current one, which stays until this one is healthy. */
  containerName: string;
  editor: EditorPlacement | null;
  containerUser: { uid: number; gid: number };
}

export interface SandboxPlan {
  sandboxId: string;
  userId: string;
  runtime: RuntimePlacement;
  hostId: string;
  containerName: string;
  home: string;
  expiresAt: string;
}

export interface SandboxResult {
  sandboxId: string;
  containerName: string;
  hostId: string;
  address: string;
  port: number;
  expiresAt: string;
  checkpointMs: number;
  restoreMs: number;
}

function fail(type: ErrorType, message: string): never {
  throw ApplicationFailure.create({ type, message, nonRetryable: true });
}

const idPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function sandboxContainerName(sandboxId: string): string {
  if (!idPattern.test(sandboxId)) throw new Error(`invalid sandbox id ${sandboxId}`);
  return `sb-${sandboxId}`;
}

/** Each sandbox has a network of its own (isolated, firewalled from the runtimes and the host). */
export function sandboxNetworkName(sandboxId: string): string {
  return `markco-${sandboxContainerName(sandboxId)}`;
}

/** A snapshot restore's runtime gets a name of its own: the current container keeps its name until it goes (the seeds collided on restoring twice). */
export function restoredContainerName(userId: string, restoreId: string): string {
  if (!idPattern.test(userId) || !idPattern.test(restoreId)) throw new Error('invalid user or restore id');
  return `rt-${userId}-${restoreId.slice(0, 8)}`;
}

const hashAndSizeScript = '{ openssl dgst -sha256 -r "$1" 2>/dev/null || sha256sum -- "$1"; } | cut -d" " -f1 && stat -c %s -- "$1"';

async function hashAndSize(shell: HostShell, path: string): Promise<{ sha256: string; bytes: number }> {
  const r = await shell.run(['sh', '-c', hashAndSizeScript, 'markco-hash', path], { timeoutMs: 10 * 60_000 });
  const [sha256 = '', bytes = ''] = r.stdout.trim().split('\n');
  if (!/^[0-9a-f]{64}$/.test(sha256) || !/^\d+$/.test(bytes)) throw new Error(`could not hash ${path} on ${shell.hostId}: ${r.stdout}`);
  return { sha256, bytes: Number(bytes) };
}

async function fileSize(shell: HostShell, path: string): Promise<number | null> {
  const r = await shell.run(['stat', '-c', '%s', '--', path], { okExitCodes: [0, 1], timeoutMs: 30_000 });
  return r.exitCode === 0 ? Number(r.stdout.trim()) : null;
}

/** Heartbeats every 2 s through the activity's own context (ssh2 callbacks run in another one). */
function beating(details: () => unknown): () => void {
  const activity = currentActivity();
  const timer = setInterval(() => activity?.heartbeat(details()), 2000);
  return () => clearInterval(timer);
}

export function createSnapshotActivities(deps: ActivityDeps) {
  const { store, environment: env } = deps;
  const ladder = deps.tiers ?? defaultTierLadder;
  const dataDir = posix.dirname(env.usersDir);
  const scratchDir = env.scratchDir ?? posix.join(dataDir, 'scratch');
  const archivesDir = env.archivesDir ?? posix.join(dataDir, 'archives');
  const homeOf = (userId: string) => posix.join(env.usersDir, userId);
  const bucket = deps.archives;

  const archivePath = (dir: string, userId: string, snapshotId: string) => posix.join(dir, userId, `${snapshotId}.tar`);
  const scratchFor = (kind: 'snapshot' | 'restore' | 'sandbox', id: string) => posix.join(scratchDir, `${kind}s`, id);

  async function editorOf(userId: string): Promise<EditorPlacement | null> {
    const editor = await store.editors.live(userId);
    const host = editor ? await store.hosts.get(editor.hostId) : undefined;
    if (!editor || !host || !editor.port || !editor.syncPort) return null;
    return editorPlacement(editor, reachableAddressOf(host));
  }

  async function rootsOf(hostId: string): Promise<StorageRoots> {
    const { host, shell } = await shellForHost(deps, hostId);
    return host.facts.storageRoots ?? readStorageRoots(shell, { timeoutMs: 30_000 });
  }

  async function containerUser() {
    const base = await store.hosts.get(env.baseHostId);
    return containerUserFor(base?.facts ?? {});
  }

  /** Removes a container (frozen or not) and gives its port back. Safe to repeat. */
  async function removeContainer(hostId: string, containerName: string, port: number | null): Promise<void> {
    const host = await store.hosts.get(hostId);
    if (host && host.state !== 'terminated') {
      const { shell } = await shellForHost(deps, hostId);
      await shell.run(frozenContainerArgs(containerName, 'kill'), { timeoutMs: 30_000 });
      await shell.run(removeContainerArgs(containerName), { timeoutMs: 60_000 });
    }
    if (port) await store.ports.release({ hostId, port });
  }

  /**
   * Restores an archive that is a file on the host under `name`: its first MiB is rewritten here (the
   * host's storage roots, the tier's memory) and sent as the head, the rest streams from the file into
   * podman's import while being hashed. The hash must be the snapshot's.
   */
  async function restoreFile(input: {
    hostId: string;
    path: string;
    sha256: string;
    dir: string;
    name: string;
    port: number;
    memoryBytes: number;
    cpus: number;
    fromRoots: StorageRoots;
    /** A fork: its own copy of the home, and its own network. */
    sandbox?: { homeFrom: string; homeTo: string; network: string };
  }): Promise<{ restoreMs: number; memoryLimitBytes: number }> {
    const started = Date.now();
    const { host, shell } = await shellForHost(deps, input.hostId);
    const toRoots = await rootsOf(input.hostId);
    const abort = new AbortController();
    activitySignal()?.addEventListener('abort', () => abort.abort(), { once: true });
    if ((await containerStatus(shell, input.name)) !== 'missing') await shell.run(removeContainerArgs(input.name), { timeoutMs: 60_000 });
    await shell.run(['sh', '-c', 'rm -rf "$1" && mkdir -p "$1"', 'markco-restore-dir', input.dir]);
    const sandbox = input.sandbox;
    // Returns and restores land on CPU hosts: a runtime checkpointed on a GPU host comes back on the CPU image.
    const image = await runtimeImageOn(deps, shell, false);
    const relocate = new TarMemberRewriter(['config.dump', 'spec.dump'], (name, data) => {
      let text = relocateStoragePaths(data.toString('utf8'), input.fromRoots, toRoots);
      if (sandbox) {
        text = text.split(JSON.stringify(sandbox.homeFrom)).join(JSON.stringify(sandbox.homeTo));
        if (name === 'config.dump') text = setCheckpointNetwork(text, sandbox.network);
      }
      if (name === 'config.dump' && image) text = setCheckpointImage(text, image, image.swappable);
      return Buffer.from(setCheckpointMemoryLimit(text, input.memoryBytes), 'utf8');
    });
    const restore = {
      importPath: posix.join(input.dir, 'in.tar'),
      name: input.name,
      ports: [{ hostIp: host.kind === 'base' ? '127.0.0.1' : reachableAddressOf(host), hostPort: input.port, containerPort: runtimeContainerPort }],
    };
    const stop = beating(() => ({ step: 'restore', ms: Date.now() - started }));
    try {
      const raw = await readFileHead(shell, input.path, headWindowBytes, { timeoutMs: 60_000, signal: abort.signal });
      const receiving = shell.run(receiveAndRestoreArgs({ dir: input.dir, mode: 'stream', headBytes: 0, restore, fromFile: input.path }), { timeoutMs: 30 * 60_000, signal: abort.signal });
      receiving.catch(() => undefined);
      await sendRewrittenHead(shell, input.dir, relocate, raw, abort.signal);
      let received;
      try {
        received = await receiving;
      } catch (err) {
        if (restoreFailed(err)) {
          throw ApplicationFailure.create({ type: ErrorType.RestoreFailed, message: `the restore of ${input.path} on host ${input.hostId} failed: ${(err as Error).message}`, nonRetryable: true });
        }
        throw err;
      }
      const { sha256 } = parseReceiveOutput(received.stdout);
      if (sha256 !== input.sha256) {
        await shell.run(removeContainerArgs(input.name), { timeoutMs: 60_000 }).catch(() => undefined);
        fail(ErrorType.ChecksumMismatch, `the archive ${input.path} on host ${input.hostId} has SHA-256 ${sha256}, not the snapshot's ${input.sha256}`);
      }
      const memoryLimitBytes = await applyTierLimits(shell, input.name, input.memoryBytes, input.cpus);
      return { restoreMs: Date.now() - started, memoryLimitBytes };
    } catch (err) {
      await shell.run(removeContainerArgs(input.name), { timeoutMs: 60_000 }).catch(() => undefined);
      throw err;
    } finally {
      stop();
      abort.abort();
      await shell.run(['rm', '-rf', input.dir]).catch(() => undefined);
    }
  }

  /** The archive as a file on `hostId`: the base server's copy if it is whole, else S3's. */
  async function stageArchive(snapshot: SnapshotRecord, hostId: string, opts: { skipLocal?: boolean }): Promise<{ path: string; from: 'local' | 's3'; stagedCopy: boolean }> {
    const base = (await shellForHost(deps, env.baseHostId)).shell;
    const target = (await shellForHost(deps, hostId)).shell;
    const local = snapshot.localPath && snapshot.hostId === env.baseHostId && !opts.skipLocal ? snapshot.localPath : null;
    const localWhole = local !== null && (await fileSize(base, local)) === snapshot.sizeBytes;
    const stop = beating(() => ({ step: 'stage' }));
    try {
      if (localWhole && hostId === env.baseHostId) return { path: local, from: 'local', stagedCopy: false };
      const staged = hostId === env.baseHostId ? archivePath(archivesDir, snapshot.userId, snapshot.id) : posix.join(scratchFor('restore', snapshot.id), 'archive.tar');
      if (localWhole) {
        await streamFileBetweenHosts({ from: base, fromPath: local, to: target, toPath: staged, expectedSha256: snapshot.sha256!, timeoutMs: 30 * 60_000 });
        return { path: staged, from: 'local', stagedCopy: true };
      }
      if (!snapshot.s3Key || !bucket) fail(ErrorType.NotFound, `snapshot ${snapshot.id} has no whole copy: the base server's file is ${local ? 'damaged' : 'missing'} and ${snapshot.s3Key ? 'S3 is not configured' : 'it was never uploaded to S3'}`);
      await downloadArchiveToHost(bucket.s3, bucket, { key: snapshot.s3Key, sha256: snapshot.sha256!, to: target, path: staged, timeoutMs: 60 * 60_000 });
      if (hostId === env.baseHostId) await store.snapshots.setArchive(snapshot.id, { hostId, localPath: staged });
      return { path: staged, from: 's3', stagedCopy: hostId !== env.baseHostId };
    } finally {
      stop();
    }
  }

  async function readySnapshot(userId: string, snapshotId: string): Promise<SnapshotRecord> {
    const snapshot = await store.snapshots.get(snapshotId);
    if (!snapshot || snapshot.userId !== userId || snapshot.state === 'deleted' || snapshot.state === 'failed') fail(ErrorType.NotFound, `user ${userId} has no snapshot ${snapshotId}`);
    if (snapshot.state !== 'ready' || !snapshot.sha256 || !snapshot.storageRoots) fail(ErrorType.Conflict, `snapshot ${snapshotId} is ${snapshot.state}, not ready`);
    return snapshot;
  }

  return {
    /**
     * Records the snapshot (named or idle) of the user's running runtime; an idle one marks the runtime
     * `checkpointing`. A name another live snapshot of the user holds is refused.
     */
    async beginSnapshot(input: { snapshotId: string; userId: string; name: string; kind: 'named' | 'idle'; workflowId: string; idleSince?: number }): Promise<SnapshotPlan> {
      const runtime = await store.runtimes.live(input.userId);
      const existing = await store.snapshots.get(input.snapshotId);
      if (!existing && input.idleSince !== undefined) {
        // The monitor's idle is a few seconds old by now: a user who came back meanwhile keeps their runtime.
        const seen = await store.pool.query<{ last_activity_at: Date | null }>(`SELECT last_activity_at FROM runtimes WHERE user_id = $1 AND kind = 'user' AND state NOT IN ('stopped', 'failed')`, [input.userId]);
        const last = seen.rows[0]?.last_activity_at?.getTime() ?? 0;
        if (last > input.idleSince) fail(ErrorType.Conflict, `user ${input.userId} came back (traffic at ${new Date(last).toISOString()}); the runtime stays`);
      }
      const allowed = existing ? ['running', 'paused', 'checkpointing'] : ['running', 'paused'];
      if (!runtime?.hostId || !runtime.port || !runtime.address || !allowed.includes(runtime.state)) {
        fail(runtime ? ErrorType.Conflict : ErrorType.NotFound, runtime ? `the runtime of user ${input.userId} is ${runtime.state}; only a running runtime can be checkpointed` : `user ${input.userId} has no runtime`);
      }
      const { host } = await shellForHost(deps, runtime.hostId);
      const snapshot = await store.snapshots.begin({
        id: input.snapshotId,
        userId: input.userId,
        runtimeId: runtime.id,
        name: input.name,
        kind: input.kind,
        workflowId: input.workflowId,
        tier: runtime.tier,
        memoryLimitBytes: runtime.memoryLimitBytes,
        cpuLimit: runtime.cpuLimit,
        storageRoots: await rootsOf(runtime.hostId),
      });
      if (!snapshot) fail(ErrorType.Conflict, `user ${input.userId} already has a snapshot named ${JSON.stringify(input.name)}`);
      if (input.kind === 'idle' && runtime.state !== 'checkpointing') await store.runtimes.update(runtime.id, { state: 'checkpointing' });
      await store.events.append({ type: `runtime.${input.kind === 'idle' ? 'idle-checkpoint' : 'snapshot'}-started`, source: 'worker', userId: input.userId, runtimeId: runtime.id, hostId: runtime.hostId, workflowId: input.workflowId, payload: { snapshotId: input.snapshotId, name: input.name } });
      return {
        snapshotId: input.snapshotId,
        userId: input.userId,
        name: input.name,
        kind: input.kind,
        runtime: runtimePlacement(runtime),
        runtimeState: existing ? 'running' : (runtime.state as 'running' | 'paused'),
        hostKind: host.kind === 'base' ? 'base' : 'ec2',
        baseHostId: env.baseHostId,
        hostArchivePath: runtime.hostId === env.baseHostId ? archivePath(archivesDir, input.userId, input.snapshotId) : posix.join(scratchFor('snapshot', input.snapshotId), 'archive.tar'),
        baseArchivePath: archivePath(archivesDir, input.userId, input.snapshotId),
      };
    },

    /**
     * Checkpoints the runtime into an archive file on its host, leaving it running. `pauseAfter` freezes
     * it right after the dump (an idle checkpoint: nothing may change after the image is taken, and the
     * workflow unpauses it if a later step fails); a named snapshot lets the user keep working.
     */
    async checkpointToArchive(input: { snapshotId: string; hostId: string; containerName: string; path: string; pauseAfter: boolean; wasPaused: boolean }): Promise<ArchiveFacts> {
      const { shell } = await shellForHost(deps, input.hostId);
      const started = Date.now();
      const status = await containerStatus(shell, input.containerName);
      if (status === 'missing') fail(ErrorType.NotFound, `the runtime container ${input.containerName} is gone from host ${input.hostId}`);
      // A previous attempt paused it after its dump: take the image again from the running process.
      if (status === 'paused' && !input.wasPaused) await shell.run(['podman', 'unpause', input.containerName], { timeoutMs: 30_000 });
      await shell.run(['sh', '-c', 'mkdir -p "$(dirname "$1")" && rm -f "$1"', 'markco-archive-dir', input.path]);
      const stop = beating(() => ({ step: 'checkpoint', ms: Date.now() - started }));
      let out;
      try {
        const spec = { container: input.containerName, exportPath: input.path, leaveRunning: true, compress: 'none' as const };
        out = await shell.run(input.pauseAfter ? checkpointThenPauseArgs({ ...spec, wasPaused: input.wasPaused }) : checkpointArgs(spec), { timeoutMs: 30 * 60_000, ...(activitySignal() ? { signal: activitySignal()! } : {}) });
      } catch (err) {
        await shell.run(['rm', '-f', input.path]).catch(() => undefined);
        return checkpointFailure(shell, err);
      } finally {
        stop();
      }
      const checkpointMs = Date.now() - started;
      const frozenMs = (() => {
        try {
          return parseCheckpointStats(out.stdout).frozenMs;
        } catch {
          return null;
        }
      })();
      const { sha256, bytes } = await hashAndSize(shell, input.path);
      await store.snapshots.setArchive(input.snapshotId, { hostId: input.hostId, localPath: input.path, sizeBytes: bytes, sha256, checkpointMs, frozenMs });
      return { bytes, sha256, checkpointMs, frozenMs };
    },

    /** Brings the archive from the runtime's host to the base server (verified), then removes the host's copy. */
    async keepArchiveOnBase(input: { snapshotId: string; fromHostId: string; fromPath: string; toPath: string; sha256: string }): Promise<void> {
      const from = (await shellForHost(deps, input.fromHostId)).shell;
      const to = (await shellForHost(deps, env.baseHostId)).shell;
      const snapshot = await store.snapshots.get(input.snapshotId);
      if (snapshot?.hostId === env.baseHostId && snapshot.localPath === input.toPath) return;
      let bytes = 0;
      const stop = beating(() => ({ step: 'copy to base', bytes }));
      try {
        await streamFileBetweenHosts({ from, fromPath: input.fromPath, to, toPath: input.toPath, expectedSha256: input.sha256, timeoutMs: 60 * 60_000, onProgress: (p) => (bytes = p.bytes) });
      } finally {
        stop();
      }
      await store.snapshots.setArchive(input.snapshotId, { hostId: env.baseHostId, localPath: input.toPath });
      await from.run(['rm', '-rf', posix.dirname(input.fromPath)]).catch(() => undefined);
    },

    /** Copies the base server's archive to S3 (multipart, per-part checksums, server-side encryption); a no-op without a bucket. */
    async uploadArchive(input: { snapshotId: string }): Promise<{ key: string | null; uploadMs: number }> {
      const snapshot = await store.snapshots.get(input.snapshotId);
      if (!snapshot?.localPath || !snapshot.sha256) fail(ErrorType.NotFound, `snapshot ${input.snapshotId} has no archive to upload`);
      if (!bucket) return { key: null, uploadMs: 0 };
      if (snapshot.s3Key) return { key: snapshot.s3Key, uploadMs: snapshot.uploadMs ?? 0 };
      const started = Date.now();
      const key = archiveKey(snapshot.userId, snapshot.id);
      let bytes = 0;
      const stop = beating(() => ({ step: 'upload', bytes }));
      try {
        const stored = await uploadArchiveFromHost(bucket.s3, bucket, {
          from: (await shellForHost(deps, env.baseHostId)).shell,
          path: snapshot.localPath,
          key,
          timeoutMs: 60 * 60_000,
          onProgress: (p) => (bytes = p.bytes),
          ...(activitySignal() ? { signal: activitySignal()! } : {}),
        });
        if (stored.sha256 !== snapshot.sha256) {
          await deleteArchive(bucket.s3, bucket, key).catch(() => undefined);
          fail(ErrorType.ChecksumMismatch, `the archive of snapshot ${snapshot.id} changed on the base server: uploaded ${stored.sha256}, checkpointed ${snapshot.sha256}`);
        }
      } finally {
        stop();
      }
      const uploadMs = Date.now() - started;
      await store.snapshots.setArchive(snapshot.id, { s3Key: key, uploadMs });
      return { key, uploadMs };
    },

    async finishSnapshot(input: { snapshotId: string }): Promise<void> {
      await store.snapshots.setState(input.snapshotId, 'ready');
    },

    /** Removes what a failed snapshot left (its files, its S3 object) and records why it failed. */
    async failSnapshot(input: { snapshotId: string; error: string }): Promise<void> {
      const snapshot = await store.snapshots.get(input.snapshotId);
      if (!snapshot || snapshot.state === 'ready') return;
      await removeArchiveCopies(snapshot);
      await store.snapshots.setState(snapshot.id, 'failed', input.error);
    },

    /** Deletes a snapshot's archive everywhere (base server, S3). Safe to repeat; refuses the idle snapshot a checkpointed runtime lives in. */
    async deleteSnapshot(input: { userId: string; snapshotId: string; force?: boolean }): Promise<{ deleted: boolean }> {
      const snapshot = await store.snapshots.get(input.snapshotId);
      if (!snapshot || snapshot.userId !== input.userId) fail(ErrorType.NotFound, `user ${input.userId} has no snapshot ${input.snapshotId}`);
      if (snapshot.state === 'deleted') return { deleted: false };
      const runtime = await store.runtimes.live(input.userId);
      if (!input.force && runtime?.state === 'checkpointed' && (await store.idle.snapshotOf(runtime.id)) === snapshot.id) {
        fail(ErrorType.Conflict, `snapshot ${snapshot.id} holds the user's checkpointed runtime; wake it first`);
      }
      await store.snapshots.setState(snapshot.id, 'deleting');
      await removeArchiveCopies(snapshot);
      await store.snapshots.setState(snapshot.id, 'deleted');
      await store.events.append({ type: 'snapshot.deleted', source: 'worker', userId: input.userId, payload: { snapshotId: snapshot.id, name: snapshot.name } });
      return { deleted: true };
    },

    /**
     * After the user's snapshots are deleted one by one (deleteSnapshot): whatever of theirs no row names
     * goes too, the base server's archive folder of the user and every S3 object and unfinished upload
     * under their prefix. Safe to repeat; answers how many S3 leftovers it removed.
     */
    async purgeUserArchives(input: { userId: string }): Promise<{ strayArchivesRemoved: number }> {
      if (!userIdPattern.test(input?.userId)) fail(ErrorType.InvalidInput, 'userId: expected a lowercase UUID');
      await (await shellForHost(deps, env.baseHostId)).shell.run(['rm', '-rf', '--', posix.join(archivesDir, input.userId)]);
      return { strayArchivesRemoved: bucket ? await deleteArchivesOfUser(bucket.s3, bucket, input.userId) : 0 };
    },

    /** The idle commit: the runtime lives in its archive; its container and port go, the editor too if configured. */
    async commitIdle(input: { userId: string; runtimeId: string; snapshotId: string; hostId: string; containerName: string; port: number }): Promise<{ editorStopped: boolean }> {
      await store.snapshots.setState(input.snapshotId, 'ready');
      await store.idle.markCheckpointed(input.runtimeId, input.snapshotId);
      await removeContainer(input.hostId, input.containerName, input.port);
      let editorStopped = false;
      if (env.idleStopsEditor) {
        const editor = await store.editors.live(input.userId);
        if (editor) {
          await retireEditor(deps, editor, 'stopped');
          editorStopped = true;
        }
      }
      await store.events.append({ type: 'runtime.checkpointed', source: 'worker', userId: input.userId, runtimeId: input.runtimeId, hostId: input.hostId, payload: { snapshotId: input.snapshotId, editorStopped } });
      return { editorStopped };
    },

    /** The undo of beginSnapshot for an idle checkpoint: the runtime is running again where it was. */
    async failIdle(input: { runtimeId: string; snapshotId: string; error: string }): Promise<void> {
      const row = await store.runtimes.get(input.runtimeId);
      if (row?.state === 'checkpointing') await store.runtimes.update(input.runtimeId, { state: 'running' });
      const snapshot = await store.snapshots.get(input.snapshotId);
      if (snapshot && snapshot.state !== 'ready') {
        await removeArchiveCopies(snapshot);
        await store.snapshots.setState(snapshot.id, 'failed', input.error);
      }
    },

    /**
     * What the user's return needs: the idle snapshot and the tier to restore on, sized from the archive
     * (the base server if it fits the plan's base limit, else the smallest tier that does). Marks the
     * runtime `restoring`.
     */
    async planReturn(input: { userId: string }): Promise<ReturnPlan> {
      const user = await store.users.get(input.userId);
      if (!user) fail(ErrorType.NotFound, `user ${input.userId} does not exist`);
      const runtime = await store.runtimes.live(input.userId);
      if (!runtime) fail(ErrorType.NotFound, `user ${input.userId} has no runtime to bring back`);
      const common = { userId: input.userId, runtimeId: runtime.id, containerName: runtime.containerName, baseHostId: env.baseHostId, containerUser: await containerUser(), editor: await editorOf(input.userId) };
      const base = ladder[user.plan][0]!;
      const asTier = (t: typeof base): MigrationTier => ({ name: t.name, instanceType: t.instanceType, memoryBytes: t.memoryBytes, cpus: t.cpus, gpu: t.gpu });
      if (runtime.state === 'running' || runtime.state === 'starting') {
        return { ...common, alreadyRunning: true, snapshotId: null, previousPort: runtime.port, to: asTier(tierNamed(ladder, user.plan, runtime.tier) ?? base) };
      }
      if (runtime.state !== 'checkpointed' && runtime.state !== 'restoring') fail(ErrorType.Conflict, `the runtime of user ${input.userId} is ${runtime.state}, not checkpointed`);
      const snapshotId = await store.idle.snapshotOf(runtime.id);
      if (!snapshotId) fail(ErrorType.NotFound, `the checkpointed runtime of user ${input.userId} names no snapshot`);
      const snapshot = await readySnapshot(input.userId, snapshotId);
      // The archive holds the memory the runtime used (plus a little): a quarter more must fit the tier.
      const tier = smallestTierFor(ladder, user.plan, snapshot.sizeBytes ?? 0, 0.25);
      if (runtime.state !== 'restoring') await store.runtimes.update(runtime.id, { state: 'restoring' });
      return { ...common, alreadyRunning: false, snapshotId, previousPort: null, to: asTier(tier) };
    },

    /** Leases the restored runtime's port on its host (the user's runtime port there). */
    async leaseRuntimePort(input: { userId: string; hostId: string; holder?: string }): Promise<{ port: number; address: string }> {
      const { host } = await shellForHost(deps, input.hostId);
      if (host.state !== 'ready') fail(ErrorType.HostUnreachable, `host ${host.id} is ${host.state}, not ready`);
      const port = input.holder
        ? await store.ports.leaseHeld({ hostId: host.id, userId: input.userId, purpose: 'runtime', holder: input.holder })
        : await store.ports.lease({ hostId: host.id, userId: input.userId, purpose: 'runtime' });
      return { port, address: reachableAddressOf(host) };
    },

    /**
     * Restores a snapshot's archive on a host under `containerName`: from the base server's copy when it is
     * whole (S3's otherwise, or always with `skipLocal`), with the tier's limits. The home must exist there.
     */
    async restoreSnapshotOnHost(input: { userId: string; snapshotId: string; hostId: string; containerName: string; port: number; memoryBytes: number; cpus: number; skipLocal?: boolean }): Promise<{ from: 'local' | 's3'; restoreMs: number; stageMs: number; memoryLimitBytes: number }> {
      const snapshot = await readySnapshot(input.userId, input.snapshotId);
      const started = Date.now();
      const staged = await stageArchive(snapshot, input.hostId, input.skipLocal ? { skipLocal: true } : {});
      const stageMs = Date.now() - started;
      try {
        const restored = await restoreFile({
          hostId: input.hostId,
          path: staged.path,
          sha256: snapshot.sha256!,
          dir: posix.join(scratchFor('restore', snapshot.id), input.containerName),
          name: input.containerName,
          port: input.port,
          memoryBytes: input.memoryBytes,
          cpus: input.cpus,
          fromRoots: snapshot.storageRoots!,
        });
        return { from: staged.from, stageMs, ...restored };
      } finally {
        if (staged.stagedCopy) await (await shellForHost(deps, input.hostId)).shell.run(['rm', '-f', staged.path]).catch(() => undefined);
      }
    },

    /** The undo of a restore that never became the user's runtime: its container and port go. */
    async discardRestored(input: { hostId: string; containerName: string; port?: number }): Promise<void> {
      await removeContainer(input.hostId, input.containerName, input.port ?? null);
    },

    /**
     * The return's commit: the runtime row runs on the host again, the idle snapshot is done with (its
     * archive goes, everywhere).
     */
    async commitReturn(input: { userId: string; runtimeId: string; snapshotId: string; hostId: string; port: number; address: string; containerName: string; tier: string; memoryLimitBytes: number; cpuLimit: number; timings: Record<string, unknown> }): Promise<void> {
      await store.idle.markRestored(input.runtimeId, input);
      await store.events.append({ type: 'runtime.returned', source: 'worker', userId: input.userId, runtimeId: input.runtimeId, hostId: input.hostId, payload: { snapshotId: input.snapshotId, ...input.timings } });
    },

    /** The undo of planReturn: the runtime is checkpointed again, its archive untouched. */
    async failReturn(input: { runtimeId: string }): Promise<void> {
      const row = await store.runtimes.get(input.runtimeId);
      if (row?.state === 'restoring') await store.runtimes.update(input.runtimeId, { state: 'checkpointed' });
    },

    /** What a named restore needs: the ready snapshot and the running runtime it replaces. */
    async planRestore(input: { userId: string; restoreId: string; snapshotId?: string; name?: string }): Promise<RestorePlan> {
      const byName = input.name !== undefined ? await store.snapshots.byName(input.userId, input.name) : undefined;
      const snapshotId = input.snapshotId ?? byName?.id;
      if (!snapshotId) fail(ErrorType.NotFound, `user ${input.userId} has no snapshot named ${JSON.stringify(input.name)}`);
      const snapshot = await readySnapshot(input.userId, snapshotId);
      const runtime = await store.runtimes.live(input.userId);
      if (!runtime?.hostId || !runtime.port || !runtime.address || !['running', 'paused'].includes(runtime.state)) {
        fail(ErrorType.Conflict, runtime ? `the runtime of user ${input.userId} is ${runtime.state}; a snapshot is restored into a running runtime (wake it first)` : `user ${input.userId} has no runtime`);
      }
      return {
        userId: input.userId,
        snapshotId: snapshot.id,
        snapshotName: snapshot.name,
        runtime: runtimePlacement(runtime),
        containerName: restoredContainerName(input.userId, input.restoreId),
        editor: await editorOf(input.userId),
        containerUser: await containerUser(),
      };
    },

    /**
     * A named restore's commit: the new container is the user's runtime (its port the user's own), the
     * previous one and its port go.
     */
    async commitRestore(input: { userId: string; runtimeId: string; snapshotId: string; hostId: string; port: number; address: string; containerName: string; previous: { containerName: string; port: number; hostId: string }; tier: string; memoryLimitBytes: number; cpuLimit: number }): Promise<void> {
      const row = await store.runtimes.get(input.runtimeId);
      if (row?.containerName !== input.containerName) {
        await store.ports.release({ hostId: input.previous.hostId, port: input.previous.port });
        await store.ports.promote({ hostId: input.hostId, port: input.port });
        await store.idle.markRestored(input.runtimeId, input);
      }
      await removeContainer(input.previous.hostId, input.previous.containerName, null);
      await store.events.append({ type: 'runtime.snapshot-restored', source: 'worker', userId: input.userId, runtimeId: input.runtimeId, hostId: input.hostId, payload: { snapshotId: input.snapshotId, container: input.containerName } });
    },

    /** Records a sandbox forked from the user's running runtime, expiring after `ttlSeconds`. */
    async planSandbox(input: { userId: string; sandboxId: string; ttlSeconds: number; hostId?: string }): Promise<SandboxPlan> {
      const runtime = await store.runtimes.live(input.userId);
      if (!runtime?.hostId || !runtime.port || !runtime.address || runtime.state !== 'running') {
        fail(runtime ? ErrorType.Conflict : ErrorType.NotFound, runtime ? `the runtime of user ${input.userId} is ${runtime.state}; a sandbox is forked from a running runtime` : `user ${input.userId} has no runtime`);
      }
      const hostId = input.hostId ?? runtime.hostId;
      if (input.hostId) {
        const host = await store.hosts.get(input.hostId);
        if (!host || host.state !== 'ready') fail(ErrorType.InvalidInput, `hostId: ${input.hostId} is not a ready host`);
      }
      const existing = await store.sandboxes.get(input.sandboxId);
      const expiresAt = existing?.expiresAt ?? new Date(Date.now() + input.ttlSeconds * 1000);
      const home = posix.join(scratchFor('sandbox', input.sandboxId), 'home');
      await store.sandboxes.begin({ id: input.sandboxId, userId: input.userId, parentRuntimeId: runtime.id, containerName: sandboxContainerName(input.sandboxId), hostId, image: runtime.image, tier: runtime.tier, memoryLimitBytes: runtime.memoryLimitBytes, cpuLimit: runtime.cpuLimit, expiresAt, home });
      return { sandboxId: input.sandboxId, userId: input.userId, runtime: runtimePlacement(runtime), hostId, containerName: sandboxContainerName(input.sandboxId), home, expiresAt: expiresAt.toISOString() };
    },

    /**
     * The fork: checkpoints the runtime with --leave-running, copies the user's home for the sandbox
     * (it works on its own files, never the user's), and restores the image under the sandbox's name on
     * an isolated network, with a port of its own. The user's runtime never stops.
     */
    async forkSandbox(input: { sandboxId: string }): Promise<SandboxResult> {
      const sandbox = await store.sandboxes.get(input.sandboxId);
      if (!sandbox || sandbox.state === 'stopped' || sandbox.state === 'failed') fail(ErrorType.NotFound, `no live sandbox ${input.sandboxId}`);
      const parent = await store.runtimes.get(sandbox.parentRuntimeId);
      if (!parent?.hostId || parent.state !== 'running') fail(ErrorType.Conflict, `the runtime the sandbox forks from is ${parent?.state ?? 'gone'}`);
      const hostId = sandbox.hostId!;
      const source = (await shellForHost(deps, parent.hostId)).shell;
      const target = await shellForHost(deps, hostId);
      const dir = scratchFor('sandbox', sandbox.id);
      const archive = posix.join(dir, 'fork.tar');
      const started = Date.now();
      const { uid, gid } = await containerUser();
      // The home copy is made before the image is taken: files the runtime holds open must exist at their
      // new path. It comes from the runtime's host, where the runtime's view of the files is.
      if (parent.hostId === hostId) {
        await target.shell.run(['sh', '-c', 'rm -rf "$2" && mkdir -p "$2" && cp -a "$1/." "$2/" && chown "$3" "$2"', 'markco-sandbox-home', homeOf(sandbox.userId), sandbox.home!, `${uid}:${gid}`], { timeoutMs: 10 * 60_000 });
      } else {
        await target.shell.run(['sh', '-c', 'rm -rf "$1" && mkdir -p "$1" && chown "$2" "$1"', 'markco-sandbox-home', sandbox.home!, `${uid}:${gid}`]);
        const reader = await source.openReader(['tar', '-C', homeOf(sandbox.userId), '-cf', '-', '.'], { timeoutMs: 10 * 60_000 });
        await Promise.all([reader.done, target.shell.run(['tar', '-C', sandbox.home!, '-xpf', '-'], { stdin: reader.stdout, timeoutMs: 10 * 60_000 })]);
      }
      await source.run(['sh', '-c', 'mkdir -p "$1" && rm -f "$2"', 'markco-fork-dir', dir, archive]);
      const stop = beating(() => ({ step: 'fork', ms: Date.now() - started }));
      try {
        try {
          await source.run(checkpointArgs({ container: parent.containerName, exportPath: archive, leaveRunning: true, compress: 'none' }), { timeoutMs: 30 * 60_000 });
        } catch (err) {
          return await checkpointFailure(source, err);
        }
        const checkpointMs = Date.now() - started;
        let path = archive;
        if (parent.hostId !== hostId) {
          path = posix.join(dir, 'fork-in.tar');
          await streamFileBetweenHosts({ from: source, fromPath: archive, to: target.shell, toPath: path, timeoutMs: 30 * 60_000 });
        }
        const { sha256 } = await hashAndSize(target.shell, path);
        const port = await store.ports.leaseHeld({ hostId, userId: sandbox.userId, purpose: 'sandbox', holder: sandbox.id });
        const network = sandboxNetworkName(sandbox.id);
        await target.shell.run(sandboxNetworkArgs(network, network), { timeoutMs: 60_000 });
        const restored = await restoreFile({
          hostId,
          path,
          sha256,
          dir: posix.join(dir, 'restore'),
          name: sandbox.containerName,
          port,
          memoryBytes: parent.memoryLimitBytes,
          cpus: parent.cpuLimit,
          fromRoots: await rootsOf(parent.hostId),
          sandbox: { homeFrom: homeOf(sandbox.userId), homeTo: sandbox.home!, network },
        });
        const address = reachableAddressOf(target.host);
        await store.sandboxes.update(sandbox.id, { state: 'running', port, address });
        await store.events.append({ type: 'sandbox.forked', source: 'worker', userId: sandbox.userId, runtimeId: sandbox.id, hostId, payload: { parentRuntimeId: parent.id, checkpointMs, restoreMs: restored.restoreMs } });
        return { sandboxId: sandbox.id, containerName: sandbox.containerName, hostId, address, port, expiresAt: sandbox.expiresAt.toISOString(), checkpointMs, restoreMs: restored.restoreMs };
      } finally {
        stop();
        await Promise.all([source.run(['rm', '-f', archive]).catch(() => undefined), target.shell.run(['rm', '-f', posix.join(dir, 'fork-in.tar')]).catch(() => undefined)]);
      }
    },

    /** Removes a sandbox: its container, port and home copy; the row says `stopped`. Safe to repeat. */
    async destroySandbox(input: { sandboxId: string; reason: string }): Promise<{ destroyed: boolean }> {
      const sandbox = await store.sandboxes.get(input.sandboxId);
      if (!sandbox) fail(ErrorType.NotFound, `no sandbox ${input.sandboxId}`);
      if (sandbox.state === 'stopped') return { destroyed: false };
      if (sandbox.hostId) {
        const host = await store.hosts.get(sandbox.hostId);
        if (host && host.state !== 'terminated') {
          const { shell } = await shellForHost(deps, sandbox.hostId);
          await shell.run(removeContainerArgs(sandbox.containerName), { timeoutMs: 60_000 });
          await shell.run(removeSandboxNetworkArgs(sandboxNetworkName(sandbox.id), sandboxNetworkName(sandbox.id)), { timeoutMs: 60_000 });
          await shell.run(['rm', '-rf', scratchFor('sandbox', sandbox.id)]).catch(() => undefined);
        }
        if (sandbox.port) await store.ports.release({ hostId: sandbox.hostId, port: sandbox.port });
        else await store.pool.query('DELETE FROM port_leases WHERE host_id = $1 AND holder = $2', [sandbox.hostId, sandbox.id]);
      }
      await store.sandboxes.update(sandbox.id, { state: 'stopped' });
      await store.events.append({ type: 'sandbox.destroyed', source: 'worker', userId: sandbox.userId, runtimeId: sandbox.id, hostId: sandbox.hostId, payload: { reason: input.reason.slice(0, 500) } });
      return { destroyed: true };
    },

    /** Sandboxes whose expiry has passed, for the schedule that destroys them. */
    async expiredSandboxes(): Promise<{ sandboxId: string; userId: string }[]> {
      return (await store.sandboxes.expired()).map((s) => ({ sandboxId: s.id, userId: s.userId }));
    },
  };

  async function removeArchiveCopies(snapshot: SnapshotRecord): Promise<void> {
    if (snapshot.localPath && snapshot.hostId) {
      const host = await store.hosts.get(snapshot.hostId);
      if (host && host.state !== 'terminated') await (await shellForHost(deps, snapshot.hostId)).shell.run(['rm', '-f', snapshot.localPath]).catch(() => undefined);
    }
    // An idle checkpoint on an EC2 host may also have left its first copy there, and the base copy may exist already.
    await (await shellForHost(deps, env.baseHostId)).shell.run(['rm', '-f', archivePath(archivesDir, snapshot.userId, snapshot.id)]).catch(() => undefined);
    if (snapshot.s3Key && bucket) await deleteArchive(bucket.s3, bucket, snapshot.s3Key);
  }
}

