/**
 * Idle checkpoints, user return, named snapshots and sandbox forks: the plain JSON the workflows take and
 * give (docs/runbook.md), and the checks every entry point shares (the compute API, the entity, the CLI).
 */
import { hostIdPattern } from './hosts.js';
import { userIdPattern } from './users.js';

export const snapshotNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** How long a sandbox lives unless destroyed first: 1 h by default, at most a day. */
export const sandboxTtl = { defaultSeconds: 3600, minSeconds: 10, maxSeconds: 86_400 };

export interface IdleCheckpointInput {
  userId: string;
  reason?: 'idle' | 'operator';
  /** The monitor's view (epoch ms): idle since then. Traffic from the user after it cancels the checkpoint (they came back). */
  idleSince?: number;
}

export interface IdleCheckpointResult {
  userId: string;
  runtimeId: string;
  snapshotId: string;
  archiveBytes: number;
  sha256: string;
  /** The S3 object, or null where no bucket is configured (the archive is on the base server only). */
  s3Key: string | null;
  checkpointMs: number;
  uploadMs: number;
  frozenMs: number | null;
  /** The EC2 host the runtime left, terminated (null on the base server). */
  terminatedHostId: string | null;
  editorStopped: boolean;
}

export interface ReturnRuntimeInput {
  userId: string;
}

export interface ReturnRuntimeResult {
  userId: string;
  runtimeId: string;
  /** False when the runtime was already running (nothing restored). */
  restored: boolean;
  snapshotId: string | null;
  hostId: string;
  tier: string;
  /** Where the archive came from: the base server's copy or S3. */
  archiveFrom: 'local' | 's3' | null;
  stageMs: number;
  restoreMs: number;
  totalMs: number;
}

export interface SnapshotRuntimeInput {
  userId: string;
  /** Default `snapshot-<UTC time>`; letters, digits, '.', '_', '-', at most 64. */
  name?: string;
}

export interface SnapshotRuntimeResult {
  snapshotId: string;
  userId: string;
  name: string;
  sizeBytes: number;
  sha256: string;
  s3Key: string | null;
  checkpointMs: number;
  frozenMs: number | null;
}

/** Exactly one of snapshotId and name. */
export interface RestoreSnapshotInput {
  userId: string;
  snapshotId?: string;
  name?: string;
}

export interface RestoreSnapshotResult {
  userId: string;
  snapshotId: string;
  name: string;
  runtimeId: string;
  containerName: string;
  hostId: string;
  port: number;
  archiveFrom: 'local' | 's3';
  restoreMs: number;
}

export interface ForkSandboxInput {
  userId: string;
  ttlSeconds?: number;
  /** Operators: restore the fork on this ready host instead of the runtime's own. */
  hostId?: string;
}

export interface DestroySandboxInput {
  userId: string;
  sandboxId: string;
  reason?: string;
}

export interface DeleteSnapshotInput {
  userId: string;
  snapshotId: string;
}

function objectProblems(input: unknown): string[] {
  return typeof input === 'object' && input !== null && !Array.isArray(input) ? [] : ['input must be a JSON object'];
}

function userProblems(input: { userId?: unknown }): string[] {
  return typeof input.userId === 'string' && userIdPattern.test(input.userId) ? [] : ['userId: expected a lowercase UUID'];
}

export function validateIdleCheckpointInput(input: IdleCheckpointInput): string[] {
  const problems = objectProblems(input);
  if (problems.length > 0) return problems;
  problems.push(...userProblems(input));
  if (input.reason !== undefined && !['idle', 'operator'].includes(input.reason)) problems.push('reason: expected idle or operator');
  if (input.idleSince !== undefined && !(Number.isInteger(input.idleSince) && input.idleSince > 0)) problems.push('idleSince: expected epoch milliseconds');
  return problems;
}

export function validateUserOnlyInput(input: { userId: string }): string[] {
  const problems = objectProblems(input);
  return problems.length > 0 ? problems : userProblems(input);
}

export function validateSnapshotRuntimeInput(input: SnapshotRuntimeInput): string[] {
  const problems = objectProblems(input);
  if (problems.length > 0) return problems;
  problems.push(...userProblems(input));
  if (input.name !== undefined && (typeof input.name !== 'string' || !snapshotNamePattern.test(input.name))) problems.push("name: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
  return problems;
}

export function validateRestoreSnapshotInput(input: RestoreSnapshotInput): string[] {
  const problems = objectProblems(input);
  if (problems.length > 0) return problems;
  problems.push(...userProblems(input));
  if ((input.snapshotId === undefined) === (input.name === undefined)) problems.push('expected exactly one of snapshotId and name');
  if (input.snapshotId !== undefined && (typeof input.snapshotId !== 'string' || !uuidPattern.test(input.snapshotId))) problems.push('snapshotId: expected a snapshot id (a lowercase UUID)');
  if (input.name !== undefined && (typeof input.name !== 'string' || !snapshotNamePattern.test(input.name))) problems.push('name: expected a snapshot name');
  return problems;
}

export function validateForkSandboxInput(input: ForkSandboxInput): string[] {
  const problems = objectProblems(input);
  if (problems.length > 0) return problems;
  problems.push(...userProblems(input));
  if (input.ttlSeconds !== undefined && (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < sandboxTtl.minSeconds || input.ttlSeconds > sandboxTtl.maxSeconds)) {
    problems.push(`ttlSeconds: expected whole seconds from ${sandboxTtl.minSeconds} to ${sandboxTtl.maxSeconds}`);
  }
  if (input.hostId !== undefined && (typeof input.hostId !== 'string' || !hostIdPattern.test(input.hostId))) problems.push('hostId: expected a recorded host id');
  return problems;
}

export function validateSandboxIdInput(input: { userId: string; sandboxId?: string; snapshotId?: string }, field: 'sandboxId' | 'snapshotId'): string[] {
  const problems = objectProblems(input);
  if (problems.length > 0) return problems;
  problems.push(...userProblems(input));
  const value = input[field];
  if (typeof value !== 'string' || !uuidPattern.test(value)) problems.push(`${field}: expected a lowercase UUID`);
  return problems;
}
