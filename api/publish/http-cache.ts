import { createHash } from 'node:crypto';

/**
 * HTTP validators for published pages and assets, so a CDN or a browser revalidates with a 304 instead
 * of fetching again: strong ETags (the SHA-256 of the exact bytes sent) and If-None-Match.
 */
export function contentHash(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('base64url').slice(0, 32);
}

export function strongEtag(hash: string): string {
  return `"${hash}"`;
}

/** If-None-Match (a list, `*`, or weak forms: RFC 9110 compares them weakly) names this ETag. */
export function matchesIfNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag);
}
