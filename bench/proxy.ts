import { request } from 'undici';
import { median, requestsPerSecond, startEdgeBench } from './edge-setup.js';
import { report } from './results.js';

/**
 * The edge's `/u/<id>/` proxy against a direct connection to the same editor, in the same run: small
 * requests per second (the editor's /health, keep-alive, concurrent clients) and the throughput of a
 * large answer (a 4 MiB MRP result through the editor's runtime proxy), and the round trip of a small
 * MRP execute, whose body the edge reads for code hints before forwarding. Prints proxy/direct ratios.
 *   node --import tsx bench/proxy.ts [SECONDS] [CONNECTIONS]
 */
const seconds = Number(process.argv[2] ?? 5);
const connections = Number(process.argv[3] ?? 16);
const bench = await startEdgeBench();

async function megabytesPerSecond(url: string, headers: Record<string, string>, rounds: number): Promise<number> {
  // storeHistory false: IPython would otherwise keep every 4 MiB result in Out and the runtime would hit its plan's memory limit.
  const body = JSON.stringify({ code: "'a' * (4 * 1024 * 1024)", storeHistory: false });
  let bytes = 0;
  const started = performance.now();
  for (let i = 0; i < rounds; i++) {
    const res = await request(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    let last = '';
    for await (const chunk of res.body) {
      bytes += chunk.length;
      last = String(chunk).slice(-300);
    }
    if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}: ${last}`);
  }
  return bytes / 1024 / 1024 / ((performance.now() - started) / 1000);
}

/** Median round trip of a small cell, one at a time (what a user running cells feels). */
async function executeMilliseconds(url: string, headers: Record<string, string>, rounds: number): Promise<number> {
  const body = JSON.stringify({ code: 'import math\nmath.sqrt(2) * 2', storeHistory: false });
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const started = performance.now();
    const res = await request(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${url} answered ${res.statusCode}: ${text.slice(0, 300)}`);
    times.push(performance.now() - started);
  }
  return median(times);
}

try {
  const user = await bench.devLogin('proxy-bench@example.test');
  if (user.operationId) await request(`${bench.edge.url}/api/operations/${user.operationId}?wait=120`, { headers: { cookie: user.cookie } }).then((r) => r.body.json());
  const editor = (await bench.db.store.editors.live(user.id))!;
  const runtime = (await bench.db.store.runtimes.live(user.id))!;
  const direct = `http://127.0.0.1:${editor.port}`;
  const viaEdge = { origin: bench.edge.url, prefix: `/u/${user.id}`, headers: { cookie: user.cookie } };

  const small = { direct: [] as number[], proxy: [] as number[] };
  const large = { direct: [] as number[], proxy: [] as number[] };
  const cell = { direct: [] as number[], proxy: [] as number[] };
  for (let round = 0; round < 3; round++) {
    small.direct.push(await requestsPerSecond(direct, '/health', {}, { connections, seconds }));
    small.proxy.push(await requestsPerSecond(viaEdge.origin, `${viaEdge.prefix}/health`, viaEdge.headers, { connections, seconds }));
    large.direct.push(await megabytesPerSecond(`${direct}/proxy/${runtime.port}/mrp/v1/execute`, {}, 5));
    large.proxy.push(await megabytesPerSecond(`${viaEdge.origin}${viaEdge.prefix}/proxy/${runtime.port}/mrp/v1/execute`, viaEdge.headers, 5));
    cell.direct.push(await executeMilliseconds(`${direct}/proxy/${runtime.port}/mrp/v1/execute`, {}, 100));
    cell.proxy.push(await executeMilliseconds(`${viaEdge.origin}${viaEdge.prefix}/proxy/${runtime.port}/mrp/v1/execute`, viaEdge.headers, 100));
  }
  const line = (name: string, unit: string, d: number[], p: number[]) =>
    console.log(`  ${name}: direct ${median(d).toFixed(0)} ${unit}, through the edge ${median(p).toFixed(0)} ${unit}, ratio ${(median(p) / median(d)).toFixed(2)}x  (medians of ${d.length})`);
  console.log(`edge /u/<id>/ proxy vs direct to the editor (${connections} connections, ${seconds} s per small-request run)`);
  line('small GET /health', 'req/s', small.direct, small.proxy);
  line('4 MiB MRP result', 'MiB/s', large.direct, large.proxy);
  line('small MRP execute round trip (body read for code hints)', 'ms', cell.direct, cell.proxy);
  const params = `${connections} connections, ${seconds} s, 3 rounds`;
  report({ name: 'small GET /health through the edge', metric: 'throughput', unit: 'req/s', better: 'higher', samples: small.proxy, baseline: { name: 'direct to the editor', samples: small.direct }, goal: { on: 'ratio', op: '>=', value: 0.8 }, params });
  report({ name: '4 MiB MRP result through the edge', metric: 'throughput', unit: 'MiB/s', better: 'higher', samples: large.proxy, baseline: { name: 'direct to the editor', samples: large.direct }, goal: { on: 'ratio', op: '>=', value: 0.8 }, params: '5 per round, 3 rounds' });
  report({ name: 'small MRP execute round trip through the edge (median of 100 per round)', metric: 'round trip', unit: 'ms', better: 'lower', samples: cell.proxy, baseline: { name: 'direct to the editor', samples: cell.direct }, params: '3 rounds' });
} finally {
  await bench.close();
}
