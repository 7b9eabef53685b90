import { readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { contentHash } from './http-cache.js';

/**
 * The published pages' own stylesheet and KaTeX's fonts, served by the edge at a content-addressed path
 * (`/_publish/<hash>/site.css`, `/_publish/<hash>/fonts/...`): the hash covers the stylesheet, which
 * embeds KaTeX's (with its version), so every file below it can be cached for a year as immutable.
 */
const require = createRequire(import.meta.url);
const katexDist = join(dirname(require.resolve('katex/package.json')), 'dist');
const highlightTheme = join(dirname(require.resolve('highlight.js/package.json')), 'styles', 'github.min.css');

const layoutCss = `
:root{--text:#1f2328;--muted:#59636e;--line:#d1d9e0;--accent:#0969da;--code-bg:#f6f8fa;--current:#ddf4ff}
*{box-sizing:border-box}
body{margin:0;font:16px/1.6 -apple-system,BlinkMacSystemFont,"Segoe UI","Liberation Sans","DejaVu Sans",sans-serif;color:var(--text);background:#fff}
a{color:var(--accent)}
.site-header{display:flex;align-items:baseline;gap:.75rem;padding:.75rem 1.5rem;border-bottom:1px solid var(--line)}
.site-header .project{font-weight:600;font-size:1.1rem;text-decoration:none;color:var(--text)}
.site-header .owner{color:var(--muted);font-size:.9rem}
.layout{display:grid;grid-template-columns:16rem minmax(0,1fr);max-width:75rem;margin:0 auto}
.site-nav{padding:1rem 1rem 2rem 1.5rem;border-right:1px solid var(--line);font-size:.95rem}
.site-nav ul{list-style:none;margin:0;padding:0}
.site-nav ul ul{padding-left:1rem;border-left:1px solid var(--line);margin:.15rem 0 .15rem .35rem}
.site-nav li{margin:.1rem 0}
.site-nav a{display:block;padding:.15rem .5rem;border-radius:6px;text-decoration:none;color:var(--text)}
.site-nav a:hover{background:var(--code-bg)}
.site-nav a[aria-current="page"]{background:var(--current);color:var(--accent);font-weight:600}
.site-nav .folder-title{display:block;padding:.15rem .5rem;color:var(--muted);font-weight:600}
main{padding:1.5rem 2.5rem 3rem;min-width:0}
.page-content{max-width:48rem}
.page-content pre{background:var(--code-bg);padding:.85rem 1rem;border-radius:6px;overflow:auto;font-size:.875rem;line-height:1.45}
.page-content code{font-family:ui-monospace,SFMono-Regular,"Liberation Mono","DejaVu Sans Mono",monospace}
.page-content :not(pre)>code{background:var(--code-bg);padding:.1em .3em;border-radius:4px;font-size:.9em}
.page-content pre code.hljs{background:transparent;padding:0}
.page-content table{border-collapse:collapse;margin:1rem 0}
.page-content th,.page-content td{border:1px solid var(--line);padding:.35rem .75rem}
.page-content img{max-width:100%}
.cell{margin:1rem 0}
.cell pre{margin:0}
.cell-output{border-left:3px solid var(--line);margin:.25rem 0 1rem;padding-left:.75rem}
.cell-output pre.output-text{background:transparent;padding:.35rem 0;margin:0}
.cell-output .output-stderr,.cell-output .output-error{color:#a40e26}
.katex-block{overflow-x:auto;overflow-y:hidden}
pre.mermaid{background:transparent;text-align:center}
.pager{display:flex;justify-content:space-between;gap:1rem;max-width:48rem;margin-top:3rem;padding-top:1rem;border-top:1px solid var(--line)}
.pager a{text-decoration:none}
.pager .next{margin-left:auto;text-align:right}
.notice{padding:.75rem 1rem;background:#fff8c5;border-radius:6px}
@media (max-width:48rem){.layout{grid-template-columns:1fr}.site-nav{border-right:0;border-bottom:1px solid var(--line)}main{padding:1rem}}
`;

export interface SiteAssets {
  /** `/_publish/<hash>/` */
  base: string;
  stylesheetUrl: string;
  /** The file under `base`, or null: `site.css` or one of KaTeX's fonts. */
  read(name: string): Promise<{ body: Buffer; contentType: string } | null>;
}

const fontTypes: Record<string, string> = { '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf' };

export function loadSiteAssets(): SiteAssets {
  // KaTeX's stylesheet refers to its fonts as `fonts/...`: served next to ours, the URLs hold.
  const css = Buffer.from([readFileSync(join(katexDist, 'katex.min.css'), 'utf8'), readFileSync(highlightTheme, 'utf8'), layoutCss].join('\n'));
  const base = `/_publish/${contentHash(css).slice(0, 16)}/`;
  const fonts = new Set(readdirSync(join(katexDist, 'fonts')));
  const fontCache = new Map<string, Buffer>();
  return {
    base,
    stylesheetUrl: `${base}site.css`,
    async read(name) {
      if (name === 'site.css') return { body: css, contentType: 'text/css; charset=utf-8' };
      const font = name.startsWith('fonts/') ? name.slice('fonts/'.length) : null;
      if (!font || !fonts.has(font)) return null;
      const type = fontTypes[font.slice(font.lastIndexOf('.'))];
      if (!type) return null;
      let body = fontCache.get(font);
      if (!body) {
        body = await readFile(join(katexDist, 'fonts', font));
        fontCache.set(font, body);
      }
      return { body, contentType: type };
    },
  };
}
