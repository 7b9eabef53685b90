import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { configBlocks, deepMerge, parseProjectConfig, parseUrlOverride } from '../../api/publish/project-config.js';

const owner = { username: 'ada' };
const block = (yaml: string, info = 'yaml config') => `\`\`\`${info}\n${yaml}\n\`\`\`\n`;
const config = (...blocks: string[]) => parseProjectConfig(`# My project\n\n${blocks.join('\nSome text between.\n\n')}`, owner);

describe('mrmd.md configuration', () => {
  test('only `yaml config` fences count, not other YAML or text that looks like a fence', () => {
    const md = `${block('name: A')}\n${block('name: B', 'yaml')}\n    \`\`\`yaml config\n    name: indented code, not a fence\n    \`\`\`\n\n${block('name: C', 'yaml  config')}`;
    assert.deepEqual(configBlocks(md).map((b) => b.trim()), ['name: A', 'name: C']);
  });

  test('blocks are parsed as YAML and deep-merged in document order (arrays and scalars replaced)', () => {
    const c = config(block('name: First\nsession:\n  python:\n    venv: .venv\n    cwd: .\ntags: [a, b]'), block('name: Second\nsession:\n  python:\n    cwd: src\ntags: [c]'));
    assert.deepEqual(c.values, { name: 'Second', session: { python: { venv: '.venv', cwd: 'src' } }, tags: ['c'] });
    assert.equal(c.name, 'Second');
    assert.deepEqual(deepMerge({ a: { b: 1 } }, { a: null }), { a: null });
  });

  test('an invalid block is skipped and reported; the others still apply', () => {
    const c = config(block('name: Kept'), block('publish: [unclosed'), block('- a list, not a mapping'));
    assert.equal(c.name, 'Kept');
    assert.equal(c.publish, null);
    assert.equal(c.problems.length, 2);
    assert.match(c.problems[0]!, /block 2 is not valid YAML/);
    assert.match(c.problems[1]!, /block 3 is not a mapping/);
  });

  test('no `publish:` (or `publish: false`) means not published', () => {
    assert.equal(config(block('name: X')).publish, null);
    assert.equal(config('no config at all').publish, null);
    assert.equal(config(block('publish:\n  visibility: public'), block('publish: false')).publish, null);
  });

  test('`publish:` present, even empty, publishes: public by default', () => {
    assert.deepEqual(config(block('publish:')).publish, { visibility: 'public', slug: null, domain: null });
    assert.deepEqual(config(block('publish: {}')).publish, { visibility: 'public', slug: null, domain: null });
  });

  test('visibility public, unlisted or private; anything else is private and reported', () => {
    for (const v of ['public', 'unlisted', 'private', 'Unlisted']) assert.equal(config(block(`publish:\n  visibility: ${v}`)).publish?.visibility, v.toLowerCase());
    const odd = config(block('publish:\n  visibility: secret'));
    assert.equal(odd.publish?.visibility, 'private');
    assert.match(odd.problems[0]!, /not public, unlisted or private/);
  });

  test('a later block changes the visibility an earlier one set', () => {
    assert.equal(config(block('publish:\n  visibility: private'), block('publish:\n  visibility: public')).publish?.visibility, 'public');
  });

  test('`url` overrides the project segment, only under its owner', () => {
    assert.equal(config(block('publish:\n  url: "@ada/my-analysis"')).publish?.slug, 'my-analysis');
    assert.equal(config(block('publish:\n  url: /@Ada/my-analysis/')).publish?.slug, 'my-analysis');
    assert.equal(config(block('publish:\n  url: my-analysis')).publish?.slug, 'my-analysis');
    const other = config(block('publish:\n  url: "@grace/my-analysis"'));
    assert.equal(other.publish?.slug, null);
    assert.match(other.problems[0]!, /names another user/);
    const bad = config(block('publish:\n  url: "../escape"'));
    assert.equal(bad.publish?.slug, null);
    assert.match(bad.problems[0]!, /is not a project URL/);
    assert.equal(parseUrlOverride('@ada/a/b'), null);
    assert.equal(parseUrlOverride('.hidden'), null);
  });

  test('`domain` is recorded lowercased; a bad one is ignored and reported', () => {
    assert.equal(config(block('publish:\n  domain: Notes.Example.COM.')).publish?.domain, 'notes.example.com');
    const bad = config(block('publish:\n  domain: "not a domain"'));
    assert.equal(bad.publish?.domain, null);
    assert.match(bad.problems[0]!, /not a domain name/);
  });

  test('alias bombs are refused by the YAML parser instead of expanding', () => {
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`)].join('\n');
    const c = config(block(`${bomb}\npublish:\n  visibility: public`));
    assert.equal(c.publish, null, 'the whole block is skipped');
    assert.match(c.problems[0]!, /not valid YAML/);
  });
});
