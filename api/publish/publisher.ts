import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { UserRecord } from '../../lib/accounts.js';
import type { Logger } from '../../lib/logger.js';
import { projectNamePattern } from '../../workflows/contracts/user-environment.js';
import { userIdPattern } from '../../workflows/contracts/users.js';
import { DirectoryWatchers, LruCache } from './directory-watchers.js';
import { buildSite, resolvePage, type Site, type SitePage } from './fsml.js';
import { contentHash, strongEtag } from './http-cache.js';
import { linkedPaths, parsePage, renderPage } from './markdown.js';
import { renderShell } from './page-shell.js';
import { parseProjectConfig, type ProjectConfig, type PublishSettings } from './project-config.js';
import { assetsDirName, listDirWithin, openFileWithin, readFileWithin, realPathWithin, scanProject } from './project-files.js';
import { outputsPathOf, parseSavedOutputs } from './saved-outputs.js';
import { loadSiteAssets, type SiteAssets } from './site-assets.js';

/**
 * Published projects as the edge serves them: who `/@<name>` is, which of their projects are published
 * and how (each project's `mrmd.md`), each project's site (FSML), and rendered pages.
 *
 * Everything is read from the users' files on the base server (`<usersDir>/<userId>/Projects/<name>`)
 * and kept until those files change: every folder a result depends on is watched (inotify), and a change
 * drops what depended on it, so the next request reads again. Where a folder cannot be watched (the
 * watch limit, or the kernel refuses) the result is only trusted for `fallbackTtlMs`. Memory is bounded:
 * rendered pages by bytes (`cacheBytes`), project lists and sites by count.
 */
export interface PublisherOptions {
  usersDir: string;
  /** MARKCO_PUBLIC_URL: canonical links and sitemaps are absolute. */
  publicUrl: string;
  /** MARKCO_PUBLISH_READER_URL: the mrmd reader script each page loads, or null. */
  readerScriptUrl: string | null;
  /** Bytes of rendered pages kept (MARKCO_PUBLISH_CACHE_MB). */
  cacheBytes: number;
  users: { byUsername(name: string): Promise<UserRecord | undefined>; get(id: string): Promise<UserRecord | undefined> };
  log?: Logger;
  /** Bounds; the defaults suit one base server. */
  limits?: Partial<typeof defaultLimits>;
}

const defaultLimits = {
  maxWatches: 50_000,
  maxUserIndexes: 2_000,
  maxSites: 500,
  usernameCacheMs: 10_000,
  fallbackTtlMs: 2_000,
  pageMaxBytes: 4 * 1024 * 1024,
  outputsMaxBytes: 16 * 1024 * 1024,
  configMaxBytes: 1024 * 1024,
};

export interface PublishedProject {
  ownerId: string;
  username: string;
  /** The folder under Projects/. */
  dirName: string;
  realDir: string;
  config: ProjectConfig;
  /** Null: not published. */
  publish: PublishSettings | null;
  /** The URL segment: `publish.url`'s, else the folder name. */
  slug: string;
  /** `/@<username>/<slug>` */
  base: string;
  /** Changes whenever what the project's pages show of its config changes (rendered pages are keyed by it). */
  fingerprint: string;
}

export interface RenderedPage {
  body: Buffer;
  etag: string;
}

/** What dies with a cached result: its watches. A change or a failed watch marks it stale. */
interface Watched {
  stale: boolean;
  /** Results without a watch on every folder they read are trusted until then. */
  expiresAt: number;
  stops: (() => void)[];
}

interface UserProjects extends Watched {
  username: string;
  all: PublishedProject[];
  /** Lowercased URL segment → published project (overrides first, then folder names). */
  bySegment: Map<string, PublishedProject>;
}

interface ProjectSite extends Watched {
  realDir: string;
  site: Site;
  /** Page by its file's path from the project root, for links between pages. */
  byFile: Map<string, SitePage>;
  generation: number;
  /** Keys of this site's rendered pages in the shared page cache. */
  pageKeys: Set<string>;
}

type Owner = { user: UserRecord } | { redirectTo: string };

export function createPublisher(opts: PublisherOptions) {
  const limits = { ...defaultLimits, ...opts.limits };
  const watchers = new DirectoryWatchers(limits.maxWatches);
  const assets: SiteAssets = loadSiteAssets();
  const usernames = new Map<string, { user: UserRecord | undefined; until: number }>();
  let generations = 0;

  const release = (w: Watched) => {
    for (const stop of w.stops.splice(0)) stop();
  };
  const userIndexes = new LruCache<string, UserProjects>(limits.maxUserIndexes, () => 1, (_k, v) => release(v));
  const pages = new LruCache<string, RenderedPage>(opts.cacheBytes, (p) => p.body.length + 256);
  const sites = new LruCache<string, ProjectSite>(limits.maxSites, () => 1, (_k, site) => {
    release(site);
    for (const key of site.pageKeys) pages.delete(key);
  });
  const building = new Map<string, Promise<unknown>>();

  /** Runs one build per key at a time: concurrent requests for the same thing share it. */
  function once<T>(key: string, build: () => Promise<T>): Promise<T> {
    const running = building.get(key) as Promise<T> | undefined;
    if (running) return running;
    const started = build().finally(() => building.delete(key));
    building.set(key, started);
    return started;
  }

  const fresh = (w: Watched | undefined): w is Watched => w !== undefined && !w.stale && Date.now() < w.expiresAt;

  let lastWatchWarning = 0;
  /** Watches `dir` for `w`; a change (for which `relevant` holds) marks it stale at once. */
  function watchFor(w: Watched, dir: string, relevant: (name: string | null) => boolean = () => true): void {
    const stop = watchers.subscribe(dir, (name) => {
      if (relevant(name)) w.stale = true;
    });
    if (stop) {
      w.stops.push(stop);
      return;
    }
    w.expiresAt = Math.min(w.expiresAt, Date.now() + limits.fallbackTtlMs);
    if (Date.now() - lastWatchWarning > 60_000) {
      lastWatchWarning = Date.now();
      opts.log?.warn({ dir, watches: watchers.size, limit: limits.maxWatches }, 'publishing: a folder could not be watched (watch limit, or the kernel refused: fs.inotify.max_user_watches); its pages are read again every few seconds instead');
    }
  }

  async function owner(segment: string): Promise<Owner | null> {
    const lower = segment.toLowerCase();
    if (userIdPattern.test(lower)) {
      const user = await opts.users.get(lower);
      return user ? { redirectTo: user.username } : null;
    }
    const hit = usernames.get(lower);
    if (hit && hit.until > Date.now()) return hit.user ? { user: hit.user } : null;
    const user = await opts.users.byUsername(lower);
    if (usernames.size >= 10_000) usernames.clear();
    usernames.set(lower, { user, until: Date.now() + limits.usernameCacheMs });
    return user ? { user } : null;
  }

  async function buildUserProjects(user: UserRecord): Promise<UserProjects> {
    const index: UserProjects = { username: user.username, all: [], bySegment: new Map(), stale: false, expiresAt: Infinity, stops: [] };
    const home = join(opts.usersDir, user.id);
    const realHome = await realPathWithin(opts.usersDir, home);
    if (!realHome) {
      // No home yet: nothing published; look again shortly rather than watch a folder that is not there.
      index.expiresAt = Date.now() + limits.fallbackTtlMs;
      return index;
    }
    watchFor(index, realHome, (name) => name === null || name.toLowerCase() === 'projects');
    const projects = await listDirWithin(realHome, join(realHome, 'Projects'), (real) => watchFor(index, real));
    for (const entry of projects?.entries ?? []) {
      if (entry.kind !== 'dir' || !projectNamePattern.test(entry.name)) continue;
      const realDir = await realPathWithin(realHome, join(projects!.real, entry.name));
      if (!realDir) continue;
      watchFor(index, realDir, (name) => name === null || name === 'mrmd.md');
      const file = await readFileWithin(realDir, join(realDir, 'mrmd.md'), limits.configMaxBytes);
      if (!file) continue;
      const config = 'text' in file ? parseProjectConfig(file.text, user) : { values: {}, name: null, publish: null, problems: ['mrmd.md is too large to read'] };
      const slug = config.publish?.slug ?? entry.name;
      const base = `/@${user.username}/${encodeURIComponent(slug)}`;
      index.all.push({ ownerId: user.id, username: user.username, dirName: entry.name, realDir, config, publish: config.publish, slug, base, fingerprint: contentHash(JSON.stringify([base, config.values])) });
    }
    index.all.sort((a, b) => (a.dirName < b.dirName ? -1 : a.dirName > b.dirName ? 1 : 0));
    // A `url` claims its segment before any folder name; among equals the first folder (by name) wins.
    for (const p of index.all.filter((p) => p.publish?.slug)) {
      const key = p.slug.toLowerCase();
      if (!index.bySegment.has(key)) index.bySegment.set(key, p);
    }
    for (const p of index.all.filter((p) => p.publish && !p.publish.slug)) {
      const key = p.slug.toLowerCase();
      if (!index.bySegment.has(key)) index.bySegment.set(key, p);
    }
    return index;
  }

  async function userProjects(user: UserRecord): Promise<UserProjects> {
    const cached = userIndexes.get(user.id);
    if (fresh(cached) && cached.username === user.username) return cached;
    return once(`user:${user.id}`, async () => {
      const index = await buildUserProjects(user);
      userIndexes.set(user.id, index);
      return index;
    });
  }

  /**
   * The published project a URL segment names, or a redirect to its canonical segment (a folder name
   * whose project has its own `url`). Unpublished projects are not found.
   */
  async function project(user: UserRecord, segment: string): Promise<{ project: PublishedProject; canonical: boolean } | null> {
    const index = await userProjects(user);
    const key = segment.toLowerCase();
    const found = index.bySegment.get(key);
    if (found) return { project: found, canonical: true };
    const byFolder = index.all.find((p) => p.publish && p.dirName.toLowerCase() === key);
    return byFolder ? { project: byFolder, canonical: false } : null;
  }

  async function projectSite(p: PublishedProject): Promise<ProjectSite> {
    const cached = sites.get(p.realDir);
    if (fresh(cached)) return cached;
    return once(`site:${p.realDir}`, async () => {
      const entry: ProjectSite = { realDir: p.realDir, site: buildSite({ relPath: '', name: '', files: [], dirs: [] }), byFile: new Map(), generation: ++generations, pageKeys: new Set(), stale: false, expiresAt: Infinity, stops: [] };
      const scan = await scanProject(p.realDir, (dir) => watchFor(entry, dir));
      if (scan.truncated) opts.log?.warn({ project: p.base }, 'published project is larger than the scan limits; only part of it is published');
      entry.site = buildSite(scan.listing);
      for (const page of entry.site.pages) entry.byFile.set(page.file, page);
      sites.set(p.realDir, entry);
      return entry;
    });
  }

  /** An asset's content hash, by file identity: hashed again only when the file changes. */
  const assetHashes = new LruCache<string, string>(20_000);
  async function hashOf(handle: FileHandle, s: { dev: number; ino: number; mtimeMs: number; size: number }): Promise<string> {
    const identity = `${s.dev}:${s.ino}:${s.mtimeMs}:${s.size}`;
    const known = assetHashes.get(identity);
    if (known) return known;
    const hash = createHash('sha256');
    for await (const chunk of handle.createReadStream({ start: 0, autoClose: false })) hash.update(chunk as Buffer);
    const value = hash.digest('base64url').slice(0, 32);
    assetHashes.set(identity, value);
    return value;
  }

  async function assetsRoot(p: PublishedProject): Promise<string | null> {
    return realPathWithin(p.realDir, join(p.realDir, assetsDirName));
  }

  /** An asset's URL with its content hash (`?v=`): such a URL names those bytes forever. */
  async function versionedAssetUrl(p: PublishedProject, assetPath: string): Promise<string | null> {
    const root = await assetsRoot(p);
    if (!root) return null;
    const opened = await openFileWithin(root, join(p.realDir, assetPath));
    if (!opened) return null;
    try {
      const hash = await hashOf(opened.handle, opened.stats);
      return `${p.base}/${assetPath.split('/').map(encodeURIComponent).join('/')}?v=${hash}`;
    } finally {
      await opened.handle.close();
    }
  }

  async function render(p: PublishedProject, entry: ProjectSite, page: SitePage): Promise<RenderedPage> {
    const source = await readFileWithin(p.realDir, join(p.realDir, page.file), limits.pageMaxBytes);
    const outputsFile = await readFileWithin(p.realDir, join(p.realDir, outputsPathOf(page.file)), limits.outputsMaxBytes);
    const outputs = outputsFile && 'text' in outputsFile ? parseSavedOutputs(outputsFile.text) : new Map();
    const markdown = source && 'text' in source ? source.text : '';
    const parsed = parsePage(markdown);
    const links = new Map<string, string>();
    for (const path of linkedPaths(parsed, page.file)) {
      const linked = entry.byFile.get(path);
      if (linked) links.set(path, `${p.base}/${linked.url}`);
      else if (path.startsWith(`${assetsDirName}/`)) {
        const url = await versionedAssetUrl(p, path);
        if (url) links.set(path, url);
      }
    }
    const contentHtml = renderPage(parsed, { pageFile: page.file, outputs, urlOf: (path) => links.get(path) ?? null });
    const projectTitle = p.config.name ?? p.dirName;
    const html = renderShell({
      username: p.username,
      projectBase: p.base,
      projectTitle,
      site: entry.site,
      page,
      pageTitle: parsed.title ?? (page === entry.site.root ? projectTitle : page.title),
      contentHtml,
      visibility: p.publish?.visibility ?? 'private',
      canonicalUrl: `${opts.publicUrl}${p.base}/${page.url}`,
      stylesheetUrl: assets.stylesheetUrl,
      reader: opts.readerScriptUrl
        ? { scriptUrl: opts.readerScriptUrl, data: { project: p.base, page: page.url, file: page.file, markdown, outputs: [...outputs.values()], readonly: true, toolbar: false } }
        : null,
      ...(source && 'tooLarge' in source ? { notice: `This page is larger than ${limits.pageMaxBytes / 1024 / 1024} MiB and is not published.` } : {}),
    });
    const body = Buffer.from(html, 'utf8');
    return { body, etag: strongEtag(contentHash(body)) };
  }

  return {
    assets,
    owner,
    project,

    /** The rendered page at `segments` below the project, from the cache when nothing it depends on changed. */
    async page(p: PublishedProject, segments: string[]): Promise<RenderedPage | null> {
      const entry = await projectSite(p);
      const page = resolvePage(entry.site, segments);
      if (!page) return null;
      // The page shows the project's config (name, noindex): a changed mrmd.md is a different page.
      const key = `${p.realDir}\0${entry.generation}\0${page.file}\0${p.fingerprint}`;
      const cached = pages.get(key);
      if (cached && fresh(entry)) return cached;
      return once(`page:${key}`, async () => {
        const rendered = await render(p, entry, page);
        // Kept only while the site it was rendered from is current (no change arrived meanwhile).
        if (sites.get(p.realDir) === entry && fresh(entry)) {
          pages.set(key, rendered);
          entry.pageKeys.add(key);
        }
        return rendered;
      });
    },

    /** A file under the project's `_assets/`, opened (the caller streams and closes it), with its content hash. */
    async asset(p: PublishedProject, segments: string[]): Promise<{ handle: FileHandle; size: number; mtime: Date; hash: string; name: string } | null> {
      const root = await assetsRoot(p);
      if (!root || segments.length === 0) return null;
      const opened = await openFileWithin(root, join(root, ...segments));
      if (!opened) return null;
      try {
        const hash = await hashOf(opened.handle, opened.stats);
        return { handle: opened.handle, size: opened.stats.size, mtime: opened.stats.mtime, hash, name: segments[segments.length - 1]! };
      } catch (err) {
        await opened.handle.close();
        throw err;
      }
    },

    /** Every page of a project with its last change, for sitemaps. */
    async pageList(p: PublishedProject): Promise<{ url: string; lastModified: Date | null }[]> {
      const entry = await projectSite(p);
      return Promise.all(
        entry.site.pages.map(async (page) => ({
          url: `${opts.publicUrl}${p.base}/${page.url}`,
          lastModified: (await stat(join(p.realDir, page.file)).catch(() => null))?.mtime ?? null,
        })),
      );
    },

    /** The user's projects that have an mrmd.md, published or not, with what their config says. */
    async projectsOf(user: UserRecord): Promise<PublishedProject[]> {
      return (await userProjects(user)).all;
    },

    /** How much is held: for tests and the bench. */
    stats() {
      return { watches: watchers.size, userIndexes: userIndexes.size, sites: sites.size, pages: pages.size, pageBytes: pages.cost };
    },

    close(): void {
      userIndexes.clear();
      sites.clear();
      pages.clear();
      watchers.closeAll();
    },
  };
}

export type Publisher = ReturnType<typeof createPublisher>;

