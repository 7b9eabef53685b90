import type { ActivityDeps } from './index.js';

/** Activities of the migration saga (workflows/migrate.ts). */
export function createMigrationActivities(_deps: ActivityDeps) {
  return {};
}
