import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket } from 'ws';
import type { HostShells } from '../../activities/host-shell.js';
import { waitFor } from '../../infra/dev/processes.js';
import { hashToken } from '../../lib/accounts.js';
import { freshDatabase, registerBaseHost, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { edgeClient, type TestSession } from '../support/edge-client.js';
import { startEdgeWorker, startTestEdge, type RunningEdge } from '../support/edge.js';
import { hostEnvShell } from '../support/netns.js';

// One copy of yjs in the process: y-websocket's client is CommonJS and loads yjs's CommonJS build.
const require = createRequire(import.meta.url);
const Y = require('yjs') as typeof import('yjs');
const { WebsocketProvider } = require('y-websocket') as typeof import('y-websocket');

/**
 * Collaborators on real parts: A's editor and runtime in podman (dev login, login workflow), invite links
 * made and taken through the edge, and B (editor role) and C (viewer role) working in A's editor through
 * `/u/<A>/`, HTTP and WebSocket (Yjs over y-websocket through the edge and the editor), until their access
 * is revoked and their open WebSockets are cut.
 */
const h = useHarness();

type Person = Pick<TestSession, 'id' | 'cookie'>;

describe('invites and collaborators: join, roles, Yjs through the edge, revocation', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Awaited<ReturnType<typeof startEdgeWorker>>;
  let edge: RunningEdge;
  let a: TestSession;
  let b: Person;
  let c: Person;
  let d: Person;
  let runtimePort: number;
  let syncPort: number;
  let bInviteId: string;
  let bToken: string;

  const { call, devLogin, wsOpen } = edgeClient(() => edge.url);

  /**
   * Collaborators sign in without an environment of their own: their sessions are opened by the store the
   * sign-in routes use (the dev login would also start their own runtime and editor, which nothing here uses).
   */
  const signIn = async (email: string): Promise<Person> => {
    const { user } = await db.store.users.ensureByEmail({ email });
    const session = await db.store.sessions.create(user.id);
    return { id: user.id, cookie: `markco_session=${session.token}` };
  };

  const invite = async (body: Record<string, unknown>) => {
    const made = await call('/api/invites', { session: a, body });
    assert.equal(made.status, 201, made.text);
    return made.json as { id: string; token: string; url: string; role: string; project: string; expires_at: string; max_uses: number | null };
  };

  const join = (token: string, who?: Person, accept = 'application/json') => call(`/join/${token}`, { ...(who ? { session: who } : {}), headers: { accept } });

  const execute = (who: Person, code: string) => call(`/u/${a.id}/proxy/${runtimePort}/mrp/v1/execute`, { session: who, body: { code } });

  /** A Yjs client of one of A's documents, through the edge, signed in as `who` (the cookie a browser would send). */
  const openDocument = (who: Person, name: string) => {
    class CookieWebSocket extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols, { headers: { cookie: who.cookie } });
      }
    }
    const doc = new Y.Doc();
    const provider = new WebsocketProvider(`${edge.url.replace('http', 'ws')}/u/${a.id}/sync/${syncPort}`, name, doc, {
      WebSocketPolyfill: CookieWebSocket as unknown as typeof globalThis.WebSocket,
      disableBc: true,
    });
    return {
      doc,
      provider,
      text: () => doc.getText('body').toString(),
      close: () => {
        provider.destroy();
        // The document owns the provider's awareness timer: without this the process never exits.
        doc.destroy();
      },
    };
  };

  /** Opens the document for each person, waits until every client has synced, then hands them over. */
  const withDocument = async (people: Person[], name: string, use: (docs: Array<ReturnType<typeof openDocument>>) => Promise<void>) => {
    const docs = people.map((p) => openDocument(p, name));
    try {
      await until(`${docs.length} Yjs clients of ${name} to sync`, () => docs.every((x) => x.provider.synced));
      await use(docs);
    } finally {
      for (const x of docs) x.close();
    }
  };

  // Plain throws, not assert: a failing assert parses the test's source to word its message, and doing
  // that every 50 ms starves the event loop the Yjs providers need.
  const until = (what: string, ok: () => boolean, timeoutMs = 15_000) =>
    waitFor(
      what,
      async () => {
        if (!ok()) throw new Error('not yet');
      },
      { timeoutMs, intervalMs: 50 },
    );

  /** Cut means closed within a moment: well before any keep-alive or heartbeat would notice. */
  const closedWithin = (ws: WebSocket, what: string) => until(`${what} to close`, () => ws.readyState === WebSocket.CLOSED, 5_000);

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    worker = await startEdgeWorker(h.state, db, shells);
    edge = await startTestEdge(h.state, db, worker.taskQueue);
    a = await devLogin('owner@example.test');
    const ready = await waitFor(
      "A's runtime and editor to be running",
      async () => {
        const dash = await call('/dashboard', { session: a, headers: { accept: 'application/json' } });
        if (dash.json?.runtime?.state !== 'running' || dash.json?.editor?.state !== 'running') throw new Error(dash.text);
        return dash.json;
      },
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    runtimePort = ready.runtime.port;
    syncPort = (await db.store.editors.live(a.id))!.syncPort!;
    [b, c, d] = await Promise.all([signIn('bob@example.test'), signIn('cleo@example.test'), signIn('dan@example.test')]);
  });

  after(async () => {
    await edge?.close();
    await worker?.stop();
    if (a) await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${a.id}`, `ed-${a.id}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    await shells?.closeAll();
    await db?.drop();
  });

  test('invites are made by a signed-in owner, validated, and their token is shown once and stored only hashed', async () => {
    assert.equal((await call('/api/invites', { body: { project: 'notes', role: 'editor' } })).status, 401);
    const bad = await call('/api/invites', { session: a, body: { project: '../etc', role: 'admin', max_uses: 0, expires_in_seconds: 1.5, extra: true } });
    assert.equal(bad.status, 400);
    for (const field of ['project', 'role', 'max_uses', 'expires_in_seconds']) assert.match(bad.json.message, new RegExp(`${field}:`), bad.json.message);
    assert.match(bad.json.message, /extra/);
    assert.equal((await call('/api/invites', { session: a, raw: '{"project":', contentType: 'application/json' })).status, 400);

    const made = await invite({ project: 'notes', role: 'editor', max_uses: 1 });
    bInviteId = made.id;
    bToken = made.token;
    assert.equal(made.url, `http://localhost:8080/join/${made.token}`);
    assert.equal(made.role, 'editor');
    assert.equal(made.project, 'notes');
    assert.equal(made.max_uses, 1);
    const expiresInDays = (Date.parse(made.expires_at) - Date.now()) / 86_400_000;
    assert.ok(expiresInDays > 6.9 && expiresInDays <= 7, `a week by default, not ${expiresInDays} days`);

    const stored = await db.pool.query<{ h: string }>('SELECT encode(token_hash, $2) AS h FROM invites WHERE id = $1', [made.id, 'hex']);
    assert.equal(stored.rows[0]?.h, hashToken(made.token).toString('hex'), 'only the SHA-256 of the token is kept');

    const listed = await call('/api/invites', { session: a });
    assert.deepEqual(
      listed.json.invites.map((i: { id: string }) => i.id),
      [made.id],
    );
    assert.ok(!listed.text.includes(made.token), 'the list never shows the token again');
    const one = await call(`/api/invites/${made.id}`, { session: a });
    assert.equal(one.status, 200);
    assert.equal(one.json.status, 'active');
    assert.equal(one.json.token, undefined);
    assert.equal((await call(`/api/invites/${made.id}`, { session: b })).status, 404, "another user's invite is not found");
    assert.equal((await call('/api/invites/not-an-id', { session: a })).status, 400);
    assert.equal((await call('/api/invites', { session: b })).json.invites.length, 0);
  });

  test("B takes the link (signing in first) and lands in A's editor as an editor; the used-up link answers 410", async () => {
    assert.equal((await call(`/u/${a.id}/health`, { session: b })).status, 403, 'no access before joining');

    const page = await join(bToken, undefined, 'text/html');
    assert.equal(page.status, 302);
    assert.equal(page.headers.location, `/login?next=${encodeURIComponent(`/join/${bToken}`)}`);
    assert.equal((await join(bToken)).status, 401);

    const joined = await join(bToken, b);
    assert.equal(joined.status, 303, joined.text);
    assert.equal(joined.headers.location, `/u/${a.id}/?project=notes`);
    assert.equal(joined.json.membership.role, 'editor');
    const again = await join(bToken, b);
    assert.equal(again.status, 303, 'opening the same link again still leads in');
    assert.equal(again.json.already_member, true);
    assert.equal((await call(`/api/invites/${bInviteId}`, { session: a })).json.uses, 1, 'without spending another use');

    const late = await join(bToken, d);
    assert.equal(late.status, 410);
    assert.match(late.json.message, /used as many times as its owner allowed/);
    const latePage = await join(bToken, d, 'text/html');
    assert.equal(latePage.status, 410);
    assert.match(String(latePage.headers['content-type']), /text\/html/);
    assert.match(latePage.text, /used as many times/);
    assert.equal((await call(`/u/${a.id}/health`, { session: d })).status, 403);

    const own = await join(bToken, a);
    assert.equal(own.status, 303, 'the owner opening their own link goes to their editor');
    assert.equal(own.headers.location, `/u/${a.id}/?project=notes`);

    const members = await call('/api/memberships', { session: a });
    assert.deepEqual(
      members.json.members.map((m: { member: { id: string }; role: string; project: string }) => [m.member.id, m.role, m.project]),
      [[b.id, 'editor', 'notes']],
    );
    const mine = await call('/api/memberships', { session: b });
    assert.equal(mine.json.memberships.length, 1);
    assert.equal(mine.json.memberships[0].owner.id, a.id);
    assert.equal(mine.json.memberships[0].url, `/u/${a.id}/?project=notes`);

    assert.equal((await call(`/u/${a.id}/health`, { session: b })).status, 200);
    const ran = await execute(b, 'shared = 6 * 7\nshared');
    assert.equal(ran.status, 200, ran.text);
    assert.equal(ran.json.result, '42', 'an editor runs code in the owner\'s runtime');
    const settings = await call(`/u/${a.id}/api/settings`, { session: b });
    assert.equal(settings.status, 403);
    assert.match(settings.json.message, /account settings belong to its owner/);
  });

  test("B edits a Yjs document in A's editor through the edge, and A sees the edit", async () => {
    await withDocument([a, b], 'Projects/notes/shared.md', async ([docA, docB]) => {
      docB!.doc.getText('body').insert(0, 'typed by B');
      await until("B's edit to reach A", () => docA!.text() === 'typed by B');
      docA!.doc.getText('body').insert(docA!.text().length, ', answered by A');
      await until("A's edit to reach B", () => docB!.text() === 'typed by B, answered by A');
    });
  });

  test('a viewer reads and follows documents live, but cannot write, run code, or change a document', async () => {
    const viewerLink = await invite({ project: 'notes', role: 'viewer', expires_in_seconds: 3600 });
    assert.equal((await join(viewerLink.token, c)).status, 303);

    assert.equal((await call(`/u/${a.id}/health`, { session: c })).status, 200);
    assert.equal((await call(`/u/${a.id}/proxy/${runtimePort}/mrp/v1/capabilities`, { session: c })).status, 200, 'reads reach the runtime');
    const refused = await execute(c, 'viewer_ran = 1');
    assert.equal(refused.status, 403);
    assert.match(refused.json.message, /viewer role cannot run code or write/);
    assert.equal((await call(`/u/${a.id}/api/file`, { session: c, method: 'PUT', body: { path: 'x.md', content: 'no' } })).status, 403);
    assert.equal((await execute(a, "'viewer_ran' in globals()")).json.result, 'False', 'the refused cell never ran');

    const events = await wsOpen(`/u/${a.id}/events`, c);
    assert.match(events.first ?? '', /connected/, 'a viewer follows the event bus');
    events.ws?.close();
    assert.equal((await wsOpen(`/u/${a.id}/terminal`, c)).status, 403, 'but no other WebSocket');

    await withDocument([a, c], 'Projects/notes/viewed.md', async ([docA, docC]) => {
      docA!.doc.getText('body').insert(0, 'written by A');
      await until("A's edit to reach the viewer", () => docC!.text() === 'written by A');

      docC!.doc.getText('body').insert(0, 'written by the viewer ');
      // The viewer's awareness travels after its update on the same WebSocket: once A sees it, the update
      // would have arrived too, had it not been dropped.
      docC!.provider.awareness.setLocalStateField('typed', true);
      await until("the viewer's awareness to reach A", () => (docA!.provider.awareness.getStates().get(docC!.doc.clientID) as { typed?: boolean } | undefined)?.typed === true);
      assert.equal(docA!.text(), 'written by A', "the viewer's update did not reach A");
    });
    await withDocument([a], 'Projects/notes/viewed.md', async ([fresh]) => {
      assert.equal(fresh!.text(), 'written by A', 'nor the document on the server');
    });
  });

  test("/proxy/<port>/ through the edge reaches only the owner's current runtime port", async () => {
    for (const who of [a, b]) {
      const other = await call(`/u/${a.id}/proxy/${runtimePort + 1}/mrp/v1/capabilities`, { session: who });
      assert.equal(other.status, 403, other.text);
      assert.match(other.json.message, new RegExp(`only /proxy/${runtimePort}/ is reachable`));
    }
    assert.equal((await call(`/u/${a.id}/proxy/${syncPort}/`, { session: a })).status, 403, "not the editor's own sync server");
    assert.equal((await call(`/u/${a.id}/proxy/abc/x`, { session: a })).status, 400);
    assert.equal((await call(`/u/${a.id}/proxy/70000/x`, { session: a })).status, 400);
    assert.equal((await call(`/u/${a.id}/api/runtime/update-port`, { session: a, body: { port: 22, host: '10.0.0.1' } })).status, 403, 'nor re-pointed elsewhere');
    assert.equal((await call(`/u/${a.id}/proxy/${runtimePort}/mrp/v1/capabilities`, { session: a })).status, 200);
  });

  test("revoking B's invite closes B's open WebSockets at once, and B's next requests get 403", async () => {
    const events = await wsOpen(`/u/${a.id}/events`, b);
    const sync = await wsOpen(`/u/${a.id}/sync/${syncPort}/Projects/notes/shared.md`, b);
    assert.ok(events.ws && sync.ws, `both open: ${events.status} ${sync.status}`);
    const ownerEvents = await wsOpen(`/u/${a.id}/events`, a);

    const revoked = await call(`/api/invites/${bInviteId}`, { session: a, method: 'DELETE' });
    assert.equal(revoked.status, 200, revoked.text);
    assert.equal(revoked.json.status, 'revoked');
    assert.equal(revoked.json.memberships_revoked, 1);
    assert.equal(revoked.json.tunnels_cut, 2);
    await closedWithin(events.ws, "B's events WebSocket");
    await closedWithin(sync.ws, "B's sync WebSocket");
    assert.equal(ownerEvents.ws?.readyState, WebSocket.OPEN, "the owner's own WebSockets stay open");
    ownerEvents.ws?.close();

    assert.equal((await call(`/u/${a.id}/health`, { session: b })).status, 403);
    assert.equal((await execute(b, '1')).status, 403);
    assert.equal((await wsOpen(`/u/${a.id}/events`, b)).status, 403);
    assert.equal((await call('/api/memberships', { session: b })).json.memberships.length, 0);
    const again = await join(bToken, b);
    assert.equal(again.status, 410);
    assert.match(again.json.message, /revoked/);
    assert.equal((await call(`/api/invites/${bInviteId}`, { session: a, method: 'DELETE' })).status, 200, 'revoking twice is harmless');
  });

  test('a member leaving ends their access and cuts their WebSockets; nobody else can end it', async () => {
    const listed = await call('/api/memberships', { session: c });
    const membershipId: string = listed.json.memberships[0].id;
    const events = await wsOpen(`/u/${a.id}/events`, c);
    assert.ok(events.ws);
    assert.equal((await call(`/api/memberships/${membershipId}`, { session: d, method: 'DELETE' })).status, 404);
    assert.equal((await call('/api/memberships/not-an-id', { session: c, method: 'DELETE' })).status, 400);
    assert.equal(events.ws.readyState, WebSocket.OPEN);

    const left = await call(`/api/memberships/${membershipId}`, { session: c, method: 'DELETE' });
    assert.equal(left.status, 200, left.text);
    assert.equal(left.json.tunnels_cut, 1);
    await closedWithin(events.ws, "C's events WebSocket");
    assert.equal((await call(`/u/${a.id}/health`, { session: c })).status, 403);
    assert.equal((await call('/api/memberships', { session: a })).json.members.length, 0);
  });

  test('an expired invite answers 410; an unknown or malformed one 404', async () => {
    const brief = await invite({ project: 'notes', role: 'editor', expires_in_seconds: 1 });
    await sleep(1_500);
    const expired = await join(brief.token, d);
    assert.equal(expired.status, 410);
    assert.match(expired.json.message, /expired/);
    const page = await join(brief.token, d, 'text/html');
    assert.equal(page.status, 410);
    assert.match(page.text, /expired/);
    assert.equal((await call(`/u/${a.id}/health`, { session: d })).status, 403);
    assert.equal((await join('A'.repeat(43), d)).status, 404);
    assert.equal((await join('not-a-token', d)).status, 404);
  });

  test('max_uses is honoured when several people take the link at once', async () => {
    const forTwo = await invite({ project: 'notes', role: 'viewer', max_uses: 2 });
    const people = await Promise.all(['e1', 'e2', 'e3', 'e4', 'e5'].map((n) => signIn(`${n}@example.test`)));
    const answers = await Promise.all(people.map((p) => join(forTwo.token, p)));
    assert.deepEqual(
      answers.map((r) => r.status).sort(),
      [303, 303, 410, 410, 410],
    );
    assert.equal((await call(`/api/invites/${forTwo.id}`, { session: a })).json.uses, 2);
    const granted = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM memberships WHERE invite_id = $1', [forTwo.id]);
    assert.equal(granted.rows[0]?.n, 2);
  });
});
