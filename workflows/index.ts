// The workflow bundle's entry point: every workflow type the worker serves.
export { registerHost } from './register-host.js';
export { importProject, login, runtimeStats, stopRuntime } from './user-environment.js';
