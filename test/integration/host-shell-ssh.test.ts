import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { HostAbortError, HostCommandError, HostConnectError, HostTimeoutError, SshShell, type HostShells } from '../../activities/host-shell.js';
import { streamFileBetweenHosts } from '../../activities/transfer.js';
import { connectionTo, testShells, useHarness } from '../support/context.js';
import { cutNetwork } from '../support/netns.js';

/** The host-access layer against real sshd on namespace hosts. */
describe('ssh2 host shell', () => {
  const h = useHarness();
  let shells: HostShells;
  before(() => {
    shells = testShells(h.state, { connectTimeoutMs: 2000 });
  });
  after(() => shells.closeAll());

  const shellA = () => shells.for(connectionTo(h.state.hosts[0]!));
  const shellB = () => shells.for(connectionTo(h.state.hosts[1]!));

  test('commands run on the host itself, with that host\'s podman storage', async () => {
    const host = h.state.hosts[0]!;
    const r = await shellA().run(['sh', '-c', 'ip -4 -o addr show eth0; echo "$CONTAINERS_STORAGE_CONF"']);
    assert.match(r.stdout, new RegExp(host.address.replace(/\./g, '\\.')));
    assert.match(r.stdout, new RegExp(host.dir));
    const images = await shellA().run(['podman', 'images', '--format', '{{.Repository}}:{{.Tag}}']);
    assert.match(images.stdout, /localhost\/markco-base:bookworm/, 'the image was loaded like a baked AMI');
  });

  test('a failing command carries its exit code and stderr into the error', async () => {
    await assert.rejects(shellA().run(['sh', '-c', 'echo "no such container: rt-x" >&2; exit 125']), (err: unknown) => {
      assert.ok(err instanceof HostCommandError);
      assert.equal(err.exitCode, 125);
      assert.equal(err.hostId, h.state.hosts[0]!.hostId);
      assert.match(err.message, /exited with 125: no such container: rt-x/);
      return true;
    });
  });

  test('a command over its time limit fails and does not keep running on the host', async () => {
    const marker = `sleep 31.${process.pid}`;
    await assert.rejects(shellA().run(['sh', '-c', `${marker}; echo done`], { timeoutMs: 500 }), HostTimeoutError);
    let alive = '';
    for (let i = 0; i < 30; i++) {
      alive = (await shellA().run(['sh', '-c', `pgrep -f '^${marker}' || true`])).stdout.trim();
      if (!alive) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(alive, '', 'the remote process was stopped');
  });

  test('a host presenting another key is refused before anything runs', async () => {
    const impostor = new SshShell({ ...connectionTo(h.state.hosts[1]!), hostKey: h.state.hosts[0]!.hostKey }, { privateKey: readFileSync(h.state.sshKeyPath), connectTimeoutMs: 2000, commandTimeoutMs: 5000 });
    await assert.rejects(impostor.run(['touch', '/tmp/should-not-exist']), (err: unknown) => err instanceof HostConnectError && err.reason === 'host-key' && /SHA256:/.test(err.message));
    await impostor.close();
  });

  test('a host without a pinned key is never contacted', () => {
    assert.throws(() => new SshShell({ ...connectionTo(h.state.hosts[0]!), hostKey: undefined }, { privateKey: 'x', connectTimeoutMs: 1000, commandTimeoutMs: 1000 }), (err: unknown) => err instanceof HostConnectError && err.reason === 'no-host-key');
  });

  test('an unanswering address fails within the connect timeout', async () => {
    // An unused address in this run's own test subnet: nothing answers there.
    const ghost = new SshShell({ ...connectionTo(h.state.hosts[0]!), hostId: 'ghost', address: `${h.state.network.prefix}.250` }, { privateKey: readFileSync(h.state.sshKeyPath), connectTimeoutMs: 800, commandTimeoutMs: 5000 });
    const started = Date.now();
    await assert.rejects(ghost.run(['true']), (err: unknown) => err instanceof HostConnectError && ['timeout', 'unreachable'].includes(err.reason));
    assert.ok(Date.now() - started < 5000);
    await ghost.close();
  });

  test('a command cancelled while its connection is still being made stops at once, not at the connect timeout', async () => {
    const ghost = new SshShell({ ...connectionTo(h.state.hosts[0]!), hostId: 'ghost', address: `${h.state.network.prefix}.250` }, { privateKey: readFileSync(h.state.sshKeyPath), connectTimeoutMs: 60_000, commandTimeoutMs: 90_000 });
    const cancel = new AbortController();
    const outcome = ghost.run(['true'], { signal: cancel.signal });
    setTimeout(() => cancel.abort(), 200);
    await assert.rejects(outcome, (err: unknown) => err instanceof HostAbortError, 'the cancel ends it, not the 60 s connect timeout');
    await ghost.close();
  });

  test('a host that goes silent mid-command: the cancel and the deadline still end commands at once, and the shell reconnects once it is back', async () => {
    const host = h.state.hosts[1]!;
    // A shell of its own: the shared one's connection must not be the one given up.
    const silent = new SshShell(connectionTo(host), { privateKey: readFileSync(h.state.sshKeyPath), connectTimeoutMs: 2000, commandTimeoutMs: 60_000 });
    let restore: (() => Promise<void>) | undefined;
    try {
      const cancel = new AbortController();
      const running = silent.run(['sleep', '120'], { signal: cancel.signal });
      running.catch(() => undefined);
      await new Promise((r) => setTimeout(r, 500));
      restore = await cutNetwork(host, 'silent-shell');
      let started = Date.now();
      cancel.abort();
      await assert.rejects(running, (err: unknown) => err instanceof HostAbortError);
      assert.ok(Date.now() - started < 10_000, `the cancel ended the command in ${Date.now() - started} ms, without the host's answer`);

      started = Date.now();
      await assert.rejects(silent.run(['true'], { timeoutMs: 1500 }), (err: unknown) => err instanceof HostTimeoutError || err instanceof HostConnectError);
      assert.ok(Date.now() - started < 10_000, `the deadline ended the command in ${Date.now() - started} ms`);

      await restore();
      assert.equal((await silent.run(['echo', 'back'])).stdout.trim(), 'back');
    } finally {
      await restore?.();
      await silent.close();
    }
  });

  test('many commands at once share one connection beyond the session limit', async () => {
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => shellA().run(['echo', String(i)])));
    assert.deepEqual(results.map((r) => Number(r.stdout.trim())), Array.from({ length: 40 }, (_, i) => i));
  });

  test('the shell reconnects after the connection drops', async () => {
    await shellB().run(['true']);
    await shellB().run(['sh', '-c', 'pkill -f "sshd: root@notty" || true']).catch(() => undefined);
    let answer = '';
    for (let i = 0; i < 20 && !answer; i++) {
      answer = await shellB().run(['echo', 'back']).then((r) => r.stdout.trim(), () => '');
      if (!answer) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(answer, 'back');
  });

  test('bytes stream host to host over ssh2, verified end to end', async () => {
    const [a, b] = [h.state.hosts[0]!, h.state.hosts[1]!];
    const src = `${a.scratchDir}/blob-${process.pid}`;
    const dst = `${b.scratchDir}/in/blob-${process.pid}`;
    await shellA().run(['sh', '-c', `head -c 20000000 /dev/urandom > ${src}`]);
    const result = await streamFileBetweenHosts({ from: shellA(), fromPath: src, to: shellB(), toPath: dst });
    assert.equal(result.bytes, 20_000_000);
    const [sa, sb] = await Promise.all([shellA().run(['sha256sum', src]), shellB().run(['sha256sum', dst])]);
    assert.equal(sa.stdout.split(' ')[0], sb.stdout.split(' ')[0]);
    assert.equal(sb.stdout.split(' ')[0], result.sha256);
    await Promise.all([shellA().run(['rm', '-f', src]), shellB().run(['rm', '-f', dst])]);
  });

  test('bulk commands run under OpenSSH: bytes in and out intact, the host key pinned, time limits kill the remote side', async () => {
    const payload = (await import('node:crypto')).randomBytes(24 * 1024 * 1024);
    const expected = (await import('node:crypto')).createHash('sha256').update(payload).digest('hex');
    // Counted on the host: stdin arrives whole, and stdout comes back whole.
    const echoed = await shellA().run(['sh', '-c', 'tee /dev/stderr | sha256sum >&2; printf ok'], { bulk: true, stdin: payload, maxStdoutBytes: 64 });
    assert.equal(echoed.stdout, 'ok');
    assert.match(echoed.stderr, new RegExp(expected));
    const reader = await shellB().openReader(['head', '-c', '5000000', '/dev/zero'], { bulk: true });
    let got = 0;
    reader.stdout.on('data', (c: Buffer) => (got += c.length));
    await reader.done;
    assert.equal(got, 5_000_000);
    // The process really is an OpenSSH client: ssh2 would not show up in the host's sshd log as one, so
    // look at the client side instead, while a bulk command runs.
    const marker = `sleep 32.${process.pid}`;
    const running = shellA().run(['sh', '-c', `${marker}; echo done`], { bulk: true, timeoutMs: 1500 });
    await new Promise((r) => setTimeout(r, 500));
    const { execFileSync } = await import('node:child_process');
    assert.match(execFileSync('pgrep', ['-a', '-f', `^ssh .*${marker.replace('.', '\\.')}`]).toString(), /UserKnownHostsFile=/);
    await assert.rejects(running, HostTimeoutError);
    let alive = '';
    for (let i = 0; i < 30; i++) {
      alive = (await shellA().run(['sh', '-c', `pgrep -f '^${marker}' || true`])).stdout.trim();
      if (!alive) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(alive, '', 'the remote process was stopped');
    await assert.rejects(shellA().run(['sh', '-c', 'exit 3'], { bulk: true }), (err: unknown) => err instanceof HostCommandError && err.exitCode === 3);
    const impostor = new SshShell(
      { ...connectionTo(h.state.hosts[1]!), hostKey: h.state.hosts[0]!.hostKey },
      { privateKey: readFileSync(h.state.sshKeyPath), privateKeyPath: h.state.sshKeyPath, connectTimeoutMs: 2000, commandTimeoutMs: 5000 },
    );
    await assert.rejects(impostor.run(['touch', '/tmp/should-not-exist-bulk'], { bulk: true }), (err: unknown) => err instanceof HostConnectError && err.reason === 'host-key');
  });
});
