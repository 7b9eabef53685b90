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
 * make: the rows agree (both running, the editor pointed at this runtime), MRP `/capabilities` and the
 * editor's `/health` answer, and the editor accepts being told the runtime's address again (a restarted
 * editor forgets it, as readyEditor knows). Shared by the login workflow's plan and the edge's sign-in,
 * so both call an environment ready on exactly the same evidence.
 */
export async function environmentAnswers(
  runtime: Pick<RuntimeRecord, 'id' | 'state' | 'address' | 'port'> | undefined,
  editor: Pick<EditorRecord, 'state' | 'port' | 'runtimeId' | 'runtimeHost' | 'runtimePort'> | undefined,
  editorAddress: string,
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
  return httpOk(`${editorBase}/api/runtime/update-port`, { method: 'POST', body: { port: runtime.port, host: runtime.address }, timeoutMs });
}
