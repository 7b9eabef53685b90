import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { openApiPath, undocumentedRoutes } from '../../api/openapi.js';
import { freshDatabase, useHarness, type TestDatabase } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { startWorkerProcess, testWorkerEnv } from '../support/worker-process.js';

/**
 * `/metrics` and `/api/docs` on the real edge over a real PostgreSQL: the numbers move with traffic through
 * `/u/<id>/` (to a stand-in editor: an HTTP and WebSocket server on loopback, recorded as the user's
 * editor) and with rows the workflows would write; non-operators are refused; the OpenAPI document
 * lists every registered route.
 */
const h = useHarness();

/** One sample's value from an exposition, or 0 when the series is absent (a counter not yet touched). */
function sampleValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** A loopback port free right now (the worker process binds it itself). */
async function freePort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('/metrics and /api/docs on the edge', () => {
  let db: TestDatabase;
  let edge: RunningEdge;
  let editor: Server;
  let owner: { id: string; cookie: string };
  let runtimeId: string;
  const editorBody = 'hello from the stand-in editor';

  const scrape = async (headers: Record<string, string> = { authorization: `Bearer ${testAdminToken}` }) => {
    const res = await fetch(`${edge.url}/metrics`, { headers });
    return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
  };
  const metrics = async () => {
    const res = await scrape();
    assert.equal(res.status, 200, res.text);
    return res.text;
  };

  before(async () => {
    db = await freshDatabase(h.state);
    edge = await startTestEdge(h.state, db, `metrics-${randomBytes(3).toString('hex')}`);
    editor = createServer((_req, res) => res.end(editorBody));
    const sockets = new WebSocketServer({ server: editor });
    sockets.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
    await new Promise<void>((resolve) => editor.listen(0, '127.0.0.1', resolve));
    const { user } = await db.store.users.ensureByEmail({ email: 'metrics-owner@example.test' });
    const session = await db.store.sessions.create(user.id);
    owner = { id: user.id, cookie: `markco_session=${session.token}` };
    await db.pool.query(`INSERT INTO hosts (id, kind, address, state) VALUES ('base', 'base', '127.0.0.1', 'ready')`);
    const runtime = await db.pool.query<{ id: string }>(
      `INSERT INTO runtimes (user_id, container_name, host_id, port, state, memory_limit_bytes, cpu_limit, image)
       VALUES ($1, 'metrics-runtime', 'base', 1, 'running', 1073741824, 1, 'test') RETURNING id`,
      [user.id],
    );
    runtimeId = runtime.rows[0]!.id;
    await db.pool.query(`INSERT INTO editors (user_id, runtime_id, container_name, host_id, port, state) VALUES ($1, $2, 'metrics-editor', 'base', $3, 'running')`, [
      user.id,
      runtimeId,
      (editor.address() as AddressInfo).port,
    ]);
  });

  after(async () => {
    await edge?.close();
    editor?.closeAllConnections();
    await new Promise((resolve) => editor?.close(resolve));
    await db?.drop();
  });

  test('refuses anyone but operators', async () => {
    assert.equal((await scrape({})).status, 401);
    assert.equal((await scrape({ authorization: 'Bearer not-the-admin-token' })).status, 403);
    assert.equal((await scrape({ cookie: owner.cookie })).status, 403, 'a signed-in user who is not an operator');
    const ok = await scrape();
    assert.equal(ok.status, 200);
    assert.match(ok.type, /^text\/plain; version=0\.0\.4/);
  });

  test('a request and a WebSocket through /u/<id>/ move the proxy counters', async () => {
    const before = await metrics();
    const res = await fetch(`${edge.url}/u/${owner.id}/hello`, { headers: { cookie: owner.cookie } });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), editorBody);
    const ws = new WebSocket(`${edge.url.replace('http', 'ws')}/u/${owner.id}/sync`, { headers: { cookie: owner.cookie } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => ws.send('ping'));
      ws.once('message', () => resolve());
      ws.once('error', reject);
    });
    ws.close();
    const after = await metrics();
    const delta = (series: string) => sampleValue(after, series) - sampleValue(before, series);
    assert.equal(delta('markco_proxy_http_requests_total{outcome="completed"}'), 1, after);
    assert.equal(delta('markco_proxy_http_bytes_total{direction="down"}'), Buffer.byteLength(editorBody));
    assert.equal(delta('markco_proxy_websocket_upgrades_total{outcome="opened"}'), 1, after);
  });

  test('migrations, events, hosts and runtimes recorded in PostgreSQL show', async () => {
    const before = await metrics();
    await db.pool.query(
      `INSERT INTO migrations (runtime_id, user_id, reason, source_host_id, status, checkpoint_ms, transfer_ms, restore_ms, downtime_ms, started_at, completed_at)
       VALUES ($1, $2, 'pressure', 'base', 'completed', 1200, 300, 800, 2000, now() - interval '7 seconds', now())`,
      [runtimeId, owner.id],
    );
    await db.pool.query(`INSERT INTO events (type, source, user_id) VALUES ('runtime.migrated', 'test', $1)`, [owner.id]);
    const after = await metrics();
    const delta = (series: string) => sampleValue(after, series) - sampleValue(before, series);
    assert.equal(delta('markco_migration_phase_seconds_count{phase="checkpoint"}'), 1, after);
    assert.equal(delta('markco_migration_phase_seconds_bucket{phase="checkpoint",le="1"}'), 0, 'a 1.2 s checkpoint is above the 1 s bucket');
    assert.equal(delta('markco_migration_phase_seconds_bucket{phase="checkpoint",le="2.5"}'), 1);
    assert.ok(Math.abs(delta('markco_migration_phase_seconds_sum{phase="downtime"}') - 2) < 1e-9, after);
    assert.equal(delta('markco_migration_duration_seconds_bucket{status="completed",le="5"}'), 0);
    assert.equal(delta('markco_migration_duration_seconds_bucket{status="completed",le="10"}'), 1);
    assert.equal(delta('markco_migrations{status="completed",reason="pressure"}'), 1);
    assert.equal(delta('markco_events_total{type="runtime.migrated",source="test"}'), 1);
    assert.equal(sampleValue(after, 'markco_hosts{kind="base",state="ready"}'), 1);
    assert.equal(sampleValue(after, 'markco_runtimes{kind="user",state="running"}'), 1);
    assert.equal(sampleValue(after, 'markco_editors{state="running"}'), 1);
  });

  test('/api/docs/openapi.json is an OpenAPI 3 document listing every route', async () => {
    const res = await fetch(`${edge.url}/api/docs/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { openapi: string; info: { title: string; version: string }; paths: Record<string, Record<string, { responses: object }>> };
    assert.match(doc.openapi, /^3\.\d+\.\d+$/);
    assert.ok(doc.info.title && doc.info.version);
    const documented = new Set(Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
    const registered = new Set(edge.app.routeList.map((r) => `${r.method} ${r.url}`));
    const missing = edge.app.routeList
      .filter((r) => !(r.url in undocumentedRoutes))
      // Fastify answers HEAD for every GET route by itself: documenting the GET covers it.
      .filter((r) => !(r.method === 'HEAD' && registered.has(`GET ${r.url}`)))
      .map((r) => `${r.method} ${openApiPath(r.url)}`)
      .filter((route) => !documented.has(route));
    assert.deepEqual([...new Set(missing)], [], 'every registered route is in api/openapi.ts routeDocs (or undocumentedRoutes, saying why)');
    const stale = [...documented].filter((route) => {
      const [method, path] = route.split(' ') as [string, string];
      return !registered.has(`${method} ${path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1')}`);
    });
    assert.deepEqual(stale, [], 'every documented route exists');
    const page = await fetch(`${edge.url}/api/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await page.text(), /\/api\/docs\/openapi\.json/);
  });
});

describe('the worker exports the Temporal SDK metrics', () => {
  test('MARKCO_WORKER_METRICS_ADDRESS serves them for Prometheus', async () => {
    const db = await freshDatabase(h.state);
    const port = await freePort();
    const logDir = join(h.state.runDir, 'worker-metrics');
    const taskQueue = `worker-metrics-${randomBytes(3).toString('hex')}`;
    const env = testWorkerEnv(h.state, { databaseUrl: db.url, taskQueue, deploymentId: taskQueue, dataDir: join(logDir, 'data') });
    const worker = startWorkerProcess({ ...env, MARKCO_WORKER_METRICS_ADDRESS: `127.0.0.1:${port}` }, { logDir, name: 'worker' });
    try {
      await worker.ready;
      // The SDK reports its pollers shortly after the worker starts polling.
      let text = '';
      for (let attempt = 0; attempt < 60 && !/^temporal_num_pollers/m.test(text); attempt++) {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        assert.equal(res.status, 200);
        text = await res.text();
        if (!/^temporal_num_pollers/m.test(text)) await new Promise((r) => setTimeout(r, 500));
      }
      assert.match(text, /^temporal_num_pollers\{.*task_queue="/m, `${text.slice(0, 2000)}\n${worker.tail()}`);
    } finally {
      await worker.stop();
      await db.drop();
    }
  });
});
