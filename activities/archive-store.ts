import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { HostShell } from './host-shell.js';
import { writeStreamToHost, type TransferProgress, type TransferResult } from './transfer.js';

/**
 * Checkpoint archives kept in S3 while a runtime is idle (its host terminated: $0 compute). Archives
 * stream from a host's file into a multipart upload and back into a host's file; no copy lands on the
 * worker's disk, and only a few parts at a time are held in memory.
 */
export interface ArchiveStoreOptions {
  bucket: string;
  /** Server-side encryption of stored archives: none, S3-managed keys, or KMS (a key id, else the bucket's default KMS key). */
  encryption: ArchiveEncryption;
  /** Bytes per part: at least S3's 5 MiB minimum; 10,000 parts at most, so 16 MiB parts hold 156 GiB. */
  partBytes?: number;
  /** Parts uploading at once while the next is read and hashed; memory holds this many parts plus one. */
  partsInFlight?: number;
}

export type ArchiveEncryption = { kind: 'none' } | { kind: 'AES256' } | { kind: 'aws:kms'; keyId?: string };

export interface StoredArchive {
  key: string;
  bytes: number;
  /** SHA-256 of the whole archive (hex): what a later download must reproduce. */
  sha256: string;
  parts: number;
}

const minPartBytes = 5 * 1024 * 1024;
const defaultPartBytes = 16 * 1024 * 1024;
const maxParts = 10_000;
const defaultPartsInFlight = 4;

function assertKeyPart(name: string, value: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/.test(value)) throw new Error(`${name} ${JSON.stringify(value)} cannot be part of an archive key (letters, digits, - and _ only)`);
}

/** Where all of a user's archives are: one prefix per user, so an operator can list or purge a user's archives. */
export function archivePrefix(userId: string): string {
  assertKeyPart('userId', userId);
  return `archives/${userId}/`;
}

/** The object key of a user's archive. */
export function archiveKey(userId: string, archiveId: string): string {
  assertKeyPart('archiveId', archiveId);
  return `${archivePrefix(userId)}${archiveId}.tar`;
}

function encryptionParams(e: ArchiveEncryption): { ServerSideEncryption?: 'AES256' | 'aws:kms'; SSEKMSKeyId?: string } {
  if (e.kind === 'none') return {};
  if (e.kind === 'AES256') return { ServerSideEncryption: 'AES256' };
  return { ServerSideEncryption: 'aws:kms', ...(e.keyId ? { SSEKMSKeyId: e.keyId } : {}) };
}

/**
 * Uploads a file of a host as a multipart object. Each part carries its SHA-256, which S3 checks on
 * receipt; the whole archive's SHA-256 comes back for the caller to record. Up to `partsInFlight` parts
 * upload at once while the next is read. Any failure aborts the
 * multipart upload, so no invisible parts are left to be billed.
 */
export async function uploadArchiveFromHost(
  s3: S3Client,
  store: ArchiveStoreOptions,
  args: { from: HostShell; path: string; key: string; signal?: AbortSignal; timeoutMs?: number; onProgress?: (p: TransferProgress) => void },
): Promise<StoredArchive> {
  if (!args.path.startsWith('/')) throw new Error(`archive paths must be absolute: ${JSON.stringify(args.path)}`);
  const partBytes = store.partBytes ?? defaultPartBytes;
  if (!(Number.isInteger(partBytes) && partBytes >= minPartBytes)) throw new Error(`partBytes must be a whole number of at least ${minPartBytes} (S3's minimum part size)`);
  const started = Date.now();
  const sendOpts = args.signal ? { abortSignal: args.signal } : {};
  // A failed upload stops the host's reader too: an unread reader blocks on its full pipe until its timeout.
  const stopReader = new AbortController();
  const readerSignal = args.signal ? AbortSignal.any([args.signal, stopReader.signal]) : stopReader.signal;
  const reader = await args.from.openReader(['cat', '--', args.path], { signal: readerSignal, timeoutMs: args.timeoutMs ?? 60 * 60_000 });
  // A read that fails while the upload is being created reports through the loop below and `done`.
  reader.stdout.on('error', () => undefined);
  let created;
  try {
    // An attempt killed mid-upload (the worker died) left its parts behind, billed and invisible: abort them.
    await abortUnfinishedUploads(s3, store.bucket, args.key, sendOpts);
    created = await s3.send(
      new CreateMultipartUploadCommand({ Bucket: store.bucket, Key: args.key, ChecksumAlgorithm: 'SHA256', ContentType: 'application/x-tar', ...encryptionParams(store.encryption) }),
      sendOpts,
    );
  } catch (err) {
    // Refused before any part (no permission, no bucket).
    stopReader.abort();
    reader.stdout.destroy();
    throw err;
  }
  const uploadId = created.UploadId!;
  const whole = createHash('sha256');
  const parts: CompletedPart[] = [];
  let bytes = 0;
  let partsStarted = 0;
  const sendPart = async (chunks: Buffer[]) => {
    const body = Buffer.concat(chunks);
    const partNumber = ++partsStarted;
    if (partNumber > maxParts) throw new Error(`the archive needs more than ${maxParts} parts of ${partBytes} bytes; raise partBytes`);
    const checksum = createHash('sha256').update(body).digest('base64');
    const out = await s3.send(
      new UploadPartCommand({ Bucket: store.bucket, Key: args.key, UploadId: uploadId, PartNumber: partNumber, Body: body, ChecksumAlgorithm: 'SHA256', ChecksumSHA256: checksum }),
      sendOpts,
    );
    parts.push({ PartNumber: partNumber, ETag: out.ETag!, ChecksumSHA256: out.ChecksumSHA256 ?? checksum });
    bytes += body.length;
    args.onProgress?.({ bytes, elapsedMs: Date.now() - started });
  };
  const inFlight = new Set<Promise<void>>();
  let partFailure: unknown;
  const startPart = (chunks: Buffer[]) => {
    const sending: Promise<void> = sendPart(chunks).then(
      () => void inFlight.delete(sending),
      (err: unknown) => {
        inFlight.delete(sending);
        partFailure ??= err;
      },
    );
    inFlight.add(sending);
  };
  const partsInFlight = store.partsInFlight ?? defaultPartsInFlight;
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    // Reading pauses while the allowed parts upload: the host's `cat` waits, memory stays bounded.
    for await (const chunk of reader.stdout as AsyncIterable<Buffer>) {
      whole.update(chunk);
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= partBytes) {
        const all = Buffer.concat(pending);
        pending = all.length > partBytes ? [all.subarray(partBytes)] : [];
        pendingBytes = all.length - partBytes;
        startPart([all.subarray(0, partBytes)]);
        while (inFlight.size >= partsInFlight) await Promise.race(inFlight);
        if (partFailure) throw partFailure;
      }
    }
    await reader.done;
    // The last part may be short; an empty archive still needs one (empty) part.
    if (pendingBytes > 0 || partsStarted === 0) startPart(pending);
    await Promise.all(inFlight);
    if (partFailure) throw partFailure;
    parts.sort((a, b) => a.PartNumber! - b.PartNumber!);
    await s3.send(
      new CompleteMultipartUploadCommand({ Bucket: store.bucket, Key: args.key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
      sendOpts,
    );
  } catch (err) {
    stopReader.abort();
    reader.stdout.destroy();
    // Parts still sending would land after the abort: let them settle first (they never reject).
    await Promise.all(inFlight);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: store.bucket, Key: args.key, UploadId: uploadId })).catch(() => undefined);
    throw err;
  }
  return { key: args.key, bytes, sha256: whole.digest('hex'), parts: parts.length };
}

/** Aborts the multipart uploads of exactly this key that never completed. */
export async function abortUnfinishedUploads(s3: S3Client, bucket: string, key: string, sendOpts: { abortSignal?: AbortSignal } = {}): Promise<number> {
  const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }), sendOpts);
  const stale = (listed.Uploads ?? []).filter((u) => u.Key === key && u.UploadId);
  for (const u of stale) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: u.UploadId! }), sendOpts);
  return stale.length;
}

/**
 * Downloads an archive into a file of a host. The file is written beside its place and renamed only
 * once the host's hash of what it wrote equals `sha256` (recorded at upload): a corrupt or truncated
 * download leaves nothing.
 */
export async function downloadArchiveToHost(
  s3: S3Client,
  store: Pick<ArchiveStoreOptions, 'bucket'>,
  args: { key: string; sha256: string; to: HostShell; path: string; signal?: AbortSignal; timeoutMs?: number; onProgress?: (p: TransferProgress) => void },
): Promise<TransferResult> {
  if (!/^[0-9a-f]{64}$/.test(args.sha256)) throw new Error(`sha256 must be 64 hex digits, got ${JSON.stringify(args.sha256)}`);
  const got = await s3.send(new GetObjectCommand({ Bucket: store.bucket, Key: args.key, ChecksumMode: 'ENABLED' }), args.signal ? { abortSignal: args.signal } : {});
  if (!got.Body) throw new Error(`s3://${store.bucket}/${args.key} has no body`);
  return writeStreamToHost({
    source: got.Body as Readable,
    to: args.to,
    toPath: args.path,
    expectedSha256: args.sha256,
    ...(args.onProgress ? { onProgress: args.onProgress } : {}),
    ...(args.signal ? { signal: args.signal } : {}),
    timeoutMs: args.timeoutMs ?? 60 * 60_000,
  });
}

/** Deletes an archive; deleting one that is already gone is not an error. */
export async function deleteArchive(s3: S3Client, store: Pick<ArchiveStoreOptions, 'bucket'>, key: string): Promise<void> {
  await s3.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: key }));
}

/**
 * Deletes every object under a user's prefix and aborts every unfinished upload there: what no snapshot
 * row names (an upload whose worker died before recording it). Answers how many it removed.
 */
export async function deleteArchivesOfUser(s3: S3Client, store: Pick<ArchiveStoreOptions, 'bucket'>, userId: string): Promise<number> {
  const prefix = archivePrefix(userId);
  let removed = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: store.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of page.Contents ?? []) {
      if (!o.Key) continue;
      await deleteArchive(s3, store, o.Key);
      removed++;
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: store.bucket, Prefix: prefix }));
  for (const u of uploads.Uploads ?? []) {
    if (!u.Key || !u.UploadId) continue;
    await s3.send(new AbortMultipartUploadCommand({ Bucket: store.bucket, Key: u.Key, UploadId: u.UploadId }));
    removed++;
  }
  return removed;
}

/** Makes the bucket unless it exists (the simulated cloud's emulator; a real deployment's bucket is made by its operator). */
export async function ensureBucket(s3: S3Client, bucket: string, region: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
  } catch {
    await s3.send(new CreateBucketCommand({ Bucket: bucket, ...(region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: region as never } }) }));
  }
}
