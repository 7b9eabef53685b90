import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { repoRoot } from '../lib/paths.js';
import { workflowsPath } from './worker.js';

/** Pre-builds the workflow bundle so workers start without webpack (MARKCO_WORKFLOW_BUNDLE points at it). */
export async function writeWorkflowBundle(outFile: string): Promise<string> {
  const { code } = await bundleWorkflowCode({ workflowsPath: workflowsPath(), logger: new DefaultLogger('WARN') });
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, code);
  return outFile;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const out = process.argv[2] ?? join(repoRoot, 'dist', 'workflow-bundle.js');
  await writeWorkflowBundle(out);
  console.log(out);
}
