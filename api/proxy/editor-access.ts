import type { CollaboratorRole } from '../../lib/memberships.js';

/**
 * What each role may do in a user's editor (`/u/<ownerId>/<rest>`), decided from the method and the path
 * alone, for every HTTP request and every WebSocket upgrade:
 * - owner: everything the editor serves;
 * - editor (a collaborator): everything but the owner's account settings;
 * - viewer: reads only (GET, HEAD), the events WebSocket and the document sync WebSockets (which the edge
 *   relays with the viewer's writes taken out: api/proxy/yjs-viewer.ts), and no code execution.
 * For everyone, `/proxy/<port>/` reaches only the owner's current runtime port: the production editor
 * (mrmd-server) forwards `/proxy/<port>` to any port on its loopback, so the edge decides, not the editor.
 */
export type EditorRole = 'owner' | CollaboratorRole;

export interface Refusal {
  status: 400 | 403 | 503;
  error: string;
  message: string;
}

export type SocketKind = 'events' | 'sync' | 'other';

export const viewerWriteMessage = 'the viewer role cannot run code or write: it may only read (GET and HEAD) and follow documents live';

const readMethods: ReadonlySet<string> = new Set(['GET', 'HEAD']);

/**
 * Editor paths only the owner may use: the editor keeps the owner's API keys and preferences there.
 * Matched on the routable form of the path (below), as a prefix at a segment boundary.
 */
const ownerOnlyPaths = ['/api/settings'];

/**
 * Where the editor's runtime is: the control plane tells the editor itself, directly (never through the
 * edge); anyone pointing it elsewhere through the edge would turn `/proxy/<runtimePort>` into a way to
 * reach any host.
 */
const controlPlaneOnlyPaths = ['/api/runtime/update-port'];

/** Encoded dots, slashes or backslashes, or a raw backslash: paths routers disagree about. */
const ambiguousPath = /%2e|%2f|%5c|\\/i;
/**
 * A sync path's document name is a key for the Yjs server, which an editor may percent-encode whole
 * (`Projects%2Fnotes.md`): its encoded slashes are read as slashes, then checked like the rest.
 */
const syncDocumentPath = /^(\/sync\/\d+\/)(.*)$/i;

/**
 * The path as the editor's router would match it (decoded, doubled slashes collapsed, lowercase since
 * Express matches case-insensitively), or undefined for a path whose meaning depends on who reads it:
 * dot segments, encoded separators, backslashes, broken percent-encoding. Browsers never send those.
 */
export function routablePath(rest: string): string | undefined {
  const sent = rest.split(/[?#]/, 1)[0] ?? '';
  const sync = syncDocumentPath.exec(sent);
  const raw = sync ? `${sync[1]}${sync[2]!.replace(/%2f/gi, '/')}` : sent;
  if (ambiguousPath.test(raw)) return undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return undefined;
  }
  const collapsed = decoded.replace(/\/{2,}/g, '/');
  if (collapsed.split('/').some((segment) => segment === '.' || segment === '..')) return undefined;
  return collapsed.toLowerCase();
}

const under = (path: string, prefix: string) => path === prefix || path.startsWith(`${prefix}/`);

/** `/proxy/<port>/...`: the port segment as sent, or undefined when the path is not a proxy path. */
function proxyPortSegment(path: string): string | undefined {
  const m = /^\/proxy(?:\/([^/]*))?(?:\/|$)/.exec(path);
  return m ? (m[1] ?? '') : undefined;
}

export function socketKindOf(path: string): SocketKind {
  if (path === '/events') return 'events';
  if (/^\/sync\/\d+\/./.test(path)) return 'sync';
  return 'other';
}

/** A TCP port written as the editor's `/proxy/<port>` expects it: 1 to 65535, digits, no leading zero. */
export function parsePort(segment: string): number | undefined {
  if (!/^[1-9]\d{0,4}$/.test(segment)) return undefined;
  const port = Number(segment);
  return port <= 65535 ? port : undefined;
}

const forbidden = (message: string): Refusal => ({ status: 403, error: 'forbidden', message });

/** The refusal for this request by this role, from its method and path; undefined when it may go on. */
export function requestRefusal(input: { role: EditorRole; method: string; rest: string; upgrade: boolean }): Refusal | undefined {
  const path = routablePath(input.rest);
  if (path === undefined) {
    return { status: 400, error: 'bad request', message: 'the path has dot segments, encoded separators, backslashes or broken percent-encoding; send it in plain form' };
  }
  const port = proxyPortSegment(path);
  if (port !== undefined && parsePort(port) === undefined) {
    return { status: 400, error: 'bad request', message: `/proxy/<port>/ needs a port from 1 to 65535 written in digits, not '${port}'` };
  }
  if (controlPlaneOnlyPaths.some((p) => under(path, p))) return forbidden('the runtime address is set by the control plane only');
  if (input.role === 'owner') return undefined;
  if (ownerOnlyPaths.some((p) => under(path, p))) return forbidden("the editor's account settings belong to its owner");
  if (input.role === 'editor') return undefined;
  if (input.upgrade) {
    return socketKindOf(path) === 'other' ? forbidden('the viewer role may open only the events and document sync WebSockets') : undefined;
  }
  return readMethods.has(input.method.toUpperCase()) ? undefined : forbidden(viewerWriteMessage);
}

/**
 * For a `/proxy/<port>/` path, the refusal unless the port is the owner's current runtime port (known once
 * the editor has been told where the runtime is). Other paths: undefined.
 */
export function proxyTargetRefusal(rest: string, runtimePort: number | null): Refusal | undefined {
  const path = routablePath(rest);
  const segment = path === undefined ? undefined : proxyPortSegment(path);
  if (segment === undefined) return undefined;
  if (runtimePort === null) return { status: 503, error: 'starting', message: 'the runtime is not ready yet; retry shortly' };
  if (parsePort(segment) !== runtimePort) return forbidden(`/proxy/${segment}/ is not this editor's runtime: only /proxy/${runtimePort}/ is reachable`);
  return undefined;
}
