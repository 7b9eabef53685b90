import type pg from 'pg';

/**
 * The rows that say where a user's runtime and editor live. Activities write them at every step; the
 * edge reads them to route `/u/<id>/` and is told of changes through PostgreSQL NOTIFY on
 * `routeChannel` (payload: the user id), so its upstream cache never outlives a move or a restart.
 */
export const routeChannel = 'markco_routes';

export const RuntimeStates = ['starting', 'running', 'paused', 'migrating', 'checkpointing', 'checkpointed', 'restoring', 'stopped', 'failed'] as const;
export type RuntimeState = (typeof RuntimeStates)[number];
export const EditorStates = ['starting', 'running', 'stopped', 'failed'] as const;
export type EditorState = (typeof EditorStates)[number];

export interface RuntimeRecord {
  id: string;
  userId: string;
  containerName: string;
  hostId: string | null;
  port: number | null;
  /** Where the worker and the editor reach the runtime's published port. */
  address: string | null;
  state: RuntimeState;
  tier: string;
  memoryLimitBytes: number;
  cpuLimit: number;
  image: string;
  updatedAt: Date;
}

export interface EditorRecord {
  id: string;
  userId: string;
  runtimeId: string | null;
  containerName: string;
  hostId: string;
  port: number | null;
  syncPort: number | null;
  runtimeHost: string | null;
  runtimePort: number | null;
  image: string | null;
  state: EditorState;
  updatedAt: Date;
}

interface RuntimeRow {
  id: string;
  user_id: string;
  container_name: string;
  host_id: string | null;
  port: number | null;
  address: string | null;
  state: RuntimeState;
  tier: string;
  memory_limit_bytes: string;
  cpu_limit: number;
  image: string;
  updated_at: Date;
}

interface EditorRow {
  id: string;
  user_id: string;
  runtime_id: string | null;
  container_name: string;
  host_id: string;
  port: number | null;
  sync_port: number | null;
  runtime_host: string | null;
  runtime_port: number | null;
  image: string | null;
  state: EditorState;
  updated_at: Date;
}

const runtimeFromRow = (r: RuntimeRow): RuntimeRecord => ({
  id: r.id,
  userId: r.user_id,
  containerName: r.container_name,
  hostId: r.host_id,
  port: r.port,
  address: r.address,
  state: r.state,
  tier: r.tier,
  memoryLimitBytes: Number(r.memory_limit_bytes),
  cpuLimit: r.cpu_limit,
  image: r.image,
  updatedAt: r.updated_at,
});

const editorFromRow = (r: EditorRow): EditorRecord => ({
  id: r.id,
  userId: r.user_id,
  runtimeId: r.runtime_id,
  containerName: r.container_name,
  hostId: r.host_id,
  port: r.port,
  syncPort: r.sync_port,
  runtimeHost: r.runtime_host,
  runtimePort: r.runtime_port,
  image: r.image,
  state: r.state,
  updatedAt: r.updated_at,
});

export interface MigrationRecord {
  id: string;
  runtimeId: string;
  userId: string;
  workflowId: string | null;
  reason: string;
  sourceHostId: string;
  targetHostId: string | null;
  fromType: string | null;
  toType: string | null;
  status: 'pending' | 'running' | 'completed' | 'failed' | 'cancelled';
  step: string | null;
  error: string | null;
  checkpointMs: number | null;
  transferMs: number | null;
  restoreMs: number | null;
  downtimeMs: number | null;
  frozenMs: number | null;
  archiveBytes: number | null;
  archiveSha256: string | null;
  startedAt: Date;
  completedAt: Date | null;
}

interface MigrationRow {
  id: string;
  runtime_id: string;
  user_id: string;
  workflow_id: string | null;
  reason: string;
  source_host_id: string;
  target_host_id: string | null;
  from_type: string | null;
  to_type: string | null;
  status: MigrationRecord['status'];
  step: string | null;
  error: string | null;
  checkpoint_ms: number | null;
  transfer_ms: number | null;
  restore_ms: number | null;
  downtime_ms: number | null;
  frozen_ms: number | null;
  archive_bytes: string | null;
  archive_sha256: string | null;
  started_at: Date;
  completed_at: Date | null;
}

const migrationFromRow = (r: MigrationRow): MigrationRecord => ({
  id: r.id,
  runtimeId: r.runtime_id,
  userId: r.user_id,
  workflowId: r.workflow_id,
  reason: r.reason,
  sourceHostId: r.source_host_id,
  targetHostId: r.target_host_id,
  fromType: r.from_type,
  toType: r.to_type,
  status: r.status,
  step: r.step,
  error: r.error,
  checkpointMs: r.checkpoint_ms,
  transferMs: r.transfer_ms,
  restoreMs: r.restore_ms,
  downtimeMs: r.downtime_ms,
  frozenMs: r.frozen_ms,
  archiveBytes: r.archive_bytes === null ? null : Number(r.archive_bytes),
  archiveSha256: r.archive_sha256,
  startedAt: r.started_at,
  completedAt: r.completed_at,
});

const notDead = `state NOT IN ('stopped', 'failed')`;

export function createRuntimeStore(pool: pg.Pool) {
  const notify = (userId: string) => pool.query('SELECT pg_notify($1, $2)', [routeChannel, userId]);

  return {
    notifyRouteChange: async (userId: string) => {
      await notify(userId);
    },

    runtimes: {
      /** The user's own runtime that is not stopped or failed (at most one: a unique index says so). */
      async live(userId: string): Promise<RuntimeRecord | undefined> {
        const r = await pool.query<RuntimeRow>(`SELECT * FROM runtimes WHERE user_id = $1 AND kind = 'user' AND ${notDead}`, [userId]);
        return r.rows[0] ? runtimeFromRow(r.rows[0]) : undefined;
      },

      async get(id: string): Promise<RuntimeRecord | undefined> {
        const r = await pool.query<RuntimeRow>('SELECT * FROM runtimes WHERE id = $1', [id]);
        return r.rows[0] ? runtimeFromRow(r.rows[0]) : undefined;
      },

      /** Records a starting runtime unless the user already has a live one; answers the live one either way. */
      async ensure(input: {
        userId: string;
        containerName: string;
        hostId: string;
        port: number;
        address: string;
        tier: string;
        memoryLimitBytes: number;
        cpuLimit: number;
        image: string;
      }): Promise<RuntimeRecord & { created: boolean }> {
        const inserted = await pool.query(
          `INSERT INTO runtimes (user_id, kind, container_name, host_id, port, address, state, tier, memory_limit_bytes, cpu_limit, image)
           VALUES ($1, 'user', $2, $3, $4, $5, 'starting', $6, $7, $8, $9)
           ON CONFLICT (user_id) WHERE kind = 'user' AND ${notDead} DO NOTHING`,
          [input.userId, input.containerName, input.hostId, input.port, input.address, input.tier, input.memoryLimitBytes, input.cpuLimit, input.image],
        );
        const live = await this.live(input.userId);
        if (!live) throw new Error(`runtime of user ${input.userId} was not recorded`);
        return { ...live, created: inserted.rowCount === 1 };
      },

      /** Patches a runtime; moving it to another host (a migration) sets hostId, port, address, tier and limits together. */
      async update(
        id: string,
        patch: { state?: RuntimeState; port?: number; address?: string; hostId?: string; tier?: string; memoryLimitBytes?: number; cpuLimit?: number },
      ): Promise<RuntimeRecord> {
        const r = await pool.query<RuntimeRow>(
          `UPDATE runtimes SET state = COALESCE($2, state), port = COALESCE($3, port), address = COALESCE($4, address),
             host_id = COALESCE($5, host_id), tier = COALESCE($6, tier), memory_limit_bytes = COALESCE($7, memory_limit_bytes),
             cpu_limit = COALESCE($8, cpu_limit), updated_at = now()
           WHERE id = $1 RETURNING *`,
          [id, patch.state ?? null, patch.port ?? null, patch.address ?? null, patch.hostId ?? null, patch.tier ?? null, patch.memoryLimitBytes ?? null, patch.cpuLimit ?? null],
        );
        if (!r.rows[0]) throw new Error(`runtime ${id} is not recorded`);
        await notify(r.rows[0].user_id);
        return runtimeFromRow(r.rows[0]);
      },
    },

    migrations: {
      /** Records a migration as running; a retried call with the same id finds the row it made. */
      async begin(input: {
        id: string;
        runtimeId: string;
        userId: string;
        workflowId: string;
        reason: string;
        sourceHostId: string;
        fromType: string;
        toType: string;
      }): Promise<MigrationRecord> {
        await pool.query(
          `INSERT INTO migrations (id, runtime_id, user_id, workflow_id, reason, source_host_id, from_type, to_type, status, step)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', 'begin') ON CONFLICT (id) DO NOTHING`,
          [input.id, input.runtimeId, input.userId, input.workflowId, input.reason, input.sourceHostId, input.fromType, input.toType],
        );
        const row = await this.get(input.id);
        if (!row) throw new Error(`migration ${input.id} was not recorded`);
        return row;
      },

      async get(id: string): Promise<MigrationRecord | undefined> {
        const r = await pool.query<MigrationRow>('SELECT * FROM migrations WHERE id = $1', [id]);
        return r.rows[0] ? migrationFromRow(r.rows[0]) : undefined;
      },

      async listForUser(userId: string): Promise<MigrationRecord[]> {
        const r = await pool.query<MigrationRow>('SELECT * FROM migrations WHERE user_id = $1 ORDER BY started_at', [userId]);
        return r.rows.map(migrationFromRow);
      },

      /** Where a running migration is: operators read `step` to see what is stuck. */
      async setStep(id: string, patch: { step: string; targetHostId?: string }): Promise<void> {
        await pool.query(`UPDATE migrations SET step = $2, target_host_id = COALESCE($3, target_host_id) WHERE id = $1 AND status = 'running'`, [
          id,
          patch.step,
          patch.targetHostId ?? null,
        ]);
      },

      async complete(id: string, t: { targetHostId: string; checkpointMs: number; transferMs: number; restoreMs: number; downtimeMs: number; frozenMs: number | null; archiveBytes: number; archiveSha256: string }): Promise<void> {
        await pool.query(
          `UPDATE migrations SET status = 'completed', step = 'done', completed_at = now(), target_host_id = $2, checkpoint_ms = $3,
             transfer_ms = $4, restore_ms = $5, downtime_ms = $6, frozen_ms = $7, archive_bytes = $8, archive_sha256 = $9, error = NULL
           WHERE id = $1 AND status IN ('running', 'completed')`,
          [id, t.targetHostId, Math.round(t.checkpointMs), Math.round(t.transferMs), Math.round(t.restoreMs), Math.round(t.downtimeMs), t.frozenMs === null ? null : Math.round(t.frozenMs), t.archiveBytes, t.archiveSha256],
        );
      },

      /** Records what failed, at which step; a completed migration is never marked failed afterwards. */
      async fail(id: string, failure: { step: string; error: string }): Promise<void> {
        await pool.query(`UPDATE migrations SET status = 'failed', step = $2, error = $3, completed_at = now() WHERE id = $1 AND status = 'running'`, [
          id,
          failure.step,
          failure.error.slice(0, 4000),
        ]);
      },
    },

    editors: {
      async live(userId: string): Promise<EditorRecord | undefined> {
        const r = await pool.query<EditorRow>(`SELECT * FROM editors WHERE user_id = $1 AND ${notDead}`, [userId]);
        return r.rows[0] ? editorFromRow(r.rows[0]) : undefined;
      },

      async ensure(input: {
        userId: string;
        runtimeId: string;
        containerName: string;
        hostId: string;
        port: number;
        syncPort: number;
        runtimeHost: string;
        runtimePort: number;
        image: string;
      }): Promise<EditorRecord & { created: boolean }> {
        const inserted = await pool.query(
          `INSERT INTO editors (user_id, runtime_id, container_name, host_id, port, sync_port, runtime_host, runtime_port, image, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'starting')
           ON CONFLICT (user_id) WHERE ${notDead} DO NOTHING`,
          [input.userId, input.runtimeId, input.containerName, input.hostId, input.port, input.syncPort, input.runtimeHost, input.runtimePort, input.image],
        );
        const live = await this.live(input.userId);
        if (!live) throw new Error(`editor of user ${input.userId} was not recorded`);
        return { ...live, created: inserted.rowCount === 1 };
      },

      async update(
        id: string,
        patch: { state?: EditorState; port?: number; syncPort?: number; runtimeId?: string; runtimeHost?: string; runtimePort?: number },
      ): Promise<EditorRecord> {
        const r = await pool.query<EditorRow>(
          `UPDATE editors SET state = COALESCE($2, state), port = COALESCE($3, port), sync_port = COALESCE($4, sync_port),
             runtime_id = COALESCE($5, runtime_id), runtime_host = COALESCE($6, runtime_host), runtime_port = COALESCE($7, runtime_port),
             updated_at = now()
           WHERE id = $1 RETURNING *`,
          [id, patch.state ?? null, patch.port ?? null, patch.syncPort ?? null, patch.runtimeId ?? null, patch.runtimeHost ?? null, patch.runtimePort ?? null],
        );
        if (!r.rows[0]) throw new Error(`editor ${id} is not recorded`);
        await notify(r.rows[0].user_id);
        return editorFromRow(r.rows[0]);
      },
    },
  };
}

export type RuntimeStore = ReturnType<typeof createRuntimeStore>;
