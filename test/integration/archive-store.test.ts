import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CreateBucketCommand, HeadObjectCommand, ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { archiveKey, deleteArchive, downloadArchiveToHost, uploadArchiveFromHost, type ArchiveStoreOptions } from '../../activities/archive-store.js';
import type { HostShells } from '../../activities/host-shell.js';
import { ChecksumMismatchError } from '../../activities/transfer.js';
import { createS3Client } from '../../lib/aws.js';
import { connectionTo, emulatorCredentials, testShells, useHarness } from '../support/context.js';

/** Checkpoint archives to S3 (the emulator) and back, from and to real hosts: the base server and a namespace host over ssh. */
describe('archive store: multipart upload from a host, verified download to a host', () => {
  const h = useHarness();
  let s3: S3Client;
  let shells: HostShells;
  const bucket = `markco-archives-${randomBytes(3).toString('hex')}`;
  const mib = 1024 * 1024;
  const store: ArchiveStoreOptions = { bucket, encryption: { kind: 'AES256' }, partBytes: 5 * mib };
  let archivePath = '';
  let archive: Buffer;

  before(async () => {
    s3 = createS3Client({ region: 'ca-central-1', endpoint: h.state.moto.endpoint, snapshotBucket: bucket }, emulatorCredentials);
    await s3.send(new CreateBucketCommand({ Bucket: bucket, CreateBucketConfiguration: { LocationConstraint: 'ca-central-1' } }));
    shells = testShells(h.state);
    // 12 MiB and a bit: two whole parts and a short last one.
    archive = randomBytes(12 * mib + 12_345);
    archivePath = join(h.state.baseHost.dataDir, 'archive-store-test.tar');
    writeFileSync(archivePath, archive);
  });
  after(async () => {
    await shells.closeAll();
    s3.destroy();
  });

  const base = () => shells.for({ hostId: 'base', kind: 'base', address: '127.0.0.1' });
  const remote = () => shells.for(connectionTo(h.state.hosts[0]!));
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

  test('an archive on the base server goes up in parts, encrypted, and comes down on another host byte for byte', async () => {
    const key = archiveKey('user-1', 'idle-1');
    const progress: number[] = [];
    const stored = await uploadArchiveFromHost(s3, store, { from: base(), path: archivePath, key, onProgress: (p) => progress.push(p.bytes) });
    assert.deepEqual(stored, { key, bytes: archive.length, sha256: sha(archive), parts: 3 });
    // Parts upload side by side, so they finish in any order: progress counts acknowledged bytes.
    assert.equal(progress.length, 3);
    assert.ok(progress.every((b, i) => i === 0 || b > progress[i - 1]!), `progress only grows: ${progress.join(', ')}`);
    assert.equal(progress.at(-1), archive.length);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    assert.equal(head.ContentLength, archive.length);
    assert.equal(head.ServerSideEncryption, 'AES256');

    const target = join(h.state.hosts[0]!.scratchDir, 'archives', 'idle-1.tar');
    const got = await downloadArchiveToHost(s3, store, { key, sha256: stored.sha256, to: remote(), path: target });
    assert.equal(got.bytes, archive.length);
    assert.equal(got.sha256, sha(archive));
    const onHost = await remote().run(['sh', '-c', 'openssl dgst -sha256 -r "$1" | cut -d" " -f1; ls "$1.partial" 2>/dev/null || true', 'check', target]);
    assert.equal(onHost.stdout.trim(), sha(archive), 'the host holds the same bytes and no partial file');

    await deleteArchive(s3, store, key);
    await assert.rejects(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })), /NotFound|404/);
    await deleteArchive(s3, store, key);
  });

  test('a download whose bytes do not match the recorded hash leaves nothing on the host', async () => {
    const key = archiveKey('user-1', 'idle-2');
    await uploadArchiveFromHost(s3, store, { from: base(), path: archivePath, key });
    const target = join(h.state.hosts[0]!.scratchDir, 'archives', 'idle-2.tar');
    await assert.rejects(downloadArchiveToHost(s3, store, { key, sha256: 'f'.repeat(64), to: remote(), path: target }), ChecksumMismatchError);
    const left = await remote().run(['sh', '-c', 'ls "$1" "$1.partial" 2>/dev/null || true', 'check', target]);
    assert.equal(left.stdout.trim(), '');
    await assert.rejects(downloadArchiveToHost(s3, store, { key, sha256: 'not-a-hash', to: remote(), path: target }), /64 hex digits/);
    await deleteArchive(s3, store, key);
  });

  test('an upload that fails (the file is not there) leaves no multipart upload behind; bad names are refused', async () => {
    const key = archiveKey('user-1', 'missing');
    await assert.rejects(uploadArchiveFromHost(s3, store, { from: base(), path: join(h.state.baseHost.dataDir, 'no-such-archive.tar'), key }), /No such file/);
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual(uploads.Uploads ?? [], []);
    assert.throws(() => archiveKey('../etc', 'x'), /cannot be part of an archive key/);
    await assert.rejects(uploadArchiveFromHost(s3, { ...store, partBytes: mib }, { from: base(), path: archivePath, key }), /5242880/);
  });

  test('an upload cancelled while parts are in flight leaves no parts and no object behind', async () => {
    const key = archiveKey('user-1', 'cancelled');
    const cancel = new AbortController();
    await assert.rejects(
      uploadArchiveFromHost(s3, { ...store, partsInFlight: 2 }, { from: base(), path: archivePath, key, signal: cancel.signal, onProgress: () => cancel.abort() }),
      /abort/i,
    );
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual(uploads.Uploads ?? [], [], 'the multipart upload is aborted once its parts settled');
    await assert.rejects(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })), /NotFound|404/);
  });
});
