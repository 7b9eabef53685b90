import type { Schema } from 'apache-arrow';
import { BufferRegion, FieldNode, Message, RecordBatch as RecordBatchHeader } from 'apache-arrow/ipc/metadata/message';
import type { ArrowBatch } from './duckdb-arrow.js';

/**
 * Arrow IPC messages as Flight carries them. A FlightData message holds one IPC message: `data_header` is
 * the flatbuffer Message (Schema or RecordBatch) and `data_body` the body buffers, each padded to 8 bytes
 * (Arrow's IPC format). FlightInfo and SchemaResult hold the schema "encapsulated": the continuation marker,
 * the padded length, the flatbuffer.
 *
 * FlightData is encoded here rather than by protobufjs: the body is written once, straight into the
 * protobuf message's buffer, instead of being assembled and then copied again by a generic encoder.
 */

const pad8 = (n: number) => (n + 7) & ~7;

/** The flatbuffer Message of a schema (a FlightData's data_header for the first message of a stream). */
export function schemaHeader(schema: Schema): Uint8Array {
  return Message.encode(Message.from(schema));
}

/** A schema in its encapsulated IPC form, as FlightInfo.schema and SchemaResult.schema expect it. */
export function encapsulatedSchema(schema: Schema): Buffer {
  const header = schemaHeader(schema);
  const padded = pad8(header.byteLength);
  const out = Buffer.alloc(8 + padded);
  out.writeUInt32LE(0xffffffff, 0);
  out.writeInt32LE(padded, 4);
  out.set(header, 8);
  return out;
}

// ---------------------------------------------------------------- protobuf wire format (FlightData)

function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

/** Field 2 (data_header), length-delimited. */
const dataHeaderKey = (2 << 3) | 2;
/** Field 1000 (data_body), length-delimited: the key's varint is two bytes. */
const dataBodyKey = (1000 << 3) | 2;

/** A FlightData message with only a header (the schema message that opens a DoGet stream). */
export function flightDataOfHeader(header: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + varintLength(header.byteLength) + header.byteLength);
  let at = writeVarint(out, 0, dataHeaderKey);
  at = writeVarint(out, at, header.byteLength);
  out.set(header, at);
  return out;
}

/** A FlightData message holding one record batch: its RecordBatch header and its body. */
export function flightDataOfBatch(batch: ArrowBatch): Buffer {
  const nodes: FieldNode[] = [];
  const regions: BufferRegion[] = [];
  let bodyLength = 0;
  for (const column of batch.columns) {
    nodes.push(new FieldNode(column.length, column.nullCount));
    for (const buffer of column.buffers) {
      regions.push(new BufferRegion(bodyLength, buffer.byteLength));
      bodyLength += pad8(buffer.byteLength);
    }
  }
  const header = Message.encode(Message.from(new RecordBatchHeader(batch.rows, nodes, regions, null), bodyLength));
  const size = 1 + varintLength(header.byteLength) + header.byteLength + varintLength(dataBodyKey) + varintLength(bodyLength) + bodyLength;
  const out = Buffer.allocUnsafe(size);
  let at = writeVarint(out, 0, dataHeaderKey);
  at = writeVarint(out, at, header.byteLength);
  out.set(header, at);
  at += header.byteLength;
  at = writeVarint(out, at, dataBodyKey);
  at = writeVarint(out, at, bodyLength);
  for (const column of batch.columns) {
    for (const buffer of column.buffers) {
      out.set(buffer, at);
      const padded = pad8(buffer.byteLength);
      out.fill(0, at + buffer.byteLength, at + padded);
      at += padded;
    }
  }
  return out;
}
