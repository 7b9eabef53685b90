import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { request } from 'undici';
import { waitFor } from '../../infra/dev/processes.js';
import { repoRoot } from '../../lib/paths.js';
import { launchChromium } from '../support/chromium.js';
import { testAdminToken } from '../support/edge.js';
import { monitoredStack } from '../support/monitored-stack.js';

/**
 * The platform in a real browser (issue 9): a user signs in, waits on the dashboard, opens the editor
 * through `/u/<id>/` and sees the runtime answer; an operator finds that user's migration in the
 * Temporal Web UI by its search attributes, with its activities listed. Screenshots are kept in
 * test-artifacts/browser/ (git-ignored).
 */
const artifacts = join(repoRoot, 'test-artifacts', 'browser');

// What page.evaluate callbacks use in the browser (node's types have no DOM).
declare function fetch(url: string, init: { method: string; headers: Record<string, string>; body: string }): Promise<{ status: number; json(): Promise<{ result: string | null }> }>;

describe('in Chromium: sign-in to editor, and the Temporal Web UI', () => {
  const { s, runtimeOf } = monitoredStack({ intervalMs: 60_000, idleAfterMs: 3_600_000, rescanMs: 60_000 }, { cloud: true });
  let browser: Browser;
  let page: Page;
  let userId = '';

  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    browser = await launchChromium();
    page = await browser.newPage();
  });

  after(async () => {
    await browser?.close();
  });

  test('sign in, the dashboard comes ready, the editor opens through /u/<id>/ and the runtime answers', async () => {
    await page.goto(`${s.edge.url}/login`);
    await page.fill('#dev input[name=email]', 'browser@example.test');
    await Promise.all([page.waitForURL(/\/dashboard$/), page.click('#dev button')]);
    // The dashboard reloads itself every 2 s until the runtime and the editor run.
    const open = page.locator('a.button', { hasText: 'Open editor' });
    await open.waitFor({ timeout: 120_000 });
    await page.screenshot({ path: join(artifacts, 'dashboard.png') });
    const href = (await open.getAttribute('href'))!;
    userId = /^\/u\/([0-9a-f-]{36})\/$/.exec(href)![1]!;
    s.users.push({ id: userId, cookie: '' });
    await Promise.all([page.waitForURL(new RegExp(`/u/${userId}/$`)), open.click()]);
    assert.match(await page.title(), /mrmd/);
    // The editor's own page script opens its events WebSocket through the edge.
    await page.locator('#events li').first().waitFor({ timeout: 30_000 });
    const runtime = await runtimeOf(userId);
    const answer = await page.evaluate(async (port) => {
      const r = await fetch(`proxy/${port}/mrp/v1/execute`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: '6 * 7' }) });
      return { status: r.status, result: (await r.json()).result };
    }, runtime.port);
    assert.deepEqual(answer, { status: 200, result: '42' }, 'the runtime answered through the editor, from the page');
    await page.screenshot({ path: join(artifacts, 'editor.png') });
  });

  test("the Temporal Web UI finds the user's migration by its search attributes and lists its activities", async () => {
    assert.ok(userId, 'the first test signed a user in');
    const migrated = await request(`${s.edge.url}/api/runtimes/${userId}/migrate?wait=240`, {
      method: 'POST',
      headers: { authorization: `Bearer ${testAdminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target_type: 't3.small' }),
      headersTimeout: 300_000,
      bodyTimeout: 300_000,
    });
    const body = (await migrated.body.json()) as { status: string };
    assert.equal(body.status, 'completed', JSON.stringify(body));
    const query = `MarkcoUserId="${userId}" AND MarkcoOperation="migrate"`;
    const p = await browser.newPage();
    await waitFor('the migration in the Web UI list', async () => {
      await p.goto(`${s.h.state.temporal.uiUrl}/namespaces/${s.h.state.temporal.namespace}/workflows?query=${encodeURIComponent(query)}`);
      await p.locator(`text=user/${userId}/migrate`).first().waitFor({ timeout: 10_000 });
    }, { timeoutMs: 90_000, intervalMs: 1000 });
    await p.screenshot({ path: join(artifacts, 'temporal-ui-list.png') });
    await p.locator(`text=user/${userId}/migrate`).first().click();
    await p.locator('text=Event History').first().click();
    await p.locator('text=checkpointIntoTarget').first().waitFor({ timeout: 60_000 });
    await p.screenshot({ path: join(artifacts, 'temporal-ui-migration.png'), fullPage: true });
    // The history is a virtualised list (newest events first): some of the migration's activities are on screen.
    const listed = await p.content();
    const activities = ['beginMigration', 'recordMigrationStep', 'prepareTarget', 'syncHome', 'checkpointIntoTarget', 'waitForRuntime', 'readyEditor', 'completeMigration', 'removeSourceRuntime'];
    const shown = activities.filter((a) => listed.includes(a));
    assert.ok(shown.includes('checkpointIntoTarget') && shown.length >= 3, `the migration's activities are listed (shown: ${shown.join(', ')})`);
    await p.close();
  });
});
