import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';
import {
  beginMarker,
  endMarker,
  median,
  mergeData,
  parseResultLines,
  readGeneratedData,
  renderSection,
  replaceGeneratedSection,
  stats,
  toResult,
  toRow,
  type GeneratedData,
  type ResultInput,
  type RunInfo,
} from '../../bench/results.js';

const order = ['proxy', 'login', 'migrate'];

test('median and min-max: odd and even counts, unsorted input, non-finite samples ignored', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  assert.deepEqual(stats([5, NaN, 1, 9, Infinity]), { median: 5, min: 1, max: 9, n: 3 });
  assert.deepEqual(stats([7]), { median: 7, min: 7, max: 7, n: 1 });
  assert.equal(stats([]).n, 0);
});

test('a result carries its statistics, ratio ours/baseline and the goal verdict', () => {
  const overhead: ResultInput = { name: 'cold', metric: 'orchestration overhead', unit: 'ms', better: 'lower', samples: [110, 130, 120], baseline: { name: 'raw', samples: [100, 99, 101] }, goal: { on: 'overhead', op: '<=', value: 0.1 } };
  const r = toResult('login', overhead, new Date('2026-12-04T00:00:00Z'));
  assert.deepEqual(r.ours, { median: 120, min: 110, max: 130, n: 3 });
  assert.equal(r.ratio, 1.2);
  assert.equal(r.goal!.met, false);
  assert.ok(Math.abs(r.goal!.actual! - 0.2) < 1e-12);
  assert.equal(toResult('login', { ...overhead, samples: [105] }).goal!.met, true);
  assert.equal(toResult('p', { name: 'x', metric: 'rate', unit: 'req/s', better: 'higher', samples: [30], baseline: { name: 'chp', samples: [10] }, goal: { on: 'ratio', op: '>=', value: 3 } }).goal!.met, true);
  assert.equal(toResult('p', { name: 'x', metric: 'p99', unit: 'ms', better: 'lower', samples: [1.5], baseline: { name: 'direct', samples: [0.4] }, goal: { on: 'difference', op: '<', value: 1 } }).goal!.met, false);
  assert.equal(toResult('m', { name: 'x', metric: 'latency', unit: 'ms', better: 'lower', samples: [1000, 3100], goal: { on: 'max', op: '<', value: 3000 } }).goal!.met, false);
  // Without a baseline there is no ratio, and a goal on it cannot be met.
  const lone = toResult('m', { name: 'x', metric: 'wall', unit: 'ms', better: 'lower', samples: [1], goal: { on: 'overhead', op: '<=', value: 0.1 } });
  assert.equal(lone.ratio, undefined);
  assert.equal(lone.goal!.met, false);
  assert.equal(lone.goal!.actual, null);
  // The JSON-lines contract round-trips.
  assert.deepEqual(parseResultLines(`${JSON.stringify(r)}\n\n${JSON.stringify(lone)}\n`), [r, lone]);
  assert.throws(() => parseResultLines('{"bench":'), /line 1 is not JSON/);
});

function runInfo(id: string, benches: string[]): RunInfo {
  return { id, date: id, commit: `c-${id.slice(0, 4)}`, machine: 'test CPU, 2 cores', loadStart: [0.5, 0.4, 0.3], loadEnd: [1, 1, 1], seconds: 600, benches };
}

function runOf(id: string, rows: [string, string, number[], number[]?][]): GeneratedData {
  const benches = [...new Set(rows.map(([b]) => b))];
  return {
    runs: [runInfo(id, benches)],
    benchRuns: benches.map((bench) => ({ bench, runId: id, startedAt: id, seconds: 60, exitCode: 0, loadStart: 0.5, loadEnd: 1 })),
    rows: rows.map(([bench, name, samples, base]) =>
      toRow(toResult(bench, { name, metric: 'wall time', unit: 'ms', better: 'lower', samples, ...(base ? { baseline: { name: 'raw', samples: base } } : {}), goal: { on: 'overhead', op: '<=', value: 0.1 } }), id),
    ),
  };
}

const handWritten = `# Benchmarks

Intro paragraph.

## Machine

| | |
|---|---|
| Host | a VM |

## Transfer between hosts (\`bench/transfer.ts\`)

Text with trailing spaces   
and a table | a | b |
`;

test('the generated section goes after the Machine section, and every other byte of the file stays', () => {
  const section = renderSection(runOf('2026-12-04T10:00:00.000Z', [['login', 'cold', [120, 110, 130], [100, 101, 99]]]));
  const doc = replaceGeneratedSection(handWritten, section);
  const at = doc.indexOf(beginMarker);
  assert.ok(at > doc.indexOf('| Host | a VM |') && at < doc.indexOf('## Transfer between hosts'));
  // Removing the section (and the blank line added after it) gives back the file byte for byte.
  assert.equal(doc.slice(0, at) + doc.slice(doc.indexOf(endMarker) + endMarker.length + 2), handWritten);
  // Rewriting replaces only what is between the markers.
  const again = replaceGeneratedSection(doc, renderSection(runOf('2026-12-05T10:00:00.000Z', [['login', 'cold', [200], [100]]])));
  assert.equal(again.slice(0, again.indexOf(beginMarker)), doc.slice(0, at));
  assert.equal(again.slice(again.indexOf(endMarker)), doc.slice(doc.indexOf(endMarker)));
  assert.match(again, /\| login \| cold \| wall time, lower is better \| 200 ms \(n=1\) \| raw \| 100 ms \(n=1\) \| 2\.00x \| overhead ≤ 10\.0%: \+100\.0%, \*\*missed\*\* \| A \|/);
  // A file without a Machine section gets it before its first heading; one marker alone is refused.
  assert.ok(replaceGeneratedSection('# B\n\n## One\n', section).startsWith(`# B\n\n${beginMarker}`));
  assert.throws(() => replaceGeneratedSection(`x ${beginMarker} y`, section), /one generated-section marker/);
});

test('the real docs/benchmarks.md: its section can be rewritten and everything outside it is unchanged', () => {
  const real = readFileSync(join(repoRoot, 'docs', 'benchmarks.md'), 'utf8');
  const section = renderSection(runOf('2026-12-04T10:00:00.000Z', [['proxy', 'small', [10, 11, 12], [40, 41, 42]]]));
  const rewritten = replaceGeneratedSection(real, section);
  const b = rewritten.indexOf(beginMarker);
  const e = rewritten.indexOf(endMarker) + endMarker.length;
  if (real.includes(beginMarker)) {
    assert.equal(rewritten.slice(0, b), real.slice(0, real.indexOf(beginMarker)));
    assert.equal(rewritten.slice(e), real.slice(real.indexOf(endMarker) + endMarker.length));
  } else {
    assert.equal(rewritten.slice(0, b) + rewritten.slice(e + 2), real, 'inserted before the heading after Machine, with a blank line');
  }
  assert.equal(readGeneratedData(rewritten).rows[0]!.name, 'small');
});

test('a subset run replaces only its benches\' rows; the others keep theirs with their own run', () => {
  const first = runOf('2026-12-04T10:00:00.000Z', [
    ['proxy', 'small', [10], [40]],
    ['login', 'cold', [120], [100]],
    ['login', 'warm', [300], [100]],
    ['migrate', 'base -> host', [14], [16]],
  ]);
  const doc1 = replaceGeneratedSection(handWritten, renderSection(mergeData({ runs: [], benchRuns: [], rows: [] }, first, order)));
  const kept = readGeneratedData(doc1);
  assert.deepEqual(kept, mergeData({ runs: [], benchRuns: [], rows: [] }, first, order), 'the data round-trips through the document');

  const second = runOf('2026-12-05T10:00:00.000Z', [['login', 'cold', [105], [100]]]);
  second.runs[0]!.note = 'another suite ran on the same cores';
  const merged = mergeData(kept, second, order);
  assert.deepEqual(
    merged.rows.map((r) => [r.bench, r.name, r.ours.median, r.runId.slice(0, 10)]),
    [
      ['proxy', 'small', 10, '2026-12-04'],
      ['login', 'cold', 105, '2026-12-05'],
      ['migrate', 'base -> host', 14, '2026-12-04'],
    ],
    "login's rows are this run's (its warm row is gone with the old run's login), the others stay",
  );
  assert.deepEqual(merged.runs.map((r) => r.id.slice(0, 10)), ['2026-12-04', '2026-12-05']);
  assert.deepEqual(merged.benchRuns.map((b) => [b.bench, b.runId.slice(0, 10)]), [['proxy', '2026-12-04'], ['login', '2026-12-05'], ['migrate', '2026-12-04']]);
  const doc2 = replaceGeneratedSection(doc1, renderSection(merged));
  assert.match(doc2, /\| proxy \| small \|[^\n]*\| A \|/);
  assert.match(doc2, /\| login \| cold \|[^\n]*\| B \|/);
  assert.match(doc2, /\nRun B: another suite ran on the same cores\n/);
  assert.equal(doc2.slice(doc2.indexOf(endMarker)), doc1.slice(doc1.indexOf(endMarker)));

  // A bench that ran and reported nothing (it failed) keeps its old rows and the run line that made them.
  const failedRun: GeneratedData = { runs: [runInfo('2026-12-06T10:00:00.000Z', ['migrate'])], benchRuns: [{ bench: 'migrate', runId: '2026-12-06T10:00:00.000Z', startedAt: '', seconds: 5, exitCode: 1, loadStart: 1, loadEnd: 1 }], rows: [] };
  const afterFailure = mergeData(merged, failedRun, order);
  assert.deepEqual(afterFailure.rows, merged.rows);
  assert.deepEqual(afterFailure.runs.map((r) => r.id.slice(0, 10)), ['2026-12-04', '2026-12-05'], 'a run that left no row is not listed');

  // Once every bench has rows of a newer run, the old run goes from the runs table.
  const all = mergeData(merged, runOf('2026-12-07T10:00:00.000Z', [['proxy', 'small', [11], [40]], ['migrate', 'base -> host', [13], [16]]]), order);
  assert.deepEqual(all.runs.map((r) => r.id.slice(0, 10)), ['2026-12-05', '2026-12-07']);
});

test('names with | or > do not break the table or the embedded data', () => {
  const data = runOf('2026-12-04T10:00:00.000Z', [['proxy', 'a | b --> c', [1], [2]]]);
  const doc = replaceGeneratedSection(handWritten, renderSection(data));
  assert.equal(readGeneratedData(doc).rows[0]!.name, 'a | b --> c');
  assert.ok(doc.includes('a \\| b --\\u003e c') === false);
  assert.match(doc, /\| a \\\| b --> c \|/);
});
