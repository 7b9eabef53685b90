import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { startFlightServer, type RunningFlightServer } from '../../flight/server.js';
import { waitFor } from '../../infra/dev/processes.js';
import { createLogger } from '../../lib/logger.js';
import { defaultToolsDir } from '../../lib/paths.js';
import { flightAnswers } from '../../lib/flight-probe.js';

/**
 * After a reboot the data service starts before podman has made its bridge, so the address runtimes reach
 * it at does not exist yet. It must listen there once the address appears (grpc-js would answer a bind
 * retried after a failure with the first failure for ever). An empty bridge of this machine plays the
 * bridge, with an address of the project's test range; pyarrow.flight then reaches the server there.
 */
const run = promisify(execFile);
const python = join(process.env.MARKCO_TOOLS_DIR ?? defaultToolsDir, 'venv', 'bin', 'python');

describe('the data service and an address that appears after it started', () => {
  const link = `mkfl${randomBytes(3).toString('hex')}`;
  let address: string;
  let server: RunningFlightServer;
  let datasetsDir: string;

  before(async () => {
    assert.ok(existsSync(python), `the tools venv's python is missing at ${python}: run infra/dev/bootstrap.sh`);
    const used = (await run('ip', ['-4', '-o', 'addr', 'show'])).stdout;
    const free = Array.from({ length: 40 }, (_, i) => `10.77.${250 - i}.1`).find((a) => !used.includes(` ${a.slice(0, a.lastIndexOf('.'))}.`));
    assert.ok(free, 'no free 10.77.x.1 test address');
    address = free;
    datasetsDir = mkdtempSync(join(tmpdir(), 'markco-flight-listen-'));
    await run('ip', ['link', 'add', link, 'type', 'bridge']);
  });

  after(async () => {
    await server?.close();
    await run('ip', ['link', 'del', link]).catch(() => undefined);
    if (datasetsDir) rmSync(datasetsDir, { recursive: true, force: true });
  });

  test('the server listens at the address once it exists, and answers there', async () => {
    server = await startFlightServer({
      host: '127.0.0.1',
      port: 0,
      alsoListenOn: [address],
      addressPollMs: 200,
      datasetsDir,
      access: {
        userOf: async () => undefined,
        mayRead: async () => false,
        readableOwners: async () => [],
        ownerByUsername: async () => undefined,
      },
      log: createLogger({ level: 'error', name: 'flight-listen-test' }),
    });
    assert.deepEqual(server.listeningOn(), ['127.0.0.1'], 'not there yet');
    await new Promise((r) => setTimeout(r, 500)); // a few looks while the address is missing
    await run('ip', ['addr', 'add', `${address}/32`, 'dev', link]);
    await run('ip', ['link', 'set', link, 'up']);
    await waitFor('the server to listen at the new address', async () => {
      if (!server.listeningOn().includes(address)) throw new Error(server.listeningOn().join(', '));
    }, { timeoutMs: 10_000, intervalMs: 100 });
    const { stdout } = await run(python, ['-c', `
import pyarrow.flight as fl, sys
try:
    list(fl.FlightClient(sys.argv[1]).list_flights())
    print("answered")
except fl.FlightUnauthenticatedError:
    print("unauthenticated")
`, `grpc://${address}:${server.port}`], { timeout: 60_000 });
    assert.equal(stdout.trim(), 'unauthenticated', 'the server answered at the new address (and asked for a token)');
  });

  test('the edge’s health probe: the service answers Flight, and a closed port is named as not answering', async () => {
    assert.deepEqual(await flightAnswers(server.location), { actions: 0 });
    const closed = `grpc://127.0.0.1:${server.port}`;
    await server.close();
    await assert.rejects(flightAnswers(closed, 1000), /the data service at grpc:\/\/127\.0\.0\.1:\d+ did not answer/);
  });
});
