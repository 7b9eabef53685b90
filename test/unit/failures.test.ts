import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { toFailure } from '../../activities/failures.js';
import { HostCommandError, HostConnectError, HostTimeoutError } from '../../activities/host-shell.js';
import { ChecksumMismatchError } from '../../activities/transfer.js';
import { ErrorType } from '../../workflows/contracts/errors.js';

test('a host that presents the wrong key or refuses our key is a permanent failure', () => {
  for (const reason of ['host-key', 'no-host-key', 'auth'] as const) {
    const f = toFailure(new HostConnectError('nh-1', reason, 'x'));
    assert.equal(f.nonRetryable, true, reason);
  }
  assert.equal(toFailure(new HostConnectError('nh-1', 'host-key', 'x')).type, ErrorType.HostKeyMismatch);
  assert.equal(toFailure(new HostConnectError('nh-1', 'auth', 'x')).type, ErrorType.HostAuthFailed);
});

test('an unreachable host, a timeout and a failed command are retried, with their stderr carried along', () => {
  const unreachable = toFailure(new HostConnectError('nh-1', 'timeout', 'x'));
  assert.equal(unreachable.type, ErrorType.HostUnreachable);
  assert.equal(unreachable.nonRetryable, false);
  const timeout = toFailure(new HostTimeoutError('nh-1', 'sleep 9', 100, 'partial output'));
  assert.equal(timeout.type, ErrorType.HostCommandTimedOut);
  const failed = toFailure(new HostCommandError('nh-1', 'podman container restore', 125, null, 'Error: no such file', ''));
  assert.equal(failed.type, ErrorType.HostCommandFailed);
  assert.equal(failed.nonRetryable, false);
  assert.match(failed.message, /exited with 125: Error: no such file/);
  assert.deepEqual(failed.details, [{ hostId: 'nh-1', exitCode: 125, stderrTail: 'Error: no such file' }]);
  assert.equal(toFailure(new ChecksumMismatchError('a', 'b', 'nh-2')).type, ErrorType.ChecksumMismatch);
});

test('database constraint violations are permanent, typed by kind', () => {
  const pgError = (code: string) => Object.assign(new Error('duplicate key value violates unique constraint "hosts_instance_id_key"'), { code, severity: 'ERROR', constraint: 'hosts_instance_id_key' });
  const conflict = toFailure(pgError('23505'));
  assert.equal(conflict.type, ErrorType.Conflict);
  assert.equal(conflict.nonRetryable, true);
  assert.equal(toFailure(pgError('23503')).type, ErrorType.InvalidInput);
  const transient = toFailure(Object.assign(new Error('terminating connection'), { code: '57P01', severity: 'FATAL' }));
  assert.equal(transient.nonRetryable, false);
});

test('AWS errors: invalid requests are permanent, the rest is retried', () => {
  const aws = (name: string) => Object.assign(new Error('x'), { name, $metadata: { httpStatusCode: 400 } });
  const bad = toFailure(aws('InvalidAMIID.NotFound'));
  assert.equal(bad.type, ErrorType.CloudRequestInvalid);
  assert.equal(bad.nonRetryable, true);
  const capacity = toFailure(aws('InsufficientInstanceCapacity'));
  assert.equal(capacity.type, ErrorType.CloudApiFailed);
  assert.equal(capacity.nonRetryable, false);
});

test('an ApplicationFailure passes through unchanged', () => {
  const f = ApplicationFailure.create({ type: 'X', message: 'y', nonRetryable: true });
  assert.equal(toFailure(f), f);
});
