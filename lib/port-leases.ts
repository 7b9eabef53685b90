import { randomInt } from 'node:crypto';
import type pg from 'pg';

/**
 * Ports on a host, leased in PostgreSQL so no two containers are given the same one (the seeds drew
 * random ports and never checked) and a retried allocation gets back the lease it already holds.
 */
export const PortPurposes = ['runtime', 'editor', 'editor-sync', 'sandbox'] as const;
export type PortPurpose = (typeof PortPurposes)[number];

export interface PortRange {
  first: number;
  last: number;
}

/** Where each kind of port is drawn from: below Linux's ephemeral range (32768+), which clients use. */
export const portRanges: Record<PortPurpose, PortRange> = {
  editor: { first: 20000, last: 23999 },
  'editor-sync': { first: 24000, last: 27999 },
  runtime: { first: 28000, last: 31999 },
  sandbox: { first: 32000, last: 32767 },
};

export class PortsExhaustedError extends Error {
  constructor(readonly hostId: string, readonly purpose: PortPurpose) {
    super(`no free ${purpose} port left on host ${hostId} (range ${portRanges[purpose].first}-${portRanges[purpose].last})`);
    this.name = 'PortsExhaustedError';
  }
}

export interface PortLeaseStore {
  /**
   * The user's lease for this purpose on this host, made if there is none (not for sandboxes, which have
   * many). `prefer` is tried first: a migrated runtime keeps its port, so the browser's `/proxy/<port>/`
   * URLs keep working.
   */
  lease(input: { hostId: string; userId: string; purpose: Exclude<PortPurpose, 'sandbox'>; avoid?: number[]; prefer?: number }): Promise<number>;
  /**
   * A lease that belongs to one operation or container (`holder`: a sandbox id, a restore's id), made
   * if it has none: a retried step gets the same port back.
   */
  leaseHeld(input: { hostId: string; userId: string; purpose: PortPurpose; holder: string }): Promise<number>;
  /** The held lease becomes the user's own for its purpose (a restored runtime replacing the previous one). */
  promote(input: { hostId: string; port: number }): Promise<void>;
  /** Gives a port back, for example when the host answered that it is in use by something else. */
  release(input: { hostId: string; port: number }): Promise<void>;
  listForUser(userId: string): Promise<{ hostId: string; port: number; purpose: PortPurpose }[]>;
}

const attempts = 50;

export function createPortLeaseStore(pool: pg.Pool): PortLeaseStore {
  const held = async (hostId: string, userId: string, purpose: PortPurpose) =>
    (await pool.query<{ port: number }>('SELECT port FROM port_leases WHERE host_id = $1 AND user_id = $2 AND purpose = $3', [hostId, userId, purpose])).rows[0]?.port;

  return {
    async lease({ hostId, userId, purpose, avoid = [], prefer }) {
      const range = portRanges[purpose];
      for (let i = 0; i < attempts; i++) {
        const existing = await held(hostId, userId, purpose);
        if (existing !== undefined && !avoid.includes(existing)) return existing;
        if (existing !== undefined) await pool.query('DELETE FROM port_leases WHERE host_id = $1 AND port = $2', [hostId, existing]);
        const preferred = i === 0 && prefer !== undefined && prefer >= range.first && prefer <= range.last;
        const candidate = preferred ? prefer : randomInt(range.first, range.last + 1);
        if (avoid.includes(candidate)) continue;
        // Both unique keys can refuse: the port is someone else's, or a concurrent call of this user
        // just leased one for the same purpose (the next round returns that one).
        const inserted = await pool.query<{ port: number }>(
          'INSERT INTO port_leases (host_id, port, user_id, purpose) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING port',
          [hostId, candidate, userId, purpose],
        );
        if (inserted.rows[0]) return inserted.rows[0].port;
      }
      throw new PortsExhaustedError(hostId, purpose);
    },

    async leaseHeld({ hostId, userId, purpose, holder }) {
      const range = portRanges[purpose];
      for (let i = 0; i < attempts; i++) {
        const existing = await pool.query<{ port: number }>('SELECT port FROM port_leases WHERE host_id = $1 AND holder = $2', [hostId, holder]);
        if (existing.rows[0]) return existing.rows[0].port;
        const inserted = await pool.query<{ port: number }>(
          'INSERT INTO port_leases (host_id, port, user_id, purpose, holder) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING port',
          [hostId, randomInt(range.first, range.last + 1), userId, purpose, holder],
        );
        if (inserted.rows[0]) return inserted.rows[0].port;
      }
      throw new PortsExhaustedError(hostId, purpose);
    },

    async promote({ hostId, port }) {
      await pool.query('UPDATE port_leases SET holder = NULL WHERE host_id = $1 AND port = $2', [hostId, port]);
    },

    async release({ hostId, port }) {
      await pool.query('DELETE FROM port_leases WHERE host_id = $1 AND port = $2', [hostId, port]);
    },

    async listForUser(userId) {
      const rows = await pool.query<{ host_id: string; port: number; purpose: PortPurpose }>(
        'SELECT host_id, port, purpose FROM port_leases WHERE user_id = $1 ORDER BY host_id, port',
        [userId],
      );
      return rows.rows.map((r) => ({ hostId: r.host_id, port: r.port, purpose: r.purpose }));
    },
  };
}
