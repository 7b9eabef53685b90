import type pg from 'pg';
import { createAccounts } from './accounts.js';
import { createPortLeaseStore } from './port-leases.js';
import { createRuntimeStore } from './runtime-store.js';
import type { HostConnection, HostFacts, HostKind, HostState } from '../workflows/contracts/hosts.js';

/**
 * Queries over the control plane's tables. The edge reads state through this module and never imports
 * activities; activities write through it.
 */
export interface HostRecord {
  id: string;
  kind: HostKind;
  instanceId: string | null;
  instanceType: string | null;
  lifecycle: 'on-demand' | 'spot' | null;
  address: string | null;
  sshPort: number;
  sshUser: string | null;
  hostKey: string | null;
  state: HostState;
  reservedFor: string | null;
  reservedUntil: Date | null;
  gpu: boolean;
  memoryBytes: number | null;
  cpus: number | null;
  facts: Partial<HostFacts>;
  error: string | null;
  createdAt: Date;
  updatedAt: Date;
  terminatedAt: Date | null;
}

interface HostRow {
  id: string;
  kind: HostKind;
  instance_id: string | null;
  instance_type: string | null;
  lifecycle: 'on-demand' | 'spot' | null;
  address: string | null;
  ssh_port: number;
  ssh_user: string | null;
  host_key: string | null;
  state: HostState;
  reserved_for: string | null;
  reserved_until: Date | null;
  gpu: boolean;
  memory_bytes: string | null;
  cpus: number | null;
  facts: Partial<HostFacts>;
  error: string | null;
  created_at: Date;
  updated_at: Date;
  terminated_at: Date | null;
}

function hostFromRow(r: HostRow): HostRecord {
  return {
    id: r.id,
    kind: r.kind,
    instanceId: r.instance_id,
    instanceType: r.instance_type,
    lifecycle: r.lifecycle,
    address: r.address,
    sshPort: r.ssh_port,
    sshUser: r.ssh_user,
    hostKey: r.host_key,
    state: r.state,
    reservedFor: r.reserved_for,
    reservedUntil: r.reserved_until,
    gpu: r.gpu,
    memoryBytes: r.memory_bytes === null ? null : Number(r.memory_bytes),
    cpus: r.cpus,
    facts: r.facts,
    error: r.error,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    terminatedAt: r.terminated_at,
  };
}

/** How to reach a recorded host, in the shape the host-access layer takes. */
export function connectionOf(h: HostRecord): HostConnection {
  if (!h.address) throw new Error(`host ${h.id} has no address recorded`);
  return {
    hostId: h.id,
    kind: h.kind,
    address: h.address,
    sshPort: h.sshPort,
    ...(h.sshUser ? { sshUser: h.sshUser } : {}),
    ...(h.hostKey ? { hostKey: h.hostKey } : {}),
    sudo: h.kind === 'ec2' && h.sshUser !== null && h.sshUser !== 'root',
  };
}

/**
 * Where the control plane (the worker, the edge, editors on the base server) reaches a port published
 * on this host: loopback on the base server, where containers publish on 127.0.0.1; the host's address
 * elsewhere.
 */
export function reachableAddressOf(h: Pick<HostRecord, 'id' | 'kind' | 'address'>): string {
  if (h.kind === 'base') return '127.0.0.1';
  if (!h.address) throw new Error(`host ${h.id} has no address recorded`);
  return h.address;
}

export interface UpsertHost {
  id: string;
  kind: HostKind;
  address: string;
  state: HostState;
  sshPort?: number;
  sshUser?: string | null;
  hostKey?: string | null;
  instanceId?: string | null;
  instanceType?: string | null;
  gpu?: boolean;
}

export interface EventInput {
  type: string;
  source: string;
  userId?: string | null;
  runtimeId?: string | null;
  hostId?: string | null;
  workflowId?: string | null;
  payload?: Record<string, unknown>;
}

export interface EventRecord {
  id: number;
  at: Date;
  type: string;
  source: string;
  userId: string | null;
  runtimeId: string | null;
  hostId: string | null;
  workflowId: string | null;
  payload: Record<string, unknown>;
}

export function createStore(pool: pg.Pool) {
  return {
    pool,
    ...createAccounts(pool),
    ...createRuntimeStore(pool),
    ports: createPortLeaseStore(pool),
    hosts: {
      async get(id: string): Promise<HostRecord | undefined> {
        const r = await pool.query<HostRow>('SELECT * FROM hosts WHERE id = $1', [id]);
        return r.rows[0] ? hostFromRow(r.rows[0]) : undefined;
      },

      async list(filter: { states?: HostState[] } = {}): Promise<HostRecord[]> {
        const r = filter.states
          ? await pool.query<HostRow>('SELECT * FROM hosts WHERE state = ANY($1) ORDER BY created_at', [filter.states])
          : await pool.query<HostRow>('SELECT * FROM hosts ORDER BY created_at');
        return r.rows.map(hostFromRow);
      },

      /** Creates the row, or updates how to reach the host; the state moves as given. */
      async upsert(h: UpsertHost): Promise<HostRecord> {
        const r = await pool.query<HostRow>(
          `INSERT INTO hosts (id, kind, address, state, ssh_port, ssh_user, host_key, instance_id, instance_type, gpu, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)
           ON CONFLICT (id) DO UPDATE SET
             kind = EXCLUDED.kind, address = EXCLUDED.address, state = EXCLUDED.state,
             ssh_port = EXCLUDED.ssh_port, ssh_user = EXCLUDED.ssh_user, host_key = EXCLUDED.host_key,
             instance_id = COALESCE(EXCLUDED.instance_id, hosts.instance_id),
             instance_type = COALESCE(EXCLUDED.instance_type, hosts.instance_type),
             gpu = EXCLUDED.gpu, error = NULL, terminated_at = NULL, updated_at = now()
           RETURNING *`,
          [h.id, h.kind, h.address, h.state, h.sshPort ?? 22, h.sshUser ?? null, h.hostKey ?? null, h.instanceId ?? null, h.instanceType ?? null, h.gpu ?? false],
        );
        return hostFromRow(r.rows[0]!);
      },

      async markReady(id: string, facts: HostFacts): Promise<HostRecord> {
        const r = await pool.query<HostRow>(
          `UPDATE hosts SET state = 'ready', facts = $2, memory_bytes = $3, cpus = $4, error = NULL, updated_at = now()
           WHERE id = $1 RETURNING *`,
          [id, JSON.stringify(facts), facts.memoryBytes, facts.cpus],
        );
        if (!r.rows[0]) throw new Error(`host ${id} is not recorded`);
        return hostFromRow(r.rows[0]);
      },

      async markFailed(id: string, error: string): Promise<void> {
        await pool.query(`UPDATE hosts SET state = 'failed', error = $2, updated_at = now() WHERE id = $1`, [id, error.slice(0, 4000)]);
      },
    },

    events: {
      /**
       * Appends to the log. A reference to a row that does not exist (a host whose registration failed
       * before it was recorded, a deleted user) is kept in the payload instead, so logging never fails.
       */
      async append(e: EventInput): Promise<number> {
        const r = await pool.query<{ id: string }>(
          `INSERT INTO events (type, source, user_id, runtime_id, host_id, workflow_id, payload)
           SELECT $1, $2, u.id, rt.id, h.id, $6,
                  $7::jsonb || jsonb_strip_nulls(jsonb_build_object(
                    'unrecordedUserId', CASE WHEN u.id IS NULL THEN $3::uuid END,
                    'unrecordedRuntimeId', CASE WHEN rt.id IS NULL THEN $4::uuid END,
                    'unrecordedHostId', CASE WHEN h.id IS NULL THEN $5::text END))
           FROM (SELECT 1) AS one
           LEFT JOIN users u ON u.id = $3::uuid
           LEFT JOIN runtimes rt ON rt.id = $4::uuid
           LEFT JOIN hosts h ON h.id = $5::text
           RETURNING id`,
          [e.type, e.source, e.userId ?? null, e.runtimeId ?? null, e.hostId ?? null, e.workflowId ?? null, JSON.stringify(e.payload ?? {})],
        );
        return Number(r.rows[0]!.id);
      },

      async recent(filter: { hostId?: string; userId?: string; limit?: number } = {}): Promise<EventRecord[]> {
        const r = await pool.query<{
          id: string;
          at: Date;
          type: string;
          source: string;
          user_id: string | null;
          runtime_id: string | null;
          host_id: string | null;
          workflow_id: string | null;
          payload: Record<string, unknown>;
        }>(
          `SELECT * FROM events
           WHERE ($1::text IS NULL OR host_id = $1) AND ($2::uuid IS NULL OR user_id = $2)
           ORDER BY id DESC LIMIT $3`,
          [filter.hostId ?? null, filter.userId ?? null, filter.limit ?? 100],
        );
        return r.rows.map((row) => ({
          id: Number(row.id),
          at: row.at,
          type: row.type,
          source: row.source,
          userId: row.user_id,
          runtimeId: row.runtime_id,
          hostId: row.host_id,
          workflowId: row.workflow_id,
          payload: row.payload,
        }));
      },
    },
  };
}

export type Store = ReturnType<typeof createStore>;
