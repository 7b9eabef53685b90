import * as oidc from 'openid-client';
import type { ProviderProfile } from './identities.js';

/**
 * The sign-in providers, on openid-client (authorization code flow, PKCE S256, `state`, and for OpenID
 * Connect a `nonce` and the ID token's checks). Every callback URL is built from the one public base URL
 * (MARKCO_PUBLIC_URL), so what the provider is told and what the edge serves never drift apart.
 */
export interface OidcProviderConfig {
  /** Path segment and identity namespace: `/login/<id>`, `/auth/callback/<id>`. */
  id: string;
  /** Shown on the sign-in page. */
  label: string;
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Loopback issuers in tests speak plain HTTP; nothing else may. */
  allowHttp?: boolean;
}

export interface GitHubProviderConfig {
  clientId: string;
  clientSecret: string;
  /** https://github.com (GitHub Enterprise or a test server otherwise). */
  webUrl: string;
  /** https://api.github.com */
  apiUrl: string;
  allowHttp?: boolean;
}

export interface SignInProvider {
  id: string;
  label: string;
  /** The provider's authorization URL for this sign-in, and the secrets to keep until the callback. */
  begin(redirectUri: string): Promise<{ url: (state: string) => string; codeVerifier: string; nonce: string | null }>;
  /** Exchanges the callback's code (PKCE, state and nonce checked) and reads who signed in. */
  finish(callbackUrl: URL, expected: { state: string; codeVerifier: string; nonce: string | null }): Promise<ProviderProfile>;
}

const isLoopback = (url: string) => ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname);

function insecureOk(url: string, allow: boolean | undefined): boolean {
  if (new URL(url).protocol === 'https:') return false;
  if (allow && isLoopback(url)) return true;
  throw new Error(`${url}: a sign-in provider must be reached over https (plain http only on loopback, for tests)`);
}

export function oidcProvider(c: OidcProviderConfig): SignInProvider {
  let configuration: Promise<oidc.Configuration> | undefined;
  const config = () => {
    configuration ??= oidc
      .discovery(new URL(c.issuer), c.clientId, c.clientSecret, undefined, insecureOk(c.issuer, c.allowHttp) ? { execute: [oidc.allowInsecureRequests] } : undefined)
      .catch((err: unknown) => {
        configuration = undefined;
        throw err;
      });
    return configuration;
  };
  return {
    id: c.id,
    label: c.label,
    async begin(redirectUri) {
      const cfg = await config();
      const codeVerifier = oidc.randomPKCECodeVerifier();
      const challenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
      const nonce = oidc.randomNonce();
      return {
        codeVerifier,
        nonce,
        url: (state) =>
          oidc.buildAuthorizationUrl(cfg, { redirect_uri: redirectUri, scope: 'openid email profile', code_challenge: challenge, code_challenge_method: 'S256', state, nonce }).href,
      };
    },
    async finish(callbackUrl, expected) {
      const cfg = await config();
      const tokens = await oidc.authorizationCodeGrant(cfg, callbackUrl, {
        pkceCodeVerifier: expected.codeVerifier,
        expectedState: expected.state,
        ...(expected.nonce ? { expectedNonce: expected.nonce } : {}),
        idTokenExpected: true,
      });
      const claims = tokens.claims()!;
      let email = typeof claims.email === 'string' ? claims.email : null;
      let verified = claims.email_verified === true;
      let name = typeof claims.name === 'string' ? claims.name : null;
      if (!email) {
        // Some providers keep the email out of the ID token: ask the userinfo endpoint (same subject).
        const info = await oidc.fetchUserInfo(cfg, tokens.access_token, claims.sub);
        email = typeof info.email === 'string' ? info.email : null;
        verified = info.email_verified === true;
        name ??= typeof info.name === 'string' ? info.name : null;
      }
      return { provider: c.id, subject: claims.sub, email, emailVerified: verified, name };
    },
  };
}

/** GitHub is OAuth 2.0 without OpenID Connect: the user and their verified emails come from its API. */
export function gitHubProvider(c: GitHubProviderConfig): SignInProvider {
  const insecure = insecureOk(c.webUrl, c.allowHttp) || insecureOk(c.apiUrl, c.allowHttp);
  const cfg = new oidc.Configuration(
    { issuer: c.webUrl, authorization_endpoint: `${c.webUrl}/login/oauth/authorize`, token_endpoint: `${c.webUrl}/login/oauth/access_token` },
    c.clientId,
    c.clientSecret,
  );
  if (insecure) oidc.allowInsecureRequests(cfg);
  const api = async <T>(path: string, accessToken: string): Promise<T> => {
    const r = await fetch(`${c.apiUrl}${path}`, { headers: { authorization: `Bearer ${accessToken}`, accept: 'application/vnd.github+json', 'user-agent': 'markco' } });
    if (!r.ok) throw new Error(`GitHub ${path} answered ${r.status}`);
    return (await r.json()) as T;
  };
  return {
    id: 'github',
    label: 'GitHub',
    async begin(redirectUri) {
      const codeVerifier = oidc.randomPKCECodeVerifier();
      const challenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
      return {
        codeVerifier,
        nonce: null,
        url: (state) => oidc.buildAuthorizationUrl(cfg, { redirect_uri: redirectUri, scope: 'read:user user:email', code_challenge: challenge, code_challenge_method: 'S256', state }).href,
      };
    },
    async finish(callbackUrl, expected) {
      const tokens = await oidc.authorizationCodeGrant(cfg, callbackUrl, { pkceCodeVerifier: expected.codeVerifier, expectedState: expected.state, idTokenExpected: false });
      const user = await api<{ id: number; login: string; name: string | null }>('/user', tokens.access_token);
      const emails = await api<{ email: string; primary: boolean; verified: boolean }[]>('/user/emails', tokens.access_token);
      const chosen = emails.find((e) => e.primary && e.verified) ?? emails.find((e) => e.verified) ?? null;
      return { provider: 'github', subject: String(user.id), email: chosen?.email ?? null, emailVerified: chosen !== null, name: user.name ?? user.login };
    },
  };
}
