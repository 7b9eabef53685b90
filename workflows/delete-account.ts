import { ApplicationFailure, getExternalWorkflowHandle, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import { validateDeleteAccountInput, type DeleteAccountInput, type DeleteAccountResult } from './contracts/accounts.js';
import { ErrorType } from './contracts/errors.js';
import { Operation, workflowIds } from './contracts/operations.js';
import { errorMessage, operatorControls, requireEntityParent, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { quick } from './options.js';

const db = proxyActivities<Activities>(quick);
/**
 * Removing must get through, so a host that is briefly unreachable or an S3 error is retried for about a
 * quarter of an hour; after that the run fails with the user still marked (signed out, refused), and
 * running it again finishes the job.
 */
const removing = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20, nonRetryableErrorTypes: [ErrorType.InvalidInput, ErrorType.NotFound] },
});

const failureType = (err: unknown) => (err as { cause?: { type?: string } }).cause?.type;

/** A sandbox or snapshot that is already gone (its row went with an earlier attempt) is done. */
async function unlessGone<T>(remove: () => Promise<T>): Promise<T | undefined> {
  try {
    return await remove();
  } catch (err) {
    if (failureType(err) === ErrorType.NotFound) return undefined;
    throw err;
  }
}

/** Asks the user's reservations being made to stop: each terminates the host it launched on its way out. */
async function cancelReservations(userId: string): Promise<void> {
  for (const workflowId of [workflowIds.preProvision(userId), workflowIds.preProvisionGpu(userId)]) {
    try {
      await getExternalWorkflowHandle(workflowId).cancel();
    } catch (err) {
      // Not running: nothing is being reserved under that id.
      log.info('no reservation to cancel', { workflowId, error: errorMessage(err) });
    }
  }
}

/**
 * Deletes a user's account: sessions, invites and memberships, containers on every host, snapshots on
 * the base server and in S3, files, the EC2 hosts reserved for them, and last the users row. Runs as the
 * last child of the user's entity (no operation of theirs runs beside it). Every step looks at what
 * exists, so a retried activity or the whole workflow run again finishes the job; a failure leaves the
 * user marked as being deleted, signed out and refused, never half there.
 */
export async function deleteAccount(input: DeleteAccountInput): Promise<DeleteAccountResult> {
  const problems = validateDeleteAccountInput(input);
  if (problems.length > 0) throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid deleteAccount input: ${problems.join('; ')}`, nonRetryable: true });
  const { userId } = input;
  requireEntityParent(userId, 'deleteAccount', 'deleteAccount');
  let step = 'mark';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.deleteAccount, userId });
  const { workflowId } = workflowInfo();
  try {
    // Again (the entity's update did it already): a run started any other way marks the user first too.
    await db.beginAccountDeletion({ userId, workflowId });
    const plan = await db.planAccountDeletion({ userId });

    // The user's EC2 hosts go first: their containers and files go with them, and no step waits on
    // reaching a host that is about to disappear.
    step = 'hosts';
    await cancelReservations(userId);
    const hostsTerminated: string[] = [];
    for (const hostId of await db.reservedHostsOf({ userId })) {
      if ((await removing.terminateHost({ hostId, reason: `the account of user ${userId} is deleted` })).terminated) hostsTerminated.push(hostId);
    }

    step = 'sandboxes';
    let sandboxesDestroyed = 0;
    for (const sandboxId of plan.sandboxIds) {
      if ((await unlessGone(() => removing.destroySandbox({ sandboxId, reason: 'the account is deleted' })))?.destroyed) sandboxesDestroyed++;
    }

    step = 'runtime';
    const runtime = await removing.removeRuntime({ userId });
    step = 'editor';
    const editor = await removing.removeEditor({ userId });

    step = 'files';
    const cleared = await Promise.all(plan.hostIds.map((hostId) => removing.clearUserFromHost({ userId, hostId })));
    const hostsCleared = plan.hostIds.filter((_, i) => cleared[i]!.cleared);

    step = 'snapshots';
    let snapshotsDeleted = 0;
    for (const snapshotId of plan.snapshotIds) {
      if ((await unlessGone(() => removing.deleteSnapshot({ userId, snapshotId, force: true })))?.deleted) snapshotsDeleted++;
    }
    const { strayArchivesRemoved } = await removing.purgeUserArchives({ userId });

    step = 'forget';
    const summary = {
      sandboxesDestroyed,
      runtimeRemoved: runtime.runtimeId !== null,
      editorRemoved: editor.editorId !== null,
      hostsCleared,
      snapshotsDeleted,
      strayArchivesRemoved,
      hostsTerminated,
    };
    const { removed } = await db.forgetAccount({ userId, workflowId, requestedBy: input.requestedBy ?? 'operator', summary });
    step = 'done';
    setStatus('completed');
    return { userId, userRemoved: removed, ...summary };
  } catch (err) {
    step = 'failed';
    setEndStatus(err);
    throw err;
  }
}
