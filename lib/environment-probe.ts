import { Agent, request } from 'undici';
import type { EditorRecord, RuntimeRecord } from './runtime-store.js';

// No keep-alive towards runtimes: CRIU cannot checkpoint a process holding established TCP connections.
const oneShot = new Agent({ pipelining: 0, connect: { timeout: 3000 } });

/** True when the URL answers 2xx within the timeout; any error or other status is false. */
export async function httpOk(url: string, init: { method?: 'GET' | 'POST'; body?: unknown; timeoutMs?: number } = {}): Promise<boolean> {
  try {
    const res = await request(url, {
      method: init.method ?? 'GET',
      dispatcher: oneShot,
      headersTimeout: init.timeoutMs ?? 5000,
      bodyTimeout: init.timeoutMs ?? 5000,
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body), headers: { 'content-type': 'application/json' } }),
    });
    await res.body.text();
    return res.statusCode >= 200 && res.statusCode < 300;
  } catch {
    return false;
  }
}

/** A healthy container answers in milliseconds; one that does not is the login workflow's to wait for. */
const warmProbeTimeoutMs = 2000;

/**
 * Whether a user's runtime and editor are running and answering right now, so a login has nothing to
 * make: the rows agree (both running, the editor pointed at this runtime), and MRP `/capabilities` and
 * the editor's `/health` answer. Shared by the login workflow's plan and the edge's sign-in, so both call
 * an environment ready on the same evidence.
 *
 * `retell` also tells the editor the runtime's address again and counts a refusal as not ready (a
 * restarted editor forgets it, as readyEditor knows). Only the login plan may: it runs in the user's
 * entity, one operation at a time, whereas the edge reads the rows beside a migration that may be
 * re-pointing the editor that very moment, and a late re-tell of the old address would undo it. The edge
 * needs no re-tell: editors have no restart policy, so an editor process restarts only inside a login,
 * whose readyEditor tells it.
 */
export async function environmentAnswers(
  runtime: Pick<RuntimeRecord, 'id' | 'state' | 'address' | 'port'> | undefined,
  editor: Pick<EditorRecord, 'state' | 'port' | 'runtimeId' | 'runtimeHost' | 'runtimePort'> | undefined,
  editorAddress: string,
  opts: { retell: boolean },
): Promise<boolean> {
  if (!runtime || !editor || runtime.state !== 'running' || editor.state !== 'running') return false;
  if (!runtime.address || !runtime.port || !editor.port) return false;
  if (editor.runtimeId !== runtime.id || editor.runtimeHost !== runtime.address || editor.runtimePort !== runtime.port) return false;
  const editorBase = `http://${editorAddress}:${editor.port}`;
  const timeoutMs = warmProbeTimeoutMs;
  const [runtimeUp, editorUp] = await Promise.all([
    httpOk(`http://${runtime.address}:${runtime.port}/mrp/v1/capabilities`, { timeoutMs }),
    httpOk(`${editorBase}/health`, { timeoutMs }),
  ]);
  if (!runtimeUp || !editorUp) return false;
  if (!opts.retell) return true;
  return httpOk(`${editorBase}/api/runtime/update-port`, { method: 'POST', body: { port: runtime.port, host: runtime.address }, timeoutMs });
}
