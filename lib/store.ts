import type pg from 'pg';
import { createAccountDeletionStore } from './account-deletion.js';
import { createAccounts } from './accounts.js';
import { createIdentities } from './identities.js';
import { createMembershipStore } from './memberships.js';
import { createPortLeaseStore } from './port-leases.js';
import { createRuntimeStore } from './runtime-store.js';
import { createSnapshotStore } from './snapshot-store.js';
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
  /** The tier (instance type) an EC2 host was launched for. */
  tier: string | null;
  /** Workflow id of the provisionHost run that launched it. */
  launchedBy: string | null;
  /** Workflow id of the migration that took the reservation; the reservation's timeout then leaves it alone. */
  claimedBy: string | null;
  claimedAt: Date | null;
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
  tier: string | null;
  launched_by: string | null;
  claimed_by: string | null;
  claimed_at: Date | null;
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
    tier: r.tier,
    launchedBy: r.launched_by,
    claimedBy: r.claimed_by,
    claimedAt: r.claimed_at,
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

/** What provisionHost records right after RunInstances, before the host is reachable. */
export interface RecordLaunch {
  id: string;
  instanceId: string;
  instanceType: string;
  lifecycle: 'on-demand' | 'spot';
  tier: string;
  userId: string;
  /** The reservation lasts this long from now; a migration that launches for itself claims it at once. */
  reserveForSeconds: number;
  claimedBy?: string | null;
  launchedBy: string;
  sshUser: string;
  hostKey: string;
  address?: string | null;
  gpu?: boolean;
}

/** Host states in which a host exists or is coming up (not being torn down, not given up on). */
export const liveHostStates: HostState[] = ['provisioning', 'booting', 'ready', 'draining'];

/**
 * A migration's claim keeps its host from the reaper for this long even before a runtime lands on it
 * (the migration terminates the host itself when it fails; this only covers a migration that died).
 */
export const claimHoldSeconds = 3600;

/** Runtime states that occupy a host (a checkpointed runtime lives in its archive, not on a host). */
const runtimeOccupies = `r.state NOT IN ('stopped', 'failed', 'checkpointed')`;

/**
 * Why a host must stay, computed in SQL so the reaper's plan and its last-moment re-check agree.
 * $graceParam is the grace period in seconds.
 */
const keepReasonsSql = (graceParam: string) => `array_remove(ARRAY[
    CASE WHEN EXISTS (SELECT 1 FROM runtimes r WHERE r.host_id = h.id AND ${runtimeOccupies}) THEN 'live runtime' END,
    CASE WHEN h.reserved_until > now() THEN 'reserved until ' || to_char(h.reserved_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
    CASE WHEN h.claimed_by IS NOT NULL AND h.claimed_at > now() - make_interval(secs => ${claimHoldSeconds}) THEN 'claimed by ' || h.claimed_by END,
    CASE WHEN h.updated_at > now() - make_interval(secs => ${graceParam}) THEN 'updated within the grace period' END
  ]::text[], NULL)`;

/** A host row as the reaper sees it: whether it is live, and what (if anything) keeps it. */
export interface ReaperHostView {
  host: HostRecord;
  live: boolean;
  keepReasons: string[];
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
  const accounts = createAccounts(pool);
  return {
    pool,
    ...accounts,
    identities: createIdentities(pool, accounts.users),
    ...createRuntimeStore(pool),
    ...createSnapshotStore(pool),
    ...createAccountDeletionStore(pool),
    ...createMembershipStore(pool),
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

      /**
       * Records a launched EC2 instance as a host being provisioned, reserved for its user. A retried
       * launch of the same host id updates the same row (it never moves a host that got further back).
       */
      async recordLaunch(l: RecordLaunch): Promise<HostRecord> {
        const r = await pool.query<HostRow>(
          `INSERT INTO hosts (id, kind, instance_id, instance_type, lifecycle, tier, address, ssh_port, ssh_user, host_key, state,
                              reserved_for, reserved_until, claimed_by, claimed_at, launched_by, gpu)
           VALUES ($1, 'ec2', $2, $3, $4, $5, $6, 22, $7, $8, 'provisioning',
                   $9, now() + make_interval(secs => $10), $11::text, CASE WHEN $11::text IS NULL THEN NULL ELSE now() END, $12, $13)
           ON CONFLICT (id) DO UPDATE SET
             instance_id = EXCLUDED.instance_id, instance_type = EXCLUDED.instance_type, lifecycle = EXCLUDED.lifecycle,
             tier = EXCLUDED.tier, address = COALESCE(EXCLUDED.address, hosts.address), ssh_user = EXCLUDED.ssh_user,
             host_key = EXCLUDED.host_key, launched_by = EXCLUDED.launched_by,
             claimed_by = COALESCE(hosts.claimed_by, EXCLUDED.claimed_by), claimed_at = COALESCE(hosts.claimed_at, EXCLUDED.claimed_at),
             updated_at = now()
           RETURNING *`,
          [l.id, l.instanceId, l.instanceType, l.lifecycle, l.tier, l.address ?? null, l.sshUser, l.hostKey, l.userId, l.reserveForSeconds, l.claimedBy ?? null, l.launchedBy, l.gpu ?? false],
        );
        return hostFromRow(r.rows[0]!);
      },

      /**
       * Takes a host reserved for the user, of that instance type, unexpired and unclaimed: one UPDATE,
       * so of a claim and a release racing for one host exactly one wins. A host this claimant already
       * holds is returned again (a retried claim). Ready hosts first; booting ones only when asked.
       */
      async claimReservation(input: { userId: string; instanceType: string; claimedBy: string; includeBooting: boolean }): Promise<HostRecord | undefined> {
        const states: HostState[] = input.includeBooting ? ['ready', 'booting', 'provisioning'] : ['ready'];
        const r = await pool.query<HostRow>(
          `UPDATE hosts SET claimed_by = $3, claimed_at = COALESCE(claimed_at, now()), updated_at = now()
           WHERE id = (
             SELECT id FROM hosts
             WHERE kind = 'ec2' AND reserved_for = $1 AND instance_type = $2 AND state = ANY($4)
               AND (claimed_by = $3 OR (claimed_by IS NULL AND reserved_until > now()))
             ORDER BY claimed_by = $3 DESC NULLS LAST, state = 'ready' DESC, created_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
           AND (claimed_by = $3 OR (claimed_by IS NULL AND reserved_until > now())) AND state = ANY($4)
           RETURNING *`,
          [input.userId, input.instanceType, input.claimedBy, states],
        );
        return r.rows[0] ? hostFromRow(r.rows[0]) : undefined;
      },

      /** Gives a claim back (a booting host that did not become ready in time); its reservation runs on. */
      async releaseClaim(id: string, claimedBy: string): Promise<boolean> {
        const r = await pool.query(`UPDATE hosts SET claimed_by = NULL, claimed_at = NULL, updated_at = now() WHERE id = $1 AND claimed_by = $2`, [id, claimedBy]);
        return (r.rowCount ?? 0) > 0;
      },

      /** Restarts an unclaimed reservation's clock (pre-provision: the TTL counts from when the host is ready). */
      async renewReservation(id: string, seconds: number): Promise<HostRecord | undefined> {
        const r = await pool.query<HostRow>(
          `UPDATE hosts SET reserved_until = now() + make_interval(secs => $2), updated_at = now()
           WHERE id = $1 AND reserved_for IS NOT NULL AND claimed_by IS NULL AND state = ANY($3)
           RETURNING *`,
          [id, seconds, liveHostStates],
        );
        return r.rows[0] ? hostFromRow(r.rows[0]) : undefined;
      },

      /**
       * Ends an unclaimed reservation: the host goes to `terminating` (no claim can take it any more) and
       * true is returned, so the caller terminates it. False when a migration claimed it first, or it is gone.
       */
      async releaseIfUnclaimed(id: string, userId: string): Promise<boolean> {
        const r = await pool.query(
          `UPDATE hosts SET state = 'terminating', reserved_until = NULL, updated_at = now()
           WHERE id = $1 AND reserved_for = $2 AND claimed_by IS NULL AND state = ANY($3)`,
          [id, userId, liveHostStates],
        );
        return (r.rowCount ?? 0) > 0;
      },

      /** The host's instance is gone. True when this call changed the row (so the event is logged once). */
      async markTerminated(id: string, error?: string): Promise<boolean> {
        const r = await pool.query(
          `UPDATE hosts SET state = 'terminated', terminated_at = COALESCE(terminated_at, now()), reserved_until = NULL,
                  error = COALESCE($2, error), updated_at = now()
           WHERE id = $1 AND state <> 'terminated'`,
          [id, error?.slice(0, 4000) ?? null],
        );
        // Ports on a host that no longer exists are nobody's: a lease whose release never reached it (an
        // undo on an unreachable host) must not outlive it.
        await pool.query(`DELETE FROM port_leases WHERE host_id = $1`, [id]);
        return (r.rowCount ?? 0) > 0;
      },

      /** Whether the host holds a live runtime, an unexpired reservation or a fresh claim. */
      async inUse(id: string): Promise<boolean> {
        const r = await pool.query<{ reasons: string[] }>(`SELECT ${keepReasonsSql('0')} AS reasons FROM hosts h WHERE h.id = $1`, [id]);
        return (r.rows[0]?.reasons.length ?? 0) > 0;
      },

      /**
       * The rows the reaper weighs: those of the given instances, and every live EC2 row (a live row whose
       * instance is missing from EC2 is closed). Keep reasons come from keepReasonsSql.
       */
      async reaperView(instanceIds: string[], graceSeconds: number): Promise<ReaperHostView[]> {
        const r = await pool.query<HostRow & { keep_reasons: string[] }>(
          `SELECT h.*, ${keepReasonsSql('$3')} AS keep_reasons FROM hosts h
           WHERE h.kind = 'ec2' AND (h.instance_id = ANY($1) OR h.state = ANY($2))
           ORDER BY h.created_at`,
          [instanceIds, liveHostStates, graceSeconds],
        );
        return r.rows.map((row) => ({ host: hostFromRow(row), live: liveHostStates.includes(row.state), keepReasons: row.keep_reasons }));
      },

      /**
       * The reaper's last-moment check: moves the host to `terminating` (a terminated row stays so) only
       * if nothing keeps it (the same rule as reaperView), so a claim or a runtime that arrived since the
       * plan wins. False when it is kept.
       */
      async markTerminatingIfIdle(id: string, graceSeconds: number): Promise<boolean> {
        const r = await pool.query(
          `UPDATE hosts SET state = CASE WHEN state = 'terminated' THEN state ELSE 'terminating' END, updated_at = now()
           WHERE id = $1
             AND NOT (state = ANY($2) AND cardinality((SELECT ${keepReasonsSql('$3')} FROM hosts h WHERE h.id = $1)) > 0)`,
          [id, liveHostStates, graceSeconds],
        );
        return (r.rowCount ?? 0) > 0;
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
