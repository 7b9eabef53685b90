/**
 * The two containers a user owns, as pure specs: the runtime (mrmd-python, MRP on :8888) and the editor
 * (mrmd-server contract). Names come from the whole user id, limits from the plan, the user's files are
 * the container's home. Nothing here runs a process.
 */
import { userIdPattern, type Plan } from '../workflows/contracts/users.js';
import type { RunContainerSpec } from './podman-commands.js';

export { Plans, type Plan } from '../workflows/contracts/users.js';

export interface ResourceLimits {
  memoryBytes: number;
  cpus: number;
}

const MiB = 1024 * 1024;

/** What each plan starts with on the base server (the tier ladder grows it later). */
export const planLimits: Record<Plan, ResourceLimits> = {
  free: { memoryBytes: 256 * MiB, cpus: 0.5 },
  pro: { memoryBytes: 512 * MiB, cpus: 1 },
  team: { memoryBytes: 1024 * MiB, cpus: 2 },
};

/** Memory for the editor container: the seeds' 512m, which mrmd-server needs for its UI build cache. */
export const editorLimits: ResourceLimits = { memoryBytes: 512 * MiB, cpus: 1 };

export const runtimeContainerPort = 8888;
export const containerHome = '/home/user';
/** The unprivileged user the images run as. */
export const imageUser = { uid: 1000, gid: 1000 };

function assertUserId(userId: string): void {
  if (!userIdPattern.test(userId)) throw new Error(`invalid user id ${JSON.stringify(userId)}: expected a lowercase UUID`);
}

/** The whole id, never a prefix: the seeds' `editor-<first 8>` let two users collide. */
export function runtimeContainerName(userId: string): string {
  assertUserId(userId);
  return `rt-${userId}`;
}

export function editorContainerName(userId: string): string {
  assertUserId(userId);
  return `ed-${userId}`;
}

/**
 * Of a host's container names (one a line, as `podman ps --all --format {{.Names}}` prints them), those
 * that are the user's: the runtime, a runtime a snapshot restore made beside it (`rt-<id>-<8 hex>`), the editor.
 */
export function containersOfUser(names: string, userId: string): string[] {
  const runtime = runtimeContainerName(userId);
  const restored = new RegExp(`^${runtime}-[0-9a-f]{8}$`);
  return names
    .split('\n')
    .map((n) => n.trim())
    .filter((n) => n === runtime || n === editorContainerName(userId) || restored.test(n));
}

export function basePathOf(userId: string): string {
  assertUserId(userId);
  return `/u/${userId}/`;
}

/**
 * Who the user's processes run as on a host. The image's unprivileged user normally; on hosts whose
 * root lacks CAP_SYS_RESOURCE, CRIU can only checkpoint uid 0, so there they run as uid 0 with every
 * capability dropped (see HostFacts.rootHasSysResource).
 */
export function containerUserFor(host: { rootHasSysResource?: boolean }): { uid: number; gid: number } {
  return host.rootHasSysResource === false ? { uid: 0, gid: 0 } : imageUser;
}

export interface UserContainerCommon {
  userId: string;
  image: string;
  /** The user's files on the host: mounted as the container's home. */
  homeDir: string;
  user: { uid: number; gid: number };
}

const hardening = { capDrop: ['all'], noNewPrivileges: true } as const;

function labels(userId: string, role: 'runtime' | 'editor'): Record<string, string> {
  return { 'ai.markco.user': userId, 'ai.markco.role': role };
}

/** What a kernel reads datasets with: the data service's address as runtimes reach it, and a data token (lib/accounts.ts). */
export interface RuntimeDataAccess {
  url: string;
  token: string;
}

export function runtimeContainerSpec(
  input: UserContainerCommon & { limits: ResourceLimits; hostPort: number; publishAddress: string; data?: RuntimeDataAccess },
): RunContainerSpec {
  return {
    name: runtimeContainerName(input.userId),
    image: input.image,
    memoryBytes: input.limits.memoryBytes,
    cpus: input.limits.cpus,
    // Published on one address only: loopback on the base server, the private address on EC2 hosts,
    // so no other container can reach another user's runtime through the bridge gateway.
    ports: [{ hostIp: input.publishAddress, hostPort: input.hostPort, containerPort: runtimeContainerPort }],
    env: { HOME: containerHome, ...(input.data ? { MARKCO_DATA_URL: input.data.url } : {}) },
    ...(input.data ? { secretEnv: { MARKCO_DATA_TOKEN: input.data.token } } : {}),
    volumes: [{ hostPath: input.homeDir, containerPath: containerHome }],
    labels: labels(input.userId, 'runtime'),
    user: `${input.user.uid}:${input.user.gid}`,
    ...hardening,
    apparmorUnconfined: true,
  };
}

export interface EditorUser {
  id: string;
  name?: string | null;
  email?: string | null;
  plan: Plan;
}

export function editorContainerSpec(
  input: UserContainerCommon & { port: number; syncPort: number; runtimeHost: string; runtimePort: number; profile: EditorUser },
): RunContainerSpec {
  return {
    name: editorContainerName(input.userId),
    image: input.image,
    memoryBytes: editorLimits.memoryBytes,
    cpus: editorLimits.cpus,
    // The host network, bound to loopback by the image: the edge is its only client, and the editor
    // reaches runtimes on any host by address.
    network: 'host',
    env: {
      HOME: containerHome,
      PORT: String(input.port),
      MARKCO_SYNC_PORT: String(input.syncPort),
      CLOUD_MODE: '1',
      RUNTIME_PORT: String(input.runtimePort),
      RUNTIME_HOST: input.runtimeHost,
      BASE_PATH: basePathOf(input.userId),
      CLOUD_USER_ID: input.profile.id,
      CLOUD_USER_NAME: input.profile.name ?? '',
      CLOUD_USER_EMAIL: input.profile.email ?? '',
      CLOUD_USER_PLAN: input.profile.plan,
    },
    volumes: [{ hostPath: input.homeDir, containerPath: containerHome }],
    labels: labels(input.userId, 'editor'),
    user: `${input.user.uid}:${input.user.gid}`,
    ...hardening,
  };
}
