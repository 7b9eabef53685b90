import type { Metadata } from '@grpc/grpc-js';
import type { Auth } from '../api/auth.js';
import { dataTokenPrefix, type UserRecord } from '../lib/accounts.js';
import type { MembershipStore } from '../lib/memberships.js';

/**
 * Who is calling the data service: the user behind an edge session token, checked by the edge's own
 * session code (api/auth.ts, which looks the token's SHA-256 up in PostgreSQL and caches it briefly), or
 * behind a data token (`mkd_...`), the one a kernel finds in its runtime's MARKCO_DATA_TOKEN, which opens
 * the data service and nothing else.
 *
 * A Flight client carries the token in one of three ways:
 * - `authorization: Bearer <token>` on every call (pyarrow: `FlightCallOptions(headers=[...])`);
 * - a Handshake with `authorization: Basic base64(<any name>:<token>)` (pyarrow:
 *   `client.authenticate_basic_token(name, token)`), answered with `authorization: Bearer <token>`, which
 *   the client then sends on every call;
 * - a Handshake whose payload is the token (Flight's older ClientAuthHandler), after which the client sends
 *   it as `auth-token-bin`.
 */

export function tokenFromMetadata(metadata: Metadata): string | undefined {
  const header = metadata.get('authorization')[0];
  if (typeof header === 'string') {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (bearer) return bearer[1];
    const basic = /^Basic\s+(\S+)\s*$/i.exec(header);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      return colon >= 0 ? decoded.slice(colon + 1) || undefined : undefined;
    }
  }
  const binary = metadata.get('auth-token-bin')[0];
  if (binary !== undefined) return (Buffer.isBuffer(binary) ? binary.toString('utf8') : String(binary)) || undefined;
  return undefined;
}

export interface FlightAccess {
  /** The user of a session or data token, or undefined for an unknown, revoked, replaced or expired one. */
  userOf(token: string): Promise<UserRecord | undefined>;
  /** Whether `user` may read the datasets of `ownerId`: their own, and those of owners who invited them. */
  mayRead(user: UserRecord, ownerId: string): Promise<boolean>;
  /** Owners whose datasets `user` may read, with their usernames: themselves first. */
  readableOwners(user: UserRecord): Promise<{ id: string; username: string }[]>;
  /** The user of a username (to resolve `<username>/<dataset>`). */
  ownerByUsername(username: string): Promise<{ id: string; username: string } | undefined>;
}

/** Access through the edge's session check (or the data tokens) and the collaborators' memberships. */
export function createFlightAccess(deps: {
  auth: Pick<Auth, 'sessionOf'>;
  dataTokens: { resolve(token: string): Promise<UserRecord | undefined> };
  memberships: MembershipStore['memberships'];
  users: { byUsername(username: string): Promise<UserRecord | undefined> };
}): FlightAccess {
  return {
    async userOf(token) {
      if (token.startsWith(dataTokenPrefix)) return deps.dataTokens.resolve(token);
      return (await deps.auth.sessionOf({ authorization: `Bearer ${token}` }))?.user;
    },
    async mayRead(user, ownerId) {
      if (user.id === ownerId) return true;
      return (await deps.memberships.grantOf(ownerId, user.id)) !== undefined;
    },
    async readableOwners(user) {
      const owners = [{ id: user.id, username: user.username }];
      for (const m of await deps.memberships.listForMember(user.id)) {
        if (!owners.some((o) => o.id === m.ownerId)) owners.push({ id: m.ownerId, username: m.person.username });
      }
      return owners;
    },
    async ownerByUsername(username) {
      const user = await deps.users.byUsername(username);
      return user ? { id: user.id, username: user.username } : undefined;
    },
  };
}
