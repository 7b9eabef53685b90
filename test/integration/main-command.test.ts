import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { processAlive } from '../../infra/dev/processes.js';
import { repoRoot } from '../../lib/paths.js';
import { workflowIds } from '../../workflows/contracts/index.js';
import { freePort } from '../support/harness.js';
import { useHarness } from '../support/context.js';

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${what} within ${timeoutMs} ms (last: ${String(last)})`);
}

/** The README's main command, exactly: everything comes up, health tells the truth, Ctrl-C stops it all. */
describe('scripts/start', () => {
  const h = useHarness();
  let stack: ChildProcess | undefined;
  let output = '';
  after(() => {
    if (stack?.exitCode === null) stack.kill('SIGKILL');
  });

  test('brings up PostgreSQL, Temporal with its Web UI, the worker and the edge; Ctrl-C stops everything', async () => {
    const [port, pgPort, temporalPort, uiPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const dataDir = join(h.state.runDir, 'stack-data');
    stack = spawn(join(repoRoot, 'scripts', 'start'), [], {
      cwd: repoRoot,
      env: {
        ...process.env,
        MARKCO_DATA_DIR: dataDir,
        MARKCO_PORT: String(port),
        MARKCO_EMBEDDED_PG_PORT: String(pgPort),
        TEMPORAL_DEV_PORT: String(temporalPort),
        TEMPORAL_UI_PORT: String(uiPort),
        DATABASE_URL: '',
        TEMPORAL_ADDRESS: '',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (c: Buffer) => {
      output = (output + c.toString()).slice(-20_000);
    };
    stack.stdout!.on('data', keep);
    stack.stderr!.on('data', keep);
    const exited = new Promise<number | null>((resolve) => stack!.on('exit', (code) => resolve(code)));

    const health = await until(
      `GET /api/health answers 200 (output: ${output.slice(-1500)})`,
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(3000) });
        return res.status === 200 ? ((await res.json()) as { parts: Record<string, { status: string }> }) : undefined;
      },
      180_000,
    );
    assert.deepEqual(Object.keys(health.parts).sort(), ['database', 'temporal', 'worker']);
    assert.ok(Object.values(health.parts).every((p) => p.status === 'ok'));

    const ui = await fetch(`http://127.0.0.1:${uiPort}/`, { signal: AbortSignal.timeout(5000) });
    assert.equal(ui.status, 200, 'the Temporal Web UI answers');
    assert.match(await ui.text(), /<html/i);

    const connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}` });
    try {
      const client = new Client({ connection });
      const registration = client.workflow.getHandle(workflowIds.registerHost('base'));
      const result = await until('the base host registration completes', async () => ((await registration.describe()).status.name === 'COMPLETED' ? registration.result() : undefined), 60_000);
      assert.equal(result.state, 'ready');
      assert.equal(result.facts.ociRuntime, 'runc');
    } finally {
      await connection.close();
    }

    const recorded = JSON.parse(readFileSync(join(dataDir, 'run', 'stack.json'), 'utf8')) as { pid: number; marker: string }[];
    assert.equal(recorded.length, 3, 'worker, edge and Temporal are recorded');
    const pgDir = join(dataDir, 'postgres');
    const pgPid = Number(readFileSync(join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    assert.ok(processAlive(pgPid));

    // Take one part down: health says 503 and names it.
    const temporalPid = recorded.find((r) => r.marker === 'start-dev')!.pid;
    process.kill(-temporalPid, 'SIGKILL');
    const degraded = await until(
      'GET /api/health answers 503',
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(8000) });
        return res.status === 503 ? ((await res.json()) as { down: string[]; parts: Record<string, { error?: string }> }) : undefined;
      },
      30_000,
    );
    assert.ok(degraded.down.includes('temporal'), `down names temporal: ${JSON.stringify(degraded.down)}`);
    assert.ok(!degraded.down.includes('database'));
    assert.ok(degraded.parts.temporal?.error);

    stack.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 90_000))]);
    assert.equal(code, 0, `the stack exits cleanly on Ctrl-C: ${output.slice(-1500)}`);
    for (const { pid, marker } of recorded) assert.equal(processAlive(pid), false, `${marker} stopped`);
    assert.equal(processAlive(pgPid), false, 'PostgreSQL stopped');
    assert.equal(existsSync(join(dataDir, 'run', 'stack.json')), false);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(2000) }), 'the edge no longer listens');
  });
});
