import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CreateSecurityGroupCommand,
  CreateSubnetCidrReservationCommand,
  CreateSubnetCommand,
  CreateVpcCommand,
  DescribeImagesCommand,
  DescribeInstanceAttributeCommand,
  DescribeSecurityGroupsCommand,
  DescribeSubnetsCommand,
  DescribeVpcsCommand,
  GetSubnetCidrReservationsCommand,
  type EC2Client,
} from '@aws-sdk/client-ec2';
import { parseCloudInitUserData } from '../../activities/cloud-init.js';
import { deploymentTag, findInstances, hostTag, managedTag, type InstanceDescription } from '../../activities/ec2.js';
import { createLogger, type Logger } from '../../lib/logger.js';
import { createNamespaceHost, destroyNamespaceHost, machineImageStore, type NamespaceHostInfo, type TestNetwork } from './namespace-hosts.js';

/**
 * MARKCO_CLOUD=simulated: the EC2 emulator (moto) stands in for EC2, and every instance it reports
 * running is booted as a namespace host at the instance's own private IP, with the host key from its
 * UserData, as cloud-init would. The control plane then launches, reaches, probes and terminates these
 * hosts exactly as it does real ones: nothing is mapped or special-cased.
 */
export interface SimulatedCloud {
  vpcId: string;
  subnetId: string;
  securityGroupId: string;
  amiIds: Record<string, string>;
  /** The worker's environment for this cloud (MARKCO_CLOUD, AWS_ENDPOINT_URL, MARKCO_EC2_*). */
  env: Record<string, string>;
}

/** The VPC of every run; each run's subnet is its bridge's /24 inside it. */
const vpcCidr = '10.77.0.0/16';

type Ec2 = Pick<EC2Client, 'send'> & Partial<Pick<EC2Client, 'config'>>;

async function endpointOf(ec2: Ec2): Promise<string | undefined> {
  const provider = ec2.config?.endpoint;
  if (!provider) return undefined;
  const e = await provider();
  return `${e.protocol}//${e.hostname}${e.port ? `:${e.port}` : ''}${e.path === '/' ? '' : e.path}`;
}

/**
 * Makes the network EC2 launches into: a VPC, a subnet on the run's bridge (net.prefix.0/24) with
 * .0/26 reserved, so moto hands out .64 and up, clear of the bridge (.1) and the static hosts (.11, .12),
 * a security group, and an AMI (the emulator's first Amazon image) for the ladder's families.
 * Running it again on the same emulator finds what the first run made.
 */
export async function setupSimulatedCloud(ec2: Ec2, net: TestNetwork, opts: { endpoint?: string } = {}): Promise<SimulatedCloud> {
  const subnetCidr = `${net.prefix}.0/24`;
  const vpcs = await ec2.send(new DescribeVpcsCommand({ Filters: [{ Name: 'cidr-block-association.cidr-block', Values: [vpcCidr] }] }));
  const vpcId = vpcs.Vpcs?.[0]?.VpcId ?? (await ec2.send(new CreateVpcCommand({ CidrBlock: vpcCidr }))).Vpc?.VpcId;
  if (!vpcId) throw new Error('the EC2 emulator made no VPC');

  const subnets = await ec2.send(new DescribeSubnetsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId] }, { Name: 'cidr-block', Values: [subnetCidr] }] }));
  const subnetId = subnets.Subnets?.[0]?.SubnetId ?? (await ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: subnetCidr }))).Subnet?.SubnetId;
  if (!subnetId) throw new Error('the EC2 emulator made no subnet');
  const reserved = `${net.prefix}.0/26`;
  const reservations = await ec2.send(new GetSubnetCidrReservationsCommand({ SubnetId: subnetId }));
  if (!(reservations.SubnetIpv4CidrReservations ?? []).some((r) => r.Cidr === reserved)) {
    await ec2.send(new CreateSubnetCidrReservationCommand({ SubnetId: subnetId, Cidr: reserved, ReservationType: 'explicit', Description: 'bridge and static namespace hosts' }));
  }

  const groupName = `markco-hosts-${net.runId}`;
  const groups = await ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'vpc-id', Values: [vpcId] }, { Name: 'group-name', Values: [groupName] }] }));
  const securityGroupId =
    groups.SecurityGroups?.[0]?.GroupId ?? (await ec2.send(new CreateSecurityGroupCommand({ GroupName: groupName, Description: 'markco simulated runtime hosts', VpcId: vpcId }))).GroupId;
  if (!securityGroupId) throw new Error('the EC2 emulator made no security group');

  const images = await ec2.send(new DescribeImagesCommand({ Owners: ['amazon'] }));
  const imageId = images.Images?.find((i) => i.ImageId?.startsWith('ami-'))?.ImageId;
  if (!imageId) throw new Error('the EC2 emulator lists no Amazon image to use as the runtime AMI');
  // Every namespace host boots the same machine's images, so one AMI serves every family.
  const amiIds = { t3: imageId, g5: imageId };

  const endpoint = opts.endpoint ?? (await endpointOf(ec2));
  return {
    vpcId,
    subnetId,
    securityGroupId,
    amiIds,
    env: {
      MARKCO_CLOUD: 'simulated',
      ...(endpoint ? { AWS_ENDPOINT_URL: endpoint } : {}),
      MARKCO_EC2_SUBNET_ID: subnetId,
      MARKCO_EC2_SECURITY_GROUP_IDS: securityGroupId,
      MARKCO_EC2_AMI_IDS: JSON.stringify(amiIds),
      MARKCO_EC2_SSH_USER: 'root',
    },
  };
}

export interface BootWatcher {
  /** Stops watching and destroys every host it booted. */
  stop(): Promise<void>;
  /**
   * The next instance boots from a "bad AMI": with `restore` its podman fails `container restore`
   * (exit 125); with `unsupported` its podman reports the crun runtime, so registerHost refuses the host.
   */
  failNextBoot(kind: BadAmi): void;
  /** The hosts booted and still running (a host being shut down is not listed). */
  booted(): NamespaceHostInfo[];
  /** The host booted for an instance, if it runs. */
  hostOf(instanceId: string): NamespaceHostInfo | undefined;
}

export interface BootWatcherOptions {
  ec2: Pick<EC2Client, 'send'>;
  net: TestNetwork;
  /** Booted hosts keep their files under <runDir>/hosts/<hostId>. */
  runDir: string;
  /** Used for instances whose UserData authorises no key (not launched by launchHost). */
  authorizedKeysPath: string;
  /** Only instances tagged markco:deployment=<this> (a test file's own); every managed instance when absent. */
  deploymentId?: string;
  /** Read-only image store of the booted hosts (the "AMI"); default the machine's podman storage. */
  sharedImageStore?: string;
  intervalMs?: number;
  log?: Pick<Logger, 'info' | 'warn'>;
}

export type BadAmi = 'restore' | 'unsupported';

/** sshd puts these in front of PATH on a bad-AMI host: podman as usual, except for one thing. */
const badAmiShims: Record<BadAmi, string> = {
  restore: `#!/bin/sh
# A "bad AMI" of the simulated cloud (failNextBoot('restore')): restoring a checkpoint fails.
prev=
for arg in "$@"; do
  if [ "$prev" = container ] && [ "$arg" = restore ]; then
    echo "Error: simulated bad AMI: podman container restore fails on this host" >&2
    exit 125
  fi
  prev=$arg
done
exec /usr/bin/podman "$@"
`,
  unsupported: `#!/bin/sh
# A "bad AMI" of the simulated cloud (failNextBoot('unsupported')): podman runs containers with crun,
# which cannot checkpoint here.
if [ "$1" = info ]; then
  echo "crun v1"
  exit 0
fi
exec /usr/bin/podman "$@"
`,
};

const lastOctet = (ip: string) => Number(ip.split('.')[3]);

/**
 * Boots a namespace host for every running managed instance with an address on the run's subnet, and
 * destroys it once the instance is shutting down or terminated. Polls DescribeInstances every 250 ms.
 */
export function startBootWatcher(opts: BootWatcherOptions): BootWatcher {
  const log = opts.log ?? createLogger({ level: process.env.LOG_LEVEL ?? 'warn', name: 'simulated-cloud' });
  const hosts = new Map<string, NamespaceHostInfo>();
  const inFlight = new Map<string, Promise<void>>();
  const givenUp = new Set<string>();
  const closing = new Set<string>();
  let failNext: BadAmi | undefined;
  let stopped = false;
  const filters = [
    { Name: `tag:${managedTag.key}`, Values: [managedTag.value] },
    ...(opts.deploymentId ? [{ Name: `tag:${deploymentTag}`, Values: [opts.deploymentId] }] : []),
  ];

  const onSubnet = (ip: string | null): ip is string => !!ip && ip.startsWith(`${opts.net.prefix}.`) && lastOctet(ip) >= 64 && lastOctet(ip) <= 254;

  async function boot(i: InstanceDescription): Promise<void> {
    const address = i.privateIp!;
    const attr = await opts.ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: i.instanceId, Attribute: 'userData' }));
    const userData = attr.UserData?.Value ? Buffer.from(attr.UserData.Value, 'base64').toString('utf8') : '';
    const keys = parseCloudInitUserData(userData);
    // The control plane's host id, as the host's MARKCO_HOST_ID. One directory per instance: should a
    // host id ever be launched twice, the second instance does not share the first one's files.
    const tagged = i.tags[hostTag] ?? i.instanceId;
    const hostId = existsSync(join(opts.runDir, 'hosts', tagged)) ? `${tagged}-${i.instanceId}` : tagged;
    const dir = join(opts.runDir, 'hosts', hostId);
    mkdirSync(join(dir, 'ssh'), { recursive: true });
    let authorizedKeys = opts.authorizedKeysPath;
    if (keys && keys.authorizedKeys.length > 0) {
      authorizedKeys = join(dir, 'ssh', 'authorized_keys');
      writeFileSync(authorizedKeys, `${keys.authorizedKeys.join('\n')}\n`, { mode: 0o600 });
    }
    const pathPrefix: string[] = [];
    const badAmi = failNext;
    failNext = undefined;
    if (badAmi) {
      const bin = join(dir, 'bad-ami-bin');
      mkdirSync(bin, { recursive: true });
      writeFileSync(join(bin, 'podman'), badAmiShims[badAmi]);
      chmodSync(join(bin, 'podman'), 0o755);
      pathPrefix.push(bin);
    }
    const info = await createNamespaceHost({
      net: opts.net,
      runDir: opts.runDir,
      index: lastOctet(address),
      hostId,
      address,
      authorizedKeys,
      ...(keys ? { hostKeyPrivate: keys.hostKeyPrivate } : {}),
      sharedImageStore: opts.sharedImageStore ?? machineImageStore,
      pathPrefix,
    });
    hosts.set(i.instanceId, info);
    log.info({ instanceId: i.instanceId, hostId, address, badAmi: badAmi ?? null }, 'simulated instance booted');
  }

  async function shutDown(instanceId: string): Promise<void> {
    const info = hosts.get(instanceId);
    if (!info) return;
    // From here on the host is no longer running: commands on it are killed by the teardown.
    closing.add(instanceId);
    try {
      await destroyNamespaceHost(info);
      hosts.delete(instanceId);
    } finally {
      closing.delete(instanceId);
    }
    log.info({ instanceId, hostId: info.hostId }, 'simulated instance shut down');
  }

  function track(instanceId: string, work: () => Promise<void>): void {
    inFlight.set(
      instanceId,
      work()
        .catch((err: unknown) => {
          givenUp.add(instanceId);
          log.warn({ instanceId, err: (err as Error).message }, 'the simulated cloud could not boot or shut down an instance; it is left alone');
        })
        .finally(() => inFlight.delete(instanceId)),
    );
  }

  async function tick(): Promise<void> {
    const instances = await findInstances(opts.ec2, filters);
    const seen = new Set<string>();
    for (const i of instances) {
      seen.add(i.instanceId);
      if (inFlight.has(i.instanceId) || givenUp.has(i.instanceId)) continue;
      const up = hosts.has(i.instanceId);
      if (i.state === 'running' && !up && onSubnet(i.privateIp)) {
        // An address still held by a host being shut down waits for the next round.
        if ([...hosts.values()].some((h) => h.address === i.privateIp)) continue;
        track(i.instanceId, () => boot(i));
      } else if (up && i.state !== 'running' && i.state !== 'pending') {
        track(i.instanceId, () => shutDown(i.instanceId));
      }
    }
    for (const instanceId of hosts.keys()) if (!seen.has(instanceId) && !inFlight.has(instanceId)) track(instanceId, () => shutDown(instanceId));
  }

  const loop = (async () => {
    while (!stopped) {
      try {
        await tick();
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'listing the simulated instances failed');
      }
      await sleep(opts.intervalMs ?? 250);
    }
  })();

  return {
    async stop() {
      stopped = true;
      await loop;
      await Promise.allSettled([...inFlight.values()]);
      await Promise.allSettled([...hosts.keys()].map((id) => shutDown(id)));
    },
    failNextBoot(kind) {
      if (!(kind in badAmiShims)) throw new Error(`unknown bad AMI ${String(kind)} (expected ${Object.keys(badAmiShims).join(' or ')})`);
      failNext = kind;
    },
    booted: () => [...hosts].filter(([id]) => !closing.has(id)).map(([, info]) => info),
    hostOf: (instanceId) => hosts.get(instanceId),
  };
}
