import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { DescribeInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import type { Client } from '@temporalio/client';
import { request } from 'undici';
import type { HostShells } from '../../activities/host-shell.js';
import { migrationScratch } from '../../activities/migration.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import { createOperations, type Operations } from '../../lib/operations.js';
import { defaultTierLadder } from '../../lib/tiers.js';
import type { MigrateRuntimeResult } from '../../workflows/contracts/elastic.js';
import { emulatorEc2, freshDatabase, registerBaseHost, startTestBootWatcher, temporalClient, testEnvironment, testShells, useHarness, type TestDatabase } from '../support/context.js';
import { hostEnvShell, podmanOn } from '../support/netns.js';
import { startWorkerProcess, testWorkerEnv, type WorkerProcess } from '../support/worker-process.js';

/**
 * The worker dies (SIGKILL of its process group) while the checkpoint archive streams from the base
 * server to a fresh EC2 host, and a new worker process takes over: the migration completes once, on one
 * instance, with one copy of the runtime, the kernel's state intact, and nothing of the killed attempt
 * still running.
 */
describe('migration across a worker crash', () => {
  const h = useHarness();
  const MiB = 1024 * 1024;

  describe('the worker is killed during the transfer and restarted', () => {
    let db: TestDatabase;
    let shells: HostShells;
    let watcher: BootWatcher;
    let ec2: EC2Client;
    let temporal: { client: Client; close: () => Promise<void> };
    let ops: Operations;
    let deploymentId: string;
    let workerEnv: Record<string, string>;
    const workers: WorkerProcess[] = [];
    let userId: string;
    let migrationId = '';

    const logDir = () => join(h.state.runDir, 'migration-crash');
    const startWorker = async (name: string) => {
      const w = startWorkerProcess(workerEnv, { logDir: logDir(), name });
      workers.push(w);
      await w.ready;
      return w;
    };
    const runtimeRow = async () => (await db.store.runtimes.live(userId))!;
    const execute = async (code: string) => {
      const rt = await runtimeRow();
      let res;
      try {
        res = await request(`http://${rt.address}:${rt.port}/mrp/v1/execute`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', connection: 'close' },
          body: JSON.stringify({ code }),
          headersTimeout: 120_000,
          bodyTimeout: 120_000,
        });
      } catch (err) {
        // Say what the container looks like: gone, restarted, killed for memory.
        const host = rt.hostId === 'base' ? undefined : watcher.booted().find((b) => b.address === rt.address);
        const args = ['inspect', '--format', '{{.State.Status}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} restarts={{.RestartCount}}', rt.containerName];
        const state = await (host ? podmanOn(host, args, { okExitCodes: [0, 125] }) : hostEnvShell(h.state.baseHost).run(['podman', ...args], { okExitCodes: [0, 125] })).then(
          (r) => r.stdout.trim() || r.stderr.trim(),
          (e: Error) => e.message,
        );
        throw new Error(`MRP at ${rt.address}:${rt.port} (${rt.hostId}) failed running ${JSON.stringify(code)}: ${(err as Error).message}; container: ${state}`);
      }
      const text = await res.body.text();
      assert.equal(res.statusCode, 200, text);
      return JSON.parse(text) as { result: string | null; executionCount: number };
    };
    const containerNames = async (out: Promise<{ stdout: string }>) => (await out).stdout.split('\n').filter((n) => n === `rt-${userId}`).length;
    /** Where `rt-<id>` exists: the base server and every booted host. */
    const runtimeCopies = async () => {
      const where: Record<string, number> = { base: await containerNames(hostEnvShell(h.state.baseHost).run(['podman', 'ps', '--all', '--format', '{{.Names}}'])) };
      for (const host of watcher.booted()) {
        try {
          where[host.address] = await containerNames(podmanOn(host, ['ps', '--all', '--format', '{{.Names}}']));
        } catch (err) {
          // A host whose instance was just terminated is being torn down under the command: it holds nothing.
          if (watcher.booted().some((b) => b.hostId === host.hostId)) throw err;
        }
      }
      return where;
    };
    const liveInstancesOfUser = async () => {
      const out = await ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'tag:markco:user', Values: [userId] }, { Name: 'tag:markco:deployment', Values: [deploymentId] }] }));
      return (out.Reservations ?? [])
        .flatMap((r) => r.Instances ?? [])
        .map((i) => ({ id: i.InstanceId!, state: i.State?.Name ?? '', type: i.InstanceType ?? '', address: i.PrivateIpAddress ?? '' }))
        .filter((i) => !['shutting-down', 'terminated'].includes(i.state));
    };
    /** Processes whose command line names the migration (podman checkpoint, cat of the FIFO, the receiving sh). */
    const processesOf = (migrationId: string) => {
      const r = spawnSync('pgrep', ['-af', migrationId], { encoding: 'utf8' });
      return r.stdout.split('\n').filter((l) => l.trim() !== '');
    };
    /** What a process waits on (its threads' wchan) and which of its files name the migration, with their access mode. */
    const describeProcess = (line: string, migrationId: string) => {
      const pid = line.split(' ')[0]!;
      const read = (f: string) => {
        try {
          return readFileSync(f, 'utf8');
        } catch {
          return '';
        }
      };
      const list = (d: string) => {
        try {
          return readdirSync(d);
        } catch {
          return [];
        }
      };
      const waits = [...new Set(list(`/proc/${pid}/task`).map((t) => read(`/proc/${pid}/task/${t}/wchan`) || '?'))].join(',');
      const modes = ['O_RDONLY', 'O_WRONLY', 'O_RDWR'];
      const files = list(`/proc/${pid}/fd`).flatMap((fd) => {
        let target = '';
        try {
          target = readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return [];
        }
        if (!target.includes(migrationId)) return [];
        const flags = Number.parseInt(/flags:\s*(\d+)/.exec(read(`/proc/${pid}/fdinfo/${fd}`))?.[1] ?? '0', 8);
        return [`fd ${fd} -> ${target} ${modes[flags & 3] ?? flags}`];
      });
      return `pid ${pid} [${line.slice(pid.length + 1, pid.length + 60)}...] waits in ${waits}${files.length ? `; ${files.join('; ')}` : ''}`;
    };
    /** The migration workflow's activities as its history records them: attempts, failures, time-outs. */
    const historyOf = async (workflowId: string) => {
      const history = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
      const names = new Map<string, string>();
      const attempts: Record<string, number[]> = {};
      const lines: string[] = [];
      for (const e of history.events ?? []) {
        const id = String(e.eventId);
        const at = e.eventTime?.seconds ? new Date(Number(e.eventTime.seconds) * 1000).toISOString().slice(11, 19) : '';
        const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
        if (name) names.set(id, name);
        const started = e.activityTaskStartedEventAttributes;
        const ended = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes;
        if (started) {
          const n = names.get(String(started.scheduledEventId)) ?? '?';
          (attempts[n] ??= []).push(started.attempt ?? 0);
          lines.push(`${at} started ${n} attempt ${started.attempt}${started.lastFailure ? ` (previous attempt: ${started.lastFailure.message})` : ''}`);
        } else if (ended) {
          const n = names.get(String(ended.scheduledEventId)) ?? '?';
          const failure = e.activityTaskFailedEventAttributes?.failure ?? e.activityTaskTimedOutEventAttributes?.failure;
          lines.push(`${at} ${e.activityTaskCompletedEventAttributes ? 'completed' : e.activityTaskFailedEventAttributes ? 'failed' : 'timed out'} ${n}${failure ? `: ${failure.message}${failure.cause?.message ? ` / ${failure.cause.message}` : ''}` : ''}`);
        }
      }
      const described = await temporal.client.workflow.getHandle(workflowId).describe();
      for (const a of described.raw.pendingActivities ?? []) {
        lines.push(`pending ${a.activityType?.name} attempt ${a.attempt}${a.lastFailure ? ` (last failure: ${a.lastFailure.message})` : ''}`);
      }
      return { attempts, lines };
    };

    before(async () => {
      db = await freshDatabase(h.state);
      shells = testShells(h.state);
      await registerBaseHost(db.store, shells);
      deploymentId = `crash-${randomBytes(3).toString('hex')}`;
      watcher = startTestBootWatcher(h.state, { deploymentId });
      ec2 = emulatorEc2(h.state);
      const taskQueue = `test-crash-${randomBytes(4).toString('hex')}`;
      workerEnv = testWorkerEnv(h.state, { databaseUrl: db.url, taskQueue, deploymentId, dataDir: join(logDir(), 'data') });
      await startWorker('worker-1');
      temporal = await temporalClient(h.state);
      ops = createOperations(temporal.client, taskQueue);
      userId = (await db.store.users.ensureByEmail({ email: 'crash@example.test', name: 'Crash' })).user.id;
      // pro: a 512 MiB base tier holds the 200 MiB the transfer is made of.
      await (await ops.startLogin({ userId, plan: 'pro' })).handle.result();
    });

    after(async () => {
      for (const w of workers) {
        w.killGroup('SIGKILL');
        await w.exited;
      }
      // A dump the killed worker left blocked (see the test) holds the container's lock: end it, by pid, first.
      if (migrationId) {
        for (const line of processesOf(migrationId)) {
          try {
            process.kill(Number(line.split(' ')[0]), 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
      }
      await hostEnvShell(h.state.baseHost)
        .run(['podman', 'rm', '--force', '--time', '0', `rt-${userId}`, `ed-${userId}`], { okExitCodes: [0, 1], timeoutMs: 60_000 })
        .catch(() => undefined);
      await watcher?.stop();
      ec2?.destroy();
      await temporal?.close();
      await shells?.closeAll();
      await db?.drop();
    });

    test('the migration completes once, with no duplicate container or instance and no process of the killed attempt left', async (t) => {
      await execute('x = 42');
      // 200 MiB of random bytes behind a short repr: the runtime renders new variables after each
      // execution, and the repr of a plain bytes object that size would not fit in the 512 MiB limit.
      await execute(
        ['import os', 'class Blob:', '    def __init__(self, n):', '        self._data = os.urandom(n)', '    def __repr__(self):', "        return f'<Blob {len(self._data)}>'", '    def __len__(self):', '        return len(self._data)', 'b = Blob(200 << 20)'].join('\n'),
      );
      const onBase = await execute('x');
      assert.equal(onBase.result, '42');
      assert.equal((await runtimeRow()).hostId, 'base');

      const started = Date.now();
      const { handle } = await ops.startMigration(userId, { target: 't3.small' });
      const outcome = handle.result().then(
        (r) => ({ ok: true as const, result: r as MigrateRuntimeResult }),
        (err: unknown) => ({ ok: false as const, err }),
      );

      // Wait for the archive to be streaming into the target (its receiver is feeding podman), then kill
      // the worker.
      const scratch = join(testEnvironment(h.state).usersDir, '..', 'scratch');
      let seenStreaming = 0;
      const deadline = Date.now() + 240_000;
      for (;;) {
        assert.ok(Date.now() < deadline, 'the migration never reached the transfer within 4 minutes');
        const row = (await db.pool.query(`SELECT id, step, status, error FROM migrations WHERE user_id = $1`, [userId])).rows[0] as { id: string; step: string; status: string; error: string | null } | undefined;
        if (row) {
          migrationId = row.id;
          assert.ok(['running', 'pending'].includes(row.status), `the migration ended before the crash: ${JSON.stringify(row)}`);
          assert.ok([null, 'begin', 'target', 'prepare', 'home', 'checkpoint'].includes(row.step), `the transfer finished before it could be interrupted (step ${row.step}): make the runtime's memory bigger`);
          if (row.step === 'checkpoint') {
            const { targetDir } = migrationScratch(scratch, migrationId);
            const streaming = spawnSync('pgrep', ['-f', `tee -p ${targetDir}/hash.fifo`]).status === 0;
            seenStreaming = streaming ? seenStreaming + 1 : 0;
            if (seenStreaming >= 2) break;
          }
        }
        await sleep(50);
      }
      const first = workers[0]!;
      first.killGroup('SIGKILL');
      const killedAt = Date.now();
      assert.deepEqual(await first.exited, { code: null, signal: 'SIGKILL' });
      t.diagnostic(`killed worker-1 after ${killedAt - started} ms, with the archive streaming into the target`);
      await sleep(1000);
      const survivors = processesOf(migrationId);
      t.diagnostic(`1 s after the kill, processes naming the migration: ${survivors.length === 0 ? 'none' : survivors.map((l) => describeProcess(l, migrationId)).join(' | ')}`);
      const workflowId = (await db.pool.query(`SELECT workflow_id FROM migrations WHERE id = $1`, [migrationId])).rows[0].workflow_id as string;

      await startWorker('worker-2');
      const settled = await Promise.race([outcome, sleep(240_000).then(() => ({ ok: false as const, err: new Error('the migration did not finish within 4 minutes of the restart') }))]);
      if (!settled.ok) {
        const rows = await db.pool.query(`SELECT id, status, step, error FROM migrations WHERE user_id = $1`, [userId]);
        const runtime = await runtimeRow();
        const left = processesOf(migrationId).map((l) => describeProcess(l, migrationId));
        const { lines } = await historyOf(workflowId);
        assert.fail(
          [
            `the migration did not complete after the crash: ${(settled.err as Error).message}`,
            `migrations: ${JSON.stringify(rows.rows)}`,
            `runtime: ${JSON.stringify({ hostId: runtime.hostId, state: runtime.state })}`,
            `processes naming the migration: ${left.length ? left.join(' | ') : 'none'}`,
            `history of ${workflowId}:`,
            ...lines.map((l) => `  ${l}`),
          ].join('\n'),
        );
      }
      const result = settled.result;
      t.diagnostic(`the migration completed ${Date.now() - killedAt} ms after the kill (${Date.now() - started} ms in all)`);

      // The killed attempt of the transfer was retried by the new worker, not restarted as a new migration.
      const { attempts } = await historyOf(workflowId);
      t.diagnostic(`activity attempts: ${JSON.stringify(attempts)}`);
      assert.deepEqual(attempts.checkpointIntoTarget, [2], 'one checkpointIntoTarget, whose second attempt (on the new worker) succeeded');

      // Completed once.
      const migrations = await db.pool.query(`SELECT id, status, step, error, archive_bytes FROM migrations WHERE user_id = $1`, [userId]);
      assert.deepEqual(migrations.rows.map((r) => [r.id, r.status, r.step, r.error]), [[migrationId, 'completed', 'done', null]], 'exactly one migration, completed');
      assert.equal(result.migrationId, migrationId);
      assert.ok(Number(migrations.rows[0].archive_bytes) > 200 * MiB, `the archive holds the 200 MiB blob (${migrations.rows[0].archive_bytes} bytes)`);

      // The user runs on one EC2 host, with the kernel's state.
      const rt = await runtimeRow();
      const target = (await db.store.hosts.get(rt.hostId!))!;
      assert.deepEqual([target.kind, rt.state, rt.tier, rt.hostId], ['ec2', 'running', 't3.small', result.targetHostId]);
      assert.equal(rt.memoryLimitBytes, defaultTierLadder.pro.find((x) => x.name === 't3.small')!.memoryBytes);
      const onTarget = await execute('x');
      assert.equal(onTarget.result, '42', 'x survived');
      assert.ok(onTarget.executionCount > onBase.executionCount, 'the same kernel: its execution count went on');
      assert.equal((await execute('len(b)')).result, String(200 * MiB), 'the 200 MiB moved too');

      // One copy of the runtime, one instance, one EC2 host.
      const copies = await runtimeCopies();
      assert.deepEqual(
        Object.entries(copies).filter(([, n]) => n > 0),
        [[target.address, 1]],
        `exactly one rt-${userId}, on the target: ${JSON.stringify(copies)}`,
      );
      const instances = await liveInstancesOfUser();
      assert.deepEqual(instances.map((i) => [i.id, i.type]), [[target.instanceId, 't3.small']], 'exactly one instance of the user runs');
      const hosts = await db.pool.query(`SELECT id FROM hosts WHERE kind = 'ec2' AND state <> 'terminated'`);
      assert.deepEqual(hosts.rows.map((r) => r.id), [target.id], 'one EC2 host recorded');

      // Nothing of either attempt is left: no dump, no reader, no receiver, no archive.
      assert.deepEqual(processesOf(migrationId), [], 'no process of the migration is left');
      const files = migrationScratch(scratch, migrationId);
      for (const f of [files.archive, `${files.archive}.partial`, files.fifo]) assert.ok(!existsSync(f), `${f} was removed`);
    });
  });
});
