import type { Plan } from './users.js';

/** What login, the compute API and project import exchange: plain JSON, documented in docs/runbook.md. */
export interface LoginInput {
  userId: string;
  /** Sets the user's plan first (the compute API's `plan`); the user's recorded plan otherwise. */
  plan?: Plan;
}

export interface LoginPlan {
  user: { id: string; name: string | null; email: string | null; plan: Plan };
  runtimeHostId: string;
  /** The runtime lives in its idle checkpoint: the login restores it (returnRuntime) before anything else. */
  checkpointed?: boolean;
  editorHostId: string;
  /** Who the user's processes run as on these hosts (see HostFacts.rootHasSysResource). */
  containerUser: { uid: number; gid: number };
  /**
   * A warm login: both containers run and answer, and the editor was told the runtime's address again.
   * Nothing is left to make; the workflow finishes with these placements.
   */
  ready?: { runtime: RuntimePlacement; editor: EditorPlacement };
}

export interface RuntimePlacement {
  runtimeId: string;
  hostId: string;
  containerName: string;
  port: number;
  /** Where the worker and the editor reach the runtime's MRP port. */
  address: string;
  state: string;
  tier: string;
  memoryLimitBytes: number;
  cpuLimit: number;
}

export interface EditorPlacement {
  editorId: string;
  hostId: string;
  containerName: string;
  port: number;
  syncPort: number;
  /** Where the edge reaches the editor. */
  address: string;
  state: string;
  /** The user-facing path, through the edge. */
  url: string;
}

export interface LoginResult {
  userId: string;
  runtime: RuntimePlacement;
  editor: EditorPlacement;
  homeInitialized: boolean;
  timings: { runtimeReadyMs: number; editorReadyMs: number };
}

export interface StopRuntimeInput {
  userId: string;
}

export interface StopRuntimeResult {
  userId: string;
  runtimeId: string | null;
  hostId: string | null;
}

export interface RuntimeStats {
  memoryUsedBytes: number;
  memoryLimitBytes: number;
  cpuPercent: number;
  pids: number;
  at: string;
}

/** A project's folder name under `Projects/`: never hidden, never a path. */
export const projectNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface ImportProjectInput {
  userId: string;
  repoUrl: string;
  name?: string;
  timeoutMs?: number;
}

export interface ImportProjectResult {
  project: string;
  path: string;
  url: string;
  durationMs: number;
}
