import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { RunInstancesCommand } from '@aws-sdk/client-ec2';
import { Client, Connection } from '@temporalio/client';
import { LocalShell } from '../../activities/host-shell.js';
import { deploymentTag, managedTag } from '../../activities/ec2.js';
import { processAlive } from '../../infra/dev/processes.js';
import { simulatedNetworkId } from '../../infra/dev/stack.js';
import { createEc2Client } from '../../lib/aws.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';
import { reaperScheduleId } from '../../lib/schedules.js';
import { workflowIds } from '../../workflows/contracts/index.js';
import { freePort } from '../support/harness.js';
import { useHarness } from '../support/context.js';

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`${what} within ${timeoutMs} ms (last: ${String(last)})`);
}

const sh = new LocalShell('main-command-test', { commandTimeoutMs: 30_000 });

/** Network namespaces and links of a simulated cloud's network id. */
async function simulatedNetworkLeft(id: string): Promise<string[]> {
  const namespaces = (await sh.run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(`mkt-${id}-`));
  const links = (await sh.run(['ip', '-o', 'link', 'show'])).stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n.startsWith(`mkt${id}`));
  return [...namespaces.map((n) => `netns ${n}`), ...links.map((n) => `link ${n}`)];
}

async function stopStack(s: ChildProcess): Promise<void> {
  if (s.exitCode === null && s.signalCode === null) {
    const exited = new Promise<void>((resolve) => s.once('exit', () => resolve()));
    s.kill('SIGINT');
    const timer = setTimeout(() => s.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(timer);
  }
  s.stdout?.destroy();
  s.stderr?.destroy();
}

async function tcpOpen(host: string, port: number): Promise<true> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, timeout: 1000 });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('timeout', () => {
      s.destroy();
      reject(new Error('timeout'));
    });
    s.once('error', reject);
  });
}

/** The README's main command, exactly: everything comes up, health tells the truth, Ctrl-C stops it all. */
describe('scripts/start', () => {
  const h = useHarness();
  let stack: ChildProcess | undefined;
  let simStack: ChildProcess | undefined;
  let simNetworkId: string | undefined;
  let output = '';
  after(async () => {
    // A failed test's stack gets a Ctrl-C first: killed outright, it would leave its services holding the output pipes.
    await Promise.all([stack, simStack].map((s) => (s ? stopStack(s) : undefined)));
    // A failed simulated-cloud test must not leave its network behind (the test sweeper only knows hex run ids).
    if (simNetworkId) {
      for (const what of await simulatedNetworkLeft(simNetworkId)) {
        const [kind, name] = what.split(' ') as [string, string];
        if (kind === 'netns') {
          for (const pid of (await sh.run(['ip', 'netns', 'pids', name], { okExitCodes: [0, 1] })).stdout.split(/\s+/).filter(Boolean)) {
            try {
              process.kill(Number(pid), 'SIGKILL');
            } catch {
              /* gone */
            }
          }
          await sh.run(['ip', 'netns', 'del', name], { okExitCodes: [0, 1] });
        } else {
          await sh.run(['ip', 'link', 'del', name], { okExitCodes: [0, 1] });
        }
      }
    }
  });

  test('brings up PostgreSQL, Temporal with its Web UI, the worker and the edge; Ctrl-C stops everything', async () => {
    const [port, pgPort, temporalPort, uiPort, flightPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const dataDir = join(h.state.runDir, 'stack-data');
    stack = spawn(join(repoRoot, 'scripts', 'start'), [], {
      cwd: repoRoot,
      env: {
        ...process.env,
        MARKCO_DATA_DIR: dataDir,
        MARKCO_PORT: String(port),
        MARKCO_FLIGHT_PORT: String(flightPort),
        MARKCO_EMBEDDED_PG_PORT: String(pgPort),
        TEMPORAL_DEV_PORT: String(temporalPort),
        TEMPORAL_UI_PORT: String(uiPort),
        DATABASE_URL: '',
        TEMPORAL_ADDRESS: '',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (c: Buffer) => {
      output = (output + c.toString()).slice(-20_000);
    };
    stack.stdout!.on('data', keep);
    stack.stderr!.on('data', keep);
    const exited = new Promise<number | null>((resolve) => stack!.on('exit', (code) => resolve(code)));

    const health = await until(
      `GET /api/health answers 200 (output: ${output.slice(-1500)})`,
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(3000) });
        return res.status === 200 ? ((await res.json()) as { parts: Record<string, { status: string }> }) : undefined;
      },
      180_000,
    );
    assert.deepEqual(Object.keys(health.parts).sort(), ['data', 'database', 'temporal', 'worker']);
    assert.ok(Object.values(health.parts).every((p) => p.status === 'ok'));

    // The data service answers Flight (a real client, pyarrow.flight): without a session it is refused.
    const refusal = await until(
      'the data service to answer Flight',
      async () => {
        const answer = await new LocalShell('base').run(
          [join(defaultToolsDir, 'venv', 'bin', 'python'), '-c', 'import sys, pyarrow.flight as fl\ntry:\n  list(fl.FlightClient(sys.argv[1]).list_flights())\nexcept fl.FlightUnauthenticatedError as e:\n  print("unauthenticated:", e)', `grpc://127.0.0.1:${flightPort}`],
          { timeoutMs: 60_000, okExitCodes: [0, 1] },
        );
        return answer.stdout.startsWith('unauthenticated:') ? answer.stdout : undefined;
      },
      60_000,
    );
    assert.match(refusal, /session|token/i, 'the refusal says what is missing');

    const ui = await fetch(`http://127.0.0.1:${uiPort}/`, { signal: AbortSignal.timeout(5000) });
    assert.equal(ui.status, 200, 'the Temporal Web UI answers');
    assert.match(await ui.text(), /<html/i);

    const connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}` });
    try {
      const client = new Client({ connection });
      const registration = client.workflow.getHandle(workflowIds.registerHost('base'));
      const result = await until('the base host registration completes', async () => ((await registration.describe()).status.name === 'COMPLETED' ? registration.result() : undefined), 60_000);
      assert.equal(result.state, 'ready');
      assert.equal(result.facts.ociRuntime, 'runc');
    } finally {
      await connection.close();
    }

    const recorded = JSON.parse(readFileSync(join(dataDir, 'run', 'stack.json'), 'utf8')) as { pid: number; marker: string }[];
    assert.equal(recorded.length, 4, 'worker, edge, the data service and Temporal are recorded');
    const pgDir = join(dataDir, 'postgres');
    const pgPid = Number(readFileSync(join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    assert.ok(processAlive(pgPid));

    // Take one part down: health says 503 and names it.
    const temporalPid = recorded.find((r) => r.marker === 'start-dev')!.pid;
    process.kill(-temporalPid, 'SIGKILL');
    const degraded = await until(
      'GET /api/health answers 503',
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(8000) });
        return res.status === 503 ? ((await res.json()) as { down: string[]; parts: Record<string, { error?: string }> }) : undefined;
      },
      30_000,
    );
    assert.ok(degraded.down.includes('temporal'), `down names temporal: ${JSON.stringify(degraded.down)}`);
    assert.ok(!degraded.down.includes('database'));
    assert.ok(degraded.parts.temporal?.error);

    stack.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 90_000).unref())]);
    assert.equal(code, 0, `the stack exits cleanly on Ctrl-C: ${output.slice(-1500)}`);
    for (const { pid, marker } of recorded) assert.equal(processAlive(pid), false, `${marker} stopped`);
    assert.equal(processAlive(pgPid), false, 'PostgreSQL stopped');
    assert.equal(existsSync(join(dataDir, 'run', 'stack.json')), false);
    await assert.rejects(fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(2000) }), 'the edge no longer listens');
  });

  test('MARKCO_CLOUD=simulated: the emulator, a network, a namespace host per running instance and the reaper schedule; Ctrl-C leaves no network', async () => {
    const started = Date.now();
    const [port, pgPort, temporalPort, uiPort, flightPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const dataDir = join(h.state.runDir, 'stack-sim-data');
    const id = simulatedNetworkId(dataDir);
    simNetworkId = id;
    assert.match(id, /^sim[0-9a-f]{4}$/);
    assert.ok(`mkt${id}h254`.length <= 15, 'link names fit IFNAMSIZ');
    // What a killed earlier stack of this data directory would have left: its bridge and a host's namespace.
    await sh.run(['ip', 'link', 'add', `mkt${id}`, 'type', 'bridge']);
    await sh.run(['ip', 'netns', 'add', `mkt-${id}-70`]);
    const deploymentId = `main-command-${h.state.runId}`;

    let simOutput = '';
    simStack = spawn(join(repoRoot, 'scripts', 'start'), [], {
      cwd: repoRoot,
      env: {
        ...process.env,
        MARKCO_CLOUD: 'simulated',
        MARKCO_DEPLOYMENT_ID: deploymentId,
        MARKCO_DATA_DIR: dataDir,
        MARKCO_PORT: String(port),
        MARKCO_FLIGHT_PORT: String(flightPort),
        MARKCO_EMBEDDED_PG_PORT: String(pgPort),
        TEMPORAL_DEV_PORT: String(temporalPort),
        TEMPORAL_UI_PORT: String(uiPort),
        DATABASE_URL: '',
        TEMPORAL_ADDRESS: '',
        AWS_ENDPOINT_URL: '',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (c: Buffer) => {
      simOutput = (simOutput + c.toString()).slice(-40_000);
    };
    simStack.stdout!.on('data', keep);
    simStack.stderr!.on('data', keep);
    const exited = new Promise<number | null>((resolve) => simStack!.on('exit', (code) => resolve(code)));

    const health = await until(
      'GET /api/health answers 200',
      async () => {
        if (simStack!.exitCode !== null) throw new Error(`the stack exited: ${simOutput.slice(-3000)}`);
        const res = await fetch(`http://127.0.0.1:${port}/api/health`, { signal: AbortSignal.timeout(3000) });
        return res.status === 200 ? ((await res.json()) as { parts: Record<string, { status: string }> }) : undefined;
      },
      180_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${simOutput.slice(-3000)}`);
    });
    assert.ok(Object.values(health.parts).every((p) => p.status === 'ok'));
    await until('the stack logs that it is up', async () => (simOutput.includes('markco is up') ? true : undefined), 60_000);
    const upMs = Date.now() - started;

    const cloud = JSON.parse(readFileSync(join(dataDir, 'simulated', 'cloud.json'), 'utf8')) as {
      ec2Endpoint: string;
      region: string;
      network: { bridge: string; subnet: string; gateway: string };
      subnetId: string;
      amiIds: Record<string, string>;
      deploymentId: string;
    };
    assert.equal(cloud.network.bridge, `mkt${id}`);
    assert.match(cloud.ec2Endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(cloud.deploymentId, deploymentId);
    assert.deepEqual(await simulatedNetworkLeft(id), [`link mkt${id}`], 'the leftover namespace is gone, the bridge made anew');
    assert.match((await sh.run(['ip', '-4', '-o', 'addr', 'show', 'dev', `mkt${id}`])).stdout, new RegExp(`inet ${cloud.network.gateway.replace(/\./g, '\\.')}/24`));
    assert.match(simOutput, /MarkcoOperation%3D%22migrate%22/, 'the Temporal Web UI search for migrations is logged');
    assert.match(simOutput, /\/api\/runtimes\/<userId>\/migrate/, 'the migrate command is logged');

    // The worker was started against the emulator, with dummy credentials.
    const recorded = JSON.parse(readFileSync(join(dataDir, 'run', 'stack.json'), 'utf8')) as { pid: number; marker: string }[];
    assert.deepEqual(recorded.map((r) => r.marker.split('/').pop()).sort(), ['moto_server', 'server.ts', 'server.ts', 'start-dev', 'worker.ts']);
    const workerPid = recorded.find((r) => r.marker.endsWith('worker.ts'))!.pid;
    const workerEnv = new Map(readFileSync(`/proc/${workerPid}/environ`, 'utf8').split('\0').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const));
    assert.equal(workerEnv.get('MARKCO_CLOUD'), 'simulated');
    assert.equal(workerEnv.get('AWS_ENDPOINT_URL'), cloud.ec2Endpoint);
    assert.equal(workerEnv.get('MARKCO_EC2_SUBNET_ID'), cloud.subnetId);
    assert.equal(workerEnv.get('AWS_ACCESS_KEY_ID'), 'markco-simulated');
    // Runtimes on the simulated hosts reach the data service at this machine's side of their bridge.
    assert.equal(workerEnv.get('MARKCO_FLIGHT_HOSTS_HOST'), cloud.network.gateway);

    const connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}` });
    try {
      const client = new Client({ connection });
      const schedule = await client.schedule.getHandle(reaperScheduleId).describe();
      assert.equal(schedule.action.type, 'startWorkflow');
      assert.equal(schedule.action.type === 'startWorkflow' ? schedule.action.workflowType : '', 'reapInstances');
      assert.equal(schedule.action.type === 'startWorkflow' ? schedule.action.taskQueue : '', 'markco-control');
    } finally {
      await connection.close();
    }

    // An instance of this deployment, running in the emulator, boots as a namespace host at its private IP.
    const ec2 = createEc2Client({ region: cloud.region, endpoint: cloud.ec2Endpoint, snapshotBucket: 'unused' }, { accessKeyId: 'test', secretAccessKey: 'test' });
    let address: string;
    try {
      const launched = await ec2.send(
        new RunInstancesCommand({
          ImageId: cloud.amiIds.t3,
          InstanceType: 't3.small',
          SubnetId: cloud.subnetId,
          MinCount: 1,
          MaxCount: 1,
          TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: managedTag.key, Value: managedTag.value }, { Key: deploymentTag, Value: deploymentId }] }],
        }),
      );
      address = launched.Instances?.[0]?.PrivateIpAddress ?? '';
    } finally {
      ec2.destroy();
    }
    assert.ok(address.startsWith(`${cloud.network.subnet.split('.0/')[0]}.`), `launched on the simulated subnet: ${address}`);
    const netns = `mkt-${id}-${address.split('.')[3]}`;
    await until(`the instance at ${address} boots with sshd`, async () => ((await simulatedNetworkLeft(id)).includes(`netns ${netns}`) ? tcpOpen(address, 22) : undefined), 30_000);

    simStack.kill('SIGINT');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 90_000).unref())]);
    assert.equal(code, 0, `the stack exits cleanly on Ctrl-C: ${simOutput.slice(-2000)}`);
    assert.deepEqual(await simulatedNetworkLeft(id), [], 'no namespace or link of the simulated network is left');
    for (const { pid, marker } of recorded) assert.equal(processAlive(pid), false, `${marker} stopped`);
    assert.equal(existsSync(join(dataDir, 'simulated', 'cloud.json')), false);
    console.log(`simulated main command: up in ${upMs} ms, whole case ${Date.now() - started} ms`);
  });
});
