import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { MissingPrerequisiteError } from '../../infra/dev/prerequisites.js';
import { repoRoot } from '../../lib/paths.js';
import { harnessStateEnv, startHarness, type RunningHarness } from './harness.js';
import { runMarkerEnv } from './leftovers.js';

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
/** The whole run's limit: well inside CI's 90 minutes, so a hang still ends with a report and a teardown. */
const runBudgetS = Number(process.env.MARKCO_TEST_BUDGET_S ?? 3000);
const teardownBudgetS = 300;
/** One file's limit (node's --test-timeout): the slowest file takes about 3 minutes. */
const fileTimeoutS = Number(process.env.MARKCO_TEST_FILE_TIMEOUT_S ?? 600);

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
        ['--import', 'tsx', '--test', '--test-concurrency=1', `--test-timeout=${fileTimeoutS * 1000}`, '--test-reporter=spec', ...files],
        { stdio: 'inherit', cwd: repoRoot, env: { ...process.env, ...(harness ? { [harnessStateEnv]: harness.stateFile } : {}) } },
      );
      // A run that outlives its budget is stopped here, with the harness torn down, rather than by CI's limit.
      const deadline = setTimeout(() => {
        console.error(`[test] the run passed its ${runBudgetS} s budget (MARKCO_TEST_BUDGET_S): stopping it`);
        child?.kill('SIGTERM');
      }, runBudgetS * 1000);
      code = await new Promise<number>((resolve) => child!.on('exit', (c, s) => resolve(c ?? (s ? 128 : 1))));
      clearTimeout(deadline);
    }
  } catch (err) {
    console.error(err instanceof MissingPrerequisiteError ? err.message : err);
    code = 1;
  } finally {
    if (harness) {
      try {
        let bound: NodeJS.Timeout | undefined;
        const teardownStarted = Date.now();
        await Promise.race([
          harness.teardown(),
          new Promise((_, reject) => (bound = setTimeout(() => reject(new Error(`not done after ${teardownBudgetS} s; the run's processes carry ${runMarkerEnv} for a later run's sweep`)), teardownBudgetS * 1000))),
        ]).finally(() => clearTimeout(bound));
        console.log(`[test] harness torn down in ${Date.now() - teardownStarted} ms`);
      } catch (err) {
        console.error(`teardown failed: ${(err as Error).message}`);
        code = code || 1;
      }
    }
  }
  return interrupted ? 130 : code;
}

process.exit(await main());
