import { constants, type Dirent, type Stats } from 'node:fs';
import { open, readdir, readlink, realpath, stat, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { isPublishableName, type DirListing } from './fsml.js';

/**
 * Reading a user's project for publishing without ever leaving it. The edge runs as root on the base
 * server and the files belong to the user, who controls every name and symlink in them, so a check
 * before opening (realpath, then open) would leave a window to swap a checked file for a link to
 * /etc/shadow. Instead every file and folder is opened first and the kernel is asked what was opened
 * (/proc/self/fd/N): anything outside the project's real path is closed and refused. Symlinks that stay
 * inside the project work; FIFOs and devices are refused without ever being opened.
 */
export class OutsideProjectError extends Error {
  constructor(what: string) {
    super(`${what} resolves outside the project`);
    this.name = 'OutsideProjectError';
  }
}

const within = (root: string, path: string) => path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);

/** Where an open descriptor really points. */
async function openedPath(fh: FileHandle): Promise<string> {
  return readlink(`/proc/self/fd/${fh.fd}`);
}

/** The real path of `path` if it exists and lies within `root` (itself a real path); else null. */
export async function realPathWithin(root: string, path: string): Promise<string | null> {
  const real = await realpath(path).catch(() => null);
  return real !== null && within(root, real) ? real : null;
}

/** Linux's O_PATH (not in Node's constants): a descriptor naming a file without opening it. */
const O_PATH = 0o10000000;

/**
 * Opens a regular file that is really inside `root` (a real path); null if it is missing, not a file, or
 * outside. The name is first resolved with O_PATH, which opens nothing (a device's or FIFO's open never
 * runs), then checked, then the very same inode is opened for reading through /proc/self/fd.
 */
export async function openFileWithin(root: string, path: string): Promise<{ handle: FileHandle; stats: Stats } | null> {
  let located: FileHandle;
  try {
    located = await open(path, O_PATH);
  } catch {
    return null;
  }
  try {
    const [real, stats] = await Promise.all([openedPath(located), located.stat()]);
    if (!within(root, real) || !stats.isFile()) return null;
    const handle = await open(`/proc/self/fd/${located.fd}`, constants.O_RDONLY | constants.O_NOCTTY);
    return { handle, stats };
  } catch {
    return null;
  } finally {
    await located.close();
  }
}

/** A whole small file within `root`, or null (missing, outside, or larger than `maxBytes`: `tooLarge`). */
export async function readFileWithin(root: string, path: string, maxBytes: number): Promise<{ text: string; stats: Stats } | { tooLarge: true; stats: Stats } | null> {
  const opened = await openFileWithin(root, path);
  if (!opened) return null;
  try {
    if (opened.stats.size > maxBytes) return { tooLarge: true, stats: opened.stats };
    return { text: await opened.handle.readFile('utf8'), stats: opened.stats };
  } finally {
    await opened.handle.close();
  }
}

/**
 * The entries of a folder that is really inside `root`, with symlinks followed (and each target checked
 * the same way when opened). `beforeRead` gets the folder's real path before its entries are read: a
 * watcher set up there misses no change the listing does not show.
 */
export async function listDirWithin(root: string, path: string, beforeRead?: (real: string) => void): Promise<{ real: string; entries: { name: string; kind: 'file' | 'dir' }[] } | null> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const real = await openedPath(handle);
    if (!within(root, real)) return null;
    beforeRead?.(real);
    // Listing through the descriptor lists what was opened, even if the path has been swapped since.
    const viaFd = `/proc/self/fd/${handle.fd}`;
    const dirents: Dirent[] = await readdir(viaFd, { withFileTypes: true });
    const entries: { name: string; kind: 'file' | 'dir' }[] = [];
    for (const d of dirents) {
      let kind: 'file' | 'dir' | null = d.isFile() ? 'file' : d.isDirectory() ? 'dir' : null;
      if (d.isSymbolicLink()) {
        const target = await realPathWithin(root, join(real, d.name));
        const s = target ? await stat(target).catch(() => null) : null;
        kind = s?.isFile() ? 'file' : s?.isDirectory() ? 'dir' : null;
      }
      if (kind) entries.push({ name: d.name, kind });
    }
    return { real, entries };
  } finally {
    await handle.close();
  }
}

/** Limits of one project scan: a site bigger than this is cut (and says so in its listing's size). */
export const scanLimits = { maxDepth: 16, maxEntries: 20_000 };

export interface ProjectScan {
  listing: DirListing;
  /** Real paths of every folder whose change must invalidate the site: pages' folders, `.mrmd/outputs/**`, `_assets/**`, `.mrmd`. */
  watchDirs: string[];
  /** True when a limit cut the scan. */
  truncated: boolean;
}

/**
 * Lists a project's publishable tree (never descending into `_` or `.` folders), and the folders whose
 * changes matter to its pages: `onDirectory` gets each before it is read. A folder reached twice (a
 * symlink loop) is listed once.
 */
export async function scanProject(root: string, onDirectory: (real: string) => void = () => undefined): Promise<ProjectScan> {
  const watchDirs = new Set<string>();
  const seen = new Set<string>();
  const watch = (real: string) => {
    if (watchDirs.has(real)) return;
    watchDirs.add(real);
    onDirectory(real);
  };
  let entriesLeft = scanLimits.maxEntries;
  let truncated = false;

  async function list(abs: string, relPath: string, name: string, depth: number): Promise<DirListing> {
    const listing: DirListing = { relPath, name, files: [], dirs: [] };
    const dir = await listDirWithin(root, abs, watch);
    if (!dir || seen.has(dir.real)) return listing;
    seen.add(dir.real);
    for (const entry of dir.entries) {
      if (!isPublishableName(entry.name)) continue;
      if (--entriesLeft < 0) {
        truncated = true;
        break;
      }
      const childRel = relPath ? posix.join(relPath, entry.name) : entry.name;
      if (entry.kind === 'file') listing.files.push({ name: entry.name, relPath: childRel });
      else if (depth < scanLimits.maxDepth) listing.dirs.push(await list(join(dir.real, entry.name), childRel, entry.name, depth + 1));
      else truncated = true;
    }
    return listing;
  }

  /** Folders outside the pages' tree that pages still depend on (saved outputs, assets). */
  async function watchTree(abs: string, depth: number): Promise<void> {
    if (depth > scanLimits.maxDepth || watchDirs.size > scanLimits.maxEntries) return;
    const before = watchDirs.size;
    const dir = await listDirWithin(root, abs, watch);
    if (!dir || watchDirs.size === before) return; // missing, outside, or already walked
    for (const e of dir.entries) if (e.kind === 'dir') await watchTree(join(dir.real, e.name), depth + 1);
  }

  const listing = await list(root, '', '', 0);
  // `.mrmd` itself: its `outputs` folder appearing later must be noticed.
  await listDirWithin(root, join(root, '.mrmd'), watch);
  await watchTree(join(root, '.mrmd', 'outputs'), 0);
  await watchTree(join(root, assetsDirName), 0);
  return { listing, watchDirs: [...watchDirs], truncated };
}

/** The folder of a project whose files are served as they are, at `/@<user>/<project>/_assets/...`. */
export const assetsDirName = '_assets';
