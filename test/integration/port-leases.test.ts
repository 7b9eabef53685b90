import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createPortLeaseStore, portRanges, type PortLeaseStore } from '../../lib/port-leases.js';
import { freshDatabase, useHarness, type TestDatabase } from '../support/context.js';

/** Ports leased in PostgreSQL: no two containers on a host are ever given the same port. */
describe('port leases', () => {
  const h = useHarness();
  let db: TestDatabase;
  let leases: PortLeaseStore;
  const users: string[] = [];

  before(async () => {
    db = await freshDatabase(h.state);
    leases = createPortLeaseStore(db.pool);
    await db.store.hosts.upsert({ id: 'base', kind: 'base', address: '127.0.0.1', state: 'ready' });
    await db.store.hosts.upsert({ id: 'other', kind: 'base', address: '127.0.0.2', state: 'ready' });
    for (let i = 0; i < 30; i++) {
      const r = await db.pool.query<{ id: string }>(`INSERT INTO users (email, username) VALUES ($1, $2) RETURNING id`, [`u${i}@example.test`, `u${i}`]);
      users.push(r.rows[0]!.id);
    }
  });
  after(() => db.drop());

  test('many users logging in at once all get different ports, each in its purpose range', async () => {
    const purposes = ['runtime', 'editor', 'editor-sync'] as const;
    const granted = await Promise.all(users.flatMap((userId) => purposes.map(async (purpose) => ({ purpose, port: await leases.lease({ hostId: 'base', userId, purpose }) }))));
    assert.equal(new Set(granted.map((g) => g.port)).size, granted.length, 'no port given twice on one host');
    for (const g of granted) assert.ok(g.port >= portRanges[g.purpose].first && g.port <= portRanges[g.purpose].last, `${g.purpose} port ${g.port} in range`);
  });

  test('concurrent and repeated leases of one user for one purpose return the same port', async () => {
    const userId = users[0]!;
    const ports = await Promise.all(Array.from({ length: 10 }, () => leases.lease({ hostId: 'other', userId, purpose: 'runtime' })));
    assert.equal(new Set(ports).size, 1);
    assert.equal(await leases.lease({ hostId: 'other', userId, purpose: 'runtime' }), ports[0]);
    assert.equal((await leases.listForUser(userId)).filter((l) => l.hostId === 'other').length, 1);
  });

  test('a port the host reports in use is exchanged for another one', async () => {
    const userId = users[1]!;
    const first = await leases.lease({ hostId: 'other', userId, purpose: 'editor' });
    const second = await leases.lease({ hostId: 'other', userId, purpose: 'editor', avoid: [first] });
    assert.notEqual(second, first);
    assert.deepEqual((await leases.listForUser(userId)).filter((l) => l.hostId === 'other').map((l) => l.port), [second]);
  });

  test("deleting a user frees the user's ports", async () => {
    const userId = users[2]!;
    assert.ok((await leases.listForUser(userId)).length > 0);
    await db.pool.query('DELETE FROM users WHERE id = $1', [userId]);
    assert.deepEqual(await leases.listForUser(userId), []);
  });
});
