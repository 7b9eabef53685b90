import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';
import { searchAttributeDefinitions } from '../../workflows/contracts/search-attributes.js';

/**
 * infra/temporal: no production Temporal server (temporalio/server, temporal-sql-tool) can be had on this
 * machine (docs/deploy.md, "What is verified"), so this checks what can be checked: the server config's
 * every key is a key of the real server's own configuration (as the `temporal` CLI's embedded Server 1.32
 * prints it with --log-config), every dynamic config key is one that server binary knows, the compose file
 * parses and wires the same config, scripts and environment, and the search attributes are markco's.
 */
const dir = join(repoRoot, 'infra', 'temporal');
const text = (f: string) => readFileSync(join(dir, f), 'utf8');
type Tree = { [k: string]: unknown };

/** Renders the config as the server does with `# enable-template`, for the forms it uses: {{ env "NAME" }}. */
function renderConfig(env: Record<string, string>): { yaml: Tree; used: Set<string> } {
  const raw = text('config/production.yaml');
  assert.ok(raw.startsWith('# enable-template\n'), 'the first line turns on template rendering');
  const used = new Set<string>();
  const out = raw.replace(/\{\{\s*([^}]*?)\s*\}\}/g, (_, expr: string) => {
    const m = /^env "([A-Z0-9_]+)"$/.exec(expr);
    assert.ok(m, `only {{ env "NAME" }} is used: ${expr}`);
    used.add(m[1]!);
    return env[m[1]!] ?? '';
  });
  return { yaml: parse(out) as Tree, used };
}

/** What the real server prints as its configuration: the dev server of the installed `temporal` CLI. */
async function serverConfigDump(): Promise<Tree> {
  const cli = resolveTemporalCli({ toolsDir: defaultToolsDir });
  const port = await new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
  const child = spawn(cli, ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(port), '--log-config', '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout.resume();
  try {
    for (let i = 0; i < 100 && !/^publicClient:/m.test(err); i++) await new Promise((r) => setTimeout(r, 100));
  } finally {
    child.kill('SIGKILL');
  }
  const start = err.indexOf('global:');
  assert.ok(start >= 0, `no config printed by ${cli}: ${err.slice(0, 500)}`);
  const lines = err.slice(start).split('\n');
  const end = lines.findIndex((l, i) => i > 0 && l !== '' && !/^(\s|[a-zA-Z]+:)/.test(l));
  return parse(lines.slice(0, end < 0 ? undefined : end).join('\n')) as Tree;
}

/** Key paths of a tree; maps keyed by names of our choosing (datastores, services, clusters) become `*`. */
function keyPaths(t: unknown, prefix = '', out: string[] = []): string[] {
  if (t === null || typeof t !== 'object' || Array.isArray(t)) return out;
  for (const [k, v] of Object.entries(t as Tree)) {
    const name = /^(persistence\.datastores|services|clusterMetadata\.clusterInformation)$/.test(prefix) ? '*' : k;
    const path = prefix ? `${prefix}.${name}` : name;
    out.push(path);
    keyPaths(v, path, out);
  }
  return out;
}

describe('Temporal deployment (infra/temporal)', () => {
  const envExample = Object.fromEntries(
    text('temporal.env.example')
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );

  test("every key of config/production.yaml is a key of the real server's configuration", async () => {
    const known = new Set(keyPaths(await serverConfigDump()));
    // The dump was read deeply: the SQL store's keys and the services' rpc keys are in it.
    for (const k of ['persistence.datastores.*.sql.pluginName', 'persistence.datastores.*.sql.connectAddr', 'services.*.rpc.bindOnIP', 'clusterMetadata.clusterInformation.*.rpcAddress']) assert.ok(known.has(k), k);
    // Known to the server but absent from the dev server's dump, which has no such section.
    for (const k of ['global.metrics.prometheus.framework', 'dynamicConfigClient.filepath', 'dynamicConfigClient.pollInterval', 'log.format']) known.add(k);
    const { yaml } = renderConfig({ ...envExample, TEMPORAL_POSTGRES_PWD: 'x' });
    const unknown = keyPaths(yaml).filter((p) => !known.has(p));
    assert.deepEqual(unknown, [], 'keys the server would ignore');
  });

  test('PostgreSQL for both stores, every template variable in the example env, no password in the repository', () => {
    const { yaml, used } = renderConfig({ ...envExample, TEMPORAL_POSTGRES_PWD: 'example-password' });
    const p = yaml.persistence as { defaultStore: string; visibilityStore: string; numHistoryShards: number; datastores: Record<string, { sql: Record<string, unknown> }> };
    assert.notEqual(p.defaultStore, p.visibilityStore);
    for (const store of [p.defaultStore, p.visibilityStore]) {
      const sql = p.datastores[store]!.sql;
      assert.equal(sql.pluginName, 'postgres12');
      assert.equal(sql.connectAddr, '127.0.0.1:5432');
      assert.equal(sql.password, 'example-password');
    }
    assert.equal(p.datastores[p.defaultStore]!.sql.databaseName, 'temporal');
    assert.equal(p.datastores[p.visibilityStore]!.sql.databaseName, 'temporal_visibility');
    for (const v of used) assert.ok(v in envExample, `${v} is not in temporal.env.example`);
    assert.equal(envExample.TEMPORAL_POSTGRES_PWD, '', 'the example leaves the password empty');
    for (const f of ['config/production.yaml', 'compose.yaml', 'temporal.env.example', 'setup-postgres.sh', 'register-namespace.sh']) assert.doesNotMatch(text(f), /(PWD|PASSWORD)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9]/i, `${f} holds no password`);
  });

  test('every dynamic config key is one the server binary knows', () => {
    const cli = resolveTemporalCli({ toolsDir: defaultToolsDir });
    const binary = readFileSync(cli);
    const keys = Object.keys(parse(text('dynamicconfig/production.yaml')) as Tree);
    assert.ok(keys.length > 0);
    for (const k of keys) assert.ok(binary.includes(Buffer.from(k)), `${k} is not a dynamic config key of the server in ${cli}`);
  });

  test('the compose file runs the same config, schema script and namespace script, on PostgreSQL', () => {
    const compose = parse(text('compose.yaml'), { merge: true }) as { services: Record<string, { image: string; environment?: Record<string, string>; volumes?: string[]; command?: string[]; entrypoint?: string[]; depends_on?: Record<string, { condition: string }>; ports?: string[] }> };
    const s = compose.services;
    assert.deepEqual(Object.keys(s).sort(), ['postgresql', 'temporal', 'temporal-namespace', 'temporal-schema', 'temporal-ui']);
    assert.match(s['temporal-schema']!.image, /^temporalio\/admin-tools:/);
    assert.match(s['temporal-namespace']!.image, /^temporalio\/admin-tools:/);
    assert.match(s.temporal!.image, /^temporalio\/server:/);
    assert.match(s['temporal-ui']!.image, /^temporalio\/ui:/);
    assert.equal(s['temporal-schema']!.image, s.temporal!.image.replace('temporalio/server', 'temporalio/admin-tools'), 'schema tools of the same release as the server');
    assert.ok(s['temporal-schema']!.volumes!.includes('./setup-postgres.sh:/markco/setup-postgres.sh:ro'));
    assert.deepEqual(s['temporal-schema']!.command, ['/markco/setup-postgres.sh']);
    assert.ok(s['temporal-namespace']!.volumes!.includes('./register-namespace.sh:/markco/register-namespace.sh:ro'));
    assert.equal(s.temporal!.depends_on!['temporal-schema']!.condition, 'service_completed_successfully');
    assert.equal(s['temporal-namespace']!.depends_on!.temporal!.condition, 'service_healthy');
    // The server reads config/production.yaml with the variables it uses.
    const cmd = s.temporal!.command!;
    const root = cmd[cmd.indexOf('--root') + 1]!;
    assert.ok(s.temporal!.volumes!.includes(`./config:${root}/${cmd[cmd.indexOf('--config') + 1]}:ro`));
    assert.equal(cmd[cmd.indexOf('--env') + 1], 'production');
    assert.ok(cmd.indexOf('--allow-no-auth') > cmd.indexOf('start'), '--allow-no-auth is a flag of start');
    const { used } = renderConfig({});
    for (const v of used) assert.ok(v in s.temporal!.environment!, `the temporal service does not set ${v}`);
    assert.ok(s.temporal!.volumes!.some((v) => v.startsWith('./dynamicconfig:') && s.temporal!.environment!.TEMPORAL_DYNAMIC_CONFIG!.startsWith(v.split(':')[1]!)));
    for (const v of ['TEMPORAL_POSTGRES_HOST', 'TEMPORAL_POSTGRES_USER', 'TEMPORAL_POSTGRES_PWD', 'TEMPORAL_DB', 'TEMPORAL_VISIBILITY_DB', 'TEMPORAL_SCHEMA_DIR']) assert.ok(v in s['temporal-schema']!.environment!, `temporal-schema lacks ${v}`);
    assert.equal(s['temporal-schema']!.environment!.TEMPORAL_SCHEMA_DIR, '/etc/temporal/schema/postgresql/v12');
    for (const svc of Object.values(s)) for (const port of svc.ports ?? []) assert.match(port, /^127\.0\.0\.1:/, 'published on loopback only');
  });

  test('the schema script sets up both databases with temporal-sql-tool, postgres12, create, setup-schema 0.0 and update-schema', () => {
    const sh = text('setup-postgres.sh');
    assert.match(sh, /--plugin postgres12/);
    assert.match(sh, /setup_database "\$default_db" "\$schema_dir\/temporal\/versioned"/);
    assert.match(sh, /setup_database "\$visibility_db" "\$schema_dir\/visibility\/versioned"/);
    assert.match(sh, /sql_tool "\$db" create/);
    assert.match(sh, /sql_tool "\$db" setup-schema -v 0\.0/);
    assert.match(sh, /sql_tool "\$db" update-schema -d "\$versioned"/);
    assert.match(sh, /export SQL_PASSWORD=/);
  });

  test("the namespace script registers exactly markco's search attributes, all Keyword, within PostgreSQL visibility's 10 Keyword slots", () => {
    const names = /^attributes="([^"]*)"$/m.exec(text('register-namespace.sh'))![1]!.split(' ');
    assert.deepEqual([...names].sort(), Object.keys(searchAttributeDefinitions).sort());
    assert.ok(Object.values(searchAttributeDefinitions).every((t) => t === 'Keyword'));
    assert.ok(names.length <= 10);
  });
});
