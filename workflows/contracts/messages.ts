import { defineQuery, defineUpdate } from '@temporalio/workflow';

/** Every lifecycle workflow answers this query with the step it is on (shown to operators and the edge). */
export const stepQuery = defineQuery<string>('step');

export interface CancelRequest {
  /** Why, for the history and the logs (the operator's words). */
  reason?: string;
}

export interface CancelAnswer {
  /** The step the workflow was on when the cancellation was accepted; its undo steps run from there. */
  step: string;
}

/**
 * Every lifecycle workflow takes this update: a cancellation that is refused, with the reason, when the
 * step the workflow is on cannot be undone (a migration that has moved the user, an idle checkpoint that
 * has committed). `temporal workflow cancel` cannot refuse: it is the way to stop anything regardless.
 */
export const cancelUpdate = defineUpdate<CancelAnswer, [CancelRequest]>('cancel');
