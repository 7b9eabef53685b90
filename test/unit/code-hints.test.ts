import assert from 'node:assert/strict';
import { test } from 'node:test';
import { analyzeCode, executeCodeOf, executePathPattern } from '../../lib/code-hints.js';

const hintsOf = (code: string) => {
  const h = analyzeCode(code);
  return { gpuHint: h.gpuHint, gpuUse: h.gpuUse, bigRam: h.bigRam };
};

test("the seeds' GPU patterns raise a GPU hint", () => {
  for (const code of [
    'import torch',
    'from torch import nn',
    'import tensorflow as tf',
    'from tensorflow import keras',
    'import jax.numpy as jnp',
    'import cupy',
    'import rapids',
    'pip install torch',
    'pip install tensorflow',
    'uv pip install torch',
  ]) {
    assert.equal(analyzeCode(code).gpuHint, true, code);
  }
});

test('GPU hints the seeds missed', () => {
  for (const code of [
    'import numpy as np, torch',
    'import os, torch as t',
    'try:\n    import torch\nexcept ImportError:\n    torch = None',
    '%pip install -U torch torchvision',
    '!pip install "torch==2.4.0"',
    'python -m pip install --quiet jax[cuda12]',
    'conda install -y pytorch-cuda cupy',
    'subprocess.run(["pip", "install", "vllm"])',
    'import cudf',
    'print(torch.cuda.is_available())',
    '!nvidia-smi',
  ]) {
    assert.equal(analyzeCode(code).gpuHint, true, code);
  }
});

test('putting work on the GPU is GPU use, and implies the hint', () => {
  for (const code of [
    'x = torch.ones(3).cuda()',
    'model.cuda(0)',
    'model = model.to("cuda")',
    "t = t.to('cuda:1')",
    'x = torch.zeros(4, device="cuda")',
    'dev = torch.device("cuda")',
    "with tf.device('/GPU:0'):\n    y = f(x)",
    "jax.devices('gpu')",
    'a = cp.asarray([1, 2, 3])',
    '@cuda.jit\ndef kernel(a):\n    pass',
  ]) {
    assert.deepEqual(hintsOf(code), { gpuHint: true, gpuUse: true, bigRam: false }, code);
  }
});

test('comments, docstrings and prose do not count', () => {
  for (const code of [
    '# import torch',
    'x = 1  # model.cuda() later',
    '"""\nimport torch\nmodel.cuda()\n"""\nx = 1',
    "print('we will call .cuda() and import torch once the data are in, which is not yet the case')",
    'import numpy as np',
    'from mytorchutils import helpers',
    'import torchlike',
    'pip install numpy pandas',
    'is_available = 3',
  ]) {
    assert.deepEqual(hintsOf(code), { gpuHint: false, gpuUse: false, bigRam: false }, code);
  }
});

test('big reads raise the big-RAM hint', () => {
  for (const code of [
    'df = pd.read_csv("big.csv")',
    "df = pd.read_parquet('s3://bucket/x.parquet')",
    'df = pd.read_feather(path)',
    "df = pd.read_json('events.jsonl', lines=True)",
    'import dask.dataframe as dd',
    "df = pl.scan_parquet('data/*.parquet')",
    'table = pq.read_table(path)',
    "arr = np.load('weights.npy')",
    "ds = xr.open_dataset('era5.nc')",
    "ds = load_dataset('imdb')",
  ]) {
    assert.deepEqual(hintsOf(code), { gpuHint: false, gpuUse: false, bigRam: true }, code);
  }
  assert.deepEqual(hintsOf("import torch\ndf = pd.read_csv('x.csv')"), { gpuHint: true, gpuUse: false, bigRam: true }, 'both can fire for one cell');
  assert.deepEqual(hintsOf("df = pd.read_json('small.json')"), { gpuHint: false, gpuUse: false, bigRam: false }, 'read_json without lines is not flagged');
});

test('the findings name what matched', () => {
  assert.deepEqual(analyzeCode('import numpy, torch\nx.cuda()').matched, ['import torch', '.cuda()']);
});

test('the execute paths the edge reads, and the code of their bodies', () => {
  for (const p of ['/proxy/8888/mrp/v1/execute', '/proxy/41234/mrp/v1/execute/stream', '/proxy/8888/mrp/v1/execute?x=1']) assert.ok(executePathPattern.test(p), p);
  for (const p of ['/proxy/8888/mrp/v1/complete', '/api/file', '/proxy/x/mrp/v1/execute', '/proxy/8888/mrp/v1/executes']) assert.ok(!executePathPattern.test(p), p);
  assert.equal(executeCodeOf(Buffer.from('{"code":"import torch","storeHistory":true}')), 'import torch');
  assert.equal(executeCodeOf(Buffer.from('{"cod":"x"}')), undefined);
  assert.equal(executeCodeOf(Buffer.from('not json')), undefined);
});
