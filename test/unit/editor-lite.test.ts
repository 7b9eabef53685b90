import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import { WebSocket } from 'ws';
import { waitFor } from '../../infra/dev/processes.js';
import { renderPage } from '../../images/editor-lite/page.js';
import { startEditorLite, type EditorLite, type EditorLiteOptions } from '../../images/editor-lite/server.js';

// The server's y-websocket helper is CommonJS and loads yjs's CommonJS build; loading the clients the same
// way keeps one copy of yjs in the process (two copies break its constructor checks).
const require = createRequire(import.meta.url);
const Y = require('yjs') as typeof import('yjs');
const { WebsocketProvider } = require('y-websocket') as typeof import('y-websocket');

const STREAM_GAP_MS = 300;

function waitUntil(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  return waitFor(
    what,
    async () => {
      if (!condition()) throw new Error('not yet');
    },
    { timeoutMs, intervalMs: 10 },
  );
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

interface FakeRuntime {
  name: string;
  port: number;
  /** performance.now() when the stream handler wrote each SSE event. */
  streamSentAt: Record<string, number>;
  streamsClosedEarly: number;
}

/** A stand-in for mrmd-python's MRP server: capabilities, execute (echo), execute/stream (SSE), and an upload echo. */
async function startFakeRuntime(t: TestContext, name: string): Promise<FakeRuntime> {
  const fake: FakeRuntime = { name, port: 0, streamSentAt: {}, streamsClosedEarly: 0 };
  let executionCount = 0;
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://runtime.invalid');
    const route = `${req.method} ${url.pathname}`;
    void (async () => {
      if (route === 'GET /mrp/v1/capabilities') {
        sendJson(res, 200, { runtime: 'mrmd-python', name, query: url.search, xTest: req.headers['x-test'] ?? null });
      } else if (route === 'POST /mrp/v1/execute') {
        const { code } = JSON.parse((await readBody(req)).toString('utf8')) as { code: string };
        executionCount += 1;
        sendJson(res, 200, { success: true, result: code, executionCount, runtime: name, xTest: req.headers['x-test'] ?? null });
      } else if (route === 'POST /upload') {
        const body = await readBody(req);
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          'x-received-sha256': createHash('sha256').update(body).digest('hex'),
        });
        res.end(body);
      } else if (route === 'POST /mrp/v1/execute/stream') {
        await readBody(req);
        res.on('close', () => {
          if (!res.writableFinished) fake.streamsClosedEarly += 1;
        });
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(`event: start\ndata: {"execId":"e1"}\n\n`);
        fake.streamSentAt.start = performance.now();
        await delay(STREAM_GAP_MS);
        if (res.destroyed) return;
        res.write(`event: result\ndata: {"success":true,"result":"42"}\n\n`);
        fake.streamSentAt.result = performance.now();
        res.end(`event: done\ndata: {}\n\n`);
      } else {
        sendJson(res, 404, { error: `fake runtime: no ${route}` });
      }
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  fake.port = (server.address() as { port: number }).port;
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return fake;
}

async function startEditor(t: TestContext, opts: Partial<EditorLiteOptions> = {}): Promise<EditorLite & { logs: Record<string, unknown>[] }> {
  const logs: Record<string, unknown>[] = [];
  const editor = await startEditorLite({ port: 0, projectDir: process.cwd(), log: (entry) => logs.push(entry), ...opts });
  t.after(() => editor.close());
  return { ...editor, logs };
}

async function openEvents(t: TestContext, editorPort: number): Promise<string[]> {
  const messages: string[] = [];
  const ws = new WebSocket(`ws://127.0.0.1:${editorPort}/events`);
  ws.on('message', (data) => messages.push(String(data)));
  t.after(() => ws.terminate());
  await once(ws, 'open');
  await waitUntil(() => messages.length > 0, 'the events greeting');
  return messages;
}

test('GET /health answers 200 with the mrmd-server body', async (t) => {
  const editor = await startEditor(t);
  const res = await fetch(`http://127.0.0.1:${editor.port}/health`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: 'ok', version: '0.1.0' });
  assert.equal(editor.logs[0]?.event, 'start');
});

test('the proxy reaches the runtime: JSON execute, headers and query kept, a 5 MiB binary upload byte-identical', async (t) => {
  const runtime = await startFakeRuntime(t, 'A');
  const editor = await startEditor(t, { cloudMode: true, runtimePort: runtime.port });
  const base = `http://127.0.0.1:${editor.port}/proxy/${runtime.port}`;

  const exec = await fetch(`${base}/mrp/v1/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-test': 'kept' },
    body: JSON.stringify({ code: 'x = 42' }),
  });
  assert.equal(exec.status, 200);
  assert.deepEqual(await exec.json(), { success: true, result: 'x = 42', executionCount: 1, runtime: 'A', xTest: 'kept' });

  const caps = await fetch(`${base}/mrp/v1/capabilities?a=1&b=%2F`);
  assert.deepEqual(await caps.json(), { runtime: 'mrmd-python', name: 'A', query: '?a=1&b=%2F', xTest: null });

  // Sent as a stream (chunked, no content-length) so the proxy must pipe it rather than parse it.
  const payload = randomBytes(5 * 1024 * 1024);
  const upload = await fetch(`${base}/upload`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: new Blob([payload]).stream(),
    duplex: 'half',
  } as RequestInit);
  assert.equal(upload.status, 200);
  assert.equal(upload.headers.get('x-received-sha256'), createHash('sha256').update(payload).digest('hex'));
  const echoed = Buffer.from(await upload.arrayBuffer());
  assert.equal(echoed.length, payload.length);
  assert.ok(echoed.equals(payload), 'the echoed body differs from the upload');
});

test('SSE from execute/stream arrives as it happens, and a browser that leaves aborts the runtime request', async (t) => {
  const runtime = await startFakeRuntime(t, 'A');
  const editor = await startEditor(t, { cloudMode: true, runtimePort: runtime.port });
  const streamUrl = `http://127.0.0.1:${editor.port}/proxy/${runtime.port}/mrp/v1/execute/stream`;
  const init: RequestInit = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"x"}' };

  const res = await fetch(streamUrl, init);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'text/event-stream');
  const decoder = new TextDecoder();
  let text = '';
  let firstEventReceivedAt: number | undefined;
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    text += decoder.decode(chunk, { stream: true });
    if (firstEventReceivedAt === undefined && text.includes('event: start')) firstEventReceivedAt = performance.now();
  }
  assert.deepEqual(
    [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]),
    ['start', 'result', 'done'],
  );
  assert.ok(firstEventReceivedAt !== undefined && runtime.streamSentAt.result !== undefined);
  assert.ok(
    firstEventReceivedAt < runtime.streamSentAt.result,
    `the first event reached the browser only after the runtime sent the last one (buffered proxy)`,
  );

  const abort = new AbortController();
  const leaving = await fetch(streamUrl, { ...init, signal: abort.signal });
  const reader = (leaving.body as ReadableStream<Uint8Array>).getReader();
  assert.match(decoder.decode((await reader.read()).value), /event: start/);
  abort.abort();
  await reader.cancel().catch(() => undefined);
  await waitUntil(() => runtime.streamsClosedEarly === 1, 'the runtime to see its stream request aborted', STREAM_GAP_MS * 5);
});

test('the proxy refuses every port but the runtime one, and says 502 when the runtime is down', async (t) => {
  const runtime = await startFakeRuntime(t, 'A');
  const editor = await startEditor(t, { cloudMode: true, runtimePort: runtime.port });
  const otherPort = runtime.port === 65535 ? 65534 : runtime.port + 1;
  for (const url of [`/proxy/${otherPort}/mrp/v1/capabilities`, `/proxy/22/`, `/proxy/${runtime.port}x/mrp/v1/capabilities`]) {
    const res = await fetch(`http://127.0.0.1:${editor.port}${url}`);
    assert.equal(res.status, 403, url);
    const body = (await res.json()) as { error: string };
    assert.match(body.error, new RegExp(`only the runtime port ${runtime.port}`));
  }

  const down = await startEditor(t, { cloudMode: true, runtimePort: 1 });
  const res = await fetch(`http://127.0.0.1:${down.port}/proxy/1/mrp/v1/capabilities`);
  assert.equal(res.status, 502);
  assert.match(((await res.json()) as { error: string }).error, /ECONNREFUSED/);
  assert.ok(down.logs.some((entry) => entry.event === 'proxy-upstream-error'));
});

test('update-port validates its body, moves /proxy to the new runtime and announces runtime-changed', async (t) => {
  const first = await startFakeRuntime(t, 'A');
  const second = await startFakeRuntime(t, 'B');
  const editor = await startEditor(t, { cloudMode: true, runtimePort: first.port });
  const updatePort = (body: string) =>
    fetch(`http://127.0.0.1:${editor.port}/api/runtime/update-port`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  for (const bad of ['{}', '{"port":"8000"}', '{"port":0}', '{"port":70000}', '{"port":1.5}', `{"port":${second.port},"host":5}`, 'not json']) {
    const res = await updatePort(bad);
    assert.equal(res.status, 400, bad);
    const { error } = (await res.json()) as { error: unknown };
    assert.ok(typeof error === 'string' && error.length > 0, `no error message for ${bad}`);
  }

  const notCloud = await startEditor(t, { runtimePort: first.port });
  const refused = await fetch(`http://127.0.0.1:${notCloud.port}/api/runtime/update-port`, { method: 'POST', body: `{"port":${second.port}}` });
  assert.equal(refused.status, 400);
  assert.deepEqual(await refused.json(), { error: 'Not in cloud mode' });

  const events = await openEvents(t, editor.port);
  const moved = await updatePort(`{"port":${second.port},"host":"localhost"}`);
  assert.equal(moved.status, 200);
  assert.deepEqual(await moved.json(), {
    success: true,
    oldPort: first.port,
    newPort: second.port,
    oldHost: '127.0.0.1',
    newHost: 'localhost',
    sessionsUpdated: 0,
  });

  const caps = await fetch(`http://127.0.0.1:${editor.port}/proxy/${second.port}/mrp/v1/capabilities`);
  assert.equal(((await caps.json()) as { name: string }).name, 'B');
  const old = await fetch(`http://127.0.0.1:${editor.port}/proxy/${first.port}/mrp/v1/capabilities`);
  assert.equal(old.status, 403);
  const info = await fetch(`http://127.0.0.1:${editor.port}/api/runtime`);
  assert.deepEqual(await info.json(), { port: second.port, host: 'localhost', cloud: true });

  await waitUntil(() => events.length >= 2, 'runtime-changed on /events');
  assert.deepEqual(JSON.parse(events[1] as string), { event: 'runtime-changed', data: { port: second.port, host: 'localhost' } });
  assert.ok(editor.logs.some((entry) => entry.event === 'update-port' && entry.newPort === second.port));
});

test('/events greets with the exact mrmd-server message', async (t) => {
  const editor = await startEditor(t);
  const events = await openEvents(t, editor.port);
  assert.equal(events[0], '{"event":"connected","data":{"message":"Connected to mrmd-server events"}}');
});

test('two Yjs clients sync a text edit through /sync/<syncPort>/<doc>', async (t) => {
  const editor = await startEditor(t);
  const sync = await fetch(`http://127.0.0.1:${editor.port}/api/project/sync`);
  assert.deepEqual(await sync.json(), { port: editor.syncPort });

  const serverUrl = `ws://127.0.0.1:${editor.port}/sync/${editor.syncPort}`;
  const room = `notes/doc-${randomBytes(4).toString('hex')}.md`;
  // disableBc: otherwise two providers in one process sync through a BroadcastChannel, bypassing the relay.
  const providerOptions = { WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true };
  const docA = new Y.Doc();
  const docB = new Y.Doc();
  const a = new WebsocketProvider(serverUrl, room, docA, providerOptions);
  const b = new WebsocketProvider(serverUrl, room, docB, providerOptions);
  t.after(() => {
    a.destroy();
    b.destroy();
    docA.destroy();
    docB.destroy();
  });
  await waitUntil(() => a.synced && b.synced, 'both providers to sync with the server');

  docA.getText('body').insert(0, 'hello from A');
  await waitUntil(() => docB.getText('body').toString() === 'hello from A', 'the edit to reach B');
  docB.getText('body').insert(docB.getText('body').length, ', and B');
  await waitUntil(() => docA.getText('body').toString() === 'hello from A, and B', 'the edit to reach A');
});

test('/sync to any other port is refused; the page honours BASE_PATH and escapes the user name', async (t) => {
  const hostileName = `</script><script>alert(1)</script>"'&`;
  const editor = await startEditor(t, { cloudMode: true, basePath: 'u/abc', cloudUser: { name: hostileName } });

  const wrongPort = editor.syncPort === 65535 ? 65534 : editor.syncPort + 1;
  const refused = new WebSocket(`ws://127.0.0.1:${editor.port}/sync/${wrongPort}/x`);
  const [error] = (await once(refused, 'error')) as [Error];
  assert.match(error.message, /Unexpected server response: 403/);

  const page = await fetch(`http://127.0.0.1:${editor.port}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  const html = await page.text();
  assert.ok(html.includes('<base href="/u/abc/">'));
  const serverUrlScript = '<script>window.MRMD_SERVER_URL = location.origin + "/u/abc/"</script>';
  assert.equal(html.indexOf('<script'), html.indexOf(serverUrlScript), 'MRMD_SERVER_URL must be set before any other script');
  assert.doesNotMatch(html, /(src|href)="\/(?!u\/abc\/">)/, 'asset paths must be relative');
  assert.ok(!html.includes('<script>alert(1)'), 'the user name was interpolated unescaped');
  assert.ok(html.includes('&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;'));
  assert.deepEqual(await (await fetch(`http://127.0.0.1:${editor.port}/api/user/me`)).json(), {
    id: null,
    name: hostileName,
    email: null,
    avatar_url: null,
    plan: 'free',
  });

  const appJs = await fetch(`http://127.0.0.1:${editor.port}/app.js`);
  assert.match(appJs.headers.get('content-type') ?? '', /javascript/);
  assert.match(await appJs.text(), /MRMD_SERVER_URL[^\n]*'events'/);

  // A BASE_PATH that tries to close the script element stays inside the JS string.
  const hostilePage = renderPage({ basePath: '/x"</script><script>alert(2)//', userName: null, runtimeAddress: '(none)' });
  assert.ok(!hostilePage.includes('<script>alert(2)'));
  assert.ok(hostilePage.includes('location.origin + "/x\\"\\u003c/script\\u003e\\u003cscript\\u003ealert(2)//"'));
});

test('the CLI entry: env and argv map to the server, SIGTERM stops it cleanly, --no-auth is required', async (t) => {
  const mainTs = fileURLToPath(new URL('../../images/editor-lite/main.ts', import.meta.url));
  const projectDir = mkdtempSync(path.join(tmpdir(), 'editor-lite-'));
  t.after(() => rmSync(projectDir, { recursive: true, force: true }));
  const env = {
    ...process.env,
    CLOUD_MODE: '1',
    RUNTIME_PORT: '4321',
    RUNTIME_HOST: '10.0.0.7',
    BASE_PATH: '/u/abc/',
    CLOUD_USER_ID: 'u1',
    CLOUD_USER_NAME: 'Ada',
    CLOUD_USER_EMAIL: 'ada@example.test',
    CLOUD_USER_PLAN: 'pro',
  };
  const child = spawn(process.execPath, ['--import', 'tsx', mainTs, '--port', '0', '--host', '127.0.0.1', '--no-auth', projectDir], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout });
  let start: { port: number; projectDir: string } | undefined;
  for await (const line of lines) {
    const entry = JSON.parse(line) as { event: string; port: number; projectDir: string };
    if (entry.event === 'start') {
      start = entry;
      break;
    }
  }
  assert.ok(start, 'no start line on stdout');
  assert.equal(start.projectDir, projectDir);
  const base = `http://127.0.0.1:${start.port}`;
  assert.deepEqual(await (await fetch(`${base}/api/runtime`)).json(), { port: 4321, host: '10.0.0.7', cloud: true });
  assert.deepEqual(await (await fetch(`${base}/api/user/me`)).json(), {
    id: 'u1',
    name: 'Ada',
    email: 'ada@example.test',
    avatar_url: null,
    plan: 'pro',
  });
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  assert.deepEqual(await exited, [0, null]);

  const withoutNoAuth = spawn(process.execPath, ['--import', 'tsx', mainTs, '--port', '0', projectDir], { env, stdio: 'ignore' });
  assert.deepEqual(await once(withoutNoAuth, 'exit'), [2, null]);
});
