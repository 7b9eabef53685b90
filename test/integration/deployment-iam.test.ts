import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { StopInstancesCommand, type EC2Client } from '@aws-sdk/client-ec2';
import { PutObjectCommand, GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { archiveKey, deleteArchive, deleteArchivesOfUser, downloadArchiveToHost, uploadArchiveFromHost, type ArchiveStoreOptions } from '../../activities/archive-store.js';
import { createEc2Activities } from '../../activities/ec2.js';
import { LocalShell } from '../../activities/host-shell.js';
import { resolveMotoServer } from '../../infra/dev/prerequisites.js';
import { stopChild, waitFor } from '../../infra/dev/processes.js';
import { createEc2Client, createS3Client } from '../../lib/aws.js';
import type { CloudConfig } from '../../lib/config.js';
import { defaultToolsDir, repoRoot } from '../../lib/paths.js';

/**
 * infra/iam/markco-worker-policy.json enforced by the EC2/S3 emulator: moto_server started with
 * INITIAL_NO_AUTH_ACTION_COUNT checks every request's signature against the IAM users made in it and
 * their policies. An IAM user holding exactly the workers' policy (rendered for this emulator) drives the
 * real EC2 and S3 activities: a host launch and termination, a multipart archive upload, download and
 * deletion work; actions outside the policy are refused.
 *
 * What moto does not enforce (moto 5.2, moto/iam/access_control.py): EC2 requests are authorised against
 * the resource "*" (no instance, subnet or image ARNs), so the EC2 statements' resources are widened to
 * "*" here and only their actions are enforced; conditions are not evaluated (StringLike is ignored and
 * StringEquals finds no request values), so the markco:managed/markco:deployment tag conditions on
 * RunInstances and TerminateInstances, ec2:CreateAction on CreateTags, ec2:Owner on images and s3:prefix
 * on ListBucket are not checked by this test. S3 resources (bucket and object ARNs) are enforced as written.
 */
const account = '123456789012';
const region = 'us-east-1';
const deploymentId = 'iam-test';
const bucket = `markco-iam-${randomBytes(3).toString('hex')}`;
const otherBucket = `${bucket}-other`;

function renderedPolicy(): string {
  const out = execFileSync(join(repoRoot, 'infra', 'iam', 'render-policy.sh'), [join(repoRoot, 'infra', 'iam', 'markco-worker-policy.json')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', AWS_REGION: region, AWS_ACCOUNT_ID: account, MARKCO_S3_BUCKET: bucket, MARKCO_DEPLOYMENT_ID: deploymentId },
    encoding: 'utf8',
  });
  const policy = JSON.parse(out) as { Statement: { Action: string | string[]; Resource: string | string[] }[] };
  for (const s of policy.Statement) {
    const actions = Array.isArray(s.Action) ? s.Action : [s.Action];
    if (actions.every((a) => a.startsWith('ec2:'))) s.Resource = '*';
  }
  return JSON.stringify(policy);
}

/** IAM in the emulator through boto3 (moto's own dependency; the project has no IAM client): an admin, then the worker's user. */
const bootstrapPy = `
import json, sys, boto3
endpoint, policy, bucket, other = sys.argv[1:5]
def client(svc, key=None):
    k = key or {"AccessKeyId": "bootstrap", "SecretAccessKey": "bootstrap"}
    return boto3.client(svc, endpoint_url=endpoint, region_name="${region}", aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
iam = client("iam")
# The only unauthenticated requests (INITIAL_NO_AUTH_ACTION_COUNT=3): an administrator and its key.
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
admin = iam.create_access_key(UserName="admin")["AccessKey"]
aiam = client("iam", admin)
aiam.create_user(UserName="markco-worker")
aiam.put_user_policy(UserName="markco-worker", PolicyName="markco-worker", PolicyDocument=policy)
worker = aiam.create_access_key(UserName="markco-worker")["AccessKey"]
s3 = client("s3", admin)
s3.create_bucket(Bucket=bucket)
s3.create_bucket(Bucket=other)
s3.put_object(Bucket=other, Key="archives/u/x.tar", Body=b"not yours")
ec2 = client("ec2", admin)
subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
print(json.dumps({"admin": {"accessKeyId": admin["AccessKeyId"], "secretAccessKey": admin["SecretAccessKey"]}, "worker": {"accessKeyId": worker["AccessKeyId"], "secretAccessKey": worker["SecretAccessKey"]}, "subnet": subnet, "ami": ami}))
`;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      srv.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

const denied = /AccessDenied|UnauthorizedOperation|not authorized|403/i;

describe('the workers IAM policy, enforced by the emulator', () => {
  let moto: ChildProcess;
  let endpoint = '';
  let ec2: EC2Client;
  let s3: S3Client;
  let cloud: CloudConfig;
  let work = '';
  const keys = { worker: { accessKeyId: '', secretAccessKey: '' }, subnet: '', ami: '' };

  before(async () => {
    const bin = resolveMotoServer({ toolsDir: defaultToolsDir });
    const port = await freePort();
    endpoint = `http://127.0.0.1:${port}`;
    moto = spawn(bin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'], detached: true, env: { ...process.env, INITIAL_NO_AUTH_ACTION_COUNT: '3' } });
    let errors = '';
    moto.stderr?.on('data', (c: Buffer) => (errors = (errors + c.toString()).slice(-4000)));
    await waitFor(
      `moto_server at ${endpoint}`,
      async () => {
        if (moto.exitCode !== null) throw new Error(`moto_server exited: ${errors}`);
        const res = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) });
        if (!res.ok) throw new Error(`status ${res.status}`);
      },
      { timeoutMs: 30_000, intervalMs: 200, fatal: () => moto.exitCode !== null },
    );
    const python = join(dirname(bin), 'python');
    Object.assign(keys, JSON.parse(execFileSync(python, ['-c', bootstrapPy, endpoint, renderedPolicy(), bucket, otherBucket], { encoding: 'utf8', timeout: 60_000 })));
    const aws = { region, endpoint, snapshotBucket: bucket };
    ec2 = createEc2Client(aws, keys.worker);
    s3 = createS3Client(aws, keys.worker);
    work = mkdtempSync(join(tmpdir(), 'markco-iam-'));
    const sshKeyPath = join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', sshKeyPath]);
    cloud = { provider: 'aws', amiIds: { t3: keys.ami }, subnetId: keys.subnet, securityGroupIds: [], sshUser: 'ubuntu', market: 'on-demand', deploymentId, reservationTtlSeconds: 600, reaperGraceSeconds: 900, sshKeyPath };
  });
  after(async () => {
    ec2?.destroy();
    s3?.destroy();
    if (moto) await stopChild(moto, 5000);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('a keyless request and a request by an unknown key are refused: enforcement is on', async () => {
    const stranger = createEc2Client({ region, endpoint, snapshotBucket: bucket }, { accessKeyId: 'AKIAUNKNOWN000000000', secretAccessKey: 'nope' });
    await assert.rejects(createEc2Activities({ ec2: stranger, cloud }).listManagedInstances({ deploymentId }), /InvalidClientTokenId|AuthFailure|security token|not valid|403/i);
    stranger.destroy();
  });

  test('the EC2 activities launch, list, describe and terminate a host with the policy; StopInstances is refused', async () => {
    const acts = createEc2Activities({ ec2, cloud });
    const hostId = `iam-${randomBytes(3).toString('hex')}`;
    const launched = await acts.launchHost({ hostId, userId: '00000000-0000-4000-8000-000000000001', tier: 't3.small', instanceType: 't3.small' });
    assert.match(launched.instanceId, /^i-/);
    const listed = await acts.listManagedInstances({ deploymentId });
    assert.ok(listed.some((i) => i.instanceId === launched.instanceId && i.tags['markco:managed'] === 'true' && i.tags['markco:deployment'] === deploymentId));
    const again = await acts.launchHost({ hostId, userId: '00000000-0000-4000-8000-000000000001', tier: 't3.small', instanceType: 't3.small' });
    assert.equal(again.reused, true);
    await assert.rejects(ec2.send(new StopInstancesCommand({ InstanceIds: [launched.instanceId] })), denied);
    const terminated = await acts.terminateInstance({ instanceId: launched.instanceId });
    assert.ok(['shutting-down', 'terminated'].includes(terminated.state));
  });

  test('the archive store uploads in parts, downloads, lists and deletes under archives/; anything outside is refused', async () => {
    const mib = 1024 * 1024;
    const store: ArchiveStoreOptions = { bucket, encryption: { kind: 'AES256' }, partBytes: 5 * mib };
    const data = randomBytes(6 * mib + 77);
    const path = join(work, 'archive.tar');
    writeFileSync(path, data);
    const shell = new LocalShell('base', { commandTimeoutMs: 60_000 });
    const userId = 'iam-user';
    const key = archiveKey(userId, 'idle-1');
    const stored = await uploadArchiveFromHost(s3, store, { from: shell, path, key });
    assert.equal(stored.parts, 2);
    const back = join(work, 'back.tar');
    await downloadArchiveToHost(s3, store, { key, sha256: stored.sha256, to: shell, path: back });
    assert.equal(createHash('sha256').update(readFileSync(back)).digest('hex'), stored.sha256);
    await deleteArchive(s3, store, key);
    await uploadArchiveFromHost(s3, store, { from: shell, path, key: archiveKey(userId, 'idle-2') });
    assert.equal(await deleteArchivesOfUser(s3, store, userId), 1);

    await assert.rejects(s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'elsewhere/x.tar', Body: 'x' })), denied, 'writing outside archives/');
    await assert.rejects(uploadArchiveFromHost(s3, { ...store, bucket: otherBucket }, { from: shell, path, key }), denied, 'another bucket');
    await assert.rejects(s3.send(new GetObjectCommand({ Bucket: otherBucket, Key: 'archives/u/x.tar' })), denied, 'reading another bucket');
    await assert.rejects(s3.send(new ListObjectsV2Command({ Bucket: otherBucket, Prefix: 'archives/' })), denied, 'listing another bucket');
  });
});
