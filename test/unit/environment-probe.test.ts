import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { environmentAnswers } from '../../lib/environment-probe.js';

/** A runtime (MRP) and an editor on loopback that record what they were asked. */
let runtime: Server;
let editor: Server;
const seen: string[] = [];
let runtimeUp = true;
let editorRefusesRetell = false;

const listen = (server: Server) => new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
let runtimePort = 0;
let editorPort = 0;

before(async () => {
  runtime = createServer((req, res) => {
    seen.push(`runtime ${req.method} ${req.url}`);
    res.writeHead(runtimeUp ? 200 : 503).end('{}');
  });
  editor = createServer((req, res) => {
    seen.push(`editor ${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.writeHead(req.url === '/api/runtime/update-port' && editorRefusesRetell ? 400 : 200).end('{}'));
  });
  runtimePort = await listen(runtime);
  editorPort = await listen(editor);
});
after(() => {
  runtime.close();
  editor.close();
});

const rows = () => ({
  runtime: { id: 'rt-1', state: 'running' as const, address: '127.0.0.1', port: runtimePort },
  editor: { state: 'running' as const, port: editorPort, runtimeId: 'rt-1', runtimeHost: '127.0.0.1', runtimePort },
});

test('both answering: ready; the edge (no retell) never posts update-port, the login plan does', async () => {
  seen.length = 0;
  runtimeUp = true;
  assert.equal(await environmentAnswers(rows().runtime, rows().editor, '127.0.0.1', { retell: false }), true);
  assert.deepEqual(seen.sort(), ['editor GET /health', 'runtime GET /mrp/v1/capabilities']);
  seen.length = 0;
  assert.equal(await environmentAnswers(rows().runtime, rows().editor, '127.0.0.1', { retell: true }), true);
  assert.ok(seen.includes('editor POST /api/runtime/update-port'), seen.join(', '));
  editorRefusesRetell = true;
  assert.equal(await environmentAnswers(rows().runtime, rows().editor, '127.0.0.1', { retell: true }), false, 'a refused re-tell is not ready');
  editorRefusesRetell = false;
});

test('rows that disagree are not ready, and nothing is asked', async () => {
  seen.length = 0;
  const { runtime: rt, editor: ed } = rows();
  assert.equal(await environmentAnswers(undefined, ed, '127.0.0.1', { retell: false }), false);
  assert.equal(await environmentAnswers({ ...rt, state: 'checkpointing' }, ed, '127.0.0.1', { retell: false }), false);
  assert.equal(await environmentAnswers(rt, { ...ed, runtimeId: 'rt-old' }, '127.0.0.1', { retell: false }), false);
  assert.equal(await environmentAnswers(rt, { ...ed, runtimePort: runtimePort + 1 }, '127.0.0.1', { retell: false }), false);
  assert.equal(await environmentAnswers(rt, { ...ed, state: 'starting' }, '127.0.0.1', { retell: false }), false);
  assert.deepEqual(seen, []);
});

test('a runtime that does not answer, or an editor port nobody listens on, is not ready', async () => {
  runtimeUp = false;
  assert.equal(await environmentAnswers(rows().runtime, rows().editor, '127.0.0.1', { retell: false }), false);
  runtimeUp = true;
  const closed = createServer();
  const deadPort = await listen(closed);
  closed.close();
  assert.equal(await environmentAnswers(rows().runtime, { ...rows().editor, port: deadPort }, '127.0.0.1', { retell: false }), false);
});
