import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DescribeInstancesCommand, RunInstancesCommand, type RunInstancesCommandInput } from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { cloudInitUserData, generateHostKeyPair, parseCloudInitUserData } from '../../activities/cloud-init.js';
import { createEc2Activities, deploymentTag, hostKeyTag, hostTag, isCapacityError, managedTag, type InstanceDescription } from '../../activities/ec2.js';
import { decideReap, type ReapRow } from '../../activities/reap-decisions.js';
import type { CloudConfig } from '../../lib/config.js';
import { ErrorType } from '../../workflows/contracts/errors.js';

const privateKey = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\nAAAAAAAAABAAAAMwAAAAtz\n-----END OPENSSH PRIVATE KEY-----\n';

describe('cloud-init UserData', () => {
  test('carries the host key pair and the authorised keys, and reads back the same', () => {
    const keys = { hostKeyPrivate: privateKey, hostKeyPublic: 'ssh-ed25519 AAAAC3Nza host: ec2-1 # odd comment', authorizedKeys: ['ssh-ed25519 AAAAworker markco-control-plane'] };
    const text = cloudInitUserData(keys);
    assert.match(text, /^#cloud-config\n/);
    assert.match(text, /^ssh_deletekeys: true$/m, 'only the pinned key is left on the host');
    assert.match(text, /^ {2}ed25519_private: \|\n {4}-----BEGIN OPENSSH PRIVATE KEY-----$/m);
    assert.deepEqual(parseCloudInitUserData(text), keys);
  });

  test('refuses what would make a broken document, and ignores UserData that is not ours', () => {
    assert.throws(() => cloudInitUserData({ hostKeyPrivate: 'not a key', hostKeyPublic: 'ssh-ed25519 A', authorizedKeys: ['k'] }), /OpenSSH private key/);
    assert.throws(() => cloudInitUserData({ hostKeyPrivate: privateKey, hostKeyPublic: 'ssh-ed25519 A', authorizedKeys: [] }), /at least one authorised key/);
    assert.throws(() => cloudInitUserData({ hostKeyPrivate: privateKey, hostKeyPublic: 'ssh-ed25519 A\nssh_keys: {}', authorizedKeys: ['k'] }), /single line/);
    assert.equal(parseCloudInitUserData('#!/bin/sh\necho hi\n'), undefined);
    assert.equal(parseCloudInitUserData('#cloud-config\npackages: [htop]\n'), undefined);
  });
});

test('generated host keys load in OpenSSH, every one: 600 keys, where about 1 in 128 starts with a zero byte', () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-hostkeys-'));
  try {
    const pairs = Array.from({ length: 600 }, (_, i) => generateHostKeyPair(`markco-host-ec2-${i}`));
    pairs.forEach((p, i) => writeFileSync(join(dir, `k${i}`), p.private, { mode: 0o600 }));
    // One shell for all of them: ssh-keygen -y prints the public key it derives from each private key.
    const derived = execFileSync('sh', ['-c', `for i in $(seq 0 ${pairs.length - 1}); do ssh-keygen -y -f "${dir}/k$i" || echo "unloadable k$i"; done`], { encoding: 'utf8' }).trim().split('\n');
    assert.deepEqual(derived, pairs.map((p) => p.public), 'ssh-keygen derives the same public key (and comment) from each private key');
    assert.ok(pairs.every((p) => Buffer.from(p.public.split(' ')[1]!, 'base64').length === 51), 'each public blob holds the whole 32-byte key');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('the reaper rule', () => {
  const now = new Date('2026-11-23T12:00:00Z');
  const ours = (id: string, extra: Partial<InstanceDescription> = {}, tags: Record<string, string> = {}): InstanceDescription => ({
    instanceId: id,
    state: 'running',
    instanceType: 't3.small',
    privateIp: '10.77.1.64',
    spot: false,
    launchTime: '2026-11-23T10:00:00Z',
    tags: { [managedTag.key]: managedTag.value, [deploymentTag]: 'prod', ...tags },
    ...extra,
  });
  const row = (id: string, instanceId: string | null, live: boolean, keepReasons: string[] = [], state: ReapRow['host']['state'] = live ? 'ready' : 'failed'): ReapRow => ({ host: { id, instanceId, state }, live, keepReasons });
  const decide = (instances: InstanceDescription[], rows: ReapRow[], graceSeconds = 900) => decideReap({ instances, rows, deploymentId: 'prod', graceSeconds, now });

  test('keeps a live host that something needs, terminates an idle one and a dead row\'s instance', () => {
    const { decisions } = decide(
      [ours('i-runtime'), ours('i-idle'), ours('i-failed')],
      [row('ec2-a', 'i-runtime', true, ['live runtime']), row('ec2-b', 'i-idle', true), row('ec2-c', 'i-failed', false)],
    );
    assert.deepEqual(
      decisions.map((d) => [d.instanceId, d.hostId, d.action]),
      [
        ['i-runtime', 'ec2-a', 'keep'],
        ['i-idle', 'ec2-b', 'terminate'],
        ['i-failed', 'ec2-c', 'terminate'],
      ],
    );
    assert.equal(decisions[0]!.reason, 'live runtime');
    assert.match(decisions[2]!.reason, /ec2-c is failed/);
  });

  test('an orphan is kept within the grace period after its launch, terminated after it', () => {
    const young = ours('i-young', { launchTime: '2026-11-23T11:59:00Z' });
    const old = ours('i-old', {}, { [hostTag]: 'ec2-gone' });
    const { decisions } = decide([young, old], []);
    assert.deepEqual(decisions.map((d) => d.action), ['keep', 'terminate']);
    assert.match(decisions[1]!.reason, /no host row records it \(tagged markco:host=ec2-gone\)/);
    assert.deepEqual(decide([young], [], 0).decisions.map((d) => d.action), ['terminate'], 'grace 0 spares nothing');
    assert.deepEqual(decide([ours('i-notime', { launchTime: null })], [], 0).decisions.map((d) => d.action), ['keep'], 'an unknown launch time is never taken as old');
  });

  test('never terminates an instance that is not tagged as ours or belongs to another deployment', () => {
    const notOurs = ours('i-foreign');
    delete notOurs.tags[managedTag.key];
    const otherDeployment = ours('i-staging', {}, { [deploymentTag]: 'staging' });
    const { decisions } = decide([notOurs, otherDeployment], [row('ec2-x', 'i-foreign', false)], 0);
    assert.deepEqual(decisions.map((d) => d.action), ['keep', 'keep']);
  });

  test('live rows whose instance EC2 did not list are candidates for closing', () => {
    const { lostCandidates } = decide([ours('i-1')], [row('ec2-1', 'i-1', true, ['reserved']), row('ec2-2', 'i-2', true), row('ec2-3', 'i-3', false)]);
    assert.deepEqual(lostCandidates, ['ec2-2']);
  });
});

describe('launchHost against a stand-in EC2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'markco-ec2-'));
  writeFileSync(join(dir, 'id_ed25519.pub'), 'ssh-ed25519 AAAAworkerkey markco-control-plane\n');
  after(() => rmSync(dir, { recursive: true, force: true }));
  const cloud: CloudConfig = {
    provider: 'aws',
    amiIds: { t3: 'ami-0123abcd' },
    subnetId: 'subnet-0a1b',
    securityGroupIds: ['sg-01'],
    sshUser: 'ubuntu',
    market: 'spot-then-on-demand',
    deploymentId: 'prod',
    reservationTtlSeconds: 600,
    reaperGraceSeconds: 900,
    sshKeyPath: join(dir, 'id_ed25519'),
  };
  const input = { hostId: 'ec2-0123456789ab', userId: '0b7e4c7e-1f7a-4a8e-9f0e-7d3c2b1a0f9e', tier: 't3.small', instanceType: 't3.small' };

  /** Records RunInstances requests; spot ones fail with the given error name. */
  function standIn(opts: { spotError?: string; onDemandError?: string; existing?: InstanceDescription[] } = {}) {
    const runs: RunInstancesCommandInput[] = [];
    const send = async (command: unknown) => {
      if (command instanceof DescribeInstancesCommand) {
        return { Reservations: [{ Instances: (opts.existing ?? []).map((i) => ({ InstanceId: i.instanceId, InstanceType: i.instanceType, State: { Name: i.state }, PrivateIpAddress: i.privateIp ?? undefined, Tags: Object.entries(i.tags).map(([Key, Value]) => ({ Key, Value })) })) }] };
      }
      if (command instanceof RunInstancesCommand) {
        runs.push(command.input);
        const spot = command.input.InstanceMarketOptions?.MarketType === 'spot';
        const error = spot ? opts.spotError : opts.onDemandError;
        if (error) throw Object.assign(new Error(`no ${spot ? 'spot' : 'on-demand'} capacity`), { name: error, $metadata: {} });
        return { Instances: [{ InstanceId: 'i-0abc', InstanceType: 't3.small', State: { Name: 'pending' }, PrivateIpAddress: '10.0.0.5', InstanceLifecycle: spot ? 'spot' : undefined, Tags: command.input.TagSpecifications?.[0]?.Tags }] };
      }
      throw new Error(`unexpected command ${(command as object).constructor.name}`);
    };
    return { runs, ec2: { send } as never };
  }

  test('launches spot with the host key in UserData, every tag, and only the public key in the result', async () => {
    const { runs, ec2 } = standIn();
    const launched = await createEc2Activities({ ec2, cloud }).launchHost(input);
    assert.equal(runs.length, 1);
    const run = runs[0]!;
    assert.equal(run.ImageId, 'ami-0123abcd');
    assert.equal(run.SubnetId, 'subnet-0a1b');
    assert.deepEqual(run.SecurityGroupIds, ['sg-01']);
    assert.equal(run.InstanceMarketOptions?.MarketType, 'spot');
    const tags = Object.fromEntries((run.TagSpecifications?.[0]?.Tags ?? []).map((t) => [t.Key, t.Value]));
    assert.deepEqual(tags, {
      'markco:managed': 'true',
      'markco:role': 'runtime-host',
      'markco:user': input.userId,
      'markco:host': input.hostId,
      'markco:tier': 't3.small',
      'markco:deployment': 'prod',
      'markco:host-key': launched.hostKey,
      Name: 'markco-rt-t3.small-ec2-0123456789ab',
    });
    const boot = parseCloudInitUserData(Buffer.from(run.UserData ?? '', 'base64').toString('utf8'));
    assert.ok(boot, 'UserData is our cloud-config');
    assert.equal(boot.hostKeyPublic, launched.hostKey);
    assert.match(boot.hostKeyPrivate, /^-----BEGIN OPENSSH PRIVATE KEY-----/);
    assert.deepEqual(boot.authorizedKeys, ['ssh-ed25519 AAAAworkerkey markco-control-plane']);
    assert.match(launched.hostKey, /^ssh-ed25519 AAAA\S+ markco-host-ec2-0123456789ab$/);
    assert.equal(launched.lifecycle, 'spot');
    assert.equal(launched.sshUser, 'ubuntu');
    assert.equal(launched.reused, false);
    assert.doesNotMatch(JSON.stringify(launched), /PRIVATE KEY/, 'the private key never reaches workflow history');
  });

  test('falls back to on-demand when spot has no capacity; fails CapacityUnavailable when neither has', async () => {
    const fallback = standIn({ spotError: 'InsufficientInstanceCapacity' });
    const launched = await createEc2Activities({ ec2: fallback.ec2, cloud }).launchHost(input);
    assert.deepEqual(fallback.runs.map((r) => r.InstanceMarketOptions?.MarketType ?? 'on-demand'), ['spot', 'on-demand']);
    assert.equal(launched.lifecycle, 'on-demand');

    const none = standIn({ spotError: 'SpotMaxPriceTooLow', onDemandError: 'InsufficientInstanceCapacity' });
    await assert.rejects(
      createEc2Activities({ ec2: none.ec2, cloud }).launchHost(input),
      (err: unknown) => err instanceof ApplicationFailure && err.type === ErrorType.CapacityUnavailable && err.nonRetryable && /spot: SpotMaxPriceTooLow.*on-demand: InsufficientInstanceCapacity/.test(err.message),
    );
    const onDemandOnly = standIn({ spotError: 'InsufficientInstanceCapacity' });
    await createEc2Activities({ ec2: onDemandOnly.ec2, cloud: { ...cloud, market: 'on-demand' } }).launchHost(input);
    assert.deepEqual(onDemandOnly.runs.map((r) => r.InstanceMarketOptions?.MarketType ?? 'on-demand'), ['on-demand']);
    assert.equal(isCapacityError(Object.assign(new Error('x'), { name: 'InvalidAMIID.NotFound' })), false, 'a bad request is not a capacity problem');
  });

  test('a GPU host is launched on the GPU market: spot first even when CPU hosts are on-demand, on-demand when spot is refused', async () => {
    const gpuInput = { ...input, tier: 'g5.xlarge', instanceType: 'g5.xlarge', gpu: true };
    const gpuCloud = { ...cloud, market: 'on-demand' as const, amiIds: { ...cloud.amiIds, g5: 'ami-0456cdef' } };
    const refused = standIn({ spotError: 'InsufficientInstanceCapacity' });
    const launched = await createEc2Activities({ ec2: refused.ec2, cloud: gpuCloud, gpu: { market: 'spot-then-on-demand' } }).launchHost(gpuInput);
    assert.deepEqual(refused.runs.map((r) => r.InstanceMarketOptions?.MarketType ?? 'on-demand'), ['spot', 'on-demand']);
    assert.equal(refused.runs[0]!.ImageId, 'ami-0456cdef', "the GPU family's AMI");
    assert.equal(launched.lifecycle, 'on-demand');
    const cpu = standIn();
    await createEc2Activities({ ec2: cpu.ec2, cloud: gpuCloud, gpu: { market: 'spot-then-on-demand' } }).launchHost(input);
    assert.deepEqual(cpu.runs.map((r) => r.InstanceMarketOptions?.MarketType ?? 'on-demand'), ['on-demand'], 'CPU hosts keep MARKCO_EC2_MARKET');
  });

  test('a retried launch returns the instance tagged with the host id instead of launching another', async () => {
    const existing: InstanceDescription = { instanceId: 'i-0first', state: 'running', instanceType: 't3.small', privateIp: '10.0.0.9', spot: false, launchTime: null, tags: { [hostTag]: input.hostId, [hostKeyTag]: 'ssh-ed25519 AAAAfirst' } };
    const { runs, ec2 } = standIn({ existing: [existing] });
    const launched = await createEc2Activities({ ec2, cloud }).launchHost(input);
    assert.equal(runs.length, 0);
    assert.equal(launched.instanceId, 'i-0first');
    assert.equal(launched.hostKey, 'ssh-ed25519 AAAAfirst');
    assert.equal(launched.reused, true);
  });

  test('bad input and a missing cloud are InvalidInput naming what is wrong', async () => {
    const { ec2 } = standIn();
    const acts = createEc2Activities({ ec2, cloud });
    const invalid = (pattern: RegExp) => (err: unknown) => err instanceof ApplicationFailure && err.type === ErrorType.InvalidInput && err.nonRetryable && pattern.test(err.message);
    await assert.rejects(acts.launchHost({ ...input, hostId: 'EC2 host' }), invalid(/^hostId: /));
    await assert.rejects(acts.launchHost({ ...input, userId: 'bob' }), invalid(/^userId: /));
    await assert.rejects(acts.launchHost({ ...input, instanceType: 't3 small' }), invalid(/^instanceType: /));
    await assert.rejects(acts.launchHost({ ...input, instanceType: 'm7.large' }), invalid(/MARKCO_EC2_AMI_IDS has no AMI for the instance family m7/));
    await assert.rejects(createEc2Activities({ ec2, cloud: { ...cloud, subnetId: undefined } }).launchHost(input), invalid(/MARKCO_EC2_SUBNET_ID is not set/));
    await assert.rejects(createEc2Activities({ ec2 }).launchHost(input), invalid(/MARKCO_CLOUD is none/));
  });
});
