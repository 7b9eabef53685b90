import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';
import { startHarness } from '../support/harness.js';
import { describeLeftovers, findLeftovers, sweepDeadRuns } from '../support/leftovers.js';
import { podmanOn } from '../support/netns.js';

const netnsList = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });

/** The harness leaves nothing behind: not after a run, not after a run that failed, not after one that was killed. */
describe('test harness teardown', () => {
  test('a finished run leaves no container, namespace, process, link or file', async () => {
    const h = await startHarness({ hosts: 1 });
    const host = h.state.hosts[0]!;
    try {
      await podmanOn(host, ['run', '--detach', '--name', 'left-running', '--runtime', 'runc', h.state.baseImage, 'sleep', '600']);
      const during = await findLeftovers(h.state.runDir, h.state.runId);
      assert.ok(during.processes.some((p) => p.what.includes('sleep 600')), 'the container process is tracked while the run is up');
      assert.ok(during.namespaces.includes(host.netns));
      // The test fails here on purpose: teardown must still clean up.
      assert.fail('simulated test failure');
    } catch (err) {
      assert.match((err as Error).message, /simulated test failure/);
    } finally {
      await h.teardown();
    }
    assert.deepEqual(describeLeftovers(await findLeftovers(h.state.runDir, h.state.runId)), []);
    assert.doesNotMatch(netnsList(), new RegExp(host.netns));
    assert.equal(existsSync(h.state.runDir), false);
    assert.equal(spawnSync('pgrep', ['-f', `sshd -f ${host.dir}`]).status, 1, 'no sshd of the host is left');
  });

  test('a killed run is swept by the next one', async () => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', 'test/support/crash-fixture.ts'], { cwd: repoRoot, encoding: 'utf8', timeout: 180_000 });
    const line = child.stdout.split('\n').find((l) => l.startsWith('{'));
    assert.ok(line, `the crashed run reported itself: ${child.stderr.slice(-1000)}`);
    const crashed = JSON.parse(line) as { runId: string; runDir: string; netns: string };
    const left = await findLeftovers(crashed.runDir, crashed.runId);
    assert.ok(left.processes.some((p) => p.what.includes('sleep 600')), 'the killed run left its container running');
    assert.ok(left.namespaces.includes(crashed.netns), 'and its namespace');
    for (const server of ['moto_server', 'temporal', 'postgres', 'sshd']) {
      assert.ok(left.processes.some((p) => p.what.includes(server)), `and its ${server}`);
    }

    const swept = await sweepDeadRuns();
    assert.ok(swept.includes(crashed.runId));
    assert.deepEqual(describeLeftovers(await findLeftovers(crashed.runDir, crashed.runId)), []);
    assert.equal(existsSync(crashed.runDir), false);
    assert.doesNotMatch(netnsList(), new RegExp(crashed.netns));
  });
});
