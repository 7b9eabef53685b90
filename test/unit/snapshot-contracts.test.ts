import assert from 'node:assert/strict';
import { test } from 'node:test';
import { restoredContainerName, sandboxContainerName, sandboxNetworkName } from '../../activities/snapshots.js';
import { setCheckpointNetwork } from '../../activities/podman-commands.js';
import {
  validateForkSandboxInput,
  validateIdleCheckpointInput,
  validateRestoreSnapshotInput,
  validateSandboxIdInput,
  validateSnapshotRuntimeInput,
} from '../../workflows/contracts/snapshots.js';

const user = '00000000-0000-4000-8000-000000000042';
const other = '11111111-1111-4111-8111-111111111111';

test('workflow inputs: every field is checked, and each problem is named', () => {
  assert.deepEqual(validateIdleCheckpointInput({ userId: user }), []);
  assert.deepEqual(validateIdleCheckpointInput({ userId: 'Alice', reason: 'bored' as never }), ['userId: expected a lowercase UUID', 'reason: expected idle or operator']);
  assert.deepEqual(validateIdleCheckpointInput(null as never), ['input must be a JSON object']);
  assert.deepEqual(validateSnapshotRuntimeInput({ userId: user, name: 'before' }), []);
  assert.match(validateSnapshotRuntimeInput({ userId: user, name: '../etc' }).join(), /name:/);
  assert.match(validateSnapshotRuntimeInput({ userId: user, name: 'x'.repeat(65) }).join(), /name:/);
  assert.deepEqual(validateRestoreSnapshotInput({ userId: user, name: 'before' }), []);
  assert.deepEqual(validateRestoreSnapshotInput({ userId: user, snapshotId: other }), []);
  assert.deepEqual(validateRestoreSnapshotInput({ userId: user }), ['expected exactly one of snapshotId and name']);
  assert.deepEqual(validateRestoreSnapshotInput({ userId: user, name: 'a', snapshotId: other }), ['expected exactly one of snapshotId and name']);
  assert.match(validateRestoreSnapshotInput({ userId: user, snapshotId: 'NOT-A-UUID' }).join(), /snapshotId: expected a snapshot id/);
  assert.deepEqual(validateForkSandboxInput({ userId: user, ttlSeconds: 600 }), []);
  assert.match(validateForkSandboxInput({ userId: user, ttlSeconds: 5 }).join(), /ttlSeconds: expected whole seconds from 10 to 86400/);
  assert.match(validateForkSandboxInput({ userId: user, ttlSeconds: 100_000 }).join(), /ttlSeconds/);
  assert.match(validateForkSandboxInput({ userId: user, hostId: 'no spaces allowed' }).join(), /hostId/);
  assert.deepEqual(validateSandboxIdInput({ userId: user, sandboxId: other }, 'sandboxId'), []);
  assert.match(validateSandboxIdInput({ userId: user }, 'snapshotId').join(), /snapshotId: expected a lowercase UUID/);
});

test('names: each restore and each sandbox gets its own container, and each sandbox its own network', () => {
  const a = restoredContainerName(user, other);
  const b = restoredContainerName(user, '22222222-2222-4222-8222-222222222222');
  assert.notEqual(a, b, 'restoring the same snapshot twice never collides (the seeds did)');
  assert.ok(a.startsWith(`rt-${user}-`));
  assert.equal(sandboxContainerName(other), `sb-${other}`);
  assert.equal(sandboxNetworkName(other), `markco-sb-${other}`);
  assert.throws(() => sandboxContainerName('x; rm -rf /'), /invalid sandbox id/);
  assert.throws(() => restoredContainerName('../x', other), /invalid/);
});

test('a fork joins its own network: config.dump names it instead of the runtime’s', () => {
  const config = JSON.stringify({ createNetNS: true, newNetworks: { podman: { interface_name: 'eth0' } }, networkMode: 'bridge', name: 'rt-x' });
  const rewritten = JSON.parse(setCheckpointNetwork(config, 'markco-sb-1')) as Record<string, unknown>;
  assert.deepEqual(rewritten.newNetworks, { 'markco-sb-1': { interface_name: 'eth0' } });
  assert.equal(rewritten.name, 'rt-x', 'nothing else changes');
});
