import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { Worker } from '@temporalio/worker';
import type { HostShells } from '../../activities/host-shell.js';
import { resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { defaultToolsDir } from '../../lib/paths.js';
import { hostEnvShell } from '../support/netns.js';
import { freshDatabase, startTestWorker, stopTestWorker, type TestDatabase, testShells, useHarness } from '../support/context.js';
import { runbookCommands, shellWords } from '../support/runbook.js';

/** The runbook's own command lines, run as written (plus --address) against a real server and worker. */
describe('docs/runbook.md', () => {
  const h = useHarness();
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  const temporal = resolveTemporalCli({ explicit: process.env.TEMPORAL_CLI, toolsDir: process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir });

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    // The runbook speaks of the default task queue, as scripts/start runs it.
    ({ worker } = await startTestWorker(h.state, { store: db.store, shells }, 'markco-control'));
    running = worker.run();
  });
  after(async () => {
    const stopped = await stopTestWorker(worker, running);
    await shells.closeAll();
    await db.drop();
    if (stopped) throw stopped;
  });

  // Asynchronous: the worker serving these commands runs in this very process.
  const cli = async (line: string) => {
    const [program, ...args] = shellWords(line);
    assert.equal(program, 'temporal', line);
    try {
      const r = await promisify(execFile)(temporal, [...args, '--address', h.state.temporal.address], { encoding: 'utf8', timeout: 60_000 });
      return r.stdout;
    } catch (err) {
      assert.fail(`\`${line}\` failed: ${(err as { stderr?: string }).stderr ?? String(err)}`);
    }
  };
  const find = (pattern: RegExp) => {
    const line = runbookCommands().find((l) => pattern.test(l));
    assert.ok(line, `the runbook has a command matching ${pattern}`);
    return line;
  };

  test('registerHost: start, result, query, describe and list as the runbook writes them', async () => {
    await cli(find(/^temporal workflow start .*--type registerHost .*"kind":"base"/));
    const result = await cli(find(/^temporal workflow result +--workflow-id host\/base\/register$/));
    assert.match(result, /"state":\s*"ready"/);
    assert.match(await cli(find(/^temporal workflow query --workflow-id host\/base\/register --type step$/)), /done/);
    assert.match(await cli(find(/^temporal workflow describe +--workflow-id host\/base\/register$/)), /Completed/i);
    const listed = await cli(find(/^temporal workflow list --query 'MarkcoTargetHost="base"'$/));
    assert.match(listed, /host\/base\/register/, 'the workflow is found by its search attribute');
    const row = await db.store.hosts.get('base');
    assert.equal(row?.state, 'ready');
  });

  test('login, stopRuntime and runtimeStats: the runbook lines bring a user up, read them and stop the runtime', async () => {
    const userId = '00000000-0000-4000-8000-000000000042';
    await db.pool.query(`INSERT INTO users (id, email, username) VALUES ($1, 'runbook@example.test', 'runbook')`, [userId]);
    try {
      const started = await cli(find(/^temporal workflow execute-update-with-start .*--type userRuntime .*--update-name login /));
      assert.match(started, /user\/00000000-0000-4000-8000-000000000042\/login/, 'the update answers with the login child');
      const result = await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/login$/));
      assert.match(result, /"url":\s*"\/u\/00000000-0000-4000-8000-000000000042\/"/);
      assert.match(await cli(find(/^temporal workflow query --workflow-id user\/[0-9a-f-]+\/login --type step$/)), /done/);
      assert.match(await cli(find(/^temporal workflow list --query 'MarkcoOperation="login" AND MarkcoUserId=/)), /user\/00000000-0000-4000-8000-000000000042\/login/);
      assert.equal((await db.store.runtimes.live(userId))?.state, 'running');
      assert.match(await cli(find(/^temporal workflow execute .*--type runtimeStats/)), /memoryUsedBytes/);
      const entity = await cli(find(/^temporal workflow query --workflow-id runtime\/[0-9a-f-]+ --type entityState$/));
      assert.match(entity, /"tier":\s*"base"/, 'the entity knows where the runtime is');
      await cli(find(/^temporal workflow execute-update-with-start .*--type userRuntime .*--update-name stopRuntime /));
      await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/stop-runtime$/));
      assert.equal(await db.store.runtimes.live(userId), undefined);
      assert.match(await cli(find(/^temporal workflow query --workflow-id runtime\/[0-9a-f-]+ --type step$/)), /idle/);
    } finally {
      await cli(`temporal workflow terminate --workflow-id runtime/${userId} --reason test-done`).catch(() => undefined);
      await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1] });
    }
  });

  test('deleteAccount: the runbook line deletes the user; result, step and list find the run', async () => {
    const userId = '00000000-0000-4000-8000-000000000042';
    await db.pool.query(`INSERT INTO users (id, email, username) VALUES ($1, 'runbook@example.test', 'runbook') ON CONFLICT (id) DO NOTHING`, [userId]);
    const started = await cli(find(/^temporal workflow execute-update-with-start .*--type userRuntime .*--update-name deleteAccount /));
    assert.match(started, /user\/00000000-0000-4000-8000-000000000042\/delete-account/, 'the update answers with the deletion child');
    assert.match(await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/delete-account$/)), /"userRemoved":\s*true/);
    assert.match(await cli(find(/^temporal workflow query --workflow-id user\/[0-9a-f-]+\/delete-account --type step$/)), /done/);
    assert.equal((await db.pool.query('SELECT 1 FROM users WHERE id = $1', [userId])).rowCount, 0);
    await cli(find(/^temporal workflow list --query 'MarkcoOperation="delete-account" AND MarkcoStatus="failed"'$/));
  });

  test('reapInstances: the dry run line answers with what it would do', async () => {
    await cli(find(/^temporal workflow start --type reapInstances .*"dryRun":true/));
    assert.match(await cli(find(/^temporal workflow result --workflow-id markco-reaper-manual$/)), /examined/);
  });
});
