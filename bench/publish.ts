import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import fastifyStatic from '@fastify/static';
import Fastify from 'fastify';
import { request } from 'undici';
import { freshDatabase, type TestDatabase } from '../test/support/context.js';
import { startTestEdge, type RunningEdge } from '../test/support/edge.js';
import { startHarness, type RunningHarness } from '../test/support/harness.js';
import { writePublishFixture } from '../test/support/publish-fixture.js';
import { median, range } from './edge-setup.js';
import { report } from './results.js';
import { cleanUpOnSignal, stopBenchParts } from './teardown.js';

/**
 * Published pages against a static file, in the same run: requests per second for a cached page (200)
 * and for its revalidation (304 on If-None-Match), through the real edge (PostgreSQL and Temporal
 * behind it), next to the same bytes served by @fastify/static from a Fastify server in the same
 * process. The load comes from a worker thread (keep-alive connections), alternating the two, 3 rounds.
 *   node --import tsx bench/publish.ts [SECONDS=5] [CONNECTIONS=16]
 */
const require = createRequire(import.meta.url);
const seconds = Number(process.argv[2] ?? 5);
const connections = Number(process.argv[3] ?? 16);

/** The load generator, in its own thread so it does not share the servers' event loop. */
const loadGenerator = `
const { parentPort, workerData } = require('node:worker_threads');
const { Pool } = require(workerData.undici);
(async () => {
  const { origin, path, headers, seconds, connections, expect } = workerData;
  const pool = new Pool(origin, { connections, pipelining: 1 });
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let wrong = null;
  await Promise.all(Array.from({ length: connections }, async () => {
    while (Date.now() < deadline && !wrong) {
      const res = await pool.request({ path, method: 'GET', headers });
      await res.body.dump();
      if (res.statusCode !== expect) wrong = origin + path + ' answered ' + res.statusCode;
      done++;
    }
  }));
  await pool.close();
  parentPort.postMessage({ done, wrong });
})();
`;

function requestsPerSecond(origin: string, path: string, headers: Record<string, string>, expect: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(loadGenerator, { eval: true, workerData: { undici: require.resolve('undici'), origin, path, headers, seconds, connections, expect } });
    worker.once('message', (m: { done: number; wrong: string | null }) => (m.wrong ? reject(new Error(m.wrong)) : resolve(m.done / seconds)));
    worker.once('error', reject);
  });
}

let harness: RunningHarness | undefined;
let db: TestDatabase | undefined;
let edge: RunningEdge | undefined;
let staticServer: ReturnType<typeof Fastify> | undefined;
const work = mkdtempSync(join(tmpdir(), 'markco-bench-publish-'));
const cleanup = () =>
  stopBenchParts({
    closers: [() => staticServer?.close(), () => edge?.close(), () => db?.drop(), () => rmSync(work, { recursive: true, force: true })],
    harness,
  });
cleanUpOnSignal(cleanup);

try {
  harness = await startHarness({ hosts: 0 });
  db = await freshDatabase(harness.state);
  const usersDir = join(work, 'users');
  edge = await startTestEdge(harness.state, db, 'markco-bench-publish', { publish: { usersDir } });
  const { user } = await db.store.users.ensureByEmail({ email: 'bench@example.test' });
  writePublishFixture(join(usersDir, user.id), user.username, join(work, 'outside'));

  // First requests: the site is scanned and each page rendered (nothing cached yet).
  const cold: number[] = [];
  for (const path of ['', 'intro', 'guide', 'guide/setup', 'guide/advanced/tuning', 'reference']) {
    const started = performance.now();
    const res = await request(`${edge.url}/@${user.username}/handbook/${path}`);
    await res.body.dump();
    if (res.statusCode !== 200) throw new Error(`/${path} answered ${res.statusCode}`);
    cold.push(performance.now() - started);
  }

  const pagePath = `/@${user.username}/handbook/intro`;
  const first = await request(`${edge.url}${pagePath}`);
  const body = Buffer.from(await first.body.arrayBuffer());
  if (first.statusCode !== 200) throw new Error(`${pagePath} answered ${first.statusCode}`);
  const pageEtag = String(first.headers.etag);

  // The same bytes as a static file, served the way @fastify/static serves files.
  mkdirSync(join(work, 'static'));
  writeFileSync(join(work, 'static', 'intro.html'), body);
  staticServer = Fastify({ logger: false });
  await staticServer.register(fastifyStatic, { root: join(work, 'static'), prefix: '/static/' });
  await staticServer.listen({ host: '127.0.0.1', port: 0 });
  const staticOrigin = `http://127.0.0.1:${(staticServer.server.address() as { port: number }).port}`;
  const staticFirst = await request(`${staticOrigin}/static/intro.html`);
  await staticFirst.body.dump();
  const staticEtag = String(staticFirst.headers.etag);

  const runs = { page: [] as number[], static: [] as number[], page304: [] as number[], static304: [] as number[] };
  for (let round = 0; round < 3; round++) {
    runs.static.push(await requestsPerSecond(staticOrigin, '/static/intro.html', {}, 200));
    runs.page.push(await requestsPerSecond(edge.url, pagePath, {}, 200));
    runs.static304.push(await requestsPerSecond(staticOrigin, '/static/intro.html', { 'if-none-match': staticEtag }, 304));
    runs.page304.push(await requestsPerSecond(edge.url, pagePath, { 'if-none-match': pageEtag }, 304));
  }
  const line = (name: string, edgeRuns: number[], staticRuns: number[]) =>
    console.log(
      `  ${name}: published page ${median(edgeRuns).toFixed(0)} req/s (${range(edgeRuns.map(Math.round))}), @fastify/static ${median(staticRuns).toFixed(0)} req/s (${range(staticRuns.map(Math.round))}), ratio ${(median(edgeRuns) / median(staticRuns)).toFixed(2)}x`,
    );
  console.log(`published page (${body.length} bytes, cached) vs the same bytes from @fastify/static; ${connections} connections, ${seconds} s per run, medians of 3`);
  line('200', runs.page, runs.static);
  line('304 (If-None-Match)', runs.page304, runs.static304);
  const params = `${connections} connections, ${seconds} s, 3 rounds`;
  report({ name: 'published page, cached (200)', metric: 'throughput', unit: 'req/s', better: 'higher', samples: runs.page, baseline: { name: '@fastify/static, same bytes', samples: runs.static }, goal: { on: 'ratio', op: '>=', value: 0.8 }, params });
  report({ name: 'published page revalidation (304)', metric: 'throughput', unit: 'req/s', better: 'higher', samples: runs.page304, baseline: { name: '@fastify/static, same bytes', samples: runs.static304 }, goal: { on: 'ratio', op: '>=', value: 0.8 }, params });
  report({ name: 'first request of a page (rendered, not cached)', metric: 'latency', unit: 'ms', better: 'lower', samples: cold, params: `${cold.length} pages` });
  console.log(`  first request of a page (rendered, not cached; the first also scans the project): median ${median(cold).toFixed(1)} ms (${range(cold.map((ms) => Number(ms.toFixed(1))))}) over ${cold.length} pages`);
} finally {
  await cleanup();
}
