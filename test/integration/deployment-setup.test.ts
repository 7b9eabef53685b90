import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { resolveTemporalCli } from '../../infra/dev/prerequisites.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';
import { reaperScheduleId, sandboxExpiryScheduleId } from '../../lib/schedules.js';
import { createWorker, entitySignals } from '../../workers/worker.js';
import { searchAttributeDefinitions } from '../../workflows/contracts/search-attributes.js';
import { emulatorEc2, freshDatabase, testCloud, testEnvironment, testShells, useHarness, type TestDatabase } from '../support/context.js';

const run = promisify(execFile);

/**
 * What the deployment's oneshot units run, against the real Temporal server and PostgreSQL of the test
 * harness, in a namespace of this file's own: infra/temporal/register-namespace.sh (the temporal CLI:
 * namespace, retention, search attributes; twice, as on every boot), then infra/systemd/ensure.ts schema
 * (markco-migrate: migrations into an empty database, search attributes) and ensure.ts monitor
 * (markco-monitor: schedules, the resource monitor workflow, the base host's registration through a
 * worker of that namespace), each as a child process with the environment a unit file gives it.
 */
describe('deployment setup: register-namespace.sh and the ensure entry point on real Temporal and PostgreSQL', () => {
  const h = useHarness();
  const namespace = `markco-deploy-${randomBytes(3).toString('hex')}`;
  const taskQueue = `deploy-${randomBytes(3).toString('hex')}`;
  let db: TestDatabase;
  let cli = '';
  let worker: Worker | undefined;
  let running: Promise<void> | undefined;
  let native: NativeConnection | undefined;
  let clientConnection: Connection | undefined;

  before(async () => {
    cli = resolveTemporalCli({ toolsDir: defaultToolsDir });
    db = await freshDatabase(h.state, { empty: true });
  });
  after(async () => {
    worker?.shutdown();
    await running?.catch(() => undefined);
    await native?.close();
    await clientConnection?.close();
    await db?.drop();
  });

  const unitEnv = () => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    DATABASE_URL: db.url,
    TEMPORAL_ADDRESS: h.state.temporal.address,
    TEMPORAL_NAMESPACE: namespace,
    TEMPORAL_TASK_QUEUE: taskQueue,
    MARKCO_DATA_DIR: h.state.baseHost.dataDir,
    MARKCO_USERS_DIR: testEnvironment(h.state).usersDir,
    LOG_LEVEL: 'warn',
  });
  const cliJson = async (...args: string[]) => JSON.parse((await run(cli, [...args, '--address', h.state.temporal.address, '--namespace', namespace, '-o', 'json'])).stdout) as Record<string, any>;

  test('register-namespace.sh creates the namespace with its retention and markco search attributes; a second run updates the retention', async () => {
    const script = join(repoRoot, 'infra', 'temporal', 'register-namespace.sh');
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', TEMPORAL_ADDRESS: h.state.temporal.address, TEMPORAL_NAMESPACE: namespace, TEMPORAL_CLI: cli };
    const first = await run(script, [], { env: { ...env, TEMPORAL_RETENTION: '72h' }, timeout: 180_000 });
    assert.match(first.stdout, new RegExp(`${namespace} created`));
    assert.equal((await cliJson('operator', 'namespace', 'describe')).config.workflowExecutionRetentionTtl, '259200s');
    const second = await run(script, [], { env: { ...env, TEMPORAL_RETENTION: '48h' }, timeout: 180_000 });
    assert.match(second.stdout, new RegExp(`${namespace} exists`));
    assert.equal((await cliJson('operator', 'namespace', 'describe')).config.workflowExecutionRetentionTtl, '172800s');
    const attrs = (await cliJson('operator', 'search-attribute', 'list')).customAttributes as Record<string, string>;
    for (const name of Object.keys(searchAttributeDefinitions)) assert.equal(attrs[name], 'INDEXED_VALUE_TYPE_KEYWORD', name);
  });

  test('ensure.ts schema migrates an empty database (twice: idempotent)', async () => {
    for (let i = 0; i < 2; i++) await run(process.execPath, ['--import', 'tsx', join(repoRoot, 'infra', 'systemd', 'ensure.ts'), 'schema'], { cwd: repoRoot, env: unitEnv(), timeout: 120_000 });
    const { rows } = await db.pool.query<{ n: string }>('SELECT count(*) AS n FROM pgmigrations');
    assert.ok(Number(rows[0]!.n) > 0);
    await db.pool.query('SELECT 1 FROM hosts LIMIT 1');
  });

  test('ensure.ts monitor creates the schedules, starts markco-monitor and registers the base host; a second run changes nothing', async () => {
    native = await NativeConnection.connect({ address: h.state.temporal.address });
    clientConnection = await Connection.connect({ address: h.state.temporal.address });
    worker = await createWorker({
      connection: native,
      namespace,
      taskQueue,
      deps: { store: db.store, shells: testShells(h.state), environment: testEnvironment(h.state), cloud: testCloud(h.state), ec2: emulatorEc2(h.state), entities: entitySignals(new Client({ connection: clientConnection, namespace }), taskQueue) },
      workflowBundlePath: h.state.workflowBundlePath,
      shutdownGraceTime: '2s',
    });
    running = worker.run();
    const ensure = () => run(process.execPath, ['--import', 'tsx', join(repoRoot, 'infra', 'systemd', 'ensure.ts'), 'monitor'], { cwd: repoRoot, env: unitEnv(), timeout: 300_000 });
    await ensure();
    const client = new Client({ connection: clientConnection, namespace });
    for (const id of [reaperScheduleId, sandboxExpiryScheduleId]) {
      const d = await client.schedule.getHandle(id).describe();
      assert.equal((d.action as { taskQueue: string }).taskQueue, taskQueue, id);
    }
    const monitor = await client.workflow.getHandle('markco-monitor').describe();
    assert.equal(monitor.status.name, 'RUNNING');
    assert.equal(monitor.taskQueue, taskQueue);
    const { rows } = await db.pool.query<{ id: string; state: string }>("SELECT id, state FROM hosts WHERE id = 'base'");
    assert.equal(rows.length, 1, 'the base host is registered');
    await ensure();
    const again = await client.workflow.getHandle('markco-monitor').describe();
    assert.equal(again.runId, monitor.runId, 'the running monitor is left alone');
    await client.workflow.getHandle('markco-monitor').terminate('test done');
  });
});
