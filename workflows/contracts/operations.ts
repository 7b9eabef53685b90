/** Operation names (the MarkcoOperation search attribute) and the workflow ids that make them unique. */
export const Operation = {
  registerHost: 'register-host',
  login: 'login',
  stopRuntime: 'stop-runtime',
  runtimeStats: 'runtime-stats',
  importProject: 'import-project',
  /** The per-user entity that runs one runtime-changing operation at a time. */
  runtime: 'runtime',
  migrate: 'migrate',
  critical: 'critical',
  scaleDown: 'scale-down',
  preProvision: 'pre-provision',
  provisionHost: 'provision-host',
  reaper: 'reaper',
  idle: 'idle',
  /** The user's next visit (or an operator's wake) restores the idle checkpoint. */
  returnRuntime: 'return',
  snapshot: 'snapshot',
  restoreSnapshot: 'restore-snapshot',
  deleteSnapshot: 'delete-snapshot',
  sandbox: 'sandbox',
  destroySandbox: 'destroy-sandbox',
  sandboxExpiry: 'sandbox-expiry',
  /** GPU code is about to run: the runtime moves onto a GPU host. */
  gpuHop: 'gpu-hop',
  /** GPU work has been idle: the runtime moves back to a CPU tier and the GPU host is terminated. */
  gpuReturn: 'gpu-return',
  /** The spot GPU host is being reclaimed: the runtime moves away at once. */
  spotInterruption: 'spot-interruption',
  /** The resource monitor: watches every ready host and signals users' entities. */
  monitor: 'monitor',
  /** Everything of a user goes: sessions, containers, snapshots, files, reserved hosts, then the users row. */
  deleteAccount: 'delete-account',
} as const;
export type Operation = (typeof Operation)[keyof typeof Operation];

export const workflowIds = {
  /** One registration at a time per host. */
  registerHost: (hostId: string) => `host/${hostId}/register`,
  /** One login at a time per user: a second login while one runs joins it (USE_EXISTING). */
  login: (userId: string) => `user/${userId}/login`,
  stopRuntime: (userId: string) => `user/${userId}/stop-runtime`,
  runtimeStats: (userId: string, nonce: string) => `user/${userId}/stats/${nonce}`,
  importProject: (userId: string, name: string) => `user/${userId}/import/${name}`,
  /** The user's runtime entity: every runtime-changing operation is its child (one at a time). */
  runtime: (userId: string) => `runtime/${userId}`,
  migrate: (userId: string) => `user/${userId}/migrate`,
  /** At most one reservation being made per user at a time. */
  preProvision: (userId: string) => `user/${userId}/pre-provision`,
  /** The GPU host a gpu-hint reserves, beside the next tier's (their lives overlap). */
  preProvisionGpu: (userId: string) => `user/${userId}/pre-provision-gpu`,
  /** Launching one EC2 host (a child of pre-provision or of a migration). */
  provisionHost: (hostId: string) => `host/${hostId}/provision`,
  reaper: 'markco-reaper',
  idle: (userId: string) => `user/${userId}/idle`,
  /** A child of the user's login: a visit while checkpointed brings the runtime back first. */
  returnRuntime: (userId: string) => `user/${userId}/return`,
  snapshot: (userId: string) => `user/${userId}/snapshot`,
  restoreSnapshot: (userId: string) => `user/${userId}/restore`,
  sandbox: (userId: string) => `user/${userId}/sandbox`,
  /** Not through the entity: neither touches the user's runtime, and each is safe to repeat. */
  deleteSnapshot: (userId: string, snapshotId: string) => `user/${userId}/snapshot/${snapshotId}/delete`,
  destroySandbox: (userId: string, sandboxId: string) => `user/${userId}/sandbox/${sandboxId}/destroy`,
  sandboxExpiry: 'markco-sandbox-expiry',
  monitor: 'markco-monitor',
  /** A child of the user's entity, its last: a second request joins the running one. */
  deleteAccount: (userId: string) => `user/${userId}/delete-account`,
};

/** Lifecycle status values for the MarkcoStatus search attribute. */
export const OperationStatus = ['running', 'completed', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof OperationStatus)[number];
