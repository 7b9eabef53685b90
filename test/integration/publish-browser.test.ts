import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { repoRoot } from '../../lib/paths.js';
import { launchChromium } from '../support/chromium.js';
import { freshDatabase, testEnvironment, useHarness, type TestDatabase } from '../support/context.js';
import { startTestEdge, type RunningEdge } from '../support/edge.js';
import { writePublishFixture } from '../support/publish-fixture.js';

/**
 * A published page as a reader's browser shows it (issue 8): headless Chromium against the real edge.
 * The screenshot is kept for people to look at: test-artifacts/publish/ (git-ignored).
 */
const h = useHarness();

// What the callbacks given to page.evaluate use in the browser (node's types have no DOM).
declare const document: { fonts: { ready: Promise<unknown>; check(font: string): boolean } };
declare function getComputedStyle(element: unknown): { color: string; position: string; backgroundColor: string; fontWeight: string };
const publishArtifactsDir = join(repoRoot, 'test-artifacts', 'publish');

describe('a published page in Chromium', () => {
  let db: TestDatabase;
  let edge: RunningEdge;
  let browser: Browser;
  let home: string;
  let outside: string;
  let page: Page;
  const problems: string[] = [];

  before(async () => {
    db = await freshDatabase(h.state);
    edge = await startTestEdge(h.state, db, 'markco-publish-browser-test');
    const { user } = await db.store.users.ensureByEmail({ email: 'lin@example.test' });
    home = join(testEnvironment(h.state).usersDir, user.id);
    outside = mkdtempSync(join(tmpdir(), 'markco-outside-'));
    writePublishFixture(home, user.username, outside);
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // Anything the page's CSP blocks, or any failing request (the favicon included), shows up here.
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('requestfailed', (r) => problems.push(`${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`${r.url()}: ${r.status()}`);
    });
  });

  after(async () => {
    await browser?.close();
    await edge?.close();
    await db?.drop();
    if (home) rmSync(home, { recursive: true, force: true });
    if (outside) rmSync(outside, { recursive: true, force: true });
  });

  test('math, highlighted code and its saved output are rendered, and no editor button is visible', async () => {
    await page.goto(`${edge.url}/@lin/handbook/intro`, { waitUntil: 'networkidle' });
    await page.evaluate(() => document.fonts.ready);

    const math = page.locator('.katex-display').first();
    assert.ok(await math.isVisible(), 'display math is shown');
    assert.ok(((await math.boundingBox())?.height ?? 0) > 20, 'display math is typeset, not a line of TeX');
    assert.equal(await page.evaluate(() => document.fonts.check('20px KaTeX_Main')), true, "KaTeX's fonts loaded");
    assert.equal(await page.locator('.katex-mathml').first().evaluate((e) => getComputedStyle(e).position), 'absolute', "KaTeX's stylesheet applies (MathML kept for screen readers only)");

    const keyword = page.locator('.cell code .hljs-keyword').first();
    assert.equal(await keyword.textContent(), 'import');
    const [keywordColour, textColour] = await Promise.all([keyword.evaluate((e) => getComputedStyle(e).color), page.locator('.page-content p').first().evaluate((e) => getComputedStyle(e).color)]);
    assert.notEqual(keywordColour, textColour, 'code is highlighted');

    const code = await page.locator('.cell pre').first().boundingBox();
    const output = page.locator('.cell .cell-output').first();
    assert.ok(await output.isVisible());
    assert.equal((await output.textContent())?.trim(), 'area 12.57');
    assert.ok(((await output.boundingBox())?.y ?? 0) >= code!.y + code!.height, 'the output is shown under its cell');

    assert.equal(await page.locator('table td').first().textContent(), 'circle');
    assert.equal(await page.locator('pre.mermaid').count(), 1, 'the mermaid block is left for a client script');
    assert.equal(await page.locator('button:visible, [role="button"]:visible, input:visible').count(), 0, 'no run, copy or other editor button');
    assert.notEqual(await page.title(), 'owned', 'raw HTML in the markdown did not run');
    assert.ok((await page.title()).startsWith('Introduction'));

    mkdirSync(publishArtifactsDir, { recursive: true });
    const shot = join(publishArtifactsDir, 'intro.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, `a screenshot was kept at ${shot}`);
  });

  test('the navigation is nested and marks the active page three levels down', async () => {
    await page.goto(`${edge.url}/@lin/handbook/guide/advanced/tuning`, { waitUntil: 'networkidle' });
    const active = page.locator('.site-nav a[aria-current="page"]');
    assert.equal(await active.count(), 1);
    assert.equal(await active.textContent(), 'Tuning');
    assert.ok(await active.isVisible());
    assert.equal(await page.locator('.site-nav ul ul ul a[aria-current="page"]').count(), 1, 'inside Guide, inside Advanced');
    const [activeStyle, otherStyle] = await Promise.all([
      active.evaluate((e) => `${getComputedStyle(e).backgroundColor} ${getComputedStyle(e).fontWeight}`),
      page.locator('.site-nav a:not([aria-current])').first().evaluate((e) => `${getComputedStyle(e).backgroundColor} ${getComputedStyle(e).fontWeight}`),
    ]);
    assert.notEqual(activeStyle, otherStyle, 'the active page looks different');
    const indent = async (text: string) => (await page.locator('.site-nav a', { hasText: text }).first().boundingBox())!.x;
    assert.ok((await indent('Tuning')) > (await indent('Advanced')) && (await indent('Advanced')) > (await indent('Guide')), 'deeper pages are indented');
    assert.ok(await page.locator('.katex').first().isVisible(), 'inline math on this page too');
    await page.screenshot({ path: join(publishArtifactsDir, 'nested-nav.png') });

    await page.locator('a[rel="next"]').click();
    await page.waitForURL(/\/@lin\/handbook\/reference$/);
    assert.equal(await page.locator('.site-nav a[aria-current="page"]').textContent(), 'Reference', 'next goes on in reading order');
  });

  test('the pages loaded without a blocked resource or a script error', () => {
    assert.deepEqual(problems, []);
  });

  test('without chromium, a browser test fails and says how to get it (it never skips)', async () => {
    await assert.rejects(launchChromium({ pathEnv: '/nonexistent' }), /missing prerequisite: chromium: not found on PATH; run infra\/dev\/bootstrap\.sh/);
  });
});
