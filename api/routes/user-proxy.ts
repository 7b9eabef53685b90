import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { UserRecord } from '../../lib/accounts.js';
import { answerUnauthenticated, unauthenticatedMessage, wantsHtml } from '../auth.js';
import { escapeHtml, page } from '../html.js';
import type { PlatformDeps } from '../platform.js';
import { executePathPattern } from '../../lib/code-hints.js';
import { forwardHttp, forwardUpgrade } from '../proxy/forward.js';

/**
 * `/u/<userId>/*`: the user's editor, behind the edge. Every request and every WebSocket upgrade is
 * authorised (the owner only, for now), the prefix is stripped, and bytes stream both ways untouched.
 * While the editor is not up, a 'starting' answer with a retry hint is given and the login workflow runs.
 */
const prefixPattern = /^\/u\/([^/?#]+)(\/[^]*|\?[^]*)?$/;

function splitPath(url: string): { userId: string; rest: string } | undefined {
  const m = prefixPattern.exec(url);
  if (!m) return undefined;
  const rest = m[2] ?? '/';
  return { userId: decodeURIComponent(m[1]!), rest: rest.startsWith('?') ? `/${rest}` : rest };
}

const forbiddenMessage = 'this editor belongs to another user';

type Entry = { kind: 'not-found' } | { kind: 'unauthenticated' } | { kind: 'forbidden' } | { kind: 'owner'; user: UserRecord; rest: string };

/** Who may go through to `/u/<userId>/`: one decision for every request and every upgrade. */
async function authorise(deps: PlatformDeps, url: string, headers: IncomingHttpHeaders): Promise<Entry> {
  const target = splitPath(url);
  if (!target) return { kind: 'not-found' };
  const user = await deps.auth.userOf(headers);
  if (!user) return { kind: 'unauthenticated' };
  if (target.userId !== user.id) return { kind: 'forbidden' };
  return { kind: 'owner', user, rest: target.rest };
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

function forwardedFor(req: IncomingMessage) {
  return {
    forwardedFor: req.socket.remoteAddress ?? '',
    forwardedProto: (req.headers['x-forwarded-proto'] === 'https' ? 'https' : 'http') as 'http' | 'https',
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
      const { user, rest } = entry;
      if (req.url === `/u/${user.id}`) return reply.redirect(`/u/${user.id}/`, 301);
      const upstream = await deps.routes.get(user.id);
      if (!upstream || upstream.state !== 'running') {
        const { operationId } = await deps.operations.startLogin({ userId: user.id });
        return startingAnswer(req, reply, operationId, upstream?.state === 'checkpointed');
      }
      deps.activity.touch(user.id);
      reply.hijack();
      // A cell on its way to the runtime: read it first (hints; a GPU cell waits for the GPU hop).
      let body: Buffer | undefined;
      if (req.method === 'POST' && executePathPattern.test(rest)) {
        body = await deps.executeHints.readBody(req.raw);
        await deps.executeHints.beforeExecute(user.id, body);
      }
      const outcome = await forwardHttp(req.raw, reply.raw, { host: upstream.host, port: upstream.port, path: rest }, {
        ...(body ? { body } : {}),
        agent: deps.upstreamAgent,
        forwardedPrefix: `/u/${user.id}`,
        ...forwardedFor(req.raw),
      });
      if (outcome === 'upstream-error') {
        // The editor is gone or moved: look it up afresh next time, and let login bring it back.
        deps.routes.invalidate(user.id);
        await deps.operations.startLogin({ userId: user.id }).catch((err: unknown) => req.log.warn({ err }, 'could not start login after a proxy failure'));
      }
    };
    app.all('/u/:userId', handler);
    app.all('/u/:userId/*', handler);
  };
}

function refuse(socket: Duplex, status: number, reason: string, message: string): void {
  const body = JSON.stringify({ error: reason, message });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** The server's 'upgrade' listener: the same authorisation as HTTP, then a raw tunnel to the editor. */
export function userProxyUpgrade(deps: PlatformDeps, log: { warn: (o: object, m: string) => void }) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => undefined);
    void (async () => {
      const entry = await authorise(deps, req.url ?? '', req.headers);
      if (entry.kind === 'not-found') return refuse(socket, 404, 'Not Found', 'WebSockets are served under /u/<userId>/ only');
      if (entry.kind === 'unauthenticated') return refuse(socket, 401, 'Unauthorized', unauthenticatedMessage);
      if (entry.kind === 'forbidden') return refuse(socket, 403, 'Forbidden', forbiddenMessage);
      const { user, rest } = entry;
      const upstream = await deps.routes.get(user.id);
      if (!upstream || upstream.state !== 'running') {
        await deps.operations.startLogin({ userId: user.id }).catch(() => undefined);
        return refuse(socket, 503, 'Service Unavailable', 'the editor is starting; retry shortly');
      }
      // Every message the user's browser sends (typing, running a cell) is activity.
      socket.on('data', () => deps.activity.touch(user.id));
      const outcome = await forwardUpgrade(req, socket, head, { host: upstream.host, port: upstream.port, path: rest }, {
        tunnels: deps.tunnels,
        key: user.id,
        forwardedPrefix: `/u/${user.id}`,
        ...forwardedFor(req),
      });
      if (outcome === 'upstream-error') deps.routes.invalidate(user.id);
    })().catch((err: unknown) => {
      log.warn({ err }, 'websocket upgrade failed');
      if (!socket.destroyed) refuse(socket, 500, 'Internal Server Error', 'the upgrade could not be handled');
    });
  };
}
