import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The repository root, found from this file's own location (works from source and from dist/). */
export const repoRoot: string = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  return here.endsWith(join('dist', 'lib')) ? join(here, '..', '..') : join(here, '..');
})();

export const migrationsDir = join(repoRoot, 'infra', 'db', 'migrations');
export const defaultToolsDir = join(repoRoot, '.markco', 'tools');
export const defaultDataDir = join(repoRoot, '.markco', 'data');
