import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildSite, resolvePage } from '../../api/publish/fsml.js';
import { contentHash, matchesIfNoneMatch, strongEtag } from '../../api/publish/http-cache.js';
import { linkedPaths, parsePage, projectPathOf, renderPage } from '../../api/publish/markdown.js';
import { renderShell, scriptJson, type ShellInput } from '../../api/publish/page-shell.js';
import { codeSha256, parseSavedOutputs, savedOutputHtml } from '../../api/publish/saved-outputs.js';
import { contentSecurityPolicy } from '../../api/routes/publish.js';

const render = (md: string, outputs = new Map(), urlOf: (p: string) => string | null = () => null, pageFile = 'page.md') => renderPage(parsePage(md), { pageFile, outputs, urlOf });
const outputsOf = (cells: unknown[]) => parseSavedOutputs(JSON.stringify({ version: 1, cells }));

describe('markdown rendering', () => {
  test('tables, math (inline, display, fenced) and highlighted code', () => {
    const html = render('| a | b |\n|---|---|\n| 1 | 2 |\n\nInline $x^2$.\n\n$$\\int_0^1 x\\,dx$$\n\n```math\n\\frac{a}{b}\n```\n\n```python\nprint("hi")\n```\n');
    assert.match(html, /<table>[\s\S]*<td>1<\/td>/);
    assert.equal((html.match(/class="katex"/g) ?? []).length, 3, 'three formulas typeset by KaTeX');
    assert.match(html, /<annotation encoding="application\/x-tex">x\^2<\/annotation>/);
    assert.match(html, /<code class="hljs language-python"><span class="hljs-built_in">print<\/span>/);
  });

  test('mermaid blocks are left for the client; unknown languages are escaped, not highlighted', () => {
    const html = render('```mermaid\ngraph TD; A-->B\n```\n\n```nosuchlang\n<+>\n```\n');
    assert.match(html, /<pre class="mermaid">graph TD; A--&gt;B\n<\/pre>/);
    assert.match(html, /language-nosuchlang">&lt;\+&gt;/);
  });

  test('raw HTML is shown as text and javascript: links are not links: pages never run script', () => {
    const html = render('<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1)) <b onclick="x">b</b>\n');
    assert.doesNotMatch(html, /<script|<img|<b /);
    assert.doesNotMatch(html, /href="javascript/);
  });

  test('no editor controls: code blocks have no buttons', () => {
    const html = render('```python\nx = 1\n```\n');
    assert.doesNotMatch(html, /<button|contenteditable|class="[^"]*(run|copy)/i);
  });

  test('the title is the front matter title, else the first level-one heading', () => {
    assert.equal(parsePage('---\ntitle: From meta\n---\n# Heading\n').title, 'From meta');
    assert.equal(parsePage('Intro\n\n```\n# not a heading\n```\n\n# The `real` one\n').title, 'The real one');
    assert.equal(parsePage('no heading').title, null);
    assert.doesNotMatch(render('---\ntitle: x\n---\nbody\n'), /title: x/, 'front matter is not page text');
  });

  test('headings get unique ids', () => {
    assert.match(render('# Setup\n\n## Setup\n'), /<h1 id="setup">Setup<\/h1>\n<h2 id="setup-2">/);
  });

  test('relative links to pages and assets are rewritten; others left alone', () => {
    const md = '[a](../02-guide/01-setup.md#install) [b](01-intro.md) ![c](../_assets/d.svg) [e](https://x.test/y) [f](/abs) [g](#top) [h](../../../etc/passwd)';
    const paths = linkedPaths(parsePage(md), '01-part/page.md');
    assert.deepEqual(paths, ['02-guide/01-setup.md', '01-part/01-intro.md', '_assets/d.svg']);
    const urls: Record<string, string> = { '02-guide/01-setup.md': '/@u/p/guide/setup', '_assets/d.svg': '/@u/p/_assets/d.svg?v=abc' };
    const html = render(md, new Map(), (p) => urls[p] ?? null, '01-part/page.md');
    assert.match(html, /href="\/@u\/p\/guide\/setup#install"/);
    assert.match(html, /src="\/@u\/p\/_assets\/d.svg\?v=abc"/);
    assert.match(html, /href="01-intro.md"/, 'a link to no page stays as written');
    assert.match(html, /href="https:\/\/x.test\/y"/);
    assert.equal(projectPathOf('a.md', '../../x.md'), null, 'nothing resolves outside the project');
  });
});

describe('saved outputs', () => {
  const code = "print('hi')\n";

  test('each code cell is followed by its saved output; math, mermaid and output fences are not cells', () => {
    const outputs = outputsOf([
      { cell: 0, stdout: 'first\n' },
      { cell: 1, result: '42', stderr: 'warning\n' },
    ]);
    const html = render(`\`\`\`python\n${code}\`\`\`\n\n\`\`\`mermaid\ngraph TD\n\`\`\`\n\n\`\`\`math\nx\n\`\`\`\n\n\`\`\`r\n6 * 7\n\`\`\`\n`, outputs);
    assert.match(html, /data-cell="0">[\s\S]*?<pre class="output-text output-stdout">first\n<\/pre><\/div><\/figure>/);
    assert.match(html, /data-cell="1"><pre><code class="hljs language-r">[\s\S]*output-stderr">warning\n<\/pre><pre class="output-text output-result">42<\/pre>/);
  });

  test('an output saved for other code (code_sha256 differs) is not shown', () => {
    assert.equal(savedOutputHtml(outputsOf([{ cell: 0, code_sha256: codeSha256('old code'), stdout: 'stale' }]).get(0), code), '');
    assert.match(savedOutputHtml(outputsOf([{ cell: 0, code_sha256: codeSha256(code), stdout: 'fresh' }]).get(0), code), /fresh/);
  });

  test('images become <img> with data URLs; HTML outputs are shown as their text; text is escaped', () => {
    const png = Buffer.from('89504e470d0a1a0a', 'hex').toString('base64');
    const html = savedOutputHtml(
      outputsOf([{ cell: 0, displayData: [{ data: { 'image/png': png, 'text/plain': '<Figure>' } }, { data: { 'text/html': '<script>x()</script>', 'text/plain': 'DataFrame' } }, { data: { 'image/svg+xml': '<svg xmlns="http://www.w3.org/2000/svg"/>' } }], error: { type: 'ValueError', message: 'bad', traceback: ['\u001b[31mValueError\u001b[0m: <bad>'] } }]).get(0),
      code,
    );
    assert.match(html, new RegExp(`<img class="output-image" alt="&lt;Figure&gt;" src="data:image/png;base64,${png.replace(/[+/]/g, '\\$&')}">`));
    assert.match(html, /<pre class="output-text">DataFrame<\/pre>/);
    assert.doesNotMatch(html, /<script/);
    assert.match(html, /src="data:image\/svg\+xml;base64,PHN2Zy/);
    assert.match(html, /output-error">ValueError: &lt;bad&gt;<\/pre>/, 'ANSI colours stripped, text escaped');
  });

  test('malformed outputs files and entries are ignored, not fatal', () => {
    assert.equal(parseSavedOutputs('not json').size, 0);
    assert.equal(parseSavedOutputs('{"cells": "no"}').size, 0);
    assert.deepEqual([...outputsOf([{ cell: -1 }, { cell: 'x' }, null, { cell: 2, stdout: 5 }]).keys()], [2]);
  });
});

describe('the page around the content', () => {
  const site = buildSite({
    relPath: '',
    name: '',
    files: [{ name: 'index.md', relPath: 'index.md' }, { name: '01-intro.md', relPath: '01-intro.md' }],
    dirs: [{ relPath: '02-guide', name: '02-guide', files: [{ name: '01-setup.md', relPath: '02-guide/01-setup.md' }], dirs: [] }],
  });
  const input = (url: string[], extra: Partial<ShellInput> = {}): ShellInput => ({
    username: 'ada',
    projectBase: '/@ada/handbook',
    projectTitle: 'The Handbook',
    site,
    page: resolvePage(site, url)!,
    pageTitle: 'Setup',
    contentHtml: '<p>body</p>',
    visibility: 'public',
    canonicalUrl: 'https://markco.test/@ada/handbook/guide/setup',
    stylesheetUrl: '/_publish/abc/site.css',
    reader: null,
    ...extra,
  });

  test('nested navigation with only the current page marked, and previous/next links', () => {
    const html = renderShell(input(['guide', 'setup']));
    assert.match(html, /<li class="nav-folder"><a href="\/@ada\/handbook\/guide">Guide<\/a><ul><li class="nav-page"><a href="\/@ada\/handbook\/guide\/setup" aria-current="page">Setup<\/a>/);
    assert.equal((html.match(/aria-current/g) ?? []).length, 1);
    assert.match(html, /<a class="previous" rel="prev" href="\/@ada\/handbook\/intro">← Intro<\/a>/);
    assert.doesNotMatch(html, /rel="next"/, 'the last page has no next');
    assert.match(html, /<title>Setup · The Handbook<\/title>/);
    assert.match(html, /<link rel="canonical" href="https:\/\/markco.test\/@ada\/handbook\/guide\/setup">/);
    assert.doesNotMatch(html, /noindex|<script/);
  });

  test('the root index is marked in the header; its next page follows', () => {
    const html = renderShell(input([], { pageTitle: 'The Handbook' }));
    assert.match(html, /<a class="project" href="\/@ada\/handbook\/" aria-current="page">/);
    assert.match(html, /rel="next" href="\/@ada\/handbook\/intro"/);
    assert.match(html, /<title>The Handbook<\/title>/);
  });

  test('unlisted and private pages carry noindex', () => {
    for (const visibility of ['unlisted', 'private'] as const) assert.match(renderShell(input(['intro'], { visibility })), /<meta name="robots" content="noindex">/);
  });

  test('the reader script is loaded when configured, with the page source as JSON that cannot close its script element', () => {
    const html = renderShell(input(['intro'], { reader: { scriptUrl: '/static/mrmd-reader.iife.js', data: { markdown: '</script><script>alert(1)</script>' } } }));
    assert.match(html, /<script src="\/static\/mrmd-reader.iife.js" defer><\/script>/);
    assert.equal((html.match(/<\/script>/g) ?? []).length, 2, 'only the two script elements close');
    assert.equal(JSON.parse(scriptJson({ a: '</script>\u2028' })).a, '</script>\u2028');
  });
});

describe('content security policy of pages', () => {
  test('no script at all without a reader; with one, only its origin (or this site for a path)', () => {
    assert.match(contentSecurityPolicy(null), /script-src 'none'/);
    assert.match(contentSecurityPolicy(null), /default-src 'none'/);
    assert.match(contentSecurityPolicy('https://cdn.example.com/mrmd/reader.js'), /script-src https:\/\/cdn.example.com;/);
    assert.match(contentSecurityPolicy('/static/mrmd-reader.iife.js'), /script-src 'self';/);
  });
});

describe('HTTP validators', () => {
  test('strong ETags from the bytes; If-None-Match lists, weak forms and * match', () => {
    const etag = strongEtag(contentHash(Buffer.from('page')));
    assert.match(etag, /^"[A-Za-z0-9_-]{32}"$/);
    assert.equal(etag, strongEtag(contentHash('page')));
    assert.notEqual(etag, strongEtag(contentHash('page!')));
    assert.equal(matchesIfNoneMatch(etag, etag), true);
    assert.equal(matchesIfNoneMatch(`"other", W/${etag}`, etag), true);
    assert.equal(matchesIfNoneMatch('*', etag), true);
    assert.equal(matchesIfNoneMatch('"other"', etag), false);
    assert.equal(matchesIfNoneMatch(undefined, etag), false);
  });
});
