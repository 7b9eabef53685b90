import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import { tableFromIPC, type Table } from 'apache-arrow';
import { flightDataOfBatch, flightDataOfHeader, schemaHeader } from '../../flight/arrow-ipc.js';
import { DatasetCatalog, type DatasetFile } from '../../flight/datasets.js';
import { DatasetSandbox, QueryError } from '../../flight/sandbox.js';

/**
 * The data service's SQL sandbox and its DuckDB -> Arrow conversion, on real DuckDB and real files
 * (no server): a query reads its own dataset and nothing else, and what it sends decodes (apache-arrow's
 * reader) to exactly what DuckDB answers.
 */
const owner = '11111111-1111-4111-8111-111111111111';
let root: string;
let catalog: DatasetCatalog;
let trips: DatasetFile;

/** The IPC stream a DoGet would send, reassembled from its FlightData messages and read back. */
async function viaFlight(dataset: DatasetFile, sql: string, batchRows?: number): Promise<Table> {
  const sandbox = await DatasetSandbox.open(dataset);
  try {
    const prepared = await sandbox.prepare(sql);
    const messages = [flightDataOfHeader(schemaHeader(prepared.schema))];
    for await (const batch of prepared.run(batchRows)) messages.push(flightDataOfBatch(batch));
    return tableFromIPC(Buffer.concat(messages.map(toIpcMessage)));
  } finally {
    sandbox.close();
  }
}

/** A FlightData protobuf (fields 2 and 1000) as an encapsulated IPC message. */
function toIpcMessage(flightData: Buffer): Buffer {
  let at = 0;
  let header: Buffer = Buffer.alloc(0);
  let body: Buffer = Buffer.alloc(0);
  const varint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      const b = flightData[at++]!;
      value += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return value;
    }
  };
  while (at < flightData.length) {
    const key = varint();
    const length = varint();
    if (key >> 3 === 2) header = flightData.subarray(at, at + length);
    if (key >> 3 === 1000) body = flightData.subarray(at, at + length);
    at += length;
  }
  const padding = (8 - (header.length % 8)) % 8;
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32LE(0xffffffff, 0);
  prefix.writeInt32LE(header.length + padding, 4);
  return Buffer.concat([prefix, header, Buffer.alloc(padding), body]);
}

async function duckdbRows(sql: string): Promise<unknown[][]> {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  try {
    return (await connection.runAndReadAll(sql)).getRowsJson() as unknown[][];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'markco-flight-unit-'));
  mkdirSync(join(root, owner));
  writeFileSync(join(root, 'secret.csv'), 'password\nhunter2\n');
  const file = join(root, owner, 'trips.parquet');
  await duckdbRows(`COPY (SELECT i AS id, CASE WHEN i % 5 = 0 THEN NULL ELSE i * 0.5 END AS fare,
      CASE WHEN i % 7 = 0 THEN NULL WHEN i % 2 = 0 THEN 'short' || i ELSE 'a much longer string than twelve bytes ' || i END AS note,
      i % 3 = 0 AS flag, DATE '2024-01-01' + (i % 365)::INTEGER AS day, TIMESTAMP '2024-01-01' + to_seconds(i) AS ts,
      (i % 100)::DECIMAL(10, 2) AS price, [i, i + 1] AS pair
    FROM range(20000) t(i)) TO '${file}' (FORMAT parquet)`);
  await duckdbRows(`COPY (SELECT * FROM '${file}' LIMIT 50) TO '${join(root, owner, 'sample.csv')}'`);
  catalog = new DatasetCatalog(root);
  trips = (await catalog.find(owner, 'trips'))!;
  assert.ok(trips, 'the parquet file is a dataset');
});

after(() => rmSync(root, { recursive: true, force: true }));

describe('DuckDB results as Arrow record batches', () => {
  test('every row and value arrives as DuckDB answers it, across batches, with nulls and long strings', async () => {
    const sql = 'SELECT id, fare, note, flag, day, ts FROM dataset WHERE id % 3 <> 1 ORDER BY id';
    const table = await viaFlight(trips, sql, 4096);
    const expected = await duckdbRows(`SELECT id, fare, note, flag, day::VARCHAR, ts::VARCHAR FROM read_parquet('${trips.path}') WHERE id % 3 <> 1 ORDER BY id`);
    assert.equal(table.numRows, expected.length);
    assert.deepEqual(table.schema.fields.map((f) => `${f.name}:${f.type}`), ['id:Int64', 'fare:Float64', 'note:Utf8', 'flag:Bool', 'day:Date32<DAY>', 'ts:Timestamp<MICROSECOND>']);
    const cols = ['id', 'fare', 'note', 'flag', 'day', 'ts'].map((n) => table.getChild(n)!);
    for (let i = 0; i < expected.length; i += 97) {
      const [id, fare, note, flag, day, ts] = expected[i]!;
      assert.equal(String(cols[0]!.get(i)), String(id), `id of row ${i}`);
      assert.equal(cols[1]!.get(i), fare === null ? null : Number(fare), `fare of row ${i}`);
      assert.equal(cols[2]!.get(i), note, `note of row ${i}`);
      assert.equal(cols[3]!.get(i), flag, `flag of row ${i}`);
      assert.equal(new Date(cols[4]!.get(i) as number).toISOString().slice(0, 10), day, `day of row ${i}`);
      assert.equal(new Date(cols[5]!.get(i) as number).toISOString().replace('T', ' ').slice(0, 19), ts, `ts of row ${i}`);
    }
    assert.equal(cols[1]!.nullCount, expected.filter((r) => r[1] === null).length);
    assert.equal(cols[2]!.nullCount, expected.filter((r) => r[2] === null).length);
  });

  test('types without a direct Arrow form are cast: DECIMAL to DOUBLE, LIST to VARCHAR', async () => {
    const table = await viaFlight(trips, 'SELECT price, pair FROM dataset WHERE id = 42');
    assert.deepEqual(table.schema.fields.map((f) => `${f.name}:${f.type}`), ['price:Float64', 'pair:Utf8']);
    assert.equal(table.getChild('price')!.get(0), 42);
    assert.equal(table.getChild('pair')!.get(0), '[42, 43]');
  });

  test('an empty result is a schema and no batch', async () => {
    const table = await viaFlight(trips, 'SELECT id FROM dataset WHERE id < 0');
    assert.equal(table.numRows, 0);
    assert.deepEqual(table.schema.fields.map((f) => f.name), ['id']);
  });

  test('CSV and Arrow files are datasets too', async () => {
    const csv = (await catalog.find(owner, 'sample'))!;
    assert.equal(csv.format, 'csv');
    assert.equal((await viaFlight(csv, 'SELECT count(*) AS n FROM dataset')).getChild('n')!.get(0), 50n);
    // An Arrow IPC file, written from a table read through the service itself.
    const table = await viaFlight(trips, 'SELECT id, fare, note, flag, ts FROM dataset WHERE id < 3000 ORDER BY id');
    const { tableToIPC } = await import('apache-arrow');
    writeFileSync(join(root, owner, 'small.arrow'), tableToIPC(table, 'file'));
    const arrow = (await catalog.find(owner, 'small'))!;
    assert.equal(arrow.format, 'arrow');
    const back = await viaFlight(arrow, 'SELECT count(*) AS n, count(fare) AS fares, max(note) AS last_note, max(ts) AS latest FROM small');
    assert.equal(back.getChild('n')!.get(0), 3000n);
    assert.equal(back.getChild('fares')!.get(0), BigInt(table.getChild('fare')!.length - table.getChild('fare')!.nullCount));
    assert.equal(new Date(back.getChild('latest')!.get(0) as number).toISOString(), '2024-01-01T00:49:59.000Z');
  });
});

describe('the SQL sandbox reads its own dataset and nothing else', () => {
  const refused: [string, string][] = [
    ['another file by a table function', `SELECT * FROM read_csv('${'/etc/passwd'}')`],
    ['another file of the datasets directory', 'SELECT * FROM read_csv(\'SECRET\')'],
    ['a file named as a table', "SELECT * FROM 'SECRET'"],
    ['a directory listing', `SELECT * FROM glob('/etc/*')`],
    ['a text file', `SELECT * FROM read_text('/etc/hostname')`],
  ];
  for (const [what, sql] of refused) {
    test(`refused: ${what}`, async () => {
      const sandbox = await DatasetSandbox.open(trips);
      try {
        await assert.rejects(sandbox.prepare(sql.replace('SECRET', join(root, 'secret.csv'))), (err: unknown) => err instanceof QueryError && err.kind === 'forbidden' && /Permission Error/.test(err.message));
      } finally {
        sandbox.close();
      }
    });
  }

  const notASelect: [string, string][] = [
    ['COPY ... TO a file', `COPY (SELECT 1) TO '${'/tmp/markco-flight-escape.csv'}'`],
    ['ATTACH', `ATTACH '${'/tmp/markco-flight-escape.db'}'`],
    ['INSTALL an extension', 'INSTALL httpfs'],
    ['LOAD an extension', 'LOAD httpfs'],
    ['SET a setting back', 'SET enable_external_access = true'],
    ['two statements', 'SELECT 1; SELECT 2'],
  ];
  for (const [what, sql] of notASelect) {
    test(`refused: ${what}`, async () => {
      const sandbox = await DatasetSandbox.open(trips);
      try {
        await assert.rejects(sandbox.prepare(sql), (err: unknown) => err instanceof QueryError && err.kind !== 'resources');
      } finally {
        sandbox.close();
      }
    });
  }

  test('the settings are locked in place: external access off, configuration locked', async () => {
    const table = await viaFlight(trips, "SELECT current_setting('enable_external_access') AS external, current_setting('lock_configuration') AS locked");
    assert.equal(table.getChild('external')!.get(0), false);
    assert.equal(table.getChild('locked')!.get(0), true);
  });

  test('bad SQL is an invalid query with DuckDB\'s message', async () => {
    const sandbox = await DatasetSandbox.open(trips);
    try {
      await assert.rejects(sandbox.prepare('SELEC id FROM dataset'), (err: unknown) => err instanceof QueryError && err.kind === 'invalid' && /syntax error/i.test(err.message));
      await assert.rejects(sandbox.prepare('SELECT nope FROM dataset'), (err: unknown) => err instanceof QueryError && err.kind === 'invalid' && /nope/.test(err.message));
    } finally {
      sandbox.close();
    }
  });
});

describe('the datasets directory', () => {
  test('names, formats, precedence, and files outside the directory', async () => {
    writeFileSync(join(root, owner, 'trips.csv'), 'a\n1\n');
    writeFileSync(join(root, owner, 'bad name.csv'), 'a\n1\n');
    writeFileSync(join(root, owner, 'notes.txt'), 'not a dataset');
    symlinkSync('/etc/passwd', join(root, owner, 'passwd.csv'));
    symlinkSync(join(root, 'secret.csv'), join(root, owner, 'inside.csv'));
    const names = (await catalog.listOwner(owner)).map((d) => `${d.name}.${d.format}`);
    assert.ok(names.includes('trips.parquet'), 'parquet wins over csv for the same name');
    assert.ok(!names.includes('trips.csv'));
    assert.ok(!names.some((n) => n.startsWith('bad name') || n.startsWith('notes') || n.startsWith('passwd')), `only well-named files inside the directory: ${names.join(', ')}`);
    assert.ok(names.includes('inside.csv'), 'a symlink that stays inside the directory is a dataset');
    assert.deepEqual(await catalog.listOwner('not-a-user-id'), []);
    assert.deepEqual(await catalog.listOwner('22222222-2222-4222-8222-222222222222'), []);
  });
});
