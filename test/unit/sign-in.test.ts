import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../lib/config.js';
import { safeNextPath } from '../../lib/identities.js';
import { redactUrl } from '../../lib/logger.js';

test('after sign-in the browser goes to a path on this site only', () => {
  for (const ok of ['/dashboard', '/join/abc', '/u/123/?project=x', '/dashboard#top']) assert.equal(safeNextPath(ok), ok);
  for (const bad of ['https://evil.example/', '//evil.example/x', '/\\evil.example', 'dashboard', '', undefined, 42, '/\u0000x', `/${'a'.repeat(3000)}`]) {
    assert.equal(safeNextPath(bad), '/dashboard', String(bad));
  }
});

test('logs never carry sign-in tokens, OAuth codes and states, or invite tokens (where the sign-in returns to included)', () => {
  assert.equal(redactUrl('/auth/email/verify?token=abcDEF123'), '/auth/email/verify?token=[redacted]');
  assert.equal(redactUrl('/auth/callback/google?code=xyz&state=s1&iss=http%3A%2F%2Fidp'), '/auth/callback/google?code=[redacted]&state=[redacted]&iss=http%3A%2F%2Fidp');
  assert.equal(redactUrl('/join/Zm9vYmFy?x=1'), '/join/[redacted]?x=1');
  assert.equal(redactUrl('/login?next=%2Fjoin%2FZm9vYmFy'), '/login?next=[redacted]', 'an invite link on its way through the sign-in');
  assert.equal(redactUrl('/u/123/proxy/8888/mrp/v1/execute'), '/u/123/proxy/8888/mrp/v1/execute');
});

test('sign-in settings: a provider needs its id and its secret; smtp needs its URL; secrets are never echoed', () => {
  const none = loadConfig({});
  assert.equal(none.signIn.oidc, undefined);
  assert.equal(none.signIn.github, undefined);
  assert.deepEqual(none.signIn.mail, { kind: 'none' });
  const google = loadConfig({ MARKCO_OIDC_CLIENT_ID: 'id', MARKCO_OIDC_CLIENT_SECRET: 'shh' });
  assert.equal(google.signIn.oidc?.issuer, 'https://accounts.google.com');
  assert.equal(google.signIn.oidc?.id, 'google');
  assert.throws(() => loadConfig({ MARKCO_GITHUB_CLIENT_ID: 'id' }), /MARKCO_GITHUB_CLIENT_SECRET: set together with MARKCO_GITHUB_CLIENT_ID/);
  assert.throws(() => loadConfig({ MARKCO_MAIL_TRANSPORT: 'smtp' }), /MARKCO_SMTP_URL: required when MARKCO_MAIL_TRANSPORT=smtp/);
  assert.throws(
    () => loadConfig({ MARKCO_OIDC_CLIENT_SECRET: 'very-secret-value', MARKCO_OIDC_ISSUER: 'not a url' }),
    (err: Error) => /MARKCO_OIDC_ISSUER/.test(err.message) && !err.message.includes('very-secret-value'),
  );
});
