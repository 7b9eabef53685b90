import { createRequire } from 'node:module';
import { posix } from 'node:path';
import katexModule from '@vscode/markdown-it-katex';
import markdownIt, { type MarkdownIt, type Token } from 'markdown-it';
import { parse as parseYaml } from 'yaml';
import { escapeHtml } from '../html.js';
import { savedOutputHtml, type SavedCell } from './saved-outputs.js';

/**
 * A page's markdown rendered on the server (markdown-it): GFM tables and strikethrough, math with KaTeX
 * (`$...$`, `$$...$$`, ```math), code highlighted with highlight.js, ```mermaid left as
 * `<pre class="mermaid">` for a client script, and each code cell followed by its saved output. No editor
 * controls (run, copy) are rendered: a published page is read-only.
 *
 * Raw HTML in the markdown is shown as text (markdown-it `html: false`): pages are served from the
 * edge's origin, where visitors' sessions live, so a page must not be able to run script there.
 */
export interface ParsedPage {
  tokens: Token[];
  /** Title from the front matter (`title:`), else the first `# heading`, else null. */
  title: string | null;
}

interface RenderEnv {
  outputs: Map<number, SavedCell>;
  /** Index of the next code cell (fenced block with a language other than math, mermaid or output). */
  nextCell: number;
}

/**
 * The part of highlight.js used here. Its own type declarations reference the DOM library, which would
 * change global types (fetch's ReadableStream) for the whole program, so they are not imported.
 */
interface Highlighter {
  getLanguage(name: string): unknown;
  highlight(code: string, options: { language: string; ignoreIllegals: boolean }): { value: string };
}
const hljs = createRequire(import.meta.url)('highlight.js') as Highlighter;

// The plugin is CommonJS: its function is the module's `default` export.
const katexPlugin = katexModule.default;

/** Fenced blocks that are not code cells: no saved output belongs to them. */
const notCells = new Set(['math', 'mermaid', 'output']);

function languageOf(info: string): string {
  return (info.trim().split(/[\s{]+/, 1)[0] ?? '').toLowerCase();
}

function highlighted(code: string, lang: string): string {
  if (lang && hljs.getLanguage(lang)) {
    try {
      return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    } catch {
      // fall through to plain text
    }
  }
  return escapeHtml(code);
}

function createMarkdown(): MarkdownIt {
  const md = markdownIt({ html: false, linkify: true, typographer: false });
  md.renderer.rules.fence = (tokens, idx, _options, renderEnv) => {
    const env = renderEnv as unknown as RenderEnv;
    const token = tokens[idx]!;
    const lang = languageOf(token.info);
    if (lang === 'mermaid') return `<pre class="mermaid">${escapeHtml(token.content)}</pre>\n`;
    if (lang === 'output' || lang.startsWith('output:')) return `<div class="cell-output"><pre class="output-text">${escapeHtml(token.content)}</pre></div>\n`;
    const langClass = lang ? ` class="hljs language-${escapeHtml(lang)}"` : ' class="hljs"';
    const code = `<pre><code${langClass}>${highlighted(token.content, lang)}</code></pre>`;
    if (!lang || notCells.has(lang)) return `<div class="code-block">${code}</div>\n`;
    const cell = env.nextCell++;
    return `<figure class="cell" data-cell="${cell}">${code}${savedOutputHtml(env.outputs.get(cell), token.content)}</figure>\n`;
  };
  // Wraps the fence rule above: ```math blocks become display math, the rest go through ours.
  md.use(katexPlugin, { throwOnError: false, enableFencedBlocks: true });
  md.core.ruler.push('heading_ids', (state) => {
    const used = new Set<string>();
    state.tokens.forEach((t: Token, i: number) => {
      if (t.type !== 'heading_open') return;
      const text = state.tokens[i + 1]?.children?.map((c: Token) => c.content).join('') ?? '';
      const base = text.toLowerCase().normalize('NFKD').replace(/[^\p{L}\p{N}\s-]/gu, '').trim().replace(/\s+/g, '-') || 'section';
      let id = base;
      for (let n = 2; used.has(id); n++) id = `${base}-${n}`;
      used.add(id);
      t.attrSet('id', id);
    });
  });
  return md;
}

const md = createMarkdown();


/** Front matter (`---` YAML `---` at the very top) is metadata, not text. */
function splitFrontMatter(source: string): { body: string; title: string | null } {
  const m = /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(\r?\n|$)/.exec(source);
  if (!m) return { body: source, title: null };
  let title: string | null = null;
  try {
    const meta: unknown = parseYaml(m[1]!);
    if (meta && typeof meta === 'object' && typeof (meta as { title?: unknown }).title === 'string') title = (meta as { title: string }).title;
  } catch {
    // not YAML: still not page text
  }
  // Keep the line count so markdown-it's line maps stay true to the file.
  return { body: '\n'.repeat(m[0].split('\n').length - 1) + source.slice(m[0].length), title };
}

export function parsePage(source: string): ParsedPage {
  const { body, title: metaTitle } = splitFrontMatter(source);
  const tokens = md.parse(body, {});
  let title = metaTitle;
  if (!title) {
    const h1 = tokens.findIndex((t) => t.type === 'heading_open' && t.tag === 'h1');
    const inline = h1 >= 0 ? tokens[h1 + 1] : undefined;
    const text = inline?.children?.map((c) => (c.type === 'code_inline' || c.type === 'text' ? c.content : '')).join('').trim();
    title = text || null;
  }
  return { tokens, title };
}

/** Every link and image target of a page that names a file of the project (relative, no scheme). */
function eachLink(tokens: Token[], visit: (token: Token, attr: 'href' | 'src') => void): void {
  for (const t of tokens) {
    if (t.type === 'link_open') visit(t, 'href');
    else if (t.type === 'image') visit(t, 'src');
    if (t.children) eachLink(t.children, visit);
  }
}

const isRelative = (href: string) => href !== '' && !href.startsWith('/') && !href.startsWith('#') && !/^[a-z][a-z0-9+.-]*:/i.test(href);

/** A relative link's target as a path from the project root, with the `#fragment` kept apart; null when it leaves the project. */
export function projectPathOf(pageFile: string, href: string): { path: string; fragment: string } | null {
  if (!isRelative(href)) return null;
  const hashAt = href.indexOf('#');
  const fragment = hashAt >= 0 ? href.slice(hashAt) : '';
  const target = (hashAt >= 0 ? href.slice(0, hashAt) : href).split('?', 1)[0]!;
  let decoded: string;
  try {
    decoded = decodeURIComponent(target);
  } catch {
    return null;
  }
  const path = posix.normalize(posix.join(posix.dirname(pageFile), decoded));
  if (path === '..' || path.startsWith('../') || path.startsWith('/')) return null;
  return { path: path.replace(/\/$/, ''), fragment };
}

/** Project paths a page links to (pages and assets), for the caller to look up before rendering. */
export function linkedPaths(page: ParsedPage, pageFile: string): string[] {
  const paths = new Set<string>();
  eachLink(page.tokens, (t, attr) => {
    const target = projectPathOf(pageFile, String(t.attrGet(attr) ?? ''));
    if (target) paths.add(target.path);
  });
  return [...paths];
}

/**
 * The page's HTML. Relative links to the project's pages and assets are rewritten to their published
 * URLs (`urlOf` answers null for paths that are neither; those links are left as written).
 */
export function renderPage(page: ParsedPage, opts: { pageFile: string; outputs: Map<number, SavedCell>; urlOf: (projectPath: string) => string | null }): string {
  eachLink(page.tokens, (t, attr) => {
    const target = projectPathOf(opts.pageFile, String(t.attrGet(attr) ?? ''));
    const url = target ? opts.urlOf(target.path) : null;
    if (target && url) t.attrSet(attr, url + target.fragment);
  });
  const env: RenderEnv = { outputs: opts.outputs, nextCell: 0 };
  return md.renderer.render(page.tokens, md.options, env as unknown as Record<string, unknown>);
}
