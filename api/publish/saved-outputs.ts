import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { escapeHtml } from '../html.js';

/**
 * Saved cell outputs, shown under their code blocks on published pages. The seeds read
 * `<project>/.mrmd/outputs/<page path>.json` and never used it (SEED-CONTRACTS §5, 9 R); its content was
 * never specified, so this is the format, documented in README.md:
 *
 *   .mrmd/outputs/02-guide/01-setup.md.json
 *   { "version": 1,
 *     "cells": [ { "cell": 0, "code_sha256": "<hex, optional>",
 *                  "stdout": "...", "stderr": "...", "result": "42",
 *                  "error": { "type": "NameError", "message": "...", "traceback": ["..."] },
 *                  "displayData": [ { "data": { "image/png": "<base64>", "text/plain": "..." } } ] } ] }
 *
 * A cell's fields are those of an MRP ExecuteResult (mrmd-python `/mrp/v1/execute`), so an editor can save
 * what the runtime answered as it is. `cell` counts the page's fenced code blocks from 0 in document order;
 * with `code_sha256` (SHA-256 of the block's code) an output whose code has since changed is not shown.
 *
 * Pages are served from the edge's own origin, where sessions live, so nothing here becomes markup the
 * user wrote: text is escaped, HTML outputs are shown as their text/plain form, and images become `<img>`
 * with a data: URL (an SVG in an <img> runs no script).
 */
export interface SavedCell {
  cell: number;
  codeSha256: string | null;
  stdout: string;
  stderr: string;
  result: string | null;
  error: { type: string; message: string; traceback: string[] } | null;
  displayData: Record<string, string>[];
}

export function outputsPathOf(pageFile: string): string {
  return posix.join('.mrmd', 'outputs', `${pageFile}.json`);
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** The cells of an outputs file; anything malformed is dropped rather than failing the page. */
export function parseSavedOutputs(json: string): Map<number, SavedCell> {
  const cells = new Map<number, SavedCell>();
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return cells;
  }
  const list = doc && typeof doc === 'object' && Array.isArray((doc as { cells?: unknown }).cells) ? (doc as { cells: unknown[] }).cells : [];
  for (const raw of list) {
    if (!raw || typeof raw !== 'object') continue;
    const c = raw as Record<string, unknown>;
    if (typeof c.cell !== 'number' || !Number.isInteger(c.cell) || c.cell < 0 || cells.has(c.cell)) continue;
    const err = c.error && typeof c.error === 'object' ? (c.error as Record<string, unknown>) : null;
    cells.set(c.cell, {
      cell: c.cell,
      codeSha256: typeof c.code_sha256 === 'string' ? c.code_sha256.toLowerCase() : null,
      stdout: str(c.stdout),
      stderr: str(c.stderr),
      result: typeof c.result === 'string' ? c.result : null,
      error: err ? { type: str(err.type), message: str(err.message), traceback: Array.isArray(err.traceback) ? err.traceback.map(str) : [] } : null,
      displayData: Array.isArray(c.displayData)
        ? c.displayData.flatMap((d) => {
            const data = d && typeof d === 'object' ? (d as { data?: unknown }).data : null;
            if (!data || typeof data !== 'object') return [];
            return [Object.fromEntries(Object.entries(data).filter((e): e is [string, string] => typeof e[1] === 'string'))];
          })
        : [],
    });
  }
  return cells;
}

export function codeSha256(code: string): string {
  return createHash('sha256').update(code, 'utf8').digest('hex');
}

const imageTypes = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/svg+xml'] as const;
const base64Pattern = /^[A-Za-z0-9+/\r\n]+={0,2}\s*$/;
/** ANSI colour codes from tracebacks and progress bars mean nothing on a page. */
const stripAnsi = (s: string) => s.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');

function displayHtml(data: Record<string, string>): string {
  for (const type of imageTypes) {
    const value = data[type];
    if (value === undefined) continue;
    const base64 = type === 'image/svg+xml' && !base64Pattern.test(value) ? Buffer.from(value, 'utf8').toString('base64') : value.replace(/\s+/g, '');
    if (!base64Pattern.test(base64)) continue;
    return `<img class="output-image" alt="${escapeHtml(data['text/plain'] ?? 'cell output')}" src="data:${type};base64,${base64}">`;
  }
  const text = data['text/markdown'] ?? data['text/plain'];
  return text !== undefined ? `<pre class="output-text">${escapeHtml(stripAnsi(text))}</pre>` : '';
}

/** The HTML shown under a code block, or '' (no saved output, or one for other code). */
export function savedOutputHtml(cell: SavedCell | undefined, code: string): string {
  if (!cell) return '';
  if (cell.codeSha256 && cell.codeSha256 !== codeSha256(code)) return '';
  const parts: string[] = [];
  if (cell.stdout) parts.push(`<pre class="output-text output-stdout">${escapeHtml(stripAnsi(cell.stdout))}</pre>`);
  if (cell.stderr) parts.push(`<pre class="output-text output-stderr">${escapeHtml(stripAnsi(cell.stderr))}</pre>`);
  for (const d of cell.displayData) parts.push(displayHtml(d));
  if (cell.result !== null) parts.push(`<pre class="output-text output-result">${escapeHtml(stripAnsi(cell.result))}</pre>`);
  if (cell.error) {
    const trace = cell.error.traceback.length > 0 ? cell.error.traceback.join('\n') : `${cell.error.type}: ${cell.error.message}`;
    parts.push(`<pre class="output-text output-error">${escapeHtml(stripAnsi(trace))}</pre>`);
  }
  const html = parts.filter(Boolean).join('');
  return html ? `<div class="cell-output" role="group" aria-label="Output">${html}</div>` : '';
}
