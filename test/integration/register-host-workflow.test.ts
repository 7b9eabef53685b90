import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Worker } from '@temporalio/worker';
import type { HostShells } from '../../activities/host-shell.js';
import { ErrorType, SearchAttr, stepQuery, workflowIds, type RegisterHostInput } from '../../workflows/contracts/index.js';
import type { registerHost } from '../../workflows/register-host.js';
import { freshDatabase, startTestWorker, stopTestWorker, temporalClient, type TestDatabase, testShells, useHarness } from '../support/context.js';

/** registerHost on the real Temporal server, with the real activities: ssh2 to a namespace host, PostgreSQL. */
describe('registerHost workflow', () => {
  const h = useHarness();
  let db: TestDatabase;
  let shells: HostShells;
  let client: Client;
  let closeClient: () => Promise<void>;
  let worker: Worker;
  let taskQueue: string;
  let running: Promise<void>;

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state, { connectTimeoutMs: 2000 });
    ({ client, close: closeClient } = await temporalClient(h.state));
    ({ worker, taskQueue } = await startTestWorker(h.state, { store: db.store, shells }));
    running = worker.run();
  });
  after(async () => {
    const stopped = await stopTestWorker(worker, running);
    await closeClient();
    await shells.closeAll();
    await db.drop();
    if (stopped) throw stopped;
  });

  const inputFor = (index: number, overrides: Partial<RegisterHostInput> = {}): RegisterHostInput => {
    const host = h.state.hosts[index]!;
    return { hostId: host.hostId, kind: 'ec2', instanceId: `i-${host.hostId.replace(/[^0-9a-f]/g, '')}`, instanceType: 't3.medium', address: host.address, sshUser: 'root', hostKey: host.hostKey, ...overrides };
  };
  const start = (input: RegisterHostInput, workflowId = `${workflowIds.registerHost(input.hostId)}-${randomBytes(3).toString('hex')}`) =>
    client.workflow.start<typeof registerHost>('registerHost', { taskQueue, workflowId, args: [input], workflowExecutionTimeout: '2m' });

  test('probes a host over ssh2 and records it ready, with its facts and an event', async () => {
    const input = inputFor(1);
    const handle = await start(input);
    const result = await handle.result();
    assert.equal(result.state, 'ready');
    assert.equal(result.facts.ociRuntime, 'runc');
    assert.match(result.facts.criuVersion, /^4\.\d+/);
    assert.ok(result.facts.memoryBytes > 0 && result.facts.cpus > 0);

    const row = await db.store.hosts.get(input.hostId);
    assert.equal(row?.state, 'ready');
    assert.equal(row?.address, input.address);
    assert.equal(row?.hostKey, input.hostKey);
    assert.equal(row?.facts.criuVersion, result.facts.criuVersion);
    assert.equal(row?.memoryBytes, result.facts.memoryBytes);
    const events = await db.store.events.recent({ hostId: input.hostId });
    assert.deepEqual(events.map((e) => e.type), ['host.registered']);
    assert.equal(events[0]?.workflowId, handle.workflowId);

    assert.equal(await handle.query(stepQuery), 'done');
    const described = await handle.describe();
    assert.deepEqual(described.typedSearchAttributes.get(SearchAttr.operation), 'register-host');
    assert.deepEqual(described.typedSearchAttributes.get(SearchAttr.targetHost), input.hostId);
    assert.deepEqual(described.typedSearchAttributes.get(SearchAttr.status), 'completed');
  });

  test('a host presenting another key fails at once (not retried) and is recorded failed', async () => {
    const other = h.state.hosts[0]!.hostKey;
    const hostId = `impostor-${randomBytes(2).toString('hex')}`;
    const input = inputFor(1, { hostId, instanceId: `i-${hostId}`, hostKey: other });
    const started = Date.now();
    const handle = await start(input);
    const err = await handle.result().then(
      () => assert.fail('registerHost should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof WorkflowFailedError);
    const cause = err.cause?.cause;
    assert.ok(cause instanceof ApplicationFailure, `cause is an ApplicationFailure (${String(cause)})`);
    assert.equal(cause.type, ErrorType.HostKeyMismatch);
    assert.match(cause.message, /not the pinned key/);
    assert.ok(Date.now() - started < 20_000, 'a permanent failure is not retried');

    const row = await db.store.hosts.get(input.hostId);
    assert.equal(row?.state, 'failed');
    assert.match(row?.error ?? '', /not the pinned key/);
    const described = await handle.describe();
    assert.equal(described.typedSearchAttributes.get(SearchAttr.status), 'failed');
  });

  test('registering an instance id that another host holds fails at once with Conflict, not retried', async () => {
    const input = inputFor(1, { hostId: `dup-${randomBytes(2).toString('hex')}` });
    const started = Date.now();
    const err = (await (await start(input)).result().catch((e: unknown) => e)) as WorkflowFailedError;
    assert.ok(err instanceof WorkflowFailedError);
    const cause = err.cause?.cause;
    assert.ok(cause instanceof ApplicationFailure);
    assert.equal(cause.type, ErrorType.Conflict, cause.message);
    assert.match(cause.message, /hosts_instance_id_key/);
    assert.ok(Date.now() - started < 20_000, 'a permanent failure is not retried');
    assert.equal(await db.store.hosts.get(input.hostId), undefined, 'no half-made host row');
    const logged = await db.pool.query(`SELECT type FROM events WHERE payload->>'unrecordedHostId' = $1`, [input.hostId]);
    assert.deepEqual(logged.rows.map((r) => r.type), ['host.register-failed'], 'the failure is still in the event log');
  });

  test('invalid input is rejected with what is wrong, and nothing is recorded', async () => {
    const input = { hostId: 'Bad Host!', kind: 'ec2', address: '' } as unknown as RegisterHostInput;
    const handle = await start(input, `invalid-${randomBytes(3).toString('hex')}`);
    const err = (await handle.result().catch((e: unknown) => e)) as WorkflowFailedError;
    assert.ok(err instanceof WorkflowFailedError);
    assert.ok(err.cause instanceof ApplicationFailure);
    assert.equal(err.cause.type, ErrorType.InvalidInput);
    assert.match(err.cause.message, /hostId: expected lowercase/);
    assert.match(err.cause.message, /address: expected the host address/);
    assert.match(err.cause.message, /hostKey: an EC2 host needs a pinned ssh host key/);
    const rows = await db.pool.query('SELECT count(*)::int AS n FROM hosts');
    assert.equal(rows.rows[0].n, 2, 'only the hosts of the earlier tests exist');
  });
});
