/**
 * What a cell's code says about the resources it is about to need, read at the edge from the MRP execute
 * requests the user's browser sends (`/u/<id>/proxy/<rtPort>/mrp/v1/execute`, and `/execute/stream`).
 *
 * Three findings, each with the patterns that matched:
 * - `gpuHint`: GPU libraries are imported or installed. Worth a GPU host booting in the background.
 * - `gpuUse`: this cell puts work on the GPU (`.cuda()`, `.to("cuda")`, `device="cuda"` ...). The runtime
 *   must be on a GPU host before it runs.
 * - `bigRam`: the cell reads a dataset whole (pandas, polars, pyarrow, dask, numpy, xarray). Worth the next
 *   tier booting in the background.
 *
 * Better than the seeds' regexes on raw text: comments and docstrings no longer count (`# import torch`),
 * `import numpy, torch as t`, `%pip`/`!pip`/`uv pip`/`conda install` with flags and several packages are
 * recognised, and `torch.cuda.is_available()` alone is only a hint, not GPU use.
 */
export interface CodeHints {
  gpuHint: boolean;
  gpuUse: boolean;
  bigRam: boolean;
  /** The names of the patterns that matched, for the event log. */
  matched: string[];
}

/** Only this much of a cell is read: enough for any real cell, bounded for a pasted blob. */
export const maxAnalyzedChars = 256 * 1024;

const gpuPackages = ['torch', 'torchvision', 'torchaudio', 'tensorflow', 'tensorflow_gpu', 'jax', 'jaxlib', 'cupy', 'cudf', 'cuml', 'cugraph', 'rapids', 'numba.cuda', 'pycuda', 'triton', 'vllm', 'xformers', 'bitsandbytes', 'flash_attn'];
/** Package names as pip knows them (dashes), for install commands. */
const gpuDistributions = ['torch', 'pytorch', 'pytorch-cuda', 'torchvision', 'torchaudio', 'tensorflow', 'tensorflow-gpu', 'tf-nightly', 'jax', 'jaxlib', 'cupy', 'cupy-cuda\\w*', 'cudf\\S*', 'cuml\\S*', 'pycuda', 'triton', 'vllm', 'xformers', 'bitsandbytes', 'flash-attn', 'nvidia-\\S+', 'jax\\[cuda\\w*\\]'];

const alt = (names: string[]) => names.map((n) => n.replace(/\./g, '\\.')).join('|');

/** `import a, b as c` / `from a.b import c`: the top-level modules a line imports. */
const importLine = /^[ \t]*(?:import[ \t]+([\w., \t]+?)|from[ \t]+([\w.]+)[ \t]+import\b.*)[ \t]*$/gm;
const gpuModule = new RegExp(`^(?:${alt(gpuPackages)})(?:\\.|$)`);

const gpuInstall = new RegExp(`^[ \\t]*[!%]?[ \\t]*(?:(?:uv[ \\t]+)?pip3?|python3?[ \\t]+-m[ \\t]+pip|conda|mamba|micromamba)[ \\t]+install\\b[^\\n]*?[ \\t]["']?(?:${gpuDistributions.join('|')})(?:[=<>!~\\[ \\t"']|$)`, 'm');
/** pip inside a subprocess call: `subprocess.run(["pip", "install", "torch"])`. */
const gpuInstallCall = new RegExp(`["']pip3?["'][ \\t]*,[ \\t]*["']install["'][^\\n]*?["'](?:${gpuDistributions.join('|')})["']`);

const gpuUsePatterns: [string, RegExp][] = [
  ['.cuda()', /\.cuda[ \t]*\([^)]*\)/],
  ['.to(cuda)', /\.to[ \t]*\([ \t]*(?:device[ \t]*=[ \t]*)?["']cuda(?::\d+)?["']/],
  ['device=cuda', /\bdevice[ \t]*=[ \t]*["']cuda(?::\d+)?["']/],
  ['torch.device(cuda)', /\btorch\.device[ \t]*\([ \t]*["']cuda/],
  ['tf.device(GPU)', /\.device[ \t]*\([ \t]*["']\/?(?:device:)?GPU/i],
  ['jax gpu', /\bjax\.devices[ \t]*\([ \t]*["']gpu["']/],
  ['cupy array', /\b(?:cupy|cp)\.(?:array|asarray|zeros|ones|empty|arange|random)\b/],
  ['numba.cuda.jit', /\bcuda\.jit\b/],
  ['.to(device) with cuda', /\bdevice[ \t]*=[ \t]*torch\.device[ \t]*\([ \t]*["']cuda/],
];

const gpuHintPatterns: [string, RegExp][] = [
  ['cuda.is_available', /\bcuda\.is_available[ \t]*\(/],
  ['nvidia-smi', /^[ \t]*!?[ \t]*nvidia-smi\b/m],
];

const bigRamPatterns: [string, RegExp][] = [
  ['pandas.read_csv', /\bread_csv[ \t]*\(/],
  ['read_parquet', /\bread_parquet[ \t]*\(/],
  ['read_feather', /\bread_feather[ \t]*\(/],
  ['read_json lines', /\.read_json[ \t]*\([^)\n]*lines[ \t]*=[ \t]*True/],
  ['read_excel', /\bread_excel[ \t]*\(/],
  ['read_sql', /\bread_sql(?:_query|_table)?[ \t]*\(/],
  ['read_hdf', /\bread_hdf[ \t]*\(/],
  ['polars scan/read', /\b(?:pl|polars)\.(?:read|scan)_(?:csv|parquet|ipc|ndjson|delta)[ \t]*\(/],
  ['pyarrow read_table', /\b(?:pq|parquet)\.read_table[ \t]*\(/],
  ['dask.dataframe', /\bdask\.dataframe\b|\bdd\.read_/],
  ['numpy load', /\b(?:np|numpy)\.(?:load|fromfile|loadtxt|genfromtxt|memmap)[ \t]*\(/],
  ['xarray open', /\b(?:xr|xarray)\.open_(?:mf)?dataset[ \t]*\(/],
  ['datasets.load_dataset', /\bload_dataset[ \t]*\(/],
];

/**
 * The code without comments and without the contents of string literals (replaced by blanks of the same
 * length, quotes kept), so `# import torch` and a docstring mentioning `.cuda()` count for nothing. Short
 * string literals stay readable in `strings`: `.to("cuda")` is judged on the original text, but only where
 * the code around it is code.
 */
function codeOnly(source: string): string {
  let out = '';
  let i = 0;
  const n = source.length;
  while (i < n) {
    const c = source[i]!;
    if (c === '#') {
      while (i < n && source[i] !== '\n') {
        out += ' ';
        i++;
      }
      continue;
    }
    if (c === '"' || c === "'") {
      const triple = source.startsWith(c.repeat(3), i);
      const quote = triple ? c.repeat(3) : c;
      let j = i + quote.length;
      while (j < n && !source.startsWith(quote, j)) {
        if (source[j] === '\\') j++;
        else if (!triple && source[j] === '\n') break;
        j++;
      }
      const end = Math.min(n, j + (source.startsWith(quote, j) ? quote.length : 0));
      const literal = source.slice(i, end);
      // Docstrings and long strings are prose; short literals ("cuda", "GPU:0") are arguments and stay.
      if (triple || literal.length > 40) out += literal.replace(/[^\n]/g, ' ');
      else out += literal;
      i = end;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}

export function analyzeCode(code: string): CodeHints {
  const text = codeOnly(code.length > maxAnalyzedChars ? code.slice(0, maxAnalyzedChars) : code);
  const matched: string[] = [];
  let gpuHint = false;
  for (const m of text.matchAll(importLine)) {
    const modules = m[1] !== undefined ? m[1].split(',').map((part) => part.trim().split(/[ \t]+as[ \t]+/)[0]!.trim()) : [m[2]!];
    const hit = modules.find((mod) => gpuModule.test(mod));
    if (hit) {
      gpuHint = true;
      matched.push(`import ${hit}`);
      break;
    }
  }
  if (gpuInstall.test(text) || gpuInstallCall.test(text)) {
    gpuHint = true;
    matched.push('install of a GPU package');
  }
  for (const [name, re] of gpuHintPatterns) {
    if (re.test(text)) {
      gpuHint = true;
      matched.push(name);
    }
  }
  let gpuUse = false;
  for (const [name, re] of gpuUsePatterns) {
    if (re.test(text)) {
      gpuUse = true;
      matched.push(name);
    }
  }
  let bigRam = false;
  for (const [name, re] of bigRamPatterns) {
    if (re.test(text)) {
      bigRam = true;
      matched.push(name);
    }
  }
  // Putting work on the GPU implies wanting one.
  return { gpuHint: gpuHint || gpuUse, gpuUse, bigRam, matched };
}

/** The MRP execute paths the edge reads (after `/u/<id>`): the editor's proxy to the runtime's port. */
export const executePathPattern = /^\/proxy\/\d{1,5}\/mrp\/v1\/execute(?:\/stream)?\/?(?:\?.*)?$/;

/** The `code` of an MRP execute body, or undefined when the body is not one. */
export function executeCodeOf(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as unknown;
    if (typeof parsed === 'object' && parsed !== null && typeof (parsed as { code?: unknown }).code === 'string') return (parsed as { code: string }).code;
  } catch {
    // Not JSON: the runtime will say so to the user; nothing to read here.
  }
  return undefined;
}
