import { ApplicationFailure, CancellationScope, condition, executeChild, log, proxyActivities, setHandler, uuid4, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { PreProvisionInput, PreProvisionResult, ProvisionedHost, ProvisionHostInput } from './contracts/elastic.js';
import { ErrorType, permanentErrorTypes } from './contracts/errors.js';
import { hostIdPattern, type HostConnection } from './contracts/hosts.js';
import { Operation, workflowIds } from './contracts/operations.js';
import { reservationClaimedSignal, type ReservationClaimed } from './contracts/reservations.js';
import { userIdPattern } from './contracts/users.js';
import { errorMessage, operatorControls, setEndStatus, setStatus, tagOperation } from './lifecycle.js';
import { quick } from './options.js';
import { registerHost } from './register-host.js';

const db = proxyActivities<Activities>(quick);
/** RunInstances: a retried launch finds its first attempt's instance by tag, so retrying is safe. */
const launching = proxyActivities<Activities>({
  startToCloseTimeout: '2m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5, nonRetryableErrorTypes: permanentErrorTypes },
});
/** Boot waits poll inside one activity and heartbeat; their own deadline is the activity's (5 min for ssh on AWS). */
const booting = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', maximumAttempts: 3, nonRetryableErrorTypes: permanentErrorTypes },
});
/** Terminating must get through: a host left running costs money until the reaper finds it. */
const cleanup = proxyActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '1m', maximumAttempts: 20, nonRetryableErrorTypes: [ErrorType.InvalidInput] },
});

/** How long a booting pre-provisioned host stays claimable before its TTL (restarted once it is ready) applies. */
const bootAllowanceSeconds = 600;
/** Pre-provision looks at its reservation this often when no reservationClaimed signal arrives. */
const claimPollMs = 10_000;

const tierNamePattern = /^[a-z0-9][a-z0-9.-]{0,40}$/;
const instanceTypePattern = /^[a-z0-9]+\.[a-z0-9]+$/;

function invalid(operation: string, problems: string[]): never {
  throw ApplicationFailure.create({ type: ErrorType.InvalidInput, message: `invalid ${operation} input: ${problems.join('; ')}`, nonRetryable: true });
}

export function validateProvisionHostInput(input: ProvisionHostInput): string[] {
  if (typeof input !== 'object' || input === null) return ['input must be a JSON object'];
  const problems: string[] = [];
  if (typeof input.hostId !== 'string' || !hostIdPattern.test(input.hostId)) problems.push('hostId: expected lowercase letters, digits, dots and dashes (at most 63), such as ec2-0123456789ab');
  if (typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) problems.push('userId: expected a lowercase UUID');
  if (typeof input.tier !== 'string' || !tierNamePattern.test(input.tier)) problems.push('tier: expected a tier name such as t3.large');
  if (typeof input.instanceType !== 'string' || !instanceTypePattern.test(input.instanceType)) problems.push('instanceType: expected an EC2 instance type such as t3.large');
  if (!Number.isInteger(input.reserveForSeconds) || input.reserveForSeconds < 0 || input.reserveForSeconds > 7 * 86_400) problems.push('reserveForSeconds: expected whole seconds from 0 to 604800');
  if (input.claimedBy !== undefined && (typeof input.claimedBy !== 'string' || input.claimedBy.length === 0 || input.claimedBy.length > 1000)) problems.push('claimedBy: expected the claiming workflow id');
  if (input.gpu !== undefined && typeof input.gpu !== 'boolean') problems.push('gpu: expected true or false');
  return problems;
}

/**
 * Launches one EC2 host and makes it ready (id host/<hostId>/provision): RunInstances (or the instance a
 * previous attempt launched), the hosts row reserved for the user, running with a private address, sshd
 * answering with the host key delivered in UserData, then registerHost as a child. On any failure it
 * terminates what it launched and records the host failed, then rethrows.
 */
export async function provisionHost(input: ProvisionHostInput): Promise<ProvisionedHost> {
  const problems = validateProvisionHostInput(input);
  if (problems.length > 0) invalid('provisionHost', problems);
  let step = 'launch';
  operatorControls({ step: () => step });
  tagOperation({ operation: Operation.provisionHost, userId: input.userId, targetHost: input.hostId, instanceType: input.instanceType });
  const { workflowId } = workflowInfo();
  const gpu = input.gpu ?? false;
  try {
    const launched = await launching.launchHost({ hostId: input.hostId, userId: input.userId, tier: input.tier, instanceType: input.instanceType, role: 'runtime-host', gpu });
    step = 'record';
    await db.recordLaunch({
      hostId: input.hostId,
      instanceId: launched.instanceId,
      instanceType: launched.instanceType,
      lifecycle: launched.lifecycle,
      tier: input.tier,
      userId: input.userId,
      reserveForSeconds: input.reserveForSeconds,
      ...(input.claimedBy ? { claimedBy: input.claimedBy } : {}),
      launchedBy: workflowId,
      sshUser: launched.sshUser,
      hostKey: launched.hostKey,
      address: launched.privateIp,
      gpu,
    });
    step = 'wait-running';
    const running = await booting.waitInstanceRunning({ instanceId: launched.instanceId });
    const connection: HostConnection = {
      hostId: input.hostId,
      kind: 'ec2',
      address: running.privateIp!,
      sshPort: 22,
      sshUser: launched.sshUser,
      hostKey: launched.hostKey,
      sudo: launched.sshUser !== 'root',
    };
    step = 'wait-ssh';
    const ssh = await booting.waitForSsh({ connection });
    step = 'register';
    await executeChild(registerHost, {
      workflowId: workflowIds.registerHost(input.hostId),
      args: [{ ...connection, instanceId: launched.instanceId, instanceType: launched.instanceType, gpu }],
    });
    step = 'done';
    await db.appendEvent({
      type: 'host.provisioned',
      hostId: input.hostId,
      userId: input.userId,
      workflowId,
      payload: { instanceId: launched.instanceId, instanceType: launched.instanceType, lifecycle: launched.lifecycle, tier: input.tier, relaunch: launched.reused, sshWaitMs: ssh.waitedMs },
    });
    setStatus('completed');
    return { hostId: input.hostId, instanceId: launched.instanceId, instanceType: launched.instanceType, address: connection.address, lifecycle: launched.lifecycle };
  } catch (err) {
    const failedAt = step;
    step = 'failed';
    const why = `provision failed at ${failedAt}: ${errorMessage(err)}`;
    // Compensation never masks the failure it compensates for: the caller sees the original error.
    await CancellationScope.nonCancellable(async () => {
      try {
        await db.markHostFailed({ hostId: input.hostId, error: why });
        await cleanup.terminateHost({ hostId: input.hostId, reason: why });
        await db.appendEvent({ type: 'host.provision-failed', hostId: input.hostId, userId: input.userId, workflowId, payload: { step: failedAt, error: errorMessage(err) } });
      } catch (compensationError) {
        log.warn('cleaning up a failed provision failed; the reaper will terminate the instance', { error: errorMessage(compensationError) });
      }
    });
    setEndStatus(err);
    throw err;
  }
}

export function validatePreProvisionInput(input: PreProvisionInput): string[] {
  if (typeof input !== 'object' || input === null) return ['input must be a JSON object'];
  const problems: string[] = [];
  if (typeof input.userId !== 'string' || !userIdPattern.test(input.userId)) problems.push('userId: expected a lowercase UUID');
  if (input.tier !== undefined && (typeof input.tier !== 'string' || !tierNamePattern.test(input.tier))) problems.push('tier: expected a tier name such as t3.large');
  if (input.ttlSeconds !== undefined && (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 1 || input.ttlSeconds > 86_400)) problems.push('ttlSeconds: expected whole seconds from 1 to 86400');
  return problems;
}

/**
 * Reserves a host of the next tier for a user (id user/<uid>/pre-provision) so a migration that follows
 * finds it booted: provisionHost as a child, then the reservation is held for the TTL. A migration that
 * claims it ends the wait ('claimed'); otherwise the host is terminated at the TTL ('released'). The
 * claim and the release are one UPDATE each in PostgreSQL, so exactly one of them wins.
 */
export async function preProvisionHost(input: PreProvisionInput): Promise<PreProvisionResult> {
  const problems = validatePreProvisionInput(input);
  if (problems.length > 0) invalid('preProvisionHost', problems);
  let step = 'plan';
  operatorControls({ step: () => step });
  // The host id comes from the workflow's deterministic uuid4: a replay, and a retried launch, use the same one.
  const hostId = `ec2-${uuid4().replace(/-/g, '').slice(0, 12)}`;
  let claimed: ReservationClaimed | undefined;
  setHandler(reservationClaimedSignal, (s) => {
    if (s?.hostId === hostId) claimed = s;
  });
  tagOperation({ operation: Operation.preProvision, userId: input.userId, targetHost: hostId });
  const { workflowId } = workflowInfo();
  let host: ProvisionedHost | undefined;
  try {
    const plan = await db.planPreProvision({ userId: input.userId, ...(input.tier !== undefined ? { tier: input.tier } : {}) });
    const ttlSeconds = input.ttlSeconds ?? plan.ttlSeconds;
    tagOperation({ operation: Operation.preProvision, userId: input.userId, targetHost: hostId, instanceType: plan.instanceType });
    step = 'provision';
    host = await executeChild(provisionHost, {
      workflowId: workflowIds.provisionHost(hostId),
      args: [{ hostId, userId: input.userId, tier: plan.tier, instanceType: plan.instanceType, reserveForSeconds: ttlSeconds + bootAllowanceSeconds, gpu: plan.gpu }],
    });
    // The TTL is how long a ready host waits for its migration, so its clock starts now.
    step = 'reserved';
    await db.renewReservation({ hostId, seconds: ttlSeconds });
    let remainingMs = ttlSeconds * 1000;
    while (!claimed && remainingMs > 0) {
      const waitMs = Math.min(claimPollMs, remainingMs);
      if (await condition(() => claimed !== undefined, waitMs)) break;
      remainingMs -= waitMs;
      const seen = await db.reservationState({ hostId });
      if (seen.claimedBy) claimed = { hostId, claimedBy: seen.claimedBy };
      else if (!['provisioning', 'booting', 'ready', 'draining'].includes(seen.state)) break;
    }
    let outcome: PreProvisionResult['outcome'] = 'claimed';
    if (!claimed) {
      step = 'release';
      const { released } = await db.releaseReservation({ hostId, userId: input.userId });
      if (released) {
        await cleanup.terminateHost({ hostId, reason: `reservation for user ${input.userId} expired unclaimed after ${ttlSeconds} s` });
        outcome = 'released';
      } else {
        // Not released: a migration claimed it at the last moment, or it is already gone.
        const seen = await db.reservationState({ hostId });
        outcome = seen.claimedBy ? 'claimed' : 'released';
        if (seen.claimedBy) claimed = { hostId, claimedBy: seen.claimedBy };
      }
    }
    step = 'done';
    await db.appendEvent({ type: `host.reservation-${outcome}`, hostId, userId: input.userId, workflowId, payload: { tier: plan.tier, ttlSeconds, ...(claimed ? { claimedBy: claimed.claimedBy } : {}) } });
    setStatus('completed');
    return { hostId, instanceId: host.instanceId, tier: plan.tier, outcome };
  } catch (err) {
    step = 'failed';
    // provisionHost cleans up after itself; a host it handed over is ours to end unless a migration has it.
    if (host) {
      await CancellationScope.nonCancellable(async () => {
        try {
          const { released } = await db.releaseReservation({ hostId, userId: input.userId });
          if (released) await cleanup.terminateHost({ hostId, reason: `pre-provision failed: ${errorMessage(err)}` });
        } catch (compensationError) {
          log.warn('releasing the reservation failed; the reaper will terminate the instance', { error: errorMessage(compensationError) });
        }
      });
    }
    setEndStatus(err);
    throw err;
  }
}
