import { readFile } from 'node:fs/promises';
import {
  DuckDBDataChunk,
  DuckDBDateValue,
  DuckDBInstance,
  DuckDBTimestampValue,
  StatementType,
  BIGINT,
  BOOLEAN,
  DATE,
  DOUBLE,
  FLOAT,
  INTEGER,
  SMALLINT,
  TIMESTAMP,
  TINYINT,
  UBIGINT,
  UINTEGER,
  USMALLINT,
  UTINYINT,
  VARCHAR,
  type DuckDBConnection,
  type DuckDBResult,
  type DuckDBType,
  type DuckDBValue,
} from '@duckdb/node-api';
import { tableFromIPC, Type, type Vector } from 'apache-arrow';
import { BatchAssembler, castsFor, planColumns, type ArrowBatch } from './duckdb-arrow.js';
import type { DatasetFile } from './datasets.js';
import type { Schema } from 'apache-arrow';

/**
 * One query's DuckDB: a fresh in-memory database that can read exactly one file, the dataset's.
 *
 * Before any user SQL runs, `allowed_paths` is set to the dataset's file, `enable_external_access` is
 * turned off (no other file, directory, URL, ATTACH, COPY ... TO, INSTALL or LOAD of an extension not
 * already built in) and `lock_configuration` is turned on, so no statement can undo it. The dataset is
 * the view `dataset` (and, when its name is a plain identifier, also that name). Nothing is shared
 * between queries: a database costs about 15 ms to open, and a query can leave nothing behind for the
 * next user. Parquet and CSV are read by DuckDB's built-in readers; an Arrow file (no built-in reader) is
 * read here with apache-arrow and appended to a table.
 */

export interface SandboxLimits {
  /** DuckDB's memory_limit for one query (e.g. '2GB'). */
  memoryLimit: string;
  threads: number;
}

export const defaultSandboxLimits: SandboxLimits = { memoryLimit: '2GB', threads: 2 };

/** What a query's SQL did wrong (answered INVALID_ARGUMENT), or where it tried to reach (PERMISSION_DENIED). */
export class QueryError extends Error {
  constructor(
    readonly kind: 'invalid' | 'forbidden' | 'resources',
    message: string,
  ) {
    super(message);
    this.name = 'QueryError';
  }
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;
const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** DuckDB's error classes ("Parser Error: ...") to what the client is told. */
export function classifyDuckDBError(err: unknown): QueryError | undefined {
  // extractStatements wraps DuckDB's parser error in its own words.
  const message = (err instanceof Error ? err.message : String(err)).replace(/^Failed to extract statements:\s*/, '');
  if (/^Permission Error/.test(message)) return new QueryError('forbidden', `${message.split('\n')[0]} (a query reads only its own dataset, as the table "dataset")`);
  if (/^(Parser|Binder|Catalog|Conversion|Invalid Input|Not implemented|Syntax|Constraint|Dependency|Sequence|Type Mismatch|Out of Range|Invalid type) Error/i.test(message)) return new QueryError('invalid', message);
  if (/^Out of Memory Error/.test(message)) return new QueryError('resources', message);
  return undefined;
}

export class DatasetSandbox {
  private constructor(
    private readonly instance: DuckDBInstance,
    private readonly connection: DuckDBConnection,
  ) {}

  static async open(dataset: DatasetFile, limits: SandboxLimits = defaultSandboxLimits): Promise<DatasetSandbox> {
    const instance = await DuckDBInstance.create(':memory:', {
      memory_limit: limits.memoryLimit,
      threads: String(limits.threads),
      autoinstall_known_extensions: 'false',
      autoload_known_extensions: 'false',
    });
    const connection = await instance.connect();
    const sandbox = new DatasetSandbox(instance, connection);
    try {
      await connection.run(`SET allowed_paths = [${sqlString(dataset.path)}]`);
      await connection.run('SET enable_external_access = false');
      await connection.run('SET lock_configuration = true');
      if (dataset.format === 'arrow') await loadArrowFile(connection, dataset.path);
      else {
        const reader = dataset.format === 'parquet' ? 'read_parquet' : 'read_csv';
        await connection.run(`CREATE VIEW dataset AS SELECT * FROM ${reader}(${sqlString(dataset.path)})`);
      }
      if (dataset.name !== 'dataset' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(dataset.name)) {
        await connection.run(`CREATE VIEW ${quoteIdent(dataset.name)} AS SELECT * FROM dataset`);
      }
    } catch (err) {
      sandbox.close();
      throw err;
    }
    return sandbox;
  }

  /**
   * Prepares the one SELECT statement of `sql` (with casts for types Arrow gets as DOUBLE or VARCHAR):
   * anything else is a QueryError naming the problem.
   */
  async prepare(sql: string): Promise<PreparedQuery> {
    const text = sql.trim().replace(/;\s*$/, '');
    try {
      const statements = await this.connection.extractStatements(text);
      if (statements.count !== 1) throw new QueryError('invalid', `expected exactly one SQL statement, got ${statements.count}`);
      let prepared = await statements.prepare(0);
      if (prepared.statementType !== StatementType.SELECT) {
        throw new QueryError('invalid', 'only a SELECT statement (SELECT, WITH ... SELECT, FROM ..., VALUES) can be run on a dataset');
      }
      const names = Array.from({ length: prepared.columnCount }, (_, i) => prepared.columnName(i));
      const types = Array.from({ length: prepared.columnCount }, (_, i) => prepared.columnType(i));
      const casts = castsFor(names, types);
      let finalTypes: DuckDBType[] = types;
      if (casts) {
        prepared = await this.connection.prepare(`SELECT ${casts} FROM (${text}) AS markco_query`);
        finalTypes = Array.from({ length: prepared.columnCount }, (_, i) => prepared.columnType(i));
      }
      const plan = planColumns(names, finalTypes);
      return {
        schema: plan.schema,
        run: async function* (batchRows?: number): AsyncGenerator<ArrowBatch> {
          let result: DuckDBResult;
          try {
            result = await prepared.stream();
          } catch (err) {
            throw classifyDuckDBError(err) ?? err;
          }
          const assembler = new BatchAssembler(plan.columns, batchRows);
          for (;;) {
            let chunk: DuckDBDataChunk | null;
            try {
              chunk = await result.fetchChunk();
            } catch (err) {
              throw classifyDuckDBError(err) ?? err;
            }
            if (!chunk || chunk.rowCount === 0) break;
            const batch = assembler.add(chunk);
            if (batch) yield batch;
          }
          const last = assembler.flush();
          if (last) yield last;
        },
      };
    } catch (err) {
      if (err instanceof QueryError) throw err;
      throw classifyDuckDBError(err) ?? err;
    }
  }

  /** Rows and schema of the whole dataset, for ListFlights and GetFlightInfo. */
  async describe(): Promise<{ schema: Schema; rows: number }> {
    const { schema } = await this.prepare('SELECT * FROM dataset');
    const counted = await this.connection.runAndReadAll('SELECT count(*) FROM dataset');
    return { schema, rows: Number(counted.getRows()[0]?.[0] ?? 0) };
  }

  close(): void {
    this.connection.closeSync();
    this.instance.closeSync();
  }
}

export interface PreparedQuery {
  schema: Schema;
  /** Runs the query and yields its result as Arrow batches. */
  run(batchRows?: number): AsyncGenerator<ArrowBatch>;
}

// ---------------------------------------------------------------- Arrow files

/** How an Arrow column is stored in DuckDB, and how one of its values is converted. */
function duckdbColumnFor(vector: Vector): { type: DuckDBType; value: (i: number) => DuckDBValue } {
  const t = vector.type;
  const plain = (type: DuckDBType) => ({ type, value: (i: number) => (vector.get(i) ?? null) as DuckDBValue });
  switch (t.typeId) {
    case Type.Bool:
      return plain(BOOLEAN);
    case Type.Int: {
      const { bitWidth, isSigned } = t as unknown as { bitWidth: 8 | 16 | 32 | 64; isSigned: boolean };
      const types = isSigned ? { 8: TINYINT, 16: SMALLINT, 32: INTEGER, 64: BIGINT } : { 8: UTINYINT, 16: USMALLINT, 32: UINTEGER, 64: UBIGINT };
      return plain(types[bitWidth]);
    }
    case Type.Float: {
      // Half floats (precision 0) widen to DOUBLE.
      const precision = (t as unknown as { precision: number }).precision;
      return plain(precision === 1 ? FLOAT : DOUBLE);
    }
    case Type.Utf8:
    case Type.LargeUtf8:
      return plain(VARCHAR);
    case Type.Date: {
      // apache-arrow answers dates as epoch milliseconds.
      return { type: DATE, value: (i) => { const ms = vector.get(i) as number | null; return ms === null ? null : new DuckDBDateValue(Math.floor(ms / 86_400_000)); } };
    }
    case Type.Timestamp: {
      // The raw integers, scaled to microseconds (apache-arrow's own get() answers milliseconds as a float).
      const unit = (t as unknown as { unit: number }).unit; // 0 s, 1 ms, 2 µs, 3 ns
      return {
        type: TIMESTAMP,
        value: (i) => {
          if (!vector.isValid(i)) return null;
          const raw = rawInt64(vector, i);
          const micros = unit === 0 ? raw * 1_000_000n : unit === 1 ? raw * 1000n : unit === 2 ? raw : raw / 1000n;
          return new DuckDBTimestampValue(micros);
        },
      };
    }
    default:
      return { type: VARCHAR, value: (i) => { const v = vector.get(i); return v === null || v === undefined ? null : typeof v === 'object' ? JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x)) : String(v); } };
  }
}

function rawInt64(vector: Vector, index: number): bigint {
  let i = index;
  for (const data of vector.data) {
    if (i < data.length) return (data.values as BigInt64Array)[data.offset + i]!;
    i -= data.length;
  }
  throw new RangeError(`row ${index} is past the column's end`);
}

/** Reads an Arrow IPC file (or stream) and appends it to the table `dataset`, a DuckDB chunk at a time. */
async function loadArrowFile(connection: DuckDBConnection, path: string): Promise<void> {
  const table = tableFromIPC(await readFile(path));
  const columns = table.schema.fields.map((f, i) => ({ name: f.name, ...duckdbColumnFor(table.getChildAt(i)!) }));
  await connection.run(`CREATE TABLE dataset (${columns.map((c) => `${quoteIdent(c.name)} ${c.type.toString()}`).join(', ')})`);
  const appender = await connection.createAppender('dataset');
  const step = 2048;
  for (let from = 0; from < table.numRows; from += step) {
    const count = Math.min(step, table.numRows - from);
    const chunk = DuckDBDataChunk.create(columns.map((c) => c.type), count);
    columns.forEach((c, col) => chunk.setColumnValues(col, Array.from({ length: count }, (_, k) => c.value(from + k))));
    appender.appendDataChunk(chunk);
  }
  appender.flushSync();
  appender.closeSync();
}
