import assert from 'node:assert/strict';
import { test } from 'node:test';
import { archiveKey, archivePrefix } from '../../activities/archive-store.js';
import { containersOfUser } from '../../activities/user-containers.js';
import { confirmsAccount, DeleteAccountBody } from '../../api/routes/account.js';
import { validateDeleteAccountInput } from '../../workflows/contracts/accounts.js';

const user = '00000000-0000-4000-8000-000000000042';
const other = '11111111-1111-4111-8111-111111111111';

test('deleteAccount input: the user id, who asked, and nothing else; each problem is named', () => {
  assert.deepEqual(validateDeleteAccountInput({ userId: user }), []);
  assert.deepEqual(validateDeleteAccountInput({ userId: user, requestedBy: 'user' }), []);
  assert.deepEqual(validateDeleteAccountInput({ userId: user, requestedBy: 'operator' }), []);
  assert.deepEqual(validateDeleteAccountInput(null as never), ['input must be a JSON object']);
  assert.deepEqual(validateDeleteAccountInput([user] as never), ['input must be a JSON object']);
  assert.deepEqual(validateDeleteAccountInput('x' as never), ['input must be a JSON object']);
  assert.deepEqual(validateDeleteAccountInput({} as never), ['userId: expected a lowercase UUID']);
  assert.deepEqual(validateDeleteAccountInput({ userId: 'ABCDEF00-0000-4000-8000-000000000042' }), ['userId: expected a lowercase UUID']);
  assert.deepEqual(validateDeleteAccountInput({ userId: `../${user}` }), ['userId: expected a lowercase UUID'], 'never a path');
  assert.deepEqual(validateDeleteAccountInput({ userId: user, requestedBy: 'robot' as never }), ['requestedBy: expected one of user, operator']);
  assert.deepEqual(validateDeleteAccountInput({ userId: user, userid: other } as never), ['userid: not a field of deleteAccount (userId, requestedBy)'], 'a mistyped field is refused, not ignored');
});

test('DELETE /api/account body: only a confirmation, which must be the account’s email', () => {
  assert.ok(DeleteAccountBody.safeParse({ confirm: 'Ada@Example.test' }).success);
  assert.ok(!DeleteAccountBody.safeParse({}).success, 'no confirmation, no deletion');
  assert.ok(!DeleteAccountBody.safeParse({ confirm: true }).success);
  assert.ok(!DeleteAccountBody.safeParse({ confirm: 'ada@example.test', force: true }).success, 'unknown fields are refused');
  assert.ok(!DeleteAccountBody.safeParse({ confirm: 'a'.repeat(321) }).success);
  assert.ok(confirmsAccount('ada@example.test', 'Ada@Example.test'), 'emails compare case-insensitively, as users.email is unique');
  assert.ok(confirmsAccount(' ada@example.test ', 'ada@example.test'));
  assert.ok(!confirmsAccount('', 'ada@example.test'));
  assert.ok(!confirmsAccount('ada@example.tes', 'ada@example.test'));
  assert.ok(!confirmsAccount('yes', 'ada@example.test'));
});

test("a host's containers of the user: runtime, a restore's runtime and editor; never another user's or a sandbox", () => {
  const names = [`rt-${user}`, `rt-${user}-0a1b2c3d`, `ed-${user}`, `rt-${other}`, `ed-${other}`, `rt-${user}-oops`, `sb-${other}`, `x-rt-${user}`, ''].join('\n');
  assert.deepEqual(containersOfUser(names, user), [`rt-${user}`, `rt-${user}-0a1b2c3d`, `ed-${user}`]);
  assert.deepEqual(containersOfUser('', user), []);
  assert.throws(() => containersOfUser(names, '.*'), /invalid user id/);
});

test('S3: every archive of a user is under one prefix, which nothing else shares', () => {
  assert.equal(archivePrefix(user), `archives/${user}/`);
  assert.ok(archiveKey(user, other).startsWith(archivePrefix(user)));
  assert.ok(!archiveKey(other, user).startsWith(archivePrefix(user)));
  assert.throws(() => archivePrefix('../x'), /cannot be part of an archive key/);
  assert.throws(() => archivePrefix(''), /cannot be part of an archive key/);
});
