import type { FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import { requireOperator } from './auth.js';
import type { PlatformDeps } from './platform.js';

/**
 * `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand. Almost every number is read
 * from PostgreSQL at scrape time (the workflows already record migrations with their phase timings, the
 * events log, hosts and runtimes there), so it survives edge restarts and agrees across several edges; a
 * client library's in-process accumulators would add nothing but a dependency. Only proxy traffic is
 * counted in process, since it never reaches the database.
 *
 * Operators only (the admin token as a bearer, which Prometheus sends with `authorization.credentials`, or
 * an operator's session): the numbers name host ids and instance types, and a second loopback-only
 * listener would be one more port to deploy, firewall and document while the edge's own auth already fits.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

export interface Sample {
  /** Suffix after the family's name (`_bucket`, `_sum`, `_count`), or empty. */
  suffix?: string;
  labels?: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** The text format: HELP and TYPE once per family, then one line per sample. */
export function renderExposition(families: MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${family.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) {
      const labels = Object.entries(sample.labels ?? {});
      const labelText = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}` : '';
      lines.push(`${family.name}${sample.suffix ?? ''}${labelText} ${formatValue(sample.value)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Upper bounds, in seconds, of the migration phase and duration histograms: CRIU phases run from tens of ms to minutes. */
export const secondsBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/**
 * Histogram samples from per-label cumulative bucket counts as SQL computes them (`counts[i]` observations
 * at or below `buckets[i]`), plus the total count and sum.
 */
export function histogramSamples(rows: { labels: Record<string, string>; counts: number[]; count: number; sum: number }[], buckets: number[]): Sample[] {
  const samples: Sample[] = [];
  for (const row of rows) {
    buckets.forEach((le, i) => samples.push({ suffix: '_bucket', labels: { ...row.labels, le: String(le) }, value: row.counts[i] ?? 0 }));
    samples.push({ suffix: '_bucket', labels: { ...row.labels, le: '+Inf' }, value: row.count });
    samples.push({ suffix: '_sum', labels: row.labels, value: row.sum });
    samples.push({ suffix: '_count', labels: row.labels, value: row.count });
  }
  return samples;
}

/** Requests and bytes through `/u/<id>/`, counted in process (the proxy records nothing in PostgreSQL). */
export function createProxyTraffic() {
  const httpRequests = new Map<string, number>();
  const upgrades = new Map<string, number>();
  const bytes = { up: 0, down: 0 };
  const bump = (counts: Map<string, number>, key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);
  return {
    /** One forwarded HTTP exchange: how it ended and its body bytes each way (forwardHttp's outcome and onBytes). */
    http(outcome: string, up: number, down: number): void {
      bump(httpRequests, outcome);
      bytes.up += up;
      bytes.down += down;
    },
    /** One WebSocket upgrade handed to the editor, by outcome (opened, refused, upstream-error, client-aborted). */
    upgrade(outcome: string): void {
      bump(upgrades, outcome);
    },
    families(): MetricFamily[] {
      return [
        {
          name: 'markco_proxy_http_requests_total',
          help: 'HTTP requests forwarded to users\' editors through /u/<id>/, by outcome.',
          type: 'counter',
          samples: [...httpRequests].map(([outcome, value]) => ({ labels: { outcome }, value })),
        },
        {
          name: 'markco_proxy_http_bytes_total',
          help: 'Body bytes of forwarded HTTP requests: up (client to editor) and down (editor to client).',
          type: 'counter',
          samples: [
            { labels: { direction: 'up' }, value: bytes.up },
            { labels: { direction: 'down' }, value: bytes.down },
          ],
        },
        {
          name: 'markco_proxy_websocket_upgrades_total',
          help: 'WebSocket upgrades through /u/<id>/ passed on to the editor, by outcome.',
          type: 'counter',
          samples: [...upgrades].map(([outcome, value]) => ({ labels: { outcome }, value })),
        },
      ];
    },
  };
}

export type ProxyTraffic = ReturnType<typeof createProxyTraffic>;

const migrationPhases = ['checkpoint', 'transfer', 'restore', 'downtime'] as const;

/** SQL for cumulative bucket counts of `expr` (milliseconds) against `secondsBuckets`. */
function bucketColumns(expr: string): string {
  return `ARRAY[${secondsBuckets.map((le) => `count(*) FILTER (WHERE ${expr} <= ${le * 1000})`).join(', ')}]::int[] AS counts`;
}

/** Everything the workflows recorded in PostgreSQL, as metric families. */
export async function databaseFamilies(pool: pg.Pool): Promise<MetricFamily[]> {
  type Bucketed = { counts: number[]; count: number; sum_ms: string | null };
  const [migrations, phases, durations, events, hosts, runtimes, editors] = await Promise.all([
    pool.query<{ status: string; reason: string; n: number }>(`SELECT status, reason, count(*)::int AS n FROM migrations GROUP BY status, reason ORDER BY status, reason`),
    Promise.all(
      migrationPhases.map((phase) =>
        pool.query<Bucketed>(
          `SELECT ${bucketColumns(`${phase}_ms`)}, count(*)::int AS count, sum(${phase}_ms)::text AS sum_ms FROM migrations WHERE ${phase}_ms IS NOT NULL`,
        ),
      ),
    ),
    pool.query<Bucketed & { status: string }>(
      `SELECT status, ${bucketColumns('d')}, count(*)::int AS count, sum(d)::text AS sum_ms
         FROM (SELECT status, extract(epoch FROM completed_at - started_at) * 1000 AS d FROM migrations WHERE completed_at IS NOT NULL) m
        GROUP BY status ORDER BY status`,
    ),
    pool.query<{ type: string; source: string; n: number }>(`SELECT type, source, count(*)::int AS n FROM events GROUP BY type, source ORDER BY type, source`),
    pool.query<{ kind: string; state: string; n: number }>(`SELECT kind, state, count(*)::int AS n FROM hosts GROUP BY kind, state ORDER BY kind, state`),
    pool.query<{ kind: string; state: string; n: number }>(`SELECT kind, state, count(*)::int AS n FROM runtimes GROUP BY kind, state ORDER BY kind, state`),
    pool.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM editors GROUP BY state ORDER BY state`),
  ]);
  const seconds = (ms: string | null) => (ms === null ? 0 : Number(ms) / 1000);
  return [
    {
      name: 'markco_migrations',
      help: 'Runtime migrations recorded, by status (pending, running, completed, failed, cancelled) and reason.',
      type: 'gauge',
      samples: migrations.rows.map((r) => ({ labels: { status: r.status, reason: r.reason }, value: r.n })),
    },
    {
      name: 'markco_migration_phase_seconds',
      help: 'Migration phase timings (checkpoint, transfer, restore; downtime is the time the runtime was frozen).',
      type: 'histogram',
      samples: histogramSamples(
        phases.map((result, i) => {
          const row = result.rows[0]!;
          return { labels: { phase: migrationPhases[i]! }, counts: row.counts, count: row.count, sum: seconds(row.sum_ms) };
        }),
        secondsBuckets,
      ),
    },
    {
      name: 'markco_migration_duration_seconds',
      help: 'Whole migrations from start to end, by final status: completed ones are durations, failed ones the time to fail.',
      type: 'histogram',
      samples: histogramSamples(
        durations.rows.map((r) => ({ labels: { status: r.status }, counts: r.counts, count: r.count, sum: seconds(r.sum_ms) })),
        secondsBuckets,
      ),
    },
    {
      name: 'markco_events_total',
      help: 'Entries in the events log (operations started, finished and failed, resource events), by type and source.',
      type: 'counter',
      samples: events.rows.map((r) => ({ labels: { type: r.type, source: r.source }, value: r.n })),
    },
    {
      name: 'markco_hosts',
      help: 'Hosts by kind (base, ec2) and state.',
      type: 'gauge',
      samples: hosts.rows.map((r) => ({ labels: { kind: r.kind, state: r.state }, value: r.n })),
    },
    {
      name: 'markco_runtimes',
      help: 'Runtimes by kind (user, sandbox) and state.',
      type: 'gauge',
      samples: runtimes.rows.map((r) => ({ labels: { kind: r.kind, state: r.state }, value: r.n })),
    },
    {
      name: 'markco_editors',
      help: 'Editors by state.',
      type: 'gauge',
      samples: editors.rows.map((r) => ({ labels: { state: r.state }, value: r.n })),
    },
  ];
}

export const expositionContentType = 'text/plain; version=0.0.4; charset=utf-8';

export function metricsRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    app.get('/metrics', { preHandler: requireOperator(deps.auth, deps.adminConfigured), logLevel: 'warn' }, async (_req, reply) => {
      const families = [...(await databaseFamilies(deps.store.pool)), ...deps.proxyTraffic.families()];
      return reply.header('content-type', expositionContentType).header('cache-control', 'no-store').send(renderExposition(families));
    });
  };
}
