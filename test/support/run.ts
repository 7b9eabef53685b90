import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { MissingPrerequisiteError } from '../../infra/dev/prerequisites.js';
import { repoRoot } from '../../lib/paths.js';
import { harnessStateEnv, startHarness, type RunningHarness } from './harness.js';

/**
 * The test command's runner: starts the shared harness (real PostgreSQL, Temporal, EC2/S3 emulator,
 * namespace hosts), runs the test files under node's test runner, and always tears the harness down,
 * failing the run if anything is left behind.
 *
 *   run.ts            every tier
 *   run.ts unit       the fast tier (no harness)
 *   run.ts FILE...    just those files
 */
const tiers = ['unit', 'integration', 'security'] as const;

function testFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .flatMap((name) => {
      const full = join(dir, name);
      return statSync(full).isDirectory() ? testFiles(full) : name.endsWith('.test.ts') ? [full] : [];
    })
    .sort();
}

function select(args: string[]): string[] {
  if (args.length === 0) return tiers.flatMap((t) => testFiles(join(repoRoot, 'test', t)));
  return args.flatMap((a) => ((tiers as readonly string[]).includes(a) ? testFiles(join(repoRoot, 'test', a)) : [join(process.cwd(), a)]));
}

async function main(): Promise<number> {
  const files = select(process.argv.slice(2));
  if (files.length === 0) {
    console.error('no test files selected');
    return 1;
  }
  const unitDir = join(repoRoot, 'test', 'unit');
  const needsHarness = files.some((f) => relative(unitDir, f).startsWith('..'));
  let harness: RunningHarness | undefined;
  let child: ReturnType<typeof spawn> | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    child?.kill('SIGTERM');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let code = 1;
  try {
    if (needsHarness) {
      const started = Date.now();
      harness = await startHarness({ hosts: 2 });
      console.log(`harness ${harness.state.runId} ready in ${Date.now() - started} ms: Temporal ${harness.state.temporal.address} (UI ${harness.state.temporal.uiUrl}), hosts ${harness.state.hosts.map((h) => `${h.hostId}@${h.address}`).join(', ')}`);
    }
    if (!interrupted) {
      child = spawn(
        process.execPath,
        ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=600000', '--test-reporter=spec', ...files],
        { stdio: 'inherit', cwd: repoRoot, env: { ...process.env, ...(harness ? { [harnessStateEnv]: harness.stateFile } : {}) } },
      );
      code = await new Promise<number>((resolve) => child!.on('exit', (c, s) => resolve(c ?? (s ? 128 : 1))));
    }
  } catch (err) {
    console.error(err instanceof MissingPrerequisiteError ? err.message : err);
    code = 1;
  } finally {
    if (harness) {
      try {
        await harness.teardown();
      } catch (err) {
        console.error(`teardown failed: ${(err as Error).message}`);
        code = code || 1;
      }
    }
  }
  return interrupted ? 130 : code;
}

process.exit(await main());
