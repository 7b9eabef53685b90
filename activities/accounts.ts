/**
 * Activities of account deletion (workflows/delete-account.ts) that no other operation has: marking the
 * user, finding what is theirs, clearing a host of them, and removing the users row. Removing the
 * runtime, editor, sandboxes, snapshots and hosts reuses those operations' own activities. Each one
 * looks at what exists, so a retry, or the whole workflow run again, finishes the job.
 */
import { ApplicationFailure } from '@temporalio/common';
import { posix } from 'node:path';
import { ErrorType } from '../workflows/contracts/errors.js';
import type { DeletionRequester } from '../workflows/contracts/accounts.js';
import { userIdPattern } from '../workflows/contracts/users.js';
import { shellForHost } from './hosts.js';
import type { ActivityDeps } from './index.js';
import { containerNamesArgs, frozenContainerArgs, removeContainerArgs } from './podman-commands.js';
import { containersOfUser } from './user-containers.js';

function requireUserId(input: { userId?: unknown } | null | undefined): string {
  const userId = input?.userId;
  if (typeof userId !== 'string' || !userIdPattern.test(userId)) {
    throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: 'userId: expected a lowercase UUID', nonRetryable: true });
  }
  return userId;
}

export interface AccountDeletionPlan {
  sandboxIds: string[];
  snapshotIds: string[];
  /** Reachable hosts that may hold the user's home or containers, the base server first. */
  hostIds: string[];
}

export function createAccountActivities(deps: ActivityDeps) {
  const { store, environment: env } = deps;

  return {
    /** Marks the user as being deleted and revokes their sessions, invites and memberships (lib/account-deletion.ts). */
    async beginAccountDeletion(input: { userId: string; workflowId?: string }): Promise<{ found: boolean; sessionsRevoked: number; invitesRevoked: number; membershipsRevoked: number }> {
      const begun = await store.accountDeletion.begin(requireUserId(input), { source: 'worker', ...(input.workflowId ? { workflowId: input.workflowId } : {}) });
      return { ...begun, membershipsRevoked: begun.membershipsRevoked.length };
    },

    /** What of the user exists now: their live sandboxes, snapshots with an archive anywhere, and hosts to clear. */
    async planAccountDeletion(input: { userId: string }): Promise<AccountDeletionPlan> {
      const userId = requireUserId(input);
      const [sandboxes, snapshotIds, hostIds] = await Promise.all([
        store.sandboxes.liveForUser(userId),
        store.accountDeletion.snapshotIds(userId),
        store.accountDeletion.hostsHolding(userId, env.baseHostId),
      ]);
      return { sandboxIds: sandboxes.map((s) => s.id), snapshotIds, hostIds };
    },

    /**
     * Removes whatever of the user is left on a host after their runtime, editor and sandboxes went by
     * their rows: containers named for them (a restore's leftover, a row that lost track) and their home
     * directory. A host no longer reachable (terminated meanwhile) has nothing left to clear.
     */
    async clearUserFromHost(input: { userId: string; hostId: string }): Promise<{ cleared: boolean; containersRemoved: string[] }> {
      const userId = requireUserId(input);
      const { host, shell } = await shellForHost(deps, input.hostId);
      if (host.state !== 'ready' && host.state !== 'draining') return { cleared: false, containersRemoved: [] };
      const names = containersOfUser((await shell.run(containerNamesArgs, { timeoutMs: 30_000 })).stdout, userId);
      for (const name of names) {
        // A runtime frozen by a checkpoint that never finished ignores SIGKILL until thawed.
        await shell.run(frozenContainerArgs(name, 'kill'), { timeoutMs: 30_000 });
        await shell.run(removeContainerArgs(name), { timeoutMs: 60_000 });
      }
      await shell.run(['rm', '-rf', '--', posix.join(env.usersDir, userId)], { timeoutMs: 10 * 60_000 });
      return { cleared: true, containersRemoved: names };
    },

    /** EC2 hosts reserved for the user that are still up, for terminateHost. */
    async reservedHostsOf(input: { userId: string }): Promise<string[]> {
      return store.accountDeletion.reservedHosts(requireUserId(input));
    },

    /**
     * The last step: the users row goes (ON DELETE CASCADE takes sessions, invites, memberships, runtimes,
     * editors, snapshots, migrations, port leases and identities), the user's events are kept under their
     * id as plain text, and `account.deleted` is logged.
     */
    async forgetAccount(input: { userId: string; workflowId: string; requestedBy: DeletionRequester; summary: Record<string, unknown> }): Promise<{ removed: boolean }> {
      const userId = requireUserId(input);
      const { removed, eventsKept } = await store.accountDeletion.remove(userId);
      if (removed) {
        await store.events.append({ type: 'account.deleted', source: 'worker', userId, workflowId: input.workflowId, payload: { requestedBy: input.requestedBy, eventsKept, ...input.summary } });
      }
      return { removed };
    },
  };
}
