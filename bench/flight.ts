import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { createAuth } from '../api/auth.js';
import { createFlightAccess } from '../flight/auth.js';
import { startFlightServer, type RunningFlightServer } from '../flight/server.js';
import { createLogger } from '../lib/logger.js';
import { defaultToolsDir } from '../lib/paths.js';
import { freshDatabase, type TestDatabase } from '../test/support/context.js';
import { startHarness, type RunningHarness } from '../test/support/harness.js';
import { median, range } from './edge-setup.js';
import { report } from './results.js';
import { cleanUpOnSignal, stopBenchParts } from './teardown.js';

/**
 * The data service against DuckDB itself: rows per second for a 10-million-row Parquet file read by a
 * notebook through Arrow Flight (pyarrow.flight's DoGet of `SELECT * FROM dataset`, the whole result as
 * one Arrow table), next to the same file read by DuckDB's Python package locally into an Arrow table
 * (`duckdb.sql(...).fetch_arrow_table()`), alternating, ROUNDS rounds (default 3). A filtered query
 * (a seventh of the rows) is measured the same way. To tell the transport from the rest, the DoGet answer
 * of the whole file is also captured once and replayed from memory by a bare grpc-js DoGet into the same
 * pyarrow client (no DuckDB, no conversion). The server runs in this process with the real session
 * check (PostgreSQL from the test harness); the client in a Python process of the tools venv.
 *   ROWS=10000000 ROUNDS=3 npx tsx bench/flight.ts
 */
const rows = Number(process.env.ROWS ?? 10_000_000);
const rounds = Number(process.env.ROUNDS ?? 3);
const python = join(process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir, 'venv', 'bin', 'python');
const run = promisify(execFile);

const makeFile = `
import duckdb, sys
duckdb.sql(f"""COPY (SELECT i AS id, i * 0.5 AS value, 'cat' || (i % 7) AS category, i % 3 = 0 AS flag,
  TIMESTAMP '2024-01-01' + to_seconds(i) AS ts FROM range({sys.argv[2]}) t(i)) TO '{sys.argv[1]}' (FORMAT parquet)""")
`;

const measure = `
import json, sys, time
import duckdb, pyarrow.flight as fl
location, token, dataset, path, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
client = fl.FlightClient(location)
options = fl.FlightCallOptions(headers=[(b"authorization", ("Bearer " + token).encode())])
queries = {"all": "SELECT * FROM dataset", "filtered": "SELECT * FROM dataset WHERE category = 'cat3'"}
out = {k: {"flight": [], "local": [], "rows": None} for k in queries}
def flight(sql):
    return client.do_get(fl.Ticket(json.dumps({"dataset": dataset, "sql": sql})), options=options).read_all()
def local(sql):
    return duckdb.sql(sql.replace("FROM dataset", "FROM read_parquet('" + path + "')")).fetch_arrow_table()
for name, sql in queries.items():
    flight(sql); local(sql)  # warm the page cache and both code paths
for r in range(rounds):
    for name, sql in queries.items():
        for way, fn in (("local", local), ("flight", flight)):
            t0 = time.perf_counter(); table = fn(sql); seconds = time.perf_counter() - t0
            if out[name]["rows"] is None: out[name]["rows"] = table.num_rows
            assert table.num_rows == out[name]["rows"], (way, table.num_rows, out[name]["rows"])
            out[name][way].append(table.num_rows / seconds)
print(json.dumps(out))
`;


const doGetPath = '/arrow.flight.protocol.FlightService/DoGet';
/** A Flight Ticket message: field 1 (bytes). */
function ticketMessage(ticket: Buffer): Buffer {
  const len: number[] = [];
  for (let n = ticket.length; ; n >>>= 7) {
    if (n < 0x80) {
      len.push(n);
      break;
    }
    len.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([0x0a, ...len]), ticket]);
}

/** The server's DoGet answer as the encoded FlightData messages it sent, one Buffer each. */
async function captureDoGet(location: string, token: string, ticket: string): Promise<Buffer[]> {
  const client = new grpc.Client(location.replace(/^grpc:\/\//, ''), grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': -1 });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  const messages: Buffer[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const call = client.makeServerStreamRequest(doGetPath, (b: Buffer) => b, (b: Buffer) => b, ticketMessage(Buffer.from(ticket)), metadata);
      call.on('data', (m: Buffer) => messages.push(m));
      call.on('error', reject);
      call.on('end', resolve);
    });
  } finally {
    client.close();
  }
  return messages;
}

/** A grpc-js server whose DoGet sends the captured messages again: Flight's transport without DuckDB or conversion. */
async function startReplayServer(messages: Buffer[]): Promise<{ location: string; close(): void }> {
  const replayServer = new grpc.Server({ 'grpc.max_send_message_length': -1 });
  const identity = (b: Buffer) => b;
  const definition: grpc.ServiceDefinition = {
    DoGet: { path: doGetPath, requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity, originalName: 'DoGet' },
  };
  replayServer.addService(definition, {
    DoGet: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      let i = 0;
      // Respect back-pressure as the real server does.
      const pump = () => {
        while (i < messages.length) if (!call.write(messages[i++]!)) return void call.once('drain', pump);
        call.end();
      };
      pump();
    },
  });
  const port = await new Promise<number>((resolve, reject) => replayServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { location: `grpc://127.0.0.1:${port}`, close: () => replayServer.forceShutdown() };
}

/** The replayed DoGet into pyarrow, ROUNDS times after a warm-up: rows per second of each. */
const measureReplay = `
import json, sys, time
import pyarrow.flight as fl
client = fl.FlightClient(sys.argv[1])
client.do_get(fl.Ticket(b"replay")).read_all()
out = []
for r in range(int(sys.argv[2])):
    t0 = time.perf_counter(); table = client.do_get(fl.Ticket(b"replay")).read_all(); out.append(table.num_rows / (time.perf_counter() - t0))
print(json.dumps(out))
`;

/**
 * CPU, not wall time: the client's process time per call, DuckDB's local read and pyarrow.flight's DoGet
 * alternating as in the rounds above; the server is idle during the local reads, so its CPU over the run
 * belongs to the DoGets. Mode `replay`: the transport-alone server instead.
 */
const measureCpu = `
import json, sys, time
import duckdb, pyarrow.flight as fl
location, token, dataset, path, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
client = fl.FlightClient(location)
options = fl.FlightCallOptions(headers=[(b"authorization", ("Bearer " + token).encode())])
def local(): return duckdb.sql("SELECT * FROM read_parquet('" + path + "')").fetch_arrow_table()
def replay(): return client.do_get(fl.Ticket(b"replay")).read_all()
def flight(): return client.do_get(fl.Ticket(json.dumps({"dataset": dataset, "sql": "SELECT * FROM dataset"})), options=options).read_all()
ways = {"local": local, "remote": replay if mode == "replay" else flight}
out = {"local": [], "remote": []}
for r in range(n):
    for way, fn in ways.items():
        if way == "local" and mode == "replay": continue
        c0 = time.process_time(); fn(); out[way].append(time.process_time() - c0)
print(json.dumps(out))
`;

/** Core-seconds per call: this process (the server, with DuckDB's threads), the client, and DuckDB's local read. */
async function cpuPerCall(location: string, token: string, dataset: string, file: string, mode: 'flight' | 'replay', calls: number) {
  const before = process.cpuUsage();
  const { stdout } = await run(python, ['-c', measureCpu, location, token, dataset, file, mode, String(calls)], { timeout: 600_000 });
  const used = process.cpuUsage(before);
  const client = JSON.parse(stdout.trim().split('\n').pop()!) as { local: number[]; remote: number[] };
  return { server: (used.user + used.system) / 1e6 / calls, client: median(client.remote), local: client.local.length > 0 ? median(client.local) : NaN };
}

let harness: RunningHarness | undefined;
let db: TestDatabase | undefined;
let server: RunningFlightServer | undefined;
let replay: { location: string; close(): void } | undefined;
const work = mkdtempSync(join(tmpdir(), 'markco-bench-flight-'));
const cleanup = () => stopBenchParts({ closers: [() => replay?.close(), () => server?.close(), () => db?.drop(), () => rmSync(work, { recursive: true, force: true })], harness });
cleanUpOnSignal(cleanup);

try {
  harness = await startHarness({ hosts: 0 });
  db = await freshDatabase(harness.state);
  const { user } = await db.store.users.ensureByEmail({ email: 'bench@example.test' });
  const { token } = await db.store.sessions.create(user.id);
  mkdirSync(join(work, user.id), { recursive: true });
  const file = join(work, user.id, 'big.parquet');
  await run(python, ['-c', makeFile, file, String(rows)], { timeout: 600_000 });
  const auth = createAuth({ sessions: db.store.sessions, adminToken: undefined, secureCookies: false });
  server = await startFlightServer({
    host: '127.0.0.1',
    port: 0,
    datasetsDir: work,
    access: createFlightAccess({ auth, dataTokens: db.store.dataTokens, memberships: db.store.memberships, users: db.store.users }),
    log: createLogger({ level: 'warn', name: 'flight-bench' }),
  });
  const { stdout } = await run(python, ['-c', measure, server.location, token, `${user.username}/big`, file, String(rounds)], { timeout: 1_800_000, maxBuffer: 1024 * 1024 });
  const cpu = await cpuPerCall(server.location, token, `${user.username}/big`, file, 'flight', rounds);
  const out = JSON.parse(stdout.trim().split('\n').pop()!) as Record<'all' | 'filtered', { flight: number[]; local: number[]; rows: number }>;
  // Afterwards, so the captured answer (hundreds of MB) is not in memory while the server is measured.
  const captured = await captureDoGet(server.location, token, JSON.stringify({ dataset: `${user.username}/big`, sql: 'SELECT * FROM dataset' }));
  replay = await startReplayServer(captured);
  const replayed = JSON.parse((await run(python, ['-c', measureReplay, replay.location, String(rounds)], { timeout: 600_000 })).stdout.trim().split('\n').pop()!) as number[];
  const replayCpu = await cpuPerCall(replay.location, '', '', file, 'replay', rounds);
  const mb = (statSync(file).size / 1e6).toFixed(0);
  console.log(`${rows.toLocaleString('en')} rows (${mb} MB Parquet: BIGINT, DOUBLE, VARCHAR, BOOLEAN, TIMESTAMP); ${rounds} rounds, alternating`);
  const params = `${rows.toLocaleString('en')} rows, ${mb} MB Parquet, ${rounds} rounds`;
  for (const [key, label] of [['all', 'DoGet of SELECT * (the whole file)'], ['filtered', 'DoGet of a filtered SELECT (1/7 of the rows)']] as const) {
    const m = out[key];
    const mrows = (xs: number[]) => xs.map((x) => Number((x / 1e6).toFixed(2)));
    console.log(
      `  ${label}: ${m.rows.toLocaleString('en')} rows; Flight ${(median(m.flight) / 1e6).toFixed(2)} M rows/s (${range(mrows(m.flight))}), DuckDB locally ${(median(m.local) / 1e6).toFixed(2)} M rows/s (${range(mrows(m.local))}), ratio ${(median(m.flight) / median(m.local)).toFixed(2)}x`,
    );
    report({
      name: label,
      metric: 'throughput (pyarrow.flight client, whole result as an Arrow table)',
      unit: 'rows/s',
      better: 'higher',
      samples: m.flight,
      baseline: { name: 'DuckDB (Python) reading the same file locally into Arrow', samples: m.local },
      ...(key === 'all' ? { goal: { on: 'ratio' as const, op: '>=' as const, value: 0.5, source: 'issue 11' } } : {}),
      params,
    });
  }
  const all = out.all;
  console.log(
    `  transport alone (the same FlightData messages replayed from memory by grpc-js, decoded by pyarrow): ${(median(replayed) / 1e6).toFixed(2)} M rows/s, ${(median(replayed) / median(all.local)).toFixed(2)}x of DuckDB locally`,
  );
  report({
    name: 'transport alone: the DoGet result replayed from memory (grpc-js) into pyarrow',
    metric: 'throughput (pyarrow.flight client, whole result as an Arrow table)',
    unit: 'rows/s',
    better: 'higher',
    samples: replayed,
    baseline: { name: 'DuckDB (Python) reading the same file locally into Arrow', samples: all.local },
    params: `${params}; ${captured.length} messages, ${(captured.reduce((n, b) => n + b.length, 0) / 1e6).toFixed(0)} MB`,
  });
  // Where the cores go: 0.5x of the local read's wall time is the goal, and on this machine's cores the
  // Flight path (server and client together) needs at least its CPU divided by the cores.
  const cores = availableParallelism();
  const flightCpu = cpu.server + cpu.client;
  const floorRowsPerS = rows / (flightCpu / cores);
  console.log(
    `  CPU per call (core-seconds): DuckDB locally ${cpu.local.toFixed(2)}; Flight server ${cpu.server.toFixed(2)} + client ${cpu.client.toFixed(2)}; ` +
      `transport alone server ${replayCpu.server.toFixed(2)} + client ${replayCpu.client.toFixed(2)}. At that cost, ${cores} cores cannot carry the Flight path past ` +
      `${(floorRowsPerS / 1e6).toFixed(1)} M rows/s (${(floorRowsPerS / median(all.local)).toFixed(2)}x of DuckDB locally); the transport alone past ` +
      `${(rows / ((replayCpu.server + replayCpu.client) / cores) / 1e6).toFixed(1)} M rows/s`,
  );
  for (const [name, server, client] of [
    ['CPU of a DoGet of SELECT * (server and client)', cpu.server, cpu.client],
    ['CPU of the transport alone (replay server and client)', replayCpu.server, replayCpu.client],
  ] as const) {
    report({
      name,
      metric: 'CPU per call (this process with its DuckDB threads, plus the Python client\'s process time)',
      unit: 'core-s',
      better: 'lower',
      samples: [server + client],
      baseline: { name: 'DuckDB (Python) reading the same file locally into Arrow, process time', samples: [cpu.local] },
      params: `${params}; server ${server.toFixed(2)} + client ${client.toFixed(2)} core-s; ${cores} cores`,
    });
  }
} finally {
  await cleanup();
}
