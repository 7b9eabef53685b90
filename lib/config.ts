import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { defaultDataDir, defaultToolsDir } from './paths.js';
import { gpuInstanceSizes, gpuTierOf, parseTierLadder, type GpuSettings, type Tier } from './tiers.js';
import { Plans, type Plan } from '../workflows/contracts/users.js';

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
  // The worker's Temporal SDK metrics (Prometheus, at http://<address>/metrics); off unless set.
  MARKCO_WORKER_METRICS_ADDRESS: hostPort.optional().or(z.literal('').transform(() => undefined)),

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
  // Caddy in front (lib/caddy-config.ts): its admin API; unset, no Caddy is configured.
  MARKCO_CADDY_ADMIN_URL: z
    .string()
    .trim()
    .refine((v) => v === '' || /^http:\/\/[^\s/]+\/?$/.test(v), { message: 'expected the admin API address, for example http://localhost:2019' })
    .transform((v) => (v === '' ? undefined : v.replace(/\/+$/, '')))
    .optional(),
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
  MARKCO_S3_SSE: z.enum(['none', 'AES256', 'aws:kms']).default('AES256'),
  MARKCO_S3_KMS_KEY_ID: optionalString,
  MARKCO_S3_PART_MIB: z.coerce.number().int().min(5).max(5120).default(16),

  MARKCO_DEV_LOGIN: bool(false),

  // Sign-in (issue 7): an OpenID Connect provider (Google by default), GitHub, and email links. A
  // provider is offered when its client id and secret are both set. Callbacks: MARKCO_PUBLIC_URL/auth/callback/<id>.
  MARKCO_OIDC_ISSUER: z.string().trim().url('expected the issuer URL, such as https://accounts.google.com').default('https://accounts.google.com'),
  MARKCO_OIDC_PROVIDER: z.string().trim().regex(/^[a-z][a-z0-9-]{0,31}$/, 'expected a short lowercase id such as google').default('google'),
  MARKCO_OIDC_LABEL: z.string().trim().min(1).max(40).default('Google'),
  MARKCO_OIDC_CLIENT_ID: optionalString,
  MARKCO_OIDC_CLIENT_SECRET: optionalString,
  MARKCO_GITHUB_CLIENT_ID: optionalString,
  MARKCO_GITHUB_CLIENT_SECRET: optionalString,
  MARKCO_GITHUB_URL: z.string().trim().url().transform((v) => v.replace(/\/+$/, '')).default('https://github.com'),
  MARKCO_GITHUB_API_URL: z.string().trim().url().transform((v) => v.replace(/\/+$/, '')).default('https://api.github.com'),
  MARKCO_MAIL_TRANSPORT: z.enum(['none', 'file', 'smtp'], { error: 'expected none, file or smtp' }).default('none'),
  MARKCO_SMTP_URL: optionalString,
  MARKCO_MAIL_FROM: z.string().trim().min(3).default('markco <no-reply@localhost>'),

  // Users' containers.
  MARKCO_USERS_DIR: optionalString,
  MARKCO_ARCHIVES_DIR: optionalString,
  MARKCO_IDLE_STOP_EDITOR: bool(false),
  MARKCO_MONITOR_INTERVAL_MS: z.coerce.number({ error: 'expected milliseconds' }).int('expected whole milliseconds').min(100, 'expected 100 to 60000 ms').max(60_000, 'expected 100 to 60000 ms').default(2000),
  MARKCO_IDLE_AFTER_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(1, 'expected 1 to 604800 seconds').max(604_800, 'expected 1 to 604800 seconds').default(900),
  MARKCO_RUNTIME_IMAGE: z.string().trim().min(1).default('localhost/markco-runtime:0.4.2'),
  MARKCO_EDITOR_IMAGE: z.string().trim().min(1).default('localhost/markco-editor-lite:0.1'),
  MARKCO_IMPORT_ALLOW_PRIVATE: bool(false),

  // Publishing (/@<username>/<project>/...).
  MARKCO_PUBLISH_READER_URL: optionalString.refine(
    (v) => v === undefined || /^https?:\/\/[^\s/]+\/\S*$/.test(v) || /^\/[^\s/]\S*$/.test(v),
    'expected the URL of the mrmd reader script: https://... or a path on this site such as /static/mrmd-reader.iife.js',
  ),
  MARKCO_PUBLISH_CACHE_MB: z.coerce.number({ error: 'expected megabytes' }).int('expected whole megabytes').min(1, 'expected 1 to 4096 MB').max(4096, 'expected 1 to 4096 MB').default(64),
  MARKCO_PUBLISH_PAGE_MAX_AGE_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(0, 'expected 0 to 86400 seconds').max(86_400, 'expected 0 to 86400 seconds').default(60),

  // The data service (Arrow Flight over DuckDB, flight/server.ts): its port and the datasets it serves.
  MARKCO_FLIGHT_PORT: port(8815),
  MARKCO_DATASETS_DIR: optionalString,
  // Where runtimes on the base server reach it, which is where host.containers.internal points in their
  // containers: `podman` (the gateway of podman's default network, looked up), that gateway's IP address
  // given, or `none` (runtimes get no data service).
  MARKCO_FLIGHT_RUNTIME_HOST: z
    .string()
    .trim()
    .default('podman')
    .refine((v) => v === 'podman' || v === 'none' || isIP(v) !== 0, { message: "expected 'podman', 'none' or an IP address of this machine" }),
  // Where runtimes on other hosts (EC2) reach it: an IP address of this machine those hosts reach (its
  // private address). The service listens there too, and every host registered forwards its runtimes'
  // connections to host.containers.internal:<port> there. Unset: runtimes on other hosts have none.
  MARKCO_FLIGHT_HOSTS_HOST: optionalString.refine((v) => v === undefined || isIP(v) !== 0, { message: 'expected an IP address of this machine that runtime hosts reach' }),

  // Elastic compute: the tier ladder per plan (JSON; lib/tiers.ts has the default and the rules).
  MARKCO_TIER_LADDER: optionalString,

  // EC2 hosts for elastic compute (docs/design/elastic-compute.md §3.1).
  MARKCO_CLOUD: z
    .enum(['none', 'aws', 'simulated', ''], { error: 'expected one of none, aws, simulated' })
    .transform((v) => (v === '' ? 'none' : v))
    .default('none'),
  MARKCO_EC2_AMI_IDS: optionalString,
  MARKCO_EC2_SUBNET_ID: optionalString.refine((v) => v === undefined || /^subnet-[0-9a-f]{1,17}$/.test(v), 'expected a subnet id such as subnet-0123abcd'),
  MARKCO_EC2_SECURITY_GROUP_IDS: optionalString.refine(
    (v) => v === undefined || v.split(',').every((g) => /^sg-[0-9a-f]{1,17}$/.test(g.trim())),
    'expected security group ids separated by commas, such as sg-0123abcd,sg-4567ef01',
  ),
  MARKCO_EC2_SSH_USER: optionalString.refine((v) => v === undefined || /^[a-z_][a-z0-9_-]{0,31}$/.test(v), 'expected a login name such as ubuntu'),
  MARKCO_EC2_MARKET: z
    .enum(['on-demand', 'spot-then-on-demand', ''], { error: 'expected on-demand or spot-then-on-demand' })
    .transform((v) => (v === '' ? 'on-demand' : v))
    .default('on-demand'),
  MARKCO_DEPLOYMENT_ID: z.string().trim().regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a deployment id (letters, digits, dots, dashes, underscores; at most 64)').default('default'),
  MARKCO_SCALE_DOWN_AFTER_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(1, 'expected 1 to 604800 seconds').max(604_800, 'expected 1 to 604800 seconds').default(1800),
  MARKCO_RESERVATION_TTL_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(1, 'expected 1 to 86400 seconds').max(86_400, 'expected 1 to 86400 seconds').default(600),
  // The GPU hop (docs/gpu.md).
  MARKCO_GPU_INSTANCE_TYPE: z
    .string()
    .trim()
    .refine((v) => v === 'none' || v in gpuInstanceSizes, `expected none or one of ${Object.keys(gpuInstanceSizes).join(', ')}`)
    .default('g5.xlarge'),
  MARKCO_GPU_PLANS: z
    .string()
    .trim()
    .refine((v) => v === '' || v.split(',').every((p) => (Plans as readonly string[]).includes(p.trim())), `expected plans separated by commas (${Plans.join(', ')}), or empty for none`)
    .default('pro,team'),
  MARKCO_GPU_MARKET: z
    .enum(['on-demand', 'spot-then-on-demand'], { error: 'expected on-demand or spot-then-on-demand' })
    .default('spot-then-on-demand'),
  MARKCO_GPU_IDLE_AFTER_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(1, 'expected 1 to 86400 seconds').max(86_400, 'expected 1 to 86400 seconds').default(600),
  MARKCO_GPU_WAIT_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(0, 'expected 0 to 3600 seconds').max(3600, 'expected 0 to 3600 seconds').default(300),
  MARKCO_RUNTIME_GPU_IMAGE: z.string().trim().min(1).default('localhost/markco-runtime-gpu:0.4.2'),
  MARKCO_REAPER_GRACE_S: z.coerce.number({ error: 'expected seconds' }).int('expected whole seconds').min(0, 'expected 0 to 604800 seconds').max(604_800, 'expected 0 to 604800 seconds').default(900),
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
    /** Where the worker serves the Temporal SDK's Prometheus metrics (host:port), or undefined for none. */
    workerMetricsAddress: string | undefined;
  };
  http: { host: string; port: number; publicUrl: string; adminToken: string | undefined; devLogin: boolean; caddyAdminUrl?: string };
  hosts: {
    baseHostId: string;
    /** Where other hosts reach the base server (its private address in production). */
    baseHostAddress: string;
    sshKeyPath: string;
    sshConnectTimeoutMs: number;
    sshCommandTimeoutMs: number;
  };
  aws: {
    region: string;
    endpoint: string | undefined;
    snapshotBucket: string;
    /** How checkpoint archives are stored in the bucket (activities/archive-store.ts). */
    archives?: { encryption: { kind: 'none' } | { kind: 'AES256' } | { kind: 'aws:kms'; keyId?: string }; partBytes: number };
  };
  environment: {
    baseHostId: string;
    /** Absolute: every host keeps user `<id>`'s home at `<usersDir>/<id>`. */
    usersDir: string;
    runtimeImage: string;
    editorImage: string;
    allowPrivateImports: boolean;
    /** How long memory must stay low on an EC2 tier before the runtime is scaled down. */
    scaleDownAfterMs: number;
    /** Absolute: where the base server keeps checkpoint archives (`<dir>/<userId>/<snapshotId>.tar`). */
    archivesDir: string;
    /** An idle checkpoint also removes the editor; the next visit makes it again. */
    idleStopsEditor: boolean;
    /** The data service as runtimes reach it; absent when MARKCO_FLIGHT_RUNTIME_HOST=none. */
    dataService?: DataServiceAccess;
  };
  /** The resource monitor's sampling interval and idle time. */
  monitor: { intervalMs: number; idleAfterMs: number };
  tiers: Record<Plan, Tier[]>;
  signIn: SignInConfig;
  /** The GPU hop; null when MARKCO_GPU_INSTANCE_TYPE=none or no plan may use it. */
  gpu: GpuSettings | null;
  /** How long the edge holds a cell that uses the GPU while the runtime hops to a GPU host. */
  gpuWaitMs: number;
  cloud: CloudConfig;
  /** Published pages: the mrmd reader script they load, the render cache's size, browsers' and CDNs' max-age. */
  publish: { readerScriptUrl: string | null; cacheBytes: number; pageMaxAgeSeconds: number };
  /**
   * The data service: its port (on MARKCO_HOST), the datasets directory (absolute), and the address it
   * also listens on for runtimes (`podman`: the gateway of podman's network, looked up when it starts; null: none).
   */
  flight: { port: number; datasetsDir: string; runtimeHost: string | null; hostsHost: string | null };
}

/** The data service as runtime containers reach it (flight/server.ts, docs/flight.md). */
export interface DataServiceAccess {
  /** MARKCO_DATA_URL of a new runtime container: `grpc://host.containers.internal:<port>`. */
  url: string;
  /** Where other hosts forward their runtimes' connections to (MARKCO_FLIGHT_HOSTS_HOST); absent: runtimes on them have no data service. */
  hostsForward?: { address: string; port: number };
}

/** The sign-in providers and the mail transport (lib/sign-in-providers.ts, lib/mail.ts). */
export interface SignInConfig {
  oidc: { id: string; label: string; issuer: string; clientId: string; clientSecret: string } | undefined;
  github: { clientId: string; clientSecret: string; webUrl: string; apiUrl: string } | undefined;
  mail: { kind: 'none' } | { kind: 'file'; dir: string } | { kind: 'smtp'; url: string; from: string };
}

/** Where EC2 hosts come from and how they are launched, reached, reserved and reaped. */
export interface CloudConfig {
  /** `none`: only the base server; `aws`: real EC2; `simulated`: the EC2 emulator with namespace hosts. */
  provider: 'none' | 'aws' | 'simulated';
  /** AMI per instance family (the text before the dot of an instance type). */
  amiIds: Record<string, string>;
  subnetId: string | undefined;
  securityGroupIds: string[];
  /** Login of launched hosts; commands go through `sudo -n` unless it is root. */
  sshUser: string;
  market: 'on-demand' | 'spot-then-on-demand';
  /** Tag value (`markco:deployment`) that scopes the reaper to this deployment's instances. */
  deploymentId: string;
  reservationTtlSeconds: number;
  reaperGraceSeconds: number;
  /** The workers' ssh key: its `.pub` is authorised on every launched host. */
  sshKeyPath: string;
}

/** Instance family of an instance type: `t3` for `t3.large`. */
export function instanceFamily(instanceType: string): string {
  return instanceType.split('.')[0] ?? instanceType;
}

function parseAmiIds(json: string | undefined): Record<string, string> {
  if (json === undefined) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new Error(`expected JSON such as {"t3":"ami-0123abcd"}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('expected a JSON object from instance family to AMI id, such as {"t3":"ami-0123abcd"}');
  for (const [family, ami] of Object.entries(raw)) {
    if (!/^[a-z][a-z0-9-]{0,15}$/.test(family)) throw new Error(`${JSON.stringify(family)} is not an instance family (the text before the dot, such as t3)`);
    if (typeof ami !== 'string' || !/^ami-[0-9a-f]{8,17}$/.test(ami)) throw new Error(`the AMI of ${family} must be an id such as ami-0123abcd (got ${JSON.stringify(ami)})`);
  }
  return raw as Record<string, string>;
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
/**
 * The configuration of a process entry point: a bad setting prints what is wrong (ConfigError names each
 * variable) and exits with 2, before any logger exists.
 */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : String(err));
    process.exit(2);
  }
}

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
        const shown = variable.includes('TOKEN') || variable.includes('URL') || variable.includes('SECRET') ? '' : ` (got ${JSON.stringify(got)})`;
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
  let amiIds: Record<string, string>;
  try {
    amiIds = parseAmiIds(c.MARKCO_EC2_AMI_IDS);
  } catch (err) {
    throw new ConfigError([{ variable: 'MARKCO_EC2_AMI_IDS', message: (err as Error).message }]);
  }
  const provider = c.MARKCO_CLOUD as CloudConfig['provider'];
  if (provider === 'aws') {
    // Real EC2 must be fully described at start-up. The simulated cloud gets its subnet and AMIs from
    // setupSimulatedCloud after the main command has started the emulator, so only launches check them.
    const problems: { variable: string; message: string }[] = [];
    if (!c.MARKCO_EC2_SUBNET_ID) problems.push({ variable: 'MARKCO_EC2_SUBNET_ID', message: 'required when MARKCO_CLOUD=aws' });
    const families = [...new Set(Object.values(tiers).flatMap((ladder) => ladder.flatMap((t) => (t.instanceType ? [instanceFamily(t.instanceType)] : []))))];
    if (c.MARKCO_GPU_INSTANCE_TYPE !== 'none' && c.MARKCO_GPU_PLANS.trim() !== '') families.push(instanceFamily(c.MARKCO_GPU_INSTANCE_TYPE));
    const missing = families.filter((f) => !amiIds[f]);
    if (missing.length > 0) problems.push({ variable: 'MARKCO_EC2_AMI_IDS', message: `required when MARKCO_CLOUD=aws; no AMI for the tier ladder's famil${missing.length === 1 ? 'y' : 'ies'} ${missing.join(', ')}` });
    if (problems.length > 0) throw new ConfigError(problems);
  }
  if (c.MARKCO_S3_KMS_KEY_ID && c.MARKCO_S3_SSE !== 'aws:kms') {
    throw new ConfigError([{ variable: 'MARKCO_S3_KMS_KEY_ID', message: `only used with MARKCO_S3_SSE=aws:kms (it is ${c.MARKCO_S3_SSE})` }]);
  }
  const sshKeyPath = c.MARKCO_SSH_KEY_PATH ?? join(c.MARKCO_DATA_DIR, 'ssh', 'id_ed25519');
  const halfSet = (id: string | undefined, secret: string | undefined, name: string) =>
    (id === undefined) !== (secret === undefined) ? [{ variable: id === undefined ? `${name}_CLIENT_ID` : `${name}_CLIENT_SECRET`, message: `set together with ${id === undefined ? `${name}_CLIENT_SECRET` : `${name}_CLIENT_ID`}` }] : [];
  const signInProblems = [...halfSet(c.MARKCO_OIDC_CLIENT_ID, c.MARKCO_OIDC_CLIENT_SECRET, 'MARKCO_OIDC'), ...halfSet(c.MARKCO_GITHUB_CLIENT_ID, c.MARKCO_GITHUB_CLIENT_SECRET, 'MARKCO_GITHUB')];
  if (c.MARKCO_MAIL_TRANSPORT === 'smtp' && !c.MARKCO_SMTP_URL) signInProblems.push({ variable: 'MARKCO_SMTP_URL', message: 'required when MARKCO_MAIL_TRANSPORT=smtp (smtps://user:password@host:465)' });
  if (signInProblems.length > 0) throw new ConfigError(signInProblems);
  const signIn: SignInConfig = {
    oidc: c.MARKCO_OIDC_CLIENT_ID && c.MARKCO_OIDC_CLIENT_SECRET ? { id: c.MARKCO_OIDC_PROVIDER, label: c.MARKCO_OIDC_LABEL, issuer: c.MARKCO_OIDC_ISSUER, clientId: c.MARKCO_OIDC_CLIENT_ID, clientSecret: c.MARKCO_OIDC_CLIENT_SECRET } : undefined,
    github: c.MARKCO_GITHUB_CLIENT_ID && c.MARKCO_GITHUB_CLIENT_SECRET ? { clientId: c.MARKCO_GITHUB_CLIENT_ID, clientSecret: c.MARKCO_GITHUB_CLIENT_SECRET, webUrl: c.MARKCO_GITHUB_URL, apiUrl: c.MARKCO_GITHUB_API_URL } : undefined,
    mail: c.MARKCO_MAIL_TRANSPORT === 'smtp' ? { kind: 'smtp', url: c.MARKCO_SMTP_URL!, from: c.MARKCO_MAIL_FROM } : c.MARKCO_MAIL_TRANSPORT === 'file' ? { kind: 'file', dir: join(c.MARKCO_DATA_DIR, 'mail') } : { kind: 'none' },
  };
  const gpuPlans = c.MARKCO_GPU_PLANS.split(',').map((p) => p.trim()).filter((p): p is Plan => p !== '');
  const gpu: GpuSettings | null =
    c.MARKCO_GPU_INSTANCE_TYPE === 'none' || gpuPlans.length === 0
      ? null
      : { tier: gpuTierOf(c.MARKCO_GPU_INSTANCE_TYPE), plans: gpuPlans, idleAfterMs: c.MARKCO_GPU_IDLE_AFTER_S * 1000, market: c.MARKCO_GPU_MARKET, runtimeImage: c.MARKCO_RUNTIME_GPU_IMAGE };
  return {
    tiers,
    signIn,
    gpu,
    gpuWaitMs: c.MARKCO_GPU_WAIT_S * 1000,
    cloud: {
      provider,
      amiIds,
      subnetId: c.MARKCO_EC2_SUBNET_ID,
      securityGroupIds: c.MARKCO_EC2_SECURITY_GROUP_IDS ? c.MARKCO_EC2_SECURITY_GROUP_IDS.split(',').map((g) => g.trim()) : [],
      // The simulated hosts are namespace hosts whose sshd lets root in with the workers' key.
      sshUser: c.MARKCO_EC2_SSH_USER ?? (provider === 'simulated' ? 'root' : 'ubuntu'),
      market: c.MARKCO_EC2_MARKET as CloudConfig['market'],
      deploymentId: c.MARKCO_DEPLOYMENT_ID,
      reservationTtlSeconds: c.MARKCO_RESERVATION_TTL_S,
      reaperGraceSeconds: c.MARKCO_REAPER_GRACE_S,
      sshKeyPath,
    },
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
      workerMetricsAddress: c.MARKCO_WORKER_METRICS_ADDRESS,
    },
    http: {
      host: c.MARKCO_HOST,
      port: c.MARKCO_PORT,
      publicUrl: c.MARKCO_PUBLIC_URL,
      adminToken: c.MARKCO_ADMIN_TOKEN,
      devLogin: c.MARKCO_DEV_LOGIN,
      ...(c.MARKCO_CADDY_ADMIN_URL ? { caddyAdminUrl: c.MARKCO_CADDY_ADMIN_URL } : {}),
    },
    hosts: {
      baseHostId: c.MARKCO_BASE_HOST_ID,
      baseHostAddress: c.MARKCO_BASE_HOST_ADDRESS,
      sshKeyPath,
      sshConnectTimeoutMs: c.MARKCO_SSH_CONNECT_TIMEOUT_MS,
      sshCommandTimeoutMs: c.MARKCO_SSH_COMMAND_TIMEOUT_MS,
    },
    aws: {
      region: c.AWS_REGION,
      endpoint: c.AWS_ENDPOINT_URL,
      snapshotBucket: c.MARKCO_S3_BUCKET,
      archives: {
        encryption: c.MARKCO_S3_SSE === 'aws:kms' ? { kind: 'aws:kms', ...(c.MARKCO_S3_KMS_KEY_ID ? { keyId: c.MARKCO_S3_KMS_KEY_ID } : {}) } : { kind: c.MARKCO_S3_SSE },
        partBytes: c.MARKCO_S3_PART_MIB * 1024 * 1024,
      },
    },
    environment: {
      baseHostId: c.MARKCO_BASE_HOST_ID,
      usersDir: resolve(c.MARKCO_USERS_DIR ?? join(c.MARKCO_DATA_DIR, 'users')),
      runtimeImage: c.MARKCO_RUNTIME_IMAGE,
      editorImage: c.MARKCO_EDITOR_IMAGE,
      allowPrivateImports: c.MARKCO_IMPORT_ALLOW_PRIVATE,
      scaleDownAfterMs: c.MARKCO_SCALE_DOWN_AFTER_S * 1000,
      archivesDir: resolve(c.MARKCO_ARCHIVES_DIR ?? join(c.MARKCO_DATA_DIR, 'archives')),
      idleStopsEditor: c.MARKCO_IDLE_STOP_EDITOR,
      ...(c.MARKCO_FLIGHT_RUNTIME_HOST === 'none'
        ? {}
        : {
            dataService: {
              url: runtimeDataUrl(c.MARKCO_FLIGHT_PORT),
              ...(c.MARKCO_FLIGHT_HOSTS_HOST ? { hostsForward: { address: c.MARKCO_FLIGHT_HOSTS_HOST, port: c.MARKCO_FLIGHT_PORT } } : {}),
            },
          }),
    },
    monitor: { intervalMs: c.MARKCO_MONITOR_INTERVAL_MS, idleAfterMs: c.MARKCO_IDLE_AFTER_S * 1000 },
    publish: { readerScriptUrl: c.MARKCO_PUBLISH_READER_URL ?? null, cacheBytes: c.MARKCO_PUBLISH_CACHE_MB * 1024 * 1024, pageMaxAgeSeconds: c.MARKCO_PUBLISH_PAGE_MAX_AGE_S },
    flight: {
      port: c.MARKCO_FLIGHT_PORT,
      datasetsDir: resolve(c.MARKCO_DATASETS_DIR ?? join(c.MARKCO_DATA_DIR, 'datasets')),
      runtimeHost: c.MARKCO_FLIGHT_RUNTIME_HOST === 'none' ? null : c.MARKCO_FLIGHT_RUNTIME_HOST,
      hostsHost: c.MARKCO_FLIGHT_RUNTIME_HOST === 'none' ? null : (c.MARKCO_FLIGHT_HOSTS_HOST ?? null),
    },
  };
}

/**
 * The data service's URL as a runtime container has it: podman's name for the gateway of the host the
 * container is on, a name rather than an address because a restored runtime keeps its checkpoint's
 * environment on whatever host it lands (MARKCO_FLIGHT_RUNTIME_HOST only says where to listen).
 */
export function runtimeDataUrl(port: number): string {
  return `grpc://host.containers.internal:${port}`;
}

/** The variables, for the README's configuration reference test. */
export const configVariables: readonly string[] = Object.keys(ConfigSchema.shape);
