import type { Grant, MembershipStore } from '../lib/memberships.js';
import type { TunnelRegistry } from './proxy/forward.js';

/** What the edge records about each WebSocket tunnel it opens to a user's editor (TunnelRegistry meta). */
export interface EditorTunnel {
  /** Whose editor the tunnel reaches. */
  ownerId: string;
  /** Who opened it: the owner, or a collaborator. */
  userId: string;
  /** The edge session it was opened with: ending that session cuts it. */
  sessionId: string;
  /** The membership that let a collaborator in; absent for the owner. */
  membershipId?: string;
}

/**
 * Whether a signed-in user may use another user's editor, and with which role. Looked up on every request
 * and upgrade; an answer is reused for two seconds at most (the editor's page loads in bursts), and a
 * grant or revocation made through this edge drops it at once, and a revocation cuts the WebSockets the
 * membership had opened.
 */
const grantCacheMs = 2_000;
const grantCacheMax = 10_000;

export function createCollaboratorAccess(opts: { memberships: MembershipStore['memberships']; tunnels: TunnelRegistry<EditorTunnel> }) {
  const cache = new Map<string, { grant: Grant | undefined; until: number }>();
  const keyOf = (ownerId: string, memberId: string) => `${ownerId}/${memberId}`;

  return {
    async grantOf(ownerId: string, memberId: string): Promise<Grant | undefined> {
      const key = keyOf(ownerId, memberId);
      const hit = cache.get(key);
      if (hit && hit.until > Date.now()) return hit.grant;
      const grant = await opts.memberships.grantOf(ownerId, memberId);
      if (cache.size >= grantCacheMax) cache.clear();
      cache.set(key, { grant, until: Date.now() + grantCacheMs });
      return grant;
    },

    /** Read without the cache: a tunnel that opened while its membership was being revoked is checked once more. */
    isLive: (membershipId: string) => opts.memberships.isLive(membershipId),

    /** Access that has begun (a link was taken): a refusal cached a moment ago must not outlive it. */
    granted(m: { ownerId: string; memberId: string }): void {
      cache.delete(keyOf(m.ownerId, m.memberId));
    },

    /** Access that has ended: forgotten here, and every tunnel it had opened cut now. Answers how many were cut. */
    revoked(memberships: ReadonlyArray<{ id: string; ownerId: string; memberId: string }>): number {
      for (const m of memberships) cache.delete(keyOf(m.ownerId, m.memberId));
      const ids = new Set(memberships.map((m) => m.id));
      if (ids.size === 0) return 0;
      return opts.tunnels.closeWhere((t) => t.membershipId !== undefined && ids.has(t.membershipId));
    },
  };
}

export type CollaboratorAccess = ReturnType<typeof createCollaboratorAccess>;
