import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  dataForwardArgs,
  parseStorageRoots,
  relocateStoragePaths,
  setCheckpointMemoryLimit,
  checkpointArgs,
  compareVersions,
  parseCheckpointStats,
  parseCriuVersion,
  parsePodmanVersion,
  parseRestoreStats,
  removeContainerArgs,
  restoreArgs,
  runContainerArgs,
  updateMemoryArgs,
} from '../../activities/podman-commands.js';

// Output captured from podman 4.3.1 + runc + criu 4.2.1 on this project's machines.
const checkpointOutput = `{
    "podman_checkpoint_duration": 360369,
    "container_statistics": [
        {
            "Id": "c25748ab83baf62dece2e81bc743828a42d1f47be2bc295db27ccaac411e2c41",
            "RawInput": "counter",
            "runtime_checkpoint_duration": 317714,
            "criu_statistics": {
                "freezing_time": 100868,
                "frozen_time": 145267,
                "memdump_time": 6229,
                "memwrite_time": 3993,
                "pages_scanned": 2430,
                "pages_written": 2329
            }
        }
    ]
}`;
const restoreOutput = `{
    "podman_restore_duration": 323738,
    "container_statistics": [
        {
            "Id": "9125b4102bb1c6933d479c36de42f1bcea94c8d9fccd64989025f5e4dad784b5",
            "RawInput": "",
            "runtime_restore_duration": 193173,
            "criu_statistics": { "forking_time": 3, "restore_time": 103678, "pages_restored": 2317 }
        }
    ]
}`;

const flagValue = (args: string[], flag: string) => args[args.indexOf(flag) + 1];

test('containers run on runc with ulimits root may set, and the memory limit also caps swap', () => {
  const args = runContainerArgs({ name: 'rt-1', image: 'localhost/mrmd-runtime:latest', memoryBytes: 268435456, cpus: 0.5, ports: [{ hostPort: 40001, containerPort: 8888 }] });
  assert.deepEqual(args.slice(0, 3), ['podman', 'run', '--detach']);
  assert.equal(flagValue(args, '--runtime'), 'runc');
  assert.deepEqual(args.filter((_, i) => args[i - 1] === '--ulimit'), ['nofile=1024:1024', 'nproc=1024:1024']);
  assert.equal(flagValue(args, '--memory'), '268435456b');
  assert.equal(flagValue(args, '--memory-swap'), '268435456b');
  assert.equal(flagValue(args, '--cpus'), '0.5');
  assert.equal(flagValue(args, '--publish'), '40001:8888');
  assert.equal(args.at(-1), 'localhost/mrmd-runtime:latest');
});

test('run passes env, volumes, labels and the command after the image', () => {
  const args = runContainerArgs({
    name: 'ed-1',
    image: 'img',
    env: { CLOUD_MODE: '1', BASE_PATH: '/u/abc/' },
    volumes: [{ hostPath: '/data/users/abc', containerPath: '/home/user', options: ['U'] }],
    labels: { 'markco.user': 'abc' },
    apparmorUnconfined: true,
    command: ['node', 'server.js', '--port', '1'],
  });
  assert.ok(args.join(' ').includes('--env CLOUD_MODE=1 --env BASE_PATH=/u/abc/'));
  assert.equal(flagValue(args, '--volume'), '/data/users/abc:/home/user:U');
  assert.equal(flagValue(args, '--label'), 'markco.user=abc');
  assert.equal(flagValue(args, '--security-opt'), 'apparmor=unconfined');
  assert.deepEqual(args.slice(args.indexOf('img')), ['img', 'node', 'server.js', '--port', '1']);
});

test('names and values that could smuggle flags or shell syntax are refused', () => {
  assert.throws(() => runContainerArgs({ name: '--privileged', image: 'x' }), /invalid container name/);
  assert.throws(() => runContainerArgs({ name: 'a;rm -rf /', image: 'x' }), /invalid container name/);
  assert.throws(() => runContainerArgs({ name: 'a', image: 'x', env: { 'A B': '1' } }), /invalid environment variable name/);
  assert.throws(() => runContainerArgs({ name: 'a', image: 'x', ports: [{ hostPort: 0, containerPort: 1 }] }), /invalid port/);
  assert.throws(() => runContainerArgs({ name: 'a', image: 'x', memoryBytes: 1024 }), /at least 6 MiB/);
  assert.throws(() => runContainerArgs({ name: 'a', image: 'x', volumes: [{ hostPath: 'rel', containerPath: '/x' }] }), /absolute/);
  assert.throws(() => checkpointArgs({ container: 'a', exportPath: 'relative.tar', leaveRunning: true }), /absolute/);
  assert.throws(() => dataForwardArgs('10.0.0.1; reboot', 8815), /IPv4/);
  assert.throws(() => dataForwardArgs('10.0.0.1', 0), /invalid port/);
  assert.deepEqual(dataForwardArgs('10.0.0.1', 8815).slice(-2), ['10.0.0.1', '8815']);
});

test('every checkpoint prints CRIU statistics; --leave-running and compression are explicit', () => {
  const keep = checkpointArgs({ container: 'rt-1', exportPath: '/var/lib/markco/ck/rt-1.tar', leaveRunning: true });
  assert.deepEqual(keep, ['podman', 'container', 'checkpoint', '--print-stats', '--export', '/var/lib/markco/ck/rt-1.tar', '--compress', 'none', '--leave-running', 'rt-1']);
  const stop = checkpointArgs({ container: 'rt-1', exportPath: '/x.tar', leaveRunning: false, compress: 'zstd', tcpEstablished: true, fileLocks: true, ignoreVolumes: true });
  assert.ok(!stop.includes('--leave-running'));
  assert.equal(flagValue(stop, '--compress'), 'zstd');
  for (const f of ['--tcp-established', '--file-locks', '--ignore-volumes']) assert.ok(stop.includes(f), f);
  assert.equal(stop.at(-1), 'rt-1');
});

test('restore names the container, publishes ports and prints statistics', () => {
  assert.throws(() => restoreArgs({ importPath: '/x.tar', name: 'copy', tcpEstablished: true }), /cannot keep established TCP/);
  assert.ok(!restoreArgs({ importPath: '/x.tar', tcpEstablished: true }).includes('--name'));
  const args = restoreArgs({ importPath: '/x.tar', name: 'rt-1', ports: [{ hostPort: 40001, containerPort: 8888, hostIp: '10.0.0.5' }], ignoreStaticIp: true, ignoreStaticMac: true });
  assert.deepEqual(args.slice(0, 8), ['podman', 'container', 'restore', '--print-stats', '--import', '/x.tar', '--name', 'rt-1']);
  assert.equal(flagValue(args, '--publish'), '10.0.0.5:40001:8888');
  assert.ok(args.includes('--ignore-static-ip') && args.includes('--ignore-static-mac'));
});

test('remove is idempotent and immediate; update raises the limit in force', () => {
  assert.deepEqual(removeContainerArgs('rt-1'), ['podman', 'rm', '--force', '--ignore', '--time', '0', 'rt-1']);
  assert.deepEqual(updateMemoryArgs('rt-1', 536870912), ['podman', 'update', '--memory', '536870912b', '--memory-swap', '536870912b', 'rt-1']);
});

test('CRIU statistics are read in milliseconds; frozen time is the downtime', () => {
  const s = parseCheckpointStats(checkpointOutput);
  assert.equal(s.frozenMs, 145.3);
  assert.equal(s.freezingMs, 100.9);
  assert.equal(s.podmanMs, 360.4);
  assert.equal(s.runtimeMs, 317.7);
  assert.equal(s.memdumpMs, 6.2);
  assert.equal(s.pagesWritten, 2329);
  const r = parseRestoreStats(restoreOutput);
  assert.equal(r.restoreMs, 103.7);
  assert.equal(r.podmanMs, 323.7);
  assert.equal(r.pagesRestored, 2317);
  assert.throws(() => parseCheckpointStats('rt-1\n'), /no statistics/);
});

test('versions are read and compared numerically', () => {
  assert.equal(parseCriuVersion('Version: 4.2.1\nGitID: v4.2.1\n'), '4.2.1');
  assert.throws(() => parseCriuVersion('criu: command not found'), /unrecognised/);
  assert.equal(parsePodmanVersion('{"Client":{"APIVersion":"4.3.1","Version":"4.3.1"}}'), '4.3.1');
  assert.ok(compareVersions('4.10', '4.2') > 0);
  assert.ok(compareVersions('4.2', '4.2.0') === 0);
  assert.ok(compareVersions('3.17.1', '4.2') < 0);
});

test("a checkpoint's storage paths move to the target's roots, and stay when the roots are the same", () => {
  const from = { graphRoot: '/var/lib/containers/storage', runRoot: '/run/containers/storage' };
  const to = { graphRoot: '/srv/b/storage', runRoot: '/srv/b/run' };
  const dump = JSON.stringify({ conmonPidFile: '/run/containers/storage/overlay-containers/abc/userdata/conmon.pid', rootfs: '/var/lib/containers/storage', other: '/run/containers/storagex/keep' });
  const moved = JSON.parse(relocateStoragePaths(dump, from, to)) as Record<string, string>;
  assert.deepEqual(moved, { conmonPidFile: '/srv/b/run/overlay-containers/abc/userdata/conmon.pid', rootfs: '/srv/b/storage', other: '/run/containers/storagex/keep' });
  assert.equal(relocateStoragePaths(dump, from, from), dump);
  assert.deepEqual(parseStorageRoots('/var/lib/containers/storage /run/containers/storage\n'), from);
  assert.throws(() => parseStorageRoots('oops'), /unexpected podman storage roots/);
});

test("a checkpoint's spec gets the target tier's memory limit, leaving everything else as podman wrote it", () => {
  const spec = '{"linux":{"resources":{"pids":{"limit":1024},"memory":{"limit":268435456,"swap":268435456,"swappiness":0}}},"big":18446744073709551615}';
  const out = setCheckpointMemoryLimit(spec, 1_073_741_824);
  assert.equal(out, '{"linux":{"resources":{"pids":{"limit":1024},"memory":{"limit":1073741824,"swap":1073741824,"swappiness":0}}},"big":18446744073709551615}');
  const config = '{"spec":{"linux":{"resources":{"devices":[]}}}}';
  assert.deepEqual(JSON.parse(setCheckpointMemoryLimit(config, 512)).spec.linux.resources.memory, { limit: 512, swap: 512 });
  assert.throws(() => setCheckpointMemoryLimit(spec, 0), /invalid memory limit/);
});
