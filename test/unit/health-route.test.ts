import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildApp } from '../../api/app.js';

test('health answers 200 with every part when all are up', async (t) => {
  const app = buildApp({ health: { database: async () => undefined, temporal: async () => ({ serverVersion: '1.x' }), worker: async () => ({ pollers: 1 }) } });
  t.after(() => app.close());
  const res = await app.inject({ method: 'GET', url: '/api/health' });
  assert.equal(res.statusCode, 200);
  const body = res.json();
  assert.equal(body.status, 'ok');
  assert.deepEqual(body.down, []);
  assert.deepEqual(Object.keys(body.parts), ['database', 'temporal', 'worker']);
  assert.deepEqual(body.parts.worker.detail, { pollers: 1 });
});

test('health answers 503 naming the part that is down, and why', async (t) => {
  const app = buildApp({
    health: {
      database: async () => undefined,
      worker: async () => {
        throw new Error('no worker is polling task queue markco-control');
      },
    },
  });
  t.after(() => app.close());
  const res = await app.inject({ method: 'GET', url: '/api/health' });
  assert.equal(res.statusCode, 503);
  const body = res.json();
  assert.equal(body.status, 'degraded');
  assert.deepEqual(body.down, ['worker']);
  assert.equal(body.parts.worker.status, 'down');
  assert.match(body.parts.worker.error, /no worker is polling/);
  assert.equal(body.parts.database.status, 'ok');
});

test('a part that does not answer in time counts as down', async (t) => {
  const app = buildApp({ health: { temporal: () => new Promise(() => undefined) } });
  t.after(() => app.close());
  const started = Date.now();
  const res = await app.inject({ method: 'GET', url: '/api/health' });
  assert.equal(res.statusCode, 503);
  assert.match(res.json().parts.temporal.error, /no answer within/);
  assert.ok(Date.now() - started < 5000);
});

test('unknown routes are JSON 404s that say what was asked', async (t) => {
  const app = buildApp({ health: {} });
  t.after(() => app.close());
  const res = await app.inject({ method: 'POST', url: '/api/nothing?x=1' });
  assert.equal(res.statusCode, 404);
  assert.deepEqual(res.json(), { error: 'not found', message: 'no route for POST /api/nothing' });
});
