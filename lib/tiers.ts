import { z } from 'zod';
import { Plans, type Plan } from '../workflows/contracts/users.js';

/**
 * The tier ladder: where a user's runtime can live, smallest first. The first rung of every plan is the
 * base server with the plan's own limits; each further rung is an EC2 instance type whose runtime gets
 * the instance's memory minus what the host itself needs. Pre-provision and migrate climb it; scale down
 * walks it back. Operators replace it with MARKCO_TIER_LADDER (JSON, validated).
 */
export interface Tier {
  /** `base`, or an EC2 instance type such as `t3.large`. */
  name: string;
  instanceType: string | null;
  /** The runtime container's memory limit on this tier. */
  memoryBytes: number;
  cpus: number;
  gpu: boolean;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** What a runtime host keeps for itself (kernel, podman, sshd, CRIU's own memory while dumping). */
export const hostReserveBytes = 512 * MiB;

const ec2 = (instanceType: string, memoryBytes: number, cpus: number, gpu = false): Tier => ({
  name: instanceType,
  instanceType,
  memoryBytes: memoryBytes - hostReserveBytes,
  cpus,
  gpu,
});

const t3Ladder = [ec2('t3.small', 2 * GiB, 2), ec2('t3.medium', 4 * GiB, 2), ec2('t3.large', 8 * GiB, 2), ec2('t3.xlarge', 16 * GiB, 4), ec2('t3.2xlarge', 32 * GiB, 8)];

export const defaultTierLadder: Record<Plan, Tier[]> = {
  free: [{ name: 'base', instanceType: null, memoryBytes: 256 * MiB, cpus: 0.5, gpu: false }, ...t3Ladder.slice(0, 3)],
  pro: [{ name: 'base', instanceType: null, memoryBytes: 512 * MiB, cpus: 1, gpu: false }, ...t3Ladder],
  team: [{ name: 'base', instanceType: null, memoryBytes: 1 * GiB, cpus: 2, gpu: false }, ...t3Ladder],
};

const TierSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9.-]{0,40}$/, 'expected a tier name such as t3.large or base'),
  instanceType: z.string().regex(/^[a-z0-9]+\.[a-z0-9]+$/, 'expected an EC2 instance type such as t3.large').nullable(),
  memoryBytes: z.number().int().min(64 * MiB, 'expected at least 64 MiB'),
  cpus: z.number().positive(),
  gpu: z.boolean().default(false),
});

const LadderSchema = z
  .partialRecord(z.enum(Plans), z.array(TierSchema).min(1, 'a plan needs at least one tier'))
  .superRefine((ladder, ctx) => {
    for (const [plan, tiers] of Object.entries(ladder) as [string, z.infer<typeof TierSchema>[]][]) {
      if (tiers[0]?.name !== 'base' || tiers[0].instanceType !== null) ctx.addIssue({ code: 'custom', path: [plan, 0], message: 'the first tier of every plan is the base server (name "base", instanceType null)' });
      tiers.forEach((t, i) => {
        if (i > 0 && t.instanceType === null) ctx.addIssue({ code: 'custom', path: [plan, i], message: 'only the first tier may be the base server' });
        if (i > 0 && t.memoryBytes <= tiers[i - 1]!.memoryBytes) ctx.addIssue({ code: 'custom', path: [plan, i], message: 'each tier must give more memory than the one before' });
      });
    }
  });

/** Parses MARKCO_TIER_LADDER: plans it names replace the default ladder; others keep theirs. */
export function parseTierLadder(json: string | undefined): Record<Plan, Tier[]> {
  if (json === undefined || json.trim() === '') return defaultTierLadder;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new Error(`MARKCO_TIER_LADDER is not JSON: ${(err as Error).message}`);
  }
  const parsed = LadderSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`MARKCO_TIER_LADDER: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return { ...defaultTierLadder, ...(parsed.data as Partial<Record<Plan, Tier[]>>) };
}

export function tierNamed(ladder: Record<Plan, Tier[]>, plan: Plan, name: string): Tier | undefined {
  return ladder[plan].find((t) => t.name === name);
}

/** The rung above `current`, or undefined at the top of the plan's ladder. */
export function nextTier(ladder: Record<Plan, Tier[]>, plan: Plan, current: string): Tier | undefined {
  const tiers = ladder[plan];
  const at = tiers.findIndex((t) => t.name === current);
  return at < 0 ? tiers[1] : tiers[at + 1];
}

/** The rung below `current`, or undefined on the base server. */
export function previousTier(ladder: Record<Plan, Tier[]>, plan: Plan, current: string): Tier | undefined {
  const tiers = ladder[plan];
  const at = tiers.findIndex((t) => t.name === current);
  return at > 0 ? tiers[at - 1] : undefined;
}

/**
 * The smallest rung whose runtime memory holds `bytes` with `headroom` to spare (a restored snapshot, or a
 * migration target chosen from the memory in use); the top rung when none does.
 */
export function smallestTierFor(ladder: Record<Plan, Tier[]>, plan: Plan, bytes: number, headroom = 0.25): Tier {
  const tiers = ladder[plan];
  return tiers.find((t) => bytes * (1 + headroom) <= t.memoryBytes) ?? tiers[tiers.length - 1]!;
}

/**
 * GPU instance types whose size markco knows (memory, vCPUs): the host a GPU hop moves the runtime to
 * (MARKCO_GPU_INSTANCE_TYPE). Kept off the ladder: pressure never climbs onto a GPU host and a scale-down
 * never walks back from one; code that uses the GPU brings the runtime there and GPU idleness takes it back.
 */
export const gpuInstanceSizes: Readonly<Record<string, { memoryBytes: number; cpus: number; gpu: string }>> = Object.freeze({
  'g4dn.xlarge': { memoryBytes: 16 * GiB, cpus: 4, gpu: 'NVIDIA T4 16 GB' },
  'g4dn.2xlarge': { memoryBytes: 32 * GiB, cpus: 8, gpu: 'NVIDIA T4 16 GB' },
  'g5.xlarge': { memoryBytes: 16 * GiB, cpus: 4, gpu: 'NVIDIA A10G 24 GB' },
  'g5.2xlarge': { memoryBytes: 32 * GiB, cpus: 8, gpu: 'NVIDIA A10G 24 GB' },
  'g5.4xlarge': { memoryBytes: 64 * GiB, cpus: 16, gpu: 'NVIDIA A10G 24 GB' },
  'g6.xlarge': { memoryBytes: 16 * GiB, cpus: 4, gpu: 'NVIDIA L4 24 GB' },
  'g6.2xlarge': { memoryBytes: 32 * GiB, cpus: 8, gpu: 'NVIDIA L4 24 GB' },
  'g6e.xlarge': { memoryBytes: 32 * GiB, cpus: 4, gpu: 'NVIDIA L40S 48 GB' },
});

/** The GPU hop's settings (lib/config.ts): which host, for which plans, and how it is launched. */
export interface GpuSettings {
  tier: Tier;
  plans: Plan[];
  /** GPU work idle this long (no GPU code run, no busy CPU on the GPU host) moves the runtime back. */
  idleAfterMs: number;
  market: 'on-demand' | 'spot-then-on-demand';
  /** The image a runtime runs on a GPU host: the CPU runtime image with GPU settings on top (images/runtime-gpu). */
  runtimeImage: string;
}

export function gpuTierOf(instanceType: string): Tier {
  const size = gpuInstanceSizes[instanceType];
  if (!size) throw new Error(`${instanceType} is not a GPU instance type markco knows (${Object.keys(gpuInstanceSizes).join(', ')})`);
  return ec2(instanceType, size.memoryBytes, size.cpus, true);
}

/** The GPU tier a user of `plan` may hop to, or undefined (no GPU configured, or not on this plan). */
export function gpuTierFor(gpu: GpuSettings | null | undefined, plan: Plan): Tier | undefined {
  return gpu && gpu.plans.includes(plan) ? gpu.tier : undefined;
}
