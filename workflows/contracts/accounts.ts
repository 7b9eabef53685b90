/**
 * Account deletion: the plain JSON the deleteAccount workflow takes and gives (docs/runbook.md), and the
 * check every entry point shares (the edge's routes, the user's entity, the CLI).
 */
import { userIdPattern } from './users.js';

/** Who asked: the user themself (DELETE /api/account) or an operator (DELETE /api/users/:userId, the CLI). */
export const DeletionRequesters = ['user', 'operator'] as const;
export type DeletionRequester = (typeof DeletionRequesters)[number];

export interface DeleteAccountInput {
  userId: string;
  /** Recorded in the `account.deleted` event; `operator` when absent. */
  requestedBy?: DeletionRequester;
}

export interface DeleteAccountResult {
  userId: string;
  /** False when the users row was already gone (a run repeated after a finished deletion): nothing was left to remove. */
  userRemoved: boolean;
  sandboxesDestroyed: number;
  runtimeRemoved: boolean;
  editorRemoved: boolean;
  /** Hosts whose leftover containers and home directory of the user were removed. */
  hostsCleared: string[];
  snapshotsDeleted: number;
  /** S3 objects and unfinished uploads under the user's prefix that no snapshot row named. */
  strayArchivesRemoved: number;
  hostsTerminated: string[];
}

const inputFields = new Set(['userId', 'requestedBy']);

export function validateDeleteAccountInput(input: DeleteAccountInput): string[] {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return ['input must be a JSON object'];
  const problems: string[] = [];
  if (typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) problems.push('userId: expected a lowercase UUID');
  if (input.requestedBy !== undefined && !DeletionRequesters.includes(input.requestedBy)) problems.push(`requestedBy: expected one of ${DeletionRequesters.join(', ')}`);
  // A typo in a field name must not pass silently: an operator deleting an account reads what was refused.
  for (const field of Object.keys(input)) if (!inputFields.has(field)) problems.push(`${field}: not a field of deleteAccount (userId, requestedBy)`);
  return problems;
}
