import pg from 'pg';
import type { Logger } from '../lib/logger.js';
import { routeChannel } from '../lib/runtime-store.js';
import { reachableAddressOf } from '../lib/store.js';
import type { HostKind } from '../workflows/contracts/hosts.js';

/**
 * Where each user's editor answers, looked up in PostgreSQL and cached per user. Every write to a
 * user's editor or runtime row sends NOTIFY on `routeChannel`; this table LISTENs and drops that user's
 * entry, so routing follows a restart or a move at once. While the LISTEN connection is down nothing is
 * cached (a missed notification must not pin a stale route).
 */
export interface EditorUpstream {
  host: string;
  port: number;
  state: string;
  /** The runtime port the editor was last told, the only one its `/proxy/<port>/` may reach through the edge. */
  runtimePort: number | null;
}

const cacheTtlMs = 60_000;

export function createRouteTable(opts: { pool: pg.Pool; databaseUrl: string; log: Logger }) {
  const cache = new Map<string, { upstream: EditorUpstream | undefined; until: number }>();
  let listening = false;
  let listener: pg.Client | undefined;
  let closed = false;
  let retryTimer: NodeJS.Timeout | undefined;

  async function listen(delayMs = 0): Promise<void> {
    if (closed) return;
    const client = new pg.Client({ connectionString: opts.databaseUrl, application_name: 'markco-edge-routes' });
    const reconnect = (err?: Error) => {
      if (listener !== client) return;
      listening = false;
      listener = undefined;
      cache.clear();
      if (err) opts.log.warn({ err }, 'route notifications lost; reconnecting');
      client.end().catch(() => undefined);
      const next = Math.min(Math.max(delayMs * 2, 500), 10_000);
      retryTimer = setTimeout(() => void listen(next), next);
      retryTimer.unref();
    };
    listener = client;
    client.on('error', reconnect);
    client.on('end', () => reconnect());
    client.on('notification', (msg) => {
      if (msg.channel === routeChannel && msg.payload) cache.delete(msg.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${routeChannel}`);
      cache.clear();
      listening = true;
    } catch (err) {
      reconnect(err as Error);
    }
  }

  return {
    start: () => listen(),

    async get(userId: string): Promise<EditorUpstream | undefined> {
      const hit = cache.get(userId);
      if (hit && hit.until > Date.now()) return hit.upstream;
      // A runtime that lives in its idle checkpoint makes the route `checkpointed` even while the editor
      // runs: the visit must bring the runtime back, not open an editor whose runtime is gone.
      const r = await opts.pool.query<{ port: number | null; state: string; runtime_port: number | null; host_id: string; kind: HostKind; address: string | null; runtime_state: string | null }>(
        `SELECT e.port, e.state, e.runtime_port, e.host_id, h.kind, h.address, rt.state AS runtime_state FROM editors e JOIN hosts h ON h.id = e.host_id
         LEFT JOIN runtimes rt ON rt.user_id = e.user_id AND rt.kind = 'user' AND rt.state NOT IN ('stopped', 'failed')
         WHERE e.user_id = $1 AND e.state NOT IN ('stopped', 'failed')`,
        [userId],
      );
      const row = r.rows[0];
      const state = row && (row.runtime_state === 'checkpointed' || row.runtime_state === 'restoring') ? 'checkpointed' : row?.state;
      const upstream = row?.port ? { host: reachableAddressOf({ id: row.host_id, kind: row.kind, address: row.address }), port: row.port, state: state!, runtimePort: row.runtime_port } : undefined;
      if (listening) cache.set(userId, { upstream, until: Date.now() + cacheTtlMs });
      return upstream;
    },

    invalidate(userId: string): void {
      cache.delete(userId);
    },

    get listening(): boolean {
      return listening;
    },

    async close(): Promise<void> {
      closed = true;
      clearTimeout(retryTimer);
      const client = listener;
      listener = undefined;
      listening = false;
      await client?.end().catch(() => undefined);
    },
  };
}

export type RouteTable = ReturnType<typeof createRouteTable>;
