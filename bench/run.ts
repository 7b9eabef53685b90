import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../lib/paths.js';
import { benchNameEnv, mergeData, parseResultLines, readGeneratedData, renderSection, replaceGeneratedSection, resultsFileEnv, toRow, type BenchRun, type GeneratedData, type RunInfo } from './results.js';

/**
 * Runs every benchmark, one after the other (each starts the real parts it measures, prints its ratio
 * against a baseline measured in the same run, and reports each measurement through bench/results.ts),
 * then rewrites the generated section of docs/benchmarks.md: the machine, the date, the commit, the load,
 * and one row per measurement. `npm run bench [NAME...]` runs just those and replaces only their rows.
 * A bench's own arguments go in the environment its script reads (e.g. `GIB=0.25 npm run bench migrate`).
 * BENCH_NO_DOCS=1 leaves docs/benchmarks.md alone; BENCH_NOTE="..." is printed under the run in the table
 * (what else ran on the machine, which parameters were reduced).
 */
const all = ['proxy-core', 'proxy', 'proxy-peers', 'load', 'login', 'transfer', 'ssh2-cipher', 'migrate', 'idle-return', 'monitor', 'publish', 'elastic-cost', 'flight'];
const chosen = process.argv.slice(2).length > 0 ? process.argv.slice(2) : all;
for (const name of chosen) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark ${name}: expected one of ${all.join(', ')}`);
    process.exit(2);
  }
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

/** CPU model, cores, memory, kernel, distribution, and the tools the benches measure. */
function machine(): string {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown CPU';
  const distro = existsSync('/etc/os-release') ? (/^PRETTY_NAME="?([^"\n]+)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '') : '';
  const podman = sh('podman', ['--version']).replace(/^podman version /, '');
  const criu = /Version:\s*(\S+)/.exec(sh('criu', ['--version']))?.[1] ?? '';
  const tools = [`Node ${process.versions.node}`, podman && `podman ${podman}`, criu && `CRIU ${criu}`].filter(Boolean).join(', ');
  return `${model}, ${cpus().length} cores, ${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, kernel ${release()}, ${distro || 'unknown distribution'}; ${tools}`;
}

function commit(): string {
  const head = sh('git', ['rev-parse', '--short', 'HEAD']) || 'unknown';
  const changed = sh('git', ['status', '--porcelain', '--untracked-files=no', '--', 'bench', 'activities', 'workflows', 'api', 'lib', 'workers']);
  return changed ? `${head} + uncommitted changes` : head;
}

/** Bench parameters as the scripts read them from the environment (what a subset run may set). */
const paramEnv = ['GIB', 'ROUNDS', 'SIZES_MIB', 'CONTAINERS', 'SECONDS', 'CYCLES', 'MEGABYTES', 'ROWS'];

const startedAt = new Date();
const runId = startedAt.toISOString();
const loadStart = loadavg();
const scratch = mkdtempSync(join(tmpdir(), 'markco-bench-'));
const fresh: GeneratedData = { runs: [], benchRuns: [], rows: [] };
let failed = 0;
try {
  for (const name of chosen) {
    console.log(`\n## ${name}`);
    const file = join(scratch, `${name}.jsonl`);
    writeFileSync(file, '');
    const t0 = performance.now();
    const benchStart = loadavg()[0]!;
    const benchStartedAt = new Date().toISOString();
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', `${name}.ts`)], {
      stdio: 'inherit',
      cwd: repoRoot,
      env: { ...process.env, [resultsFileEnv]: file, [benchNameEnv]: name },
    });
    if (r.status !== 0) failed++;
    const results = parseResultLines(readFileSync(file, 'utf8'));
    const params = paramEnv.filter((k) => process.env[k] !== undefined).map((k) => `${k}=${process.env[k]}`).join(' ');
    const benchRun: BenchRun = { bench: name, runId, startedAt: benchStartedAt, seconds: (performance.now() - t0) / 1000, exitCode: r.status, loadStart: benchStart, loadEnd: loadavg()[0]!, ...(params ? { params } : {}) };
    fresh.benchRuns.push(benchRun);
    fresh.rows.push(...results.map((x) => toRow(x, runId)));
    console.log(`[bench] ${name}: ${results.length} measurement(s) reported, exit ${r.status ?? r.signal}, ${benchRun.seconds.toFixed(0)} s`);
    if (r.signal === 'SIGINT' || r.signal === 'SIGTERM') break;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const run: RunInfo = {
  id: runId,
  date: runId,
  commit: commit(),
  machine: machine(),
  loadStart,
  loadEnd: loadavg(),
  seconds: (Date.now() - startedAt.getTime()) / 1000,
  benches: fresh.benchRuns.map((b) => b.bench),
  ...(process.env.BENCH_NOTE ? { note: process.env.BENCH_NOTE } : {}),
};
fresh.runs.push(run);
console.log(`\n[bench] ${fresh.benchRuns.length} bench(es) in ${(run.seconds / 60).toFixed(1)} min; load average ${loadStart.map((l) => l.toFixed(2)).join(' ')} -> ${run.loadEnd.map((l) => l.toFixed(2)).join(' ')}`);
if (process.env.BENCH_NO_DOCS !== '1' && fresh.rows.length > 0) {
  const docPath = join(repoRoot, 'docs', 'benchmarks.md');
  const doc = readFileSync(docPath, 'utf8');
  const merged = mergeData(readGeneratedData(doc), fresh, all);
  writeFileSync(docPath, replaceGeneratedSection(doc, renderSection(merged)));
  console.log(`[bench] docs/benchmarks.md: ${fresh.rows.length} row(s) from this run, ${merged.rows.length} in all`);
}
process.exit(failed === 0 ? 0 : 1);
