import { ApplicationFailure } from '@temporalio/common';
import { ErrorType } from '../workflows/contracts/errors.js';
import { HostCommandError, HostConnectError, HostTimeoutError } from './host-shell.js';
import { ChecksumMismatchError } from './transfer.js';

/** AWS SDK v3 error names that retrying cannot fix. */
const permanentAwsCodes = new Set([
  'InvalidParameterValue',
  'InvalidParameterCombination',
  'InvalidAMIID.NotFound',
  'InvalidAMIID.Malformed',
  'InvalidSubnetID.NotFound',
  'InvalidGroup.NotFound',
  'InvalidKeyPair.NotFound',
  'UnauthorizedOperation',
  'AuthFailure',
  'InvalidInstanceID.Malformed',
]);

/** PostgreSQL SQLSTATEs for writes that will fail the same way every time. */
const permanentPgCodes: Record<string, ErrorType> = {
  '23505': ErrorType.Conflict, // unique_violation
  '23503': ErrorType.InvalidInput, // foreign_key_violation
  '23514': ErrorType.InvalidInput, // check_violation
  '23502': ErrorType.InvalidInput, // not_null_violation
  '22P02': ErrorType.InvalidInput, // invalid_text_representation
  '22001': ErrorType.InvalidInput, // string_data_right_truncation
};

/** One table from client errors to Temporal failure types; workflows decide on `type`, never on text. */
export function toFailure(err: unknown): ApplicationFailure {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof HostConnectError) {
    const permanent = err.reason === 'host-key' || err.reason === 'auth' || err.reason === 'no-host-key';
    const type = err.reason === 'host-key' || err.reason === 'no-host-key' ? ErrorType.HostKeyMismatch : err.reason === 'auth' ? ErrorType.HostAuthFailed : ErrorType.HostUnreachable;
    return ApplicationFailure.create({ type, message: err.message, nonRetryable: permanent, details: [{ hostId: err.hostId, reason: err.reason }] });
  }
  if (err instanceof HostTimeoutError) {
    return ApplicationFailure.create({ type: ErrorType.HostCommandTimedOut, message: err.message, details: [{ hostId: err.hostId, stderrTail: err.stderr.slice(-2000) }] });
  }
  if (err instanceof HostCommandError) {
    return ApplicationFailure.create({
      type: ErrorType.HostCommandFailed,
      message: err.message,
      details: [{ hostId: err.hostId, exitCode: err.exitCode, stderrTail: err.stderr.slice(-2000) }],
    });
  }
  if (err instanceof ChecksumMismatchError) {
    return ApplicationFailure.create({ type: ErrorType.ChecksumMismatch, message: err.message });
  }
  const pgCode = (err as { code?: unknown; severity?: unknown }).severity !== undefined ? (err as { code?: string }).code : undefined;
  if (pgCode && permanentPgCodes[pgCode]) {
    const detail = (err as { detail?: string; constraint?: string });
    return ApplicationFailure.create({
      type: permanentPgCodes[pgCode],
      message: `${(err as Error).message}${detail.detail ? ` (${detail.detail})` : ''}`,
      nonRetryable: true,
      details: [{ sqlstate: pgCode, constraint: detail.constraint ?? null }],
    });
  }
  const name = (err as { name?: string }).name ?? 'Error';
  if ((err as { $metadata?: unknown }).$metadata !== undefined) {
    return ApplicationFailure.create({
      type: permanentAwsCodes.has(name) ? ErrorType.CloudRequestInvalid : ErrorType.CloudApiFailed,
      message: `${name}: ${(err as Error).message}`,
      nonRetryable: permanentAwsCodes.has(name),
    });
  }
  return ApplicationFailure.fromError(err);
}

/** Wraps an activity so every error leaves it as a typed ApplicationFailure. */
export function typedFailures<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    try {
      return await fn(...args);
    } catch (err) {
      throw toFailure(err);
    }
  };
}
