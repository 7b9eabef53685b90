import { setTimeout as sleep } from 'node:timers/promises';
import type { EC2Client } from '@aws-sdk/client-ec2';
import { ApplicationFailure } from '@temporalio/common';
import { activitySignal, heartbeat } from './context.js';
import type { CloudConfig, DataServiceAccess } from '../lib/config.js';
import { connectionOf, type HostRecord, type Store } from '../lib/store.js';
import { defaultTierLadder, gpuTierFor, nextTier, type GpuSettings, type Tier } from '../lib/tiers.js';
import type { ProvisionedHost } from '../workflows/contracts/elastic.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import { hostIdPattern, minimumCriuVersion, type HostConnection, type HostFacts, type RegisterHostInput } from '../workflows/contracts/hosts.js';
import { userIdPattern, type Plan } from '../workflows/contracts/users.js';
import { describeInstanceById, findHostInstances, findManagedInstances, requireCloud, terminateInstanceById } from './ec2.js';
import { HostConnectError, type HostShells, type HostShell } from './host-shell.js';
import { compareVersions, criuVersionArgs, dataForwardArgs, parseCriuVersion, parsePodmanVersion, podmanRuntimeArgs, podmanVersionArgs, parseStorageRoots, storageRootsArgs } from './podman-commands.js';
import { decideReap, type ReapDecision } from './reap-decisions.js';

export interface HostActivityDeps {
  store: Store;
  shells: HostShells;
  ec2: Pick<EC2Client, 'send'>;
  /** Absent or provider `none`: no EC2 hosts (pre-provision refuses, the reaper has nothing to look at). */
  cloud?: CloudConfig;
  tiers?: Record<Plan, Tier[]>;
  gpu?: GpuSettings | null;
  /** The data service's forward on runtime hosts (dataService.hostsForward), installed when a host is registered. */
  environment?: { dataService?: DataServiceAccess };
}

/** Resolves a recorded host to its shell: the one way activities reach a host by id. */
export async function shellForHost(deps: Pick<HostActivityDeps, 'store' | 'shells'>, hostId: string): Promise<{ host: HostRecord; shell: HostShell }> {
  const host = await deps.store.hosts.get(hostId);
  if (!host) throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `host ${hostId} is not recorded`, nonRetryable: true });
  return { host, shell: deps.shells.for(connectionOf(host)) };
}

type ProbeOptions = { timeoutMs: number; signal?: AbortSignal };

/** The host's podman version (as recorded in HostFacts.podmanVersion). */
export async function readPodmanVersion(shell: HostShell, opts: ProbeOptions): Promise<string> {
  return parsePodmanVersion((await shell.run(podmanVersionArgs, opts)).stdout);
}

/** The host's podman storage roots (as recorded in HostFacts.storageRoots). */
export async function readStorageRoots(shell: HostShell, opts: ProbeOptions): Promise<{ graphRoot: string; runRoot: string }> {
  return parseStorageRoots((await shell.run(storageRootsArgs, opts)).stdout);
}

/** Reads what decides whether a host can run and checkpoint runtimes. */
export async function probeHostFacts(shell: HostShell, signal?: AbortSignal): Promise<HostFacts> {
  const opts: ProbeOptions = { timeoutMs: 30_000, ...(signal ? { signal } : {}) };
  const [podmanVersion, runtime, criu, uname, nproc, meminfo, status, roots] = await Promise.all([
    readPodmanVersion(shell, opts),
    shell.run(podmanRuntimeArgs, opts),
    shell.run(criuVersionArgs, opts),
    shell.run(['uname', '-r'], opts),
    shell.run(['nproc'], opts),
    shell.run(['cat', '/proc/meminfo'], opts),
    shell.run(['cat', '/proc/self/status'], opts),
    // Optional: a host whose podman cannot say is judged by the checks above, and a migration asks again.
    readStorageRoots(shell, opts).catch(() => undefined),
  ]);
  const [ociRuntime = '', cgroupVersion = ''] = runtime.stdout.trim().split(/\s+/);
  const memKb = Number(/^MemTotal:\s+(\d+)\s+kB/m.exec(meminfo.stdout)?.[1] ?? 0);
  return {
    podmanVersion,
    ociRuntime,
    criuVersion: parseCriuVersion(criu.stdout),
    kernel: uname.stdout.trim(),
    cpus: Number.parseInt(nproc.stdout.trim(), 10) || 0,
    memoryBytes: memKb * 1024,
    cgroupVersion,
    rootHasSysResource: hasCapability(status.stdout, CAP_SYS_RESOURCE),
    ...(roots ? { storageRoots: roots } : {}),
  };
}

const CAP_SYS_RESOURCE = 24;

/** Reads one capability bit from the CapEff line of a /proc/<pid>/status text. */
export function hasCapability(procStatus: string, bit: number): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)/m.exec(procStatus)?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(bit)) & 1n) === 1n;
}

/** Why a host cannot take runtimes, or undefined when it can. */
export function hostUnsupportedReason(facts: HostFacts): string | undefined {
  if (compareVersions(facts.criuVersion, minimumCriuVersion) < 0) return `criu ${minimumCriuVersion} or newer is required (found ${facts.criuVersion})`;
  if (facts.ociRuntime !== 'runc') return `podman must use runc for checkpoint/restore (it uses ${facts.ociRuntime || 'an unknown runtime'})`;
  return undefined;
}

const fail = (type: ErrorType, message: string): never => {
  throw ApplicationFailure.create({ type, message, nonRetryable: true });
};

/** What a migration gets for a claimed host. */
export function provisionedHostOf(h: HostRecord): ProvisionedHost {
  if (!h.instanceId || !h.instanceType || !h.address) throw new Error(`host ${h.id} is not a reachable EC2 host`);
  return { hostId: h.id, instanceId: h.instanceId, instanceType: h.instanceType, address: h.address, lifecycle: h.lifecycle ?? 'on-demand' };
}

/** ssh refusals that waiting cannot fix: the host presents another key than the one it was given. */
const sshWaitIsFutile = (err: unknown) => err instanceof HostConnectError && (err.reason === 'host-key' || err.reason === 'no-host-key');

export interface PreProvisionPlan {
  tier: string;
  instanceType: string;
  gpu: boolean;
  ttlSeconds: number;
}

export interface ReapPlan {
  graceSeconds: number;
  examined: number;
  decisions: ReapDecision[];
  /** Live host rows whose instance EC2 reports terminated or no longer knows. */
  lostHosts: string[];
}

export function createHostActivities(deps: HostActivityDeps) {
  const ladder = () => deps.tiers ?? defaultTierLadder;
  const cloudConfigured = () => deps.cloud !== undefined && deps.cloud.provider !== 'none';

  return {
    async recordHost(input: RegisterHostInput): Promise<void> {
      await deps.store.hosts.upsert({
        id: input.hostId,
        kind: input.kind,
        address: input.address,
        state: 'booting',
        sshPort: input.sshPort ?? 22,
        sshUser: input.sshUser ?? null,
        hostKey: input.hostKey ?? null,
        instanceId: input.instanceId ?? null,
        instanceType: input.instanceType ?? null,
        gpu: input.gpu ?? false,
      });
    },

    async probeHost(input: { hostId: string }): Promise<HostFacts> {
      const { host, shell } = await shellForHost(deps, input.hostId);
      const facts = await probeHostFacts(shell, activitySignal());
      const unsupported = hostUnsupportedReason(facts);
      if (unsupported) {
        throw ApplicationFailure.create({ type: ErrorType.HostUnsupported, message: `host ${input.hostId}: ${unsupported}`, nonRetryable: true, details: [facts] });
      }
      // Runtimes restored here keep MARKCO_DATA_URL (host.containers.internal): the host forwards it to the data service.
      const forward = deps.environment?.dataService?.hostsForward;
      if (forward && host.kind !== 'base') await shell.run(dataForwardArgs(forward.address, forward.port), { timeoutMs: 30_000 });
      return facts;
    },

    async markHostReady(input: { hostId: string; facts: HostFacts }): Promise<void> {
      await deps.store.hosts.markReady(input.hostId, input.facts);
    },

    async markHostFailed(input: { hostId: string; error: string }): Promise<void> {
      await deps.store.hosts.markFailed(input.hostId, input.error);
    },

    async appendEvent(input: { type: string; hostId?: string; userId?: string; workflowId?: string; payload?: Record<string, unknown> }): Promise<void> {
      await deps.store.events.append({ ...input, source: 'worker' });
    },

    /**
     * Waits until the host's sshd answers with the pinned key and runs a command: the first time a
     * launched host is usable. A host presenting another key fails at once; anything else is retried
     * until the deadline (5 min on AWS, 60 s for simulated hosts).
     */
    async waitForSsh(input: { connection: HostConnection; timeoutMs?: number }): Promise<{ attempts: number; waitedMs: number }> {
      const c = input?.connection;
      if (!c || typeof c.hostId !== 'string' || !c.address || !c.hostKey) fail(ErrorType.InvalidInput, 'connection: expected a host id, an address and a pinned host key');
      const timeoutMs = input.timeoutMs ?? (deps.cloud?.provider === 'simulated' ? 60_000 : 300_000);
      const started = Date.now();
      let attempts = 0;
      let lastError = '';
      const signal = activitySignal();
      while (Date.now() - started < timeoutMs) {
        attempts++;
        try {
          await deps.shells.for(c).run(['true'], { timeoutMs: 15_000, ...(signal ? { signal } : {}) });
          return { attempts, waitedMs: Date.now() - started };
        } catch (err) {
          // Cancelled (a shutting-down worker too): stop now, not after another handshake with a host that is gone.
          if (sshWaitIsFutile(err) || signal?.aborted) throw err;
          lastError = (err as Error).message;
        }
        heartbeat({ attempts, lastError });
        await sleep(1000, undefined, activitySignal() ? { signal: activitySignal()! } : {});
      }
      throw ApplicationFailure.create({ type: ErrorType.HostUnreachable, message: `host ${c.hostId} at ${c.address} did not answer ssh within ${timeoutMs} ms (${attempts} attempts; last: ${lastError})`, nonRetryable: true });
    },

    async recordLaunch(input: {
      hostId: string;
      instanceId: string;
      instanceType: string;
      lifecycle: 'on-demand' | 'spot';
      tier: string;
      userId: string;
      reserveForSeconds: number;
      claimedBy?: string;
      launchedBy: string;
      sshUser: string;
      hostKey: string;
      address?: string | null;
      gpu?: boolean;
    }): Promise<void> {
      await deps.store.hosts.recordLaunch({ ...input, id: input.hostId });
    },

    /**
     * Claims a host reserved for the user with that instance type (pre-provisioned), unexpired and
     * unclaimed. With waitMs, a host still booting is claimed too and waited for; if it does not become
     * ready in time the claim is given back. Null when there is none.
     */
    async claimReservation(input: { userId: string; instanceType: string; claimedBy: string; waitMs?: number }): Promise<ProvisionedHost | null> {
      if (typeof input?.userId !== 'string' || !userIdPattern.test(input.userId)) fail(ErrorType.InvalidInput, 'userId: expected a lowercase UUID');
      if (typeof input.instanceType !== 'string' || !/^[a-z0-9]+\.[a-z0-9]+$/.test(input.instanceType)) fail(ErrorType.InvalidInput, 'instanceType: expected an EC2 instance type such as t3.large');
      if (typeof input.claimedBy !== 'string' || input.claimedBy.length === 0) fail(ErrorType.InvalidInput, 'claimedBy: expected the claiming workflow id');
      const waitMs = Math.min(Math.max(0, input.waitMs ?? 0), 600_000);
      let host = await deps.store.hosts.claimReservation({ userId: input.userId, instanceType: input.instanceType, claimedBy: input.claimedBy, includeBooting: waitMs > 0 });
      if (!host) return null;
      const deadline = Date.now() + waitMs;
      while (host.state !== 'ready') {
        if (!['provisioning', 'booting'].includes(host.state)) return null;
        if (Date.now() >= deadline) {
          await deps.store.hosts.releaseClaim(host.id, input.claimedBy);
          return null;
        }
        heartbeat({ hostId: host.id, state: host.state });
        await sleep(1000, undefined, activitySignal() ? { signal: activitySignal()! } : {});
        host = (await deps.store.hosts.get(host.id)) ?? fail(ErrorType.NotFound, `host ${host.id} disappeared while it was claimed`);
      }
      await deps.store.events.append({ type: 'host.claimed', source: 'worker', hostId: host.id, userId: input.userId, workflowId: input.claimedBy });
      return provisionedHostOf(host);
    },

    /** The reservation's clock restarts now (pre-provision: the TTL counts from when the host is ready). */
    async renewReservation(input: { hostId: string; seconds: number }): Promise<{ renewed: boolean }> {
      return { renewed: (await deps.store.hosts.renewReservation(input.hostId, input.seconds)) !== undefined };
    },

    /** Ends an unclaimed reservation (the host is then to be terminated); false when it was claimed. */
    async releaseReservation(input: { hostId: string; userId: string }): Promise<{ released: boolean }> {
      return { released: await deps.store.hosts.releaseIfUnclaimed(input.hostId, input.userId) };
    },

    /** What pre-provision polls while it waits: whether a migration took its host. */
    async reservationState(input: { hostId: string }): Promise<{ state: string; claimedBy: string | null }> {
      const h = await deps.store.hosts.get(input.hostId);
      return { state: h?.state ?? 'missing', claimedBy: h?.claimedBy ?? null };
    },

    /**
     * Terminates an EC2 host's instance (and any other instance tagged with its host id: a doubled
     * launch) and marks the row terminated, logging host.terminated once. Idempotent. The base host,
     * and an id nothing is known by, are left alone ({terminated: false}).
     */
    async terminateHost(input: { hostId: string; reason: string }): Promise<{ terminated: boolean }> {
      if (typeof input?.hostId !== 'string' || !hostIdPattern.test(input.hostId)) fail(ErrorType.InvalidInput, 'hostId: expected lowercase letters, digits, dots and dashes (at most 63)');
      const row = await deps.store.hosts.get(input.hostId);
      if (row?.kind === 'base') return { terminated: false };
      const instanceIds = new Set<string>(row?.instanceId ? [row.instanceId] : []);
      if (cloudConfigured()) for (const i of await findHostInstances(deps.ec2, input.hostId)) instanceIds.add(i.instanceId);
      if (!row && instanceIds.size === 0) return { terminated: false };
      for (const instanceId of instanceIds) await terminateInstanceById(deps.ec2, instanceId);
      if (row && (await deps.store.hosts.markTerminated(input.hostId))) {
        await deps.store.events.append({ type: 'host.terminated', source: 'worker', hostId: input.hostId, userId: row.reservedFor, payload: { reason: input.reason, instanceIds: [...instanceIds] } });
      }
      return { terminated: true };
    },

    /** The tier pre-provision reserves: the one asked for, else the rung above the runtime's current one. */
    async planPreProvision(input: { userId: string; tier?: string }): Promise<PreProvisionPlan> {
      const cloud = requireCloud(deps.cloud);
      const user = (await deps.store.users.get(input.userId)) ?? fail(ErrorType.NotFound, `user ${input.userId} does not exist`);
      const tiers = ladder()[user.plan];
      let tier: Tier | undefined;
      if (input.tier !== undefined) {
        const gpu = gpuTierFor(deps.gpu, user.plan);
        tier = [...tiers, ...(gpu ? [gpu] : [])].find((t) => t.name === input.tier || t.instanceType === input.tier);
        if (!tier) fail(ErrorType.InvalidInput, `tier: ${input.tier} is not on the ${user.plan} plan's ladder (${tiers.map((t) => t.name).join(', ')}${gpu ? `, GPU ${gpu.name}` : ''})`);
      } else {
        const current = (await deps.store.runtimes.live(input.userId))?.tier ?? 'base';
        tier = nextTier(ladder(), user.plan, current);
        if (!tier) fail(ErrorType.Conflict, `tier: the runtime of user ${input.userId} is on ${current}, the top of the ${user.plan} plan's ladder`);
      }
      if (!tier!.instanceType) fail(ErrorType.InvalidInput, `tier: ${tier!.name} is the base server, not an EC2 host`);
      return { tier: tier!.name, instanceType: tier!.instanceType!, gpu: tier!.gpu, ttlSeconds: cloud.reservationTtlSeconds };
    },

    /** The reaper's plan: EC2's managed instances of this deployment against the host rows (design §3.5). */
    async planReap(input: { graceSeconds?: number }): Promise<ReapPlan> {
      const graceSeconds = input?.graceSeconds ?? deps.cloud?.reaperGraceSeconds ?? 900;
      if (!cloudConfigured()) return { graceSeconds, examined: 0, decisions: [], lostHosts: [] };
      const deploymentId = deps.cloud!.deploymentId;
      const instances = await findManagedInstances(deps.ec2, deploymentId);
      const rows = await deps.store.hosts.reaperView(
        instances.map((i) => i.instanceId),
        graceSeconds,
      );
      const { decisions, lostCandidates } = decideReap({ instances, rows, deploymentId, graceSeconds, now: new Date() });
      const lostHosts: string[] = [];
      for (const hostId of lostCandidates) {
        const instanceId = rows.find((r) => r.host.id === hostId)?.host.instanceId;
        const found = instanceId ? await describeInstanceById(deps.ec2, instanceId) : undefined;
        if (!found || found.state === 'terminated' || found.state === 'shutting-down') lostHosts.push(hostId);
      }
      return { graceSeconds, examined: instances.length, decisions, lostHosts };
    },

    /**
     * Terminates one instance the reaper chose, unless something claimed it since the plan (the row is
     * re-checked in the same UPDATE that moves it to terminating).
     */
    async reapInstance(input: { instanceId: string; hostId: string | null; graceSeconds: number; reason: string }): Promise<{ terminated: boolean; reason: string }> {
      if (input.hostId) {
        if (!(await deps.store.hosts.markTerminatingIfIdle(input.hostId, input.graceSeconds))) return { terminated: false, reason: 'in use since the plan' };
      } else if ((await deps.store.hosts.reaperView([input.instanceId], input.graceSeconds)).some((r) => r.host.instanceId === input.instanceId)) {
        return { terminated: false, reason: 'recorded since the plan' };
      }
      await terminateInstanceById(deps.ec2, input.instanceId);
      if (input.hostId) await deps.store.hosts.markTerminated(input.hostId);
      await deps.store.events.append({ type: 'host.reaped', source: 'worker', hostId: input.hostId, payload: { instanceId: input.instanceId, reason: input.reason } });
      return { terminated: true, reason: input.reason };
    },

    /** A live row whose instance EC2 no longer runs: the host is gone, say so. */
    async closeLostHost(input: { hostId: string }): Promise<{ closed: boolean }> {
      const closed = await deps.store.hosts.markTerminated(input.hostId, 'its EC2 instance no longer exists');
      if (closed) await deps.store.events.append({ type: 'host.instance-lost', source: 'worker', hostId: input.hostId });
      return { closed };
    },
  };
}
