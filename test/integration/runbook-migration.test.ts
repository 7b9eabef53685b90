import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { Worker } from '@temporalio/worker';
import type { Browser } from 'playwright-core';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { probeHostFacts } from '../../activities/hosts.js';
import { resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { waitFor } from '../../infra/dev/processes.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';
import { launchChromium } from '../support/chromium.js';
import { connectionTo, emulatorEc2, freshDatabase, liveInstancesOfUser, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { cutNetwork, hostEnvShell, storageConf } from '../support/netns.js';
import { runbookCommands, shellWords } from '../support/runbook.js';

/**
 * An operator's migration with the runbook's own lines (issue 9): the exact migrate line moves a running
 * runtime onto a new EC2 host and its result line says so; the cancel line, sent while a second migration
 * is still launching its host, cancels it cleanly: the runtime keeps serving where it was, with its
 * state, and no instance of the cancelled migration is left running. A migration whose target host stops
 * answering shows as retrying in the Temporal Web UI (screenshot in test-artifacts/runbook/) and completes
 * by itself once the host is back.
 */
const artifacts = join(repoRoot, 'test-artifacts', 'runbook');

describe('docs/runbook.md: migrate and cancel as written', () => {
  const h = useHarness();
  const userId = '00000000-0000-4000-8000-000000000042';
  const temporal = resolveTemporalCli({ explicit: process.env.TEMPORAL_CLI, toolsDir: process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir });
  const deploymentId = `runbook-${randomBytes(3).toString('hex')}`;
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let watcher: BootWatcher;
  let ec2: EC2Client;
  let browser: Browser | undefined;
  /** Undoes the firewall rule that makes the namespace host unreachable, whatever happens. */
  let reconnectHost: (() => Promise<unknown>) | undefined;

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    watcher = startTestBootWatcher(h.state, { deploymentId });
    ec2 = emulatorEc2(h.state);
    ({ worker } = await startTestWorker(h.state, { store: db.store, shells, cloud: testCloud(h.state, { deploymentId }) }, 'markco-control'));
    running = worker.run();
    await db.pool.query(`INSERT INTO users (id, email, username) VALUES ($1, 'runbook@example.test', 'runbook')`, [userId]);
  });

  after(async () => {
    const t0 = Date.now();
    const mark = (what: string) => console.log(`[teardown] ${what} at ${Date.now() - t0} ms`);
    // The next file may use the same user id on the same server and queue: nothing of this one may run on.
    const temporal = await temporalClient(h.state);
    try {
      for await (const wf of temporal.client.workflow.list({ query: `MarkcoUserId="${userId}" AND ExecutionStatus="Running"` })) {
        await temporal.client.workflow.getHandle(wf.workflowId, wf.runId).terminate('test done').catch(() => undefined);
      }
    } finally {
      await temporal.close();
    }
    mark('workflows of the user terminated');
    await reconnectHost?.().catch(() => undefined);
    await browser?.close().catch(() => undefined);
    // A test worker is force-stopped 30 s after its shutdown: the activity that kept it is named, the cleanup
    // below still runs, and the file fails at the end.
    const forced = await stopTestWorker(worker, running);
    mark(forced ? forced.message : 'worker stopped');
    for (const host of [h.state.baseHost, ...h.state.hosts]) await hostEnvShell(host).run(['podman', 'rm', '--force', '--ignore', '--time', '0', `rt-${userId}`, `ed-${userId}`]).catch(() => undefined);
    mark('containers removed');
    await watcher?.stop();
    mark('watcher stopped');
    ec2?.destroy();
    await shells?.closeAll();
    await db?.drop();
    if (forced) throw forced;
  });

  async function cli(line: string): Promise<string> {
    const [program, ...args] = shellWords(line);
    assert.equal(program, 'temporal', line);
    try {
      const r = await promisify(execFile)(temporal, [...args, '--address', h.state.temporal.address], { encoding: 'utf8', timeout: 300_000 });
      return r.stdout;
    } catch (err) {
      throw new Error(`\`${line}\` failed: ${(err as { stderr?: string }).stderr ?? String(err)}`);
    }
  }
  const find = (pattern: RegExp) => {
    const line = runbookCommands().find((l) => pattern.test(l));
    assert.ok(line, `the runbook has a command matching ${pattern}`);
    return line;
  };
  const execute = async (code: string) => {
    const rt = (await db.store.runtimes.live(userId))!;
    const r = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) });
    return ((await r.body.json()) as { result: string | null }).result;
  };

  test('the migrate line moves the running runtime to a new t3.small host, the result line reports it, x is still 42', async () => {
    await cli(find(/^temporal workflow execute-update-with-start .*--type userRuntime .*--update-name login /));
    await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/login$/));
    await execute('x = 42');
    const started = await cli(find(/^temporal workflow execute-update-with-start .*--update-name migrate --update-input '\{"target":"t3.small"/));
    assert.match(started, new RegExp(`user/${userId}/migrate`), 'the update answers with the migration child');
    const result = await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/migrate$/));
    assert.match(result, /"toTier":\s*"t3.small"/);
    const rt = (await db.store.runtimes.live(userId))!;
    assert.equal(rt.tier, 't3.small');
    assert.notEqual(rt.hostId, 'base');
    assert.equal(await execute('x'), '42');
    assert.match(await cli(find(/^temporal workflow list --query 'MarkcoOperation="migrate" AND MarkcoUserId=/)), new RegExp(`user/${userId}/migrate`));
  });

  test('the cancel line, while a migration launches its host: the runtime keeps serving where it was and no instance of that migration is left', async () => {
    const before = (await db.store.runtimes.live(userId))!;
    const instancesBefore = (await liveInstancesOfUser(ec2, userId, deploymentId)).map((i) => i.InstanceId);
    // A migration to a bigger tier: a new host must be launched and booted, which leaves time to cancel it.
    const line = find(/^temporal workflow execute-update-with-start .*--update-name migrate --update-input '\{"target":"t3.small"/).replace('"target":"t3.small"', '"target":"t3.medium"');
    await cli(line);
    await waitFor('the migration to be launching its host', async () => {
      const step = await cli(find(/^temporal workflow query --workflow-id user\/[0-9a-f-]+\/migrate --type step$/));
      if (!/target/.test(step)) throw new Error(step);
    }, { timeoutMs: 30_000, intervalMs: 100 });
    await cli(find(/^temporal workflow cancel --workflow-id user\/[0-9a-f-]+\/migrate$/));
    await waitFor('the migration to end cancelled', async () => {
      const described = await cli(`temporal workflow describe --workflow-id user/${userId}/migrate`);
      if (!/Canceled|Cancelled|Failed/i.test(described)) throw new Error(described.slice(0, 300));
    }, { timeoutMs: 120_000, intervalMs: 500 });
    const after = (await db.store.runtimes.live(userId))!;
    assert.equal(after.hostId, before.hostId, 'still where it was');
    assert.equal(after.state, 'running');
    assert.equal(await execute('x'), '42', 'and serving, with its state');
    await waitFor('no instance of the cancelled migration to be left', async () => {
      const left = (await liveInstancesOfUser(ec2, userId, deploymentId)).map((i) => i.InstanceId).filter((id) => !instancesBefore.includes(id));
      if (left.length > 0) throw new Error(`still running: ${left.join(', ')}`);
    }, { timeoutMs: 120_000, intervalMs: 1000 });
    const row = await db.pool.query<{ status: string }>(`SELECT status FROM migrations WHERE user_id = $1 ORDER BY started_at DESC LIMIT 1`, [userId]);
    assert.ok(['failed', 'cancelled'].includes(row.rows[0]!.status), `the migration row says it ended: ${row.rows[0]!.status}`);
  });
  test('a target host that stops answering: the migration shows as retrying in the Web UI and completes once the host is back, with no operator action', async () => {
    const target = h.state.hosts[0]!;
    // The runtime AMI has the images baked in: the namespace host reads the machine's built images.
    writeFileSync(target.env.CONTAINERS_STORAGE_CONF, storageConf(target.dir, '/var/lib/containers/storage'));
    await db.store.hosts.upsert({ id: target.hostId, kind: 'ec2', address: target.address, state: 'booting', sshUser: target.sshUser, hostKey: target.hostKey, instanceId: `i-${target.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.medium' });
    await db.store.hosts.markReady(target.hostId, await probeHostFacts(shells.for(connectionTo(target))));
    // Every packet into the host is dropped (as a security group or a dead link would): ssh connects time out.
    await shells.closeAll();
    reconnectHost = await cutNetwork(target, 'unreachable');

    const line = find(/^temporal workflow execute-update-with-start .*--update-name migrate --update-input '\{"target":"t3.small"/).replace(
      '{"target":"t3.small","reason":"operator"}',
      JSON.stringify({ target: 't3.medium', reason: 'operator', targetHostId: target.hostId }),
    );
    assert.match(line, new RegExp(target.hostId), 'the runbook line carries the operator\'s input');
    await cli(line);
    const temporal = await temporalClient(h.state);
    try {
      const handle = temporal.client.workflow.getHandle(`user/${userId}/migrate`);
      let runId = '';
      const retrying = await waitFor('the migration to retry an activity on the unreachable host', async () => {
        const d = await handle.describe();
        runId = d.runId;
        const pending = d.raw.pendingActivities?.find((a) => (a.attempt ?? 0) >= 2 && a.lastFailure);
        if (!pending) throw new Error(JSON.stringify(d.raw.pendingActivities?.map((a) => [a.activityType?.name, a.attempt])));
        return pending;
      }, { timeoutMs: 90_000, intervalMs: 500 });
      assert.equal(retrying.activityType?.name, 'prepareTarget');
      assert.match(String(retrying.lastFailure?.message), /reach|timed out|connect/i, 'the last failure says the host could not be reached');
      assert.equal((await db.store.runtimes.live(userId))!.state, 'migrating');

      mkdirSync(artifacts, { recursive: true });
      browser = await launchChromium();
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      const ui = `${h.state.temporal.uiUrl}/namespaces/${h.state.temporal.namespace}/workflows/${encodeURIComponent(`user/${userId}/migrate`)}/${runId}`;
      await page.goto(`${ui}/pending-activities`);
      await page.locator('text=prepareTarget').first().waitFor({ timeout: 30_000 });
      await page.locator('text=/HostUnreachable|could not reach|timed out/i').first().waitFor({ timeout: 30_000 });
      await page.screenshot({ path: join(artifacts, 'migration-retrying.png'), fullPage: true });
      const shown = await page.content();
      assert.match(shown, /Attempt/i, 'the Web UI shows the attempt count');

      await reconnectHost();
      const result = await cli(find(/^temporal workflow result --workflow-id user\/[0-9a-f-]+\/migrate$/));
      assert.match(result, /"toTier":\s*"t3.medium"/);
      const rt = (await db.store.runtimes.live(userId))!;
      assert.deepEqual([rt.hostId, rt.state], [target.hostId, 'running']);
      assert.equal(await execute('x'), '42', 'x survived the stuck migration');
      // The Web UI can first render the run as it last fetched it: reload until it shows the completion.
      await waitFor('the Web UI to show the migration completed', async () => {
        await page.goto(`${ui}/history`);
        await page.locator('text=/Workflow Execution Completed|Completed/').first().waitFor({ timeout: 10_000 });
      }, { timeoutMs: 90_000, intervalMs: 2000 }).catch(async (err: unknown) => {
        await page.screenshot({ path: join(artifacts, 'migration-completed-not-shown.png'), fullPage: true });
        throw err;
      });
      await page.screenshot({ path: join(artifacts, 'migration-completed.png'), fullPage: true });
    } finally {
      await temporal.close();
    }
  });
  test("the cancel update: refused where nothing can be cancelled, and a migration cancelled with it undoes itself and says cancelled", async () => {
    const refused = await cli(find(/^temporal workflow update execute --workflow-id runtime\/[0-9a-f-]+ --name cancel /)).then(
      () => '',
      (err: Error) => err.message,
    );
    assert.match(refused, /nothing to cancel/, 'the entity refuses a cancel while it runs no operation');
    const before = (await db.store.runtimes.live(userId))!;
    const instancesBefore = (await liveInstancesOfUser(ec2, userId, deploymentId)).map((i) => i.InstanceId);
    const line = find(/^temporal workflow execute-update-with-start .*--update-name migrate --update-input '\{"target":"t3.small"/);
    await cli(line);
    await waitFor('the migration to be launching its host', async () => {
      const step = await cli(find(/^temporal workflow query --workflow-id user\/[0-9a-f-]+\/migrate --type step$/));
      if (!/target/.test(step)) throw new Error(step);
    }, { timeoutMs: 30_000, intervalMs: 100 });
    const answer = await cli(find(/^temporal workflow update execute --workflow-id user\/[0-9a-f-]+\/migrate --name cancel /));
    // The CLI prints the update's result {"step":"target"} as a Go map.
    assert.match(answer, /step"?:\s*"?target/, 'the answer names the step the cancel caught it at');
    const temporal = await temporalClient(h.state);
    try {
      const ended = await waitFor('the migration to end', async () => {
        const d = await temporal.client.workflow.getHandle(`user/${userId}/migrate`).describe();
        if (d.status.name === 'RUNNING') throw new Error('still running');
        return d;
      }, { timeoutMs: 120_000, intervalMs: 500 });
      assert.deepEqual(ended.searchAttributes.MarkcoStatus, ['cancelled'], 'MarkcoStatus says cancelled, not failed');
    } finally {
      await temporal.close();
    }
    const after = (await db.store.runtimes.live(userId))!;
    assert.deepEqual([after.hostId, after.state], [before.hostId, 'running'], 'still where it was');
    assert.equal(await execute('x'), '42');
    await waitFor('no instance of the cancelled migration to be left', async () => {
      const left = (await liveInstancesOfUser(ec2, userId, deploymentId)).map((i) => i.InstanceId).filter((id) => !instancesBefore.includes(id));
      if (left.length > 0) throw new Error(`still running: ${left.join(', ')}`);
    }, { timeoutMs: 120_000, intervalMs: 1000 });
  });
});
