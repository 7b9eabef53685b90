import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, configVariables, loadConfig } from '../../lib/config.js';
import { repoRoot } from '../../lib/paths.js';

test('defaults run everything locally on embedded parts', () => {
  const c = loadConfig({});
  assert.equal(c.database.url, undefined, 'no DATABASE_URL means embedded PostgreSQL');
  assert.equal(c.temporal.address, undefined, 'no TEMPORAL_ADDRESS means the Temporal dev server');
  assert.equal(c.http.host, '127.0.0.1');
  assert.equal(c.http.port, 8080);
  assert.equal(c.temporal.uiPort, 8233);
  assert.equal(c.hosts.baseHostId, 'base');
  assert.equal(c.http.devLogin, false);
  assert.ok(c.database.embeddedDir.startsWith(c.dataDir));
});

test('values are parsed and normalised', () => {
  const c = loadConfig({
    MARKCO_PORT: '9090',
    DATABASE_URL: 'postgres://u:p@db.internal:5432/markco',
    TEMPORAL_ADDRESS: 'temporal.internal:7233',
    MARKCO_PUBLIC_URL: 'https://markco.example.com/',
    MARKCO_DEV_LOGIN: '1',
  });
  assert.equal(c.http.port, 9090);
  assert.equal(c.database.url, 'postgres://u:p@db.internal:5432/markco');
  assert.equal(c.temporal.address, 'temporal.internal:7233');
  assert.equal(c.http.publicUrl, 'https://markco.example.com', 'one public URL, without a trailing slash');
  assert.equal(c.http.devLogin, true);
});

test('an empty variable counts as unset', () => {
  const c = loadConfig({ DATABASE_URL: '', TEMPORAL_ADDRESS: '', MARKCO_ADMIN_TOKEN: '' });
  assert.equal(c.database.url, undefined);
  assert.equal(c.temporal.address, undefined);
  assert.equal(c.http.adminToken, undefined);
});

test('a bad value names the variable and what is expected', () => {
  assert.throws(
    () => loadConfig({ MARKCO_PORT: 'eighty' }),
    (err: unknown) => err instanceof ConfigError && /MARKCO_PORT: expected a TCP port/.test(err.message) && /got "eighty"/.test(err.message),
  );
  assert.throws(() => loadConfig({ MARKCO_PORT: '70000' }), /MARKCO_PORT: expected a TCP port between 1 and 65535/);
  assert.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), /LOG_LEVEL: expected one of trace, debug, info/);
  assert.throws(() => loadConfig({ TEMPORAL_ADDRESS: 'http://x' }), /TEMPORAL_ADDRESS: expected host:port/);
  assert.throws(() => loadConfig({ MARKCO_DEV_LOGIN: 'maybe' }), /MARKCO_DEV_LOGIN: expected one of 1, 0, true, false/);
});

test('every bad variable is reported at once', () => {
  try {
    loadConfig({ MARKCO_PORT: 'x', AWS_REGION: 'moon', MARKCO_BASE_HOST_ID: 'Base Host' });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems.map((p) => p.variable).sort(), ['AWS_REGION', 'MARKCO_BASE_HOST_ID', 'MARKCO_PORT']);
  }
});

test('secrets are never echoed back in the error', () => {
  try {
    loadConfig({ DATABASE_URL: 'mysql://root:hunter2@db/markco', MARKCO_ADMIN_TOKEN: 'short-secret' });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /DATABASE_URL: expected a PostgreSQL URL/);
    assert.match(err.message, /MARKCO_ADMIN_TOKEN: expected at least 32 characters/);
    assert.doesNotMatch(err.message, /hunter2|short-secret/);
  }
});

test('the README documents every variable the config reads', () => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const missing = configVariables.filter((v) => !readme.includes(`\`${v}\``));
  assert.deepEqual(missing, [], `README.md configuration reference lacks: ${missing.join(', ')}`);
});

test('checkpoint archives in S3 are encrypted by default; KMS takes a key id, other modes refuse one', () => {
  assert.deepEqual(loadConfig({}).aws.archives, { encryption: { kind: 'AES256' }, partBytes: 16 * 1024 * 1024 });
  assert.deepEqual(loadConfig({ MARKCO_S3_SSE: 'aws:kms', MARKCO_S3_KMS_KEY_ID: 'alias/markco', MARKCO_S3_PART_MIB: '16' }).aws.archives, {
    encryption: { kind: 'aws:kms', keyId: 'alias/markco' },
    partBytes: 16 * 1024 * 1024,
  });
  assert.deepEqual(loadConfig({ MARKCO_S3_SSE: 'none' }).aws.archives?.encryption, { kind: 'none' });
  assert.throws(() => loadConfig({ MARKCO_S3_KMS_KEY_ID: 'alias/markco' }), (err: ConfigError) => /MARKCO_S3_KMS_KEY_ID/.test(err.message));
  assert.throws(() => loadConfig({ MARKCO_S3_SSE: 'aes' }), (err: ConfigError) => /MARKCO_S3_SSE/.test(err.message));
  assert.throws(() => loadConfig({ MARKCO_S3_PART_MIB: '4' }), (err: ConfigError) => /MARKCO_S3_PART_MIB/.test(err.message));
});

test('runtimes reach the data service at podman’s gateway by default, at a given address, or not at all', () => {
  const byDefault = loadConfig({});
  assert.equal(byDefault.flight.runtimeHost, 'podman');
  assert.deepEqual(byDefault.environment.dataService, { url: 'grpc://host.containers.internal:8815' });
  const given = loadConfig({ MARKCO_FLIGHT_RUNTIME_HOST: '10.88.0.1', MARKCO_FLIGHT_PORT: '9000' });
  assert.equal(given.flight.runtimeHost, '10.88.0.1');
  assert.deepEqual(given.environment.dataService, { url: 'grpc://host.containers.internal:9000' }, 'a name: a restored runtime keeps it on any host');
  const none = loadConfig({ MARKCO_FLIGHT_RUNTIME_HOST: 'none' });
  assert.equal(none.flight.runtimeHost, null);
  assert.equal(none.environment.dataService, undefined);
  assert.throws(() => loadConfig({ MARKCO_FLIGHT_RUNTIME_HOST: 'gateway.example' }), (err: ConfigError) => /MARKCO_FLIGHT_RUNTIME_HOST/.test(err.message) && /IP address/.test(err.message));
  // Runtimes on EC2 hosts: only with an address of this machine that the hosts reach.
  assert.equal(byDefault.flight.hostsHost, null);
  const hosts = loadConfig({ MARKCO_FLIGHT_HOSTS_HOST: '172.31.5.10' });
  assert.equal(hosts.flight.hostsHost, '172.31.5.10');
  assert.deepEqual(hosts.environment.dataService, { url: 'grpc://host.containers.internal:8815', hostsForward: { address: '172.31.5.10', port: 8815 } });
  assert.equal(loadConfig({ MARKCO_FLIGHT_HOSTS_HOST: '172.31.5.10', MARKCO_FLIGHT_RUNTIME_HOST: 'none' }).flight.hostsHost, null);
  assert.throws(() => loadConfig({ MARKCO_FLIGHT_HOSTS_HOST: 'control-plane' }), (err: ConfigError) => /MARKCO_FLIGHT_HOSTS_HOST/.test(err.message));
});
