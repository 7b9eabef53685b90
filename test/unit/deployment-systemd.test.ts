import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, chmodSync, constants, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { configVariables, loadConfig } from '../../lib/config.js';
import { repoRoot } from '../../lib/paths.js';

/**
 * infra/systemd: every unit passes `systemd-analyze verify` (offline: PID 1 here is not systemd) with no
 * warning at all, its entry point exists in the repository, the sandboxing is what the comments say, and
 * the example environment file lists every setting, holds no secret and loads through lib/config.ts.
 */
const unitsDir = join(repoRoot, 'infra', 'systemd');
const installDir = '/opt/markco';
const systemdAnalyze = '/usr/bin/systemd-analyze';
const unitFiles = readdirSync(unitsDir).filter((f) => /\.(service|timer)$/.test(f)).sort();
const work = mkdtempSync(join(tmpdir(), 'markco-units-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Temporal's release binaries are not on this machine (docs/deploy.md says why): stand-ins for verify's "is it executable" check. */
const notHere = ['/usr/local/bin/temporal-server', '/usr/local/bin/temporal-ui-server'];

/** The units as they would be installed, with /opt/markco pointing at this checkout. */
function rendered(dir: string, files: Record<string, string>): string[] {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  for (const bin of notHere) {
    const stub = join(dir, 'bin', bin.split('/').pop()!);
    writeFileSync(stub, '#!/bin/sh\nexit 0\n');
    chmodSync(stub, 0o755);
  }
  return Object.entries(files).map(([name, text]) => {
    let out = text.replaceAll(installDir, repoRoot);
    for (const bin of notHere) out = out.replaceAll(bin, join(dir, 'bin', bin.split('/').pop()!));
    writeFileSync(join(dir, name), out);
    return join(dir, name);
  });
}

function verify(paths: string[]): { code: number; output: string } {
  if (!existsSync(systemdAnalyze)) throw new Error(`${systemdAnalyze} is missing: apt-get install systemd`);
  const r = spawnSync(systemdAnalyze, ['verify', ...paths], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}`.trim() };
}

const read = (f: string) => readFileSync(join(unitsDir, f), 'utf8');
const directives = (text: string, key: string) => [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());

describe('systemd units', () => {
  test('the expected units are there', () => {
    for (const u of ['markco-edge.service', 'markco-flight.service', 'markco-worker@.service', 'markco-migrate.service', 'markco-monitor.service', 'markco-monitor.timer', 'temporal-server.service', 'temporal-schema.service', 'temporal-namespace.service', 'temporal-ui.service']) {
      assert.ok(unitFiles.includes(u), `infra/systemd/${u} is missing`);
    }
  });

  test('systemd-analyze verify accepts every unit without a single warning', () => {
    const dir = join(work, 'all');
    const paths = rendered(dir, Object.fromEntries(unitFiles.map((f) => [f, read(f)])));
    const { code, output } = verify(paths);
    assert.equal(output, '', `systemd-analyze verify printed:\n${output}`);
    assert.equal(code, 0);
  });

  test('the check fails on a real error (negative control): an unknown key, a bad value, a missing program', () => {
    const base = read('markco-edge.service');
    const cases: Record<string, [string, RegExp]> = {
      typo: [base.replace('Restart=always', 'Restrat=always'), /Unknown key 'Restrat'/],
      value: [base.replace('Restart=always', 'Restart=sometimes'), /restart specifier/],
      program: [base.replace('ExecStart=/usr/bin/env node', 'ExecStart=/usr/bin/no-such-node'), /not executable/],
    };
    for (const [name, [text, expected]] of Object.entries(cases)) {
      const { output } = verify(rendered(join(work, `bad-${name}`), { 'markco-edge.service': text }));
      assert.match(output, expected, `${name}: ${output}`);
    }
  });

  test("every markco unit's entry point exists in this repository and runs on Node 20+ through the unit's PATH", () => {
    for (const f of unitFiles.filter((u) => u.startsWith('markco-') && u.endsWith('.service'))) {
      const text = read(f);
      const [exec] = directives(text, 'ExecStart');
      const m = /^\/usr\/bin\/env node --import tsx (\/opt\/markco\/\S+\.ts)(?: (\w+))?$/.exec(exec ?? '');
      assert.ok(m, `${f}: ExecStart runs an entry point of the checkout with tsx (${exec})`);
      const entry = m[1]!.replace(installDir, repoRoot);
      assert.ok(existsSync(entry), `${f}: ${entry} does not exist`);
      assert.ok(readFileSync(entry, 'utf8').includes('import.meta.url === pathToFileURL(process.argv[1]).href'), `${f}: ${entry} is not an entry point`);
      if (m[2]) assert.ok(readFileSync(entry, 'utf8').includes(`'${m[2]}'`), `${f}: ${entry} has no phase ${m[2]}`);
      assert.deepEqual(directives(text, 'WorkingDirectory'), [installDir], `${f}: runs in the checkout (tsx resolves from there)`);
      const path = directives(text, 'Environment').find((e) => e.startsWith('PATH='))?.slice(5).replaceAll(installDir, repoRoot);
      assert.ok(path, `${f}: sets PATH for /usr/bin/env node`);
      const node = path.split(':').map((d) => join(d, 'node')).find((p) => {
        try {
          accessSync(p, constants.X_OK);
          return true;
        } catch {
          return false;
        }
      });
      assert.ok(node, `${f}: no node on ${path}`);
      const major = Number(execFileSync(node, ['--version'], { encoding: 'utf8' }).trim().replace(/^v(\d+).*/s, '$1'));
      assert.ok(major >= 20, `${f}: ${node} is Node ${major}, markco needs 20+`);
    }
    assert.ok(existsSync(join(repoRoot, 'node_modules', 'tsx')), 'tsx is installed in the checkout');
    for (const f of ['temporal-schema.service', 'temporal-namespace.service']) {
      const [exec] = directives(read(f), 'ExecStart');
      const script = exec!.replace(installDir, repoRoot);
      accessSync(script, constants.X_OK);
    }
  });

  test('users, restarts, ordering and the environment file', () => {
    const expectations: Record<string, { user: string; restart?: string; after: string[]; env: string }> = {
      'markco-edge.service': { user: 'markco', restart: 'always', after: ['postgresql.service', 'temporal-server.service', 'markco-migrate.service'], env: '/etc/markco/markco.env' },
      'markco-flight.service': { user: 'markco', restart: 'always', after: ['postgresql.service', 'markco-migrate.service'], env: '/etc/markco/markco.env' },
      'markco-worker@.service': { user: 'root', restart: 'always', after: ['postgresql.service', 'temporal-server.service', 'markco-migrate.service'], env: '/etc/markco/markco.env' },
      'markco-migrate.service': { user: 'markco', restart: 'on-failure', after: ['postgresql.service', 'temporal-server.service'], env: '/etc/markco/markco.env' },
      'markco-monitor.service': { user: 'markco', after: ['temporal-server.service', 'markco-migrate.service', 'markco-worker@1.service'], env: '/etc/markco/markco.env' },
      'temporal-server.service': { user: 'temporal', restart: 'always', after: ['postgresql.service', 'temporal-schema.service'], env: '/etc/temporal/temporal.env' },
      'temporal-schema.service': { user: 'temporal', restart: 'on-failure', after: ['postgresql.service'], env: '/etc/temporal/temporal.env' },
      'temporal-namespace.service': { user: 'temporal', restart: 'on-failure', after: ['temporal-server.service'], env: '/etc/temporal/temporal.env' },
      'temporal-ui.service': { user: 'temporal', restart: 'always', after: ['temporal-server.service'], env: '' },
    };
    for (const [f, e] of Object.entries(expectations)) {
      const text = read(f);
      assert.deepEqual(directives(text, 'User'), [e.user], `${f}: User=`);
      if (e.restart) assert.deepEqual(directives(text, 'Restart'), [e.restart], `${f}: Restart=`);
      const afterUnits = directives(text, 'After').join(' ').split(/\s+/);
      for (const a of e.after) assert.ok(afterUnits.includes(a), `${f}: After= ${a}`);
      if (e.env) assert.equal(directives(text, 'EnvironmentFile')[0], e.env, `${f}: EnvironmentFile=`);
    }
    assert.match(read('markco-monitor.timer'), /^Unit=markco-monitor\.service$/m);
    assert.match(read('markco-monitor.timer'), /^OnUnitActiveSec=/m);
  });

  test('sandboxing: every unprivileged unit scores OK in systemd-analyze security; the root worker is the exception', () => {
    const dir = join(work, 'security');
    const paths = rendered(dir, Object.fromEntries(unitFiles.filter((f) => f.endsWith('.service')).map((f) => [f, read(f)])));
    for (const p of paths) {
      const r = spawnSync(systemdAnalyze, ['security', '--offline=true', p], { encoding: 'utf8', timeout: 60_000 });
      const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(`${r.stdout}${r.stderr}`);
      assert.ok(m, `no exposure score for ${p}: ${r.stdout}${r.stderr}`);
      const score = Number(m[1]);
      if (p.includes('markco-worker@')) assert.ok(score <= 9.2, `the worker: ${score}`);
      else assert.ok(score <= 2.0, `${p}: exposure ${score} (expected at most 2.0)`);
    }
  });
});

/** systemd's EnvironmentFile= reading, as far as this file uses it: KEY=VALUE, a value in single quotes kept literally. */
function parseEnvironmentFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    assert.ok(m, `line ${i + 1} is not KEY=VALUE: ${line}`);
    const [, key, raw] = m;
    let value = raw!;
    if (value.startsWith("'")) {
      assert.ok(value.endsWith("'") && value.length >= 2, `line ${i + 1}: unterminated quote`);
      value = value.slice(1, -1);
    } else {
      // systemd would drop double quotes and backslashes and cut at whitespace: the example never relies on that.
      assert.ok(!/["'\\\s]/.test(value.replace(/ <[^>]*>$/, '')), `line ${i + 1}: ${key}'s value needs single quotes`);
    }
    assert.ok(!out.has(key!), `${key} is set twice`);
    out.set(key!, value);
  }
  return out;
}

describe('the example environment file', () => {
  const text = readFileSync(join(unitsDir, 'markco.env.example'), 'utf8');
  const env = parseEnvironmentFile(text);

  test('lists every variable lib/config.ts reads, and nothing else', () => {
    assert.deepEqual([...env.keys()].sort(), [...configVariables].sort());
  });

  test('holds no secret: tokens, client secrets, the SMTP URL and any password are empty', () => {
    for (const key of ['MARKCO_ADMIN_TOKEN', 'MARKCO_OIDC_CLIENT_SECRET', 'MARKCO_GITHUB_CLIENT_SECRET', 'MARKCO_SMTP_URL']) assert.equal(env.get(key), '', key);
    assert.doesNotMatch(env.get('DATABASE_URL')!, /:\/\/[^/@]*:[^/@]*@/, 'DATABASE_URL carries no password');
    assert.equal(env.get('AWS_ENDPOINT_URL'), '', 'production talks to AWS itself');
    assert.ok(!env.has('AWS_ACCESS_KEY_ID') && !env.has('AWS_SECRET_ACCESS_KEY'), 'credentials come from the instance role');
    assert.equal(env.get('MARKCO_DEV_LOGIN'), '0');
  });

  test('loads through lib/config.ts as a production configuration (real EC2, external PostgreSQL and Temporal)', () => {
    const config = loadConfig(Object.fromEntries(env));
    assert.equal(config.cloud.provider, 'aws');
    assert.equal(config.database.url, 'postgres://markco@127.0.0.1:5432/markco');
    assert.equal(config.temporal.address, '127.0.0.1:7233');
    assert.equal(config.http.publicUrl, 'https://markco.example.com');
    assert.equal(config.cloud.deploymentId, 'prod');
    assert.deepEqual(Object.keys(config.cloud.amiIds).sort(), ['g5', 't3']);
    assert.equal(config.hosts.sshKeyPath, '/var/lib/markco/ssh/id_ed25519');
    assert.equal(config.environment.usersDir, '/var/lib/markco/users');
  });
});
