import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePort, proxyTargetRefusal, requestRefusal, routablePath, socketKindOf, viewerWriteMessage, type EditorRole } from '../../api/proxy/editor-access.js';

const refusal = (role: EditorRole, method: string, rest: string, upgrade = false) => requestRefusal({ role, method, rest, upgrade });
const statusOf = (role: EditorRole, method: string, rest: string, upgrade = false) => refusal(role, method, rest, upgrade)?.status ?? 200;

test('the owner may do anything the editor serves', () => {
  for (const [method, rest] of [
    ['GET', '/'],
    ['POST', '/proxy/40001/mrp/v1/execute'],
    ['DELETE', '/api/file?path=a.md'],
    ['PUT', '/api/settings/keys'],
  ] as const) {
    assert.equal(statusOf('owner', method, rest), 200, `${method} ${rest}`);
  }
  assert.equal(statusOf('owner', 'GET', '/sync/41000/Projects/a.md', true), 200);
  assert.equal(statusOf('owner', 'GET', '/terminal', true), 200);
});

test("an editor collaborator may do everything but the owner's account settings", () => {
  assert.equal(statusOf('editor', 'POST', '/proxy/40001/mrp/v1/execute'), 200);
  assert.equal(statusOf('editor', 'PUT', '/api/file'), 200);
  assert.equal(statusOf('editor', 'GET', '/terminal', true), 200);
  for (const rest of ['/api/settings', '/api/settings/', '/api/settings/keys?x=1', '/API/Settings', '//api//settings', '/api/%73ettings']) {
    const r = refusal('editor', 'GET', rest);
    assert.equal(r?.status, 403, rest);
    assert.match(r!.message, /account settings belong to its owner/);
  }
  assert.equal(statusOf('editor', 'GET', '/api/settingsx'), 200, 'a prefix only at a segment boundary');
});

test('a viewer reads (GET, HEAD) and follows documents, and may not write or run code', () => {
  assert.equal(statusOf('viewer', 'GET', '/'), 200);
  assert.equal(statusOf('viewer', 'HEAD', '/api/file/read?path=a.md'), 200);
  assert.equal(statusOf('viewer', 'GET', '/proxy/40001/mrp/v1/capabilities'), 200);
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const r = refusal('viewer', method, '/proxy/40001/mrp/v1/execute');
    assert.equal(r?.status, 403, method);
    assert.equal(r!.message, viewerWriteMessage);
    assert.match(r!.message, /viewer role cannot run code or write/);
  }
  assert.equal(statusOf('viewer', 'GET', '/api/settings'), 403);
  assert.equal(statusOf('viewer', 'GET', '/events', true), 200);
  assert.equal(statusOf('viewer', 'GET', '/sync/41000/Projects/Welcome/a.md', true), 200);
  assert.match(refusal('viewer', 'GET', '/terminal', true)!.message, /only the events and document sync WebSockets/);
  assert.equal(statusOf('viewer', 'GET', '/sync/41000/', true), 403, 'a sync path names a document');
});

test('nobody points the editor at another runtime through the edge', () => {
  for (const role of ['owner', 'editor', 'viewer'] as const) {
    assert.equal(statusOf(role, 'POST', '/api/runtime/update-port'), 403, role);
  }
});

test('paths that routers read differently are refused: dot segments, encoded separators, backslashes', () => {
  for (const rest of ['/proxy/40001/../../api/settings', '/a/./b', '/proxy/40001/%2e%2e/x', '/api%2fsettings', '/api\\settings', '/%E0%A4%A', '/..']) {
    assert.equal(refusal('owner', 'GET', rest)?.status, 400, rest);
  }
  assert.equal(routablePath('/Projects//A%20B.md?x=/../'), '/projects/a b.md', 'the query is not part of the path');
  assert.equal(routablePath('/notes..md'), '/notes..md');
  assert.equal(routablePath('/sync/41000/Projects%2FWelcome%2Fa.md'), '/sync/41000/projects/welcome/a.md', "a document name's encoded slashes");
  assert.equal(statusOf('viewer', 'GET', '/sync/41000/Projects%2Fa.md', true), 200);
  assert.equal(statusOf('owner', 'GET', '/sync/41000/..%2F..%2Fapi%2Fsettings', true), 400, 'but not to climb out of it');
  assert.equal(statusOf('owner', 'GET', '/api%2Fsync/41000/x', true), 400);
});

test('/proxy/<port>/ needs a port 1-65535 in digits, and only the runtime port is reached', () => {
  for (const port of ['abc', '0', '65536', '99999', '08888', '-1', '1e3', '']) {
    assert.equal(refusal('owner', 'GET', `/proxy/${port}/x`)?.status, 400, port);
  }
  assert.equal(refusal('owner', 'GET', '/proxy')?.status, 400);
  assert.equal(refusal('owner', 'GET', '/PROXY/abc/x')?.status, 400, 'Express matches routes case-insensitively');
  assert.equal(parsePort('65535'), 65535);
  assert.equal(parsePort('1'), 1);
  assert.equal(proxyTargetRefusal('/proxy/40001/mrp/v1/execute', 40001), undefined);
  const other = proxyTargetRefusal('/proxy/5432/', 40001);
  assert.equal(other?.status, 403);
  assert.match(other!.message, /only \/proxy\/40001\/ is reachable/);
  assert.equal(proxyTargetRefusal('//Proxy/22/', 40001)?.status, 403);
  assert.equal(proxyTargetRefusal('/proxy/40001/', null)?.status, 503, 'no runtime port known yet');
  assert.equal(proxyTargetRefusal('/proxyless', 40001), undefined);
  assert.equal(proxyTargetRefusal('/api/file', null), undefined);
});

test('socket kinds', () => {
  assert.equal(socketKindOf('/events'), 'events');
  assert.equal(socketKindOf('/sync/41000/doc.md'), 'sync');
  assert.equal(socketKindOf('/sync/x/doc.md'), 'other');
  assert.equal(socketKindOf('/events/more'), 'other');
});
