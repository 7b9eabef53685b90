import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../lib/config.js';
import { gpuTierFor, gpuTierOf, hostReserveBytes } from '../../lib/tiers.js';
import { setCheckpointImage } from '../../activities/podman-commands.js';
import * as gpu from '../../workflows/gpu-policy.js';

const GiB = 1024 ** 3;
const config: gpu.GpuPolicyConfig = { tier: 'g5.xlarge', idleAfterMs: 60_000, hintCooldownMs: 600_000, retryAfterMs: 30_000 };
const onCpu: gpu.GpuPlacement = { hostId: 'base', tier: 'base', since: 0 };
const onGpu: gpu.GpuPlacement = { hostId: 'ec2-0123456789ab', tier: 'g5.xlarge', since: 100_000 };

test('gpu-hint pre-provisions the GPU tier once per cooldown, never when already there or without a GPU tier', () => {
  let s = gpu.initialGpuState;
  const first = gpu.onHint(s, onCpu, 1000, config);
  assert.deepEqual(first.action, { kind: 'pre-provision', tier: 'g5.xlarge' });
  s = first.state;
  assert.equal(gpu.onHint(s, onCpu, 2000, config).action.kind, 'none', 'a second import within the cooldown');
  assert.equal(gpu.onHint(s, onCpu, 1000 + 600_000, config).action.kind, 'pre-provision', 'after the reservation has lapsed');
  assert.equal(gpu.onHint(gpu.initialGpuState, onGpu, 1000, config).action.kind, 'none');
  assert.match((gpu.onHint(gpu.initialGpuState, onCpu, 1000, { ...config, tier: null }).action as { reason: string }).reason, /no GPU tier/);
});

test('GPU use hops onto the GPU tier, is recorded while there, and needs a running runtime', () => {
  assert.deepEqual(gpu.onUse(gpu.initialGpuState, onCpu, 5000, config).action, { kind: 'hop', tier: 'g5.xlarge' });
  const there = gpu.onUse(gpu.initialGpuState, onGpu, 150_000, config);
  assert.equal(there.action.kind, 'none');
  assert.equal(there.state.lastUseAt, 150_000);
  assert.match((gpu.onUse(gpu.initialGpuState, null, 5000, config).action as { reason: string }).reason, /no runtime/);
});

test('back to CPU after the GPU work is idle for idleAfterMs: GPU cells and a busy CPU hold it; a failed return is retried, spaced', () => {
  let s = gpu.onUse(gpu.initialGpuState, onGpu, 110_000, config).state;
  assert.equal(gpu.nextDueAt(s, onGpu, config), 170_000);
  assert.equal(gpu.onTimer(s, onGpu, 169_999, config).action.kind, 'none');
  s = gpu.onBusy(s, 150_000);
  assert.equal(gpu.nextDueAt(s, onGpu, config), 210_000, 'the CPU was busy at 150 s');
  assert.equal(gpu.onBusy(s, 120_000), s, 'an older busy time changes nothing');
  const due = gpu.onTimer(s, onGpu, 210_000, config);
  assert.deepEqual(due.action, { kind: 'return', reason: 'gpu-idle' });
  assert.equal(gpu.nextDueAt(due.state, onGpu, config), 240_000, 'still there (the move failed): next try after retryAfterMs');
  assert.equal(gpu.nextDueAt(due.state, onCpu, config), null, 'nothing to decide on a CPU tier');
  assert.deepEqual(gpu.onLeftGpu(due.state).returnAskedAt, null);
});

test('a spot interruption moves the runtime off the host it names only', () => {
  assert.deepEqual(gpu.onSpotInterruption(gpu.initialGpuState, onGpu, 'ec2-0123456789ab', 1).action, { kind: 'return', reason: 'spot-interruption' });
  assert.equal(gpu.onSpotInterruption(gpu.initialGpuState, onGpu, 'ec2-ffffffffffff', 1).action.kind, 'none');
  assert.equal(gpu.onSpotInterruption(gpu.initialGpuState, null, 'ec2-0123456789ab', 1).action.kind, 'none');
});

test('the GPU tier: g5.xlarge by default for pro and team, spot first; configurable; bad values are named', () => {
  const c = loadConfig({});
  assert.equal(c.gpu?.tier.name, 'g5.xlarge');
  assert.equal(c.gpu?.tier.memoryBytes, 16 * GiB - hostReserveBytes);
  assert.equal(c.gpu?.tier.gpu, true);
  assert.equal(c.gpu?.market, 'spot-then-on-demand');
  assert.deepEqual(c.gpu?.plans, ['pro', 'team']);
  assert.equal(gpuTierFor(c.gpu, 'free'), undefined, 'the free plan has no GPU');
  assert.equal(gpuTierFor(c.gpu, 'pro')?.name, 'g5.xlarge');
  assert.equal(loadConfig({ MARKCO_GPU_INSTANCE_TYPE: 'g4dn.xlarge', MARKCO_GPU_PLANS: 'free' }).gpu?.tier.instanceType, 'g4dn.xlarge');
  assert.equal(loadConfig({ MARKCO_GPU_INSTANCE_TYPE: 'none' }).gpu, null);
  assert.equal(loadConfig({ MARKCO_GPU_PLANS: '' }).gpu, null);
  assert.throws(() => loadConfig({ MARKCO_GPU_INSTANCE_TYPE: 'p9.huge' }), /MARKCO_GPU_INSTANCE_TYPE: expected none or one of g4dn.xlarge/);
  assert.throws(() => loadConfig({ MARKCO_GPU_PLANS: 'pro,gold' }), /MARKCO_GPU_PLANS: expected plans separated by commas/);
  assert.throws(() => gpuTierOf('t3.small'), /not a GPU instance type/);
});

test('a checkpoint moves between the CPU and GPU runtime images, and only between them', () => {
  const id = 'a'.repeat(64);
  const dump = JSON.stringify({ RawImageName: 'localhost/markco-runtime:0.4.2', rootfsImageID: 'b'.repeat(64), rootfsImageName: 'localhost/markco-runtime:0.4.2', name: 'rt-x' });
  const swappable = ['localhost/markco-runtime:0.4.2', 'localhost/markco-runtime-gpu:0.4.2'];
  const moved = JSON.parse(setCheckpointImage(dump, { name: 'localhost/markco-runtime-gpu:0.4.2', id }, swappable));
  assert.deepEqual(moved, { RawImageName: 'localhost/markco-runtime-gpu:0.4.2', rootfsImageID: id, rootfsImageName: 'localhost/markco-runtime-gpu:0.4.2', name: 'rt-x' });
  const older = dump.replaceAll('markco-runtime:0.4.2', 'markco-runtime:0.3.0');
  assert.equal(setCheckpointImage(older, { name: 'localhost/markco-runtime-gpu:0.4.2', id }, swappable), older, 'another image is left alone');
  assert.throws(() => setCheckpointImage(dump, { name: 'x', id: 'nope' }, swappable), /invalid image id/);
});
