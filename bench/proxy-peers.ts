import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import WebSocket from 'ws';
import { waitFor } from '../infra/dev/processes.js';
import { repoRoot } from '../lib/paths.js';
import { freePort } from '../test/support/harness.js';
import { median, range, requestsPerSecond, startEdgeBench } from './edge-setup.js';
import { report } from './results.js';

/**
 * The edge's `/u/<id>/` proxy next to the proxies the field uses, in front of the same editor, in the same
 * run: JupyterHub's configurable-http-proxy (npm) and Caddy's reverse_proxy (Debian). Each routes
 * `/u/<id>/` to the editor with the prefix stripped, as the edge does; only the edge also authorises the
 * session cookie on every request. Measures small requests per second (GET /health, keep-alive) and the
 * added round trip of a WebSocket message (ping/pong on the editor's /events socket), p50 and p99 over
 * direct. Goals (issue 10): at least 3x configurable-http-proxy's requests per second, 0.8x Caddy's,
 * WebSocket p99 added latency under 1 ms.
 *   node --import tsx bench/proxy-peers.ts [SECONDS=4] [CONNECTIONS=16] [ROUNDS=3]
 */
const seconds = Number(process.argv[2] ?? 4);
const connections = Number(process.argv[3] ?? 16);
const rounds = Number(process.argv[4] ?? 3);
const pings = 2000;

/** Round trips of a WebSocket ping (answered by the editor's ws server) in milliseconds, one at a time. */
async function pingRoundTrips(url: string, headers: Record<string, string>): Promise<number[]> {
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`${url} answered ${res.statusCode}`)));
  });
  const times: number[] = [];
  for (let i = 0; i < pings + 100; i++) {
    const started = performance.now();
    await new Promise<void>((resolve) => {
      ws.once('pong', () => resolve());
      ws.ping();
    });
    // The first 100 warm the path up (JIT, TCP windows).
    if (i >= 100) times.push(performance.now() - started);
  }
  ws.close();
  return times;
}

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

function startProcess(argv: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  child.once('exit', (code) => {
    if (code !== null && code !== 0 && !stopping) console.error(`${argv[0]} exited ${code}: ${stderr}`);
  });
  return child;
}

let stopping = false;
const bench = await startEdgeBench();
const children: ChildProcess[] = [];
const scratch = mkdtempSync(join(tmpdir(), 'markco-proxy-peers-'));
try {
  const user = await bench.devLogin('proxy-peers@example.test');
  if (user.operationId) await request(`${bench.edge.url}/api/operations/${user.operationId}?wait=120`, { headers: { cookie: user.cookie } }).then((r) => r.body.json());
  const editor = (await bench.db.store.editors.live(user.id))!;
  const upstream = `http://127.0.0.1:${editor.port}`;
  const prefix = `/u/${user.id}`;

  // configurable-http-proxy, as JupyterHub runs it: a route per user, the prefix not passed on.
  const chpPort = await freePort();
  const chpApiPort = await freePort();
  const chpToken = randomBytes(16).toString('hex');
  children.push(
    startProcess(
      [join(repoRoot, 'node_modules', '.bin', 'configurable-http-proxy'), '--ip', '127.0.0.1', '--port', String(chpPort), '--api-ip', '127.0.0.1', '--api-port', String(chpApiPort), '--no-include-prefix', '--log-level', 'error'],
      { CONFIGPROXY_AUTH_TOKEN: chpToken },
    ),
  );
  await waitFor('configurable-http-proxy', async () => {
    const r = await request(`http://127.0.0.1:${chpApiPort}/api/routes${prefix}`, { method: 'POST', headers: { authorization: `token ${chpToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ target: upstream }) });
    await r.body.dump();
    if (r.statusCode !== 201) throw new Error(`route answered ${r.statusCode}`);
  }, { timeoutMs: 20_000, intervalMs: 200 });

  // Caddy's reverse_proxy with the prefix stripped, streaming (as the edge's own Caddy front is configured).
  const caddyPort = await freePort();
  const caddyConfig = join(scratch, 'caddy.json');
  writeFileSync(
    caddyConfig,
    JSON.stringify({
      admin: { disabled: true },
      logging: { logs: { default: { level: 'ERROR' } } },
      apps: {
        http: {
          servers: {
            bench: {
              listen: [`127.0.0.1:${caddyPort}`],
              automatic_https: { disable: true },
              routes: [
                {
                  match: [{ path: [`${prefix}/*`] }],
                  handle: [
                    { handler: 'rewrite', strip_path_prefix: prefix },
                    { handler: 'reverse_proxy', upstreams: [{ dial: `127.0.0.1:${editor.port}` }], flush_interval: -1 },
                  ],
                },
              ],
            },
          },
        },
      },
    }),
  );
  children.push(startProcess(['caddy', 'run', '--config', caddyConfig]));

  const targets = {
    direct: { origin: upstream, path: '/health', ws: `ws://127.0.0.1:${editor.port}/events`, headers: {} as Record<string, string> },
    edge: { origin: bench.edge.url, path: `${prefix}/health`, ws: `${bench.edge.url.replace(/^http/, 'ws')}${prefix}/events`, headers: { cookie: user.cookie } },
    chp: { origin: `http://127.0.0.1:${chpPort}`, path: `${prefix}/health`, ws: `ws://127.0.0.1:${chpPort}${prefix}/events`, headers: {} },
    caddy: { origin: `http://127.0.0.1:${caddyPort}`, path: `${prefix}/health`, ws: `ws://127.0.0.1:${caddyPort}${prefix}/events`, headers: {} },
  };
  for (const [name, t] of Object.entries(targets)) {
    await waitFor(`${name} to answer`, async () => {
      const r = await request(`${t.origin}${t.path}`, { headers: t.headers });
      await r.body.dump();
      if (r.statusCode !== 200) throw new Error(`answered ${r.statusCode}`);
    }, { timeoutMs: 20_000, intervalMs: 200 });
  }

  const rps: Record<string, number[]> = { direct: [], edge: [], chp: [], caddy: [] };
  const ws: Record<string, number[]> = { direct: [], edge: [], chp: [], caddy: [] };
  // Each run's p50 and p99, for the results' min-max.
  const wsRuns: Record<string, { p50: number[]; p99: number[] }> = { direct: { p50: [], p99: [] }, edge: { p50: [], p99: [] }, chp: { p50: [], p99: [] }, caddy: { p50: [], p99: [] } };
  for (let round = 0; round < rounds; round++) {
    for (const [name, t] of Object.entries(targets)) rps[name]!.push(await requestsPerSecond(t.origin, t.path, t.headers, { connections, seconds }));
    for (const [name, t] of Object.entries(targets)) {
      const times = await pingRoundTrips(t.ws, t.headers);
      ws[name]!.push(...times);
      wsRuns[name]!.p50.push(percentile(times, 50));
      wsRuns[name]!.p99.push(percentile(times, 99));
    }
  }

  console.log(`small GET /health, ${connections} keep-alive connections, ${seconds} s per run, medians of ${rounds} runs (min-max):`);
  for (const name of Object.keys(targets)) console.log(`  ${name.padEnd(6)} ${median(rps[name]!).toFixed(0).padStart(6)} req/s  (${range(rps[name]!.map((x) => Math.round(x)))})`);
  const edgeRps = median(rps.edge!);
  console.log(`  edge / configurable-http-proxy: ${(edgeRps / median(rps.chp!)).toFixed(2)}x (goal >= 3x)`);
  console.log(`  edge / Caddy reverse_proxy:     ${(edgeRps / median(rps.caddy!)).toFixed(2)}x (goal >= 0.8x)`);
  console.log(`  edge / direct:                  ${(edgeRps / median(rps.direct!)).toFixed(2)}x`);
  console.log(`WebSocket ping round trip on /events, ${pings} per run, ${rounds} runs; added = through the proxy minus direct:`);
  const d50 = percentile(ws.direct!, 50);
  const d99 = percentile(ws.direct!, 99);
  for (const name of Object.keys(targets)) {
    const p50 = percentile(ws[name]!, 50);
    const p99 = percentile(ws[name]!, 99);
    const added = name === 'direct' ? '' : `  added p50 ${(p50 - d50).toFixed(3)} ms, p99 ${(p99 - d99).toFixed(3)} ms`;
    console.log(`  ${name.padEnd(6)} p50 ${p50.toFixed(3)} ms  p99 ${p99.toFixed(3)} ms${added}`);
  }
  console.log(`  edge added p99: ${(percentile(ws.edge!, 99) - d99).toFixed(3)} ms (goal < 1 ms)`);

  const params = `${connections} connections, ${seconds} s, ${rounds} runs`;
  const rpsRow = (name: string, baseline: string, base: string, goal?: number) =>
    report({ name: `small GET /health: edge vs ${name}`, metric: 'throughput', unit: 'req/s', better: 'higher', samples: rps.edge!, baseline: { name: baseline, samples: rps[base]! }, ...(goal ? { goal: { on: 'ratio' as const, op: '>=' as const, value: goal, source: 'issue 10' } } : {}), params });
  rpsRow('configurable-http-proxy', 'configurable-http-proxy 5.3 (npm)', 'chp', 3);
  rpsRow('Caddy', 'Caddy reverse_proxy', 'caddy', 0.8);
  rpsRow('direct', 'direct to the editor', 'direct');
  const wsParams = `${pings} pings per run, ${rounds} runs; per-run percentiles`;
  report({ name: 'WebSocket ping p99 through the edge, added over direct', metric: 'p99 round trip', unit: 'ms', better: 'lower', samples: wsRuns.edge!.p99, baseline: { name: 'direct to the editor', samples: wsRuns.direct!.p99 }, goal: { on: 'difference', op: '<', value: 1, source: 'issue 10' }, params: wsParams });
  report({ name: 'WebSocket ping p50 through the edge', metric: 'p50 round trip', unit: 'ms', better: 'lower', samples: wsRuns.edge!.p50, baseline: { name: 'direct to the editor', samples: wsRuns.direct!.p50 }, params: wsParams });
  report({ name: 'WebSocket ping p99: edge vs configurable-http-proxy', metric: 'p99 round trip', unit: 'ms', better: 'lower', samples: wsRuns.edge!.p99, baseline: { name: 'configurable-http-proxy', samples: wsRuns.chp!.p99 }, params: wsParams });
  report({ name: 'WebSocket ping p99: edge vs Caddy', metric: 'p99 round trip', unit: 'ms', better: 'lower', samples: wsRuns.edge!.p99, baseline: { name: 'Caddy reverse_proxy', samples: wsRuns.caddy!.p99 }, params: wsParams });
} finally {
  stopping = true;
  for (const c of children) c.kill('SIGTERM');
  rmSync(scratch, { recursive: true, force: true });
  await bench.close();
}
