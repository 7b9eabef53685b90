import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import { createAuth } from '../../api/auth.js';
import { createFlightAccess } from '../../flight/auth.js';
import { startFlightServer, type RunningFlightServer } from '../../flight/server.js';
import { createLogger } from '../../lib/logger.js';
import { defaultToolsDir } from '../../lib/paths.js';
import { freshDatabase, useHarness, type TestDatabase } from '../support/context.js';

/**
 * The data service as a notebook user meets it: the real Flight server on a real database of sessions and
 * memberships, reached by a Flight client nobody here wrote (pyarrow.flight, from the tools venv), whose
 * answers are compared with DuckDB's own (the duckdb Python package) on the same file.
 */
const h = useHarness({ hosts: 0 });
const run = promisify(execFile);
const python = join(process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir, 'venv', 'bin', 'python');

/** Runs a Python snippet with pyarrow.flight; `args` arrive as the JSON `ARGS`; it prints one JSON line. */
async function py(code: string, args: unknown): Promise<any> {
  const script = `import json, sys\nimport pyarrow as pa, pyarrow.flight as fl, duckdb\nARGS = json.loads(sys.argv[1])\n${code}`;
  const { stdout } = await run(python, ['-c', script, JSON.stringify(args)], { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

/** A Flight call's outcome as pyarrow reports it: the exception class and message, or the result. */
const attempt = `
def attempt(fn):
    try:
        return {"ok": fn()}
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)}
def options(token):
    return fl.FlightCallOptions(headers=[(b"authorization", ("Bearer " + token).encode())]) if token else fl.FlightCallOptions()
def get(client, token, dataset, sql):
    return client.do_get(fl.Ticket(json.dumps({"dataset": dataset, "sql": sql})), options=options(token)).read_all()
`;

describe('the data service: Arrow Flight over DuckDB, through pyarrow.flight', () => {
  let db: TestDatabase;
  let server: RunningFlightServer;
  let datasetsDir: string;
  let tripsPath: string;
  const tokens: Record<'ada' | 'bob' | 'carol', string> = { ada: '', bob: '', carol: '' };
  let adaUsername: string;

  before(async () => {
    assert.ok(existsSync(python), `the tools venv's python is missing at ${python}: run infra/dev/bootstrap.sh (it installs pyarrow and duckdb there)`);
    db = await freshDatabase(h.state);
    const ada = (await db.store.users.ensureByEmail({ email: 'ada@example.test' })).user;
    const bob = (await db.store.users.ensureByEmail({ email: 'bob@example.test' })).user;
    const carol = (await db.store.users.ensureByEmail({ email: 'carol@example.test' })).user;
    adaUsername = ada.username;
    for (const [name, user] of [['ada', ada], ['bob', bob], ['carol', carol]] as const) tokens[name] = (await db.store.sessions.create(user.id)).token;
    // Bob is Ada's collaborator (he took her invite link); Carol is not.
    const invite = await db.store.invites.create({ ownerId: ada.id, project: 'analysis', role: 'viewer', expiresAt: new Date(Date.now() + 3600_000), maxUses: null });
    assert.equal((await db.store.invites.join(invite.token, bob.id)).kind, 'joined');

    datasetsDir = mkdtempSync(join(tmpdir(), 'markco-flight-datasets-'));
    mkdirSync(join(datasetsDir, ada.id));
    tripsPath = join(datasetsDir, ada.id, 'trips.parquet');
    const duck = await DuckDBInstance.create(':memory:');
    const c = await duck.connect();
    await c.run(`COPY (SELECT i AS id, round(i * 0.37, 2)::DOUBLE AS fare, CASE WHEN i % 11 = 0 THEN NULL ELSE 'zone-' || (i % 17) END AS zone,
        i % 4 = 0 AS shared_ride, TIMESTAMP '2024-03-01' + to_seconds(i * 7) AS pickup
      FROM range(50000) t(i)) TO '${tripsPath}' (FORMAT parquet)`);
    await c.run(`COPY (SELECT * FROM '${tripsPath}' LIMIT 100) TO '${join(datasetsDir, ada.id, 'sample.csv')}'`);
    c.closeSync();
    duck.closeSync();

    const auth = createAuth({ sessions: db.store.sessions, adminToken: undefined, secureCookies: false });
    server = await startFlightServer({
      host: '127.0.0.1',
      port: 0,
      datasetsDir,
      access: createFlightAccess({ auth, dataTokens: db.store.dataTokens, memberships: db.store.memberships, users: db.store.users }),
      log: createLogger({ level: 'warn', name: 'flight-test' }),
    });
  });

  after(async () => {
    await server?.close();
    await db?.drop();
    if (datasetsDir) rmSync(datasetsDir, { recursive: true, force: true });
  });

  test('pyarrow lists the datasets with schema, record and byte counts', async () => {
    const listed = await py(
      `${attempt}
client = fl.FlightClient(ARGS["location"])
print(json.dumps([{"path": [p.decode() for p in f.descriptor.path], "records": f.total_records, "bytes": f.total_bytes,
  "schema": [[x.name, str(x.type)] for x in f.schema], "tickets": [e.ticket.ticket.decode() for e in f.endpoints]} for f in client.list_flights(options=options(ARGS["token"]))]))`,
      { location: server.location, token: tokens.ada },
    );
    assert.deepEqual(listed.map((f: any) => f.path), [[adaUsername, 'sample'], [adaUsername, 'trips']]);
    const trips = listed[1];
    assert.equal(trips.records, 50_000);
    assert.equal(trips.bytes > 0, true);
    assert.deepEqual(trips.schema, [['id', 'int64'], ['fare', 'double'], ['zone', 'string'], ['shared_ride', 'bool'], ['pickup', 'timestamp[us]']]);
    assert.deepEqual(JSON.parse(trips.tickets[0]), { dataset: `${adaUsername}/trips`, sql: 'SELECT * FROM dataset' });
    assert.equal(listed[0].records, 100);
  });

  test('a filtered query answers exactly the rows DuckDB answers on the file', async () => {
    const sql = "SELECT id, fare, zone, shared_ride, pickup FROM dataset WHERE fare > 1000 AND (zone = 'zone-3' OR zone IS NULL) ORDER BY id";
    const out = await py(
      `${attempt}
client = fl.FlightClient(ARGS["location"])
got = get(client, ARGS["token"], ARGS["dataset"], ARGS["sql"])
want = duckdb.sql(ARGS["sql"].replace("FROM dataset", "FROM read_parquet('" + ARGS["path"] + "')")).fetch_arrow_table()
info = client.get_flight_info(fl.FlightDescriptor.for_command(json.dumps({"dataset": ARGS["dataset"], "sql": ARGS["sql"]})), options=options(ARGS["token"]))
print(json.dumps({"rows": got.num_rows, "want": want.num_rows, "equal": got.equals(want), "schema": str(got.schema), "want_schema": str(want.schema),
  "nulls": got.column("zone").null_count, "info_schema_equal": info.schema.equals(got.schema)}))`,
      { location: server.location, token: tokens.ada, dataset: `${adaUsername}/trips`, sql, path: tripsPath },
    );
    assert.ok(out.rows > 1000, `the filter keeps a good number of rows (${out.rows})`);
    assert.ok(out.nulls > 0, 'null zones travel as nulls');
    assert.equal(out.rows, out.want);
    assert.equal(out.schema, out.want_schema);
    assert.equal(out.equal, true, 'the table pyarrow received equals the one DuckDB computes on the file');
    assert.equal(out.info_schema_equal, true, 'GetFlightInfo on the query announces the schema DoGet sends');
  });

  test('reading outside the datasets directory, invalid SQL and an unknown dataset are Flight errors, and the server keeps serving', async () => {
    const out = await py(
      `${attempt}
client = fl.FlightClient(ARGS["location"])
t = ARGS["token"]
d = ARGS["dataset"]
print(json.dumps({
  "outside": attempt(lambda: get(client, t, d, "SELECT * FROM read_csv('/etc/passwd')").num_rows),
  "sibling": attempt(lambda: get(client, t, d, "SELECT * FROM read_csv('" + ARGS["sibling"] + "')").num_rows),
  "copy": attempt(lambda: get(client, t, d, "COPY dataset TO '/tmp/markco-flight-escape.csv'").num_rows),
  "invalid": attempt(lambda: get(client, t, d, "SELEC * FROM dataset").num_rows),
  "unknown": attempt(lambda: get(client, t, ARGS["unknown"], "SELECT 1").num_rows),
  "bad_ticket": attempt(lambda: client.do_get(fl.Ticket(b"not json"), options=options(t)).read_all().num_rows),
  "after": attempt(lambda: get(client, t, d, "SELECT count(*) AS n FROM dataset").column("n")[0].as_py()),
}))`,
      { location: server.location, token: tokens.ada, dataset: `${adaUsername}/trips`, unknown: `${adaUsername}/nope`, sibling: join(datasetsDir, '..', 'etc-passwd.csv') },
    );
    assert.equal(out.outside.error, 'FlightUnauthorizedError', JSON.stringify(out.outside));
    assert.match(out.outside.message, /Permission Error: Cannot access file "\/etc\/passwd"/);
    assert.equal(out.sibling.error, 'FlightUnauthorizedError', JSON.stringify(out.sibling));
    assert.ok(out.copy.error, `COPY ... TO is refused: ${JSON.stringify(out.copy)}`);
    assert.match(out.copy.message, /Permission Error|only a SELECT statement/);
    assert.equal(out.invalid.error, 'ArrowInvalid', JSON.stringify(out.invalid));
    assert.match(out.invalid.message, /Parser Error: syntax error at or near "SELEC"/);
    assert.equal(out.unknown.error, 'ArrowKeyError', JSON.stringify(out.unknown));
    assert.match(out.unknown.message, /no dataset .*\/nope/);
    assert.match(out.bad_ticket.message, /the ticket must be JSON/);
    assert.equal(out.after.ok, 50_000, 'the server answers the next query');
    assert.equal(existsSync('/tmp/markco-flight-escape.csv'), false);
  });

  test('sessions decide who reads what: a collaborator may, another user, a bad token and no token may not', async () => {
    const out = await py(
      `${attempt}
client = fl.FlightClient(ARGS["location"])
d = ARGS["dataset"]
count = lambda token: get(client, token, d, "SELECT count(*) AS n FROM dataset").column("n")[0].as_py()
listed = lambda token: [[p.decode() for p in f.descriptor.path] for f in client.list_flights(options=options(token))]
basic = client.authenticate_basic_token(b"notebook", ARGS["ada"].encode())
print(json.dumps({
  "bob": attempt(lambda: count(ARGS["bob"])),
  "bob_lists": attempt(lambda: listed(ARGS["bob"])),
  "carol": attempt(lambda: count(ARGS["carol"])),
  "carol_lists": attempt(lambda: listed(ARGS["carol"])),
  "bad": attempt(lambda: count("x" * 43)),
  "none": attempt(lambda: count(None)),
  "none_lists": attempt(lambda: listed(None)),
  "basic_header": [basic[0].decode(), basic[1].decode()[:7]],
  "basic": attempt(lambda: client.do_get(fl.Ticket(json.dumps({"dataset": d, "sql": "SELECT 1 AS one"})), options=fl.FlightCallOptions(headers=[basic])).read_all().num_rows),
  "bad_basic": attempt(lambda: client.authenticate_basic_token(b"notebook", b"y" * 43)),
}))`,
      { location: server.location, dataset: `${adaUsername}/trips`, ...tokens },
    );
    assert.equal(out.bob.ok, 50_000, `a collaborator reads the owner's dataset: ${JSON.stringify(out.bob)}`);
    assert.deepEqual(out.bob_lists.ok, [[adaUsername, 'sample'], [adaUsername, 'trips']]);
    assert.equal(out.carol.error, 'FlightUnauthorizedError', JSON.stringify(out.carol));
    assert.match(out.carol.message, /no access to/);
    assert.deepEqual(out.carol_lists.ok, [], 'another user lists nothing of hers');
    for (const k of ['bad', 'none', 'none_lists', 'bad_basic']) assert.equal(out[k].error, 'FlightUnauthenticatedError', `${k}: ${JSON.stringify(out[k])}`);
    assert.deepEqual(out.basic_header, ['authorization', 'Bearer ']);
    assert.equal(out.basic.ok, 1, 'the handshake with the session token as password gives a header that works');
  });

  test('a revoked session is refused from then on', async () => {
    const user = (await db.store.users.ensureByEmail({ email: 'dora@example.test' })).user;
    const { token } = await db.store.sessions.create(user.id);
    await db.store.sessions.revoke(token);
    const out = await py(`${attempt}\nclient = fl.FlightClient(ARGS["location"])\nprint(json.dumps(attempt(lambda: list(client.list_flights(options=options(ARGS["token"]))))))`, { location: server.location, token });
    assert.equal(out.error, 'FlightUnauthenticatedError');
  });
});
