import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DirectoryWatchers, LruCache } from '../../api/publish/directory-watchers.js';
import { buildSite, resolvePage } from '../../api/publish/fsml.js';
import { listDirWithin, openFileWithin, readFileWithin, scanProject } from '../../api/publish/project-files.js';
import { writePublishFixture } from '../support/publish-fixture.js';

/** Reading a project on disk never leaves it, whatever its symlinks say; watches and caches stay bounded. */
let root: string;
let project: string;
let outside: string;

before(() => {
  root = realpathSync(mkdtempSync(join(tmpdir(), 'markco-publish-files-')));
  outside = join(root, 'outside');
  writePublishFixture(join(root, 'home'), 'ada', outside);
  project = join(root, 'home', 'Projects', 'handbook');
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('files within a project', () => {
  test('a file inside opens, also through a symlink that stays inside', async () => {
    const direct = await readFileWithin(project, join(project, '03-reference.md'), 1024);
    const linked = await readFileWithin(project, join(project, '06-see-also.md'), 1024);
    assert.ok(direct && 'text' in direct && linked && 'text' in linked);
    assert.equal(linked.text, direct.text);
  });

  test('symlinks out of the project are refused: files, folders, and links from _assets back to the config', async () => {
    assert.equal(await openFileWithin(project, join(project, '04-stolen.md')), null);
    assert.equal(await listDirWithin(project, join(project, '05-elsewhere')), null);
    const assets = join(project, '_assets');
    assert.equal(await openFileWithin(assets, join(assets, 'stolen.svg')), null);
    assert.equal(await openFileWithin(assets, join(assets, 'config.txt')), null, 'inside the project but outside _assets');
    assert.equal(await openFileWithin(project, '/etc/passwd'), null);
  });

  test('FIFOs and folders are not files; opening one does not block', async () => {
    const fifo = join(project, 'pipe.md');
    execFileSync('mkfifo', [fifo]);
    try {
      assert.equal(await openFileWithin(project, fifo), null);
      assert.equal(await openFileWithin(project, join(project, '02-guide')), null);
    } finally {
      rmSync(fifo);
    }
  });

  test('a file larger than the limit is reported, not read', async () => {
    const big = await readFileWithin(project, join(project, '01-intro.md'), 10);
    assert.ok(big && 'tooLarge' in big);
  });

  test('the scan lists the publishable tree only and every folder pages depend on', async () => {
    const scan = await scanProject(project);
    const site = buildSite(scan.listing);
    assert.deepEqual(site.pages.map((p) => p.file).sort(), ['01-intro.md', '02-guide/01-setup.md', '02-guide/02_advanced/01-tuning.qmd', '02-guide/index.md', '03-reference.md', '06-see-also.md', 'index.md']);
    assert.equal(resolvePage(site, ['stolen']), null);
    assert.equal(resolvePage(site, ['elsewhere']), null);
    const watched = scan.watchDirs.map((d) => d.slice(project.length) || '/').sort();
    assert.deepEqual(watched, ['/', '/.mrmd', '/.mrmd/outputs', '/02-guide', '/02-guide/02_advanced', '/_assets']);
    assert.equal(scan.truncated, false);
  });

  test('a symlink loop is listed once', async () => {
    const loopy = join(root, 'loopy');
    mkdirSync(join(loopy, 'a'), { recursive: true });
    writeFileSync(join(loopy, 'a', 'page.md'), '# Page\n');
    symlinkSync('..', join(loopy, 'a', 'up'));
    const scan = await scanProject(loopy);
    assert.deepEqual(buildSite(scan.listing).pages.map((p) => p.file), ['a/page.md']);
  });
});

describe('watches and caches', () => {
  test('one watch per folder, shared; a change reaches every listener; the last to leave closes it', async () => {
    const watchers = new DirectoryWatchers(10);
    const dir = mkdtempSync(join(root, 'watched-'));
    const heard: string[] = [];
    const stopA = watchers.subscribe(dir, (name) => heard.push(`a:${name}`))!;
    const stopB = watchers.subscribe(dir, (name) => heard.push(`b:${name}`))!;
    assert.equal(watchers.size, 1);
    writeFileSync(join(dir, 'x.md'), 'x');
    const deadline = Date.now() + 5000;
    while (!(heard.includes('a:x.md') && heard.includes('b:x.md')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(heard.includes('a:x.md') && heard.includes('b:x.md'), heard.join(' '));
    stopA();
    assert.equal(watchers.size, 1);
    stopB();
    assert.equal(watchers.size, 0);
    watchers.closeAll();
  });

  test('past the limit, or for a missing folder, subscribe says it cannot watch', () => {
    const watchers = new DirectoryWatchers(1);
    assert.ok(watchers.subscribe(project, () => undefined));
    assert.equal(watchers.subscribe(join(project, '02-guide'), () => undefined), null);
    assert.equal(new DirectoryWatchers(5).subscribe(join(root, 'missing'), () => undefined), null);
    watchers.closeAll();
  });

  test('the LRU keeps within its budget, evicting the least recently used', () => {
    const evicted: string[] = [];
    const cache = new LruCache<string, Buffer>(100, (b) => b.length, (k) => evicted.push(k));
    cache.set('a', Buffer.alloc(40));
    cache.set('b', Buffer.alloc(40));
    cache.get('a');
    cache.set('c', Buffer.alloc(40));
    assert.deepEqual(evicted, ['b']);
    assert.equal(cache.cost, 80);
    cache.set('huge', Buffer.alloc(101));
    assert.equal(cache.get('huge'), undefined, 'bigger than the whole budget: not kept');
    const same = Buffer.alloc(10);
    cache.set('d', same);
    cache.set('d', same);
    assert.equal(evicted.includes('d'), false, 'storing the same value again is not an eviction');
  });
});
