import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import ssh2, { type ServerChannel } from 'ssh2';
import { generateHostKeyPair } from '../../activities/cloud-init.js';
import { HostCommandError, SshShell } from '../../activities/host-shell.js';

/**
 * A fast host answers a short command's exec request, its exit status and its close in one TCP segment.
 * ssh2 parses the whole segment at once, so the channel's 'exit' event fires in the same tick as the exec
 * callback, before the shell has its listeners on the channel. The debootstrap runtime host does this
 * often (a quarter of short commands when eight run at once), which made registerHost fail in CI with
 * "killed by a signal". This server does it every time: it writes its whole answer synchronously.
 */
describe('a host that answers a command in one segment', () => {
  let server: ssh2.Server;
  let port: number;
  const hostKey = generateHostKeyPair('ssh-exit-status-test');
  const clientKey = generateHostKeyPair('ssh-exit-status-client').private;
  let shell: SshShell;

  before(async () => {
    server = new ssh2.Server({ hostKeys: [hostKey.private] }, (conn) => {
      conn.on('authentication', (ctx) => (ctx.method === 'publickey' ? ctx.accept() : ctx.reject(['publickey'])));
      conn.on('error', () => undefined);
      conn.on('session', (accept) => {
        accept().on('exec', (acceptExec, _reject, info) => {
          const channel: ServerChannel = acceptExec();
          answer(channel, info.command);
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    shell = new SshShell(
      { hostId: 'one-segment', kind: 'ec2', address: '127.0.0.1', sshPort: port, sshUser: 'root', hostKey: hostKey.public },
      { privateKey: clientKey, connectTimeoutMs: 10_000, commandTimeoutMs: 10_000 },
    );
  });

  after(async () => {
    await shell?.close();
    server?.close();
  });

  /** Answers like sshd, but all at once: the command's output, its status, EOF and close. */
  function answer(channel: ServerChannel, command: string): void {
    const wanted = /exec (.*)$/.exec(command)?.[1] ?? command;
    if (wanted.includes('die')) {
      channel.exit('KILL', false, '');
    } else {
      const code = Number(/exit (\d+)/.exec(wanted)?.[1] ?? 0);
      channel.write(`ran: ${wanted}\n`);
      channel.exit(code);
    }
    channel.end();
  }

  test('a command that exits 0 succeeds with its output, even when eight run at once', async () => {
    const results = await Promise.all(Array.from({ length: 40 }, () => shell.run(['uname', '-r'])));
    for (const r of results) {
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, 'ran: uname -r\n');
    }
  });

  test('a command that exits 3 fails with "exited with 3", or passes when 3 is allowed', async () => {
    await assert.rejects(shell.run(['sh', '-c', 'exit 3']), (err: unknown) => err instanceof HostCommandError && err.exitCode === 3 && /exited with 3/.test(err.message));
    const allowed = await shell.run(['sh', '-c', 'exit 3'], { okExitCodes: [0, 3] });
    assert.equal(allowed.exitCode, 3);
  });

  test('a command killed by a signal names the signal', async () => {
    await assert.rejects(shell.run(['die']), (err: unknown) => err instanceof HostCommandError && err.exitCode === null && /killed by SIGKILL/.test(err.message));
  });
});
