import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DescribeInstanceAttributeCommand, RunInstancesCommand, TerminateInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Worker } from '@temporalio/worker';
import { parseCloudInitUserData } from '../../activities/cloud-init.js';
import { deploymentTag, findHostInstances, hostKeyTag, type InstanceDescription } from '../../activities/ec2.js';
import type { HostShells } from '../../activities/host-shell.js';
import { createActivities, type Activities } from '../../activities/index.js';
import { connectionOf } from '../../lib/store.js';
import { LocalShell } from '../../activities/host-shell.js';
import type { BootWatcher } from '../../infra/dev/simulated-cloud.js';
import type { CloudConfig } from '../../lib/config.js';
import { ensureReaperSchedule, reaperScheduleId } from '../../lib/schedules.js';
import { ErrorType, stepQuery, workflowIds, type PreProvisionResult, type ReapInstancesResult } from '../../workflows/contracts/index.js';
import { reservationClaimedSignal } from '../../workflows/contracts/reservations.js';
import type { preProvisionHost, provisionHost } from '../../workflows/provision-host.js';
import type { reapInstances } from '../../workflows/reaper.js';
import { emulatorEc2, freshDatabase, registerBaseHost, startTestBootWatcher, startTestWorker, stopTestWorker, temporalClient, testCloud, type TestDatabase, testEnvironment, testShells, useHarness } from '../support/context.js';

/**
 * EC2 hosts end to end on real parts: the EC2 emulator, a boot watcher that boots each running instance
 * as a namespace host at its private IP with the key from its UserData, the real activities over ssh2,
 * PostgreSQL and the Temporal server.
 */
describe('EC2 hosts on the simulated cloud', () => {
  const h = useHarness();

  // A nested suite, so its after() (which destroys the booted hosts) runs before the harness of a file run alone is torn down.
  describe('provision, reserve, claim, release, reap', () => {
    let db: TestDatabase;
    let shells: HostShells;
    let client: Client;
    let closeClient: () => Promise<void>;
    let worker: Worker;
    let taskQueue: string;
    let running: Promise<void>;
    let watcher: BootWatcher;
    let cloud: CloudConfig;
    let ec2: EC2Client;
    let acts: Activities;
    const local = new LocalShell('test', { commandTimeoutMs: 30_000 });

    before(async () => {
      db = await freshDatabase(h.state);
      shells = testShells(h.state, { connectTimeoutMs: 3000 });
      ec2 = emulatorEc2(h.state);
      cloud = testCloud(h.state, { deploymentId: `ec2-hosts-${randomBytes(3).toString('hex')}` });
      watcher = startTestBootWatcher(h.state, { deploymentId: cloud.deploymentId });
      await registerBaseHost(db.store, shells);
      ({ client, close: closeClient } = await temporalClient(h.state));
      ({ worker, taskQueue } = await startTestWorker(h.state, { store: db.store, shells, cloud }));
      running = worker.run();
      acts = createActivities({ store: db.store, shells, ec2, environment: testEnvironment(h.state), cloud });
    });
    after(async () => {
      await watcher.stop();
      const stopped = await stopTestWorker(worker, running);
      await closeClient();
      await shells.closeAll();
      ec2.destroy();
      await db.drop();
      if (stopped) throw stopped;
    });

    const newUser = async () => (await db.store.users.ensureByEmail({ email: `ec2-${randomBytes(4).toString('hex')}@example.com` })).user.id;
    const start = <W extends typeof preProvisionHost | typeof provisionHost | typeof reapInstances>(type: string, workflowId: string, args: [Parameters<W>[0]]) =>
      client.workflow.start<(input: Parameters<W>[0]) => ReturnType<W>>(type, { taskQueue, workflowId, args, workflowExecutionTimeout: '3m' });
    const namespaces = async () => (await local.run(['ip', 'netns', 'list'])).stdout;
    const netnsOf = (address: string) => `mkt-${h.state.runId}-${address.split('.')[3]}`;
    const state = async (instanceId: string) => (await acts.describeInstance({ instanceId })).state;
    const eventually = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        if (Date.now() > deadline) assert.fail(`${what} did not happen within ${timeoutMs} ms`);
        await sleep(100);
      }
    };
    const hostRowReady = (userId: string) =>
      eventually('the reserved host becoming ready', async () => (await db.pool.query(`SELECT 1 FROM hosts WHERE reserved_for = $1 AND state = 'ready'`, [userId])).rowCount === 1, 60_000);
    const reservedHost = async (userId: string) => {
      const id = (await db.pool.query<{ id: string }>(`SELECT id FROM hosts WHERE reserved_for = $1`, [userId])).rows[0]!.id;
      return (await db.store.hosts.get(id))!;
    };

    test('pre-provision boots an instance as a namespace host at its .64+ address, pinned to the key from its UserData; a claim keeps it and ends the wait', async () => {
      const userId = await newUser();
      const started = Date.now();
      const handle = await start<typeof preProvisionHost>('preProvisionHost', workflowIds.preProvision(userId), [{ userId, ttlSeconds: 120 }]);
      await hostRowReady(userId);
      const readyMs = Date.now() - started;
      const host = await reservedHost(userId);
      assert.match(host.id, /^ec2-[0-9a-f]{12}$/);
      assert.equal(host.tier, 't3.small', 'the rung above base on the free plan');
      assert.equal(host.instanceType, 't3.small');
      assert.equal(host.lifecycle, 'on-demand');
      assert.equal(host.launchedBy, workflowIds.provisionHost(host.id));
      assert.equal(host.claimedBy, null);
      assert.ok(host.reservedUntil && host.reservedUntil.getTime() > Date.now() + 100_000, 'reserved for the TTL from when it became ready');
      const octet = Number(host.address?.split('.')[3]);
      assert.ok(host.address?.startsWith(`${h.state.network.prefix}.`) && octet >= 64, `the instance's private IP on the run's subnet, clear of .0/26 (got ${host.address})`);
      assert.match(host.facts.criuVersion ?? '', /^4\./, 'registerHost probed the host over ssh2');
      assert.equal(host.facts.ociRuntime, 'runc');

      const userData = await ec2.send(new DescribeInstanceAttributeCommand({ InstanceId: host.instanceId!, Attribute: 'userData' }));
      const boot = parseCloudInitUserData(Buffer.from(userData.UserData?.Value ?? '', 'base64').toString('utf8'));
      assert.ok(boot, 'the instance carries our cloud-config');
      assert.equal(host.hostKey, boot.hostKeyPublic, 'the pinned key is the one delivered in UserData');
      assert.equal(watcher.hostOf(host.instanceId!)?.hostKey.split(' ').slice(0, 2).join(' '), boot.hostKeyPublic.split(' ').slice(0, 2).join(' '), 'the booted host presents it');
      assert.deepEqual(boot.authorizedKeys, [(await local.run(['cat', `${h.state.sshKeyPath}.pub`])).stdout.trim()], "the workers' key is authorised");
      const instance = (await findHostInstances(ec2, host.id))[0]!;
      assert.equal(instance.tags['markco:managed'], 'true');
      assert.equal(instance.tags['markco:role'], 'runtime-host');
      assert.equal(instance.tags['markco:user'], userId);
      assert.equal(instance.tags['markco:tier'], 't3.small');
      assert.equal(instance.tags[deploymentTag], cloud.deploymentId);
      assert.equal(instance.tags[hostKeyTag], host.hostKey);
      assert.equal(instance.tags.Name, `markco-rt-t3.small-${host.id}`);
      assert.match(await namespaces(), new RegExp(`^${netnsOf(host.address!)}\\b`, 'm'));
      // host.provisioned is written after the row turns ready (when the provisionHost child returns).
      const eventTypes = async () => (await db.store.events.recent({ hostId: host.id })).map((e) => e.type).reverse();
      await eventually('host.provisioned to be recorded', async () => (await eventTypes()).includes('host.provisioned'), 30_000);
      assert.deepEqual(await eventTypes(), ['host.registered', 'host.provisioned']);
      await eventually('pre-provision holding the reservation', async () => (await handle.query(stepQuery)) === 'reserved');

      // What a migration does: claim, then tell pre-provision.
      const claimedBy = `user/${userId}/migrate`;
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.medium', claimedBy }), null, 'another instance type is not this reservation');
      const claimed = await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy });
      assert.deepEqual(claimed, { hostId: host.id, instanceId: host.instanceId, instanceType: 't3.small', address: host.address, lifecycle: 'on-demand' });
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy: 'someone-else' }), null, 'a claimed host is nobody else\'s');
      assert.deepEqual(await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy }), claimed, 'a retried claim gets the same host');
      const signalled = Date.now();
      await handle.signal(reservationClaimedSignal, { hostId: host.id, claimedBy });
      const result: PreProvisionResult = await handle.result();
      assert.deepEqual(result, { hostId: host.id, instanceId: host.instanceId, tier: 't3.small', outcome: 'claimed' });
      assert.ok(Date.now() - signalled < 5000, 'the signal ends the wait long before the TTL');
      assert.equal(await state(host.instanceId!), 'running', 'a claimed host is not terminated');
      assert.equal((await db.store.hosts.get(host.id))?.state, 'ready');
      assert.equal(await db.store.hosts.inUse(host.id), true, 'a fresh claim keeps it in use');

      // After a failed migration the saga terminates it: idempotent, logged once.
      assert.deepEqual(await acts.terminateHost({ hostId: host.id, reason: 'migration failed' }), { terminated: true });
      assert.deepEqual(await acts.terminateHost({ hostId: host.id, reason: 'migration failed' }), { terminated: true });
      assert.equal(await state(host.instanceId!), 'terminated');
      const row = await db.store.hosts.get(host.id);
      assert.equal(row?.state, 'terminated');
      assert.ok(row?.terminatedAt);
      assert.equal((await db.store.events.recent({ hostId: host.id })).filter((e) => e.type === 'host.terminated').length, 1);
      await eventually('the namespace host going away', async () => !(await namespaces()).includes(netnsOf(host.address!)));
      assert.deepEqual(await acts.terminateHost({ hostId: 'base', reason: 'never' }), { terminated: false }, 'the base host is never terminated');
      assert.equal((await db.store.hosts.get('base'))?.state, 'ready');
      console.log(`pre-provisioned host ready in ${readyMs} ms`);
    });

    test('an unclaimed reservation is terminated at its TTL and its namespace host is gone', async () => {
      const userId = await newUser();
      const handle = await start<typeof preProvisionHost>('preProvisionHost', workflowIds.preProvision(userId), [{ userId, tier: 't3.small', ttlSeconds: 3 }]);
      await hostRowReady(userId);
      const host = await reservedHost(userId);
      assert.match(await namespaces(), new RegExp(netnsOf(host.address!)));
      const result = await handle.result();
      assert.equal(result.outcome, 'released');
      assert.equal(result.hostId, host.id);
      assert.equal(await state(host.instanceId!), 'terminated');
      const row = await db.store.hosts.get(host.id);
      assert.equal(row?.state, 'terminated');
      assert.equal(row?.reservedUntil, null);
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy: 'too-late' }), null, 'a released host cannot be claimed');
      const events = (await db.store.events.recent({ hostId: host.id })).map((e) => e.type);
      assert.ok(events.includes('host.terminated') && events.includes('host.reservation-released'), events.join(', '));
      await eventually('the namespace host going away', async () => !(await namespaces()).includes(netnsOf(host.address!)));
    });

    test('a claim without the signal is still seen: the host is kept and the outcome is claimed', async () => {
      const userId = await newUser();
      const handle = await start<typeof preProvisionHost>('preProvisionHost', workflowIds.preProvision(userId), [{ userId, ttlSeconds: 30 }]);
      await hostRowReady(userId);
      const claimed = await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy: `user/${userId}/migrate` });
      assert.ok(claimed);
      assert.equal((await handle.result()).outcome, 'claimed');
      assert.equal(await state(claimed.instanceId), 'running');
      await acts.terminateHost({ hostId: claimed.hostId, reason: 'test done' });
    });

    test('a migration may claim a host that is still booting: it waits until the host is ready, or gives the claim back', async () => {
      const userId = await newUser();
      const handle = await start<typeof preProvisionHost>('preProvisionHost', workflowIds.preProvision(userId), [{ userId, ttlSeconds: 60 }]);
      await eventually('the launch being recorded', async () => (await db.pool.query(`SELECT 1 FROM hosts WHERE reserved_for = $1`, [userId])).rowCount === 1, 30_000);
      const claimedBy = `user/${userId}/migrate`;
      const claimed = await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy, waitMs: 60_000 });
      assert.ok(claimed, 'the booting host is claimed and waited for');
      assert.equal((await db.store.hosts.get(claimed.hostId))?.state, 'ready', 'it is handed over once ready');
      await handle.signal(reservationClaimedSignal, { hostId: claimed.hostId, claimedBy });
      assert.equal((await handle.result()).outcome, 'claimed');
      await acts.terminateHost({ hostId: claimed.hostId, reason: 'test done' });

      // A host that never comes up: the claim is given back when the wait is over, so the reservation can lapse.
      const stuck = `ec2-${randomBytes(6).toString('hex')}`;
      await acts.recordLaunch({ hostId: stuck, instanceId: `i-${randomBytes(8).toString('hex')}`, instanceType: 't3.small', lifecycle: 'on-demand', tier: 't3.small', userId, reserveForSeconds: 60, launchedBy: 'test', sshUser: 'root', hostKey: 'ssh-ed25519 AAAAstuck' });
      const waited = Date.now();
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy: 'impatient', waitMs: 1500 }), null);
      assert.ok(Date.now() - waited >= 1400, 'it waited');
      assert.equal((await db.store.hosts.get(stuck))?.claimedBy, null, 'the claim was given back');
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.small', claimedBy: 'impatient' }), null, 'without waitMs only ready hosts are claimed');
      await db.store.hosts.markTerminated(stuck);
    });

    test('launching twice with one host id gives one instance', async () => {
      const userId = await newUser();
      const hostId = `ec2-${randomBytes(6).toString('hex')}`;
      const input = { hostId, userId, tier: 't3.small', instanceType: 't3.small' };
      const first = await acts.launchHost(input);
      const second = await acts.launchHost(input);
      assert.equal(second.instanceId, first.instanceId);
      assert.equal(second.hostKey, first.hostKey, 'the retry pins the key the first attempt delivered');
      assert.equal(first.reused, false);
      assert.equal(second.reused, true);
      assert.equal((await findHostInstances(ec2, hostId)).length, 1);
      assert.deepEqual(await acts.terminateHost({ hostId, reason: 'test done' }), { terminated: true }, 'an instance without a row is found by its tag');
      assert.equal(await state(first.instanceId), 'terminated');
    });

    test('the reaper terminates an orphan and keeps a host with a live runtime or a reservation; it never touches an instance not tagged as ours', async () => {
      const userId = await newUser();
      const launch = async (label: string) => acts.launchHost({ hostId: `ec2-${label}-${randomBytes(3).toString('hex')}`, userId, tier: 't3.small', instanceType: 't3.small' });
      const record = (l: Awaited<ReturnType<typeof launch>>, reserveForSeconds: number) =>
        acts.recordLaunch({ ...l, tier: 't3.small', userId, reserveForSeconds, launchedBy: 'test', address: l.privateIp });
      const orphan = await launch('orphan');
      const withRuntime = await launch('runtime');
      await record(withRuntime, 0);
      await db.pool.query(`UPDATE hosts SET state = 'ready' WHERE id = $1`, [withRuntime.hostId]);
      await db.pool.query(
        `INSERT INTO runtimes (user_id, container_name, host_id, port, state, tier, memory_limit_bytes, cpu_limit, image)
         VALUES ($1, $2, $3, 20000, 'running', 't3.small', 1610612736, 2, 'localhost/markco-runtime:0.4.2')`,
        [userId, `rt-${userId}`, withRuntime.hostId],
      );
      const reserved = await launch('reserved');
      await record(reserved, 600);
      const lost = await launch('lost');
      await record(lost, 0);
      await db.pool.query(`UPDATE hosts SET state = 'ready' WHERE id = $1`, [lost.hostId]);
      await acts.terminateInstance({ instanceId: lost.instanceId });
      // Ours by every tag but markco:managed: someone else's machine.
      const foreignRun = await ec2.send(
        new RunInstancesCommand({
          ImageId: cloud.amiIds.t3,
          InstanceType: 't3.small',
          MinCount: 1,
          MaxCount: 1,
          SubnetId: cloud.subnetId,
          TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: deploymentTag, Value: cloud.deploymentId }, { Key: 'markco:host', Value: 'ec2-foreign' }] }],
        }),
      );
      const foreign = foreignRun.Instances![0]!.InstanceId!;
      await sleep(1100); // launch times are whole seconds: grace 0 must see them as past

      const dry: ReapInstancesResult = await (await start<typeof reapInstances>('reapInstances', `markco-reaper-dry-${randomBytes(3).toString('hex')}`, [{ graceSeconds: 0, dryRun: true }])).result();
      assert.deepEqual(dry.terminated.map((t) => t.instanceId), [orphan.instanceId]);
      assert.deepEqual(dry.rowsClosed, [lost.hostId]);
      assert.equal(await state(orphan.instanceId), 'running', 'a dry run changes nothing');

      const handle = await start<typeof reapInstances>('reapInstances', `markco-reaper-test-${randomBytes(3).toString('hex')}`, [{ graceSeconds: 0 }]);
      const result = await handle.result();
      assert.deepEqual(result.terminated, [{ instanceId: orphan.instanceId, hostId: null, reason: `no host row records it (tagged markco:host=${orphan.hostId})` }]);
      assert.equal(result.examined, 3, 'the orphan, the runtime host and the reserved host (the foreign one is not listed)');
      assert.equal(result.kept, 2);
      assert.deepEqual(result.rowsClosed, [lost.hostId]);
      assert.equal(await state(orphan.instanceId), 'terminated');
      assert.equal(await state(withRuntime.instanceId), 'running');
      assert.equal(await state(reserved.instanceId), 'running');
      assert.equal(await state(foreign), 'running', 'an instance without markco:managed is never touched');
      assert.equal((await db.store.hosts.get(lost.hostId))?.state, 'terminated');
      assert.equal((await db.pool.query(`SELECT count(*)::int AS n FROM events WHERE type = 'host.reaped' AND payload->>'instanceId' = $1`, [orphan.instanceId])).rows[0].n, 1);
      assert.equal(await handle.query(stepQuery), 'done');

      for (const l of [withRuntime, reserved]) await acts.terminateHost({ hostId: l.hostId, reason: 'test done' });
      await ec2.send(new TerminateInstancesCommand({ InstanceIds: [foreign] }));
      await db.pool.query(`UPDATE runtimes SET state = 'stopped' WHERE host_id = $1`, [withRuntime.hostId]);
    });

    test('the markco-reaper schedule runs reapInstances every 5 minutes, never overlapping, and can be triggered', async () => {
      try {
        assert.deepEqual(await ensureReaperSchedule(client, taskQueue), { created: true });
        assert.deepEqual(await ensureReaperSchedule(client, taskQueue), { created: false }, 'a second start finds it');
        const schedule = client.schedule.getHandle(reaperScheduleId);
        const described = await schedule.describe();
        assert.equal(described.spec.intervals?.[0]?.every, 300_000);
        assert.equal(described.policies.overlap, 'SKIP');
        assert.equal(described.action.workflowType, 'reapInstances');
        assert.equal(described.action.taskQueue, taskQueue);
        await schedule.trigger();
        let workflowId: string | undefined;
        await eventually('the triggered reaper run', async () => {
          const recent = (await schedule.describe()).info.recentActions;
          workflowId = recent[0]?.action.workflow.workflowId;
          return workflowId !== undefined;
        });
        assert.match(workflowId!, /^markco-reaper-/);
        const result: ReapInstancesResult = await client.workflow.getHandle(workflowId!).result();
        assert.deepEqual(result.terminated, [], 'with the default grace nothing young is reaped');
      } finally {
        await client.schedule.getHandle(reaperScheduleId).delete().catch(() => undefined);
      }
    });

    test('bad input to each workflow fails with InvalidInput naming the field', async () => {
      const failure = async (type: string, args: unknown[]) => {
        const handle = await client.workflow.start(type, { taskQueue, workflowId: `invalid-${type}-${randomBytes(3).toString('hex')}`, args, workflowExecutionTimeout: '1m' });
        const err = await handle.result().then(
          () => assert.fail(`${type} should fail`),
          (e: unknown) => e,
        );
        assert.ok(err instanceof WorkflowFailedError);
        // The workflow's own validation fails it directly; an activity's failure comes wrapped once.
        const cause = err.cause instanceof ApplicationFailure ? err.cause : err.cause?.cause;
        assert.ok(cause instanceof ApplicationFailure, `an ApplicationFailure (${String(err.cause)})`);
        assert.equal(cause.type, ErrorType.InvalidInput, cause.message);
        return cause.message;
      };
      const provision = await failure('provisionHost', [{ hostId: 'Bad Host', userId: 'bob', tier: '', instanceType: 't3', reserveForSeconds: -1, claimedBy: '' }]);
      for (const field of ['hostId', 'userId', 'tier', 'instanceType', 'reserveForSeconds', 'claimedBy']) assert.match(provision, new RegExp(`${field}: `));
      const pre = await failure('preProvisionHost', [{ userId: 'bob', tier: 'T3 large', ttlSeconds: 0 }]);
      for (const field of ['userId', 'tier', 'ttlSeconds']) assert.match(pre, new RegExp(`${field}: `));
      const reap = await failure('reapInstances', [{ graceSeconds: -5, dryRun: 'yes' }]);
      for (const field of ['graceSeconds', 'dryRun']) assert.match(reap, new RegExp(`${field}: `));
      const userId = await newUser();
      assert.match(await failure('preProvisionHost', [{ userId, tier: 'm7.huge' }]), /^tier: m7\.huge is not on the free plan's ladder/);
      assert.match(await failure('preProvisionHost', [{ userId, tier: 'base' }]), /^tier: base is the base server/);
      assert.equal((await db.pool.query(`SELECT count(*)::int AS n FROM hosts WHERE reserved_for = $1`, [userId])).rows[0].n, 0, 'nothing was launched');
    });

    test('provisionHost for a migration: the host is claimed from the start; on a bad AMI restores fail, and sessions know their scratch directory', async () => {
      watcher.failNextBoot('restore');
      const userId = await newUser();
      const hostId = `ec2-${randomBytes(6).toString('hex')}`;
      const claimedBy = `user/${userId}/migrate`;
      const handle = await start<typeof provisionHost>('provisionHost', workflowIds.provisionHost(hostId), [{ hostId, userId, tier: 't3.medium', instanceType: 't3.medium', reserveForSeconds: 60, claimedBy }]);
      const provisioned = await handle.result();
      assert.equal(provisioned.hostId, hostId);
      assert.equal(provisioned.instanceType, 't3.medium');
      const row = (await db.store.hosts.get(hostId))!;
      assert.equal(row.state, 'ready');
      assert.equal(row.claimedBy, claimedBy);
      assert.ok(row.claimedAt);
      assert.equal(row.address, provisioned.address);
      assert.equal(await acts.claimReservation({ userId, instanceType: 't3.medium', claimedBy: 'another-migration' }), null, "a migration's own host is nobody else's");
      const shell = shells.for(connectionOf(row));
      const restore = await shell.run(['podman', 'container', 'restore', '--import', '/nonexistent.tar', '--name', 'rt-x'], { okExitCodes: [125] });
      assert.equal(restore.exitCode, 125);
      assert.match(restore.stderr, /simulated bad AMI/);
      // The built images are on the host, as on an AMI (exit 1 would throw).
      await shell.run(['podman', 'image', 'exists', h.state.images.runtime]);
      const scratch = await shell.run(['sh', '-c', 'echo "$MARKCO_HOST_SCRATCH_DIR"']);
      assert.equal(scratch.stdout.trim(), watcher.hostOf(provisioned.instanceId)?.scratchDir);
      await acts.terminateHost({ hostId, reason: 'test done' });
    });

    test('a provision that fails terminates its instance and records the host terminated with the reason', async () => {
      watcher.failNextBoot('unsupported');
      const userId = await newUser();
      const hostId = `ec2-${randomBytes(6).toString('hex')}`;
      const handle = await start<typeof provisionHost>('provisionHost', workflowIds.provisionHost(hostId), [{ hostId, userId, tier: 't3.small', instanceType: 't3.small', reserveForSeconds: 60 }]);
      const err = await handle.result().then(
        () => assert.fail('provisionHost should fail'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof WorkflowFailedError);
      let cause: unknown = err.cause;
      while (cause && !(cause instanceof ApplicationFailure)) cause = (cause as { cause?: unknown }).cause;
      assert.ok(cause instanceof ApplicationFailure);
      assert.equal(cause.type, ErrorType.HostUnsupported);
      assert.equal(await handle.query(stepQuery), 'failed');
      const row = (await db.store.hosts.get(hostId))!;
      assert.equal(row.state, 'terminated');
      assert.match(row.error ?? '', /^provision failed at register: .*podman must use runc/);
      assert.equal(await state(row.instanceId!), 'terminated');
      const events = (await db.store.events.recent({ hostId })).map((e) => e.type).reverse();
      assert.deepEqual(events, ['host.register-failed', 'host.terminated', 'host.provision-failed']);
      await eventually('the namespace host going away', async () => !(await namespaces()).includes(netnsOf(row.address!)));
    });

    test('nothing launched by this file is left running', async () => {
      const left: InstanceDescription[] = (await acts.listManagedInstances({ deploymentId: cloud.deploymentId })).filter((i) => i.state !== 'terminated');
      assert.deepEqual(left.map((i) => `${i.instanceId} ${i.tags['markco:host']}`), []);
      await eventually('every booted namespace host going away', async () => watcher.booted().length === 0);
    });
  });
});
