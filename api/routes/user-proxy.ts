import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { UserRecord } from '../../lib/accounts.js';
import { answerUnauthenticated, sessionCookie, unauthenticatedMessage, wantsHtml } from '../auth.js';
import type { EditorTunnel } from '../collaborators.js';
import { escapeHtml, page } from '../html.js';
import type { PlatformDeps } from '../platform.js';
import { executePathPattern } from '../../lib/code-hints.js';
import { proxyTargetRefusal, requestRefusal, routablePath, socketKindOf, type EditorRole, type Refusal } from '../proxy/editor-access.js';
import { forwardHttp, forwardUpgrade } from '../proxy/forward.js';
import { relayWebSocket, type ClientMessageFilter } from '../proxy/ws-relay.js';
import { viewerMayForward } from '../proxy/yjs-viewer.js';

/**
 * `/u/<ownerId>/*`: the owner's editor, behind the edge. Every request and every WebSocket upgrade is
 * authorised: the owner, or a collaborator with a live membership, by role (api/proxy/editor-access.ts);
 * anyone else gets 403. The prefix is stripped and bytes stream both ways untouched, except a viewer's
 * WebSockets, which are relayed message by message so their writes can be dropped. The edge's own
 * credentials (session cookie, Authorization) never reach the editor. While the editor is not up, a
 * 'starting' answer with a retry hint is given and the login workflow runs.
 */
const prefixPattern = /^\/u\/([^/?#]+)(\/[^]*|\?[^]*)?$/;

function splitPath(url: string): { userId: string; rest: string } | undefined {
  const m = prefixPattern.exec(url);
  if (!m) return undefined;
  const rest = m[2] ?? '/';
  let userId: string;
  try {
    userId = decodeURIComponent(m[1]!);
  } catch {
    return undefined;
  }
  return { userId, rest: rest.startsWith('?') ? `/${rest}` : rest };
}

const forbiddenMessage = 'this editor belongs to another user, who has not invited you';

/** Who is going through to whose editor, and as what. */
interface EditorAccess {
  ownerId: string;
  user: UserRecord;
  sessionId: string;
  role: EditorRole;
  /** The membership that lets a collaborator in (absent for the owner). */
  membershipId?: string;
  /** The path and query the editor is asked for, prefix stripped. */
  rest: string;
}

type Entry = { kind: 'not-found' } | { kind: 'unauthenticated' } | { kind: 'forbidden' } | { kind: 'granted'; access: EditorAccess };

/** Who may go through to `/u/<ownerId>/`: one decision for every request and every upgrade. */
async function authorise(deps: PlatformDeps, url: string, headers: IncomingHttpHeaders): Promise<Entry> {
  const target = splitPath(url);
  if (!target) return { kind: 'not-found' };
  const signedIn = await deps.auth.sessionOf(headers);
  if (!signedIn) return { kind: 'unauthenticated' };
  const base = { ownerId: target.userId, user: signedIn.user, sessionId: signedIn.sessionId, rest: target.rest };
  if (target.userId === signedIn.user.id) return { kind: 'granted', access: { ...base, role: 'owner' } };
  const grant = await deps.collaborators.grantOf(target.userId, signedIn.user.id);
  if (!grant) return { kind: 'forbidden' };
  return { kind: 'granted', access: { ...base, role: grant.role, membershipId: grant.membershipId } };
}

function answerRefusal(reply: FastifyReply, refusal: Refusal) {
  if (refusal.status === 503) reply.header('retry-after', String(retryAfterSeconds));
  return reply.code(refusal.status).send({ error: refusal.error, message: refusal.message });
}

const dropEverything: ClientMessageFilter = () => false;

/** What a viewer may send on a WebSocket: awareness and sync-step-1 to a document, nothing on the events bus. */
function viewerFilterFor(rest: string): ClientMessageFilter {
  return socketKindOf(routablePath(rest) ?? '') === 'sync' ? viewerMayForward : dropEverything;
}

const retryAfterSeconds = 2;

function startingAnswer(req: FastifyRequest, reply: FastifyReply, operationId: string | undefined, waking: boolean) {
  reply.code(503).header('retry-after', String(retryAfterSeconds)).header('cache-control', 'no-store');
  const what = waking ? 'Bringing back your runtime where you left it' : 'Starting your editor';
  if (wantsHtml(req)) {
    return reply.type('text/html; charset=utf-8').send(
      page({
        title: waking ? 'Waking up' : 'Starting',
        refreshSeconds: retryAfterSeconds,
        body: `<h1>${what}…</h1><p>This page reloads by itself in ${retryAfterSeconds} seconds.</p>${operationId ? `<p><small>operation ${escapeHtml(operationId)}</small></p>` : ''}`,
      }),
    );
  }
  return reply.send({
    status: waking ? 'waking' : 'starting',
    message: waking ? 'the runtime is being restored from its checkpoint; retry shortly' : 'the editor is starting; retry shortly',
    retry_after: retryAfterSeconds,
    ...(operationId ? { operation_id: operationId } : {}),
  });
}

/** Caddy runs beside the edge: only a loopback peer may say the browser came over https (api/app.ts trustProxy). */
function fromLoopback(req: IncomingMessage): boolean {
  const peer = req.socket.remoteAddress ?? '';
  return peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.');
}

function forwardedFor(req: IncomingMessage) {
  return {
    forwardedFor: req.socket.remoteAddress ?? '',
    forwardedProto: (fromLoopback(req) && req.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http') as 'http' | 'https',
    ...(req.headers.host ? { forwardedHost: req.headers.host } : {}),
  };
}

export function userProxyRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    // Bodies are streamed to the editor as they arrive: nothing here parses or limits them.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_req, _payload, done) => done(null));

    const handler = async (req: FastifyRequest, reply: FastifyReply) => {
      const entry = await authorise(deps, req.url, req.headers);
      if (entry.kind === 'not-found') return reply.code(404).send({ error: 'not found', message: 'expected /u/<userId>/...' });
      if (entry.kind === 'unauthenticated') return answerUnauthenticated(req, reply);
      if (entry.kind === 'forbidden') return reply.code(403).send({ error: 'forbidden', message: forbiddenMessage });
      const { ownerId, role, rest } = entry.access;
      const refusal = requestRefusal({ role, method: req.method, rest, upgrade: false });
      if (refusal) return answerRefusal(reply, refusal);
      if (req.url === `/u/${ownerId}`) return reply.redirect(`/u/${ownerId}/`, 301);
      // A collaborator's visit brings the owner's editor up too: they came to work in it.
      const upstream = await deps.routes.get(ownerId);
      if (!upstream || upstream.state !== 'running') {
        const { operationId } = await deps.operations.startLogin({ userId: ownerId });
        return startingAnswer(req, reply, operationId, upstream?.state === 'checkpointed');
      }
      const portRefusal = proxyTargetRefusal(rest, upstream.runtimePort);
      if (portRefusal) return answerRefusal(reply, portRefusal);
      deps.activity.touch(ownerId);
      reply.hijack();
      // A cell on its way to the runtime: read it first (hints; a GPU cell waits for the GPU hop).
      let body: Buffer | undefined;
      if (req.method === 'POST' && executePathPattern.test(rest)) {
        body = await deps.executeHints.readBody(req.raw);
        await deps.executeHints.beforeExecute(ownerId, body);
      }
      let bytes = { up: 0, down: 0 };
      const outcome = await forwardHttp(req.raw, reply.raw, { host: upstream.host, port: upstream.port, path: rest }, {
        ...(body ? { body } : {}),
        agent: deps.upstreamAgent,
        forwardedPrefix: `/u/${ownerId}`,
        edgeCookie: sessionCookie,
        ...forwardedFor(req.raw),
        onBytes: (up, down) => {
          bytes = { up, down };
        },
      });
      deps.proxyTraffic.http(outcome, bytes.up, bytes.down);
      if (outcome === 'upstream-error') {
        // The editor is gone or moved: look it up afresh next time, and let login bring it back.
        deps.routes.invalidate(ownerId);
        await deps.operations.startLogin({ userId: ownerId }).catch((err: unknown) => req.log.warn({ err }, 'could not start login after a proxy failure'));
      }
    };
    // An editor's page, its assets and its cells are many requests a second: two info lines for each cost the
    // proxy about an eighth of its throughput (docs/benchmarks.md, proxy-peers), and the traffic is counted in
    // the metrics instead (an access log is opt-in in Caddy and configurable-http-proxy too). Warnings and errors still log.
    const quiet = { logLevel: 'warn' as const };
    app.all('/u/:userId', quiet, handler);
    app.all('/u/:userId/*', quiet, handler);
  };
}

function refuse(socket: Duplex, status: number, reason: string, message: string): void {
  const body = JSON.stringify({ error: reason, message });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function refuseWith(socket: Duplex, refusal: Refusal): void {
  refuse(socket, refusal.status, STATUS_CODES[refusal.status] ?? 'Refused', refusal.message);
}

/**
 * The server's 'upgrade' listener: the same authorisation as HTTP, then a raw tunnel to the editor (a
 * message relay for viewers), registered with who opened it so that access that ends can cut it.
 */
export function userProxyUpgrade(deps: PlatformDeps, log: { warn: (o: object, m: string) => void }) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => undefined);
    void (async () => {
      const entry = await authorise(deps, req.url ?? '', req.headers);
      if (entry.kind === 'not-found') return refuse(socket, 404, 'Not Found', 'WebSockets are served under /u/<userId>/ only');
      if (entry.kind === 'unauthenticated') return refuse(socket, 401, 'Unauthorized', unauthenticatedMessage);
      if (entry.kind === 'forbidden') return refuse(socket, 403, 'Forbidden', forbiddenMessage);
      const { ownerId, user, sessionId, role, membershipId, rest } = entry.access;
      const refusal = requestRefusal({ role, method: req.method ?? 'GET', rest, upgrade: true });
      if (refusal) return refuseWith(socket, refusal);
      const upstream = await deps.routes.get(ownerId);
      if (!upstream || upstream.state !== 'running') {
        await deps.operations.startLogin({ userId: ownerId }).catch(() => undefined);
        return refuse(socket, 503, 'Service Unavailable', 'the editor is starting; retry shortly');
      }
      const portRefusal = proxyTargetRefusal(rest, upstream.runtimePort);
      if (portRefusal) return refuseWith(socket, portRefusal);
      // Every message a user's browser sends (typing, running a cell) is activity in the owner's runtime.
      socket.on('data', () => deps.activity.touch(ownerId));
      const target = { host: upstream.host, port: upstream.port, path: rest };
      const options = {
        tunnels: deps.tunnels,
        key: ownerId,
        meta: { ownerId, userId: user.id, sessionId, ...(membershipId ? { membershipId } : {}) } satisfies EditorTunnel,
        forwardedPrefix: `/u/${ownerId}`,
        edgeCookie: sessionCookie,
        ...forwardedFor(req),
      };
      const outcome =
        role === 'viewer'
          ? await relayWebSocket(req, socket, head, target, { ...options, clientFilter: viewerFilterFor(rest) })
          : await forwardUpgrade(req, socket, head, target, options);
      deps.proxyTraffic.upgrade(outcome);
      if (outcome === 'upstream-error') deps.routes.invalidate(ownerId);
      // A revocation that committed while this tunnel was opening may have looked for it before it was
      // registered: look at the membership once more, now that a revocation would find the tunnel.
      if (outcome === 'opened' && membershipId && !(await deps.collaborators.isLive(membershipId))) {
        deps.collaborators.revoked([{ id: membershipId, ownerId, memberId: user.id }]);
      }
    })().catch((err: unknown) => {
      log.warn({ err }, 'websocket upgrade failed');
      if (!socket.destroyed) refuse(socket, 500, 'Internal Server Error', 'the upgrade could not be handled');
    });
  };
}
