import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { DescribeImagesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { createEc2Activities, managedTag } from '../../activities/ec2.js';
import { ErrorType } from '../../workflows/contracts/errors.js';
import { emulatorEc2, useHarness } from '../support/context.js';

/** RunInstances, DescribeInstances and TerminateInstances through @aws-sdk/client-ec2 to the emulator. */
describe('EC2 through the AWS SDK to the emulator', () => {
  const h = useHarness();
  let ec2: EC2Client;
  let acts: ReturnType<typeof createEc2Activities>;
  let imageId: string;
  before(async () => {
    ec2 = emulatorEc2(h.state);
    acts = createEc2Activities({ ec2 });
    const images = await ec2.send(new DescribeImagesCommand({ Owners: ['amazon'] }));
    imageId = images.Images?.[0]?.ImageId ?? '';
    assert.match(imageId, /^ami-/);
  });
  after(() => ec2.destroy());

  test('launch, describe and terminate an instance tagged as ours', async () => {
    const launched = await acts.launchInstance({ imageId, instanceType: 't3.medium', clientToken: randomUUID(), tags: { 'markco:role': 'runtime-host', 'markco:user': 'u-1' } });
    assert.match(launched.instanceId, /^i-[0-9a-f]+$/);
    assert.equal(launched.instanceType, 't3.medium');
    assert.equal(launched.tags[managedTag.key], managedTag.value, 'every instance we launch is marked as ours');
    assert.equal(launched.tags['markco:user'], 'u-1');

    const described = await acts.describeInstance({ instanceId: launched.instanceId });
    assert.equal(described.state, 'running');
    assert.match(described.privateIp ?? '', /^\d+\.\d+\.\d+\.\d+$/);

    await acts.terminateInstance({ instanceId: launched.instanceId });
    assert.equal((await acts.describeInstance({ instanceId: launched.instanceId })).state, 'terminated');
    assert.equal((await acts.terminateInstance({ instanceId: launched.instanceId })).state, 'terminated', 'terminating twice is fine');
  });

  test('spot launches ask for the spot market', async () => {
    const spot = await acts.launchInstance({ imageId, instanceType: 'g5.xlarge', clientToken: randomUUID(), spot: true });
    assert.equal(spot.spot, true);
    await acts.terminateInstance({ instanceId: spot.instanceId });
  });

  test('an unknown instance is NotFound (not retried); a malformed type is refused before calling EC2', async () => {
    await assert.rejects(acts.describeInstance({ instanceId: 'i-0123456789abcdef0' }), (err: unknown) => err instanceof ApplicationFailure && err.type === ErrorType.NotFound && err.nonRetryable);
    assert.equal((await acts.terminateInstance({ instanceId: 'i-0123456789abcdef0' })).state, 'terminated');
    await assert.rejects(acts.launchInstance({ imageId, instanceType: 't3 medium; rm', clientToken: randomUUID() }), (err: unknown) => err instanceof ApplicationFailure && err.type === ErrorType.InvalidInput);
  });
});
