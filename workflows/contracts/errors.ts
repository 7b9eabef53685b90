/**
 * Stable failure types, shared by activities (which throw them) and workflows (which decide on them).
 * Permanent ones are never retried: retrying cannot change the outcome.
 */
export const ErrorType = {
  InvalidInput: 'InvalidInput',
  NotFound: 'NotFound',
  /** The database refused a write as conflicting with what exists (a unique key). */
  Conflict: 'Conflict',
  HostKeyMismatch: 'HostKeyMismatch',
  HostAuthFailed: 'HostAuthFailed',
  HostUnreachable: 'HostUnreachable',
  HostCommandFailed: 'HostCommandFailed',
  HostCommandTimedOut: 'HostCommandTimedOut',
  HostUnsupported: 'HostUnsupported',
  ChecksumMismatch: 'ChecksumMismatch',
  /** podman could not restore a checkpoint on the target host (the archive arrived whole). */
  RestoreFailed: 'RestoreFailed',
  CloudApiFailed: 'CloudApiFailed',
  CloudRequestInvalid: 'CloudRequestInvalid',
  /** The runtime holds established TCP connections, which CRIU refuses to dump: try again shortly. */
  RuntimeBusy: 'RuntimeBusy',
  /** EC2 has no capacity for the request (spot refused, instance type unavailable). */
  CapacityUnavailable: 'CapacityUnavailable',
} as const;
export type ErrorType = (typeof ErrorType)[keyof typeof ErrorType];

export const permanentErrorTypes: ErrorType[] = [
  ErrorType.InvalidInput,
  ErrorType.NotFound,
  ErrorType.Conflict,
  ErrorType.HostKeyMismatch,
  ErrorType.HostAuthFailed,
  ErrorType.HostUnsupported,
  ErrorType.CloudRequestInvalid,
  ErrorType.CapacityUnavailable,
];
