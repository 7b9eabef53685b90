import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { tokenFromMetadata } from '../../flight/auth.js';
import { TicketError, encodeTicket, parseTicket, splitDatasetId } from '../../flight/ticket.js';

/** DoGet tickets are validated before anything runs; session tokens come from the three Flight ways of sending one. */
const bytes = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

test('a ticket is {dataset: "<username>/<name>", sql} and nothing else', () => {
  const ticket = { dataset: 'ada/trips', sql: 'SELECT * FROM dataset' };
  assert.deepEqual(parseTicket(encodeTicket(ticket)), ticket);
  assert.deepEqual(splitDatasetId('ada/trips'), { username: 'ada', name: 'trips' });
  const refused: [unknown, RegExp][] = [
    ['not json', /must be JSON/],
    [{ dataset: 'ada/trips' }, /sql/],
    [{ dataset: 'trips', sql: 'SELECT 1' }, /"<owner username>\/<dataset name>"/],
    [{ dataset: 'ada/../etc/passwd', sql: 'SELECT 1' }, /dataset/],
    [{ dataset: 'ada/tr ips', sql: 'SELECT 1' }, /dataset/],
    [{ dataset: 'Ada/trips', sql: 'SELECT 1' }, /dataset/],
    [{ dataset: 'ada/trips', sql: '' }, /sql must not be empty/],
    [{ dataset: 'ada/trips', sql: 'x'.repeat(100_001) }, /at most/],
    [{ dataset: 'ada/trips', sql: 'SELECT 1', extra: true }, /extra|Unrecognized/i],
    [{ dataset: 1, sql: 'SELECT 1' }, /dataset must be a string/],
  ];
  for (const [value, message] of refused) {
    assert.throws(() => parseTicket(bytes(value)), (err: unknown) => err instanceof TicketError && message.test(err.message), JSON.stringify(value).slice(0, 80));
  }
});

test('the session token comes from a Bearer header, a Basic header\'s password, or auth-token-bin', () => {
  const md = (key: string, value: string | Buffer) => {
    const m = new Metadata();
    m.set(key, value as string);
    return m;
  };
  assert.equal(tokenFromMetadata(md('authorization', 'Bearer abc123')), 'abc123');
  assert.equal(tokenFromMetadata(md('authorization', `Basic ${Buffer.from('ada:tok-xyz').toString('base64')}`)), 'tok-xyz');
  assert.equal(tokenFromMetadata(md('authorization', `Basic ${Buffer.from('ada:').toString('base64')}`)), undefined);
  assert.equal(tokenFromMetadata(md('auth-token-bin', Buffer.from('tok-bin'))), 'tok-bin');
  assert.equal(tokenFromMetadata(md('authorization', 'Token nope')), undefined);
  assert.equal(tokenFromMetadata(new Metadata()), undefined);
});
