import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, instanceFamily, loadConfig } from '../../lib/config.js';

test('without cloud variables there is no cloud: only the base server', () => {
  const c = loadConfig({});
  assert.equal(c.cloud.provider, 'none');
  assert.deepEqual(c.cloud.amiIds, {});
  assert.deepEqual(c.cloud.securityGroupIds, []);
  assert.equal(c.cloud.sshUser, 'ubuntu');
  assert.equal(c.cloud.market, 'on-demand');
  assert.equal(c.cloud.deploymentId, 'default');
  assert.equal(c.cloud.reservationTtlSeconds, 600);
  assert.equal(c.cloud.reaperGraceSeconds, 900);
  assert.equal(c.cloud.sshKeyPath, c.hosts.sshKeyPath, 'launched hosts authorise the key the workers connect with');
  assert.equal(loadConfig({ MARKCO_CLOUD: '' }).cloud.provider, 'none', 'empty counts as unset');
});

test('a simulated cloud logs in as root and may get its subnet and AMIs later', () => {
  const c = loadConfig({ MARKCO_CLOUD: 'simulated' });
  assert.equal(c.cloud.provider, 'simulated');
  assert.equal(c.cloud.sshUser, 'root');
  assert.equal(c.cloud.subnetId, undefined);
  assert.equal(loadConfig({ MARKCO_CLOUD: 'simulated', MARKCO_EC2_SSH_USER: 'admin' }).cloud.sshUser, 'admin');
});

test('aws values are parsed', () => {
  const c = loadConfig({
    MARKCO_CLOUD: 'aws',
    MARKCO_EC2_AMI_IDS: '{"t3":"ami-0123abcd","g5":"ami-4567ef01"}',
    MARKCO_EC2_SUBNET_ID: 'subnet-0a1b2c3d',
    MARKCO_EC2_SECURITY_GROUP_IDS: 'sg-01, sg-02',
    MARKCO_EC2_MARKET: 'spot-then-on-demand',
    MARKCO_DEPLOYMENT_ID: 'prod-ca',
    MARKCO_RESERVATION_TTL_S: '120',
    MARKCO_REAPER_GRACE_S: '0',
  });
  assert.deepEqual(c.cloud.amiIds, { t3: 'ami-0123abcd', g5: 'ami-4567ef01' });
  assert.equal(c.cloud.subnetId, 'subnet-0a1b2c3d');
  assert.deepEqual(c.cloud.securityGroupIds, ['sg-01', 'sg-02']);
  assert.equal(c.cloud.market, 'spot-then-on-demand');
  assert.equal(c.cloud.deploymentId, 'prod-ca');
  assert.equal(c.cloud.reservationTtlSeconds, 120);
  assert.equal(c.cloud.reaperGraceSeconds, 0);
});

test('aws without a subnet or without an AMI for a family on the ladder is refused at start-up', () => {
  try {
    loadConfig({ MARKCO_CLOUD: 'aws', MARKCO_EC2_AMI_IDS: '{"g5":"ami-4567ef01"}' });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems.map((p) => p.variable).sort(), ['MARKCO_EC2_AMI_IDS', 'MARKCO_EC2_SUBNET_ID']);
    assert.match(err.message, /MARKCO_EC2_AMI_IDS: required when MARKCO_CLOUD=aws; no AMI for the tier ladder's family t3/);
  }
});

test('bad cloud values name the variable and what is expected', () => {
  assert.throws(() => loadConfig({ MARKCO_CLOUD: 'gcp' }), /MARKCO_CLOUD: expected one of none, aws, simulated/);
  assert.throws(() => loadConfig({ MARKCO_EC2_AMI_IDS: '[1]' }), /MARKCO_EC2_AMI_IDS: expected a JSON object/);
  assert.throws(() => loadConfig({ MARKCO_EC2_AMI_IDS: '{"t3":"ubuntu"}' }), /MARKCO_EC2_AMI_IDS: the AMI of t3 must be an id/);
  assert.throws(() => loadConfig({ MARKCO_EC2_AMI_IDS: '{t3' }), /MARKCO_EC2_AMI_IDS: expected JSON/);
  assert.throws(() => loadConfig({ MARKCO_EC2_SUBNET_ID: 'vpc-1' }), /MARKCO_EC2_SUBNET_ID: expected a subnet id/);
  assert.throws(() => loadConfig({ MARKCO_EC2_SECURITY_GROUP_IDS: 'sg-1,default' }), /MARKCO_EC2_SECURITY_GROUP_IDS: expected security group ids/);
  assert.throws(() => loadConfig({ MARKCO_EC2_SSH_USER: 'Root User' }), /MARKCO_EC2_SSH_USER: expected a login name/);
  assert.throws(() => loadConfig({ MARKCO_EC2_MARKET: 'spot' }), /MARKCO_EC2_MARKET: expected on-demand or spot-then-on-demand/);
  assert.throws(() => loadConfig({ MARKCO_DEPLOYMENT_ID: 'a b' }), /MARKCO_DEPLOYMENT_ID: expected a deployment id/);
  assert.throws(() => loadConfig({ MARKCO_RESERVATION_TTL_S: '0' }), /MARKCO_RESERVATION_TTL_S: expected 1 to 86400 seconds/);
  assert.throws(() => loadConfig({ MARKCO_REAPER_GRACE_S: '-1' }), /MARKCO_REAPER_GRACE_S: expected 0 to 604800 seconds/);
});

test('the family of an instance type is the text before the dot', () => {
  assert.equal(instanceFamily('t3.large'), 't3');
  assert.equal(instanceFamily('g5.xlarge'), 'g5');
});
