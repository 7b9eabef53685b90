import { readdir, realpath, stat } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { userIdPattern } from '../workflows/contracts/users.js';

/**
 * The datasets directory: `<datasets dir>/<owner's user id>/<name>.<parquet|csv|arrow|feather>`.
 *
 * A dataset belongs to the user whose folder holds it and is shared the way their editor is: the owner and
 * the collaborators they invited (live memberships) may read it (flight/server.ts checks). Clients name a
 * dataset `<owner's username>/<name>`. Only regular files whose real path stays inside the datasets
 * directory count: a symlink pointing elsewhere is not a dataset.
 */
export type DatasetFormat = 'parquet' | 'csv' | 'arrow';

/** File extensions, in the order that wins when two files of an owner share a name. */
const formats: readonly [string, DatasetFormat][] = [
  ['.parquet', 'parquet'],
  ['.arrow', 'arrow'],
  ['.feather', 'arrow'],
  ['.csv', 'csv'],
];

/** A dataset's name: letters, digits, `_` and `-`, starting with a letter or digit. */
export const datasetNamePattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export interface DatasetFile {
  ownerId: string;
  name: string;
  format: DatasetFormat;
  /** Absolute, symlinks resolved, inside the datasets directory. */
  path: string;
  bytes: number;
  modifiedMs: number;
}

function formatOf(file: string): DatasetFormat | undefined {
  const ext = extname(file).toLowerCase();
  return formats.find(([e]) => e === ext)?.[1];
}

function rank(file: string): number {
  const ext = extname(file).toLowerCase();
  return formats.findIndex(([e]) => e === ext);
}

export class DatasetCatalog {
  private rootReal: string | undefined;

  constructor(readonly root: string) {}

  private async realRoot(): Promise<string> {
    this.rootReal ??= await realpath(this.root);
    return this.rootReal;
  }

  /** The owner's datasets, by name (none when the owner has no folder). */
  async listOwner(ownerId: string): Promise<DatasetFile[]> {
    const files = await this.filesOf(ownerId);
    if (!files) return [];
    const found: DatasetFile[] = [];
    for (const [name, file] of [...files.byName].sort(([a], [b]) => a.localeCompare(b))) {
      const dataset = await this.inspect(files.root, ownerId, name, file);
      if (dataset) found.push(dataset);
    }
    return found;
  }

  /** One of the owner's datasets, or undefined: only its own file is resolved and inspected. */
  async find(ownerId: string, name: string): Promise<DatasetFile | undefined> {
    if (!datasetNamePattern.test(name)) return undefined;
    const files = await this.filesOf(ownerId);
    const file = files?.byName.get(name);
    return files && file ? this.inspect(files.root, ownerId, name, file) : undefined;
  }

  /** The file that stands for each dataset name in the owner's folder (undefined when there is no folder). */
  private async filesOf(ownerId: string): Promise<{ root: string; byName: Map<string, string> } | undefined> {
    if (!userIdPattern.test(ownerId)) return undefined;
    const root = await this.realRoot();
    let entries: string[];
    try {
      entries = await readdir(join(root, ownerId));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw err;
    }
    const byName = new Map<string, string>();
    for (const file of entries.sort()) {
      const stem = file.slice(0, file.length - extname(file).length);
      if (!formatOf(file) || !datasetNamePattern.test(stem)) continue;
      const seen = byName.get(stem);
      if (seen === undefined || rank(file) < rank(seen)) byName.set(stem, file);
    }
    return { root, byName };
  }

  private async inspect(root: string, ownerId: string, name: string, file: string): Promise<DatasetFile | undefined> {
    let path: string;
    try {
      path = await realpath(join(root, ownerId, file));
    } catch {
      return undefined; // a dangling symlink
    }
    // The SQL sandbox allows reading exactly this path: it must be a file of the datasets directory.
    if (!path.startsWith(root + sep)) return undefined;
    const info = await stat(path);
    if (!info.isFile()) return undefined;
    return { ownerId, name, format: formatOf(file)!, path, bytes: info.size, modifiedMs: info.mtimeMs };
  }
}
