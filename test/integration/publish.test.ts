import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from 'undici';
import { waitFor } from '../../infra/dev/processes.js';
import { freshDatabase, testEnvironment, useHarness, type TestDatabase } from '../support/context.js';
import { edgeClient } from '../support/edge-client.js';
import { startTestEdge, type RunningEdge } from '../support/edge.js';
import { writeFile, writePublishFixture } from '../support/publish-fixture.js';

/**
 * Publishing through the real edge (issue 8): a user made through the store, their projects written under
 * the test's users directory as the editor would leave them, and every published address requested as a
 * browser or a CDN would, raw paths included.
 */
const h = useHarness();

interface Person {
  id: string;
  cookie: string;
}

describe('published projects at /@<username>/<project>/...', () => {
  let db: TestDatabase;
  let edge: RunningEdge;
  let raw: Client;
  let outside: string;
  let home: string;
  let ada: Person;
  let grace: Person;
  let eve: Person;
  const { call } = edgeClient(() => edge.url);

  /** A request with the path sent exactly as written (fetch and URL would resolve `..` and `%2e%2e` first). */
  const get = async (path: string, headers: Record<string, string> = {}) => {
    const res = await raw.request({ path, method: 'GET', headers });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  };
  const signIn = async (email: string): Promise<Person> => {
    const { user } = await db.store.users.ensureByEmail({ email });
    const session = await db.store.sessions.create(user.id);
    return { id: user.id, cookie: `markco_session=${session.token}` };
  };
  const h1 = (html: string) => /<h1[^>]*>([\s\S]*?)<\/h1>/.exec(html)?.[1] ?? null;

  before(async () => {
    db = await freshDatabase(h.state);
    edge = await startTestEdge(h.state, db, 'markco-publish-test');
    raw = new Client(edge.url);
    [ada, grace, eve] = await Promise.all([signIn('ada@example.test'), signIn('grace@example.test'), signIn('eve@example.test')]);
    outside = mkdtempSync(join(tmpdir(), 'markco-outside-'));
    home = join(testEnvironment(h.state).usersDir, ada.id);
    writePublishFixture(home, 'ada', outside);
    // Grace collaborates on Ada's private lab through an invite link.
    const { token } = await db.store.invites.create({ ownerId: ada.id, project: 'private-lab', role: 'viewer', expiresAt: new Date(Date.now() + 3_600_000), maxUses: null });
    assert.equal((await db.store.invites.join(token, grace.id)).kind, 'joined');
  });

  after(async () => {
    await raw?.close();
    await edge?.close();
    await db?.drop();
    if (home) rmSync(home, { recursive: true, force: true });
    if (outside) rmSync(outside, { recursive: true, force: true });
  });

  test('every URL resolves as FSML says: prefixes and extensions stripped, folders show their index or first page, any case', async () => {
    const expected: Record<string, string> = {
      '/@ada/handbook/': 'Welcome',
      '/@ada/handbook/intro': 'Introduction',
      '/@ada/handbook/INTRO': 'Introduction',
      '/@ada/handbook/guide': 'The guide',
      '/@ada/handbook/guide/setup': 'Setup',
      '/@ada/handbook/Guide/Setup/': 'Setup',
      '/@ada/handbook/guide/advanced': 'Tuning for speed',
      '/@ada/handbook/guide/advanced/tuning': 'Tuning for speed',
      '/@ada/handbook/reference': 'Reference',
      '/@ada/handbook/see-also': 'Reference',
      '/@ada/unlisted-notes/': 'Unlisted notes',
      '/@ada/short/': 'Short address',
    };
    for (const [path, title] of Object.entries(expected)) {
      const page = await get(path);
      assert.equal(page.status, 200, path);
      assert.match(String(page.headers['content-type']), /^text\/html; charset=utf-8/);
      const heading = h1(page.text) ?? /<title>([^<·]*)/.exec(page.text)?.[1]?.trim();
      assert.equal(heading, title, path);
    }
    const tuning = await get('/@ada/handbook/guide/advanced/tuning');
    assert.match(tuning.text, /<title>Tuning for speed · The Handbook<\/title>/, 'the front matter title; the last config block named the project');
    assert.match(tuning.text, /<link rel="canonical" href="http:\/\/localhost:8080\/@ada\/handbook\/guide\/advanced\/tuning">/);
  });

  test('the project address ends with a slash; a folder name redirects to the project\'s own `url`', async () => {
    const bare = await get('/@ada/handbook?ref=x');
    assert.equal(bare.status, 301);
    assert.equal(bare.headers.location, '/@ada/handbook/?ref=x');
    const byFolder = await get('/@ada/long-folder-name/');
    assert.equal(byFolder.status, 301);
    assert.equal(byFolder.headers.location, '/@ada/short/');
  });

  test('/@<userId>/... answers 301 to the username form', async () => {
    const byId = await get(`/@${ada.id}/handbook/guide/setup?x=1`);
    assert.equal(byId.status, 301);
    assert.equal(byId.headers.location, '/@ada/handbook/guide/setup?x=1');
    assert.equal((await get(`/@${ada.id.toUpperCase()}/handbook/`)).headers.location, '/@ada/handbook/');
  });

  test('drafts, dot files, mrmd.md, other files and symlinks out of the project are not found', async () => {
    for (const path of [
      '/@ada/handbook/drafts/secret-plan',
      '/@ada/handbook/_drafts/secret-plan',
      '/@ada/handbook/_drafts/secret-plan.md',
      '/@ada/handbook/hidden',
      '/@ada/handbook/.hidden.md',
      '/@ada/handbook/.hidden',
      '/@ada/handbook/mrmd',
      '/@ada/handbook/mrmd.md',
      '/@ada/handbook/.mrmd/outputs/01-intro.md.json',
      '/@ada/handbook/notes',
      '/@ada/handbook/notes.txt',
      '/@ada/handbook/01-intro',
      '/@ada/handbook/intro.md',
      '/@ada/handbook/stolen',
      '/@ada/handbook/elsewhere/page',
      '/@ada/handbook/_assets/.env',
      '/@ada/handbook/_assets/stolen.svg',
      '/@ada/handbook/_assets/config.txt',
      '/@ada/handbook/_assets/missing.png',
    ]) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(res.text, /Secret plan|Stolen|Elsewhere|SECRET=1|yaml config/, path);
    }
  });

  test('../ tricks, plain and encoded, never leave the project', async () => {
    // Each of these would reach a published page if anything resolved the dots before the edge read them.
    for (const path of [
      '/@ada/unlisted-notes/../handbook/intro',
      '/@ada/unlisted-notes/%2e%2e/handbook/intro',
      '/@ada/handbook/guide/%2E%2E/intro',
      '/@ada/handbook/../private-lab/',
      '/@ada/handbook/%2e%2e/private-lab/',
      '/@ada/handbook/%2E%2E/%2E%2E/%2E%2E/etc/passwd',
      '/@ada/handbook/_assets/../mrmd.md',
      '/@ada/handbook/_assets/%2e%2e/mrmd.md',
      '/@ada/handbook/_assets/%2e%2e%2fmrmd.md',
      '/@ada/handbook/_assets/..%5cmrmd.md',
      '/@ada/handbook/_assets/diagram.svg%00.png',
      '/@ada/handbook/guide%2f..%2f..%2fprivate-lab',
      '/@ada/%2e%2e/grace/',
      `/@ada/..%2f..%2f..%2f${ada.id}`,
    ]) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.doesNotMatch(res.text, /root:|Lab notebook|publish:/, path);
    }
    assert.equal((await get('/@ada/handbook/%zz')).status, 400, 'malformed percent-encoding is a bad request');
  });

  test('unpublished projects, unknown users and projects answer the same 404', async () => {
    const reference = await get('/@ada/no-such-project/');
    assert.equal(reference.status, 404);
    assert.equal(reference.headers['cache-control'], 'no-store');
    for (const path of ['/@ada/unpublished/', '/@nobody/handbook/', '/@ada', '/@ada/', '/@ada/private-lab/', '/@ada/private-lab/results']) {
      const res = await get(path);
      assert.equal(res.status, 404, path);
      assert.equal(res.text, reference.text, `${path}: the body tells nothing more than an unknown address`);
    }
  });

  test('private pages: 404 for strangers and the signed-out, 200 for the owner and a collaborator, never in a shared cache', async () => {
    assert.equal((await get('/@ada/private-lab/')).status, 404);
    assert.equal((await get('/@ada/private-lab/', { cookie: eve.cookie })).status, 404);
    const stranger = await get('/@ada/private-lab/results', { cookie: eve.cookie });
    assert.equal(stranger.text, (await get('/@ada/no-such-project/results')).text, 'a stranger cannot tell a private project from none');
    for (const who of [ada, grace]) {
      const res = await get('/@ada/private-lab/results', { cookie: who.cookie });
      assert.equal(res.status, 200, who === ada ? 'owner' : 'collaborator');
      assert.equal(h1(res.text), 'Results');
      assert.equal(res.headers['cache-control'], 'private, no-cache');
      assert.equal(res.headers.vary, 'Cookie');
      assert.equal(res.headers['x-robots-tag'], 'noindex');
      assert.match(res.text, /<meta name="robots" content="noindex">/);
    }
    // The membership ends: so does access (grants are cached for two seconds at most).
    await db.pool.query('UPDATE memberships SET revoked_at = now() WHERE member_id = $1', [grace.id]);
    await waitFor('the revoked collaborator to be refused', async () => {
      const res = await get('/@ada/private-lab/', { cookie: grace.cookie });
      if (res.status !== 404) throw new Error(`still ${res.status}`);
    }, { timeoutMs: 10_000, intervalMs: 200 });
  });

  test('unlisted pages are served to anyone with the link, marked noindex, and listed nowhere', async () => {
    const res = await get('/@ada/unlisted-notes/');
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-robots-tag'], 'noindex');
    assert.match(res.text, /<meta name="robots" content="noindex">/);
    assert.match(String(res.headers['cache-control']), /^public, max-age=60, must-revalidate$/);
    const publicPage = await get('/@ada/handbook/');
    assert.equal(publicPage.headers['x-robots-tag'], undefined);
    assert.doesNotMatch(publicPage.text, /noindex/);
    assert.equal((await get('/@ada/unlisted-notes/sitemap.xml')).status, 404);
    assert.equal((await get('/@ada/private-lab/sitemap.xml', { cookie: ada.cookie })).status, 404);
  });

  test('sitemaps list every page of public projects only', async () => {
    const project = await get('/@ada/handbook/sitemap.xml');
    assert.equal(project.status, 200);
    assert.match(String(project.headers['content-type']), /^application\/xml/);
    const locs = [...project.text.matchAll(/<loc>([^<]+)<\/loc>/g)].map((m) => m[1]);
    assert.deepEqual(locs, ['/', '/intro', '/guide', '/guide/setup', '/guide/advanced/tuning', '/reference', '/see-also'].map((p) => `http://localhost:8080/@ada/handbook${p}`));
    const user = await get('/@ada/sitemap.xml');
    assert.equal(user.status, 200);
    assert.match(user.text, /@ada\/handbook\/intro/);
    assert.match(user.text, /@ada\/short\//);
    assert.doesNotMatch(user.text, /unlisted-notes|private-lab|unpublished/);
  });

  test('pages are rendered on the server: math, tables, highlighted code, its saved output, mermaid for the client, no raw HTML, no editor buttons', async () => {
    const page = (await get('/@ada/handbook/intro')).text;
    assert.match(page, /class="katex"/);
    assert.match(page, /<table>/);
    assert.match(page, /<figure class="cell" data-cell="0"><pre><code class="hljs language-python"><span class="hljs-keyword">import<\/span> math[\s\S]*?<div class="cell-output"[^>]*><pre class="output-text output-stdout">area 12.57\n<\/pre><\/div><\/figure>/);
    assert.match(page, /<pre class="mermaid">graph TD; A--&gt;B/);
    assert.match(page, /&lt;script&gt;document.title/);
    assert.doesNotMatch(page, /<button|<script(?! type="application\/json")/);
    assert.match(page, /<a href="\/@ada\/handbook\/intro" aria-current="page">Intro<\/a>/);
    assert.match(page, /rel="prev" href="\/@ada\/handbook\/">← The Handbook/);
    assert.match(page, /rel="next" href="\/@ada\/handbook\/guide">Guide →/);
    const index = (await get('/@ada/handbook/')).text;
    assert.match(index, /href="\/@ada\/handbook\/guide\/setup#install"/, 'links between pages follow the published URLs');
    assert.match(index, /src="\/@ada\/handbook\/_assets\/diagram.svg\?v=[A-Za-z0-9_-]{32}"/, 'assets are linked by content hash');
  });

  test('CDN-ready pages: strong ETag, 304 on If-None-Match, short max-age with revalidation, a strict CSP', async () => {
    const first = await get('/@ada/handbook/guide/setup');
    const etag = String(first.headers.etag);
    assert.match(etag, /^"[A-Za-z0-9_-]{32}"$/);
    assert.equal(first.headers['cache-control'], 'public, max-age=60, must-revalidate');
    assert.match(String(first.headers['content-security-policy']), /script-src 'none'/);
    const again = await get('/@ada/handbook/guide/setup');
    assert.equal(again.headers.etag, etag, 'the same bytes, the same tag');
    assert.equal(again.text, first.text);
    const revalidated = await get('/@ada/handbook/guide/setup', { 'if-none-match': etag });
    assert.equal(revalidated.status, 304);
    assert.equal(revalidated.text, '');
    assert.equal(revalidated.headers.etag, etag);
    assert.equal((await get('/@ada/handbook/guide/setup', { 'if-none-match': '"stale"' })).status, 200);
    const head = await raw.request({ path: '/@ada/handbook/guide/setup', method: 'HEAD' });
    await head.body.dump();
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers.etag, etag);
  });

  test('_assets: correct types, immutable only at a content-addressed URL, else revalidated', async () => {
    const index = (await get('/@ada/handbook/')).text;
    const versioned = /src="(\/@ada\/handbook\/_assets\/diagram.svg\?v=[^"]+)"/.exec(index)![1]!;
    const svg = await get(versioned);
    assert.equal(svg.status, 200);
    assert.equal(svg.headers['content-type'], 'image/svg+xml');
    assert.equal(svg.headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.equal(svg.headers['x-content-type-options'], 'nosniff');
    assert.match(String(svg.headers['content-security-policy']), /sandbox/, 'an asset opened directly cannot run script on this origin');
    assert.match(svg.text, /^<svg/);
    const plain = await get('/@ada/handbook/_assets/diagram.svg');
    assert.equal(plain.headers['cache-control'], 'public, max-age=0, must-revalidate');
    assert.equal(plain.headers.etag, svg.headers.etag);
    assert.equal((await get('/@ada/handbook/_assets/diagram.svg', { 'if-none-match': String(plain.headers.etag) })).status, 304);
    assert.equal((await get('/@ada/handbook/_assets/diagram.svg?v=not-the-hash')).headers['cache-control'], 'public, max-age=0, must-revalidate');
    const csv = await get('/@ada/handbook/_assets/data.csv');
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8');
    assert.equal(csv.text, 'x,y\n1,2\n');
    const privateAsset = await get('/@ada/private-lab/_assets/none.png', { cookie: ada.cookie });
    assert.equal(privateAsset.status, 404);
  });

  test('the site\'s stylesheet and KaTeX fonts are content-addressed and immutable', async () => {
    const index = (await get('/@ada/handbook/')).text;
    const css = /<link rel="stylesheet" href="([^"]+)">/.exec(index)![1]!;
    const sheet = await get(css);
    assert.equal(sheet.status, 200);
    assert.equal(sheet.headers['cache-control'], 'public, max-age=31536000, immutable');
    const font = /url\((fonts\/KaTeX_Main-Regular\.woff2)\)/.exec(sheet.text)![1]!;
    const fontRes = await get(css.replace('site.css', font));
    assert.equal(fontRes.status, 200);
    assert.equal(fontRes.headers['content-type'], 'font/woff2');
    assert.equal((await get(css.replace(/\/_publish\/[^/]+\//, '/_publish/0123456789abcdef/'))).status, 404);
  });

  test('the render cache follows the files: edits, new pages, outputs and the config take effect at once', async () => {
    const before = await get('/@ada/handbook/reference');
    appendFileSync(join(home, 'Projects', 'handbook', '03-reference.md'), '\nA new paragraph.\n');
    const edited = await waitFor('the edit to show', async () => {
      const res = await get('/@ada/handbook/reference');
      if (!res.text.includes('A new paragraph.')) throw new Error('still the old page');
      return res;
    }, { timeoutMs: 5000, intervalMs: 50 });
    assert.notEqual(edited.headers.etag, before.headers.etag);
    assert.equal((await get('/@ada/handbook/reference', { 'if-none-match': String(before.headers.etag) })).status, 200, 'the old tag no longer validates');

    writeFile(join(home, 'Projects', 'handbook', '02-guide', '03-faq.md'), '# FAQ\n');
    await waitFor('the new page to be in the navigation', async () => {
      const res = await get('/@ada/handbook/guide/setup');
      if (!res.text.includes('href="/@ada/handbook/guide/faq"')) throw new Error('not yet');
    }, { timeoutMs: 5000, intervalMs: 50 });
    assert.equal((await get('/@ada/handbook/guide/faq')).status, 200);

    writeFileSync(join(home, 'Projects', 'handbook', '.mrmd', 'outputs', '01-intro.md.json'), JSON.stringify({ version: 1, cells: [{ cell: 0, stdout: 'area 99\n' }] }));
    await waitFor('the new output to show', async () => {
      if (!(await get('/@ada/handbook/intro')).text.includes('area 99')) throw new Error('not yet');
    }, { timeoutMs: 5000, intervalMs: 50 });

    writeFile(join(home, 'Projects', 'unlisted-notes', 'mrmd.md'), '```yaml config\npublish:\n  visibility: private\n```\n');
    await waitFor('the project to turn private', async () => {
      const res = await get('/@ada/unlisted-notes/');
      if (res.status !== 404) throw new Error(`still ${res.status}`);
    }, { timeoutMs: 5000, intervalMs: 50 });
    assert.equal((await get('/@ada/unlisted-notes/', { cookie: ada.cookie })).status, 200);

    rmSync(join(home, 'Projects', 'short-lived'), { recursive: true, force: true });
    writeFile(join(home, 'Projects', 'short-lived', 'index.md'), '# New project\n');
    writeFile(join(home, 'Projects', 'short-lived', 'mrmd.md'), '```yaml config\npublish: {}\n```\n');
    await waitFor('a new project to be published', async () => {
      const res = await get('/@ada/short-lived/');
      if (res.status !== 200) throw new Error(`still ${res.status}`);
    }, { timeoutMs: 5000, intervalMs: 50 });
  });

  test('GET /api/published tells the owner where each project is published and what its config got wrong', async () => {
    writeFile(join(home, 'Projects', 'typo', 'mrmd.md'), '```yaml config\npublish:\n  visibility: everyone\n  domain: "not a domain"\n```\n');
    assert.equal((await call('/api/published')).status, 401);
    const res = await waitFor('the new project to be listed', async () => {
      const r = await call('/api/published', { session: ada });
      if (!r.json.projects.some((p: { project: string }) => p.project === 'typo')) throw new Error('not yet');
      return r;
    }, { timeoutMs: 5000, intervalMs: 50 });
    const byName = Object.fromEntries(res.json.projects.map((p: { project: string }) => [p.project, p]));
    assert.deepEqual(byName.handbook, { project: 'handbook', published: true, url: 'http://localhost:8080/@ada/handbook/', visibility: 'public', domain: 'handbook.example.com', problems: [] });
    assert.equal(byName['long-folder-name'].url, 'http://localhost:8080/@ada/short/');
    assert.equal(byName.unpublished.published, false);
    assert.equal(byName.typo.visibility, 'private');
    assert.equal(byName.typo.problems.length, 2);
    assert.equal((await call('/api/published', { session: eve })).json.projects.length, 0, 'only one\'s own projects');
  });
});
