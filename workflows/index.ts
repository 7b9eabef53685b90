// The workflow bundle's entry point: every workflow type the worker serves.
export { migrateRuntime } from './migrate.js';
export { preProvisionHost, provisionHost } from './provision-host.js';
export { reapInstances } from './reaper.js';
export { registerHost } from './register-host.js';
export { importProject, login, runtimeStats, stopRuntime } from './user-environment.js';
export { userRuntime } from './user-runtime.js';
export { deleteSnapshot, destroySandbox, expireSandboxes, forkSandbox, idleCheckpoint, restoreSnapshot, returnRuntime, snapshotRuntime } from './snapshots.js';
export { resourceMonitor } from './monitor.js';
export { deleteAccount } from './delete-account.js';
