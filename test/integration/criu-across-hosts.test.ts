import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { join } from 'node:path';
import type { HostShell } from '../../activities/host-shell.js';
import { checkpointArgs, parseCheckpointStats, parseRestoreStats, removeContainerArgs, restoreArgs, runContainerArgs } from '../../activities/podman-commands.js';
import { streamFileBetweenHosts } from '../../activities/transfer.js';
import { connectionTo, testShells, useHarness } from '../support/context.js';
import type { HostShells } from '../../activities/host-shell.js';

/**
 * The foundation's core promise: a process started on host A over ssh2 is checkpointed with CRIU while
 * it keeps running, its archive streams to host B over ssh2, and B answers with state only the original
 * process held in memory.
 */
const counterServer = `
import http.server, json, secrets
token = secrets.token_hex(16)
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        body = json.dumps({"token": token, "count": count}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
`;

async function hit(address: string, port: number): Promise<{ token: string; count: number }> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(`http://${address}:${port}/`, { signal: AbortSignal.timeout(2000) });
      return (await res.json()) as { token: string; count: number };
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('CRIU checkpoint on host A, stream over ssh2, restore on host B', () => {
  const h = useHarness();
  let shells: HostShells;
  let a: HostShell;
  let b: HostShell;
  const name = `counter-${process.pid}`;
  const port = 18080;

  before(() => {
    shells = testShells(h.state);
    a = shells.for(connectionTo(h.state.hosts[0]!));
    b = shells.for(connectionTo(h.state.hosts[1]!));
  });
  after(async () => {
    await Promise.allSettled([a.run(removeContainerArgs(name)), b.run(removeContainerArgs(name))]);
    await shells.closeAll();
  });

  test('state that only the original process held is read back from B', async () => {
    const [hostA, hostB] = [h.state.hosts[0]!, h.state.hosts[1]!];
    await a.run(runContainerArgs({ name, image: h.state.baseImage, memoryBytes: 128 * 1024 * 1024, cpus: 1, ports: [{ hostPort: port, containerPort: 8080 }], command: ['python3', '-c', counterServer] }));
    const first = await hit(hostA.address, port);
    await hit(hostA.address, port);
    const before = await hit(hostA.address, port);
    assert.equal(before.count, first.count + 2);
    assert.equal(before.token, first.token);

    const archiveOnA = join(hostA.scratchDir, `${name}.tar`);
    const checkpoint = await a.run(checkpointArgs({ container: name, exportPath: archiveOnA, leaveRunning: true }));
    const stats = parseCheckpointStats(checkpoint.stdout);
    assert.ok(stats.frozenMs > 0, `CRIU reports a frozen time (${stats.frozenMs} ms)`);
    assert.ok(stats.pagesWritten > 0, 'CRIU wrote memory pages');

    const archiveOnB = join(hostB.scratchDir, `${name}.tar`);
    const progress: number[] = [];
    const moved = await streamFileBetweenHosts({ from: a, fromPath: archiveOnA, to: b, toPath: archiveOnB, onProgress: (p) => progress.push(p.bytes), progressEveryMs: 0 });
    assert.ok(moved.bytes > 1024 * 1024, `the archive has content (${moved.bytes} bytes)`);
    assert.match(moved.sha256, /^[0-9a-f]{64}$/);
    assert.ok(progress.length > 0 && progress.at(-1)! <= moved.bytes, 'progress was reported while streaming');
    const onB = await b.run(['sha256sum', archiveOnB]);
    assert.equal(onB.stdout.split(/\s+/)[0], moved.sha256, 'B holds exactly the bytes A wrote');

    const restore = await b.run(restoreArgs({ importPath: archiveOnB, name, ports: [{ hostPort: port, containerPort: 8080 }] }));
    assert.ok(parseRestoreStats(restore.stdout).pagesRestored > 0);

    const fromB = await hit(hostB.address, port);
    assert.equal(fromB.token, before.token, 'B answers with the token generated inside the original process');
    assert.equal(fromB.count, before.count + 1, 'the counter continues where the checkpoint left it');

    const fromA = await hit(hostA.address, port);
    assert.equal(fromA.token, before.token, '--leave-running: the source kept serving');
    assert.equal(fromA.count, before.count + 1, 'the source continues independently of the copy');
  });
});
