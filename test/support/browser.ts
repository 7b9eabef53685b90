import { request } from 'undici';

/**
 * A browser-like HTTP client for sign-in tests: a cookie jar (per host, path-scoped, Max-Age honoured),
 * redirects followed by hand (every hop is visible), and HTML forms read and submitted as a browser
 * would. Enough for OAuth and OpenID Connect flows across the edge and a provider on loopback.
 */
interface StoredCookie {
  name: string;
  value: string;
  path: string;
  expiresAt: number | null;
}

export interface Page {
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Every URL visited on the way, redirects included. */
  hops: string[];
}

export class Browser {
  private readonly jar = new Map<string, StoredCookie[]>();

  cookie(host: string, name: string): string | undefined {
    return this.jar.get(host)?.find((c) => c.name === name && (c.expiresAt === null || c.expiresAt > Date.now()))?.value;
  }

  setCookie(host: string, name: string, value: string, path = '/'): void {
    const list = (this.jar.get(host) ?? []).filter((c) => !(c.name === name && c.path === path));
    list.push({ name, value, path, expiresAt: null });
    this.jar.set(host, list);
  }

  private store(url: URL, setCookie: string | string[] | undefined): void {
    for (const line of [setCookie ?? []].flat()) {
      const [pair, ...attrs] = line.split(';').map((p) => p.trim());
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq);
      const value = pair!.slice(eq + 1);
      let path = '/';
      let expiresAt: number | null = null;
      for (const a of attrs) {
        const [k, v] = a.split('=');
        if (k!.toLowerCase() === 'path' && v) path = v;
        if (k!.toLowerCase() === 'max-age') expiresAt = Date.now() + Number(v) * 1000;
      }
      const list = (this.jar.get(url.host) ?? []).filter((c) => !(c.name === name && c.path === path));
      if (expiresAt === null || expiresAt > Date.now()) list.push({ name, value, path, expiresAt });
      this.jar.set(url.host, list);
    }
  }

  private cookieHeader(url: URL): string | undefined {
    const now = Date.now();
    const sent = (this.jar.get(url.host) ?? []).filter((c) => (c.expiresAt === null || c.expiresAt > now) && url.pathname.startsWith(c.path));
    return sent.length > 0 ? sent.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }

  /** One request, no redirect followed. */
  async fetch(url: string, opts: { method?: string; form?: Record<string, string>; json?: unknown; headers?: Record<string, string> } = {}): Promise<Page> {
    const u = new URL(url);
    const headers: Record<string, string> = { accept: 'text/html,application/xhtml+xml', 'user-agent': 'markco-test-browser', ...opts.headers };
    const cookie = this.cookieHeader(u);
    if (cookie) headers.cookie = cookie;
    let body: string | undefined;
    if (opts.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(opts.form).toString();
    } else if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      headers.accept = 'application/json';
      body = JSON.stringify(opts.json);
    }
    const r = await request(u, { method: (opts.method ?? (body !== undefined ? 'POST' : 'GET')) as 'GET', headers, ...(body !== undefined ? { body } : {}) });
    this.store(u, r.headers['set-cookie']);
    return { url, status: r.statusCode, headers: r.headers, body: await r.body.text(), hops: [url] };
  }

  /** A request, then every redirect (GET, as browsers do after 302/303), up to `maxHops`. */
  async go(url: string, opts: Parameters<Browser['fetch']>[1] & { maxHops?: number } = {}): Promise<Page> {
    const hops: string[] = [];
    let page = await this.fetch(url, opts);
    hops.push(url);
    for (let i = 0; i < (opts.maxHops ?? 20) && page.status >= 300 && page.status < 400 && page.headers.location; i++) {
      const next = new URL(String(page.headers.location), page.url).href;
      hops.push(next);
      page = await this.fetch(next, opts.headers ? { headers: opts.headers } : {});
    }
    return { ...page, hops };
  }

  /** Submits the page's first form (or the one whose action matches) with its fields, overridden by `fields`. */
  async submit(page: Page, fields: Record<string, string> = {}, actionMatch?: RegExp): Promise<Page> {
    const forms = [...page.body.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)];
    const form = forms.find((f) => !actionMatch || actionMatch.test(attr(f[1]!, 'action') ?? '')) ?? forms[0];
    if (!form) throw new Error(`no form on ${page.url}: ${page.body.slice(0, 300)}`);
    const action = new URL(decodeEntities(attr(form[1]!, 'action') ?? page.url), page.url).href;
    const values: Record<string, string> = {};
    for (const input of form[2]!.matchAll(/<input\b([^>]*)>/gi)) {
      const name = attr(input[1]!, 'name');
      if (name) values[name] = decodeEntities(attr(input[1]!, 'value') ?? '');
    }
    return this.go(action, { method: 'POST', form: { ...values, ...fields } });
  }
}

function attr(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\b${name}\\s*=\\s*("([^"]*)"|'([^']*)')`, 'i').exec(tag);
  return m ? (m[2] ?? m[3]) : undefined;
}

function decodeEntities(s: string): string {
  return s.replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#x2F;/gi, '/');
}
