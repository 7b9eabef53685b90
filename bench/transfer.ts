import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { streamFileBetweenHosts } from '../activities/transfer.js';
import { startHarness } from '../test/support/harness.js';
import { connectionTo, testShells } from '../test/support/context.js';
import { report } from './results.js';

/**
 * Checkpoint-sized transfer between two namespace hosts: our ssh2 stream (hashing on the way, verified
 * by the target) against the raw baseline, `scp -3` between the same hosts relayed through this machine,
 * measured in the same run. Prints the ratio (>1 means ours is faster).
 *   node --import tsx bench/transfer.ts [MEGABYTES] [ROUNDS]
 */
const run = promisify(execFile);
const megabytes = Number(process.argv[2] ?? 300);
const rounds = Number(process.argv[3] ?? 3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const h = await startHarness({ hosts: 2 });
const shells = testShells(h.state, { commandTimeoutMs: 600_000 });
try {
  const [a, b] = h.state.hosts as [(typeof h.state.hosts)[0], (typeof h.state.hosts)[0]];
  const shellA = shells.for(connectionTo(a));
  const shellB = shells.for(connectionTo(b));
  const src = join(a.scratchDir, 'bench.bin');
  await shellA.run(['sh', '-c', `head -c ${megabytes * 1024 * 1024} /dev/urandom > ${src}`], { timeoutMs: 600_000 });
  const knownHosts = join(h.state.runDir, 'known_hosts');
  writeFileSync(knownHosts, `${a.address} ${a.hostKey}\n${b.address} ${b.hostKey}\n`);
  const scpArgs = ['-3', '-q', '-i', h.state.sshKeyPath, '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes'];

  const ours: number[] = [];
  const scp: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t = Date.now();
    await streamFileBetweenHosts({ from: shellA, fromPath: src, to: shellB, toPath: join(b.scratchDir, `ours-${i}.bin`), timeoutMs: 600_000 });
    ours.push(Date.now() - t);
    t = Date.now();
    await run('scp', [...scpArgs, `root@${a.address}:${src}`, `root@${b.address}:${join(b.scratchDir, `scp-${i}.bin`)}`], { timeout: 600_000 });
    scp.push(Date.now() - t);
    await shellB.run(['sh', '-c', `rm -f ${b.scratchDir}/*.bin`]);
  }
  const [mo, ms] = [median(ours), median(scp)];
  console.log(`transfer of ${megabytes} MiB between namespace hosts, median of ${rounds}`);
  console.log(`  markco ssh2 stream (sha256 verified): ${mo} ms (${((megabytes / mo) * 1000).toFixed(0)} MiB/s)  runs ${ours.join(', ')}`);
  console.log(`  baseline scp -3 (unverified):         ${ms} ms (${((megabytes / ms) * 1000).toFixed(0)} MiB/s)  runs ${scp.join(', ')}`);
  console.log(`  ratio baseline/markco: ${(ms / mo).toFixed(2)}x`);
  report({ name: `${megabytes} MiB host to host, ssh2 relay with sha256`, metric: 'wall time', unit: 'ms', better: 'lower', samples: ours, baseline: { name: 'scp -3 (unverified)', samples: scp }, params: `${rounds} rounds` });
} finally {
  await shells.closeAll();
  await h.teardown();
}
