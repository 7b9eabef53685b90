import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { resolveMotoServer } from './prerequisites.js';
import { stopChild, waitFor } from './processes.js';

/**
 * The EC2/S3 emulator (PyPI moto[server], installed by the bootstrap): the test harness runs one per
 * test run, and the main command one for MARKCO_CLOUD=simulated. It keeps its state in memory: every
 * start is an empty cloud. It listens on loopback only.
 */
export interface MotoServer {
  endpoint: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Starts moto_server on 127.0.0.1 (a free port unless given) in its own process group; resolves once it answers. */
export async function startMoto(toolsDir: string, opts: { port?: number } = {}): Promise<MotoServer> {
  const bin = resolveMotoServer({ toolsDir });
  const port = opts.port ?? (await freeLoopbackPort());
  const child = spawn(bin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let errors = '';
  child.stderr?.on('data', (c: Buffer) => {
    errors = (errors + c.toString()).slice(-4000);
  });
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    await waitFor(
      `the EC2/S3 emulator at ${endpoint}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`moto_server exited: ${errors}`);
        const res = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) });
        if (!res.ok) throw new Error(`status ${res.status}`);
      },
      { timeoutMs: 30_000, intervalMs: 200, fatal: () => child.exitCode !== null },
    );
  } catch (err) {
    await stopChild(child, 2000);
    throw err;
  }
  return { endpoint, child, stop: () => stopChild(child, 5000) };
}
