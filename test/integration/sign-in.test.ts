import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { HostShells } from '../../activities/host-shell.js';
import { MemoryMailTransport } from '../../lib/mail.js';
import { gitHubProvider, oidcProvider } from '../../lib/sign-in-providers.js';
import { freshDatabase, registerBaseHost, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { Browser } from '../support/browser.js';
import { startEdgeWorker, startTestEdge, type RunningEdge } from '../support/edge.js';
import { freePort } from '../support/harness.js';
import { startFakeGitHub, startOidcProvider, type TestAccount } from '../support/identity-providers.js';
import { hostEnvShell } from '../support/netns.js';

/**
 * Sign-in as a browser meets it: a real OpenID Connect provider on loopback (oidc-provider, its login and
 * consent pages), a stand-in for GitHub's OAuth and API endpoints, email links through a test transport,
 * and the edge with a real worker behind it (each sign-in starts the user's containers).
 */
const h = useHarness();

describe('sign-in: OpenID Connect, GitHub, email links, sessions', () => {
  let db: TestDatabase;
  let shells: HostShells;
  let worker: Awaited<ReturnType<typeof startEdgeWorker>>;
  let edge: RunningEdge;
  let oidc: Awaited<ReturnType<typeof startOidcProvider>>;
  let github: Awaited<ReturnType<typeof startFakeGitHub>>;
  const mail = new MemoryMailTransport();
  const accounts = new Map<string, TestAccount>([
    ['alice', { id: 'alice', email: 'alice@example.test', emailVerified: true, name: 'Alice' }],
    ['mallory', { id: 'mallory', email: 'mallory@example.test', emailVerified: false, name: 'Mallory' }],
  ]);
  let edgeUrl: string;
  let edgeHost: string;
  const userIds = new Set<string>();

  before(async () => {
    db = await freshDatabase(h.state);
    shells = testShells(h.state);
    await registerBaseHost(db.store, shells);
    worker = await startEdgeWorker(h.state, db, shells);
    const port = await freePort();
    edgeUrl = `http://127.0.0.1:${port}`;
    edgeHost = `127.0.0.1:${port}`;
    oidc = await startOidcProvider({ clientId: 'markco-test', clientSecret: 'oidc-test-secret-0123456789', redirectUri: `${edgeUrl}/auth/callback/google`, accounts });
    github = await startFakeGitHub({
      clientId: 'gh-client',
      clientSecret: 'gh-test-secret',
      user: { id: 4242, login: 'alice-gh', name: 'Alice on GitHub' },
      emails: [
        { email: 'old-alice@example.test', primary: false, verified: false },
        { email: 'ALICE@example.test', primary: true, verified: true },
      ],
    });
    edge = await startTestEdge(h.state, db, worker.taskQueue, {
      port,
      publicUrl: edgeUrl,
      devLogin: false,
      signIn: {
        providers: [
          oidcProvider({ id: 'google', label: 'Google', issuer: oidc.issuer, clientId: 'markco-test', clientSecret: 'oidc-test-secret-0123456789', allowHttp: true }),
          gitHubProvider({ clientId: 'gh-client', clientSecret: 'gh-test-secret', webUrl: github.url, apiUrl: github.url, allowHttp: true }),
        ],
        mail,
      },
    });
  });

  after(async () => {
    await edge?.close();
    await worker?.stop();
    await oidc?.close();
    await github?.close();
    for (const id of userIds) await hostEnvShell(h.state.baseHost).run(['podman', 'rm', '--force', '--time', '0', `rt-${id}`, `ed-${id}`], { okExitCodes: [0, 1] }).catch(() => undefined);
    await shells?.closeAll();
    await db?.drop();
  });

  const dashboardOf = async (browser: Browser) => {
    const page = await browser.fetch(`${edgeUrl}/dashboard`, { headers: { accept: 'application/json' } });
    return { status: page.status, json: page.status === 200 ? (JSON.parse(page.body) as { user: { id: string; email: string } }) : undefined };
  };

  /** The provider's login and consent pages, as a person would fill them in. */
  const signInWithOidc = async (browser: Browser, login: string, next?: string) => {
    const loginPage = await browser.go(`${edgeUrl}/login/google${next ? `?next=${encodeURIComponent(next)}` : ''}`);
    assert.equal(loginPage.status, 200, `the provider's login page (${loginPage.hops.join(' -> ')})`);
    assert.ok(loginPage.hops[1]!.startsWith(oidc.issuer), 'redirected to the provider');
    const authorize = new URL(loginPage.hops[1]!);
    assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256', 'PKCE');
    assert.ok(authorize.searchParams.get('state') && authorize.searchParams.get('nonce'), 'state and nonce');
    assert.equal(authorize.searchParams.get('redirect_uri'), `${edgeUrl}/auth/callback/google`, 'the callback comes from the public URL');
    const consent = await browser.submit(loginPage, { login, password: 'any' });
    return browser.submit(consent);
  };

  test('OpenID Connect: redirect, login, consent, callback, session cookie, dashboard', async () => {
    const browser = new Browser();
    const landed = await signInWithOidc(browser, 'alice');
    assert.ok(landed.hops.some((u) => u.startsWith(`${edgeUrl}/auth/callback/google?`)), landed.hops.join(' -> '));
    assert.equal(new URL(landed.url).pathname, '/dashboard');
    const session = browser.cookie(edgeHost, 'markco_session');
    assert.ok(session, 'a session cookie');
    const d = await dashboardOf(browser);
    assert.equal(d.status, 200);
    assert.equal(d.json!.user.email, 'alice@example.test');
    userIds.add(d.json!.user.id);
    const identities = await db.pool.query(`SELECT provider, subject FROM user_identities WHERE user_id = $1`, [d.json!.user.id]);
    assert.deepEqual(identities.rows, [{ provider: 'google', subject: 'alice' }]);
    const stored = await db.pool.query(`SELECT count(*)::int AS n FROM sessions WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [session]);
    assert.equal(stored.rows[0].n, 1, 'only the hash of the token is stored');
  });

  test('a forged or replayed state is refused, and no session is made', async () => {
    const victim = new Browser();
    const started = await victim.fetch(`${edgeUrl}/login/google`);
    const state = new URL(String(started.headers.location)).searchParams.get('state')!;
    // The attacker sends the victim to the callback with the attacker's own code and state: no cookie matches.
    const attacker = new Browser();
    const attackerStart = await attacker.fetch(`${edgeUrl}/login/google`);
    const attackerState = new URL(String(attackerStart.headers.location)).searchParams.get('state')!;
    const forged = await victim.fetch(`${edgeUrl}/auth/callback/google?code=stolen&state=${attackerState}`);
    assert.equal(forged.status, 403);
    assert.match(forged.body, /did not start in this browser/);
    const noCookie = await new Browser().fetch(`${edgeUrl}/auth/callback/google?code=x&state=${state}`);
    assert.equal(noCookie.status, 403);
    assert.equal(victim.cookie(edgeHost, 'markco_session'), undefined);
    // A finished sign-in's callback, replayed: the flow is gone.
    const browser = new Browser();
    const landed = await signInWithOidc(browser, 'alice');
    const callback = landed.hops.find((u) => u.startsWith(`${edgeUrl}/auth/callback/google?`))!;
    const replayState = new URL(callback).searchParams.get('state')!;
    browser.setCookie(edgeHost, 'markco_flow', replayState, '/auth/callback');
    const replayed = await browser.fetch(callback);
    assert.equal(replayed.status, 400);
    assert.match(replayed.body, /expired or was already used/);
  });

  test('GitHub: the verified primary email links the same user; an unverified email neither links nor creates', async () => {
    const browser = new Browser();
    const landed = await browser.go(`${edgeUrl}/login/github?next=${encodeURIComponent('/dashboard?from=github')}`);
    assert.equal(new URL(landed.url).pathname, '/dashboard');
    assert.equal(new URL(landed.url).search, '?from=github', 'back where the sign-in began');
    const d = await dashboardOf(browser);
    const alice = (await db.pool.query(`SELECT user_id FROM user_identities WHERE provider = 'google' AND subject = 'alice'`)).rows[0].user_id;
    assert.equal(d.json!.user.id, alice, 'one user, two providers');
    assert.deepEqual((await db.pool.query(`SELECT provider FROM user_identities WHERE user_id = $1 ORDER BY provider`, [alice])).rows.map((r) => r.provider), ['github', 'google']);
    const tokenExchange = github.seen.find((s) => s.path === '/login/oauth/access_token');
    assert.ok(tokenExchange, 'the code was exchanged (with the PKCE verifier the stand-in checks)');

    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM users`)).rows[0].n;
    const mallory = new Browser();
    const refused = await signInWithOidc(mallory, 'mallory');
    assert.equal(refused.status, 403);
    assert.match(refused.body, /verified email/);
    assert.equal((await db.pool.query(`SELECT count(*)::int AS n FROM users`)).rows[0].n, before, 'no user was made');
    assert.equal(mallory.cookie(edgeHost, 'markco_session'), undefined);
  });

  test('email link: sent through the transport, opened, used once; the same answer for any address; limited per address', async () => {
    const browser = new Browser();
    const loginPage = await browser.fetch(`${edgeUrl}/login`);
    const asked = await browser.submit(loginPage, { email: 'bob@example.test' }, /\/login\/email/);
    assert.equal(asked.status, 202);
    const message = mail.sent.at(-1)!;
    assert.equal(message.to, 'bob@example.test');
    const link = /(http:\/\/\S+\/auth\/email\/verify\?token=\S+)/.exec(message.text)![1]!;
    assert.ok(link.startsWith(`${edgeUrl}/`), 'the link is built from the public URL');
    const landing = await browser.fetch(link);
    assert.equal(landing.status, 200, 'opening the link shows a page: a mail scanner fetching it uses nothing up');
    const signedIn = await browser.submit(landing);
    assert.equal(new URL(signedIn.url).pathname, '/dashboard');
    const d = await dashboardOf(browser);
    assert.equal(d.json!.user.email, 'bob@example.test');
    userIds.add(d.json!.user.id);
    const again = await new Browser().submit(await new Browser().fetch(link));
    assert.equal(again.status, 410, 'a link works once');

    const sentBefore = mail.sent.length;
    const json = async (email: string) => new Browser().fetch(`${edgeUrl}/login/email`, { json: { email } });
    const bad = await json('not-an-address');
    assert.equal(bad.status, 400);
    assert.match(bad.body, /email: expected an email address/);
    for (let i = 0; i < 3; i++) assert.equal((await json('carol@example.test')).status, 202);
    const fourth = await json('carol@example.test');
    assert.equal(fourth.status, 202, 'the same answer');
    assert.equal(mail.sent.length - sentBefore, 3, 'but no fourth email to that address');
    // And per client: ten requests in ten minutes, then 429 with the time to wait.
    let limited;
    for (let i = 0; i < 10 && !limited; i++) {
      const r = await json(`dave${i}@example.test`);
      if (r.status === 429) limited = r;
    }
    assert.ok(limited, 'the client is rate-limited');
    assert.ok(limited.headers['retry-after'], 'with Retry-After');
  });

  test('logout ends the session: the stolen cookie is refused afterwards; form posts need the anti-forgery token and a same-site Origin', async () => {
    const browser = new Browser();
    await signInWithOidc(browser, 'alice');
    const stolen = browser.cookie(edgeHost, 'markco_session')!;
    const dashboard = await browser.fetch(`${edgeUrl}/dashboard`);
    assert.equal(dashboard.status, 200);
    const noToken = await browser.fetch(`${edgeUrl}/logout`, { method: 'POST', form: {} });
    assert.equal(noToken.status, 403, 'a form post without _csrf');
    const crossSite = await browser.fetch(`${edgeUrl}/logout`, { method: 'POST', json: {}, headers: { origin: 'https://evil.example' } });
    assert.equal(crossSite.status, 403, 'a cross-site Origin');
    const out = await browser.submit(dashboard, {}, /\/logout/);
    assert.equal(new URL(out.url).pathname, '/login');
    assert.equal((await dashboardOf(browser)).status, 401);
    const thief = new Browser();
    thief.setCookie(edgeHost, 'markco_session', stolen);
    assert.equal((await dashboardOf(thief)).status, 401, 'the cookie is dead everywhere');
  });

  test('sessions expire, slide forward when used after a day, and are refused once revoked', async () => {
    const browser = new Browser();
    await signInWithOidc(browser, 'alice');
    const token = browser.cookie(edgeHost, 'markco_session')!;
    const row = async () => (await db.pool.query<{ expires_at: Date }>(`SELECT expires_at FROM sessions WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token])).rows[0]!;
    // Last used two days ago, expiring in a week: the next use renews it to a full 30 days.
    await db.pool.query(`UPDATE sessions SET last_seen_at = now() - interval '2 days', expires_at = now() + interval '7 days' WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
    // Read through the store: the edge caches a resolved session for a few seconds.
    const resolved = await db.store.sessions.resolve(token);
    assert.ok(resolved);
    assert.ok((await row()).expires_at.getTime() > Date.now() + 29 * 86_400_000, 'renewed to 30 days');
    await db.pool.query(`UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [token]);
    assert.equal(await db.store.sessions.resolve(token), undefined, 'an expired session is refused');
  });

  test('an unknown provider is 404; a provider error comes back as a readable page', async () => {
    const b = new Browser();
    assert.equal((await b.fetch(`${edgeUrl}/login/myspace`)).status, 404);
    const started = await b.fetch(`${edgeUrl}/login/google`);
    const state = new URL(String(started.headers.location)).searchParams.get('state')!;
    const denied = await b.fetch(`${edgeUrl}/auth/callback/google?error=access_denied&error_description=${encodeURIComponent('The user said no')}&state=${state}`);
    assert.equal(denied.status, 400);
    assert.match(denied.body, /The user said no/);
  });
});
