/**
 * Elastic cost simulation (issue 10 item 4): a day of 50 users (bursty sign-ins, memory growth across the
 * tiers, idle spells, one GPU session; bench/elastic/trace.ts) replayed on a virtual clock against markco's
 * decision code and the EC2 emulator, and the EC2 instance-hours it costs against an oracle that knows the
 * future (bench/elastic/oracle.ts).
 *
 *   node --import tsx bench/elastic-cost.ts        (or `npm run bench elastic-cost`)
 *   SEED=20261207 USERS=50 EMULATOR=1 WHATIF=1
 *
 * Real: the resource monitor's tracker, the entity's memory and GPU policies, the tier functions, the
 * reaper's rule, and every RunInstances / TerminateInstances / DescribeInstances through activities/ec2.ts
 * (`launchHost` with its tags and generated host key, `terminateInstance`, `listManagedInstances`) against
 * moto_server, whose clock is the simulation's (bench/elastic/moto-virtual-time.py), so the instance-hours
 * are read back from the emulator's LaunchTime and termination records. Modelled: operation and boot
 * durations (bench/elastic/model.ts, from docs/benchmarks.md), the entity's queue and the operations'
 * host choices (mirrored from the workflow code, bench/elastic/sim.ts). Goals: at most 1.15x the
 * oracle's instance-hours, zero orphan instance-minutes, idle to $0 within the idle timeout + 60 s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CreateSubnetCommand, CreateVpcCommand, DescribeImagesCommand, DescribeInstancesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { generateHostKeyPair } from '../activities/cloud-init.js';
import { createEc2Activities, deploymentTag, hostTag, userTag } from '../activities/ec2.js';
import { resolveMotoServer } from '../infra/dev/prerequisites.js';
import { stopChild, waitFor } from '../infra/dev/processes.js';
import { defaultToolsDir, repoRoot } from '../lib/paths.js';
import { defaultTierLadder, gpuTierOf } from '../lib/tiers.js';
import type { Plan } from '../workflows/contracts/users.js';
import { report } from './results.js';
import { cleanUpOnSignal } from './teardown.js';
import { createFakeCloud } from './elastic/fake-cloud.js';
import { measuredDurations } from './elastic/model.js';
import { oracle, onDemandUsdPerHour, pricesSourceDate, type OracleResult } from './elastic/oracle.js';
import { idleToZero, instanceUsage, percentile, terminationTimeOf, type InstanceRecord } from './elastic/report.js';
import { simulate, type SimCloud, type SimOptions, type SimResult } from './elastic/sim.js';
import { GiB, generateTrace, traceSummary, type Trace } from './elastic/trace.js';

const seed = Number(process.env.SEED ?? 20261207);
const users = Number(process.env.USERS ?? 50);
const useEmulator = process.env.EMULATOR !== '0';
const whatIf = process.env.WHATIF !== '0';
const deploymentId = 'elastic-bench';
const idleAfterMs = 900_000;
const gpuPlans: Plan[] = ['pro', 'team'];
const gpuTier = gpuTierOf('g5.xlarge');
const hours = (ms: number) => ms / 3_600_000;
const fmtH = (ms: number) => `${hours(ms).toFixed(2)} h`;
const fmtS = (ms: number) => `${(ms / 1000).toFixed(0)} s`;

const callStats: Record<string, { calls: number; ms: number }> = {};
let moto: ChildProcess | undefined;
let workDir: string | undefined;
async function cleanup(): Promise<void> {
  if (moto) await stopChild(moto, 5000).catch(() => undefined);
  moto = undefined;
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  workDir = undefined;
}
cleanUpOnSignal(cleanup);

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

/** moto_server on the simulation's clock (loopback only), the VPC and subnet launches go into, and the real EC2 activities. */
async function emulatorCloud(dir: string): Promise<{ cloud: SimCloud; records: (until: number) => Promise<InstanceRecord[]> }> {
  const clockFile = join(dir, 'clock');
  const setClock = (now: number) => writeFileSync(clockFile, String(Math.round(now)));
  setClock(Date.now());
  const python = join(dirname(resolveMotoServer({ toolsDir: defaultToolsDir })), 'python3');
  const port = await freeLoopbackPort();
  let errors = '';
  const child = spawn(python, [join(repoRoot, 'bench', 'elastic', 'moto-virtual-time.py'), '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
    env: { ...process.env, MARKCO_VIRTUAL_CLOCK_FILE: clockFile },
  });
  moto = child;
  child.stderr?.on('data', (c: Buffer) => {
    errors = (errors + c.toString()).slice(-4000);
  });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitFor(
    'the EC2 emulator on the virtual clock',
    async () => {
      if (child.exitCode !== null) throw new Error(`moto exited: ${errors}`);
      const res = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) });
      if (!res.ok) throw new Error(`status ${res.status}`);
    },
    { timeoutMs: 60_000, intervalMs: 200, fatal: () => child.exitCode !== null },
  );
  const ec2 = new EC2Client({ region: 'us-east-1', endpoint, credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' }, maxAttempts: 3 });
  const vpcId = (await ec2.send(new CreateVpcCommand({ CidrBlock: '10.77.0.0/16' }))).Vpc!.VpcId!;
  // Addresses are only recorded by the emulator, never contacted (no boot watcher runs here).
  const subnetId = (await ec2.send(new CreateSubnetCommand({ VpcId: vpcId, CidrBlock: '10.77.224.0/20' }))).Subnet!.SubnetId!;
  const imageId = (await ec2.send(new DescribeImagesCommand({ Owners: ['amazon'] }))).Images!.find((i) => i.ImageId?.startsWith('ami-'))!.ImageId!;
  const keyPath = join(dir, 'workers_ed25519');
  writeFileSync(`${keyPath}.pub`, `${generateHostKeyPair('elastic-bench').public}\n`);
  const activities = createEc2Activities({
    ec2,
    cloud: {
      provider: 'simulated',
      amiIds: { t3: imageId, g5: imageId },
      subnetId,
      securityGroupIds: [],
      sshUser: 'root',
      market: 'on-demand',
      deploymentId,
      reservationTtlSeconds: 600,
      reaperGraceSeconds: 900,
      sshKeyPath: keyPath,
    },
    gpu: { market: 'spot-then-on-demand' },
  });
  const timed = async <T>(kind: string, f: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    try {
      return await f();
    } finally {
      const c = (callStats[kind] ??= { calls: 0, ms: 0 });
      c.calls++;
      c.ms += performance.now() - t;
    }
  };
  const cloud: SimCloud = {
    async launch(req, now) {
      setClock(now);
      return timed('launchHost', () => launchOne(req));
    },
    async terminate(instanceId, now) {
      setClock(now);
      await timed('terminateInstance', () => activities.terminateInstance({ instanceId }));
    },
    async listManaged(now) {
      setClock(now);
      return timed('listManagedInstances', () => activities.listManagedInstances({ deploymentId }));
    },
  };
  async function launchOne(req: Parameters<SimCloud['launch']>[0]): Promise<{ instanceId: string }> {
    const launched = await activities.launchHost({ hostId: req.hostId, userId: req.userId, tier: req.tier, instanceType: req.instanceType, role: 'runtime-host', gpu: req.gpu });
    if (launched.reused) throw new Error(`host ${req.hostId} was launched twice`);
    return { instanceId: launched.instanceId };
  }
  async function records(): Promise<InstanceRecord[]> {
    const out: InstanceRecord[] = [];
    let NextToken: string | undefined;
    do {
      const page = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: `tag:${deploymentTag}`, Values: [deploymentId] }], ...(NextToken ? { NextToken } : {}) }));
      for (const r of page.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          const tags = Object.fromEntries((i.Tags ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));
          const terminated = i.State?.Name === 'terminated' || i.State?.Name === 'shutting-down';
          out.push({
            instanceId: i.InstanceId!,
            instanceType: i.InstanceType!,
            userId: tags[userTag] ?? null,
            hostId: tags[hostTag] ?? null,
            launchedAt: i.LaunchTime!.getTime(),
            terminatedAt: terminated ? terminationTimeOf(i.StateTransitionReason) : null,
          });
        }
      }
      NextToken = page.NextToken;
    } while (NextToken);
    return out;
  }
  return { cloud, records };
}

function simOptions(trace: Trace, cloud: SimCloud, extra: Partial<SimOptions> = {}): SimOptions {
  return { trace, cloud, ladder: defaultTierLadder, gpuTier, gpuPlans, durations: measuredDurations, deploymentId, idleAfterMs, ...extra };
}

/** Where the policy's instance time goes beyond the oracle's (from the model's hosts). */
function breakdown(result: SimResult): { label: string; ms: number }[] {
  const end = (h: SimResult['hosts'][number]) => (h.terminatedAt ?? result.endedAt) - h.launchedAt;
  const unclaimed = result.hosts.filter((h) => h.purpose === 'pre-provision' && !h.claimed);
  return [
    { label: 'pre-provisioned hosts never claimed (boot + reservation TTL)', ms: unclaimed.reduce((a, h) => a + end(h), 0) },
    { label: 'claimed pre-provisioned hosts', ms: result.hosts.filter((h) => h.purpose === 'pre-provision' && h.claimed).reduce((a, h) => a + end(h), 0) },
    { label: 'hosts launched by a migration', ms: result.hosts.filter((h) => h.purpose === 'migrate').reduce((a, h) => a + end(h), 0) },
    { label: 'hosts launched by a return', ms: result.hosts.filter((h) => h.purpose === 'return').reduce((a, h) => a + end(h), 0) },
  ];
}

function usageFromHosts(result: SimResult): InstanceRecord[] {
  return result.hosts.map((h) => ({ instanceId: h.instanceId, instanceType: h.instanceType, userId: h.userId, hostId: h.id, launchedAt: h.launchedAt, terminatedAt: h.terminatedAt }));
}

function printOracle(or: OracleResult): void {
  for (const [name, u] of [['strict (no boot, no idle timeout)', or.strict], ['boot paid per stint', or.boot], ['online bound (boot + idle timeout per session ending on EC2)', or.online]] as const) {
    const types = Object.entries(u.byType)
      .sort()
      .map(([t, ms]) => `${t} ${hours(ms).toFixed(2)}`)
      .join(', ');
    console.log(`  oracle ${name}: ${fmtH(u.totalMs)}, $${u.usd.toFixed(2)} (${types})`);
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  const trace = generateTrace({ seed, users, idleAfterMs });
  const sum = traceSummary(trace);
  console.log(`elastic cost simulation: seed ${seed}, ${sum.users} users, ${sum.sessions} sessions (${sum.idleSpells} idle spells), ${sum.cells} cells (${sum.gpuCells} GPU), peak ${sum.peakGiB.toFixed(1)} GiB`);
  const plans = trace.users.reduce<Record<string, number>>((m, u) => ({ ...m, [`${u.plan}/${u.profile}`]: (m[`${u.plan}/${u.profile}`] ?? 0) + 1 }), {});
  console.log(`  plans/profiles: ${Object.entries(plans).sort().map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const or = oracle(trace, { ladder: defaultTierLadder, gpuInstanceType: gpuTier.instanceType, gpuPlans, bootMs: measuredDurations.bootMs, idleAfterMs });

  workDir = mkdtempSync(join(tmpdir(), 'markco-elastic-'));
  const { cloud, records } = useEmulator ? await emulatorCloud(workDir) : { cloud: createFakeCloud(deploymentId), records: undefined };
  const simStarted = performance.now();
  const result = await simulate(
    simOptions(trace, cloud, {
      onHour: (h) => {
        if (h % 6 === 0) process.stderr.write(`  simulated ${String(h).padStart(2)}:00 after ${((performance.now() - simStarted) / 1000).toFixed(1)} s\n`);
      },
    }),
  );
  const simSeconds = (performance.now() - simStarted) / 1000;
  const recs = records ? await records(result.endedAt) : usageFromHosts(result);
  const source = records ? 'the EC2 emulator (LaunchTime, termination time)' : 'the fake cloud';
  const usage = instanceUsage(recs, result.endedAt);
  if (process.env.DEBUG_RECORDS) {
    const hostsById = new Map(result.hosts.map((h) => [h.instanceId, h]));
    for (const r of recs.slice(0, 40)) {
      const h = hostsById.get(r.instanceId);
      console.log(r.instanceId, r.instanceType, new Date(r.launchedAt).toISOString(), r.terminatedAt && new Date(r.terminatedAt).toISOString(), '| model', h && new Date(h.launchedAt).toISOString(), h?.terminatedAt && new Date(h.terminatedAt).toISOString());
    }
  }

  console.log(`\nreplayed ${fmtH(result.endedAt - trace.dayStart)} of simulated time in ${simSeconds.toFixed(1)} s (${((result.endedAt - trace.dayStart) / 1000 / simSeconds).toFixed(0)}x); ${recs.length} instances launched; ${result.signals.pressure} pressure, ${result.signals.idle} idle, ${result.signals.wake} wake signals; reaper ran ${result.reaperRuns} times`);
  const kinds: Record<string, number> = {};
  for (const op of result.ops) kinds[`${op.kind}${op.reason ? `/${op.reason}` : ''}${op.outcome === 'conflict' ? ' (refused)' : ''}`] = (kinds[`${op.kind}${op.reason ? `/${op.reason}` : ''}${op.outcome === 'conflict' ? ' (refused)' : ''}`] ?? 0) + 1;
  console.log(`  operations: ${Object.entries(kinds).sort().map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const pp = result.preProvisions.reduce<Record<string, number>>((m, p) => ({ ...m, [p.outcome]: (m[p.outcome] ?? 0) + 1 }), {});
  console.log(`  pre-provisions: ${Object.entries(pp).map(([k, v]) => `${k} ${v}`).join(', ')}`);

  console.log(`\nEC2 instance-hours, from ${source} (prices: on-demand us-east-1, source dated ${pricesSourceDate}; per-second billing, 60 s minimum)`);
  for (const [t, u] of Object.entries(usage.byType).sort()) console.log(`  ${t.padEnd(11)} ${String(u.instances).padStart(4)} instances  ${fmtH(u.ms).padStart(9)}  $${u.usd.toFixed(2)} (at $${onDemandUsdPerHour[t]}/h)`);
  console.log(`  total       ${String(recs.length).padStart(4)} instances  ${fmtH(usage.totalMs).padStart(9)}  $${usage.usd.toFixed(2)}`);
  printOracle(or);
  for (const b of breakdown(result)) console.log(`  markco: ${b.label}: ${fmtH(b.ms)}`);

  // Orphans: instance time with nothing holding the host (seen at each monitor tick), plus anything the
  // emulator ran that the model does not know, still runs, or terminated later than the model asked.
  const byInstance = new Map(result.hosts.map((h) => [h.instanceId, h]));
  let orphanMs = result.hosts.reduce((a, h) => a + h.orphanMs, 0);
  const mismatches: string[] = [];
  for (const r of recs) {
    const h = byInstance.get(r.instanceId);
    if (!h) {
      orphanMs += (r.terminatedAt ?? result.endedAt) - r.launchedAt;
      mismatches.push(`${r.instanceId} unknown to the model`);
    } else if (r.terminatedAt === null) {
      orphanMs += result.endedAt - h.lastHeldAt;
      mismatches.push(`${r.instanceId} still running`);
    } else if (h.terminatedAt !== null && r.terminatedAt - h.terminatedAt > 1000) {
      orphanMs += r.terminatedAt - h.terminatedAt;
      mismatches.push(`${r.instanceId} terminated ${r.terminatedAt - h.terminatedAt} ms late`);
    }
  }
  const reaped = result.reaperTerminated.length;

  const idle = idleToZero(trace, recs, result.endedAt);
  const idleMs = idle.spells.map((s) => s.ms);
  const goalIdleMs = idleAfterMs + 60_000;
  const overGoal = idle.spells.filter((s) => s.ms > goalIdleMs);
  const neverZero = idle.spells.filter((s) => s.zeroAt === null);

  const ratio = usage.totalMs / or.strict.totalMs;
  const costRatio = usage.usd / or.strict.usd;
  console.log('\nsummary');
  console.log(`  ratio markco/oracle: ${ratio.toFixed(3)}x instance-hours (${fmtH(usage.totalMs)} vs ${fmtH(or.strict.totalMs)}), ${costRatio.toFixed(3)}x cost ($${usage.usd.toFixed(2)} vs $${or.strict.usd.toFixed(2)}); goal <= 1.15x: ${ratio <= 1.15 ? 'met' : 'missed'}`);
  console.log(`    against the boot-paying oracle ${(usage.totalMs / or.boot.totalMs).toFixed(3)}x, against the online bound ${(usage.totalMs / or.online.totalMs).toFixed(3)}x (${(usage.usd / or.online.usd).toFixed(3)}x cost)`);
  console.log(`  orphan instance-minutes: ${(orphanMs / 60_000).toFixed(2)}${mismatches.length > 0 ? ` (${mismatches.slice(0, 5).join('; ')})` : ''}; reaper terminations ${reaped}; goal 0: ${orphanMs === 0 && reaped === 0 ? 'met' : 'missed'}`);
  console.log(
    `  idle to $0: ${idle.spells.length} idle spells with an EC2 instance (${idle.baseOnly} on the base server only): max ${fmtS(Math.max(...idleMs))}, p95 ${fmtS(percentile(idleMs, 95))}, median ${fmtS(percentile(idleMs, 50))}; ${overGoal.length} over ${fmtS(goalIdleMs)}${neverZero.length > 0 ? `, ${neverZero.length} never reached $0 before the next visit` : ''}; goal <= idle timeout + 60 s: ${overGoal.length === 0 ? 'met' : 'missed'}`,
  );
  if (overGoal.length > 0) {
    const worst = [...overGoal].sort((a, b) => b.ms - a.ms).slice(0, 5);
    for (const s of worst) {
      const mine = result.hosts.filter((h) => h.userId === s.userId && h.launchedAt < s.nextSignIn && (h.terminatedAt ?? Infinity) > s.idleStart);
      const last = mine.sort((a, b) => (b.terminatedAt ?? Infinity) - (a.terminatedAt ?? Infinity))[0];
      const rt = [...result.ops].reverse().find((op) => op.userId === s.userId && op.kind === 'idle' && op.startedAt >= s.idleStart && op.startedAt < s.nextSignIn);
      console.log(`    ${s.userId.slice(-4)}: ${fmtS(s.ms)}; last instance ${last?.instanceType ?? '?'} (${last?.purpose ?? '?'}${last?.purpose === 'pre-provision' ? `, ${last.claimed ? 'claimed' : 'never claimed'}` : ''}) terminated by ${last?.terminatedBy ?? '?'}${rt ? `; idle checkpoint ${fmtS(rt.endedAt - rt.startedAt)} from ${fmtS(rt.startedAt - s.idleStart)}` : ''}`);
    }
  }
  // Why a spell missed: the instance that ended last, and what kept it.
  const causes: Record<string, number> = {};
  for (const s of overGoal) {
    const mine = result.hosts.filter((h) => h.userId === s.userId && h.launchedAt < s.nextSignIn - 1000 && (h.terminatedAt ?? Infinity) > s.idleStart);
    const last = mine.sort((a, b) => (b.terminatedAt ?? Infinity) - (a.terminatedAt ?? Infinity))[0];
    const idleOp = result.ops.find((op) => op.userId === s.userId && op.kind === 'idle' && op.startedAt >= s.idleStart && op.startedAt < s.nextSignIn);
    let cause = 'other';
    if (last?.terminatedBy === 'reservation expired') cause = 'an unclaimed reservation outlived the idle checkpoint';
    else if (idleOp && idleOp.startedAt - s.idleStart > idleAfterMs + 10_000) cause = 'a move near the end of the session restarted the idle clock (scale-down or GPU return)';
    else if (idleOp) cause = 'the idle checkpoint (dump, copy to base, S3 upload) took more than the 60 s left';
    causes[cause] = (causes[cause] ?? 0) + 1;
  }
  for (const [c, n] of Object.entries(causes).sort((a, b) => b[1] - a[1])) console.log(`    missed because ${c}: ${n}`);
  const waits = result.ops.filter((op) => op.waitMs !== null);
  const returns = waits.filter((op) => op.kind === 'login');
  const hops = waits.filter((op) => op.kind === 'gpu-hop');
  const starved = Object.values(result.starvedMs);
  console.log(
    `  service: returns ${returns.length} (to EC2 ${returns.filter((r) => r.to !== 'base').length}, median ${fmtS(percentile(returns.map((r) => r.waitMs!), 50))}, max ${fmtS(Math.max(0, ...returns.map((r) => r.waitMs!)))}); GPU hops ${hops.length} (wait ${hops.map((h) => fmtS(h.waitMs!)).join(', ')}); users whose kernel wanted more than its limit ${starved.length} (total ${fmtS(starved.reduce((a, b) => a + b, 0))}, max ${fmtS(Math.max(0, ...starved))})`,
  );

  const params = `seed ${seed}, ${users} users, ${sum.sessions} sessions, ${useEmulator ? 'moto on the virtual clock' : 'fake cloud'}`;
  report({ name: `EC2 instance-hours, a day of ${users} users`, metric: 'instance-hours', unit: 'h', better: 'lower', samples: [hours(usage.totalMs)], baseline: { name: 'oracle knowing the future (no boot, no idle timeout)', samples: [hours(or.strict.totalMs)] }, goal: { on: 'ratio', op: '<=', value: 1.15, source: 'issue 10 item 4' }, params });
  report({ name: `EC2 cost (on-demand us-east-1), a day of ${users} users`, metric: 'cost', unit: 'USD', better: 'lower', samples: [usage.usd], baseline: { name: 'oracle knowing the future (no boot, no idle timeout)', samples: [or.strict.usd] }, params });
  report({ name: `EC2 instance-hours against the online bound (oracle + boot + idle timeout)`, metric: 'instance-hours', unit: 'h', better: 'lower', samples: [hours(usage.totalMs)], baseline: { name: 'oracle + boot per stint + idle timeout per session ending on EC2', samples: [hours(or.online.totalMs)] }, params });
  report({ name: 'orphan instance-minutes', metric: 'instance time with nothing holding it', unit: 'min', better: 'lower', samples: [orphanMs / 60_000], goal: { on: 'max', op: '<=', value: 0, source: 'issue 10 item 4' }, params });
  report({ name: 'idle to $0 per idle spell with an EC2 instance', metric: 'idle start until the last instance terminated', unit: 's', better: 'lower', samples: idleMs.map((m) => m / 1000), goal: { on: 'max', op: '<=', value: goalIdleMs / 1000, source: 'issue 10 item 4: idle timeout + 60 s' }, params });
  report({ name: 'replay wall time, one simulated day', metric: 'wall time', unit: 's', better: 'lower', samples: [simSeconds], params });

  if (whatIf) {
    // The same trace with one knob of the model changed each, against the fake cloud (the emulator adds nothing to a what-if).
    console.log('\nwhat-if (model knobs, fake cloud; not what the code does today)');
    const variants: [string, Partial<SimOptions>][] = [
      ['as the code is (fake cloud)', {}],
      ['no pre-provision at 50%', { preProvisionEnabled: false }],
      ['return lands below 75% (planReturn headroom 0.34)', { returnHeadroom: 0.34 }],
      ['migrations land below 75% (resolveAutoTier headroom 0.34)', { migrateHeadroom: 0.34 }],
      ['GPU idleness ignores busy CPU (only GPU cells count)', { gpuBusyCountsCpu: false }],
      ['idle terminates the host before the S3 upload', { idleTerminateBeforeUpload: true }],
      ['no pre-provision + GPU cells only + terminate before upload', { preProvisionEnabled: false, gpuBusyCountsCpu: false, idleTerminateBeforeUpload: true }],
      ['reservations kept 5 min once ready (MARKCO_RESERVATION_TTL_S=300)', { reservationTtlMs: 300_000 }],
      ['reservations kept 2 min once ready (MARKCO_RESERVATION_TTL_S=120)', { reservationTtlMs: 120_000 }],
    ];
    for (const [label, extra] of variants) {
      const fake = createFakeCloud(deploymentId);
      const r = await simulate(simOptions(trace, fake, extra));
      const u = instanceUsage(usageFromHosts(r), r.endedAt);
      const sp = idleToZero(trace, usageFromHosts(r), r.endedAt).spells.map((s) => s.ms);
      const st = Object.values(r.starvedMs).reduce((a, b) => a + b, 0);
      console.log(`  ${label.padEnd(62)} ${fmtH(u.totalMs).padStart(9)} ${(u.totalMs / or.strict.totalMs).toFixed(3)}x  $${u.usd.toFixed(2)} ${(u.usd / or.strict.usd).toFixed(3)}x  idle->$0 max ${fmtS(Math.max(...sp))}  starved ${fmtS(st)}`);
    }
  }
  if (Object.keys(callStats).length > 0) console.log(`EC2 emulator calls: ${Object.entries(callStats).map(([k, c]) => `${k} ${c.calls} (${(c.ms / 1000).toFixed(1)} s)`).join(', ')}`);
  console.log(`\nbench took ${((performance.now() - started) / 1000).toFixed(0)} s`);
  void GiB;
}

main()
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(cleanup);
