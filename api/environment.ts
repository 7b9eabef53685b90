import type { UserRecord } from '../lib/accounts.js';
import { environmentAnswers } from '../lib/environment-probe.js';
import type { PlatformDeps } from './platform.js';

export function publicUser(u: UserRecord) {
  return { id: u.id, email: u.email, username: u.username, name: u.name, plan: u.plan };
}

/**
 * The state the dashboard shows. The environment counts as ready only when the runtime and editor answer
 * right now (lib/environment-probe.ts, the evidence the login workflow's plan uses), so a sign-in or a
 * visit while both run costs no workflow, as a hub redirects to a server that is already up; otherwise it
 * starts the login workflow, which makes or restarts what is missing.
 */
export async function environmentOf(deps: PlatformDeps, user: UserRecord) {
  const [runtime, editor, upstream] = await Promise.all([deps.store.runtimes.live(user.id), deps.store.editors.live(user.id), deps.routes.get(user.id)]);
  const ready = upstream !== undefined && (await environmentAnswers(runtime, editor, upstream.host, { retell: false }));
  let operationId: string | undefined;
  if (ready) deps.activity.touch(user.id);
  else operationId = (await deps.operations.startLogin({ userId: user.id })).operationId;
  return {
    user: publicUser(user),
    runtime: runtime
      ? { state: runtime.state, host: runtime.hostId, port: runtime.port, tier: runtime.tier, memory_limit_bytes: runtime.memoryLimitBytes, cpu_limit: runtime.cpuLimit }
      : { state: 'starting', host: null, port: null, tier: null },
    editor: { state: ready ? 'running' : editor?.state === 'failed' ? 'failed' : 'starting', url: `/u/${user.id}/` },
    ...(operationId ? { operation_id: operationId } : {}),
  };
}
