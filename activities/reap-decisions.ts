import type { HostState } from '../workflows/contracts/hosts.js';
import { deploymentTag, hostTag, managedTag, type InstanceDescription } from './ec2.js';

/**
 * The reaper's rule (docs/design/elastic-compute.md §3.5), pure so every case is tested without EC2:
 * an instance of ours is kept while its host row is live and something needs it (a live runtime, an
 * unexpired reservation, a fresh claim, a change within the grace period), or, without a row, while it
 * is younger than the grace period (its launch may still be recording it). Everything else of ours is
 * terminated. An instance not tagged as ours, or of another deployment, is never terminated.
 */
export interface ReapDecision {
  instanceId: string;
  /** The host row the instance belongs to; null for an orphan. */
  hostId: string | null;
  action: 'keep' | 'terminate';
  reason: string;
}

export interface ReapRow {
  host: { id: string; instanceId: string | null; state: HostState };
  live: boolean;
  keepReasons: string[];
}

export function decideReap(input: {
  instances: InstanceDescription[];
  rows: ReapRow[];
  deploymentId: string;
  graceSeconds: number;
  now: Date;
}): { decisions: ReapDecision[]; lostCandidates: string[] } {
  const rowByInstance = new Map(input.rows.flatMap((r) => (r.host.instanceId ? [[r.host.instanceId, r] as const] : [])));
  const listed = new Set(input.instances.map((i) => i.instanceId));
  const decisions = input.instances.map((i): ReapDecision => {
    const row = rowByInstance.get(i.instanceId);
    const keep = (reason: string): ReapDecision => ({ instanceId: i.instanceId, hostId: row?.host.id ?? null, action: 'keep', reason });
    const terminate = (reason: string): ReapDecision => ({ instanceId: i.instanceId, hostId: row?.host.id ?? null, action: 'terminate', reason });
    if (i.tags[managedTag.key] !== managedTag.value) return keep('not tagged as ours');
    if (i.tags[deploymentTag] !== input.deploymentId) return keep(`of deployment ${i.tags[deploymentTag] ?? '(none)'}`);
    if (row) {
      if (!row.live) return terminate(`its host ${row.host.id} is ${row.host.state}`);
      if (row.keepReasons.length > 0) return keep(row.keepReasons.join('; '));
      return terminate(`its host ${row.host.id} has no live runtime, no reservation and no claim, and is idle beyond the grace period`);
    }
    const launchedAt = i.launchTime ? Date.parse(i.launchTime) : Number.NaN;
    const ageSeconds = (input.now.getTime() - launchedAt) / 1000;
    if (!(ageSeconds >= input.graceSeconds)) return keep('no host row yet, launched within the grace period');
    const taggedHost = i.tags[hostTag];
    return terminate(`no host row${taggedHost ? ` records it (tagged ${hostTag}=${taggedHost})` : ''}`);
  });
  // A live row whose instance EC2 did not list may have lost it; the caller confirms with EC2 by id.
  const lostCandidates = input.rows.filter((r) => r.live && r.host.instanceId && !listed.has(r.host.instanceId)).map((r) => r.host.id);
  return { decisions, lostCandidates };
}
