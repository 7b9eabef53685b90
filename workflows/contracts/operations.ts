/** Operation names (the MarkcoOperation search attribute) and the workflow ids that make them unique. */
export const Operation = {
  registerHost: 'register-host',
  login: 'login',
  stopRuntime: 'stop-runtime',
  runtimeStats: 'runtime-stats',
  importProject: 'import-project',
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
};

/** Lifecycle status values for the MarkcoStatus search attribute. */
export const OperationStatus = ['running', 'completed', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof OperationStatus)[number];
