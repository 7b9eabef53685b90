/**
 * Elastic compute: EC2 hosts launched for a user, reservations, migrations between any two hosts.
 * Plain JSON exchanged by workflows, activities, the edge and the `temporal` CLI (docs/runbook.md).
 */

/**
 * Why a migration runs; `MarkcoOperation` is `migrate`, `critical`, `scale-down`, `gpu-hop` (onto the GPU
 * host), `gpu-return` (back after GPU idleness) or `spot-interruption` accordingly.
 */
export const MigrationReasons = ['operator', 'pressure', 'urgent', 'critical', 'scale-down', 'gpu', 'gpu-idle', 'spot-interruption'] as const;
export type MigrationReason = (typeof MigrationReasons)[number];

export interface MigrateRuntimeInput {
  userId: string;
  /**
   * `base`, a tier name of the user's plan, an EC2 instance type on that plan's ladder, or `auto`: sized
   * from `usedBytes` (up the ladder for pressure, down for scale-down).
   */
  target: string;
  reason: MigrationReason;
  /** Memory in use when the policy decided (with `auto`). */
  usedBytes?: number;
  /**
   * Operators only: a host that is already registered and ready (the tier still sets the limits).
   * Without it the target is the base server for `base`, else a reserved or newly launched EC2 host.
   */
  targetHostId?: string;
}

export interface MigrationTimings {
  checkpointMs: number;
  transferMs: number;
  restoreMs: number;
  downtimeMs: number;
  frozenMs: number | null;
  archiveBytes: number;
}

export interface MigrateRuntimeResult {
  migrationId: string;
  userId: string;
  runtimeId: string;
  sourceHostId: string;
  targetHostId: string;
  fromTier: string;
  toTier: string;
  memoryLimitBytes: number;
  timings: MigrationTimings;
}

/** What role a launched instance plays; recorded in its `markco:role` tag. */
export type HostRole = 'runtime-host';

/** Input of `provisionHost` (id `host/<hostId>/provision`): launch one EC2 host and make it ready. */
export interface ProvisionHostInput {
  /** `ec2-<12 hex>`; a retried launch looks the instance up by this id's tag, so it is never doubled. */
  hostId: string;
  userId: string;
  /** The tier name on the user's ladder (an instance type such as `t3.medium`). */
  tier: string;
  instanceType: string;
  /** Seconds the host stays reserved for the user; the launching migration claims it at once. */
  reserveForSeconds: number;
  /** Set when a migration launches the host for itself: it is claimed from the start. */
  claimedBy?: string;
  gpu?: boolean;
}

export interface ProvisionedHost {
  hostId: string;
  instanceId: string;
  instanceType: string;
  address: string;
  lifecycle: 'on-demand' | 'spot';
}

/** Input of `preProvisionHost` (id `user/<uid>/pre-provision`). */
export interface PreProvisionInput {
  userId: string;
  /** Tier to reserve; the one above the runtime's current tier when absent. */
  tier?: string;
  /** How long an unclaimed reservation is kept before the instance is terminated (default from config). */
  ttlSeconds?: number;
}

export interface PreProvisionResult {
  hostId: string;
  instanceId: string;
  tier: string;
  /** `claimed` when a migration took the host, `released` when the reservation timed out. */
  outcome: 'claimed' | 'released';
}

export interface ReapInstancesInput {
  /** Instances launched or touched within this many seconds are kept (a launch may be in flight). */
  graceSeconds?: number;
  dryRun?: boolean;
}

export interface ReapInstancesResult {
  examined: number;
  terminated: { instanceId: string; hostId: string | null; reason: string }[];
  kept: number;
  /** `ready` host rows whose instance no longer exists, now marked terminated. */
  rowsClosed: string[];
}
