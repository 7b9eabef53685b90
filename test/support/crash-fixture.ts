import { join } from 'node:path';
import { startHarness } from './harness.js';
import { podmanOn } from './netns.js';

/**
 * A test run that dies without tearing down: it starts a harness with a running container, prints its
 * run directory, and kills itself. The next run must find and remove everything it left.
 */
const h = await startHarness({ hosts: 1 });
const host = h.state.hosts[0]!;
await podmanOn(host, ['run', '--detach', '--name', 'orphan', '--runtime', 'runc', h.state.baseImage, 'sleep', '600']);
console.log(JSON.stringify({ runId: h.state.runId, runDir: h.state.runDir, netns: host.netns, stateFile: join(h.state.runDir, 'state.json') }));
process.kill(process.pid, 'SIGKILL');
