import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../lib/paths.js';

/**
 * Runs every benchmark, one after the other (each starts the real parts it measures and prints its ratio
 * against a baseline measured in the same run). `npm run bench [NAME...]` runs just those.
 */
const all = ['proxy-core', 'proxy', 'proxy-peers', 'login', 'transfer', 'ssh2-cipher', 'migrate', 'idle-return', 'monitor', 'publish'];
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : all;
let failed = 0;
for (const name of chosen) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark ${name}: expected one of ${all.join(', ')}`);
    process.exit(2);
  }
  console.log(`\n## ${name}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', `${name}.ts`)], { stdio: 'inherit', cwd: repoRoot });
  if (r.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
