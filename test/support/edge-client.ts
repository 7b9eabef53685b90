import { request } from 'undici';
import { WebSocket } from 'ws';

/** A signed-in user as the tests hold them: the session cookie (`name=value`) and its raw token. */
export interface TestSession {
  id: string;
  cookie: string;
  token: string;
  /** The whole Set-Cookie line the edge answered with. */
  setCookie: string;
}

export interface EdgeAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body as JSON; undefined at run time when it is not JSON (tests read it loosely). */
  json: Record<string, any>;
}

/**
 * How the edge tests talk to the edge: JSON calls with a session, the development sign-in, and
 * WebSocket upgrades (the status an upgrade was answered with, or the first message once open).
 */
export function edgeClient(edgeUrl: () => string) {
  const call = async (
    path: string,
    init: { method?: string; session?: Pick<TestSession, 'cookie'>; headers?: Record<string, string>; body?: unknown; raw?: string; contentType?: string } = {},
  ): Promise<EdgeAnswer> => {
    const res = await request(`${edgeUrl()}${path}`, {
      method: (init.method ?? (init.body === undefined && init.raw === undefined ? 'GET' : 'POST')) as 'GET',
      headers: {
        ...(init.session ? { cookie: init.session.cookie } : {}),
        ...(init.body !== undefined || init.raw !== undefined ? { 'content-type': init.contentType ?? 'application/json' } : {}),
        ...init.headers,
      },
      body: init.raw ?? (init.body === undefined ? undefined : JSON.stringify(init.body)),
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
    const text = await res.body.text();
    let json: Record<string, any> | undefined;
    try {
      json = JSON.parse(text) as Record<string, any>;
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, headers: res.headers, text, json: json as Record<string, any> };
  };

  const devLogin = async (email: string): Promise<TestSession> => {
    const res = await call('/auth/dev/login', { body: { email } });
    if (res.status !== 200) throw new Error(`dev login of ${email} answered ${res.status}: ${res.text}`);
    const setCookie = String(res.headers['set-cookie']);
    const cookie = setCookie.split(';')[0]!;
    return { id: res.json.user.id, cookie, token: cookie.slice(cookie.indexOf('=') + 1), setCookie };
  };

  /** Opens a WebSocket through the edge: the refusal's status, or the socket and its first message. */
  const wsOpen = (path: string, session?: Pick<TestSession, 'cookie'>, opts: { waitForMessage?: boolean } = {}): Promise<{ ws?: WebSocket; status?: number; first?: string }> =>
    new Promise((resolve) => {
      const ws = new WebSocket(`${edgeUrl().replace('http', 'ws')}${path}`, { headers: session ? { cookie: session.cookie } : {} });
      ws.once('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode ?? 0 });
        ws.terminate();
      });
      if (opts.waitForMessage === false) ws.once('open', () => resolve({ ws, status: 101 }));
      else ws.once('message', (data) => resolve({ ws, status: 101, first: data.toString() }));
      ws.once('error', () => resolve({}));
    });

  return { call, devLogin, wsOpen };
}
