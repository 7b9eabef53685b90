import type { EC2Client } from '@aws-sdk/client-ec2';
import type { CloudConfig } from '../lib/config.js';
import type { Store } from '../lib/store.js';
import type { GpuSettings, Tier } from '../lib/tiers.js';
import type { Plan } from '../workflows/contracts/users.js';
import { createAccountActivities } from './accounts.js';
import { createEc2Activities } from './ec2.js';
import { typedFailures } from './failures.js';
import type { HostShells } from './host-shell.js';
import { createHostActivities } from './hosts.js';
import { createMigrationActivities } from './migration.js';
import { createMonitorActivities, type EntitySignals } from './monitor.js';
import { createSnapshotActivities, type ArchiveBucket } from './snapshots.js';
import { createUserEnvironmentActivities, type UserEnvironmentConfig } from './user-environment.js';

export interface ActivityDeps {
  store: Store;
  shells: HostShells;
  ec2: Pick<EC2Client, 'send'>;
  environment: UserEnvironmentConfig;
  /** The tier ladder per plan (lib/tiers.ts); the default ladder when absent. */
  tiers?: Record<Plan, Tier[]>;
  /** EC2 hosts (MARKCO_CLOUD and the MARKCO_EC2_* variables); none are launched when absent. */
  cloud?: CloudConfig;
  /** The S3 bucket checkpoint archives are copied to (MARKCO_S3_*); they stay on the base server only when absent. */
  archives?: ArchiveBucket;
  /** Signals to users' entities (the resource monitor's readings); the monitor cannot run without it. */
  entities?: EntitySignals;
  /** The GPU hop (MARKCO_GPU_*); no runtime hops to a GPU host when absent or null. */
  gpu?: GpuSettings | null;
}

function withTypedFailures<T extends Record<string, (...args: never[]) => Promise<unknown>>>(group: T): T {
  return Object.fromEntries(Object.entries(group).map(([name, fn]) => [name, typedFailures(fn)])) as T;
}

/** Every activity the worker registers, built once from the worker's clients. */
export function createActivities(deps: ActivityDeps) {
  return withTypedFailures({
    ...createHostActivities(deps),
    ...createEc2Activities(deps),
    ...createUserEnvironmentActivities(deps),
    ...createMigrationActivities(deps),
    ...createSnapshotActivities(deps),
    ...createMonitorActivities(deps),
    ...createAccountActivities(deps),
  });
}

export type Activities = ReturnType<typeof createActivities>;
