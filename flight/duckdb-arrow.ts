import duckdb from '@duckdb/node-bindings';
import { DuckDBTypeId, type DuckDBDataChunk, type DuckDBType } from '@duckdb/node-api';
import {
  Binary,
  Bool,
  DateDay,
  Field,
  Float32,
  Float64,
  Int16,
  Int32,
  Int64,
  Int8,
  Schema,
  TimeMicrosecond,
  TimeNanosecond,
  TimestampMicrosecond,
  TimestampMillisecond,
  TimestampNanosecond,
  TimestampSecond,
  Uint16,
  Uint32,
  Uint64,
  Uint8,
  Utf8,
  type DataType,
} from 'apache-arrow';

/**
 * DuckDB result chunks to Arrow record batches, column by column.
 *
 * DuckDB's C API hands out each vector as raw memory (`vector_get_data`) with a validity bitmap of
 * little-endian 64-bit words, which is byte for byte Arrow's validity layout; fixed-width types (integers,
 * floats, dates, timestamps, times) have the same bytes in both. So a batch is made by copying whole
 * vectors into preallocated buffers, never by reading values one by one. Strings are the exception:
 * DuckDB's 16-byte `string_t` holds short strings inline and points at longer ones, so each row's bytes
 * are copied into the Arrow data buffer (still bytes, never a JS string).
 *
 * Types without a direct Arrow counterpart here (DECIMAL, HUGEINT, UUID, INTERVAL, ENUM, LIST, STRUCT,
 * MAP, ...) are cast by the query itself (`castsFor`): DECIMAL and HUGEINT to DOUBLE, the others to VARCHAR.
 */

type Layout =
  | { kind: 'fixed'; width: number }
  | { kind: 'bool' }
  | { kind: 'string' };

interface ColumnPlan {
  name: string;
  arrowType: DataType;
  layout: Layout;
}

/** The Arrow type a DuckDB type travels as, or what the query must cast it to first. */
function arrowTypeOf(type: DuckDBType): { arrow: DataType; layout: Layout } | { castTo: 'DOUBLE' | 'VARCHAR' } {
  switch (type.typeId) {
    case DuckDBTypeId.BOOLEAN:
      return { arrow: new Bool(), layout: { kind: 'bool' } };
    case DuckDBTypeId.TINYINT:
      return { arrow: new Int8(), layout: { kind: 'fixed', width: 1 } };
    case DuckDBTypeId.SMALLINT:
      return { arrow: new Int16(), layout: { kind: 'fixed', width: 2 } };
    case DuckDBTypeId.INTEGER:
      return { arrow: new Int32(), layout: { kind: 'fixed', width: 4 } };
    case DuckDBTypeId.BIGINT:
      return { arrow: new Int64(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.UTINYINT:
      return { arrow: new Uint8(), layout: { kind: 'fixed', width: 1 } };
    case DuckDBTypeId.USMALLINT:
      return { arrow: new Uint16(), layout: { kind: 'fixed', width: 2 } };
    case DuckDBTypeId.UINTEGER:
      return { arrow: new Uint32(), layout: { kind: 'fixed', width: 4 } };
    case DuckDBTypeId.UBIGINT:
      return { arrow: new Uint64(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.FLOAT:
      return { arrow: new Float32(), layout: { kind: 'fixed', width: 4 } };
    case DuckDBTypeId.DOUBLE:
      return { arrow: new Float64(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.DATE:
      return { arrow: new DateDay(), layout: { kind: 'fixed', width: 4 } };
    case DuckDBTypeId.TIME:
      return { arrow: new TimeMicrosecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIME_NS:
      return { arrow: new TimeNanosecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIMESTAMP:
      return { arrow: new TimestampMicrosecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIMESTAMP_S:
      return { arrow: new TimestampSecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIMESTAMP_MS:
      return { arrow: new TimestampMillisecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIMESTAMP_NS:
      return { arrow: new TimestampNanosecond(), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.TIMESTAMP_TZ:
      // DuckDB keeps instants in UTC microseconds; Arrow says so with the time zone.
      return { arrow: new TimestampMicrosecond('UTC'), layout: { kind: 'fixed', width: 8 } };
    case DuckDBTypeId.VARCHAR:
      return { arrow: new Utf8(), layout: { kind: 'string' } };
    case DuckDBTypeId.BLOB:
      return { arrow: new Binary(), layout: { kind: 'string' } };
    case DuckDBTypeId.DECIMAL:
    case DuckDBTypeId.HUGEINT:
    case DuckDBTypeId.UHUGEINT:
      return { castTo: 'DOUBLE' };
    default:
      return { castTo: 'VARCHAR' };
  }
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/**
 * The casts a result needs before it can travel as Arrow: undefined when every column maps directly,
 * else the select list to wrap the query with (by column name, so names must be unique).
 */
export function castsFor(names: readonly string[], types: readonly DuckDBType[]): string | undefined {
  const needed = types.map((t) => arrowTypeOf(t));
  if (needed.every((n) => 'arrow' in n)) return undefined;
  if (new Set(names).size !== names.length) {
    const bad = names.filter((_, i) => !('arrow' in needed[i]!));
    throw new UnsupportedResultError(`the result has duplicate column names and column(s) ${bad.join(', ')} of a type that must be cast for Arrow: give each column its own name (AS ...)`);
  }
  return names.map((n, i) => {
    const plan = needed[i]!;
    return 'arrow' in plan ? quoteIdent(n) : `CAST(${quoteIdent(n)} AS ${plan.castTo}) AS ${quoteIdent(n)}`;
  }).join(', ');
}

export class UnsupportedResultError extends Error {
  override name = 'UnsupportedResultError';
}

/** The Arrow schema of a result whose columns all map directly (after `castsFor`). */
export function planColumns(names: readonly string[], types: readonly DuckDBType[]): { schema: Schema; columns: ColumnPlan[] } {
  const columns = names.map((name, i) => {
    const mapped = arrowTypeOf(types[i]!);
    if (!('arrow' in mapped)) throw new UnsupportedResultError(`column ${name} (${types[i]!.toString()}) must be cast before it can be sent as Arrow`);
    return { name, arrowType: mapped.arrow, layout: mapped.layout };
  });
  return { schema: new Schema(columns.map((c) => new Field(c.name, c.arrowType, true))), columns };
}

/** One Arrow buffer of a batch body, in IPC order (validity, then offsets or values, then data). */
export interface BatchColumn {
  length: number;
  nullCount: number;
  /** Buffers in IPC order; an empty validity buffer means no nulls. */
  buffers: Uint8Array[];
}

export interface ArrowBatch {
  rows: number;
  columns: BatchColumn[];
  /** Bytes of the buffers, before padding. */
  bytes: number;
}

const validityBytesFor = (rows: number) => Math.ceil(rows / 64) * 8;

/** Collects one column's rows across DuckDB chunks into Arrow buffers of a fixed row capacity. */
class ColumnBuilder {
  private validity: Uint8Array;
  private nullCount = 0;
  private values: Uint8Array;
  private offsets: Int32Array | undefined;
  private dataBytes = 0;

  constructor(
    private readonly layout: Layout,
    private readonly capacity: number,
  ) {
    this.validity = new Uint8Array(validityBytesFor(capacity)).fill(0xff);
    if (layout.kind === 'fixed') this.values = new Uint8Array(capacity * layout.width);
    else if (layout.kind === 'bool') this.values = new Uint8Array(validityBytesFor(capacity));
    else {
      this.offsets = new Int32Array(capacity + 1);
      this.values = new Uint8Array(capacity * 16);
    }
  }

  /** Appends `count` rows of a DuckDB vector at row `at` of this batch. */
  append(vector: duckdb.Vector, count: number, at: number): void {
    const validity = duckdb.vector_get_validity(vector, validityBytesFor(count));
    if (validity) this.copyValidity(validity, count, at);
    const layout = this.layout;
    if (layout.kind === 'fixed') {
      this.values.set(duckdb.vector_get_data(vector, count * layout.width), at * layout.width);
    } else if (layout.kind === 'bool') {
      // DuckDB keeps a byte per boolean, Arrow a bit.
      const bytes = duckdb.vector_get_data(vector, count);
      const out = this.values;
      for (let i = 0; i < count; i++) {
        const bit = at + i;
        if (bytes[i]) out[bit >> 3]! |= 1 << (bit & 7);
      }
    } else {
      this.appendStrings(duckdb.vector_get_data(vector, count * 16), validity, count, at);
    }
  }

  private copyValidity(source: Uint8Array, count: number, at: number): void {
    const target = this.validity;
    const words = new Uint32Array(source.buffer, source.byteOffset, Math.ceil(count / 32));
    for (let w = 0; w < words.length; w++) {
      const word = words[w]!;
      if (word === 0xffffffff) continue;
      const end = Math.min(32, count - w * 32);
      for (let b = 0; b < end; b++) {
        if ((word & (1 << b)) === 0) {
          const bit = at + w * 32 + b;
          target[bit >> 3]! &= ~(1 << (bit & 7));
          this.nullCount++;
        }
      }
    }
  }

  private appendStrings(strings: Uint8Array, validity: Uint8Array | null, count: number, at: number): void {
    const view = new DataView(strings.buffer, strings.byteOffset, strings.byteLength);
    const offsets = this.offsets!;
    let data = this.values;
    let pos = this.dataBytes;
    for (let i = 0; i < count; i++) {
      // A null row's string_t is undefined memory: it contributes no bytes.
      const length = validity && (validity[i >> 3]! & (1 << (i & 7))) === 0 ? 0 : view.getUint32(i * 16, true);
      if (pos + length > data.length) {
        const grown = new Uint8Array(Math.max(data.length * 2, pos + length + 1024));
        grown.set(data.subarray(0, pos));
        data = grown;
      }
      if (length <= 12) {
        // Inline: the bytes follow the length in the 16-byte string_t.
        const from = i * 16 + 4;
        for (let k = 0; k < length; k++) data[pos + k] = strings[from + k]!;
      } else {
        data.set(duckdb.get_data_from_pointer(strings.buffer as ArrayBuffer, strings.byteOffset + i * 16 + 8, length), pos);
      }
      pos += length;
      offsets[at + i + 1] = pos;
    }
    this.values = data;
    this.dataBytes = pos;
  }

  finish(rows: number): BatchColumn {
    const validity = this.nullCount === 0 ? new Uint8Array(0) : this.validity.subarray(0, Math.ceil(rows / 8));
    let buffers: Uint8Array[];
    if (this.layout.kind === 'fixed') buffers = [validity, this.values.subarray(0, rows * this.layout.width)];
    else if (this.layout.kind === 'bool') buffers = [validity, this.values.subarray(0, Math.ceil(rows / 8))];
    else buffers = [validity, new Uint8Array(this.offsets!.buffer, 0, (rows + 1) * 4), this.values.subarray(0, this.dataBytes)];
    return { length: rows, nullCount: this.nullCount, buffers };
  }
}

/**
 * Gathers DuckDB chunks into Arrow batches of up to `batchRows` rows (fewer when string data passes
 * `batchBytes`): whole batches keep per-message costs (IPC header, gRPC frame, the client's decode) small.
 */
export class BatchAssembler {
  private builders: ColumnBuilder[] = [];
  private rows = 0;
  private approxBytes = 0;
  private readonly capacity: number;

  constructor(
    private readonly columns: ColumnPlan[],
    batchRows = 65_536,
    private readonly batchBytes = 16 * 1024 * 1024,
  ) {
    this.capacity = Math.max(batchRows, Number(duckdb.vector_size()));
    this.reset();
  }

  private reset(): void {
    this.builders = this.columns.map((c) => new ColumnBuilder(c.layout, this.capacity));
    this.rows = 0;
    this.approxBytes = 0;
  }

  /**
   * Adds a chunk; answers the batch it completed, if any. A chunk is never split: when it does not fit in
   * what is left of the current batch, that batch is sent first (the capacity is at least DuckDB's
   * vector size, so a chunk always fits in an empty one).
   */
  add(chunk: DuckDBDataChunk): ArrowBatch | undefined {
    const count = chunk.rowCount;
    if (count === 0) return undefined;
    const completed = this.rows + count > this.capacity ? this.flushBatch() : undefined;
    for (let c = 0; c < this.columns.length; c++) this.builders[c]!.append(duckdb.data_chunk_get_vector(chunk.chunk, c), count, this.rows);
    this.rows += count;
    this.approxBytes += count * 8 * this.columns.length;
    if (completed) return completed;
    return this.rows === this.capacity || this.approxBytes >= this.batchBytes ? this.flushBatch() : undefined;
  }

  /** The rows gathered so far as a batch (undefined when there are none). */
  flush(): ArrowBatch | undefined {
    return this.rows > 0 ? this.flushBatch() : undefined;
  }

  private flushBatch(): ArrowBatch {
    const columns = this.builders.map((b) => b.finish(this.rows));
    const batch = { rows: this.rows, columns, bytes: columns.reduce((s, c) => s + c.buffers.reduce((t, b) => t + b.byteLength, 0), 0) };
    this.reset();
    return batch;
  }
}
