import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runContainerArgs, runContainerCommand } from '../../activities/podman-commands.js';
import { LocalShell } from '../../activities/host-shell.js';
import { hasCapability } from '../../activities/hosts.js';
import {
  containerUserFor,
  editorContainerName,
  editorContainerSpec,
  planLimits,
  runtimeContainerName,
  runtimeContainerSpec,
} from '../../activities/user-containers.js';

const userA = '0b4f5a56-8a3e-4c59-9a53-2f7d2a0c0001';
const userB = '0b4f5a56-8a3e-4c59-9a53-2f7d2a0c0002';

function flagValues(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

test('container names use the whole user id, so users sharing a prefix never collide', () => {
  assert.notEqual(runtimeContainerName(userA), runtimeContainerName(userB));
  assert.equal(editorContainerName(userA), `ed-${userA}`);
  assert.throws(() => runtimeContainerName('../etc'), /invalid user id/);
  assert.throws(() => runtimeContainerName(userA.toUpperCase()), /invalid user id/);
});

test('the runtime gets its plan limits, one loopback port, the user files as home and no capabilities', () => {
  const args = runContainerArgs(
    runtimeContainerSpec({ userId: userA, image: 'img', homeDir: '/data/users/a', user: { uid: 1000, gid: 1000 }, limits: planLimits.pro, hostPort: 40001, publishAddress: '127.0.0.1' }),
  );
  assert.deepEqual(flagValues(args, '--memory'), [`${512 * 1024 * 1024}b`]);
  assert.deepEqual(flagValues(args, '--cpus'), ['1']);
  assert.deepEqual(flagValues(args, '--publish'), ['127.0.0.1:40001:8888']);
  assert.deepEqual(flagValues(args, '--volume'), ['/data/users/a:/home/user']);
  assert.deepEqual(flagValues(args, '--user'), ['1000:1000']);
  assert.deepEqual(flagValues(args, '--cap-drop'), ['all']);
  assert.ok(flagValues(args, '--security-opt').includes('no-new-privileges'));
  assert.deepEqual(planLimits.free, { memoryBytes: 256 * 1024 * 1024, cpus: 0.5 });
  assert.deepEqual(planLimits.team, { memoryBytes: 1024 * 1024 * 1024, cpus: 2 });
});

test('a runtime given the data service gets its URL in the environment and its token only on stdin', async () => {
  const token = 'mkd_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG';
  const spec = runtimeContainerSpec({
    userId: userA, image: 'img', homeDir: '/data/users/a', user: { uid: 1000, gid: 1000 }, limits: planLimits.free, hostPort: 40001, publishAddress: '127.0.0.1',
    data: { url: 'grpc://host.containers.internal:8815', token },
  });
  assert.throws(() => runContainerArgs(spec), /runContainerCommand/);
  const { argv, stdin } = runContainerCommand(spec);
  assert.ok(!argv.some((a) => a.includes(token)), 'the token is on no command line');
  assert.equal(stdin, `${token}\n`);
  const podman = argv.indexOf('podman');
  assert.deepEqual(flagValues(argv.slice(podman), '--env'), ['MARKCO_DATA_TOKEN', 'HOME=/home/user', 'MARKCO_DATA_URL=grpc://host.containers.internal:8815']);
  // The wrapper really hands the value to the command it runs (here a shell printing it, in podman's place).
  const shell = new LocalShell('base', { commandTimeoutMs: 10_000 });
  const printed = await shell.run([...argv.slice(0, podman), 'sh', '-c', 'printf %s "$MARKCO_DATA_TOKEN"'], { stdin });
  assert.equal(printed.stdout, token);
  assert.throws(() => runContainerCommand({ ...spec, secretEnv: { MARKCO_DATA_TOKEN: 'a\nb' } }), /line break/);
  assert.deepEqual(runContainerCommand({ name: 'a', image: 'x' }), { argv: runContainerArgs({ name: 'a', image: 'x' }) });
});

test('the editor is told where its runtime is and which base path it is served under', () => {
  const spec = editorContainerSpec({
    userId: userA,
    image: 'ed',
    homeDir: '/data/users/a',
    user: { uid: 1000, gid: 1000 },
    port: 20001,
    syncPort: 20002,
    runtimeHost: '127.0.0.1',
    runtimePort: 40001,
    profile: { id: userA, name: 'Ada', email: 'ada@example.test', plan: 'free' },
  });
  assert.equal(spec.network, 'host');
  assert.equal(spec.env?.BASE_PATH, `/u/${userA}/`);
  assert.equal(spec.env?.CLOUD_MODE, '1');
  assert.equal(spec.env?.RUNTIME_PORT, '40001');
  assert.equal(spec.env?.RUNTIME_HOST, '127.0.0.1');
  assert.equal(spec.env?.PORT, '20001');
  assert.equal(spec.env?.MARKCO_SYNC_PORT, '20002');
});

test('hosts whose root cannot read other users\' rlimits run user containers as uid 0 (CRIU needs it)', () => {
  const withCap = 'CapEff:\t000001ffffffffff\n';
  const withoutCap = 'Name:\tcat\nCapEff:\t000001fffeffffff\n';
  assert.equal(hasCapability(withCap, 24), true);
  assert.equal(hasCapability(withoutCap, 24), false);
  assert.equal(hasCapability('no such line', 24), false);
  assert.deepEqual(containerUserFor({ rootHasSysResource: true }), { uid: 1000, gid: 1000 });
  assert.deepEqual(containerUserFor({ rootHasSysResource: false }), { uid: 0, gid: 0 });
});
