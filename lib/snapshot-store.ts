import type pg from 'pg';
import { routeChannel } from './runtime-store.js';

/**
 * Checkpoint archives (idle checkpoints and named snapshots) and AI sandboxes, as PostgreSQL records
 * them. A snapshot is `ready` only once its archive is whole where the row says (base server file, S3
 * object); the activities write every step, so an operator reads the truth mid-operation.
 */
export const SnapshotKinds = ['named', 'idle', 'migration'] as const;
export type SnapshotKind = (typeof SnapshotKinds)[number];
export type SnapshotState = 'creating' | 'ready' | 'deleting' | 'deleted' | 'failed';

export interface StorageRoots {
  graphRoot: string;
  runRoot: string;
}

export interface SnapshotRecord {
  id: string;
  userId: string;
  runtimeId: string | null;
  name: string;
  kind: SnapshotKind;
  /** The host holding `localPath` (the base server once the snapshot is ready). */
  hostId: string | null;
  localPath: string | null;
  s3Key: string | null;
  sizeBytes: number | null;
  sha256: string | null;
  memoryLimitBytes: number | null;
  cpuLimit: number | null;
  tier: string | null;
  /** The podman storage roots of the host the checkpoint was made on: a restore elsewhere rewrites them. */
  storageRoots: StorageRoots | null;
  state: SnapshotState;
  workflowId: string | null;
  error: string | null;
  checkpointMs: number | null;
  uploadMs: number | null;
  frozenMs: number | null;
  createdAt: Date;
  deletedAt: Date | null;
}

interface SnapshotRow {
  id: string;
  user_id: string;
  runtime_id: string | null;
  name: string;
  kind: SnapshotKind;
  host_id: string | null;
  local_path: string | null;
  s3_key: string | null;
  size_bytes: string | null;
  sha256: string | null;
  memory_limit_bytes: string | null;
  cpu_limit: number | null;
  tier: string | null;
  storage_roots: StorageRoots | null;
  state: SnapshotState;
  workflow_id: string | null;
  error: string | null;
  checkpoint_ms: number | null;
  upload_ms: number | null;
  frozen_ms: number | null;
  created_at: Date;
  deleted_at: Date | null;
}

const num = (v: string | null) => (v === null ? null : Number(v));

const snapshotFromRow = (r: SnapshotRow): SnapshotRecord => ({
  id: r.id,
  userId: r.user_id,
  runtimeId: r.runtime_id,
  name: r.name,
  kind: r.kind,
  hostId: r.host_id,
  localPath: r.local_path,
  s3Key: r.s3_key,
  sizeBytes: num(r.size_bytes),
  sha256: r.sha256,
  memoryLimitBytes: num(r.memory_limit_bytes),
  cpuLimit: r.cpu_limit,
  tier: r.tier,
  storageRoots: r.storage_roots,
  state: r.state,
  workflowId: r.workflow_id,
  error: r.error,
  checkpointMs: r.checkpoint_ms,
  uploadMs: r.upload_ms,
  frozenMs: r.frozen_ms,
  createdAt: r.created_at,
  deletedAt: r.deleted_at,
});

export interface SandboxRecord {
  id: string;
  userId: string;
  parentRuntimeId: string;
  containerName: string;
  hostId: string | null;
  port: number | null;
  address: string | null;
  state: string;
  /** The copy of the user's home the sandbox works in (never the user's own files). */
  home: string | null;
  expiresAt: Date;
  createdAt: Date;
}

interface SandboxRow {
  id: string;
  user_id: string;
  parent_runtime_id: string;
  container_name: string;
  host_id: string | null;
  port: number | null;
  address: string | null;
  state: string;
  sandbox_home: string | null;
  expires_at: Date;
  created_at: Date;
}

const sandboxFromRow = (r: SandboxRow): SandboxRecord => ({
  id: r.id,
  userId: r.user_id,
  parentRuntimeId: r.parent_runtime_id,
  containerName: r.container_name,
  hostId: r.host_id,
  port: r.port,
  address: r.address,
  state: r.state,
  home: r.sandbox_home,
  expiresAt: r.expires_at,
  createdAt: r.created_at,
});

export function createSnapshotStore(pool: pg.Pool) {
  const notify = (userId: string) => pool.query('SELECT pg_notify($1, $2)', [routeChannel, userId]);

  return {
    snapshots: {
      /** Records a snapshot being made; a retry with the same id finds its row. A live name taken by another snapshot is refused (null). */
      async begin(input: { id: string; userId: string; runtimeId: string; name: string; kind: SnapshotKind; workflowId: string; tier: string; memoryLimitBytes: number; cpuLimit: number; storageRoots: StorageRoots }): Promise<SnapshotRecord | null> {
        const inserted = await pool.query<SnapshotRow>(
          `INSERT INTO snapshots (id, user_id, runtime_id, name, kind, workflow_id, tier, memory_limit_bytes, cpu_limit, storage_roots, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'creating') ON CONFLICT DO NOTHING RETURNING *`,
          [input.id, input.userId, input.runtimeId, input.name, input.kind, input.workflowId, input.tier, input.memoryLimitBytes, input.cpuLimit, JSON.stringify(input.storageRoots)],
        );
        if (inserted.rows[0]) return snapshotFromRow(inserted.rows[0]);
        const mine = await this.get(input.id);
        return mine ?? null;
      },

      async get(id: string): Promise<SnapshotRecord | undefined> {
        if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
        const r = await pool.query<SnapshotRow>('SELECT * FROM snapshots WHERE id = $1', [id]);
        return r.rows[0] ? snapshotFromRow(r.rows[0]) : undefined;
      },

      /** The user's live snapshot of that name (named snapshots only). */
      async byName(userId: string, name: string): Promise<SnapshotRecord | undefined> {
        const r = await pool.query<SnapshotRow>(`SELECT * FROM snapshots WHERE user_id = $1 AND name = $2 AND state NOT IN ('deleted', 'failed')`, [userId, name]);
        return r.rows[0] ? snapshotFromRow(r.rows[0]) : undefined;
      },

      /** What a user sees: their snapshots that exist or are being made, oldest first. */
      async listForUser(userId: string, opts: { kinds?: SnapshotKind[] } = {}): Promise<SnapshotRecord[]> {
        const r = await pool.query<SnapshotRow>(
          `SELECT * FROM snapshots WHERE user_id = $1 AND state IN ('creating', 'ready') AND kind = ANY($2) ORDER BY created_at, id`,
          [userId, opts.kinds ?? ['named', 'idle']],
        );
        return r.rows.map(snapshotFromRow);
      },

      /** Where the archive is now, and its bytes and hash once known. */
      async setArchive(id: string, patch: { hostId?: string | null; localPath?: string | null; s3Key?: string | null; sizeBytes?: number; sha256?: string; checkpointMs?: number; uploadMs?: number; frozenMs?: number | null }): Promise<void> {
        const sets: string[] = [];
        const values: unknown[] = [id];
        const put = (column: string, value: unknown) => {
          values.push(value);
          sets.push(`${column} = $${values.length}`);
        };
        if (patch.hostId !== undefined) put('host_id', patch.hostId);
        if (patch.localPath !== undefined) put('local_path', patch.localPath);
        if (patch.s3Key !== undefined) put('s3_key', patch.s3Key);
        if (patch.sizeBytes !== undefined) put('size_bytes', patch.sizeBytes);
        if (patch.sha256 !== undefined) put('sha256', patch.sha256);
        if (patch.checkpointMs !== undefined) put('checkpoint_ms', Math.round(patch.checkpointMs));
        if (patch.uploadMs !== undefined) put('upload_ms', Math.round(patch.uploadMs));
        if (patch.frozenMs !== undefined) put('frozen_ms', patch.frozenMs === null ? null : Math.round(patch.frozenMs));
        if (sets.length === 0) return;
        await pool.query(`UPDATE snapshots SET ${sets.join(', ')} WHERE id = $1`, values);
      },

      async setState(id: string, state: SnapshotState, error?: string): Promise<void> {
        await pool.query(
          `UPDATE snapshots SET state = $2, error = COALESCE($3, error), deleted_at = CASE WHEN $2 = 'deleted' THEN now() ELSE deleted_at END WHERE id = $1`,
          [id, state, error?.slice(0, 4000) ?? null],
        );
      },
    },

    sandboxes: {
      /** Records a sandbox being made from the user's runtime; a retry with the same id finds its row. */
      async begin(input: { id: string; userId: string; parentRuntimeId: string; containerName: string; hostId: string; image: string; tier: string; memoryLimitBytes: number; cpuLimit: number; expiresAt: Date; home: string }): Promise<SandboxRecord> {
        await pool.query(
          `INSERT INTO runtimes (id, user_id, kind, parent_runtime_id, container_name, host_id, state, tier, memory_limit_bytes, cpu_limit, image, expires_at, sandbox_home)
           VALUES ($1, $2, 'sandbox', $3, $4, $5, 'starting', $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
          [input.id, input.userId, input.parentRuntimeId, input.containerName, input.hostId, input.tier, input.memoryLimitBytes, input.cpuLimit, input.image, input.expiresAt, input.home],
        );
        const row = await this.get(input.id);
        if (!row) throw new Error(`sandbox ${input.id} was not recorded`);
        return row;
      },

      async get(id: string): Promise<SandboxRecord | undefined> {
        if (!/^[0-9a-f-]{36}$/i.test(id)) return undefined;
        const r = await pool.query<SandboxRow>(`SELECT * FROM runtimes WHERE id = $1 AND kind = 'sandbox'`, [id]);
        return r.rows[0] ? sandboxFromRow(r.rows[0]) : undefined;
      },

      async liveForUser(userId: string): Promise<SandboxRecord[]> {
        const r = await pool.query<SandboxRow>(`SELECT * FROM runtimes WHERE user_id = $1 AND kind = 'sandbox' AND state NOT IN ('stopped', 'failed') ORDER BY created_at`, [userId]);
        return r.rows.map(sandboxFromRow);
      },

      /** Sandboxes past their expiry that still hold a container or a port. */
      async expired(now = new Date()): Promise<SandboxRecord[]> {
        const r = await pool.query<SandboxRow>(`SELECT * FROM runtimes WHERE kind = 'sandbox' AND state NOT IN ('stopped', 'failed') AND expires_at <= $1 ORDER BY expires_at`, [now]);
        return r.rows.map(sandboxFromRow);
      },

      async update(id: string, patch: { state?: 'running' | 'stopped' | 'failed'; port?: number; address?: string }): Promise<void> {
        await pool.query(
          `UPDATE runtimes SET state = COALESCE($2, state), port = COALESCE($3, port), address = COALESCE($4, address), updated_at = now() WHERE id = $1 AND kind = 'sandbox'`,
          [id, patch.state ?? null, patch.port ?? null, patch.address ?? null],
        );
      },
    },

    idle: {
      /** The user's runtime lives in its archive now: no host, no port, the snapshot to restore named. */
      async markCheckpointed(runtimeId: string, snapshotId: string): Promise<void> {
        const r = await pool.query<{ user_id: string }>(
          `UPDATE runtimes SET state = 'checkpointed', snapshot_id = $2, host_id = NULL, port = NULL, address = NULL, updated_at = now() WHERE id = $1 RETURNING user_id`,
          [runtimeId, snapshotId],
        );
        if (r.rows[0]) await notify(r.rows[0].user_id);
      },

      /** The restored runtime runs: where, under which name, with which limits. */
      async markRestored(runtimeId: string, at: { hostId: string; port: number; address: string; containerName: string; tier: string; memoryLimitBytes: number; cpuLimit: number }): Promise<void> {
        const r = await pool.query<{ user_id: string }>(
          `UPDATE runtimes SET state = 'running', snapshot_id = NULL, host_id = $2, port = $3, address = $4, container_name = $5, tier = $6,
             memory_limit_bytes = $7, cpu_limit = $8, updated_at = now() WHERE id = $1 RETURNING user_id`,
          [runtimeId, at.hostId, at.port, at.address, at.containerName, at.tier, at.memoryLimitBytes, at.cpuLimit],
        );
        if (r.rows[0]) await notify(r.rows[0].user_id);
      },

      /** The runtime row's idle snapshot, if it is checkpointed. */
      async snapshotOf(runtimeId: string): Promise<string | null> {
        const r = await pool.query<{ snapshot_id: string | null }>('SELECT snapshot_id FROM runtimes WHERE id = $1', [runtimeId]);
        return r.rows[0]?.snapshot_id ?? null;
      },
    },
  };
}

export type SnapshotStore = ReturnType<typeof createSnapshotStore>;
