import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { findExecutable, MissingPrerequisiteError, resolveMotoServer, resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { repoRoot } from '../../lib/paths.js';
import { startHarness } from '../support/harness.js';

/** A missing part fails with a message naming it: nothing starts half-way and nothing skips. */
describe('missing prerequisites', () => {
  let bin: string;
  let empty: string;
  before(() => {
    bin = mkdtempSync(join(tmpdir(), 'markco-path-'));
    empty = mkdtempSync(join(tmpdir(), 'markco-tools-'));
    // A PATH with the container tools except CRIU, plus the basics a shell needs.
    for (const tool of ['podman', 'runc', 'ssh-keygen', 'sh', 'id', 'env']) {
      const found = findExecutable(tool, '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
      if (found) symlinkSync(found, join(bin, tool));
    }
    symlinkSync(process.execPath, join(bin, 'node'));
  });
  after(() => {
    rmSync(bin, { recursive: true, force: true });
    rmSync(empty, { recursive: true, force: true });
  });

  const runStack = (env: NodeJS.ProcessEnv) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'infra/dev/stack.ts'], { cwd: repoRoot, env: { ...process.env, MARKCO_DATA_DIR: join(empty, 'data'), ...env }, encoding: 'utf8', timeout: 60_000 });

  test('the main command without criu says so and starts nothing', () => {
    const r = runStack({ PATH: bin });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /missing prerequisite: criu: not found on PATH; run infra\/dev\/bootstrap\.sh/);
  });

  test('the main command with no temporal binary says so', () => {
    const r = runStack({ TEMPORAL_CLI: join(empty, 'temporal') });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /missing prerequisite: temporal: TEMPORAL_CLI=.* is not an executable file/);
  });

  test('a bad variable stops the main command with its name', () => {
    const r = runStack({ MARKCO_PORT: 'http' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /MARKCO_PORT: expected a TCP port/);
  });

  test('the temporal CLI and the emulator are looked up on PATH and in the tools directory', () => {
    assert.throws(() => resolveTemporalCli({ toolsDir: empty, pathEnv: bin }), (e: unknown) => e instanceof MissingPrerequisiteError && e.tool === 'temporal');
    assert.throws(() => resolveMotoServer({ toolsDir: empty, pathEnv: bin }), (e: unknown) => e instanceof MissingPrerequisiteError && e.tool === 'moto_server');
    const real = resolveTemporalCli({ toolsDir: join(repoRoot, '.markco', 'tools') });
    assert.ok(findExecutable(real));
    assert.equal(dirname(resolveTemporalCli({ toolsDir: empty, pathEnv: dirname(real) })), dirname(real));
  });

  test('the test harness without the emulator fails naming it, before starting anything', async () => {
    const saved = process.env.PATH;
    process.env.PATH = `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`;
    try {
      await assert.rejects(startHarness({ toolsDir: empty }), (e: unknown) => e instanceof MissingPrerequisiteError && /temporal|moto_server/.test(e.tool));
    } finally {
      process.env.PATH = saved;
    }
  });
});
