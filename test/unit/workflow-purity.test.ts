import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';

/**
 * Workflows run in Temporal's deterministic sandbox: they may import only the workflow SDK, the common
 * package and other workflow files; everything else (activities, Node, clients) only as types.
 */
const workflowsDir = join(repoRoot, 'workflows');
const allowedPackages = new Set(['@temporalio/workflow', '@temporalio/common']);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const f = join(dir, n);
    return statSync(f).isDirectory() ? files(f) : f.endsWith('.ts') ? [f] : [];
  });
}

test('workflow code imports values only from the workflow SDK and other workflow files', () => {
  const offences: string[] = [];
  for (const file of files(workflowsDir)) {
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
      const [, , typeOnly, spec] = m;
      if (typeOnly) continue;
      const ok = spec!.startsWith('.') ? !relative(workflowsDir, resolve(dirname(file), spec!)).startsWith('..') : allowedPackages.has(spec!);
      if (!ok) offences.push(`${relative(repoRoot, file)} imports ${spec}`);
    }
    // Date.now() is allowed: in the workflow sandbox it is the current workflow task's time, recorded in history.
    if (/\b(Math\.random|setTimeout|process\.env)\b/.test(src.replace(/\/\/.*$/gm, ''))) {
      offences.push(`${relative(repoRoot, file)} uses a non-deterministic API`);
    }
  }
  assert.deepEqual(offences, []);
});
