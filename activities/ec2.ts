import {
  DescribeInstancesCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type EC2Client,
  type Instance,
  type _InstanceType,
} from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { ErrorType } from '../workflows/contracts/errors.js';
import { activitySignal } from './context.js';

/** Tags that mark an instance as ours; the reaper only ever terminates instances carrying managedTag. */
export const managedTag = { key: 'markco:managed', value: 'true' } as const;
export const roleTag = 'markco:role';
export const userTag = 'markco:user';
export const hostTag = 'markco:host';

export interface LaunchInstanceInput {
  imageId: string;
  instanceType: string;
  /** Makes a retried launch return the same instance instead of a second one. */
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
}

function describe(i: Instance): InstanceDescription {
  return {
    instanceId: i.InstanceId ?? '',
    state: i.State?.Name ?? 'unknown',
    instanceType: i.InstanceType ?? '',
    privateIp: i.PrivateIpAddress ?? null,
    tags: Object.fromEntries((i.Tags ?? []).map((t) => [t.Key ?? '', t.Value ?? ''])),
    spot: i.InstanceLifecycle === 'spot',
  };
}

function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string }).name ?? '';
  return name === 'InvalidInstanceID.NotFound';
}

export function createEc2Activities(deps: { ec2: Pick<EC2Client, 'send'> }) {
  const signal = () => {
    const s = activitySignal();
    return s ? { abortSignal: s } : {};
  };
  return {
    async launchInstance(input: LaunchInstanceInput): Promise<InstanceDescription> {
      if (!/^[a-z0-9]+\.[a-z0-9]+$/.test(input.instanceType)) {
        throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid instance type ${JSON.stringify(input.instanceType)}`, nonRetryable: true });
      }
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
        signal(),
      );
      const instance = out.Instances?.[0];
      if (!instance?.InstanceId) throw ApplicationFailure.create({ type: ErrorType.CloudApiFailed, message: 'RunInstances returned no instance' });
      return describe(instance);
    },

    async describeInstance(input: { instanceId: string }): Promise<InstanceDescription> {
      try {
        const out = await deps.ec2.send(new DescribeInstancesCommand({ InstanceIds: [input.instanceId] }), signal());
        const instance = out.Reservations?.flatMap((r) => r.Instances ?? [])[0];
        if (instance) return describe(instance);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `instance ${input.instanceId} does not exist`, nonRetryable: true });
    },

    /** Idempotent: an instance that is already gone counts as terminated. */
    async terminateInstance(input: { instanceId: string }): Promise<{ state: string }> {
      try {
        const out = await deps.ec2.send(new TerminateInstancesCommand({ InstanceIds: [input.instanceId] }), signal());
        const t = out.TerminatingInstances?.[0];
        return { state: t?.PreviousState?.Name === 'terminated' ? 'terminated' : (t?.CurrentState?.Name ?? 'shutting-down') };
      } catch (err) {
        if (isNotFound(err)) return { state: 'terminated' };
        throw err;
      }
    },
  };
}
