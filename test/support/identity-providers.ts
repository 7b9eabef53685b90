import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

/**
 * Identity providers on loopback for the sign-in tests: a real OpenID Connect provider (npm
 * oidc-provider, with its development login and consent pages) and a stand-in for GitHub's OAuth and
 * API endpoints (authorize, access_token with PKCE checked, /user, /user/emails).
 */
export interface TestAccount {
  id: string;
  email: string;
  emailVerified: boolean;
  name: string;
}

export async function startOidcProvider(opts: { clientId: string; clientSecret: string; redirectUri: string; accounts: Map<string, TestAccount> }) {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const provider = new Provider(issuer, {
    clients: [{ client_id: opts.clientId, client_secret: opts.clientSecret, redirect_uris: [opts.redirectUri], grant_types: ['authorization_code'], response_types: ['code'] }],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    async findAccount(_ctx, id) {
      const account = opts.accounts.get(id) ?? { id, email: `${id}@example.test`, emailVerified: true, name: id };
      return { accountId: id, claims: async () => ({ sub: account.id, email: account.email, email_verified: account.emailVerified, name: account.name }) };
    },
  });
  server.on('request', provider.callback());
  return { issuer, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

export async function startFakeGitHub(opts: { clientId: string; clientSecret: string; user: { id: number; login: string; name: string }; emails: { email: string; primary: boolean; verified: boolean }[] }) {
  const codes = new Map<string, { challenge: string; redirectUri: string }>();
  const tokens = new Set<string>();
  const seen: { path: string; method: string }[] = [];
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://github.invalid');
    seen.push({ path: url.pathname, method: req.method ?? 'GET' });
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/login/oauth/authorize') {
      if (url.searchParams.get('client_id') !== opts.clientId || url.searchParams.get('code_challenge_method') !== 'S256') return json(400, { error: 'bad authorize request' });
      const code = randomBytes(10).toString('hex');
      codes.set(code, { challenge: url.searchParams.get('code_challenge') ?? '', redirectUri: url.searchParams.get('redirect_uri') ?? '' });
      const back = new URL(url.searchParams.get('redirect_uri')!);
      back.searchParams.set('code', code);
      back.searchParams.set('state', url.searchParams.get('state') ?? '');
      res.writeHead(302, { location: back.href });
      return res.end();
    }
    if (url.pathname === '/login/oauth/access_token' && req.method === 'POST') {
      let raw = '';
      for await (const chunk of req) raw += chunk;
      const form = new URLSearchParams(raw);
      const basic = req.headers.authorization?.startsWith('Basic ') ? Buffer.from(req.headers.authorization.slice(6), 'base64').toString().split(':').map(decodeURIComponent) : [];
      const [id, secret] = basic.length === 2 ? basic : [form.get('client_id'), form.get('client_secret')];
      if (id !== opts.clientId || secret !== opts.clientSecret) return json(401, { error: 'incorrect_client_credentials' });
      const issued = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      const verifier = form.get('code_verifier') ?? '';
      if (!issued || createHash('sha256').update(verifier).digest('base64url') !== issued.challenge || form.get('redirect_uri') !== issued.redirectUri) return json(400, { error: 'bad_verification_code' });
      const token = randomBytes(16).toString('hex');
      tokens.add(token);
      return json(200, { access_token: token, token_type: 'bearer', scope: 'read:user,user:email' });
    }
    const bearer = req.headers.authorization?.replace(/^Bearer /, '') ?? '';
    if (!tokens.has(bearer)) return json(401, { message: 'Bad credentials' });
    if (url.pathname === '/user') return json(200, opts.user);
    if (url.pathname === '/user/emails') return json(200, opts.emails);
    return json(404, { message: 'Not Found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}
