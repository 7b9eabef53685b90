import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Connection } from '@temporalio/client';
import type { Logger } from '../../lib/logger.js';
import { ensureSearchAttributes } from '../../lib/temporal.js';
import { stopChild, waitFor } from './processes.js';

export interface TemporalDevServer {
  address: string;
  uiUrl: string | undefined;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Runs `temporal server start-dev` (a real Temporal server with SQLite persistence and the Web UI),
 * waits until it answers, and registers our search attributes.
 */
export async function startTemporalDevServer(opts: {
  cli: string;
  ip?: string;
  port: number;
  uiPort: number | undefined;
  dbFile: string | undefined;
  namespace: string;
  log: Logger;
  startTimeoutMs?: number;
}): Promise<TemporalDevServer> {
  const ip = opts.ip ?? '127.0.0.1';
  const args = ['server', 'start-dev', '--ip', ip, '--port', String(opts.port), '--namespace', opts.namespace, '--log-level', 'warn', '--log-format', 'json'];
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  if (opts.dbFile) {
    mkdirSync(dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  const child = spawn(opts.cli, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8000);
  };
  let spawnError: Error | undefined;
  child.on('error', (err) => {
    spawnError = err;
  });
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const address = `${ip}:${opts.port}`;
  const stop = () => stopChild(child, 10_000);
  try {
    await waitFor(
      `the Temporal dev server at ${address}`,
      async () => {
        if (spawnError) throw new Error(`cannot run ${opts.cli}: ${spawnError.message}`);
        if (child.exitCode !== null) throw new Error(`temporal server start-dev exited with ${child.exitCode}: ${output.slice(-2000)}`);
        const connection = await Connection.connect({ address, connectTimeout: 1000 });
        try {
          await connection.workflowService.getSystemInfo({});
          await ensureSearchAttributes(connection, opts.namespace);
        } finally {
          await connection.close();
        }
      },
      { timeoutMs: opts.startTimeoutMs ?? 60_000, intervalMs: 250, fatal: () => child.exitCode !== null || spawnError !== undefined },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  const uiUrl = opts.uiPort ? `http://${ip}:${opts.uiPort}` : undefined;
  opts.log.info({ address, uiUrl }, 'Temporal dev server ready');
  return { address, uiUrl, child, stop };
}
