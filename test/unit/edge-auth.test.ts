import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAuth, secureCookiesFor, sessionTokenOf, wantsHtml } from '../../api/auth.js';
import { isPrivateAddress } from '../../activities/user-environment.js';
import { hashToken, usernameBase, type UserRecord } from '../../lib/accounts.js';
import { decodeOperationId, encodeOperationId } from '../../lib/operations.js';

const ada: UserRecord = { id: '5d1c2b7e-0000-4000-8000-00000000a001', email: 'ada@example.test', username: 'ada', name: 'Ada', plan: 'free', isOperator: false, createdAt: new Date() };

function authWith(tokens: Record<string, UserRecord>, adminToken?: string) {
  let lookups = 0;
  const auth = createAuth({
    sessions: {
      resolve: async (token: string) => {
        lookups++;
        const user = tokens[token];
        return user ? { user, sessionId: 's', expiresAt: new Date(Date.now() + 1000) } : undefined;
      },
    } as never,
    adminToken,
    secureCookies: true,
  });
  return { auth, lookups: () => lookups };
}

test('the session cookie is HttpOnly, SameSite=Lax and Secure except on plain-HTTP localhost', () => {
  const { auth } = authWith({});
  const cookie = auth.cookie('tok', new Date(Date.now() + 3600_000));
  assert.match(cookie, /^markco_session=tok; Path=\/; Max-Age=(3599|3600); HttpOnly; SameSite=Lax; Secure$/);
  assert.equal(secureCookiesFor('http://localhost:8080'), false);
  assert.equal(secureCookiesFor('http://127.0.0.1:8080'), false);
  assert.equal(secureCookiesFor('https://markco.example.com'), true);
  assert.equal(secureCookiesFor('http://markco.example.com'), true, 'a public host always gets Secure');
});

test('the token comes from our cookie first, else a Bearer header; other cookies are ignored', () => {
  assert.equal(sessionTokenOf({ cookie: 'other=1; markco_session=abc; x=2' }), 'abc');
  assert.equal(sessionTokenOf({ cookie: 'markco_session_old=zzz', authorization: 'Bearer def' }), 'def');
  assert.equal(sessionTokenOf({}), undefined);
});

test('a resolved session is reused briefly; an unknown one is looked up every time', async () => {
  const { auth, lookups } = authWith({ good: ada });
  assert.equal((await auth.userOf({ cookie: 'markco_session=good' }))?.id, ada.id);
  await auth.userOf({ cookie: 'markco_session=good' });
  assert.equal(lookups(), 1);
  assert.equal(await auth.userOf({ cookie: 'markco_session=bad' }), undefined);
  assert.equal(await auth.userOf({ cookie: 'markco_session=bad' }), undefined);
  assert.equal(lookups(), 3);
});

test('the admin token is recognised only exactly, and never when none is configured', () => {
  const token = 'a'.repeat(40);
  assert.equal(authWith({}, token).auth.isOperator({ authorization: `Bearer ${token}` }), true);
  assert.equal(authWith({}, token).auth.isOperator({ authorization: `Bearer ${token}x` }), false);
  assert.equal(authWith({}).auth.isOperator({ authorization: `Bearer ${token}` }), false);
});

test('pages get HTML answers; API clients and XHR get JSON', () => {
  assert.equal(wantsHtml({ headers: { accept: 'text/html,application/xhtml+xml' }, url: '/u/x/' }), true);
  assert.equal(wantsHtml({ headers: { accept: 'application/json' }, url: '/dashboard' }), false);
  assert.equal(wantsHtml({ headers: { accept: 'text/html', 'x-requested-with': 'XMLHttpRequest' }, url: '/u/x/' }), false);
  assert.equal(wantsHtml({ headers: { accept: 'text/html' }, url: '/api/runtimes' }), false);
});

test('operation ids round-trip and reject anything that is not one', () => {
  const id = encodeOperationId('user/5d1c2b7e-0000-4000-8000-00000000a001/login', '01a208ac-c6d9-73ee-9ca0-eb9d4c4c1101');
  assert.deepEqual(decodeOperationId(id), { workflowId: 'user/5d1c2b7e-0000-4000-8000-00000000a001/login', runId: '01a208ac-c6d9-73ee-9ca0-eb9d4c4c1101' });
  assert.equal(decodeOperationId('not an id'), undefined);
  assert.equal(decodeOperationId(Buffer.from('no-separator').toString('base64url')), undefined);
});

test('usernames follow the seeds rule; tokens are hashed to 32 bytes', () => {
  assert.equal(usernameBase('Ada.Lovelace+x@example.test'), 'ada.lovelace_x');
  assert.equal(usernameBase('42@example.test'), 'u_42');
  assert.equal(usernameBase(`${'a'.repeat(40)}@example.test`).length, 32);
  assert.equal(hashToken('t').length, 32);
});

test('project imports refuse loopback, private and link-local addresses', () => {
  for (const ip of ['127.0.0.1', '10.1.2.3', '172.20.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '::1', 'fd00::1', '::ffff:127.0.0.1']) {
    assert.equal(isPrivateAddress(ip), true, ip);
  }
  for (const ip of ['140.82.112.3', '8.8.8.8', '2606:4700::1111']) assert.equal(isPrivateAddress(ip), false, ip);
});
