import { escapeHtml } from '../html.js';
import { neighbours, type NavNode, type Site, type SitePage } from './fsml.js';
import type { Visibility } from './project-config.js';

/**
 * The HTML around a rendered page: the project's header, the whole nested navigation with the current
 * page marked (`aria-current="page"`), previous/next links in reading order, and, when configured, the
 * mrmd reader script with the page's source for it. The same bytes for every visitor, so one rendering
 * serves all of them and its hash is a strong ETag.
 */
export interface ShellInput {
  username: string;
  /** `/@<username>/<project>` */
  projectBase: string;
  projectTitle: string;
  site: Site;
  page: SitePage;
  pageTitle: string;
  contentHtml: string;
  visibility: Visibility;
  /** Absolute URL of the page's canonical form (MARKCO_PUBLIC_URL + path). */
  canonicalUrl: string;
  stylesheetUrl: string;
  /** The mrmd reader (MARKCO_PUBLISH_READER_URL) and what it is handed; null: none configured. */
  reader: { scriptUrl: string; data: unknown } | null;
  notice?: string;
}

export function pageHref(projectBase: string, url: string): string {
  return `${projectBase}/${url}`;
}

function navList(nodes: NavNode[], input: ShellInput): string {
  if (nodes.length === 0) return '';
  const items = nodes.map((node) => {
    const current = node.page === input.page ? ' aria-current="page"' : '';
    const link = `<a href="${escapeHtml(pageHref(input.projectBase, node.url))}"${current}>${escapeHtml(node.title)}</a>`;
    if (node.kind === 'page') return `<li class="nav-page">${link}</li>`;
    return `<li class="nav-folder">${link}${navList(node.children, input)}</li>`;
  });
  return `<ul>${items.join('')}</ul>`;
}

/** JSON inside a <script> element: `<` escaped so no `</script>` in the data can end it. */
export function scriptJson(data: unknown): string {
  return JSON.stringify(data).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

const navHas = (nodes: NavNode[], page: SitePage): boolean => nodes.some((n) => n.page === page || navHas(n.children, page));

export function renderShell(input: ShellInput): string {
  const { previous, next } = neighbours(input.site, input.page);
  // The root's index is reached through the header, not the navigation: then the header marks it.
  const headerCurrent = input.page === input.site.root && !navHas(input.site.nav, input.page) ? ' aria-current="page"' : '';
  const titleOf = (p: SitePage) => (p === input.site.root ? input.projectTitle : p.title);
  const pager =
    previous || next
      ? `<nav class="pager" aria-label="Previous and next pages">${previous ? `<a class="previous" rel="prev" href="${escapeHtml(pageHref(input.projectBase, previous.url))}">← ${escapeHtml(titleOf(previous))}</a>` : ''}${next ? `<a class="next" rel="next" href="${escapeHtml(pageHref(input.projectBase, next.url))}">${escapeHtml(titleOf(next))} →</a>` : ''}</nav>`
      : '';
  const noindex = input.visibility !== 'public' ? '\n<meta name="robots" content="noindex">' : '';
  const reader = input.reader
    ? `\n<script type="application/json" id="mrmd-published">${scriptJson(input.reader.data)}</script>\n<script src="${escapeHtml(input.reader.scriptUrl)}" defer></script>`
    : '';
  const title = input.page === input.site.root && input.pageTitle === input.projectTitle ? input.projectTitle : `${input.pageTitle} · ${input.projectTitle}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>${noindex}
<link rel="canonical" href="${escapeHtml(input.canonicalUrl)}">
<link rel="stylesheet" href="${escapeHtml(input.stylesheetUrl)}">
<link rel="icon" href="data:,">
</head><body class="markco-published">
<header class="site-header"><a class="project" href="${escapeHtml(pageHref(input.projectBase, ''))}"${headerCurrent}>${escapeHtml(input.projectTitle)}</a><span class="owner">by @${escapeHtml(input.username)}</span></header>
<div class="layout">
<nav class="site-nav" aria-label="Pages">${navList(input.site.nav, input)}</nav>
<main>
${input.notice ? `<p class="notice">${escapeHtml(input.notice)}</p>\n` : ''}<article class="page-content">
${input.contentHtml}</article>
${pager}
</main>
</div>${reader}
</body></html>
`;
}
