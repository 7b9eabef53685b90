import type { MailTransport } from '../../lib/mail.js';
import type { SignInProvider } from '../../lib/sign-in-providers.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../api/app.js';
import { createPlatform } from '../../api/server.js';
import type { HostShells } from '../../activities/host-shell.js';
import { createLogger, type Logger } from '../../lib/logger.js';
import type { HarnessState } from './harness.js';
import { startTestWorker, stopTestWorker, type TestDatabase, testEnvironment } from './context.js';

export const testAdminToken = `test-admin-${randomBytes(16).toString('hex')}`;

export interface RunningEdge {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

/** The edge as scripts/start runs it (same platform parts), listening on a loopback port of its own. */
export async function startTestEdge(
  state: HarnessState,
  db: TestDatabase,
  taskQueue: string,
  opts: {
    devLogin?: boolean;
    port?: number;
    gpuWaitMs?: number;
    publicUrl?: string;
    signIn?: { providers?: SignInProvider[]; mail?: MailTransport };
    log?: Logger;
    /** Publishing settings; users' files are the test environment's usersDir unless given. */
    publish?: { usersDir?: string; readerScriptUrl?: string | null; cacheBytes?: number; pageMaxAgeSeconds?: number };
  } = {},
): Promise<RunningEdge> {
  const log = opts.log ?? createLogger({ level: process.env.MARKCO_TEST_LOG_LEVEL ?? 'warn', name: 'test-edge' });
  const temporal = await Connection.connect({ address: state.temporal.address });
  const { platform, close } = await createPlatform({
    pool: db.pool,
    databaseUrl: db.url,
    temporal,
    namespace: state.temporal.namespace,
    taskQueue,
    http: { adminToken: testAdminToken, publicUrl: opts.publicUrl ?? 'http://localhost:8080', devLogin: opts.devLogin ?? true },
    ...(opts.signIn ? { signIn: opts.signIn } : {}),
    ...(opts.gpuWaitMs !== undefined ? { gpuWaitMs: opts.gpuWaitMs } : {}),
    publish: { ...opts.publish, usersDir: opts.publish?.usersDir ?? testEnvironment(state).usersDir },
    log,
  });
  const app = buildApp({ health: {}, platform }, { logger: log });
  await app.listen({ host: '127.0.0.1', port: opts.port ?? 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      await Promise.race([app.close(), new Promise((r) => setTimeout(r, 3000))]);
      await close();
      await temporal.close();
    },
  };
}

/** A worker serving the edge's task queue; `stop` is what a worker restart looks like from outside. */
export async function startEdgeWorker(state: HarnessState, db: TestDatabase, shells: HostShells, taskQueue?: string) {
  const started = await startTestWorker(state, { store: db.store, shells }, taskQueue);
  const worker: Worker = started.worker;
  const running = worker.run();
  return {
    taskQueue: started.taskQueue,
    stop: async () => {
      const stopped = await stopTestWorker(worker, running);
      await started.connection.close();
      if (stopped) throw stopped;
    },
  };
}

/** A public-looking git repository served over smart HTTP by `git http-backend`, on loopback. */
export async function startGitServer(files: Record<string, string>): Promise<{ url: (repo: string) => string; close: () => Promise<void> }> {
  const root = mkdtempSync(join(tmpdir(), 'markco-git-'));
  const work = join(root, 'work');
  mkdirSync(work);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(work, path, '..'), { recursive: true });
    writeFileSync(join(work, path), content);
  }
  const git = (args: string[], cwd: string) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn('git', args, { cwd, stdio: 'ignore', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.test', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.test' } });
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`git ${args.join(' ')} exited with ${code}`))));
    });
  await git(['init', '-q', '-b', 'main'], work);
  await git(['add', '.'], work);
  await git(['commit', '-q', '-m', 'fixture'], work);
  await git(['clone', '-q', '--bare', work, join(root, 'notes.git')], root);

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const cgi = spawn('git', ['http-backend'], {
      env: {
        ...process.env,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
      },
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const [name, ...value] = line.split(':');
        if (!name) continue;
        if (name.toLowerCase() === 'status') status = Number.parseInt(value.join(':').trim(), 10);
        else res.setHeader(name, value.join(':').trim());
      }
      res.statusCode = status;
      res.write(head.subarray(end + 4));
    });
    cgi.on('close', () => res.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: (repo) => `http://127.0.0.1:${port}/${repo}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
