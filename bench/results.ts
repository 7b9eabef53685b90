import { appendFileSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * The results contract between a benchmark and `bench/run.ts`.
 *
 * A bench calls `report()` once per measurement, next to the human-readable lines it prints. When the
 * bench runs under `npm run bench`, run.ts names a file in MARKCO_BENCH_RESULTS and each report is
 * appended to it as one JSON line (a `BenchResult`); run.ts reads them when the bench exits and rewrites
 * the generated section of docs/benchmarks.md. Run alone (`npx tsx bench/x.ts`), a bench reports nothing
 * beyond what it prints.
 *
 * Every measurement keeps its individual samples, so the table shows the median and min-max, and carries
 * the baseline measured in the same run, the ratio ours/baseline (medians), and the goal with whether it
 * is met. An orchestration overhead is a row whose goal is on `overhead` (ours/baseline - 1).
 */
export const resultsFileEnv = 'MARKCO_BENCH_RESULTS';
export const benchNameEnv = 'MARKCO_BENCH_NAME';

/**
 * What a goal is on: the median of ours, its max, ours/baseline (`ratio`), ours/baseline - 1
 * (`overhead`), or ours - baseline (`difference`, medians, in the unit).
 */
export type GoalOn = 'median' | 'max' | 'ratio' | 'overhead' | 'difference';
export interface Goal {
  on: GoalOn;
  op: '<=' | '<' | '>=' | '>';
  value: number;
  /** Where the goal comes from (e.g. "issue 10"). */
  source?: string;
}

export interface Stats {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** What a bench reports. */
export interface ResultInput {
  /** The measurement, unique within the bench (the row's key with the bench's name). */
  name: string;
  /** What is measured (wall time, throughput, CPU, orchestration overhead, ...). */
  metric: string;
  unit: string;
  /** Whether a smaller or a larger number is better (how the ratio reads). */
  better: 'lower' | 'higher';
  /** markco's individual samples. */
  samples: number[];
  baseline?: { name: string; samples: number[] };
  goal?: Goal;
  /** The bench's parameters for this row (sizes, rounds, connections). */
  params?: string;
}

/** One JSON line of the results file. */
export interface BenchResult {
  bench: string;
  name: string;
  metric: string;
  unit: string;
  better: 'lower' | 'higher';
  ours: Stats;
  samples: number[];
  baseline?: { name: string; stats: Stats; samples: number[] };
  /** ours.median / baseline.median. */
  ratio?: number;
  /** `actual` is what the goal is on (null when it cannot be computed, e.g. no baseline). */
  goal?: Goal & { actual: number | null; met: boolean };
  params?: string;
  at: string;
}

// ---------------------------------------------------------------- statistics (pure)

/** The median (the mean of the middle two for an even count); NaN for no samples. */
export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function stats(xs: readonly number[]): Stats {
  const finite = xs.filter((x) => Number.isFinite(x));
  if (finite.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  return { median: median(finite), min: Math.min(...finite), max: Math.max(...finite), n: finite.length };
}

function compare(actual: number, op: Goal['op'], value: number): boolean {
  if (!Number.isFinite(actual)) return false;
  switch (op) {
    case '<=':
      return actual <= value;
    case '<':
      return actual < value;
    case '>=':
      return actual >= value;
    case '>':
      return actual > value;
  }
}

/** The result line for a report: statistics, ratio and the goal's verdict computed once, here. */
export function toResult(bench: string, r: ResultInput, at = new Date()): BenchResult {
  const ours = stats(r.samples);
  const base = r.baseline ? stats(r.baseline.samples) : undefined;
  const ratio = base && base.median !== 0 ? ours.median / base.median : undefined;
  let goal: BenchResult['goal'];
  if (r.goal) {
    const actual = {
      median: ours.median,
      max: ours.max,
      ratio: ratio ?? NaN,
      overhead: ratio === undefined ? NaN : ratio - 1,
      difference: base ? ours.median - base.median : NaN,
    }[r.goal.on];
    goal = { ...r.goal, actual: Number.isFinite(actual) ? actual : null, met: compare(actual, r.goal.op, r.goal.value) };
  }
  return {
    bench,
    name: r.name,
    metric: r.metric,
    unit: r.unit,
    better: r.better,
    ours,
    samples: r.samples.filter((x) => Number.isFinite(x)),
    ...(r.baseline && base ? { baseline: { name: r.baseline.name, stats: base, samples: r.baseline.samples.filter((x) => Number.isFinite(x)) } } : {}),
    ...(ratio !== undefined ? { ratio } : {}),
    ...(goal ? { goal } : {}),
    ...(r.params ? { params: r.params } : {}),
    at: at.toISOString(),
  };
}

// ---------------------------------------------------------------- the bench side

function benchName(): string {
  return process.env[benchNameEnv] ?? basename(process.argv[1] ?? 'bench').replace(/\.[cm]?[jt]s$/, '');
}

/**
 * Reports one measurement to bench/run.ts (a JSON line in MARKCO_BENCH_RESULTS); without it, nothing.
 * Answers the result, for a bench that wants to print the ratio or the goal's verdict as computed here.
 */
export function report(r: ResultInput): BenchResult {
  const result = toResult(benchName(), r);
  const file = process.env[resultsFileEnv];
  if (file) appendFileSync(file, `${JSON.stringify(result)}\n`);
  return result;
}

/** The JSON lines of a results file (a line that does not parse is an error naming it). */
export function parseResultLines(text: string): BenchResult[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as BenchResult;
      } catch {
        throw new Error(`results line ${i + 1} is not JSON: ${l.slice(0, 200)}`);
      }
    });
}

// ---------------------------------------------------------------- docs/benchmarks.md (pure)

export const beginMarker = '<!-- bench:generated:begin -->';
export const endMarker = '<!-- bench:generated:end -->';
const dataPrefix = '<!-- bench:data ';

/** One bench's run within an `npm run bench`: when, on what, how loaded, how long. */
export interface BenchRun {
  bench: string;
  /** The run (one `npm run bench`) it belongs to. */
  runId: string;
  startedAt: string;
  seconds: number;
  exitCode: number | null;
  /** 1-minute load average when it started and when it ended. */
  loadStart: number;
  loadEnd: number;
  params?: string;
}

export interface RunInfo {
  id: string;
  date: string;
  commit: string;
  machine: string;
  /** Load averages (1, 5, 15 min) at the start and end of the whole run. */
  loadStart: number[];
  loadEnd: number[];
  seconds: number;
  benches: string[];
  /** What the operator said about the run (BENCH_NOTE): what else ran on the machine, what was reduced. */
  note?: string;
}

/** A table row as kept in the document: the result without its samples, and which run made it. */
export interface Row extends Omit<BenchResult, 'samples' | 'baseline'> {
  baseline?: { name: string; stats: Stats };
  runId: string;
}

export interface GeneratedData {
  runs: RunInfo[];
  benchRuns: BenchRun[];
  rows: Row[];
}

/** Six significant digits are plenty for a table row (the samples themselves are not kept). */
const round6 = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(6)) : x);
const roundStats = (s: Stats): Stats => ({ median: round6(s.median), min: round6(s.min), max: round6(s.max), n: s.n });

export function toRow(r: BenchResult, runId: string): Row {
  const { samples: _samples, baseline, ours, ratio, goal, ...rest } = r;
  return {
    ...rest,
    ours: roundStats(ours),
    ...(ratio !== undefined ? { ratio: round6(ratio) } : {}),
    ...(goal ? { goal: { ...goal, actual: goal.actual === null ? null : round6(goal.actual) } } : {}),
    ...(baseline ? { baseline: { name: baseline.name, stats: roundStats(baseline.stats) } } : {}),
    runId,
  };
}

/**
 * A subset run's results merged into what the document holds: every bench that reported in this run
 * has its rows (and its bench-run line) replaced; the others keep theirs, with their own run. Runs no
 * row refers to any more are dropped. Order: the known benches' order, then rows in reporting order.
 */
export function mergeData(old: GeneratedData, fresh: GeneratedData, order: readonly string[]): GeneratedData {
  const reported = new Set(fresh.rows.map((r) => r.bench));
  const ran = new Set(fresh.benchRuns.map((b) => b.bench));
  const rows = [...old.rows.filter((r) => !reported.has(r.bench)), ...fresh.rows];
  // A bench that ran but reported nothing (it failed) keeps its old rows and the run line that made them.
  const benchRuns = [...old.benchRuns.filter((b) => !(ran.has(b.bench) && reported.has(b.bench))), ...fresh.benchRuns.filter((b) => reported.has(b.bench) || !old.rows.some((r) => r.bench === b.bench))];
  const rank = (bench: string) => {
    const i = order.indexOf(bench);
    return i < 0 ? order.length : i;
  };
  const sortedRows = rows.map((r, i) => ({ r, i })).sort((a, b) => rank(a.r.bench) - rank(b.r.bench) || a.i - b.i).map((x) => x.r);
  const sortedBenchRuns = benchRuns.map((b, i) => ({ b, i })).sort((a, b) => rank(a.b.bench) - rank(b.b.bench) || a.i - b.i).map((x) => x.b);
  const usedRuns = new Set([...sortedRows.map((r) => r.runId), ...sortedBenchRuns.map((b) => b.runId)]);
  const runs = [...old.runs, ...fresh.runs.filter((r) => !old.runs.some((o) => o.id === r.id))].filter((r) => usedRuns.has(r.id));
  return { runs, benchRuns: sortedBenchRuns, rows: sortedRows };
}

/** The data kept in the generated section of a document, or empty data when there is none. */
export function readGeneratedData(doc: string): GeneratedData {
  const begin = doc.indexOf(beginMarker);
  const end = doc.indexOf(endMarker);
  if (begin < 0 || end < begin) return { runs: [], benchRuns: [], rows: [] };
  const section = doc.slice(begin, end);
  const at = section.indexOf(dataPrefix);
  if (at < 0) return { runs: [], benchRuns: [], rows: [] };
  const close = section.indexOf(' -->', at);
  return JSON.parse(section.slice(at + dataPrefix.length, close)) as GeneratedData;
}

/**
 * Replaces the generated section of `doc` with `section` (which must carry the markers), keeping every
 * other byte. Without markers, the section goes after the `## Machine` section (before the heading that
 * follows it), else before the first `## ` heading, else at the end.
 */
export function replaceGeneratedSection(doc: string, section: string): string {
  if (!section.startsWith(beginMarker) || !section.endsWith(endMarker)) throw new Error('a generated section starts and ends with its markers');
  const begin = doc.indexOf(beginMarker);
  const end = doc.indexOf(endMarker);
  if (begin >= 0 && end > begin) return doc.slice(0, begin) + section + doc.slice(end + endMarker.length);
  if (begin >= 0 || end >= 0) throw new Error('docs/benchmarks.md has one generated-section marker without the other');
  const machine = /^## Machine\s*$/m.exec(doc);
  const from = machine ? machine.index + machine[0].length : 0;
  const next = /^## /m.exec(doc.slice(from));
  if (next) {
    const at = from + next.index;
    return `${doc.slice(0, at)}${section}\n\n${doc.slice(at)}`;
  }
  return `${doc}${doc.endsWith('\n') || doc === '' ? '' : '\n'}\n${section}\n`;
}

// ---------------------------------------------------------------- rendering

/** A number with as many decimals as its size needs (3 significant digits below 100, whole above). */
export function fmt(x: number | null): string {
  if (x === null || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 100) return Math.round(x).toString();
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  if (a === 0) return '0';
  return x.toPrecision(2);
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function statsCell(s: Stats, unit: string): string {
  if (s.n === 0) return '–';
  const spread = s.n > 1 ? ` (${fmt(s.min)}–${fmt(s.max)}, n=${s.n})` : ' (n=1)';
  return `${fmt(s.median)} ${unit}${spread}`;
}

function goalCell(row: Row): string {
  const g = row.goal;
  if (!g) return '';
  return `${goalText(row)}${g.source ? ` (${g.source})` : ''}`;
}

function goalText(row: Row): string {
  const g = row.goal!;
  const op = { '<=': '≤', '<': '<', '>=': '≥', '>': '>' }[g.op];
  const verdict = g.met ? '**met**' : '**missed**';
  switch (g.on) {
    case 'overhead':
      return `overhead ${op} ${fmt(g.value * 100)}%: ${signedPercent(g.actual ?? NaN)}, ${verdict}`;
    case 'ratio':
      return `ratio ${op} ${fmt(g.value)}x: ${verdict}`;
    case 'difference':
      return `added ${op} ${fmt(g.value)} ${row.unit}: ${fmt(g.actual ?? NaN)} ${row.unit}, ${verdict}`;
    case 'max':
      return `max ${op} ${fmt(g.value)} ${row.unit}: ${verdict}`;
    case 'median':
      return `median ${op} ${fmt(g.value)} ${row.unit}: ${verdict}`;
  }
}

const signedPercent = (x: number) => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%` : '–');

export function renderSection(data: GeneratedData): string {
  const letter = new Map(data.runs.map((r, i) => [r.id, String.fromCharCode(65 + (i % 26)) + (i >= 26 ? String(Math.floor(i / 26)) : '')]));
  const lines: string[] = [beginMarker, '## Results (generated by `npm run bench`)', ''];
  lines.push(
    'Written by `bench/run.ts`; do not edit by hand. `npm run bench` runs every benchmark and rewrites this section;',
    '`npm run bench NAME...` replaces only those benches\' rows, and the others keep theirs, marked with the run that made',
    'them. Medians with min–max and the number of samples; the baseline is measured in the same run; the ratio is',
    'markco / baseline (medians): below 1 is better for times, above 1 for rates. An orchestration overhead is',
    'markco\'s wall time against the same raw commands run back to back, minus 1. The analysis sections below are',
    'written by hand and give each bench\'s setup and reading.',
    '',
  );
  lines.push('| Run | Date (UTC) | Commit | Machine | Load average at start → end (1, 5, 15 min) | Took | Benches |', '|---|---|---|---|---|---|---|');
  for (const r of data.runs) {
    lines.push(
      `| ${letter.get(r.id)} | ${r.date.slice(0, 16).replace('T', ' ')} | ${cell(r.commit)} | ${cell(r.machine)} | ${r.loadStart.map((l) => l.toFixed(2)).join(' ')} → ${r.loadEnd.map((l) => l.toFixed(2)).join(' ')} | ${Math.round(r.seconds / 60)} min | ${r.benches.join(', ')} |`,
    );
  }
  for (const r of data.runs) if (r.note) lines.push('', `Run ${letter.get(r.id)}: ${r.note}`);
  lines.push('', '| Bench | Run | Took | 1-min load at start → end | Exit | Parameters |', '|---|---|---|---|---|---|');
  for (const b of data.benchRuns) {
    lines.push(`| ${b.bench} | ${letter.get(b.runId) ?? '?'} | ${Math.round(b.seconds)} s | ${b.loadStart.toFixed(2)} → ${b.loadEnd.toFixed(2)} | ${b.exitCode ?? 'signal'} | ${cell(b.params ?? '')} |`);
  }
  lines.push('', '| Bench | Measurement | Metric | markco median (min–max, n) | Baseline | baseline median (min–max, n) | Ratio | Goal | Run |', '|---|---|---|---|---|---|---|---|---|');
  for (const r of data.rows) {
    lines.push(
      `| ${r.bench} | ${cell(r.name)}${r.params ? ` (${cell(r.params)})` : ''} | ${cell(r.metric)}, ${r.better} is better | ${statsCell(r.ours, r.unit)} | ${cell(r.baseline?.name ?? '')} | ${r.baseline ? statsCell(r.baseline.stats, r.unit) : ''} | ${r.ratio === undefined ? '' : `${fmt(r.ratio)}x`} | ${cell(goalCell(r))} | ${letter.get(r.runId) ?? '?'} |`,
    );
  }
  lines.push('', `${dataPrefix}${JSON.stringify(data).replace(/>/g, '\\u003e')} -->`, endMarker);
  return lines.join('\n');
}
