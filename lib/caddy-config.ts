import { isIP } from 'node:net';
import type { Config } from './config.js';

/**
 * Caddy in front of the edge (issue 9): the JSON config the edge loads into Caddy through its admin API.
 * The edge owns all routing now (/u/*, /@*, /api/*, /auth/*, /login*, /join/*, /hooks/*, /dashboard ...),
 * so where the seeds split paths across services Caddy has one route: everything to the edge.
 */

export interface CaddyFrontOptions {
  /** Where Caddy's admin API listens (`127.0.0.1:2019`); kept in the loaded config, or a load would move it. */
  adminListen: string;
  /** `host:port` of the edge, as Caddy dials it. */
  edge: string;
  /** The public host name (the hostname of MARKCO_PUBLIC_URL). */
  domain: string;
  /** A domain name served over https: automatic HTTPS on :443 and :80. Otherwise plain HTTP on `httpPort`. */
  https: boolean;
  /** The plain-HTTP port when `https` is false. */
  httpPort: number;
  /** Where Caddy keeps certificates and ACME state; Caddy's default (`$XDG_DATA_HOME/caddy`) when absent. */
  storageDir?: string;
}

/** A name Caddy may get a certificate for: not localhost, not an IP address. */
export function isPublicDomainName(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  return isIP(bare) === 0 && bare !== 'localhost' && !bare.endsWith('.localhost') && bare.includes('.');
}

/**
 * The front from the configuration: the domain and scheme of MARKCO_PUBLIC_URL, the edge's address. Caddy
 * is what browsers reach, so on a plain-HTTP public URL it listens on that URL's port (80 when none), which
 * therefore cannot be the edge's own port on the same address.
 */
export function caddyFrontOptions(config: Pick<Config, 'http'>, adminUrl: string, storageDir?: string): CaddyFrontOptions {
  const publicUrl = new URL(config.http.publicUrl);
  const domain = publicUrl.hostname.replace(/^\[|\]$/g, '');
  const https = publicUrl.protocol === 'https:' && isPublicDomainName(domain);
  const httpPort = publicUrl.port ? Number(publicUrl.port) : 80;
  const edgeOnEveryAddress = config.http.host === '0.0.0.0' || config.http.host === '::';
  // The edge listening on every address is still dialled over loopback: Caddy runs beside it.
  const edgeHost = edgeOnEveryAddress ? '127.0.0.1' : config.http.host;
  const caddyHost = listenHostOf(domain);
  const sharedAddress = edgeOnEveryAddress || caddyHost === undefined || caddyHost === edgeHost;
  if (!https && httpPort === config.http.port && sharedAddress) {
    throw new Error(`Caddy would listen on ${config.http.publicUrl}, the edge's own port ${config.http.port}: give MARKCO_PUBLIC_URL Caddy's port, or MARKCO_PORT another one`);
  }
  return { adminListen: new URL(adminUrl).host, edge: hostPort(edgeHost, config.http.port), domain, https, httpPort, ...(storageDir ? { storageDir } : {}) };
}

/** localhost and loopback names listen on loopback only; an IP on that IP; anything else on every address. */
function listenHostOf(domain: string): string | undefined {
  if (domain === 'localhost' || domain.endsWith('.localhost')) return '127.0.0.1';
  return isIP(domain) === 0 ? undefined : domain;
}

function hostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

export function caddyConfig(o: CaddyFrontOptions): Record<string, unknown> {
  const toEdge = {
    handler: 'reverse_proxy',
    upstreams: [{ dial: o.edge }],
    // Stream every response as it comes (server-sent events, long executes) instead of buffering.
    flush_interval: -1,
    // X-Forwarded-For/-Proto/-Host are set by Caddy itself; with no trusted_proxies it replaces any a
    // client sent, and the edge trusts them only from loopback (api/app.ts trustProxy).
  };
  const listenHost = listenHostOf(o.domain);
  const server = o.https
    ? {
        listen: [':443', ':80'],
        // Host matchers are what make Caddy get certificates (and redirect :80 to https) for these names.
        routes: [{ match: [{ host: [o.domain, `www.${o.domain}`] }], handle: [toEdge], terminal: true }],
      }
    : {
        listen: [listenHost ? hostPort(listenHost, o.httpPort) : `:${o.httpPort}`],
        routes: [{ handle: [toEdge], terminal: true }],
        automatic_https: { disable: true },
      };
  // No request_body limit: the edge enforces its own (1 MiB JSON, editor traffic streamed without one),
  // and Caddy's server timeouts default to none but idle, so upgraded WebSockets are never cut by time.
  return {
    admin: { listen: o.adminListen },
    ...(o.storageDir ? { storage: { module: 'file_system', root: o.storageDir } } : {}),
    apps: { http: { servers: { markco: server } } },
  };
}

/** JSON with object keys sorted: Caddy answers GET /config/ with its keys in its own order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/**
 * Loads `config` into the Caddy whose admin API is at `adminUrl`, unless it already runs exactly that:
 * a reload, even graceful, ends the WebSockets Caddy 2.6 is proxying (docs/runbook.md), so an unchanged
 * config is left alone.
 */
export async function ensureCaddyConfig(adminUrl: string, config: Record<string, unknown>): Promise<'unchanged' | 'loaded'> {
  const base = adminUrl.replace(/\/+$/, '');
  const current = await fetch(`${base}/config/`, { signal: AbortSignal.timeout(10_000) });
  if (!current.ok) throw new Error(`Caddy's admin API at ${base} answered GET /config/ with ${current.status}: ${await current.text()}`);
  if (canonicalJson(await current.json()) === canonicalJson(config)) return 'unchanged';
  const res = await fetch(`${base}/load`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(config),
    // Certificates are obtained after the load; the load itself only provisions.
    signal: AbortSignal.timeout(60_000),
  });
  if (!res.ok) throw new Error(`Caddy refused the config (POST ${base}/load answered ${res.status}): ${await res.text()}`);
  return 'loaded';
}
