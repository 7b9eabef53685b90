import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { createUpstreamAgent, forwardHttp, forwardUpgrade, TunnelRegistry, type HttpOutcome, type UpgradeOutcome } from '../../api/proxy/forward.js';
import { relayWebSocket, type ClientMessageFilter } from '../../api/proxy/ws-relay.js';

const PREFIX = '/u/abc';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function listen(server: http.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

async function stop(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

async function waitUntil(condition: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

type Upstream = { port: number; server: http.Server };

async function startUpstream(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Upstream> {
  const server = http.createServer(handler);
  const port = await listen(server);
  t.after(() => stop(server));
  return { port, server };
}

type TunnelMeta = { sessionId: string };
type Front = { port: number; outcomes: HttpOutcome[]; upgrades: UpgradeOutcome[]; bytes: Array<[number, number]>; tunnels: TunnelRegistry<TunnelMeta> };

/**
 * How upgrades are carried: joined sockets (forwardUpgrade), or a message relay (relayWebSocket) with a
 * filter on what the client sends.
 */
type UpgradeMode = { kind: 'tunnel' } | { kind: 'relay'; clientFilter: ClientMessageFilter };
const tunnelMode: UpgradeMode = { kind: 'tunnel' };
const relayMode: UpgradeMode = { kind: 'relay', clientFilter: () => true };
const upgradeModes = [tunnelMode, relayMode];

/** The edge as a caller would wire it: strip the user's prefix, vouch for the client, forward. */
async function startFront(t: TestContext, upstreamPort: number, opts: { upgrades?: UpgradeMode; edgeCookie?: string; sessionId?: string } = {}): Promise<Front> {
  const agent = createUpstreamAgent();
  const tunnels = new TunnelRegistry<TunnelMeta>();
  const outcomes: HttpOutcome[] = [];
  const upgrades: UpgradeOutcome[] = [];
  const bytes: Array<[number, number]> = [];
  const targetFor = (url = '/') => ({ host: '127.0.0.1', port: upstreamPort, path: url.startsWith(PREFIX) ? url.slice(PREFIX.length) || '/' : url });
  const forwarded = (req: IncomingMessage) => ({
    forwardedFor: req.socket.remoteAddress,
    forwardedProto: 'https' as const,
    forwardedHost: 'edge.example',
    forwardedPrefix: PREFIX,
    ...(opts.edgeCookie ? { edgeCookie: opts.edgeCookie } : {}),
  });
  const mode = opts.upgrades ?? tunnelMode;
  const server = http.createServer((req, res) => {
    void forwardHttp(req, res, targetFor(req.url), { agent, ...forwarded(req), onBytes: (up, down) => bytes.push([up, down]) }).then((o) => outcomes.push(o));
  });
  server.on('upgrade', (req: IncomingMessage, socket, head: Buffer) => {
    const options = { ...forwarded(req), tunnels, key: 'abc', meta: { sessionId: opts.sessionId ?? 's1' } };
    const opened =
      mode.kind === 'relay'
        ? relayWebSocket(req, socket, head, targetFor(req.url), { ...options, clientFilter: mode.clientFilter })
        : forwardUpgrade(req, socket, head, targetFor(req.url), options);
    void opened.then((o) => upgrades.push(o));
  });
  const port = await listen(server);
  t.after(async () => {
    tunnels.closeAll('abc');
    await stop(server);
    agent.destroy();
  });
  return { port, outcomes, upgrades, bytes, tunnels };
}

type Reply = { status: number; statusMessage: string; headers: IncomingHttpHeaders; body: Buffer };

function send(port: number, opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; body?: Buffer | string }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

test('20 MiB of binary goes up and comes back byte for byte', async (t) => {
  const upload = randomBytes(20 * 1024 * 1024);
  const download = randomBytes(20 * 1024 * 1024);
  let receivedHash = '';
  const up = await startUpstream(t, async (req, res) => {
    receivedHash = sha256(await readBody(req));
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': download.length });
    res.end(download);
  });
  const front = await startFront(t, up.port);
  const reply = await send(front.port, { method: 'POST', path: `${PREFIX}/blob`, headers: { 'content-type': 'application/octet-stream' }, body: upload });
  assert.equal(reply.status, 200);
  assert.equal(receivedHash, sha256(upload));
  assert.equal(reply.headers['content-length'], String(download.length));
  assert.equal(sha256(reply.body), sha256(download));
  await waitUntil(() => front.outcomes.length === 1, 'the outcome');
  assert.deepEqual(front.outcomes, ['completed']);
  assert.deepEqual(front.bytes, [[upload.length, download.length]]);
});

test('a multipart upload arrives unchanged, boundary included', async (t) => {
  const boundary = '----markco' + randomBytes(8).toString('hex');
  const filePart = randomBytes(64 * 1024);
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nnotes.md\r\n`),
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    filePart,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  let seen: { type?: string; body?: Buffer } = {};
  const up = await startUpstream(t, async (req, res) => {
    seen = { type: req.headers['content-type'], body: await readBody(req) };
    res.end('ok');
  });
  const front = await startFront(t, up.port);
  const reply = await send(front.port, { method: 'POST', path: `${PREFIX}/upload`, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` }, body });
  assert.equal(reply.status, 200);
  assert.equal(seen.type, `multipart/form-data; boundary=${boundary}`);
  assert.ok(seen.body?.equals(body), 'multipart body changed on the way');
});

test('an upload reaches the upstream while the client is still sending it', async (t) => {
  let firstChunkSeen!: () => void;
  const firstChunk = new Promise<void>((resolve) => (firstChunkSeen = resolve));
  const up = await startUpstream(t, async (req, res) => {
    req.once('data', () => firstChunkSeen());
    res.end(String((await readBody(req)).length));
  });
  const front = await startFront(t, up.port);
  const reply = new Promise<Reply>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: front.port, method: 'PUT', path: `${PREFIX}/stream`, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, statusMessage: res.statusMessage!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.write('first part;');
    // The rest is only sent once the upstream has the first part: a buffering proxy would deadlock here.
    void firstChunk.then(() => req.end('second part'));
  });
  const { status, body } = await reply;
  assert.equal(status, 200);
  assert.equal(body.toString(), String('first part;second part'.length));
});

test('server-sent events arrive one by one, as the upstream flushes them', async (t) => {
  let secondWrittenAt = 0;
  const up = await startUpstream(t, async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write('data: one\n\n');
    await sleep(300);
    secondWrittenAt = performance.now();
    res.write('data: two\n\n');
    res.end();
  });
  const front = await startFront(t, up.port);
  const arrivals: Record<string, number> = {};
  await new Promise<void>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: front.port, path: `${PREFIX}/events`, agent: false }, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream');
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          for (const name of ['one', 'two']) if (text.includes(`data: ${name}\n\n`)) arrivals[name] ??= performance.now();
        });
        res.on('end', resolve);
        res.on('error', reject);
      })
      .on('error', reject);
  });
  assert.ok(arrivals.one! < secondWrittenAt, `first event arrived at ${arrivals.one}, after the second was written at ${secondWrittenAt}`);
  assert.ok(arrivals.two! >= secondWrittenAt);
});

test('path, query and headers reach the upstream as an edge should present them', async (t) => {
  let seen!: { url: string | undefined; headers: IncomingHttpHeaders };
  const up = await startUpstream(t, (req, res) => {
    seen = { url: req.url, headers: req.headers };
    res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    res.setHeader('x-secret-hop', 'upstream-only');
    res.setHeader('connection', 'x-secret-hop');
    res.end('fine');
  });
  const front = await startFront(t, up.port);
  const reply = await send(front.port, {
    path: `${PREFIX}/notebooks/a%20b.md?view=raw&x=1`,
    headers: {
      connection: 'keep-alive, x-client-hop',
      'x-client-hop': 'client-only',
      'keep-alive': 'timeout=5',
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      'x-forwarded-for': '203.0.113.7',
      'x-app': 'kept',
    },
  });
  assert.equal(reply.status, 200);
  assert.equal(seen.url, '/notebooks/a%20b.md?view=raw&x=1');
  assert.equal(seen.headers.host, `127.0.0.1:${up.port}`);
  assert.equal(seen.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
  assert.equal(seen.headers['x-forwarded-proto'], 'https');
  assert.equal(seen.headers['x-forwarded-host'], 'edge.example');
  assert.equal(seen.headers['x-forwarded-prefix'], PREFIX);
  assert.equal(seen.headers['x-app'], 'kept');
  for (const hop of ['x-client-hop', 'keep-alive', 'proxy-connection', 'te']) assert.equal(seen.headers[hop], undefined, `${hop} leaked upstream`);
  assert.doesNotMatch(String(seen.headers.connection), /x-client-hop/);
  assert.deepEqual(reply.headers['set-cookie'], ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
  assert.equal(reply.headers['x-secret-hop'], undefined);
  assert.equal(reply.body.toString(), 'fine');
});

test('compressed answers pass through untouched, and redirects are not followed', async (t) => {
  const compressed = gzipSync(Buffer.from('hello '.repeat(1000)));
  let redirectTargetHit = false;
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/gz') {
      res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': compressed.length, 'content-type': 'text/plain' });
      res.end(compressed);
    } else if (req.url === '/old') {
      res.writeHead(302, 'Found Elsewhere', { location: '/u/abc/new' });
      res.end();
    } else {
      redirectTargetHit = true;
      res.end('new');
    }
  });
  const front = await startFront(t, up.port);
  const gz = await send(front.port, { path: `${PREFIX}/gz`, headers: { 'accept-encoding': 'gzip' } });
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(gz.headers['content-length'], String(compressed.length));
  assert.ok(gz.body.equals(compressed));
  const redirect = await send(front.port, { path: `${PREFIX}/old` });
  assert.equal(redirect.status, 302);
  assert.equal(redirect.statusMessage, 'Found Elsewhere');
  assert.equal(redirect.headers.location, '/u/abc/new');
  assert.equal(redirectTargetHit, false);
});

test('a client leaving an event stream closes the upstream request too', async (t) => {
  let upstreamClosed = false;
  const up = await startUpstream(t, (_req, res) => {
    res.on('close', () => (upstreamClosed = !res.writableFinished));
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: hello\n\n');
  });
  const front = await startFront(t, up.port);
  await new Promise<void>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: front.port, path: `${PREFIX}/events`, agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => undefined);
    req.on('close', resolve);
    setTimeout(() => reject(new Error('no first event')), 2000).unref();
  });
  await waitUntil(() => upstreamClosed, 'the upstream request to close');
  await waitUntil(() => front.outcomes.length === 1, 'the outcome');
  assert.deepEqual(front.outcomes, ['client-aborted']);
});

test('a client leaving a long poll before any answer closes the upstream request too', async (t) => {
  let upstreamClosed = false;
  let pollArrived = false;
  const up = await startUpstream(t, (_req, res) => {
    pollArrived = true;
    res.on('close', () => (upstreamClosed = !res.writableFinished));
  });
  const front = await startFront(t, up.port);
  const req = http.get({ host: '127.0.0.1', port: front.port, path: `${PREFIX}/poll`, agent: false });
  req.on('error', () => undefined);
  await waitUntil(() => pollArrived, 'the poll to reach the upstream');
  req.destroy();
  await waitUntil(() => upstreamClosed, 'the upstream request to close');
  await waitUntil(() => front.outcomes.length === 1, 'the outcome');
  assert.deepEqual(front.outcomes, ['client-aborted']);
});

test('the head of a stream that has not started yet reaches the client at once', async (t) => {
  let firstEventWrittenAt = 0;
  const up = await startUpstream(t, async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.flushHeaders();
    await sleep(300);
    firstEventWrittenAt = performance.now();
    res.end('data: late\n\n');
  });
  const front = await startFront(t, up.port);
  const headAt = await new Promise<number>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: front.port, path: `${PREFIX}/events`, agent: false }, (res) => {
        resolve(performance.now());
        res.resume();
      })
      .on('error', reject);
  });
  assert.ok(firstEventWrittenAt === 0 || headAt < firstEventWrittenAt, 'the response head waited for the first event');
  await waitUntil(() => front.outcomes.length === 1, 'the stream to finish');
});

test('an unreachable upstream answers 502 with the reason', async (t) => {
  const probe = http.createServer();
  const closedPort = await listen(probe);
  await stop(probe);
  const front = await startFront(t, closedPort);
  const reply = await send(front.port, { path: `${PREFIX}/anything` });
  assert.equal(reply.status, 502);
  assert.equal(reply.headers['content-type'], 'application/json; charset=utf-8');
  const { error } = JSON.parse(reply.body.toString()) as { error: string };
  assert.match(error, /^editor unreachable: .*ECONNREFUSED/);
  await waitUntil(() => front.outcomes.length === 1, 'the outcome');
  assert.deepEqual(front.outcomes, ['upstream-error']);
});

test('an upstream dying mid-answer shows as a broken answer, not a complete one', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 1000 });
    res.write('only part of it');
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const front = await startFront(t, up.port);
  await assert.rejects(send(front.port, { path: `${PREFIX}/partial` }));
  await waitUntil(() => front.outcomes.length === 1, 'the outcome');
  assert.deepEqual(front.outcomes, ['upstream-error']);
});

test('a keep-alive socket the upstream dropped is retried for bodiless requests only', async (t) => {
  // Every connection answers its first request and then drops, unanswered, the next one sent on it: what a
  // pooled socket looks like when the upstream's idle timer fired just as it was reused.
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    let answered = false;
    socket.on('data', () => {
      if (answered) return void socket.destroy();
      answered = true;
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=60\r\n\r\nok');
    });
    socket.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const front = await startFront(t, (server.address() as AddressInfo).port);

  assert.equal((await send(front.port, { path: `${PREFIX}/a` })).status, 200);
  assert.equal((await send(front.port, { path: `${PREFIX}/b` })).status, 200);
  assert.equal(connections, 2, 'the second request should have been retried on a fresh connection');

  const upload = await send(front.port, { method: 'POST', path: `${PREFIX}/c`, body: 'not replayable' });
  assert.equal(upload.status, 502);
  assert.equal(connections, 2);
});

type WsUpstream = { port: number; wss: WebSocketServer; seen: Array<{ url: string | undefined; headers: IncomingHttpHeaders }> };

async function startWsUpstream(t: TestContext): Promise<WsUpstream> {
  const server = http.createServer();
  const wss = new WebSocketServer({ server, handleProtocols: (protocols) => (protocols.has('mrmd.v1') ? 'mrmd.v1' : false) });
  const seen: WsUpstream['seen'] = [];
  wss.on('connection', (ws, req) => {
    seen.push({ url: req.url, headers: req.headers });
    ws.on('message', (data: RawData, isBinary: boolean) => {
      if (!isBinary && data.toString() === 'please close') ws.close(4001, 'access revoked');
      else ws.send(data as Buffer, { binary: isBinary });
    });
  });
  const port = await listen(server);
  t.after(async () => {
    for (const client of wss.clients) client.terminate();
    wss.close();
    await stop(server);
  });
  return { port, wss, seen };
}

async function openClient(t: TestContext, port: number): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${PREFIX}/ws?doc=1`, 'mrmd.v1');
  t.after(() => ws.terminate());
  await once(ws, 'open');
  return ws;
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data: RawData, isBinary: boolean) => resolve({ data: data as Buffer, isBinary })));
}

for (const mode of upgradeModes) {
  test(`${mode.kind}: WebSocket messages echo through, text and binary kept apart`, async (t) => {
    const up = await startWsUpstream(t);
    const front = await startFront(t, up.port, { upgrades: mode });
    const ws = await openClient(t, front.port);
    assert.equal(ws.protocol, 'mrmd.v1');
    assert.equal(up.seen[0]?.url, '/ws?doc=1');
    assert.equal(up.seen[0]?.headers.host, `127.0.0.1:${up.port}`);
    assert.equal(up.seen[0]?.headers['x-forwarded-prefix'], PREFIX);

    let reply = nextMessage(ws);
    ws.send('hello');
    assert.deepEqual(await reply, { data: Buffer.from('hello'), isBinary: false });

    reply = nextMessage(ws);
    ws.send(Buffer.from([0, 1, 2, 255]));
    assert.deepEqual(await reply, { data: Buffer.from([0, 1, 2, 255]), isBinary: true });

    const big = randomBytes(1024 * 1024);
    reply = nextMessage(ws);
    ws.send(big);
    const echoed = await reply;
    assert.equal(echoed.isBinary, true);
    assert.equal(sha256(echoed.data), sha256(big));
    assert.deepEqual(front.upgrades, ['opened']);
  });

  test(`${mode.kind}: a close code and reason from the upstream reach the client`, async (t) => {
    const up = await startWsUpstream(t);
    const front = await startFront(t, up.port, { upgrades: mode });
    const ws = await openClient(t, front.port);
    const closed = once(ws, 'close');
    ws.send('please close');
    const [code, reason] = (await closed) as [number, Buffer];
    assert.equal(code, 4001);
    assert.equal(reason.toString(), 'access revoked');
    await waitUntil(() => front.tunnels.count('abc') === 0, 'the tunnel to be forgotten');
  });

  test(`${mode.kind}: an upstream refusing the upgrade fails the client handshake with its status`, async (t) => {
    const server = http.createServer();
    server.on('upgrade', (_req, socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nforbidden');
    });
    const port = await listen(server);
    t.after(() => stop(server));
    const front = await startFront(t, port, { upgrades: mode });
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}${PREFIX}/ws`);
    t.after(() => ws.terminate());
    const status = await new Promise<number>((resolve) => {
      ws.on('unexpected-response', (req, res) => {
        resolve(res.statusCode!);
        req.destroy();
      });
    });
    ws.on('error', () => undefined);
    assert.equal(status, 403);
    await waitUntil(() => front.upgrades.length === 1, 'the outcome');
    assert.deepEqual(front.upgrades, ['refused']);
  });

  test(`${mode.kind}: an unreachable upstream fails the upgrade with 502`, async (t) => {
    const probe = http.createServer();
    const closedPort = await listen(probe);
    await stop(probe);
    const front = await startFront(t, closedPort, { upgrades: mode });
    const ws = new WebSocket(`ws://127.0.0.1:${front.port}${PREFIX}/ws`);
    t.after(() => ws.terminate());
    const [err] = (await once(ws, 'error').catch((e: unknown) => [e])) as [Error];
    assert.match(err.message, /Unexpected server response: 502/);
    await waitUntil(() => front.upgrades.length === 1, 'the outcome');
    assert.deepEqual(front.upgrades, ['upstream-error']);
  });

  test(`${mode.kind}: closeAll cuts the live tunnels of a key`, async (t) => {
    const up = await startWsUpstream(t);
    const front = await startFront(t, up.port, { upgrades: mode });
    const ws = await openClient(t, front.port);
    await waitUntil(() => front.tunnels.count('abc') === 1, 'the tunnel to be registered');
    assert.equal(front.tunnels.count('someone-else'), 0);
    const closed = once(ws, 'close');
    assert.equal(front.tunnels.closeAll('abc'), 1);
    await closed;
    assert.equal(ws.readyState, WebSocket.CLOSED);
    assert.equal(front.tunnels.count(), 0);
    await waitUntil(() => up.wss.clients.size === 0, 'the upstream side to close');
  });

  test(`${mode.kind}: closeWhere cuts the tunnels whose meta matches, and only those`, async (t) => {
    const up = await startWsUpstream(t);
    const front = await startFront(t, up.port, { upgrades: mode, sessionId: 'session-a' });
    const ws = await openClient(t, front.port);
    await waitUntil(() => front.tunnels.count('abc') === 1, 'the tunnel to be registered');
    assert.equal(front.tunnels.closeWhere((meta) => meta.sessionId === 'session-b'), 0);
    assert.equal(ws.readyState, WebSocket.OPEN);
    const closed = once(ws, 'close');
    assert.equal(front.tunnels.closeWhere((meta, key) => meta.sessionId === 'session-a' && key === 'abc'), 1);
    await closed;
    assert.equal(front.tunnels.count(), 0);
    await waitUntil(() => up.wss.clients.size === 0, 'the upstream side to close');
  });

}

test('the relay passes on only the client messages its filter admits, and every upstream message', async (t) => {
  const up = await startWsUpstream(t);
  const admitted: string[] = [];
  const front = await startFront(t, up.port, {
    upgrades: {
      kind: 'relay',
      clientFilter: (data, isBinary) => {
        const ok = isBinary && data[0] === 1;
        if (ok) admitted.push(data.toString('hex'));
        return ok;
      },
    },
  });
  const ws = await openClient(t, front.port);
  assert.equal(ws.protocol, 'mrmd.v1', 'the subprotocol the upstream chose');
  const echoes: Buffer[] = [];
  ws.on('message', (data: RawData) => echoes.push(data as Buffer));
  ws.send(Buffer.from([2, 9]));
  ws.send('text is dropped');
  ws.send(Buffer.from([1, 7]));
  await waitUntil(() => echoes.length === 1, 'the admitted message to echo');
  assert.deepEqual(echoes, [Buffer.from([1, 7])], 'only the admitted message reached the upstream (and echoed back)');
  assert.deepEqual(admitted, ['0107']);
});

test("the edge's own cookie and Authorization never reach the upstream; other cookies do", async (t) => {
  let seen!: IncomingHttpHeaders;
  const up = await startUpstream(t, (req, res) => {
    seen = req.headers;
    res.end('ok');
  });
  const front = await startFront(t, up.port, { edgeCookie: 'markco_session' });
  await send(front.port, { path: `${PREFIX}/x`, headers: { cookie: 'theme=dark; markco_session=secret-token; lang=fr', authorization: 'Bearer secret-token' } });
  assert.equal(seen.cookie, 'theme=dark; lang=fr');
  assert.equal(seen.authorization, undefined);
  await send(front.port, { path: `${PREFIX}/x`, headers: { cookie: 'markco_session=secret-token' } });
  assert.equal(seen.cookie, undefined, 'a Cookie header holding only the edge cookie is dropped');

  const ws = await startWsUpstream(t);
  for (const mode of upgradeModes) {
    const wsFront = await startFront(t, ws.port, { upgrades: mode, edgeCookie: 'markco_session' });
    const client = new WebSocket(`ws://127.0.0.1:${wsFront.port}${PREFIX}/ws`, { headers: { cookie: 'markco_session=secret-token; theme=dark', authorization: 'Bearer secret-token' } });
    t.after(() => client.terminate());
    await once(client, 'open');
    const last = ws.seen.at(-1)!;
    assert.equal(last.headers.cookie, 'theme=dark', mode.kind);
    assert.equal(last.headers.authorization, undefined, mode.kind);
  }
});
