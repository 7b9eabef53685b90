// editor-lite: our own small editor server. It implements the part of the mrmd-server cloud-mode editor
// contract the platform relies on (../shared/SEED-CONTRACTS.md §6): /health, /api/user/me,
// /api/runtime(/update-port), /api/project/sync, the /proxy/:port HTTP proxy to the MRP runtime, the
// /events bus, the /sync/:port/:path WebSocket relay, and a y-websocket (Yjs) server in the same process.
//
// It is bundled by esbuild into one CommonJS file, so: no top-level await and no import.meta here.

import http from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
// @ts-expect-error -- y-websocket ships no type declarations for its server helper (bin/utils.js, CommonJS).
import { docs as untypedYjsDocs, setupWSConnection as untypedSetupWSConnection } from 'y-websocket/bin/utils';
import { APP_JS, renderPage } from './page.js';

const setupWSConnection = untypedSetupWSConnection as (conn: WebSocket, req: http.IncomingMessage) => void;
// y-websocket keeps every document in this module-level map (in memory, for the life of the process).
const yjsDocs = untypedYjsDocs as Map<string, { destroy(): void }>;

export const VERSION = '0.1.0';

export interface CloudUser {
  id?: string | null;
  name?: string | null;
  email?: string | null;
  avatarUrl?: string | null;
  plan?: string | null;
}

export interface EditorLiteOptions {
  /** HTTP port; 0 picks a free one (the real one is returned). */
  port: number;
  /** Bind address of the HTTP server. Default 127.0.0.1. */
  host?: string;
  projectDir: string;
  /** CLOUD_MODE=1. Cloud mode proper (update-port) also needs a runtime port, as in mrmd-server. */
  cloudMode?: boolean;
  /** RUNTIME_PORT: the MRP runtime; the only port /proxy forwards to. */
  runtimePort?: number;
  /** RUNTIME_HOST. Default 127.0.0.1. */
  runtimeHost?: string;
  /** BASE_PATH, e.g. /u/<uid>/. Normalised to start and end with '/'. */
  basePath?: string;
  /** Port of the in-process Yjs server on 127.0.0.1; 0 or absent picks a free one. */
  syncPort?: number;
  cloudUser?: CloudUser;
  /** Receives one object per notable event. Default: one JSON line on stdout. */
  log?: (entry: Record<string, unknown>) => void;
}

export interface EditorLite {
  port: number;
  syncPort: number;
  close(): Promise<void>;
}

const HEARTBEAT_MS = 30_000;
const MAX_JSON_BODY_BYTES = 1024 * 1024;
// Relay backpressure: stop reading a side while the other side has this much unsent, resume below the low mark.
const RELAY_HIGH_WATER_BYTES = 4 * 1024 * 1024;
const RELAY_LOW_WATER_BYTES = 1024 * 1024;

// RFC 7230 §6.1 hop-by-hop headers; never forwarded by a proxy. `host` is set by the upstream request itself,
// and `expect` is answered by our own server (node sends 100-continue), so neither is forwarded either.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export function normaliseBasePath(basePath: string | undefined): string {
  let path = (basePath ?? '').trim() || '/';
  if (!path.startsWith('/')) path = `/${path}`;
  if (!path.endsWith('/')) path = `${path}/`;
  return path;
}

function defaultLog(entry: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

// mrmd's default runtime host is 'localhost'; node may resolve it to ::1 while runtimes listen on IPv4 only.
function connectableHost(host: string): string {
  return host === 'localhost' ? '127.0.0.1' : host;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

function sendText(res: http.ServerResponse, contentType: string, text: string): void {
  res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

class BadRequest extends Error {}

async function readJsonBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY_BYTES) throw new BadRequest(`body larger than ${MAX_JSON_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequest('body is not valid JSON');
  }
}

function headerTokens(value: string | string[] | undefined): Set<string> {
  const joined = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(joined.split(',').map((token) => token.trim().toLowerCase()).filter(Boolean));
}

/** Request headers for the runtime: everything but hop-by-hop ones (including those named in Connection) and host. */
function upstreamRequestHeaders(req: http.IncomingMessage): http.OutgoingHttpHeaders {
  const dropped = new Set([...HOP_BY_HOP, ...headerTokens(req.headers.connection), 'host', 'expect']);
  const headers: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !dropped.has(name)) headers[name] = value;
  }
  // A body without content-length arrived chunked; re-chunk it, or node would send it unframed for methods
  // such as DELETE that are not chunked by default.
  if (req.headers['transfer-encoding'] !== undefined && req.headers['content-length'] === undefined) {
    headers['transfer-encoding'] = 'chunked';
  }
  return headers;
}

/** Response headers for the browser, from the raw list so repeated headers (set-cookie, …) survive. */
function copyResponseHeaders(upstream: http.IncomingMessage, res: http.ServerResponse): void {
  const dropped = new Set([...HOP_BY_HOP, ...headerTokens(upstream.headers.connection)]);
  const byName = new Map<string, { name: string; values: string[] }>();
  for (let i = 0; i + 1 < upstream.rawHeaders.length; i += 2) {
    const name = upstream.rawHeaders[i] as string;
    const value = upstream.rawHeaders[i + 1] as string;
    const key = name.toLowerCase();
    if (dropped.has(key)) continue;
    const entry = byName.get(key) ?? { name, values: [] };
    entry.values.push(value);
    byName.set(key, entry);
  }
  for (const { name, values } of byName.values()) res.setHeader(name, values.length === 1 ? (values[0] as string) : values);
}

// Close codes that may be sent in a close frame (1005/1006/1015 are reserved for reporting only).
function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/** Forwards frames from one socket to the other, keeping text/binary, pausing the reader while the writer is backed up. */
function forwardFrames(from: WebSocket, to: WebSocket): void {
  from.on('message', (data: RawData, isBinary: boolean) => {
    if (to.readyState !== WebSocket.OPEN) return;
    to.send(data, { binary: isBinary }, () => {
      if (from.isPaused && to.bufferedAmount < RELAY_LOW_WATER_BYTES) from.resume();
    });
    if (to.bufferedAmount > RELAY_HIGH_WATER_BYTES) from.pause();
  });
  from.on('close', (code: number, reason: Buffer) => {
    to.resume(); // a paused socket would never read the peer's close frame
    if (to.readyState === WebSocket.OPEN) {
      if (isSendableCloseCode(code)) to.close(code, reason);
      else to.close();
    } else if (to.readyState === WebSocket.CONNECTING) {
      to.terminate();
    }
  });
  from.on('error', () => to.terminate());
}

function rejectUpgrade(socket: Duplex, status: number, reason: string, body: unknown): void {
  const payload = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
  );
}

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

export async function startEditorLite(opts: EditorLiteOptions): Promise<EditorLite> {
  const log = opts.log ?? defaultLog;
  const host = opts.host || '127.0.0.1';
  const basePath = normaliseBasePath(opts.basePath);
  const cloudMode = opts.cloudMode === true;
  const cloudUser = opts.cloudUser ?? {};
  // The runtime address changes after a migration (update-port); /proxy always reads it from here.
  const runtime = { port: opts.runtimePort ?? 0, host: opts.runtimeHost || '127.0.0.1' };
  // As in mrmd-server: Python goes to the cloud runtime only with CLOUD_MODE=1 *and* a runtime port.
  const cloudRuntime = cloudMode && runtime.port > 0;

  // The Yjs server "in the container": y-websocket's own connection handler on loopback only; the browser
  // reaches it through /sync/<syncPort>/<doc>.
  const yjsHttp = http.createServer((_req, res) => sendJson(res, 404, { error: 'y-websocket server: WebSocket only' }));
  const yjsWss = new WebSocketServer({ server: yjsHttp });
  const servedDocNames = new Set<string>();
  // ws re-emits the http server's errors (a taken port) on the WebSocketServer; listen() reports those.
  yjsWss.on('error', () => undefined);
  yjsWss.on('connection', (conn, req) => {
    conn.on('error', () => conn.terminate()); // setupWSConnection adds no error listener: a bad frame would crash us
    servedDocNames.add((req.url ?? '/').slice(1).split('?')[0] ?? ''); // setupWSConnection's own doc name rule
    setupWSConnection(conn, req);
  });
  const syncPort = await listen(yjsHttp, opts.syncPort ?? 0, '127.0.0.1');

  const eventsWss = new WebSocketServer({ noServer: true });
  const relayWss = new WebSocketServer({ noServer: true });
  // No keep-alive to the runtime: a pooled socket can outlive a checkpoint/restore or a migration of the
  // runtime and fail the next request; a fresh connection per request (loopback or LAN) is cheap.
  const runtimeAgent = new http.Agent({ keepAlive: false });

  function broadcast(event: string, data: unknown): void {
    const message = JSON.stringify({ event, data });
    for (const client of eventsWss.clients) if (client.readyState === WebSocket.OPEN) client.send(message);
  }

  eventsWss.on('connection', (ws) => {
    ws.on('error', () => ws.terminate());
    ws.send(JSON.stringify({ event: 'connected', data: { message: 'Connected to mrmd-server events' } }));
  });

  // Ping every events and relay client; one that has not answered the previous ping is gone.
  const answeredPing = new WeakSet<WebSocket>();
  const markAlive = (ws: WebSocket) => {
    answeredPing.add(ws);
    ws.on('pong', () => answeredPing.add(ws));
  };
  eventsWss.on('connection', markAlive);
  relayWss.on('connection', markAlive);
  const heartbeat = setInterval(() => {
    for (const ws of [...eventsWss.clients, ...relayWss.clients]) {
      if (!answeredPing.has(ws)) {
        ws.terminate();
        continue;
      }
      answeredPing.delete(ws);
      ws.ping();
    }
  }, HEARTBEAT_MS);
  heartbeat.unref();

  function userInfo() {
    return {
      id: cloudUser.id || null,
      name: cloudUser.name || null,
      email: cloudUser.email || null,
      avatar_url: cloudUser.avatarUrl || null,
      plan: cloudUser.plan || 'free',
    };
  }

  async function updateRuntimePort(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body: unknown;
    try {
      body = await readJsonBody(req);
    } catch (err) {
      sendJson(res, 400, { error: errorMessage(err) });
      return;
    }
    const { port, host: newHost } = (typeof body === 'object' && body !== null ? body : {}) as { port?: unknown; host?: unknown };
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      sendJson(res, 400, { error: 'port (integer 1-65535) required' });
      return;
    }
    if (newHost !== undefined && newHost !== null && typeof newHost !== 'string') {
      sendJson(res, 400, { error: 'host must be a string' });
      return;
    }
    if (!cloudRuntime) {
      sendJson(res, 400, { error: 'Not in cloud mode' });
      return;
    }
    const oldPort = runtime.port;
    const oldHost = runtime.host;
    runtime.port = port;
    // As mrmd-server's CloudSessionService: an absent or empty host keeps the current one.
    if (newHost) runtime.host = newHost;
    log({ event: 'update-port', oldPort, newPort: runtime.port, oldHost, newHost: runtime.host });
    broadcast('runtime-changed', { port: runtime.port, host: runtime.host });
    sendJson(res, 200, { success: true, oldPort, newPort: runtime.port, oldHost, newHost: runtime.host, sessionsUpdated: 0 });
  }

  /** Streams the request to the runtime and the answer back, chunk by chunk (SSE), with no timeout. */
  function proxyToRuntime(req: http.IncomingMessage, res: http.ServerResponse, pathAndQuery: string): void {
    const target = { host: connectableHost(runtime.host), port: runtime.port };
    const upstreamReq = http.request({
      ...target,
      method: req.method,
      path: pathAndQuery,
      headers: upstreamRequestHeaders(req),
      agent: runtimeAgent,
    });
    // The browser went away (or the answer is complete): stop talking to the runtime.
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    upstreamReq.on('error', (err) => {
      log({ event: 'proxy-upstream-error', target: `${target.host}:${target.port}`, path: pathAndQuery, error: errorMessage(err) });
      if (!res.headersSent) sendJson(res, 502, { error: `Proxy error: ${errorMessage(err)}` });
      else res.destroy();
    });
    upstreamReq.on('response', (upstreamRes) => {
      if (res.destroyed) {
        upstreamRes.destroy();
        return;
      }
      res.statusCode = upstreamRes.statusCode ?? 502;
      copyResponseHeaders(upstreamRes, res);
      res.flushHeaders(); // an SSE client sees the stream open before the first event
      pipeline(upstreamRes, res, () => undefined);
    });
    req.on('error', () => upstreamReq.destroy()); // the browser aborted an upload
    req.pipe(upstreamReq);
  }

  async function handleRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const method = req.method ?? 'GET';
    const { pathname } = new URL(rawUrl, 'http://editor.invalid');

    // Matched on the raw URL so the runtime gets the path and query exactly as the browser sent them.
    const proxyMatch = /^\/proxy\/([^/?#]*)([^?#]*)(\?[^#]*)?/.exec(rawUrl);
    if (proxyMatch) {
      const requestedPort = proxyMatch[1] ?? '';
      // Unlike mrmd-server (any 127.0.0.1 port): this editor shares the host network, so only the runtime.
      if (runtime.port === 0 || requestedPort !== String(runtime.port)) {
        const allowed = runtime.port === 0 ? 'none (no runtime configured)' : `only the runtime port ${runtime.port}`;
        sendJson(res, 403, { error: `proxy to port ${requestedPort} is not allowed: ${allowed}` });
        return;
      }
      proxyToRuntime(req, res, `${proxyMatch[2] || '/'}${proxyMatch[3] ?? ''}`);
      return;
    }

    const route = `${method} ${pathname}`;
    switch (route) {
      case 'GET /health':
        sendJson(res, 200, { status: 'ok', version: VERSION });
        return;
      case 'GET /api/user/me':
        if (!cloudMode) sendJson(res, 404, { error: 'Not in cloud mode' });
        else sendJson(res, 200, userInfo());
        return;
      case 'GET /api/runtime':
        sendJson(res, 200, { port: runtime.port || null, host: runtime.host, cloud: cloudRuntime });
        return;
      case 'POST /api/runtime/update-port':
        await updateRuntimePort(req, res);
        return;
      case 'GET /api/project/sync':
        sendJson(res, 200, { port: syncPort });
        return;
      case 'GET /':
      case 'GET /index.html':
        sendText(
          res,
          'text/html; charset=utf-8',
          renderPage({
            basePath,
            userName: cloudMode ? userInfo().name : null,
            runtimeAddress: runtime.port ? `${runtime.host}:${runtime.port}` : '(none)',
          }),
        );
        return;
      case 'GET /app.js':
        sendText(res, 'text/javascript; charset=utf-8', APP_JS);
        return;
      default:
        sendJson(res, 404, { error: 'not found', message: `no route for ${method} ${pathname}` });
    }
  }

  const server = http.createServer((req, res) => {
    handleRequest(req, res).catch((err: unknown) => {
      log({ event: 'request-error', method: req.method, url: req.url, error: errorMessage(err) });
      if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
      else res.destroy();
    });
  });
  // Proxied uploads and executions may take as long as they take (node's default is 5 minutes).
  server.requestTimeout = 0;

  /** /sync/<syncPort>/<doc>: connect to the Yjs server first, and only then accept the browser (as mrmd-server). */
  function relaySync(req: http.IncomingMessage, socket: Duplex, head: Buffer, target: string): void {
    const upstream = new WebSocket(target, { perMessageDeflate: false });
    let opened = false;
    let accepted = false;
    // The browser left while we were connecting, or its upgrade request was invalid: drop the upstream too.
    socket.once('close', () => {
      if (!accepted) upstream.terminate();
    });
    upstream.on('error', (err) => {
      if (opened) return; // forwardFrames handles errors once the pair is linked
      log({ event: 'sync-upstream-error', target, error: errorMessage(err) });
      socket.destroy(); // the browser sees the upgrade fail, as with mrmd-server
    });
    upstream.once('open', () => {
      opened = true;
      if (socket.destroyed) {
        upstream.terminate();
        return;
      }
      upstream.pause(); // hold the Yjs server's first frames until the browser side is wired
      relayWss.handleUpgrade(req, socket, head, (client) => {
        accepted = true;
        relayWss.emit('connection', client, req);
        forwardFrames(client, upstream);
        forwardFrames(upstream, client);
        upstream.resume();
      });
    });
  }

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://editor.invalid');
    if (url.pathname === '/events') {
      eventsWss.handleUpgrade(req, socket, head, (ws) => eventsWss.emit('connection', ws, req));
      return;
    }
    const syncMatch = /^\/sync\/(\d+)\/(.+)$/.exec(url.pathname);
    if (syncMatch) {
      if (syncMatch[1] !== String(syncPort)) {
        rejectUpgrade(socket, 403, 'Forbidden', { error: `sync to port ${syncMatch[1]} is not allowed: only ${syncPort}` });
        return;
      }
      relaySync(req, socket, head, `ws://127.0.0.1:${syncPort}/${syncMatch[2]}${url.search}`);
      return;
    }
    rejectUpgrade(socket, 404, 'Not Found', { error: 'not found', message: `no WebSocket route for ${url.pathname}` });
  });

  let port: number;
  try {
    port = await listen(server, opts.port, host);
  } catch (err) {
    yjsWss.close();
    yjsHttp.close();
    throw err;
  }

  log({
    event: 'start',
    version: VERSION,
    host,
    port,
    syncPort,
    basePath,
    projectDir: opts.projectDir,
    cloudMode,
    runtime: runtime.port ? `${runtime.host}:${runtime.port}` : null,
  });

  async function close(): Promise<void> {
    clearInterval(heartbeat);
    for (const wss of [eventsWss, relayWss, yjsWss]) {
      for (const ws of wss.clients) ws.terminate();
    }
    await Promise.all(
      [eventsWss, relayWss, yjsWss].map((wss) => new Promise<void>((resolve) => wss.close(() => resolve()))),
    );
    await Promise.all(
      [server, yjsHttp].map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    runtimeAgent.destroy();
    // Each document holds an awareness timer; drop the ones this editor served so nothing outlives close().
    for (const name of servedDocNames) {
      yjsDocs.get(name)?.destroy();
      yjsDocs.delete(name);
    }
    log({ event: 'stop', port, syncPort });
  }

  return { port, syncPort, close };
}
