/** Operation names (the MarkcoOperation search attribute) and the workflow ids that make them unique. */
export const Operation = {
  registerHost: 'register-host',
} as const;
export type Operation = (typeof Operation)[keyof typeof Operation];

export const workflowIds = {
  /** One registration at a time per host. */
  registerHost: (hostId: string) => `host/${hostId}/register`,
};

/** Lifecycle status values for the MarkcoStatus search attribute. */
export const OperationStatus = ['running', 'completed', 'failed', 'cancelled'] as const;
export type OperationStatus = (typeof OperationStatus)[number];
