import assert from 'node:assert/strict';
import { test } from 'node:test';
import { caddyConfig, caddyFrontOptions, canonicalJson, isPublicDomainName } from '../../lib/caddy-config.js';
import { ConfigError, loadConfig } from '../../lib/config.js';

const http = (publicUrl: string, host = '127.0.0.1', port = 8080) => ({ http: { host, port, publicUrl, adminToken: undefined, devLogin: false } });
const server = (c: Record<string, any>) => c.apps.http.servers.markco;

test('production: :443 and :80, host matchers for the domain and www., automatic HTTPS, everything to the edge', () => {
  const c = caddyConfig(caddyFrontOptions(http('https://markco.dev', '0.0.0.0'), 'http://localhost:2019'));
  const s = server(c);
  assert.deepEqual(s.listen, [':443', ':80']);
  assert.equal(s.automatic_https, undefined, 'automatic HTTPS stays on');
  assert.equal(s.routes.length, 1, 'the edge owns the routing: one route');
  assert.deepEqual(s.routes[0].match, [{ host: ['markco.dev', 'www.markco.dev'] }]);
  const proxy = s.routes[0].handle[0];
  assert.equal(proxy.handler, 'reverse_proxy');
  assert.deepEqual(proxy.upstreams, [{ dial: '127.0.0.1:8080' }], 'an edge on every address is dialled over loopback');
  assert.equal(proxy.flush_interval, -1, 'responses stream');
  assert.equal(proxy.trusted_proxies, undefined, "clients' X-Forwarded-* are replaced, not trusted");
  assert.deepEqual(c.admin, { listen: 'localhost:2019' }, 'loading keeps the admin API where it is');
  assert.equal(JSON.stringify(c).includes('request_body'), false, 'no body limit below the edge');
});

test('localhost and IPs: plain HTTP on the public URL port, no host matchers, no automatic HTTPS', () => {
  const local = server(caddyConfig(caddyFrontOptions(http('http://localhost:8081'), 'http://127.0.0.1:2999')));
  assert.deepEqual(local.listen, ['127.0.0.1:8081'], 'localhost listens on loopback only');
  assert.deepEqual(local.automatic_https, { disable: true });
  assert.equal(local.routes[0].match, undefined);
  const ip = server(caddyConfig(caddyFrontOptions(http('https://10.0.0.5'), 'http://127.0.0.1:2019')));
  assert.deepEqual(ip.listen, ['10.0.0.5:80'], 'https to an IP gets no certificate: plain HTTP');
  assert.deepEqual(ip.automatic_https, { disable: true });
  const plainDomain = server(caddyConfig(caddyFrontOptions(http('http://notes.example.com'), 'http://127.0.0.1:2019')));
  assert.deepEqual(plainDomain.listen, [':80']);
});

test('Caddy may not take the edge port', () => {
  assert.throws(() => caddyFrontOptions(http('http://localhost:8080'), 'http://localhost:2019'), /the edge's own port 8080/);
  assert.throws(() => caddyFrontOptions(http('http://10.0.0.5:8080', '0.0.0.0'), 'http://localhost:2019'), /own port/);
  assert.doesNotThrow(() => caddyFrontOptions(http('http://10.0.0.5:8080', '127.0.0.1'), 'http://localhost:2019'));
});

test('domain names, and canonical JSON for comparing with what Caddy answers', () => {
  assert.equal(isPublicDomainName('markco.dev'), true);
  for (const h of ['localhost', 'app.localhost', '127.0.0.1', '::1', '[::1]', 'intranet']) assert.equal(isPublicDomainName(h), false, h);
  assert.equal(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: 3 } }), '{"a":{"c":3,"d":[2,{"e":0,"f":1}]},"b":1}');
});

test('MARKCO_CADDY_ADMIN_URL: unset means no Caddy; an admin address otherwise', () => {
  assert.equal(loadConfig({}).http.caddyAdminUrl, undefined);
  assert.equal(loadConfig({ MARKCO_CADDY_ADMIN_URL: '' }).http.caddyAdminUrl, undefined);
  assert.equal(loadConfig({ MARKCO_CADDY_ADMIN_URL: 'http://localhost:2019/' }).http.caddyAdminUrl, 'http://localhost:2019');
  assert.throws(() => loadConfig({ MARKCO_CADDY_ADMIN_URL: 'localhost:2019' }), ConfigError);
});
