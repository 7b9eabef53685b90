import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';

/**
 * infra/iam/markco-worker-policy.json against the code: every AWS SDK command the production code sends
 * maps to an action the policy allows, and the policy allows no action the code does not use. The
 * scan covers what runs in production (activities, lib, workers, api, infra/systemd); the dev stack's
 * simulated cloud (infra/dev) and the tests talk only to the emulator.
 */
const productionDirs = ['activities', 'lib', 'workers', 'api', 'infra/systemd'];

/** SDK command -> IAM action (AWS's "Actions defined by Amazon EC2 / Amazon S3" tables). */
const actionOf: Record<string, string> = {
  DescribeInstancesCommand: 'ec2:DescribeInstances',
  RunInstancesCommand: 'ec2:RunInstances',
  TerminateInstancesCommand: 'ec2:TerminateInstances',
  CreateMultipartUploadCommand: 's3:PutObject',
  UploadPartCommand: 's3:PutObject',
  CompleteMultipartUploadCommand: 's3:PutObject',
  AbortMultipartUploadCommand: 's3:AbortMultipartUpload',
  ListMultipartUploadsCommand: 's3:ListBucketMultipartUploads',
  GetObjectCommand: 's3:GetObject',
  DeleteObjectCommand: 's3:DeleteObject',
  ListObjectsV2Command: 's3:ListBucket',
};
/** Commands production never sends to AWS: ensureBucket runs only against the simulated cloud's emulator (checked below). */
const emulatorOnly = new Set(['HeadBucketCommand', 'CreateBucketCommand']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? sourceFiles(full) : name.endsWith('.ts') ? [full] : [];
  });
}

const files = productionDirs.flatMap((d) => sourceFiles(join(repoRoot, d)));
const sources = new Map(files.map((f) => [relative(repoRoot, f), readFileSync(f, 'utf8')]));

/** Every `new XxxCommand(` whose class comes from an @aws-sdk client, with the files that send it. */
function sentCommands(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const [file, text] of sources) {
    const imported = new Set<string>();
    for (const m of text.matchAll(/import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*'@aws-sdk\/(client-[a-z0-9-]+)'/g)) {
      for (const name of m[1]!.split(',').map((s) => s.trim().replace(/^type\s+/, ''))) if (name.endsWith('Command')) imported.add(name);
    }
    for (const m of text.matchAll(/new\s+([A-Z][A-Za-z0-9]*Command)\s*\(/g)) {
      if (!imported.has(m[1]!)) continue;
      found.set(m[1]!, [...(found.get(m[1]!) ?? []), file]);
    }
  }
  return found;
}

interface Statement {
  Sid: string;
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}
const policy = JSON.parse(readFileSync(join(repoRoot, 'infra', 'iam', 'markco-worker-policy.json'), 'utf8')) as { Version: string; Statement: Statement[] };
const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
const allowed = new Set(policy.Statement.filter((s) => s.Effect === 'Allow').flatMap((s) => list(s.Action)));
const statementsFor = (action: string) => policy.Statement.filter((s) => list(s.Action).includes(action));

describe('IAM policy of the workers', () => {
  test('the code talks to AWS only through @aws-sdk/client-ec2 and client-s3 commands (no other client, no aggregated client)', () => {
    for (const [file, text] of sources) {
      for (const m of text.matchAll(/from\s*'(@aws-sdk\/[^']+)'/g)) assert.ok(['@aws-sdk/client-ec2', '@aws-sdk/client-s3', '@aws-sdk/types'].includes(m[1]!), `${file} imports ${m[1]}`);
      assert.doesNotMatch(text, /new\s+(EC2|S3)\s*\(/, `${file} uses an aggregated client`);
    }
  });

  test('every command the production code sends maps to an action the policy allows', () => {
    const sent = sentCommands();
    assert.ok(sent.size >= 10, `found only ${[...sent.keys()].join(', ')}`);
    for (const [command, where] of sent) {
      if (emulatorOnly.has(command)) continue;
      const action = actionOf[command];
      assert.ok(action, `${command} (${where.join(', ')}) has no IAM action in this test's map: add it, and to the policy if production sends it`);
      assert.ok(allowed.has(action), `${command} needs ${action}, which infra/iam/markco-worker-policy.json does not allow`);
    }
  });

  test('the policy allows nothing the code does not use', () => {
    const sent = sentCommands();
    const needed = new Set([...sent.keys()].filter((c) => !emulatorOnly.has(c)).map((c) => actionOf[c]!));
    // RunInstances with TagSpecifications is authorised as ec2:CreateTags on the new instance too.
    const runInstances = [...sources.values()].find((t) => t.includes('new RunInstancesCommand('));
    assert.match(runInstances!, /TagSpecifications:/);
    needed.add('ec2:CreateTags');
    assert.deepEqual([...allowed].sort(), [...needed].sort());
    assert.ok(!policy.Statement.some((s) => s.Effect === 'Allow' && list(s.Action).some((a) => a.includes('*'))), 'no wildcard action');
  });

  test('bucket creation is only for the emulator: ensureBucket is called only when the cloud is simulated', () => {
    const calls = [...sources].filter(([, t]) => /\bensureBucket\(/.test(t) && !/export async function ensureBucket/.test(t));
    assert.ok(calls.length > 0);
    for (const [file, text] of calls) {
      for (const line of text.split('\n').filter((l) => /\bensureBucket\(/.test(l))) assert.match(line, /provider === 'simulated'/, `${file}: ${line.trim()}`);
    }
  });

  test('launches, tags and terminations are scoped by the tags activities/ec2.ts sets', () => {
    const ec2 = sources.get('activities/ec2.ts')!;
    assert.match(ec2, /managedTag = \{ key: 'markco:managed', value: 'true' \}/);
    assert.match(ec2, /deploymentTag = 'markco:deployment'/);
    const [launch] = statementsFor('ec2:RunInstances').filter((s) => list(s.Resource).some((r) => r.endsWith(':instance/*')));
    assert.deepEqual(launch!.Condition, { StringEquals: { 'aws:RequestTag/markco:managed': 'true', 'aws:RequestTag/markco:deployment': '{{MARKCO_DEPLOYMENT_ID}}' } });
    const [terminate] = statementsFor('ec2:TerminateInstances');
    assert.deepEqual(terminate!.Condition, { StringEquals: { 'ec2:ResourceTag/markco:managed': 'true', 'ec2:ResourceTag/markco:deployment': '{{MARKCO_DEPLOYMENT_ID}}' } });
    const [tags] = statementsFor('ec2:CreateTags');
    assert.deepEqual(tags!.Condition, { StringEquals: { 'ec2:CreateAction': 'RunInstances' } });
    assert.deepEqual(list(tags!.Resource), ['arn:aws:ec2:{{AWS_REGION}}:{{AWS_ACCOUNT_ID}}:instance/*']);
    // Only DescribeInstances, which has no resource-level permissions, is on "*".
    for (const s of policy.Statement) if (list(s.Resource).includes('*')) assert.deepEqual(list(s.Action), ['ec2:DescribeInstances']);
  });

  test('S3 access is limited to the archive prefix the code writes (archives/<userId>/...)', async () => {
    const { archiveKey, archivePrefix } = await import('../../activities/archive-store.js');
    assert.ok(archiveKey('u1', 'a1').startsWith('archives/'));
    assert.equal(archivePrefix('u1'), 'archives/u1/');
    for (const s of policy.Statement.filter((s) => list(s.Action).some((a) => a.startsWith('s3:')))) {
      for (const r of list(s.Resource)) assert.ok(r === 'arn:aws:s3:::{{MARKCO_S3_BUCKET}}/archives/*' || r === 'arn:aws:s3:::{{MARKCO_S3_BUCKET}}', r);
    }
    assert.deepEqual(statementsFor('s3:ListBucket')[0]!.Condition, { StringLike: { 's3:prefix': 'archives/*' } });
  });

  test('no iam:PassRole: launched hosts get no instance profile', () => {
    assert.ok(!allowed.has('iam:PassRole'));
    for (const [file, text] of sources) assert.doesNotMatch(text, /IamInstanceProfile/, `${file} passes an instance profile: the policy then needs iam:PassRole for it`);
  });

  test('render-policy.sh fills every placeholder and refuses a missing value', () => {
    const script = join(repoRoot, 'infra', 'iam', 'render-policy.sh');
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', AWS_REGION: 'ca-central-1', AWS_ACCOUNT_ID: '123456789012', MARKCO_S3_BUCKET: 'markco-snapshots-example', MARKCO_DEPLOYMENT_ID: 'prod' };
    const out = execFileSync(script, [join(repoRoot, 'infra', 'iam', 'markco-worker-policy.json')], { env, encoding: 'utf8' });
    assert.doesNotMatch(out, /\{\{/);
    const rendered = JSON.parse(out) as typeof policy;
    assert.equal(rendered.Statement.length, policy.Statement.length);
    assert.match(out, /arn:aws:s3:::markco-snapshots-example\/archives\/\*/);
    assert.throws(() => execFileSync(script, [join(repoRoot, 'infra', 'iam', 'markco-worker-policy.json')], { env: { ...env, MARKCO_DEPLOYMENT_ID: '' }, stdio: 'pipe' }), /MARKCO_DEPLOYMENT_ID is not set/);
    for (const f of ['markco-worker-kms-policy.json', 'control-plane-trust-policy.json']) JSON.parse(readFileSync(join(repoRoot, 'infra', 'iam', f), 'utf8'));
  });
});
