/**
 * FSML, the mrmd project format, as published at `/@<username>/<project>/<path...>`: a project's folders
 * and markdown files are its site. Pure functions over a directory listing (api/publish/project-files.ts
 * reads one from disk), so every rule here is unit-tested without a filesystem.
 *
 * Rules (mrmd-project src/fsml.js, with the seeds' publish-service gaps closed):
 * - a numeric prefix (`01-`, `01_`) orders an entry and is not part of its URL; `.md` and `.qmd` are stripped;
 * - numbered entries come first in numeric order, then the others alphabetically; files and folders interleave;
 * - names starting with `_` (drafts, `_assets`) or `.` (dot files, `.mrmd`) and `mrmd.md` are never pages;
 * - a folder is reached at its own URL, which shows its `index.md` (or `index.qmd`), else its first page;
 * - the project's root shows its `index.md`, else its first page;
 * - URLs match case-insensitively; in a folder a file wins over a folder of the same slug, and among two
 *   files (or two folders) of one slug the first in order wins.
 */

/** One directory as read from disk: names only, relative paths from the project root (posix). */
export interface DirListing {
  /** '' for the project root. */
  relPath: string;
  name: string;
  files: { name: string; relPath: string }[];
  dirs: DirListing[];
}

export interface SitePage {
  /** Path of the markdown file from the project root, as on disk (`02-guide/01-setup.md`). */
  file: string;
  /** Title from the file name (`01-getting-started.md` → `Getting Started`). */
  title: string;
  /** The page's canonical URL path below the project (`guide/setup`; '' for the root page). */
  url: string;
}

export interface NavNode {
  kind: 'page' | 'folder';
  title: string;
  /** URL path below the project; a folder's URL shows its index page, else its first page. */
  url: string;
  /** The page this node opens: the file's own page, or a folder's index page (null: the folder has none). */
  page: SitePage | null;
  children: NavNode[];
}

export interface Site {
  /** The root's entries, nested. */
  nav: NavNode[];
  /** Every page in reading order (previous/next follow it). */
  pages: SitePage[];
  /** What the project's own URL shows: the root index, else the first page; null for a project without pages. */
  root: SitePage | null;
  /** Folder slug tree for resolving URLs. */
  tree: SlugDir;
}

interface SlugDir {
  /** Lowercased slug → the first file with it (index files included). */
  files: Map<string, SitePage>;
  /** Lowercased slug → the first folder with it. */
  dirs: Map<string, SlugDir>;
  /** What the folder's URL shows. */
  landing: SitePage | null;
}

const pageExtension = /\.(md|qmd)$/i;
const numericPrefix = /^(\d+)[-_]/;

/** Whether a name may ever be part of a published site (pages, folders, assets' own path excepted). */
export function isPublishableName(name: string): boolean {
  return name.length > 0 && !name.startsWith('.') && !name.startsWith('_');
}

/** A markdown page: `.md`/`.qmd`, publishable, and not the project's configuration (`mrmd.md`). */
export function isPageFile(name: string): boolean {
  return isPublishableName(name) && pageExtension.test(name) && name.toLowerCase() !== 'mrmd.md';
}

/** The numeric prefix's value, or null for an unnumbered name. */
export function orderOf(name: string): number | null {
  const m = numericPrefix.exec(name);
  return m ? Number.parseInt(m[1]!, 10) : null;
}

/** The URL segment of a file or folder name: prefix and page extension stripped (`01-intro.md` → `intro`). */
export function slugOf(name: string): string {
  return name.replace(pageExtension, '').replace(numericPrefix, '');
}

/** A title from a name: `01-getting-started.md` → `Getting Started`, `my_notes.qmd` → `My Notes`. */
export function titleOf(name: string): string {
  return slugOf(name)
    .split(/[-_\s]+/)
    .filter(Boolean)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join(' ');
}

/** FSML order: numbered first by number, then the rest by name (natural order, case-insensitive). */
export function compareNames(a: string, b: string): number {
  const oa = orderOf(a);
  const ob = orderOf(b);
  if (oa !== null && ob !== null && oa !== ob) return oa - ob;
  if (oa !== null && ob === null) return -1;
  if (oa === null && ob !== null) return 1;
  return a.localeCompare(b, 'en', { numeric: true, sensitivity: 'base' }) || (a < b ? -1 : a > b ? 1 : 0);
}

const isIndex = (name: string) => slugOf(name).toLowerCase() === 'index';
const joinUrl = (base: string, slug: string) => (base ? `${base}/${slug}` : slug);

/** Builds the site of a project from its listing: navigation, reading order and the URL tree. */
export function buildSite(root: DirListing): Site {
  const pages: SitePage[] = [];

  function walk(dir: DirListing, url: string): { nodes: NavNode[]; slugs: SlugDir; first: SitePage | null; index: SitePage | null } {
    const slugs: SlugDir = { files: new Map(), dirs: new Map(), landing: null };
    const entries = [
      ...dir.files.filter((f) => isPageFile(f.name)).map((f) => ({ kind: 'file' as const, name: f.name, file: f })),
      ...dir.dirs.filter((d) => isPublishableName(d.name)).map((d) => ({ kind: 'dir' as const, name: d.name, dir: d })),
    ].sort((a, b) => compareNames(a.name, b.name));

    // The index comes first in reading order, whatever its prefix.
    const indexEntry = entries.find((e) => e.kind === 'file' && isIndex(e.name));
    let index: SitePage | null = null;
    if (indexEntry?.kind === 'file') {
      index = { file: indexEntry.file.relPath, title: dir.relPath === '' ? 'Home' : titleOf(dir.name), url };
      pages.push(index);
      slugs.files.set('index', index);
    }
    const nodes: NavNode[] = [];
    let first: SitePage | null = index;
    for (const e of entries) {
      if (e === indexEntry) continue;
      const slug = slugOf(e.name);
      const key = slug.toLowerCase();
      if (e.kind === 'file') {
        const page: SitePage = { file: e.file.relPath, title: titleOf(e.name), url: joinUrl(url, encodeSegment(slug)) };
        pages.push(page);
        first ??= page;
        if (!slugs.files.has(key)) slugs.files.set(key, page);
        nodes.push({ kind: 'page', title: page.title, url: page.url, page, children: [] });
      } else {
        const sub = walk(e.dir, joinUrl(url, encodeSegment(slug)));
        if (!sub.first) continue; // a folder without pages is not part of the site
        first ??= sub.first;
        if (!slugs.dirs.has(key)) slugs.dirs.set(key, sub.slugs);
        nodes.push({ kind: 'folder', title: titleOf(e.name), url: joinUrl(url, encodeSegment(slug)), page: sub.index, children: sub.nodes });
      }
    }
    slugs.landing = index ?? first;
    return { nodes, slugs, first, index };
  }

  const top = walk(root, '');
  // A folder without an index shows its first page: that page's own URL is the canonical one.
  return { nav: top.nodes, pages, root: top.index ?? top.first, tree: top.slugs };
}

/** URL segments are percent-encoded in links; matching decodes them first (parsePagePath). */
function encodeSegment(slug: string): string {
  return encodeURIComponent(slug);
}

/**
 * The page a URL path below the project shows, from its decoded segments: every segment but the last
 * names a folder, the last a file, else a folder (which shows its landing page). Case-insensitive.
 */
export function resolvePage(site: Site, segments: readonly string[]): SitePage | null {
  if (segments.length === 0) return site.root;
  let dir = site.tree;
  for (const segment of segments.slice(0, -1)) {
    const next = dir.dirs.get(segment.toLowerCase());
    if (!next) return null;
    dir = next;
  }
  const last = segments[segments.length - 1]!.toLowerCase();
  return dir.files.get(last) ?? dir.dirs.get(last)?.landing ?? null;
}

/** The pages before and after one in reading order. */
export function neighbours(site: Site, page: SitePage): { previous: SitePage | null; next: SitePage | null } {
  const i = site.pages.indexOf(page);
  if (i < 0) return { previous: null, next: null };
  return { previous: site.pages[i - 1] ?? null, next: site.pages[i + 1] ?? null };
}

/**
 * A published URL's path split into decoded segments: `/@<user>/<project>/<rest...>`. Never joined into a
 * filesystem path; still, anything that could name a place outside the project is refused here, so it
 * cannot reach the code that reads files (assets): `.`/`..` and every dot-name, backslashes, NUL and
 * encoded slashes.
 */
export type ParsedPublishPath =
  | { ok: true; user: string; project: string | null; rest: string[]; trailingSlash: boolean }
  | { ok: false; reason: 'malformed' | 'refused' };

export function parsePublishPath(url: string): ParsedPublishPath {
  const path = url.split(/[?#]/, 1)[0]!;
  if (!path.startsWith('/@')) return { ok: false, reason: 'refused' };
  const raw = path.slice(2).split('/');
  const decoded: string[] = [];
  for (const part of raw) {
    let segment: string;
    try {
      segment = decodeURIComponent(part);
    } catch {
      return { ok: false, reason: 'malformed' };
    }
    decoded.push(segment.normalize('NFC'));
  }
  const trailingSlash = decoded.length > 1 && decoded[decoded.length - 1] === '';
  if (trailingSlash) decoded.pop();
  const [user, project, ...rest] = decoded;
  for (const segment of decoded) {
    if (segment === '' || segment.startsWith('.') || /[/\\\0]/.test(segment)) return { ok: false, reason: 'refused' };
  }
  return { ok: true, user: user!, project: project ?? null, rest, trailingSlash };
}
