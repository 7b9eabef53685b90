import { join, resolve } from 'node:path';
import { z } from 'zod';
import { defaultDataDir, defaultToolsDir } from './paths.js';
import { parseTierLadder, type Tier } from './tiers.js';
import type { Plan } from '../workflows/contracts/users.js';

/**
 * Every environment variable the control plane reads, validated once per process at start-up.
 * Workflows read no config: values they need travel in their inputs.
 */
const port = (fallback: number) =>
  z.coerce
    .number({ error: 'expected a TCP port number' })
    .int('expected a whole number')
    .min(1, 'expected a TCP port between 1 and 65535')
    .max(65535, 'expected a TCP port between 1 and 65535')
    .default(fallback);

const optionalString = z
  .string()
  .trim()
  .transform((v) => (v === '' ? undefined : v))
  .optional();

const bool = (fallback: boolean) =>
  z
    .enum(['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off', ''], {
      error: 'expected one of 1, 0, true, false, yes, no, on, off',
    })
    .transform((v) => (v === '' ? fallback : ['1', 'true', 'yes', 'on'].includes(v)))
    .default(fallback);

const postgresUrl = z
  .string()
  .trim()
  .refine((v) => /^postgres(ql)?:\/\/[^\s]+$/.test(v), {
    message: 'expected a PostgreSQL URL such as postgres://user:password@host:5432/markco',
  });

const hostPort = z
  .string()
  .trim()
  .refine((v) => /^[A-Za-z0-9.-]+:\d{1,5}$/.test(v) || /^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(v), {
    message: 'expected host:port, for example localhost:7233',
  });

const ConfigSchema = z.object({
  MARKCO_DATA_DIR: z.string().trim().min(1).default(defaultDataDir),
  MARKCO_TOOLS_DIR: z.string().trim().min(1).default(defaultToolsDir),
  LOG_LEVEL: z
    .enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], {
      error: 'expected one of trace, debug, info, warn, error, fatal, silent',
    })
    .default('info'),

  // PostgreSQL: without DATABASE_URL the main command runs an embedded server in the data directory.
  DATABASE_URL: postgresUrl.optional().or(z.literal('').transform(() => undefined)),
  MARKCO_EMBEDDED_PG_PORT: port(54329),

  // Temporal: without TEMPORAL_ADDRESS the main command runs `temporal server start-dev`.
  TEMPORAL_ADDRESS: hostPort.optional().or(z.literal('').transform(() => undefined)),
  TEMPORAL_NAMESPACE: z.string().trim().regex(/^[A-Za-z0-9._-]{1,255}$/, 'expected a Temporal namespace name').default('default'),
  TEMPORAL_TASK_QUEUE: z.string().trim().regex(/^[A-Za-z0-9._-]{1,200}$/, 'expected a task queue name').default('markco-control'),
  TEMPORAL_CLI: optionalString,
  TEMPORAL_DEV_PORT: port(7233),
  TEMPORAL_UI_PORT: port(8233),
  MARKCO_WORKFLOW_BUNDLE: optionalString,

  // The edge.
  MARKCO_HOST: z.string().trim().min(1).default('127.0.0.1'),
  MARKCO_PORT: port(8080),
  MARKCO_PUBLIC_URL: z
    .string()
    .trim()
    .refine((v) => /^https?:\/\/[^\s/]+(\/[^\s]*)?$/.test(v), {
      message: 'expected the public base URL, for example https://markco.example.com',
    })
    .transform((v) => v.replace(/\/+$/, ''))
    .default('http://localhost:8080'),
  MARKCO_ADMIN_TOKEN: z
    .string()
    .min(32, 'expected at least 32 characters (generate one with: openssl rand -hex 32)')
    .optional()
    .or(z.literal('').transform(() => undefined)),

  // Hosts: the base server is reached through local child processes, every other host over ssh2.
  MARKCO_BASE_HOST_ADDRESS: z.string().trim().min(1).default('127.0.0.1'),
  MARKCO_BASE_HOST_ID: z.string().trim().regex(/^[a-z0-9][a-z0-9.-]{0,62}$/, 'expected a host id (lowercase letters, digits, dots, dashes)').default('base'),
  MARKCO_SSH_KEY_PATH: optionalString,
  MARKCO_SSH_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
  MARKCO_SSH_COMMAND_TIMEOUT_MS: z.coerce.number().int().min(100).max(3_600_000).default(120_000),

  // AWS (EC2 hosts, S3 snapshots). AWS_ENDPOINT_URL points both clients at an emulator.
  AWS_REGION: z.string().trim().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'expected an AWS region such as ca-central-1').default('ca-central-1'),
  AWS_ENDPOINT_URL: optionalString,
  MARKCO_S3_BUCKET: z.string().trim().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'expected an S3 bucket name').default('markco-snapshots'),

  MARKCO_DEV_LOGIN: bool(false),

  // Users' containers.
  MARKCO_USERS_DIR: optionalString,
  MARKCO_RUNTIME_IMAGE: z.string().trim().min(1).default('localhost/markco-runtime:0.4.2'),
  MARKCO_EDITOR_IMAGE: z.string().trim().min(1).default('localhost/markco-editor-lite:0.1'),
  MARKCO_IMPORT_ALLOW_PRIVATE: bool(false),

  // Elastic compute: the tier ladder per plan (JSON; lib/tiers.ts has the default and the rules).
  MARKCO_TIER_LADDER: optionalString,
});

type RawConfig = z.infer<typeof ConfigSchema>;

export interface Config {
  dataDir: string;
  toolsDir: string;
  logLevel: RawConfig['LOG_LEVEL'];
  database: { url: string | undefined; embeddedPort: number; embeddedDir: string };
  temporal: {
    address: string | undefined;
    namespace: string;
    taskQueue: string;
    cli: string | undefined;
    devPort: number;
    uiPort: number;
    devDbFile: string;
    workflowBundle: string | undefined;
  };
  http: { host: string; port: number; publicUrl: string; adminToken: string | undefined; devLogin: boolean };
  hosts: {
    baseHostId: string;
    /** Where other hosts reach the base server (its private address in production). */
    baseHostAddress: string;
    sshKeyPath: string;
    sshConnectTimeoutMs: number;
    sshCommandTimeoutMs: number;
  };
  aws: { region: string; endpoint: string | undefined; snapshotBucket: string };
  environment: {
    baseHostId: string;
    /** Absolute: every host keeps user `<id>`'s home at `<usersDir>/<id>`. */
    usersDir: string;
    runtimeImage: string;
    editorImage: string;
    allowPrivateImports: boolean;
  };
  tiers: Record<Plan, Tier[]>;
}

export class ConfigError extends Error {
  constructor(readonly problems: { variable: string; message: string }[]) {
    super(
      'Invalid configuration:\n' +
        problems.map((p) => `  ${p.variable}: ${p.message}`).join('\n') +
        '\nSee the configuration reference in README.md.',
    );
    this.name = 'ConfigError';
  }
}

/** Parses the environment once; throws ConfigError naming every bad variable and what it expects. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = Object.fromEntries(
    Object.keys(ConfigSchema.shape).flatMap((k) => (env[k] === undefined ? [] : [[k, env[k]]])),
  );
  const parsed = ConfigSchema.safeParse(known);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const variable = String(i.path[0] ?? '?');
        const got = env[variable];
        const shown = variable.includes('TOKEN') || variable.includes('URL') ? '' : ` (got ${JSON.stringify(got)})`;
        return { variable, message: `${i.message}${got === undefined ? '' : shown}` };
      }),
    );
  }
  const c = parsed.data;
  let tiers: Record<Plan, Tier[]>;
  try {
    tiers = parseTierLadder(c.MARKCO_TIER_LADDER);
  } catch (err) {
    throw new ConfigError([{ variable: 'MARKCO_TIER_LADDER', message: (err as Error).message.replace(/^MARKCO_TIER_LADDER:? ?/, '') }]);
  }
  return {
    tiers,
    dataDir: c.MARKCO_DATA_DIR,
    toolsDir: c.MARKCO_TOOLS_DIR,
    logLevel: c.LOG_LEVEL,
    database: { url: c.DATABASE_URL, embeddedPort: c.MARKCO_EMBEDDED_PG_PORT, embeddedDir: join(c.MARKCO_DATA_DIR, 'postgres') },
    temporal: {
      address: c.TEMPORAL_ADDRESS,
      namespace: c.TEMPORAL_NAMESPACE,
      taskQueue: c.TEMPORAL_TASK_QUEUE,
      cli: c.TEMPORAL_CLI,
      devPort: c.TEMPORAL_DEV_PORT,
      uiPort: c.TEMPORAL_UI_PORT,
      devDbFile: join(c.MARKCO_DATA_DIR, 'temporal', 'dev.sqlite'),
      workflowBundle: c.MARKCO_WORKFLOW_BUNDLE,
    },
    http: {
      host: c.MARKCO_HOST,
      port: c.MARKCO_PORT,
      publicUrl: c.MARKCO_PUBLIC_URL,
      adminToken: c.MARKCO_ADMIN_TOKEN,
      devLogin: c.MARKCO_DEV_LOGIN,
    },
    hosts: {
      baseHostId: c.MARKCO_BASE_HOST_ID,
      baseHostAddress: c.MARKCO_BASE_HOST_ADDRESS,
      sshKeyPath: c.MARKCO_SSH_KEY_PATH ?? join(c.MARKCO_DATA_DIR, 'ssh', 'id_ed25519'),
      sshConnectTimeoutMs: c.MARKCO_SSH_CONNECT_TIMEOUT_MS,
      sshCommandTimeoutMs: c.MARKCO_SSH_COMMAND_TIMEOUT_MS,
    },
    aws: { region: c.AWS_REGION, endpoint: c.AWS_ENDPOINT_URL, snapshotBucket: c.MARKCO_S3_BUCKET },
    environment: {
      baseHostId: c.MARKCO_BASE_HOST_ID,
      usersDir: resolve(c.MARKCO_USERS_DIR ?? join(c.MARKCO_DATA_DIR, 'users')),
      runtimeImage: c.MARKCO_RUNTIME_IMAGE,
      editorImage: c.MARKCO_EDITOR_IMAGE,
      allowPrivateImports: c.MARKCO_IMPORT_ALLOW_PRIVATE,
    },
  };
}

/** The variables, for the README's configuration reference test. */
export const configVariables: readonly string[] = Object.keys(ConfigSchema.shape);
