import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DescribeInstancesCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2Client,
  type Filter,
  type Instance,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { instanceFamily, type CloudConfig } from '../lib/config.js';
import type { GpuSettings } from '../lib/tiers.js';
import type { HostRole } from '../workflows/contracts/elastic.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import { hostIdPattern } from '../workflows/contracts/hosts.js';
import { userIdPattern } from '../workflows/contracts/users.js';
import { cloudInitUserData, generateHostKeyPair } from './cloud-init.js';
import { activitySignal, heartbeat } from './context.js';

/** Tags that mark an instance as ours; the reaper only ever terminates instances carrying managedTag. */
export const managedTag = { key: 'markco:managed', value: 'true' } as const;
export const roleTag = 'markco:role';
export const userTag = 'markco:user';
export const hostTag = 'markco:host';
export const tierTag = 'markco:tier';
/** Scopes the reaper: it only looks at instances of its own deployment. */
export const deploymentTag = 'markco:deployment';
/** The public half of the host key the launch generated, so a retried launch can pin it again. */
export const hostKeyTag = 'markco:host-key';

/** States in which an instance exists (and costs money, or soon will). */
export const liveInstanceStates = ['pending', 'running', 'stopping', 'stopped'] as const;

/** EC2 error codes that mean "no capacity for this request right now", not "bad request". */
const capacityErrorNames = new Set(['InsufficientInstanceCapacity', 'InsufficientCapacity', 'SpotMaxPriceTooLow', 'MaxSpotInstanceCountExceeded']);

export function isCapacityError(err: unknown): boolean {
  return capacityErrorNames.has((err as { name?: string } | null)?.name ?? '');
}

export interface LaunchInstanceInput {
  imageId: string;
  instanceType: string;
  /** Makes a retried launch return the same instance instead of a second one (real EC2 only: moto ignores it). */
  clientToken: string;
  subnetId?: string;
  securityGroupIds?: string[];
  keyName?: string;
  userData?: string;
  spot?: boolean;
  tags?: Record<string, string>;
}

export interface InstanceDescription {
  instanceId: string;
  state: string;
  instanceType: string;
  privateIp: string | null;
  tags: Record<string, string>;
  spot: boolean;
  /** ISO time EC2 launched it; the reaper spares instances younger than its grace period. */
  launchTime: string | null;
}

export interface LaunchHostInput {
  hostId: string;
  userId: string;
  tier: string;
  instanceType: string;
  role?: HostRole;
  gpu?: boolean;
}

/** What a launch gives the workflow: everything needed to reach the host, never its private key. */
export interface LaunchedHost {
  hostId: string;
  instanceId: string;
  instanceType: string;
  state: string;
  privateIp: string | null;
  lifecycle: 'on-demand' | 'spot';
  /** OpenSSH public key line of the host key delivered in UserData: the key to pin. */
  hostKey: string;
  sshUser: string;
  /** True when an instance tagged with this host id already existed (a retried launch). */
  reused: boolean;
}

export interface Ec2ActivityDeps {
  ec2: Pick<EC2Client, 'send'>;
  /** Absent or provider `none`: launching hosts is refused with InvalidInput. */
  cloud?: CloudConfig;
  /** GPU hosts are launched on its market. */
  gpu?: Pick<GpuSettings, 'market'> | null;
}

export function describeInstance(i: Instance): InstanceDescription {
  return {
    instanceId: i.InstanceId ?? '',
    state: i.State?.Name ?? 'unknown',
    instanceType: i.InstanceType ?? '',
    privateIp: i.PrivateIpAddress ?? null,
    tags: Object.fromEntries((i.Tags ?? []).map((t) => [t.Key ?? '', t.Value ?? ''])),
    spot: i.InstanceLifecycle === 'spot',
    launchTime: i.LaunchTime ? i.LaunchTime.toISOString() : null,
  };
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string }).name ?? '';
  return name === 'InvalidInstanceID.NotFound';
}

const invalid = (message: string): never => {
  throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message, nonRetryable: true });
};

const requestOptions = () => {
  const s = activitySignal();
  return s ? { abortSignal: s } : {};
};

/** Every instance matching the filters, across pages. */
export async function findInstances(ec2: Pick<EC2Client, 'send'>, filters: Filter[]): Promise<InstanceDescription[]> {
  const found: InstanceDescription[] = [];
  let nextToken: string | undefined;
  do {
    const out = await ec2.send(new DescribeInstancesCommand({ Filters: filters, ...(nextToken ? { NextToken: nextToken } : {}) }), requestOptions());
    for (const r of out.Reservations ?? []) for (const i of r.Instances ?? []) found.push(describeInstance(i));
    nextToken = out.NextToken;
  } while (nextToken);
  return found;
}

/** The instances (not yet terminated) launched for one host id: how a retried launch finds its first attempt. */
export function findHostInstances(ec2: Pick<EC2Client, 'send'>, hostId: string): Promise<InstanceDescription[]> {
  return findInstances(ec2, [
    { Name: `tag:${hostTag}`, Values: [hostId] },
    { Name: 'instance-state-name', Values: [...liveInstanceStates] },
  ]);
}

/** Running and stopped instances tagged as ours in one deployment (the reaper's view of EC2). */
export function findManagedInstances(ec2: Pick<EC2Client, 'send'>, deploymentId: string): Promise<InstanceDescription[]> {
  return findInstances(ec2, [
    { Name: `tag:${managedTag.key}`, Values: [managedTag.value] },
    { Name: `tag:${deploymentTag}`, Values: [deploymentId] },
    { Name: 'instance-state-name', Values: [...liveInstanceStates] },
  ]);
}

/** Idempotent: an instance that is already gone counts as terminated. */
export async function terminateInstanceById(ec2: Pick<EC2Client, 'send'>, instanceId: string): Promise<{ state: string }> {
  try {
    const out = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] }), requestOptions());
    const t = out.TerminatingInstances?.[0];
    return { state: t?.PreviousState?.Name === 'terminated' ? 'terminated' : (t?.CurrentState?.Name ?? 'shutting-down') };
  } catch (err) {
    if (isNotFound(err)) return { state: 'terminated' };
    throw err;
  }
}

/** One instance by id, or undefined when EC2 no longer knows it. */
export async function describeInstanceById(ec2: Pick<EC2Client, 'send'>, instanceId: string): Promise<InstanceDescription | undefined> {
  try {
    const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }), requestOptions());
    const instance = out.Reservations?.flatMap((r) => r.Instances ?? [])[0];
    return instance ? describeInstance(instance) : undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The cloud, when launching is configured at all. */
export function requireCloud(cloud: CloudConfig | undefined): CloudConfig {
  if (!cloud || cloud.provider === 'none') return invalid('MARKCO_CLOUD is none: this deployment has only the base server and launches no EC2 hosts');
  return cloud;
}

function hostTags(input: LaunchHostInput, deploymentId: string, hostKey: string): Record<string, string> {
  return {
    [managedTag.key]: managedTag.value,
    [roleTag]: input.role ?? 'runtime-host',
    [userTag]: input.userId,
    [hostTag]: input.hostId,
    [tierTag]: input.tier,
    [deploymentTag]: deploymentId,
    [hostKeyTag]: hostKey,
    Name: `markco-rt-${input.tier}-${input.hostId}`,
  };
}

export function createEc2Activities(deps: Ec2ActivityDeps) {
  async function runInstance(input: LaunchInstanceInput): Promise<InstanceDescription> {
    if (!/^[a-z0-9]+\.[a-z0-9]+$/.test(input.instanceType)) invalid(`invalid instance type ${JSON.stringify(input.instanceType)}`);
    const tags = { ...input.tags, [managedTag.key]: managedTag.value };
    const out = await deps.ec2.send(
      new RunInstancesCommand({
        ImageId: input.imageId,
        InstanceType: input.instanceType as _InstanceType,
        MinCount: 1,
        MaxCount: 1,
        ClientToken: input.clientToken,
        SubnetId: input.subnetId,
        SecurityGroupIds: input.securityGroupIds,
        KeyName: input.keyName,
        UserData: input.userData === undefined ? undefined : Buffer.from(input.userData).toString('base64'),
        InstanceMarketOptions: input.spot ? { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time' } } : undefined,
        TagSpecifications: [{ ResourceType: 'instance', Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }],
      }),
      requestOptions(),
    );
    const instance = out.Instances?.[0];
    if (!instance?.InstanceId) throw ApplicationFailure.create({ type: ErrorType.CloudApiFailed, message: 'RunInstances returned no instance' });
    return describeInstance(instance);
  }

  return {
    /** RunInstances as given (tools and tests); hosts are launched with launchHost. */
    async launchInstance(input: LaunchInstanceInput): Promise<InstanceDescription> {
      return runInstance(input);
    },

    /**
     * Launches the EC2 instance of one host, or returns the one a previous attempt launched (looked up
     * by its `markco:host` tag: moto ignores ClientToken, and a token does not survive a changed request).
     * The ssh host key is generated here and travels only in UserData; the workflow gets the public half.
     */
    async launchHost(input: LaunchHostInput): Promise<LaunchedHost> {
      if (typeof input !== 'object' || input === null) invalid('launchHost input must be a JSON object');
      if (typeof input.hostId !== 'string' || !hostIdPattern.test(input.hostId)) invalid('hostId: expected lowercase letters, digits, dots and dashes (at most 63)');
      if (typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) invalid('userId: expected a lowercase UUID');
      if (typeof input.instanceType !== 'string' || !/^[a-z0-9]+\.[a-z0-9]+$/.test(input.instanceType)) invalid(`instanceType: expected an EC2 instance type such as t3.large (got ${JSON.stringify(input.instanceType)})`);
      if (typeof input.tier !== 'string' || !/^[a-z0-9][a-z0-9.-]{0,40}$/.test(input.tier)) invalid('tier: expected a tier name such as t3.large');
      const cloud = requireCloud(deps.cloud);

      const existing = (await findHostInstances(deps.ec2, input.hostId))[0];
      if (existing) {
        const hostKey = existing.tags[hostKeyTag];
        if (!hostKey) throw ApplicationFailure.create({ type: ErrorType.Conflict, message: `instance ${existing.instanceId} is tagged ${hostTag}=${input.hostId} but carries no ${hostKeyTag}: it was not launched by launchHost`, nonRetryable: true });
        return { hostId: input.hostId, instanceId: existing.instanceId, instanceType: existing.instanceType, state: existing.state, privateIp: existing.privateIp, lifecycle: existing.spot ? 'spot' : 'on-demand', hostKey, sshUser: cloud.sshUser, reused: true };
      }

      const family = instanceFamily(input.instanceType);
      const imageId = cloud.amiIds[family] ?? invalid(`MARKCO_EC2_AMI_IDS has no AMI for the instance family ${family} (of ${input.instanceType})`);
      if (!cloud.subnetId) invalid('MARKCO_EC2_SUBNET_ID is not set: launched hosts need a subnet the workers can reach');
      let workersKey: string;
      try {
        workersKey = readFileSync(`${cloud.sshKeyPath}.pub`, 'utf8').trim();
      } catch (err) {
        throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `cannot read the workers' public ssh key ${cloud.sshKeyPath}.pub (MARKCO_SSH_KEY_PATH): ${(err as Error).message}`, nonRetryable: true });
      }
      const keyPair = generateHostKeyPair(`markco-host-${input.hostId}`);
      const hostKey = keyPair.public.trim();
      const launch = (spot: boolean) =>
        runInstance({
          imageId,
          instanceType: input.instanceType,
          clientToken: `${input.hostId}-${spot ? 'spot' : 'on-demand'}`,
          subnetId: cloud.subnetId!,
          ...(cloud.securityGroupIds.length > 0 ? { securityGroupIds: cloud.securityGroupIds } : {}),
          userData: cloudInitUserData({ hostKeyPrivate: keyPair.private, hostKeyPublic: hostKey, authorizedKeys: [workersKey] }),
          spot,
          tags: hostTags(input, cloud.deploymentId, hostKey),
        });
      let launched: InstanceDescription | undefined;
      const capacityProblems: string[] = [];
      // GPU hosts have their own market (MARKCO_GPU_MARKET, spot first by default): the hop is worth a spot price.
      const market = input.gpu && deps.gpu ? deps.gpu.market : cloud.market;
      for (const spot of market === 'spot-then-on-demand' ? [true, false] : [false]) {
        try {
          launched = await launch(spot);
          break;
        } catch (err) {
          if (!isCapacityError(err)) throw err;
          capacityProblems.push(`${spot ? 'spot' : 'on-demand'}: ${(err as Error).name}: ${(err as Error).message}`);
        }
      }
      if (!launched) {
        throw ApplicationFailure.create({ type: ErrorType.CapacityUnavailable, message: `no capacity for ${input.instanceType} (${capacityProblems.join('; ')})`, nonRetryable: true });
      }
      return { hostId: input.hostId, instanceId: launched.instanceId, instanceType: launched.instanceType, state: launched.state, privateIp: launched.privateIp, lifecycle: launched.spot ? 'spot' : 'on-demand', hostKey, sshUser: cloud.sshUser, reused: false };
    },

    /** Polls until the instance runs and has its private address; heartbeats, so a lost worker is noticed. */
    async waitInstanceRunning(input: { instanceId: string; pollMs?: number }): Promise<InstanceDescription> {
      const pollMs = Math.max(100, input.pollMs ?? 2000);
      for (;;) {
        const found = await describeInstanceById(deps.ec2, input.instanceId);
        if (!found || found.state === 'terminated' || found.state === 'shutting-down') {
          throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `instance ${input.instanceId} is ${found?.state ?? 'gone'} before it ran`, nonRetryable: true });
        }
        if (found.state === 'running' && found.privateIp) return found;
        heartbeat({ state: found.state });
        await sleep(pollMs, undefined, activitySignal() ? { signal: activitySignal()! } : {});
      }
    },

    /** Running and stopped instances tagged as ours in this deployment (the reaper's view of EC2). */
    async listManagedInstances(input: { deploymentId: string }): Promise<InstanceDescription[]> {
      return findManagedInstances(deps.ec2, input.deploymentId);
    },

    async describeInstance(input: { instanceId: string }): Promise<InstanceDescription> {
      const found = await describeInstanceById(deps.ec2, input.instanceId);
      if (found) return found;
      throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `instance ${input.instanceId} does not exist`, nonRetryable: true });
    },

    /** Idempotent: an instance that is already gone counts as terminated. */
    async terminateInstance(input: { instanceId: string }): Promise<{ state: string }> {
      return terminateInstanceById(deps.ec2, input.instanceId);
    },
  };
}
