import http, { type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * The byte-moving core of the edge's reverse proxy. It knows nothing about users or auth: callers decide
 * where a request goes (`target`) and what to vouch for (`forwarded*`), this module only moves bytes
 * faithfully, with backpressure, without buffering or time limits, and reports how each exchange ended.
 */

export type ForwardTarget = { host: string; port: number; path: string };

export type ForwardedInfo = {
  /** Address of the client as the edge saw it; appended to any X-Forwarded-For chain already present. */
  forwardedFor?: string;
  forwardedProto?: 'http' | 'https';
  forwardedHost?: string;
  /** Path prefix the edge stripped, so the upstream can build absolute links that still route back to it. */
  forwardedPrefix?: string;
  /**
   * Name of the edge's own session cookie. When set, that cookie and any Authorization header are kept from
   * the upstream: they are the caller's credentials for the edge, and the upstream may be run by someone
   * else (a collaborator's session must never reach the owner's editor).
   */
  edgeCookie?: string;
};

export type ForwardHttpOptions = ForwardedInfo & {
  agent: http.Agent;
  /** Called once, when the exchange is over, with the body bytes sent upstream and sent back to the client. */
  onBytes?: (up: number, down: number) => void;
  /**
   * The request's whole body, already read by the caller (which had to see it before choosing to forward):
   * sent as it is instead of streaming `req`, which must have ended.
   */
  body?: Buffer;
};

export type HttpOutcome = 'completed' | 'client-aborted' | 'upstream-error';

export type ForwardUpgradeOptions<M = undefined> = ForwardedInfo & {
  /** With `key`, registers the opened tunnel (and `meta` about it) so it can be cut later, e.g. when access is revoked. */
  tunnels?: TunnelRegistry<M>;
  key?: string;
  meta?: M;
};

/**
 * `client-aborted` is beyond the three outcomes originally asked for: a client that leaves while the upstream
 * is still being dialled is neither a refusal nor an upstream fault, and counting it as either would skew
 * whatever the caller measures.
 */
export type UpgradeOutcome = 'opened' | 'refused' | 'upstream-error' | 'client-aborted';

export type TunnelSockets = { client: Duplex; upstream: Duplex };

/** Idle time allowed on a pooled socket when the upstream announces no keep-alive timeout (Node's servers close at 5 s). */
const DEFAULT_UPSTREAM_IDLE_MS = 4000;

/**
 * Long-lived sockets (long polls, SSE, kernels streaming output) must never be cut by the proxy's own clock,
 * so a socket in use carries no timeout. An idle pooled socket, though, is dropped a second before the
 * upstream's announced keep-alive timeout: otherwise a POST can be written onto a socket the upstream is
 * closing, and a request with a body cannot be replayed (Node ignores the hint when the agent has no timeout).
 * LIFO hands out the most recently used socket, the one least likely to be near that deadline.
 */
class UpstreamAgent extends http.Agent {
  // @types/node types this as void; Node's agent reads the boolean (false: do not pool the socket).
  override keepSocketAlive(socket: Duplex): void {
    const kept = (http.Agent.prototype.keepSocketAlive as (s: Duplex) => boolean).call(this, socket);
    const res = (socket as Duplex & { _httpMessage?: { res?: IncomingMessage } })._httpMessage?.res;
    const hint = /timeout=(\d+)/.exec(String(res?.headers['keep-alive'] ?? ''))?.[1];
    const idleMs = hint === undefined ? DEFAULT_UPSTREAM_IDLE_MS : Number(hint) * 1000 - 1000;
    if (!kept || idleMs <= 0) return false as never;
    (socket as net.Socket).setTimeout(idleMs);
    return true as never;
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    (socket as net.Socket).setTimeout(0);
    super.reuseSocket(socket, request);
  }
}

export function createUpstreamAgent(opts: http.AgentOptions = {}): http.Agent {
  return new UpstreamAgent({
    keepAlive: true,
    keepAliveMsecs: 1000,
    maxSockets: 256,
    maxFreeSockets: 256,
    scheduling: 'lifo',
    noDelay: true,
    ...opts,
  });
}

const NOTHING_KEPT: ReadonlySet<string> = new Set();
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/**
 * Beyond the fixed set, the sender may declare more connection-only headers by naming them in `Connection:`.
 * Returned only when there are some, since this runs twice per request and almost never finds any.
 */
function connectionNamedHeaders(rawHeaders: string[]): Set<string> | undefined {
  let named: Set<string> | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() !== 'connection') continue;
    for (const token of rawHeaders[i + 1]!.split(',')) {
      const name = token.trim().toLowerCase();
      if (name && !HOP_BY_HOP.has(name) && name !== 'close') (named ??= new Set()).add(name);
    }
  }
  return named;
}

function isHopByHop(name: string, connectionNamed: Set<string> | undefined, keep: ReadonlySet<string>): boolean {
  return (HOP_BY_HOP.has(name) || connectionNamed?.has(name) === true) && !keep.has(name);
}

function addHeader(headers: Record<string, string | string[]>, name: string, value: string): void {
  const existing = headers[name];
  if (existing === undefined) headers[name] = value;
  else if (Array.isArray(existing)) existing.push(value);
  else headers[name] = [existing, value];
}

/** A Cookie header without the named cookie; undefined when nothing else is left. */
function cookieHeaderWithout(header: string, name: string): string | undefined {
  const kept = header.split(';').filter((part) => {
    const eq = part.indexOf('=');
    return part.trim() !== '' && (eq < 0 ? part.trim() : part.slice(0, eq).trim()) !== name;
  });
  return kept.length > 0 ? kept.map((part) => part.trim()).join('; ') : undefined;
}

/**
 * Built from rawHeaders rather than `req.headers` so repeated headers reach the upstream as they were sent
 * instead of being folded together by Node.
 */
export function upstreamRequestHeaders(req: IncomingMessage, target: ForwardTarget, fwd: ForwardedInfo, keep: ReadonlySet<string> = NOTHING_KEPT): Record<string, string | string[]> {
  const raw = req.rawHeaders;
  const connectionNamed = connectionNamedHeaders(raw);
  const headers: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    // The front server has already answered `Expect: 100-continue`; forwarding it would only make the
    // upstream send a 100 nobody is waiting for.
    if (isHopByHop(name, connectionNamed, keep) || name === 'host' || name === 'expect') continue;
    if (fwd.edgeCookie !== undefined && name === 'authorization') continue;
    if (fwd.edgeCookie !== undefined && name === 'cookie') {
      const rest = cookieHeaderWithout(raw[i + 1]!, fwd.edgeCookie);
      if (rest !== undefined) addHeader(headers, name, rest);
      continue;
    }
    addHeader(headers, name, raw[i + 1]!);
  }
  // Upstreams route and build links from Host; the incoming one names the edge, not them.
  headers.host = `${target.host}:${target.port}`;
  if (fwd.forwardedFor !== undefined) {
    const chain = headers['x-forwarded-for'];
    const previous = Array.isArray(chain) ? chain.join(', ') : chain;
    headers['x-forwarded-for'] = previous ? `${previous}, ${fwd.forwardedFor}` : fwd.forwardedFor;
  }
  if (fwd.forwardedProto !== undefined) headers['x-forwarded-proto'] = fwd.forwardedProto;
  if (fwd.forwardedHost !== undefined) headers['x-forwarded-host'] = fwd.forwardedHost;
  if (fwd.forwardedPrefix !== undefined) headers['x-forwarded-prefix'] = fwd.forwardedPrefix;
  return headers;
}

function responseHeaderPairs(upRes: IncomingMessage, keep: ReadonlySet<string> = NOTHING_KEPT): Array<[string, string]> {
  const raw = upRes.rawHeaders;
  const connectionNamed = connectionNamedHeaders(raw);
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (isHopByHop(name.toLowerCase(), connectionNamed, keep)) continue;
    pairs.push([name, raw[i + 1]!]);
  }
  return pairs;
}

/**
 * The error code alone when there is one: it says what went wrong (ECONNREFUSED, ECONNRESET...) without
 * handing the browser the internal address that Node's messages embed.
 */
function reasonOf(err: unknown): string {
  if (err instanceof Error) return (err as NodeJS.ErrnoException).code ?? err.message;
  return String(err);
}

function answerBadGateway(res: ServerResponse, err: unknown): void {
  const body = JSON.stringify({ error: `editor unreachable: ${reasonOf(err)}` });
  try {
    res.writeHead(502, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  } catch {
    res.destroy();
  }
}

/** The upstream closed an idle keep-alive socket just as we picked it: the request never reached it. */
function isStaleSocketError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE';
}

/**
 * Proxies one HTTP exchange, streaming both bodies as they arrive. Never rejects: the promise says how the
 * exchange ended. Trailers are not forwarded.
 */
export function forwardHttp(req: IncomingMessage, res: ServerResponse, target: ForwardTarget, opts: ForwardHttpOptions): Promise<HttpOutcome> {
  return new Promise<HttpOutcome>((resolve) => {
    let settled = false;
    let bytesUp = 0;
    let bytesDown = 0;
    let upstreamReq: http.ClientRequest | undefined;
    let gotResponse = false;

    const settle = (outcome: HttpOutcome) => {
      if (settled) return;
      settled = true;
      try {
        opts.onBytes?.(bytesUp, bytesDown);
      } catch {
        // A metering callback must not be able to break the exchange it is metering.
      }
      resolve(outcome);
    };

    req.on('error', () => undefined);
    res.on('error', () => undefined);
    if (res.destroyed || req.socket?.destroyed) {
      settle('client-aborted');
      return;
    }
    // Without this, a client that leaves a long poll or an event stream would leave the upstream request
    // (and the editor's work behind it) running until the upstream itself gives up.
    res.on('close', () => {
      if (res.writableFinished) return;
      settle('client-aborted');
      upstreamReq?.destroy();
    });

    const headers = upstreamRequestHeaders(req, target, opts);
    const transferEncoding = req.headers['transfer-encoding'];
    const contentLength = req.headers['content-length'];
    const hasBody = opts.body !== undefined ? opts.body.length > 0 : transferEncoding !== undefined || (contentLength !== undefined && contentLength !== '0');
    // Transfer-Encoding is hop-by-hop, but a body of unknown length still needs chunked framing upstream,
    // and Node only chooses that by itself for some methods.
    if (transferEncoding !== undefined && contentLength === undefined) headers['transfer-encoding'] = 'chunked';

    if (opts.body !== undefined) bytesUp = opts.body.length;
    else if (hasBody) {
      req.on('data', (chunk: Buffer) => {
        bytesUp += chunk.length;
      });
    }

    const stopUpload = () => {
      if (!upstreamReq || opts.body !== undefined) return;
      req.unpipe(upstreamReq);
      // Drain what the client is still sending so its connection stays usable for the answer and beyond.
      req.resume();
    };

    const start = (attempt: number) => {
      let outgoing: http.ClientRequest;
      try {
        outgoing = http.request({ host: target.host, port: target.port, path: target.path, method: req.method, headers, agent: opts.agent });
      } catch (err) {
        answerBadGateway(res, err);
        settle('upstream-error');
        return;
      }
      upstreamReq = outgoing;

      outgoing.on('error', (err) => {
        if (settled) return;
        if (gotResponse) {
          // The answer is already on its way and is judged by its own stream; all that failed is the rest of
          // an upload the upstream no longer wanted.
          stopUpload();
          return;
        }
        // A bodiless request on a socket the upstream had just closed never reached it, so sending it again
        // is safe; anything with a streamed body cannot be replayed.
        if (!hasBody && attempt === 0 && outgoing.reusedSocket && isStaleSocketError(err)) {
          start(1);
          return;
        }
        stopUpload();
        if (!res.headersSent) answerBadGateway(res, err);
        else res.destroy();
        settle('upstream-error');
      });

      outgoing.on('response', (upRes) => {
        gotResponse = true;
        upRes.on('data', (chunk: Buffer) => {
          bytesDown += chunk.length;
        });
        try {
          const responseHeaders: OutgoingHttpHeaders = {};
          for (const [name, value] of responseHeaderPairs(upRes)) addHeader(responseHeaders as Record<string, string | string[]>, name.toLowerCase(), value);
          res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, responseHeaders);
        } catch (err) {
          upRes.destroy();
          stopUpload();
          answerBadGateway(res, err);
          settle('upstream-error');
          return;
        }
        // Plain pipe rather than pipeline(): pipeline allocates an AbortController per call and aborts it on
        // completion, which showed up as a tenth of the proxy's CPU time on small requests.
        upRes.on('error', () => undefined);
        upRes.on('close', () => {
          if (upRes.complete) return;
          // The upstream died mid-answer: a truncated answer must look broken to the client, not complete.
          res.destroy();
          settle('upstream-error');
        });
        res.on('finish', () => settle('completed'));
        upRes.pipe(res);
        // Node holds the head back until the first body write; event streams and long polls would then look
        // stalled, so send it now unless the body has already started.
        setImmediate(() => {
          if (bytesDown === 0 && !res.writableEnded && !res.destroyed) res.flushHeaders();
        });
      });

      if (opts.body !== undefined) outgoing.end(opts.body);
      else if (hasBody) req.pipe(outgoing);
      else outgoing.end();
    };

    start(0);
  });
}

export function formatHead(statusCode: number, statusMessage: string, pairs: Array<[string, string]>): string {
  let head = `HTTP/1.1 ${statusCode} ${statusMessage || http.STATUS_CODES[statusCode] || ''}\r\n`;
  for (const [name, value] of pairs) head += `${name}: ${value}\r\n`;
  return `${head}\r\n`;
}

/** End then destroy, so the last bytes are flushed before a half-open client could hold the socket forever. */
export function finishAndDestroy(socket: Duplex, data?: string): void {
  if (socket.destroyed) return;
  socket.once('finish', () => socket.destroy());
  socket.end(data);
}

export function tuneSocket(socket: Duplex): void {
  if (socket instanceof net.Socket) {
    // Interactive traffic (keystrokes, cursor updates) must not wait for Nagle to batch it.
    socket.setNoDelay(true);
    // A tunnel may sit idle for hours; only its endpoints decide when it is over.
    socket.setTimeout(0);
  }
}

/** Fails a client's upgrade with 502 and the reason the upstream could not be reached. */
export function answerUpgradeBadGateway(socket: Duplex, err: unknown): void {
  const body = `editor unreachable: ${reasonOf(err)}\n`;
  finishAndDestroy(
    socket,
    formatHead(502, 'Bad Gateway', [
      ['Content-Type', 'text/plain; charset=utf-8'],
      ['Content-Length', String(Buffer.byteLength(body))],
      ['Connection', 'close'],
    ]) + body,
  );
}

const UPGRADE_HEADERS: ReadonlySet<string> = new Set(['connection', 'upgrade']);

/**
 * Proxies an HTTP Upgrade (WebSocket or otherwise). When the upstream switches protocols, the two sockets are
 * joined directly and bytes flow untouched both ways until either side goes.
 */
export function forwardUpgrade<M = undefined>(req: IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget, opts: ForwardUpgradeOptions<M> = {}): Promise<UpgradeOutcome> {
  return new Promise<UpgradeOutcome>((resolve) => {
    let settled = false;
    const settle = (outcome: UpgradeOutcome) => {
      if (!settled) {
        settled = true;
        resolve(outcome);
      }
    };
    let upstreamReq: http.ClientRequest | undefined;

    socket.on('error', () => socket.destroy());
    if (socket.destroyed) {
      settle('client-aborted');
      return;
    }
    const onClientGone = () => {
      settle('client-aborted');
      upstreamReq?.destroy();
    };
    socket.once('close', onClientGone);

    const headers = upstreamRequestHeaders(req, target, opts, UPGRADE_HEADERS);
    // Only the upgrade itself may ride on Connection: any other token named a header we have just dropped.
    headers.connection = 'Upgrade';

    const badGateway = (err: unknown) => {
      answerUpgradeBadGateway(socket, err);
      settle('upstream-error');
    };

    try {
      // A fresh connection: an upgraded socket leaves the HTTP world, so there is nothing to pool.
      upstreamReq = http.request({ host: target.host, port: target.port, path: target.path, method: req.method, headers, agent: false });
    } catch (err) {
      badGateway(err);
      return;
    }

    upstreamReq.on('error', (err) => {
      if (settled) return;
      badGateway(err);
    });

    upstreamReq.on('response', (upRes) => {
      if (settled) {
        upRes.destroy();
        return;
      }
      socket.removeListener('close', onClientGone);
      socket.once('close', () => upRes.destroy());
      upRes.on('error', () => socket.destroy());
      // Relayed whole rather than turned into a bare disconnect, so the client can see why its handshake
      // failed (a 401/403 from the editor, say) and react to it.
      const pairs = responseHeaderPairs(upRes);
      pairs.push(['Connection', 'close']);
      socket.write(formatHead(upRes.statusCode ?? 502, upRes.statusMessage ?? '', pairs));
      upRes.pipe(socket, { end: false });
      upRes.on('end', () => finishAndDestroy(socket));
      settle('refused');
    });

    upstreamReq.on('upgrade', (upRes, upstream: net.Socket, upstreamHead: Buffer) => {
      upstream.on('error', () => upstream.destroy());
      if (settled) {
        upstream.destroy();
        return;
      }
      socket.removeListener('close', onClientGone);
      tuneSocket(socket);
      tuneSocket(upstream);

      socket.write(formatHead(upRes.statusCode ?? 101, upRes.statusMessage ?? '', responseHeaderPairs(upRes, UPGRADE_HEADERS)));
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstream.write(head);

      // `pipe` carries backpressure and turns one side's end into the other's end (half-close), so a closing
      // handshake in flight still gets delivered.
      upstream.pipe(socket);
      socket.pipe(upstream);
      const join = (gone: Duplex, other: Duplex) => {
        gone.once('close', () => {
          // An ended side still flushing its last frames is let finish; anything else is torn down now.
          if (other.writableEnded && !other.writableFinished) other.once('finish', () => other.destroy());
          else other.destroy();
        });
      };
      join(socket, upstream);
      join(upstream, socket);

      if (opts.tunnels && opts.key !== undefined) opts.tunnels.add(opts.key, { client: socket, upstream }, opts.meta as M);
      settle('opened');
    });

    upstreamReq.end();
  });
}

/**
 * Live upgraded connections grouped by a caller-chosen key, each with what the caller wants to know about
 * it later (`meta`), so they can be cut together: all of a key's, or all whose meta matches a predicate.
 */
export class TunnelRegistry<M = undefined> {
  readonly #byKey = new Map<string, Map<TunnelSockets, M>>();

  add(key: string, sockets: TunnelSockets, meta: M): void {
    let group = this.#byKey.get(key);
    if (!group) {
      group = new Map();
      this.#byKey.set(key, group);
    }
    group.set(sockets, meta);
    const forget = () => {
      const current = this.#byKey.get(key);
      if (!current?.delete(sockets)) return;
      if (current.size === 0) this.#byKey.delete(key);
    };
    sockets.client.once('close', forget);
    sockets.upstream.once('close', forget);
    if (sockets.client.destroyed || sockets.upstream.destroyed) forget();
  }

  /** Destroys every tunnel under `key`; returns how many were cut. */
  closeAll(key: string): number {
    const group = this.#byKey.get(key);
    if (!group) return 0;
    this.#byKey.delete(key);
    for (const { client, upstream } of group.keys()) {
      client.destroy();
      upstream.destroy();
    }
    return group.size;
  }

  /**
   * Destroys every tunnel whose meta (and key) satisfy `predicate`, at once; returns how many were cut.
   * This is how access that ends cuts the WebSockets it had opened: the edge's tunnels to users' editors
   * (`platform.tunnels`) carry `EditorTunnel` meta (api/collaborators.ts: ownerId, userId, sessionId,
   * membershipId?), so revoking a membership is `closeWhere((t) => t.membershipId === id)`, ending a session
   * (logout) is `closeWhere((t) => t.sessionId === sessionId)`, and everything into one user's editor is
   * `closeAll(ownerId)` (tunnels are keyed by the editor's owner).
   */
  closeWhere(predicate: (meta: M, key: string) => boolean): number {
    let cut = 0;
    for (const [key, group] of [...this.#byKey]) {
      for (const [sockets, meta] of [...group]) {
        if (!predicate(meta, key)) continue;
        group.delete(sockets);
        sockets.client.destroy();
        sockets.upstream.destroy();
        cut++;
      }
      if (group.size === 0) this.#byKey.delete(key);
    }
    return cut;
  }

  /** Destroys every tunnel (the edge is shutting down: upgraded sockets are not the HTTP server's to close). */
  closeEverything(): number {
    let cut = 0;
    for (const key of [...this.#byKey.keys()]) cut += this.closeAll(key);
    return cut;
  }

  count(key?: string): number {
    if (key !== undefined) return this.#byKey.get(key)?.size ?? 0;
    let total = 0;
    for (const group of this.#byKey.values()) total += group.size;
    return total;
  }
}
