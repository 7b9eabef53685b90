import { defineSignal } from '@temporalio/workflow';

/**
 * Sent to `user/<uid>/pre-provision` (workflowIds.preProvision) by a migration right after its
 * claimReservation took the pre-provisioned host, so the reservation ends at once instead of at its next
 * poll. The claim itself is in PostgreSQL: a lost signal changes only how soon pre-provision returns.
 */
export interface ReservationClaimed {
  hostId: string;
  /** The claiming workflow's id. */
  claimedBy: string;
}

export const reservationClaimedSignal = defineSignal<[ReservationClaimed]>('reservationClaimed');
