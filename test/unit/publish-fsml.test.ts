import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { buildSite, compareNames, isPageFile, neighbours, orderOf, parsePublishPath, resolvePage, slugOf, titleOf, type DirListing, type NavNode } from '../../api/publish/fsml.js';

/** A listing from paths, as project-files.ts would read it (folders implied by the paths). */
function listing(paths: string[]): DirListing {
  const root: DirListing = { relPath: '', name: '', files: [], dirs: [] };
  for (const path of paths) {
    const parts = path.split('/');
    let dir = root;
    parts.slice(0, -1).forEach((name, i) => {
      const relPath = parts.slice(0, i + 1).join('/');
      let next = dir.dirs.find((d) => d.name === name);
      if (!next) {
        next = { relPath, name, files: [], dirs: [] };
        dir.dirs.push(next);
      }
      dir = next;
    });
    if (parts[parts.length - 1]) dir.files.push({ name: parts[parts.length - 1]!, relPath: path });
  }
  return root;
}

const urls = (nodes: NavNode[]): unknown[] => nodes.map((n) => (n.children.length ? [n.url, urls(n.children)] : n.url));
const fileAt = (paths: string[], url: string) => {
  const site = buildSite(listing(paths));
  return resolvePage(site, url === '' ? [] : url.split('/'))?.file ?? null;
};

describe('FSML names', () => {
  test('numeric prefixes (dash or underscore) and .md/.qmd are stripped from URLs', () => {
    assert.equal(slugOf('01-intro.md'), 'intro');
    assert.equal(slugOf('02_getting-started'), 'getting-started');
    assert.equal(slugOf('10-analysis.qmd'), 'analysis');
    assert.equal(slugOf('README.MD'), 'README');
    assert.equal(slugOf('2024-report.md'), 'report', 'a leading number followed by a dash is an order, as in mrmd');
    assert.equal(orderOf('02_x'), 2);
    assert.equal(orderOf('x'), null);
    assert.equal(titleOf('01-getting-started.md'), 'Getting Started');
    assert.equal(titleOf('my_notes.qmd'), 'My Notes');
  });

  test('drafts, dot files, mrmd.md and other files are never pages', () => {
    for (const name of ['_draft.md', '.hidden.md', 'mrmd.md', 'MRMD.md', 'notes.txt', 'image.png']) assert.equal(isPageFile(name), false, name);
    for (const name of ['a.md', '01-a.qmd', 'Index.MD']) assert.equal(isPageFile(name), true, name);
  });

  test('numbered entries first in numeric order, then the rest in natural order', () => {
    const sorted = ['b.md', '10-ten.md', 'a.md', '2-two', '01-one.md', 'file10.md', 'file9.md'].sort(compareNames);
    assert.deepEqual(sorted, ['01-one.md', '2-two', '10-ten.md', 'a.md', 'b.md', 'file9.md', 'file10.md']);
  });
});

describe('building a site', () => {
  const project = [
    'mrmd.md',
    'index.md',
    '01-intro.md',
    '02-guide/index.md',
    '02-guide/01-setup.md',
    '02-guide/02_advanced/01-tuning.qmd',
    '02-guide/02_advanced/02-profiling.md',
    '03-reference.md',
    '_drafts/plan.md',
    '.git/HEAD.md',
    '.hidden.md',
    'notes.txt',
    '04-empty/data.csv',
    'appendix.md',
  ];

  test('the navigation is nested, ordered, and leaves out drafts, dot files, config and folders without pages', () => {
    const site = buildSite(listing(project));
    assert.deepEqual(urls(site.nav), ['intro', ['guide', ['guide/setup', ['guide/advanced', ['guide/advanced/tuning', 'guide/advanced/profiling']]]], 'reference', 'appendix']);
    const guide = site.nav[1]!;
    assert.equal(guide.kind, 'folder');
    assert.equal(guide.title, 'Guide');
    assert.equal(guide.page?.file, '02-guide/index.md', 'a folder with an index opens it');
    assert.equal(guide.children[1]!.page, null, 'a folder without an index has no page of its own');
  });

  test('every URL resolves as FSML says, case-insensitively', () => {
    const cases: Record<string, string | null> = {
      '': 'index.md',
      intro: '01-intro.md',
      INTRO: '01-intro.md',
      guide: '02-guide/index.md',
      'guide/setup': '02-guide/01-setup.md',
      'Guide/Advanced': '02-guide/02_advanced/01-tuning.qmd',
      'guide/advanced/profiling': '02-guide/02_advanced/02-profiling.md',
      reference: '03-reference.md',
      appendix: 'appendix.md',
      '01-intro': null,
      'intro.md': null,
      drafts: null,
      'drafts/plan': null,
      '_drafts/plan': null,
      hidden: null,
      mrmd: null,
      notes: null,
      empty: null,
      'intro/extra': null,
    };
    for (const [url, file] of Object.entries(cases)) assert.equal(fileAt(project, url), file, `/${url}`);
  });

  test('without an index, the root and folders show their first page', () => {
    assert.equal(fileAt(['02-b.md', '01-a/02-y.md', '01-a/01-x.md'], ''), '01-a/01-x.md');
    assert.equal(fileAt(['02-b.md', '01-a/02-y.md', '01-a/01-x.md'], 'a'), '01-a/01-x.md');
    assert.equal(buildSite(listing(['_drafts/a.md', 'notes.txt'])).root, null, 'a project without pages has no root');
  });

  test('a file wins over a folder of the same slug; of two files the first in order wins', () => {
    assert.equal(fileAt(['guide.md', 'guide/setup.md'], 'guide'), 'guide.md');
    assert.equal(fileAt(['guide.md', 'guide/setup.md'], 'guide/setup'), 'guide/setup.md');
    assert.equal(fileAt(['02-intro.md', '01-intro.md'], 'intro'), '01-intro.md');
  });

  test('previous and next follow reading order: a folder index before its pages', () => {
    const site = buildSite(listing(project));
    assert.deepEqual(
      site.pages.map((p) => p.url),
      ['', 'intro', 'guide', 'guide/setup', 'guide/advanced/tuning', 'guide/advanced/profiling', 'reference', 'appendix'],
    );
    const setup = resolvePage(site, ['guide', 'setup'])!;
    assert.equal(neighbours(site, setup).previous?.url, 'guide');
    assert.equal(neighbours(site, setup).next?.url, 'guide/advanced/tuning');
    assert.equal(neighbours(site, site.root!).previous, null);
  });

  test('slugs with spaces or accents are encoded in URLs and matched decoded', () => {
    const site = buildSite(listing(['01-état des lieux.md']));
    assert.equal(site.pages[0]!.url, '%C3%A9tat%20des%20lieux');
    assert.equal(resolvePage(site, ['État des lieux'])?.file, '01-état des lieux.md');
  });
});

describe('published URLs', () => {
  test('segments are decoded; the trailing slash is noted', () => {
    assert.deepEqual(parsePublishPath('/@ada/handbook/guide/setup?x=1'), { ok: true, user: 'ada', project: 'handbook', rest: ['guide', 'setup'], trailingSlash: false });
    assert.deepEqual(parsePublishPath('/@ada/handbook/'), { ok: true, user: 'ada', project: 'handbook', rest: [], trailingSlash: true });
    assert.deepEqual(parsePublishPath('/@ada'), { ok: true, user: 'ada', project: null, rest: [], trailingSlash: false });
    assert.deepEqual(parsePublishPath('/@ada/h/%C3%A9t%C3%A9'), { ok: true, user: 'ada', project: 'h', rest: ['été'], trailingSlash: false });
  });

  test('anything that could leave the project is refused: dot segments (encoded too), backslashes, NUL, encoded slashes, empty segments', () => {
    for (const url of [
      '/@ada/handbook/../private-lab/',
      '/@ada/handbook/%2e%2e/private-lab',
      '/@ada/handbook/%2E%2E/%2E%2E/etc/passwd',
      '/@ada/handbook/guide/.',
      '/@ada/handbook/.mrmd/outputs/01-intro.md.json',
      '/@ada/handbook/_assets/.env',
      '/@ada/handbook/_assets/%2e%2e%2fmrmd.md',
      '/@ada/handbook/..%5cmrmd.md',
      '/@ada/handbook/a%5cb',
      '/@ada/handbook/intro%00.md',
      '/@ada/handbook/guide%2fsetup',
      '/@ada/handbook//intro',
      '/@../etc',
    ]) {
      assert.deepEqual(parsePublishPath(url), { ok: false, reason: 'refused' }, url);
    }
  });

  test('malformed percent-encoding is a bad request', () => {
    assert.deepEqual(parsePublishPath('/@ada/handbook/%zz'), { ok: false, reason: 'malformed' });
    assert.deepEqual(parsePublishPath('/@ada/handbook/%E0%A4%A'), { ok: false, reason: 'malformed' });
  });
});
