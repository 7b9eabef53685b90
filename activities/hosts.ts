import { ApplicationFailure } from '@temporalio/common';
import { activitySignal } from './context.js';
import { connectionOf, type HostRecord, type Store } from '../lib/store.js';
import { ErrorType } from '../workflows/contracts/errors.js';
import { minimumCriuVersion, type HostFacts, type RegisterHostInput } from '../workflows/contracts/hosts.js';
import type { HostShells, HostShell } from './host-shell.js';
import { compareVersions, criuVersionArgs, parseCriuVersion, parsePodmanVersion, podmanRuntimeArgs, podmanVersionArgs } from './podman-commands.js';

export interface HostActivityDeps {
  store: Store;
  shells: HostShells;
}

/** Resolves a recorded host to its shell: the one way activities reach a host by id. */
export async function shellForHost(deps: HostActivityDeps, hostId: string): Promise<{ host: HostRecord; shell: HostShell }> {
  const host = await deps.store.hosts.get(hostId);
  if (!host) throw ApplicationFailure.create({ type: ErrorType.NotFound, message: `host ${hostId} is not recorded`, nonRetryable: true });
  return { host, shell: deps.shells.for(connectionOf(host)) };
}

/** Reads what decides whether a host can run and checkpoint runtimes. */
export async function probeHostFacts(shell: HostShell, signal?: AbortSignal): Promise<HostFacts> {
  const opts = { timeoutMs: 30_000, ...(signal ? { signal } : {}) };
  const [podman, runtime, criu, uname, nproc, meminfo, status] = await Promise.all([
    shell.run(podmanVersionArgs, opts),
    shell.run(podmanRuntimeArgs, opts),
    shell.run(criuVersionArgs, opts),
    shell.run(['uname', '-r'], opts),
    shell.run(['nproc'], opts),
    shell.run(['cat', '/proc/meminfo'], opts),
    shell.run(['cat', '/proc/self/status'], opts),
  ]);
  const [ociRuntime = '', cgroupVersion = ''] = runtime.stdout.trim().split(/\s+/);
  const memKb = Number(/^MemTotal:\s+(\d+)\s+kB/m.exec(meminfo.stdout)?.[1] ?? 0);
  return {
    podmanVersion: parsePodmanVersion(podman.stdout),
    ociRuntime,
    criuVersion: parseCriuVersion(criu.stdout),
    kernel: uname.stdout.trim(),
    cpus: Number.parseInt(nproc.stdout.trim(), 10) || 0,
    memoryBytes: memKb * 1024,
    cgroupVersion,
    rootHasSysResource: hasCapability(status.stdout, CAP_SYS_RESOURCE),
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

export function createHostActivities(deps: HostActivityDeps) {
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
      const { shell } = await shellForHost(deps, input.hostId);
      const facts = await probeHostFacts(shell, activitySignal());
      const unsupported = hostUnsupportedReason(facts);
      if (unsupported) {
        throw ApplicationFailure.create({ type: ErrorType.HostUnsupported, message: `host ${input.hostId}: ${unsupported}`, nonRetryable: true, details: [facts] });
      }
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
  };
}
