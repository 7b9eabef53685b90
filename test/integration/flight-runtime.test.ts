import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { createAuth } from '../../api/auth.js';
import type { HostShells } from '../../activities/host-shell.js';
import { createFlightAccess } from '../../flight/auth.js';
import { podmanGateway, startFlightServer, type RunningFlightServer } from '../../flight/server.js';
import { waitFor } from '../../infra/dev/processes.js';
import { runtimeDataUrl } from '../../lib/config.js';
import { createLogger } from '../../lib/logger.js';
import { entityStateQuery } from '../../workflows/contracts/runtime-entity.js';
import { workflowIds } from '../../workflows/contracts/operations.js';
import type { registerHost } from '../../workflows/register-host.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import { createOperations } from '../../lib/operations.js';
import { emulatorArchiveBucket, freshDatabase, registerBaseHost, startTestWorker, stopTestWorker, temporalClient, testEnvironment, testShells, type TestDatabase, useHarness } from '../support/context.js';
import { startTestEdge, testAdminToken, type RunningEdge } from '../support/edge.js';
import { edgeClient, type TestSession } from '../support/edge-client.js';
import { hostEnvShell, podmanOn, storageConf } from '../support/netns.js';

/**
 * The data service from inside a notebook, as its user meets it: a runtime container made by a login gets
 * the service's address and a data token of its own (MARKCO_DATA_URL, MARKCO_DATA_TOKEN); a cell reads its
 * user's dataset with pyarrow.flight over podman's bridge, gets what DuckDB computes on the file, is refused
 * another user's dataset, and the token opens nothing on the edge. The kernel that used the service is then
 * checkpointed (its connection closed by the server when idle, or CRIU could not move it) and returns, and
 * reads again with the same token.
 */
describe('the data service from a runtime', () => {
  const h = useHarness({ hosts: 0 });
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Worker;
  let running: Promise<void>;
  let closeWorker: () => Promise<void>;
  let edge: RunningEdge;
  let flight: RunningFlightServer;
  let temporal: { client: Client; close: () => Promise<void> };
  let datasetsDir: string;
  let userId: string;
  let username: string;
  let otherUsername: string;
  let session: TestSession;
  let expected: { rows: number; fareSum: number };
  let gateway: string;
  let taskQueue: string;

  const client = edgeClient(() => edge.url);
  const json = { accept: 'application/json' };
  const admin = { ...json, authorization: `Bearer ${testAdminToken}` };
  const execute = async (code: string): Promise<string | null> => {
    const rt = (await db.store.runtimes.live(userId))!;
    const res = await client.call(`/u/${userId}/proxy/${rt.port}/mrp/v1/execute`, { session, headers: json, body: { code } });
    assert.equal(res.status, 200, res.text);
    return (res.json as { result: string | null }).result;
  };
  /** A cell that reads through the data service with the runtime's own address and token; `outcome` is the error's class or the rows. */
  const readInKernel = (dataset: string, sql: string) =>
    execute(`
import os, json, pyarrow.flight as fl
try:
    _client = fl.FlightClient(os.environ["MARKCO_DATA_URL"])
    _options = fl.FlightCallOptions(headers=[(b"authorization", ("Bearer " + os.environ["MARKCO_DATA_TOKEN"]).encode())])
    _table = _client.do_get(fl.Ticket(json.dumps({"dataset": ${JSON.stringify(dataset)}, "sql": ${JSON.stringify(sql)}})), options=_options).read_all()
    outcome = json.dumps(_table.to_pylist())
except Exception as e:
    outcome = type(e).__name__ + ": " + str(e)[:300]
outcome`);
  const unquote = (r: string | null) => (r ?? '').replace(/^'|'$/g, '');
  const countSql = 'SELECT count(*) AS n, sum(fare) AS fare_sum FROM dataset WHERE fare > 100';

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    datasetsDir = mkdtempSync(join(tmpdir(), 'markco-flight-runtime-'));
    gateway = (await podmanGateway())!;
    assert.ok(gateway, "podman's default network has no gateway for runtimes to reach the data service on");
    const auth = createAuth({ sessions: db.store.sessions, adminToken: undefined, secureCookies: false });
    flight = await startFlightServer({
      host: '127.0.0.1',
      port: 0,
      alsoListenOn: [gateway, h.state.network.gateway],
      idleConnectionMs: 1000,
      addressPollMs: 200,
      datasetsDir,
      access: createFlightAccess({ auth, dataTokens: db.store.dataTokens, memberships: db.store.memberships, users: db.store.users }),
      log: createLogger({ level: 'warn', name: 'flight-runtime-test' }),
    });
    const archives = await emulatorArchiveBucket(h.state);
    const started = await startTestWorker(h.state, {
      store: db.store,
      shells,
      archives,
      environment: {
        ...testEnvironment(h.state),
        archivesDir: join(h.state.baseHost.dataDir, 'archives'),
        dataService: { url: runtimeDataUrl(flight.port), hostsForward: { address: h.state.network.gateway, port: flight.port } },
      },
    });
    taskQueue = started.taskQueue;
    worker = started.worker;
    running = worker.run();
    closeWorker = () => started.connection.close();
    edge = await startTestEdge(h.state, db, started.taskQueue);
    temporal = await temporalClient(h.state);

    session = await client.devLogin('reader@example.test');
    userId = session.id;
    username = (await db.store.users.get(userId))!.username;
    const other = (await db.store.users.ensureByEmail({ email: 'someone-else@example.test' })).user;
    otherUsername = other.username;

    const trips = join(datasetsDir, userId, 'trips.parquet');
    mkdirSync(join(datasetsDir, userId));
    mkdirSync(join(datasetsDir, other.id));
    const duck = await DuckDBInstance.create(':memory:');
    const c = await duck.connect();
    await c.run(`COPY (SELECT i AS id, round(i * 0.37, 2)::DOUBLE AS fare FROM range(20000) t(i)) TO '${trips}' (FORMAT parquet)`);
    await c.run(`COPY (SELECT 1 AS secret) TO '${join(datasetsDir, other.id, 'private.parquet')}' (FORMAT parquet)`);
    const answer = (await c.runAndReadAll(countSql.replace('FROM dataset', `FROM '${trips}'`))).getRowObjectsJson()[0]!;
    expected = { rows: Number(answer.n), fareSum: Number(answer.fare_sum) };
    c.closeSync();
    duck.closeSync();

    await waitFor('the runtime and editor to run', async () => {
      const d = await client.call('/dashboard', { session, headers: json });
      if (d.json?.runtime?.state !== 'running' || d.json?.editor?.state !== 'running') throw new Error(d.text);
    }, { timeoutMs: 240_000, intervalMs: 500 });
    assert.equal(await execute('x = 42'), null);
  });

  after(async () => {
    await edge?.close();
    const stopped = worker ? await stopTestWorker(worker, running) : undefined;
    await closeWorker?.();
    await temporal?.close();
    await flight?.close();
    await hostEnvShell(h.state.baseHost).run(['sh', '-c', `podman ps -a --format '{{.Names}}' | grep -E '^(rt|ed)-${userId}' | xargs -r podman rm --force --time 0`], { okExitCodes: [0, 1, 123] }).catch(() => undefined);
    if (userId) await podmanOn(h.state.hosts[0]!, ['rm', '--force', '--time', '0', `rt-${userId}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    await shells?.closeAll();
    await db?.drop();
    if (datasetsDir) rmSync(datasetsDir, { recursive: true, force: true });
    if (stopped) throw stopped;
  });

  test('a cell reads its user’s dataset with the runtime’s own address and token, and gets what DuckDB computes', async () => {
    // podman's bridge may have appeared only with this user's containers: the server listens once it is there.
    await waitFor('the data service to listen on podman’s gateway', async () => {
      if (!flight.listeningOn().includes(gateway)) throw new Error(flight.listeningOn().join(', '));
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.equal(unquote(await execute('import os; os.environ["MARKCO_DATA_URL"]')), `grpc://host.containers.internal:${flight.port}`);
    const outcome = unquote(await readInKernel(`${username}/trips`, countSql));
    const rows = JSON.parse(outcome) as { n: number; fare_sum: number }[];
    assert.equal(rows[0]!.n, expected.rows, outcome);
    assert.ok(Math.abs(rows[0]!.fare_sum - expected.fareSum) < 1e-6, outcome);
  });

  test('the token is kept only as a hash, and never passes through workflow history', async () => {
    const token = unquote(await execute('os.environ["MARKCO_DATA_TOKEN"]'));
    assert.match(token, /^mkd_[A-Za-z0-9_-]{43}$/);
    const stored = await db.store.pool.query<{ token_hash: Buffer }>('SELECT token_hash FROM data_tokens WHERE user_id = $1', [userId]);
    assert.equal(stored.rows.length, 1, 'one runtime container made, one token');
    const dump = (await db.store.pool.query('SELECT * FROM data_tokens')).rows.map((r) => JSON.stringify(r)).join('\n');
    assert.ok(!dump.includes(token), 'the plaintext token is not in the database');
    const history = await temporal.client.workflow.getHandle(workflowIds.login(userId)).fetchHistory();
    assert.ok(!JSON.stringify(history).includes(token), 'the token is not in the login’s history');
  });

  test('another user’s dataset is refused in the kernel, and the data token opens nothing on the edge', async () => {
    assert.match(unquote(await readInKernel(`${otherUsername}/private`, 'SELECT * FROM dataset')), /^FlightUnauthorizedError/);
    const token = unquote(await execute('os.environ["MARKCO_DATA_TOKEN"]'));
    assert.equal((await client.call('/dashboard', { headers: { ...json, authorization: `Bearer ${token}` } })).status, 401, 'as a bearer token');
    assert.equal((await client.call('/dashboard', { session: { cookie: `markco_session=${token}` }, headers: json })).status, 401, 'as a session cookie');
    const page = await client.call(`/u/${userId}/`, { session: { cookie: `markco_session=${token}` }, headers: json });
    assert.ok([401, 403].includes(page.status), `the token does not open the user’s editor (${page.status})`);
  });

  test('a kernel that used the data service is checkpointed, returns with x still 42, and reads again with the same token', async () => {
    // The server closes the kernel's idle connection after idleConnectionMs; until then CRIU would refuse it.
    await new Promise((r) => setTimeout(r, 2500));
    await waitFor('no operation of the user to run', async () => {
      const entity = await temporal.client.workflow.getHandle(`runtime/${userId}`).query(entityStateQuery);
      if (entity.running || entity.queue.length > 0) throw new Error(JSON.stringify(entity));
    }, { timeoutMs: 120_000, intervalMs: 500 });
    const idle = await client.call(`/api/runtimes/${userId}/idle?wait=240`, { headers: admin, body: {} });
    assert.equal(idle.status, 200, idle.text);
    assert.equal(idle.json.status, 'completed', idle.text);
    assert.equal((await db.store.runtimes.live(userId))?.state, 'checkpointed');

    const html = { accept: 'text/html' };
    await client.call(`/u/${userId}/`, { session, headers: html });
    await waitFor('the runtime to be back', async () => {
      const r = await client.call(`/u/${userId}/`, { session, headers: html });
      if (r.status !== 200 || (await db.store.runtimes.live(userId))?.state !== 'running') throw new Error(`status ${r.status}`);
    }, { timeoutMs: 240_000, intervalMs: 500 });
    assert.equal(await execute('x'), '42');
    const outcome = unquote(await readInKernel(`${username}/trips`, countSql));
    assert.equal((JSON.parse(outcome) as { n: number }[])[0]!.n, expected.rows, outcome);
  });

  test('a runtime migrated to an EC2 host reads through the forward its host was registered with', async () => {
    const remote = h.state.hosts[0]!;
    // The runtime AMI has the images baked in: the namespace host reads the machine's built images.
    writeFileSync(remote.env.CONTAINERS_STORAGE_CONF, storageConf(remote.dir, '/var/lib/containers/storage'));
    const registered = await temporal.client.workflow.execute<typeof registerHost>('registerHost', {
      taskQueue,
      workflowId: `${workflowIds.registerHost(remote.hostId)}-${randomBytes(3).toString('hex')}`,
      args: [{ hostId: remote.hostId, kind: 'ec2', address: remote.address, sshUser: remote.sshUser, hostKey: remote.hostKey, instanceId: `i-${remote.hostId.replace(/[^a-z0-9]/g, '')}`, instanceType: 't3.small' }],
      workflowExecutionTimeout: '2m',
    });
    assert.equal(registered.state, 'ready');
    const rules = (await hostEnvShell(remote).run(['nsenter', `--net=/var/run/netns/${remote.netns}`, 'iptables', '-t', 'nat', '-S', 'PREROUTING'])).stdout;
    assert.match(rules, new RegExp(`--to-destination ${h.state.network.gateway.replace(/\./g, '\\.')}:${flight.port}`), rules);

    await new Promise((r) => setTimeout(r, 2500)); // the kernel's last connection closed by the server
    const ops = createOperations(temporal.client, taskQueue);
    const moved = (await (await ops.startMigration(userId, { target: 't3.small', targetHostId: remote.hostId })).handle.result()) as MigrateRuntimeResult;
    assert.equal(moved.targetHostId, remote.hostId);
    assert.equal(await execute('x'), '42');
    const outcome = unquote(await readInKernel(`${username}/trips`, countSql));
    assert.equal((JSON.parse(outcome) as { n: number }[])[0]!.n, expected.rows, outcome);
    assert.match(unquote(await readInKernel(`${otherUsername}/private`, 'SELECT * FROM dataset')), /^FlightUnauthorizedError/);
  });
});
