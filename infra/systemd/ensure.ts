import { pathToFileURL } from 'node:url';
import { Connection } from '@temporalio/client';
import { loadConfigOrExit, type Config } from '../../lib/config.js';
import { migrateUp } from '../../lib/db.js';
import { createLogger, type Logger } from '../../lib/logger.js';
import { ensureSearchAttributes } from '../../lib/temporal.js';
import { ensureSchedules, registerBaseHost } from '../dev/stack.js';

/**
 * What a production deployment runs besides the long-lived edge and workers: the steps the main command
 * (infra/dev/stack.ts) takes once at start, as two idempotent phases that systemd runs as oneshot units.
 *
 *   ensure.ts schema    database migrations and the search attributes (markco-migrate.service, before the edge and workers)
 *   ensure.ts monitor   the reaper and sandbox-expiry schedules, the resource monitor workflow `markco-monitor`,
 *                       and the base host's registration (markco-monitor.service, after a worker polls; its timer
 *                       runs it again so a monitor that was terminated or failed is started again)
 *
 * Every step reuses the stack's own functions; nothing here is a second definition of a schedule or workflow.
 */
export type EnsurePhase = 'schema' | 'monitor';

export async function ensureDeployment(config: Config, phase: EnsurePhase, log: Logger): Promise<void> {
  if (!config.database.url) throw new Error('DATABASE_URL is not set (/etc/markco/markco.env): production runs no embedded PostgreSQL');
  if (!config.temporal.address) throw new Error('TEMPORAL_ADDRESS is not set (/etc/markco/markco.env): production runs no Temporal dev server');
  if (phase === 'schema') {
    await migrateUp(config.database.url, log);
    const connection = await Connection.connect({ address: config.temporal.address });
    try {
      const added = await ensureSearchAttributes(connection, config.temporal.namespace);
      log.info({ namespace: config.temporal.namespace, added }, added.length > 0 ? 'search attributes registered' : 'search attributes present');
    } finally {
      await connection.close();
    }
    return;
  }
  await ensureSchedules(config, config.temporal.address, log);
  await registerBaseHost(config, config.temporal.address, log);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const phase = process.argv[2];
  if (phase !== 'schema' && phase !== 'monitor') {
    console.error('usage: ensure.ts schema|monitor');
    process.exit(2);
  }
  const config = loadConfigOrExit();
  const log = createLogger({ level: config.logLevel, name: `ensure-${phase}` });
  try {
    await ensureDeployment(config, phase, log);
    log.info({ phase }, 'deployment ensured');
    process.exit(0);
  } catch (err) {
    log.fatal({ err, phase }, 'ensuring the deployment failed');
    process.exit(1);
  }
}
