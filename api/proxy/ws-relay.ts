import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { answerUpgradeBadGateway, finishAndDestroy, formatHead, tuneSocket, upstreamRequestHeaders, type ForwardTarget, type ForwardUpgradeOptions, type UpgradeOutcome } from './forward.js';

/**
 * A WebSocket relay that reads messages instead of moving bytes, for clients that may send only some
 * messages (a viewer following a document). Where forwardUpgrade joins two sockets, this terminates the
 * WebSocket on both sides: the upstream is dialled first (as the editor does for its own sync relay), the
 * client is accepted only once it answered, and then every message from the upstream is passed on while
 * messages from the client go on only if `clientFilter` admits them. Outcomes, refusals, registration in
 * the TunnelRegistry and the closing of both sides follow forwardUpgrade.
 */
export type ClientMessageFilter = (data: Buffer, isBinary: boolean) => boolean;

export type RelayOptions<M> = ForwardUpgradeOptions<M> & { clientFilter: ClientMessageFilter };

// Backpressure: stop reading a side while the other has this much unsent, resume below the low mark.
const highWaterBytes = 4 * 1024 * 1024;
const lowWaterBytes = 1024 * 1024;
const upstreamHandshakeMs = 30_000;
/** How much of an upstream's refusal (a 403 page, say) is relayed to the client. */
const refusalBodyMax = 64 * 1024;

/** The subprotocol the upstream chose, for the client's handshake (set just before accepting it). */
const chosenProtocol = new WeakMap<IncomingMessage, string>();
const acceptor = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  perMessageDeflate: false,
  handleProtocols: (_offered, req) => chosenProtocol.get(req) ?? false,
});

// Close codes that may be sent in a close frame (1005, 1006 and 1015 only report what happened).
function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

function relayMessages(from: WebSocket, to: WebSocket, admit: ClientMessageFilter): void {
  from.on('message', (data: RawData, isBinary: boolean) => {
    if (to.readyState !== WebSocket.OPEN) return;
    const message = toBuffer(data);
    if (!admit(message, isBinary)) return;
    to.send(message, { binary: isBinary }, () => {
      if (from.isPaused && to.bufferedAmount < lowWaterBytes) from.resume();
    });
    if (to.bufferedAmount > highWaterBytes) from.pause();
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

const passEverything: ClientMessageFilter = () => true;

export function relayWebSocket<M = undefined>(req: IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget, opts: RelayOptions<M>): Promise<UpgradeOutcome> {
  return new Promise<UpgradeOutcome>((resolve) => {
    let settled = false;
    const settle = (outcome: UpgradeOutcome) => {
      if (!settled) {
        settled = true;
        resolve(outcome);
      }
    };
    socket.on('error', () => socket.destroy());
    if (socket.destroyed) {
      settle('client-aborted');
      return;
    }

    // The client's handshake headers are its own; the upstream handshake gets fresh ones from ws.
    const headers = upstreamRequestHeaders(req, target, opts);
    for (const name of Object.keys(headers)) if (name.startsWith('sec-websocket-')) delete headers[name];
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    let upstream: WebSocket;
    try {
      upstream = new WebSocket(`ws://${target.host}:${target.port}${target.path}`, offered, {
        headers,
        perMessageDeflate: false,
        handshakeTimeout: upstreamHandshakeMs,
      });
    } catch (err) {
      badGateway(err);
      return;
    }
    let upstreamSocket: Duplex | undefined;
    let accepted = false;

    function badGateway(err: unknown): void {
      answerUpgradeBadGateway(socket, err);
      settle('upstream-error');
    }

    socket.once('close', () => {
      if (accepted) return;
      upstream.terminate();
      settle('client-aborted');
    });

    upstream.on('upgrade', (res: IncomingMessage) => {
      upstreamSocket = res.socket;
    });

    // Relayed whole, as forwardUpgrade does, so the client sees why its handshake failed.
    upstream.once('unexpected-response', (_request, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (size < refusalBodyMax) chunks.push(chunk.subarray(0, refusalBodyMax - size));
        size += chunk.length;
      });
      const answer = () => {
        const body = Buffer.concat(chunks);
        const type = res.headers['content-type'];
        if (!socket.destroyed) {
          socket.write(
            formatHead(res.statusCode ?? 502, res.statusMessage ?? '', [
              ...(type ? ([['Content-Type', String(type)]] as Array<[string, string]>) : []),
              ['Content-Length', String(body.length)],
              ['Connection', 'close'],
            ]),
          );
          socket.write(body);
          finishAndDestroy(socket);
        }
        upstream.terminate();
        settle('refused');
      };
      res.once('end', answer);
      res.once('error', answer);
    });

    upstream.on('error', (err) => {
      if (accepted || settled) return;
      badGateway(err);
    });

    upstream.once('open', () => {
      if (socket.destroyed) {
        upstream.terminate();
        settle('client-aborted');
        return;
      }
      upstream.pause(); // hold the upstream's first messages until the client side is wired
      if (upstream.protocol) chosenProtocol.set(req, upstream.protocol);
      tuneSocket(socket);
      if (upstreamSocket) tuneSocket(upstreamSocket);
      // A client handshake ws finds invalid is answered 400 and its socket closed: the close above ends the upstream.
      acceptor.handleUpgrade(req, socket, head, (client) => {
        accepted = true;
        client.on('error', () => client.terminate());
        relayMessages(client, upstream, opts.clientFilter);
        relayMessages(upstream, client, passEverything);
        upstream.resume();
        if (opts.tunnels && opts.key !== undefined && upstreamSocket) opts.tunnels.add(opts.key, { client: socket, upstream: upstreamSocket }, opts.meta as M);
        settle('opened');
      });
    });
  });
}
