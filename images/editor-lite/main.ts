// Entry point of the editor-lite container: `node /app/server.cjs --port <n> --host <h> --no-auth <projectDir>`,
// the same command line the orchestrator gives mrmd-server. The rest comes from the environment
// (CLOUD_MODE, RUNTIME_PORT, RUNTIME_HOST, BASE_PATH, MARKCO_SYNC_PORT, CLOUD_USER_*).
// Kept apart from server.ts so that importing the server (tests) starts nothing.

import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { startEditorLite, type EditorLiteOptions } from './server.js';

const USAGE = `usage: editor-lite --no-auth [-p|--port <n>] [-h|--host <h>] [projectDir]

  -p, --port <n>   HTTP port (default 8080; 0 picks a free one)
  -h, --host <h>   bind address (default 127.0.0.1)
  --no-auth        required: editor-lite has no token auth; the edge in front of it authenticates
  --help           this text

environment: CLOUD_MODE=1, RUNTIME_PORT, RUNTIME_HOST (127.0.0.1), BASE_PATH (/),
  MARKCO_SYNC_PORT (0 = a free port), CLOUD_USER_ID, CLOUD_USER_NAME, CLOUD_USER_EMAIL,
  CLOUD_USER_AVATAR, CLOUD_USER_PLAN (free)`;

class UsageError extends Error {}

function parsePort(value: string | undefined, what: string): number {
  const port = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`${what} must be an integer 0-65535, got ${JSON.stringify(value ?? '')}`);
  }
  return port;
}

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): EditorLiteOptions | 'help' {
  let port = 8080;
  let host = '127.0.0.1';
  let noAuth = false;
  let projectDir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help') return 'help';
    else if (arg === '-p' || arg === '--port') port = parsePort(argv[++i], '--port');
    else if (arg === '-h' || arg === '--host') {
      const value = argv[++i];
      if (!value) throw new UsageError('--host needs a value');
      host = value;
    } else if (arg === '--no-auth') noAuth = true;
    else if (arg === '-t' || arg === '--token') throw new UsageError('token auth is not implemented; use --no-auth behind the edge');
    else if (arg.startsWith('-')) throw new UsageError(`unknown option ${arg}`);
    else if (projectDir === undefined) projectDir = arg;
    else throw new UsageError(`unexpected argument ${arg}`);
  }
  // Fail closed: mrmd-server without --no-auth demands a token, which editor-lite does not check.
  if (!noAuth) throw new UsageError('--no-auth is required (editor-lite has no token auth)');
  const resolvedDir = path.resolve(projectDir ?? '.');
  if (!existsSync(resolvedDir) || !statSync(resolvedDir).isDirectory()) {
    throw new UsageError(`project directory ${resolvedDir} does not exist`);
  }
  return {
    port,
    host,
    projectDir: resolvedDir,
    cloudMode: env.CLOUD_MODE === '1',
    runtimePort: env.RUNTIME_PORT ? parsePort(env.RUNTIME_PORT, 'RUNTIME_PORT') : 0,
    runtimeHost: env.RUNTIME_HOST || '127.0.0.1',
    basePath: env.BASE_PATH || '/',
    syncPort: env.MARKCO_SYNC_PORT ? parsePort(env.MARKCO_SYNC_PORT, 'MARKCO_SYNC_PORT') : 0,
    cloudUser: {
      id: env.CLOUD_USER_ID ?? null,
      name: env.CLOUD_USER_NAME ?? null,
      email: env.CLOUD_USER_EMAIL ?? null,
      avatarUrl: env.CLOUD_USER_AVATAR ?? null,
      plan: env.CLOUD_USER_PLAN ?? null,
    },
  };
}

function logLine(entry: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

async function main(): Promise<void> {
  let options: EditorLiteOptions | 'help';
  try {
    options = parseOptions(process.argv.slice(2), process.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`editor-lite: ${err.message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (options === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const editor = await startEditorLite(options);
  // As PID 1 in a container node gets no default signal handling: without these, `podman stop` waits
  // for its timeout and then kills.
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logLine({ event: 'signal', signal });
    editor.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logLine({ event: 'close-error', error: err instanceof Error ? err.message : String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  logLine({ event: 'fatal', error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
