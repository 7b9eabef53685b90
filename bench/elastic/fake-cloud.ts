/**
 * An in-memory stand-in for the EC2 side of the simulation (unit tests, and `EMULATOR=0` dry runs of
 * bench/elastic-cost.ts): it records launch and terminate times and answers the reaper's listing with the
 * same tags activities/ec2.ts puts on a launched host.
 */
import { deploymentTag, hostTag, managedTag, tierTag, userTag, type InstanceDescription } from '../../activities/ec2.js';
import type { LaunchRequest, SimCloud } from './sim.js';

export interface FakeInstance {
  instanceId: string;
  instanceType: string;
  tags: Record<string, string>;
  launchedAt: number;
  terminatedAt: number | null;
}

export function createFakeCloud(deploymentId: string): SimCloud & { instances: FakeInstance[] } {
  const instances: FakeInstance[] = [];
  return {
    instances,
    async launch(req: LaunchRequest, now: number) {
      const instanceId = `i-${(instances.length + 1).toString(16).padStart(17, '0')}`;
      instances.push({
        instanceId,
        instanceType: req.instanceType,
        tags: { [managedTag.key]: managedTag.value, [userTag]: req.userId, [hostTag]: req.hostId, [tierTag]: req.tier, [deploymentTag]: deploymentId },
        launchedAt: now,
        terminatedAt: null,
      });
      return { instanceId };
    },
    async terminate(instanceId: string, now: number) {
      const i = instances.find((x) => x.instanceId === instanceId);
      if (i && i.terminatedAt === null) i.terminatedAt = now;
    },
    async listManaged(): Promise<InstanceDescription[]> {
      return instances
        .filter((i) => i.terminatedAt === null)
        .map((i) => ({ instanceId: i.instanceId, state: 'running', instanceType: i.instanceType, privateIp: null, tags: i.tags, spot: false, launchTime: new Date(i.launchedAt).toISOString() }));
    },
  };
}
