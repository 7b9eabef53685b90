import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { createUpstreamAgent, forwardHttp } from '../api/proxy/forward.js';
import { report } from './results.js';

/**
 * Cost of the proxy core: the same load straight at an upstream and through `forwardHttp`, measured in the
 * same run. Upstream, proxy and load generator each run in their own process, as they would in production, so
 * none steals the others' event loop (they still share the machine's cores, which the header line reports).
 *   npx tsx bench/proxy-core.ts [SECONDS_PER_MEASUREMENT]
 */

const ROUNDS = 5;
const SMALL = Buffer.alloc(64, 'x');
const LARGE = Buffer.alloc(8 * 1024 * 1024, 7);
type Role = { role: 'upstream' } | { role: 'proxy' | 'bare-proxy'; upstreamPort: number };
type Measured = { requests: number; bytes: number; elapsed: number };

async function listen(server: http.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

async function serveRole(role: Role): Promise<void> {
  let server: http.Server;
  if (role.role === 'upstream') {
    server = http.createServer((req, res) => {
      const body = req.url === '/large' ? LARGE : SMALL;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      res.end(body);
    });
  } else if (role.role === 'proxy') {
    const agent = createUpstreamAgent();
    server = http.createServer((req, res) => {
      void forwardHttp(req, res, { host: '127.0.0.1', port: role.upstreamPort, path: req.url ?? '/' }, { agent, forwardedFor: req.socket.remoteAddress, forwardedProto: 'http' });
    });
  } else {
    // Reference point only: the least a Node proxy can do (no header hygiene, no error handling), so the
    // proxy/direct ratio can be read as "cost of proxying in Node" versus "cost of our code".
    const agent = createUpstreamAgent();
    server = http.createServer((req, res) => {
      const upstreamReq = http.request({ host: '127.0.0.1', port: role.upstreamPort, path: req.url, method: req.method, headers: req.headers, agent }, (upRes) => {
        res.writeHead(upRes.statusCode!, upRes.headers);
        upRes.pipe(res);
      });
      req.pipe(upstreamReq);
    });
  }
  server.keepAliveTimeout = 60_000;
  // Dies with the benchmark however it ends, so no server outlives it.
  process.on('disconnect', () => process.exit(0));
  process.send!(await listen(server));
}

function startRole(role: Role): Promise<{ port: number; child: ChildProcess }> {
  const child = fork(fileURLToPath(import.meta.url), [JSON.stringify(role)], { execArgv: ['--import', 'tsx'], stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.once('message', (port) => resolve({ port: port as number, child }));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${role.role} exited with ${code} before listening`)));
  });
}

/** Runs `concurrency` back-to-back request loops for `seconds`; returns completed requests and body bytes. */
async function load(port: number, path: string, concurrency: number, seconds: number): Promise<Measured> {
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  let requests = 0;
  let bytes = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  const loop = async () => {
    while (performance.now() < deadline) {
      const { statusCode, body } = await pool.request({ path, method: 'GET' });
      for await (const chunk of body) bytes += (chunk as Buffer).length;
      if (statusCode !== 200) throw new Error(`status ${statusCode} on ${path}`);
      requests++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  return { requests, bytes, elapsed };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 5);
  const upstream = await startRole({ role: 'upstream' });
  const proxy = await startRole({ role: 'proxy', upstreamPort: upstream.port });
  const bare = await startRole({ role: 'bare-proxy', upstreamPort: upstream.port });
  const targets = [
    ['direct              ', upstream.port],
    ['proxy (forwardHttp) ', proxy.port],
    ['bare pipe proxy, ref', bare.port],
  ] as const;
  try {
    console.log(`proxy core benchmark: ${seconds} s per measurement (in ${ROUNDS} interleaved slices), ${availableParallelism()} CPUs shared by load generator, proxy and upstream (one process each)`);
    const scenarios = [
      { name: 'small GET (64 B), 32 keep-alive clients', path: '/small', concurrency: 32, unit: 'req/s', rate: (r: Measured) => r.requests / r.elapsed },
      { name: 'large GET (8 MiB), 1 client', path: '/large', concurrency: 1, unit: 'MiB/s', rate: (r: Measured) => r.bytes / 2 ** 20 / r.elapsed },
      { name: 'large GET (8 MiB), 8 clients', path: '/large', concurrency: 8, unit: 'MiB/s', rate: (r: Measured) => r.bytes / 2 ** 20 / r.elapsed },
    ];
    for (const s of scenarios) {
      for (const [, port] of targets) await load(port, s.path, s.concurrency, Math.min(1, seconds / 5)); // warm up sockets and JIT
      // Each target's time is cut into slices taken in turn, so a burst of unrelated load on the machine
      // hits all of them alike instead of skewing whichever happened to be running.
      const totals = targets.map(() => ({ requests: 0, bytes: 0, elapsed: 0 }));
      const slices = targets.map(() => [] as number[]);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [i, [, port]] of targets.entries()) {
          const r = await load(port, s.path, s.concurrency, seconds / ROUNDS);
          slices[i]!.push(s.rate(r));
          totals[i]!.requests += r.requests;
          totals[i]!.bytes += r.bytes;
          totals[i]!.elapsed += r.elapsed;
        }
      }
      const rates = totals.map((t) => s.rate(t));
      const [direct, proxied, bareProxied] = rates as [number, number, number];
      console.log(`  ${s.name}`);
      targets.forEach(([label], i) => console.log(`    ${label} ${rates[i]!.toFixed(0).padStart(8)} ${s.unit}`));
      console.log(`    ratio proxy/direct: ${(proxied / direct).toFixed(2)}   (bare pipe proxy/direct: ${(bareProxied / direct).toFixed(2)})`);
      const params = `${seconds} s in ${ROUNDS} slices`;
      report({ name: `${s.name}: forwardHttp vs direct`, metric: 'throughput', unit: s.unit, better: 'higher', samples: slices[1]!, baseline: { name: 'direct to the upstream', samples: slices[0]! }, params });
      report({ name: `${s.name}: forwardHttp vs a bare pipe proxy`, metric: 'throughput', unit: s.unit, better: 'higher', samples: slices[1]!, baseline: { name: 'bare http.request + pipe proxy', samples: slices[2]! }, params });
    }
  } finally {
    for (const { child } of [upstream, proxy, bare]) child.kill();
  }
}

const role = process.send ? (JSON.parse(process.argv[2]!) as Role) : undefined;
if (role) await serveRole(role);
else await main();
