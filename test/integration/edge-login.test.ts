import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { WebSocket } from 'ws';
import type { HostShells } from '../../activities/host-shell.js';
import { waitFor } from '../../infra/dev/processes.js';
import { freshDatabase, registerBaseHost, testEnvironment, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { edgeClient } from '../support/edge-client.js';
import { startEdgeWorker, startGitServer, startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { hostEnvShell } from '../support/netns.js';

// One copy of yjs in the process: y-websocket's client is CommonJS and loads yjs's CommonJS build.
const require = createRequire(import.meta.url);
const Y = require('yjs') as typeof import('yjs');
const { WebsocketProvider } = require('y-websocket') as typeof import('y-websocket');

/**
 * The login-to-editor path as a user meets it, on real parts: dev login at the edge, the login workflow
 * on a real worker, podman containers from the built images, and everything reached through the edge's
 * `/u/<id>/` proxy and the editor (never the runtime directly).
 */
const h = useHarness();

interface Session {
  id: string;
  cookie: string;
}

describe('the edge: login, dashboard, /u/<id>/ proxy and the compute API', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Awaited<ReturnType<typeof startEdgeWorker>>;
  let edge: RunningEdge;
  let a: Session;
  let b: Session;
  let runtimePort: number;
  let syncPort: number;

  const { call, devLogin, wsOpen } = edgeClient(() => edge.url);

  const waitReady = (s: Session) =>
    waitFor(
      'the dashboard to show a running runtime and editor',
      async () => {
        const d = await call('/dashboard', { session: s, headers: { accept: 'application/json' } });
        if (d.json?.runtime?.state !== 'running' || d.json?.editor?.state !== 'running') throw new Error(JSON.stringify(d.json));
        return d.json;
      },
      { timeoutMs: 90_000, intervalMs: 250 },
    );

  const mrp = (s: Session, owner: string, path: string, body: unknown) => call(`/u/${owner}/proxy/${runtimePort}/mrp/v1/${path}`, { session: s, body });

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    worker = await startEdgeWorker(h.state, db, shells);
    edge = await startTestEdge(h.state, db, worker.taskQueue);
  });

  after(async () => {
    await edge?.close();
    await worker?.stop();
    for (const s of [a, b]) {
      if (!s) continue;
      await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${s.id}`, `ed-${s.id}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    }
    await shells.closeAll();
    await db.drop();
  });

  test('dev login sets an HttpOnly SameSite=Lax session cookie and the dashboard reaches ready', async () => {
    const login = await devLogin('ada@example.test');
    assert.match(login.setCookie, /HttpOnly/i);
    assert.match(login.setCookie, /SameSite=Lax/i);
    assert.doesNotMatch(login.setCookie, /Secure/i, 'no Secure flag on plain-HTTP localhost');
    a = login;
    const stored = await db.pool.query('SELECT encode(token_hash, $2) AS h FROM sessions WHERE user_id = $1', [a.id, 'hex']);
    assert.ok(!stored.rows.some((r) => a.cookie.includes(r.h)), 'the token is stored only as a hash');
    const ready = await waitReady(a);
    assert.equal(ready.user.email, 'ada@example.test');
    assert.equal(ready.runtime.tier, 'base');
    assert.equal(ready.editor.url, `/u/${a.id}/`);
    runtimePort = ready.runtime.port;
    syncPort = (await db.store.editors.live(a.id))!.syncPort!;
    const html = await call('/dashboard', { session: a, headers: { accept: 'text/html' } });
    assert.match(html.text, new RegExp(`href="/u/${a.id}/"`));
  });

  test('x = 42 runs through the edge and the editor, and reads back as "42"', async () => {
    assert.equal((await mrp(a, a.id, 'execute', { code: 'x = 42' })).json.success, true);
    const read = await mrp(a, a.id, 'execute', { code: 'x' });
    assert.equal(read.status, 200);
    assert.equal(read.json.result, '42');
  });

  test('the streaming execute delivers its SSE events as they happen', async () => {
    const res = await request(`${edge.url}/u/${a.id}/proxy/${runtimePort}/mrp/v1/execute/stream`, {
      method: 'POST',
      headers: { cookie: a.cookie, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ code: "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second', flush=True)" }),
    });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /text\/event-stream/);
    const seen: { text: string; at: number }[] = [];
    for await (const chunk of res.body) seen.push({ text: chunk.toString(), at: Date.now() });
    const firstAt = seen.find((c) => c.text.includes('first'))?.at;
    const secondAt = seen.find((c) => c.text.includes('second'))?.at;
    assert.ok(firstAt && secondAt, `both outputs arrived: ${seen.map((c) => c.text).join('')}`);
    assert.ok(secondAt - firstAt >= 1000, `the first event arrived ${secondAt - firstAt} ms before the second, not buffered to the end`);
    assert.match(seen.map((c) => c.text).join(''), /event: done/);
  });

  test('/events greets through the edge, and two Yjs clients sync one document via /sync/<port>/<doc>', async () => {
    const events = await wsOpen(`/u/${a.id}/events`, a);
    assert.equal(events.first, '{"event":"connected","data":{"message":"Connected to mrmd-server events"}}');
    events.ws?.close();

    // y-websocket builds the URL itself; the session travels as a cookie header, as a browser's would.
    class CookieWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols, { headers: { cookie: a.cookie } });
      }
    }
    const options = { WebSocketPolyfill: CookieWebSocket as unknown as typeof globalThis.WebSocket, disableBc: true };
    const serverUrl = `${edge.url.replace('http', 'ws')}/u/${a.id}/sync/${syncPort}`;
    const docA = new Y.Doc();
    const docB = new Y.Doc();
    const pa = new WebsocketProvider(serverUrl, 'Projects/Welcome/01-first-notebook.md', docA, options);
    const pb = new WebsocketProvider(serverUrl, 'Projects/Welcome/01-first-notebook.md', docB, options);
    try {
      // A plain throw, not assert.ok: a failing assert.ok parses the test's source to word its message, and
      // doing that every 50 ms starves the event loop the providers need.
      await waitFor(
        'both Yjs clients to sync',
        async () => {
          if (!(pa.synced && pb.synced)) throw new Error(`synced: ${pa.synced}, ${pb.synced}`);
        },
        { timeoutMs: 15_000, intervalMs: 50 },
      );
      docA.getText('body').insert(0, 'typed by A');
      await waitFor('the edit to reach B', async () => assert.equal(docB.getText('body').toString(), 'typed by A'), { timeoutMs: 10_000, intervalMs: 50 });
    } finally {
      pa.destroy();
      pb.destroy();
      // The documents own the providers' awareness timers: without this the test process never exits.
      docA.destroy();
      docB.destroy();
    }
  });

  test("user B's session gets 403 on every /u/<A>/ path, HTTP and WebSocket", async () => {
    b = await devLogin('bob@example.test');
    for (const path of [`/u/${a.id}/`, `/u/${a.id}/health`, `/u/${a.id}/api/runtime`]) {
      assert.equal((await call(path, { session: b })).status, 403, path);
    }
    const exec = await mrp(b, a.id, 'execute', { code: 'x' });
    assert.equal(exec.status, 403);
    assert.match(exec.json.message, /another user/);
    assert.equal((await wsOpen(`/u/${a.id}/events`, b)).status, 403);
    assert.equal((await wsOpen(`/u/${a.id}/sync/${syncPort}/doc.md`, b)).status, 403);
  });

  test('without a session: pages redirect to the login page, API calls get 401 JSON, WebSockets 401', async () => {
    const page = await call(`/u/${a.id}/`, { headers: { accept: 'text/html' } });
    assert.equal(page.status, 302);
    assert.equal(page.headers.location, `/login?next=${encodeURIComponent(`/u/${a.id}/`)}`);
    const api = await call(`/u/${a.id}/api/runtime`, { headers: { accept: 'application/json' } });
    assert.equal(api.status, 401);
    assert.equal(api.json.error, 'unauthenticated');
    assert.equal((await call('/dashboard', { headers: { accept: 'text/html' } })).status, 302);
    assert.equal((await call('/dashboard', { headers: { accept: 'application/json' } })).status, 401);
    assert.equal((await wsOpen(`/u/${a.id}/events`)).status, 401);
    assert.equal((await call(`/u/${a.id}/`, { headers: { cookie: 'markco_session=forged-token-forged-token-forged' } })).status, 401);
  });

  test('a request longer than 30 s streams through without being cut', async () => {
    const slow = await mrp(a, a.id, 'execute', { code: 'import time\ntime.sleep(31)\nx' });
    assert.equal(slow.status, 200);
    assert.equal(slow.json.result, '42');
  });

  test('the compute API: operators only, 202 + operation, ?wait, live stats, clear 4xx', async () => {
    assert.equal((await call('/api/runtimes', { body: { user_id: a.id } })).status, 401);
    assert.equal((await call('/api/runtimes', { body: { user_id: a.id }, headers: { authorization: 'Bearer wrong-token-wrong-token-wrong-token' } })).status, 403);
    assert.equal((await call('/api/runtimes', { body: { user_id: a.id }, session: a })).status, 403, 'a user session is not an operator');
    const admin = { authorization: `Bearer ${testAdminToken}` };
    const bad = await call('/api/runtimes', { body: { user_id: 'nope', plan: 'gold', extra: 1 }, headers: admin });
    assert.equal(bad.status, 400);
    assert.match(bad.json.message, /user_id: expected a user id/);
    assert.match(bad.json.message, /plan: expected one of free, pro, team/);
    assert.equal((await call('/api/runtimes', { body: { user_id: '00000000-0000-4000-8000-000000000000' }, headers: admin })).status, 404);

    const started = await call('/api/runtimes', { body: { user_id: a.id, plan: 'free' }, headers: admin });
    assert.equal(started.status, 202);
    const op = await call(`/api/operations/${started.json.operation_id}?wait=60`, { headers: admin });
    assert.equal(op.json?.status, 'completed', op.text);
    assert.equal(op.json.result.runtime.port, runtimePort, 'the same runtime: login is idempotent');
    const waited = await call('/api/runtimes?wait=60', { body: { user_id: a.id }, headers: admin });
    assert.equal(waited.status, 200);
    assert.equal(waited.json.status, 'completed');
    assert.equal(waited.json.step, 'done');

    const live = await call(`/api/runtimes/${a.id}`, { headers: admin });
    assert.equal(live.status, 200);
    assert.equal(live.json.state, 'running');
    assert.equal(live.json.port, runtimePort);
    assert.equal(live.json.tier, 'base');
    assert.equal(live.json.stats.memory_limit_bytes, 256 * 1024 * 1024);
    assert.ok(live.json.stats.memory_used_bytes > 1024 * 1024, 'a Python process uses some memory');
    assert.equal((await call(`/api/runtimes/${a.id}`, { headers: admin })).json.user_id, a.id);
    assert.equal((await call('/api/runtimes/not-a-uuid', { headers: admin })).status, 400);
    assert.equal((await call(`/api/operations/${started.json.operation_id}`, { session: b })).status, 404, "B cannot read A's operation");
    assert.equal((await call(`/api/operations/${started.json.operation_id}`, { session: a })).json.status, 'completed');
  });

  test('importing a public git repository clones it into the projects; bad URLs and duplicates are refused', async () => {
    const git = await startGitServer({ 'mrmd.md': '# Imported\n', '01-analysis.md': '# Analysis\n' });
    try {
      const imported = await call('/projects/import', { session: a, body: { repo_url: git.url('notes.git') } });
      assert.equal(imported.status, 201, imported.text);
      assert.equal(imported.json.project, 'notes');
      const dir = join(testEnvironment(h.state).usersDir, a.id, 'Projects', 'notes');
      assert.equal(readFileSync(join(dir, '01-analysis.md'), 'utf8'), '# Analysis\n');
      assert.equal((await call('/projects/import', { session: a, body: { repo_url: git.url('notes.git') } })).status, 409);
      const bad = await call('/projects/import', { session: a, body: { repo_url: 'file:///etc' } });
      assert.equal(bad.status, 400);
      assert.match(bad.json.message, /repo_url/);
      const missing = await call('/projects/import', { session: a, body: { repo_url: git.url('missing.git'), name: 'missing' } });
      assert.equal(missing.status, 400);
      assert.ok(!existsSync(join(testEnvironment(h.state).usersDir, a.id, 'Projects', 'missing')), 'a failed clone leaves nothing behind');
    } finally {
      await git.close();
    }
  });

  test("restarting the edge and the worker keeps A's editor reachable, with x still 42", async () => {
    await edge.close();
    await worker.stop();
    // A restart serves the same task queue, where the users' entities live.
    worker = await startEdgeWorker(h.state, db, shells, worker.taskQueue);
    edge = await startTestEdge(h.state, db, worker.taskQueue);
    const health = await call(`/u/${a.id}/health`, { session: a });
    assert.equal(health.status, 200);
    assert.equal((await mrp(a, a.id, 'execute', { code: 'x' })).json.result, '42');
    const events = await wsOpen(`/u/${a.id}/events`, a);
    assert.match(events.first ?? '', /connected/);
    events.ws?.close();
    const runtimes = await db.pool.query('SELECT count(*)::int AS n FROM runtimes WHERE user_id = $1', [a.id]);
    assert.equal(runtimes.rows[0].n, 1, 'nothing was started again');
  });

  test('signing in while both containers answer is ready at once with no workflow; a runtime gone behind its rows makes the sign-in start one', async () => {
    const loginRuns = async () => (await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM events WHERE user_id = $1 AND type = 'user.login-ready'`, [a.id])).rows[0]!.n;
    const runsBefore = await loginRuns();
    const warm = await call('/auth/dev/login', { body: { email: 'ada@example.test' } });
    assert.equal(warm.status, 200, warm.text);
    assert.equal(warm.json.editor.state, 'running', warm.text);
    assert.equal(warm.json.runtime.port, runtimePort);
    assert.equal(warm.json.operation_id, undefined, 'nothing to make, so no login workflow');
    assert.equal((await mrp(a, a.id, 'execute', { code: 'x' })).json.result, '42', 'the same runtime keeps serving');

    // The rows still say running, but the runtime's container is gone: the probe sees it, the login runs.
    await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${a.id}`]);
    const cold = await call('/auth/dev/login', { body: { email: 'ada@example.test' } });
    assert.equal(cold.status, 200, cold.text);
    assert.equal(cold.json.editor.state, 'starting', cold.text);
    assert.ok(cold.json.operation_id, 'the sign-in starts the login workflow');
    const op = await call(`/api/operations/${cold.json.operation_id}?wait=90`, { headers: { authorization: `Bearer ${testAdminToken}` } });
    assert.equal(op.json.status, 'completed', op.text);
    assert.equal(await loginRuns(), runsBefore + 1, 'exactly one login ran, for the sign-in that found the runtime gone');
    runtimePort = op.json.result.runtime.port;
    assert.equal((await mrp(a, a.id, 'execute', { code: '6 * 7' })).json?.result, '42', 'a runtime answers again through the edge');
  });

  test('when the runtime is stopped, the dashboard brings it back and the editor follows it', async () => {
    const admin = { authorization: `Bearer ${testAdminToken}` };
    const stopped = await call(`/api/runtimes/${a.id}?wait=60`, { method: 'DELETE', headers: admin });
    assert.equal(stopped.json.status, 'completed');
    assert.equal((await call(`/api/runtimes/${a.id}`, { headers: admin })).status, 404);
    const ready = await waitReady(a);
    runtimePort = ready.runtime.port;
    const read = await mrp(a, a.id, 'execute', { code: 'y = 7 * 6\ny' });
    assert.equal(read.json?.result, '42', read.text);
  });

  test('an editor container that died is brought back by the next visit', async () => {
    await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `ed-${a.id}`]);
    const broken = await call(`/u/${a.id}/health`, { session: a });
    assert.equal(broken.status, 502, 'the visit that finds it gone is told so');
    await waitFor(
      "A's editor to answer again",
      async () => {
        const res = await call(`/u/${a.id}/health`, { session: a });
        if (res.status !== 200) throw new Error(`status ${res.status}`);
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
    assert.equal((await mrp(a, a.id, 'execute', { code: 'y' })).json?.result, '42', 'the runtime kept its state');
  });

  test("while a new user's editor comes up, /u/<id>/ answers 'starting' with a retry hint, then the editor", async () => {
    const c = await devLogin('cleo@example.test');
    try {
      const page = await call(`/u/${c.id}/`, { session: c, headers: { accept: 'text/html' } });
      assert.equal(page.status, 503);
      assert.equal(page.headers['retry-after'], '2');
      assert.match(page.text, /Starting your editor/);
      assert.match(page.text, /http-equiv="refresh"/);
      const api = await call(`/u/${c.id}/api/runtime`, { session: c, headers: { accept: 'application/json' } });
      assert.equal(api.status, 503);
      assert.equal(api.json.status, 'starting');
      await waitReady(c);
      assert.equal((await call(`/u/${c.id}/health`, { session: c })).status, 200);
    } finally {
      await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${c.id}`, `ed-${c.id}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    }
  });

  test('without MARKCO_DEV_LOGIN the development login answers 404', async () => {
    const closed = await startTestEdge(h.state, db, worker.taskQueue, { devLogin: false });
    try {
      const res = await request(`${closed.url}/auth/dev/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'eve@example.test' }) });
      assert.equal(res.statusCode, 404);
      await res.body.text();
      assert.equal((await db.pool.query(`SELECT count(*)::int AS n FROM users WHERE email = 'eve@example.test'`)).rows[0].n, 0);
    } finally {
      await closed.close();
    }
  });
});

