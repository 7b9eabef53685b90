import type { Agent } from 'node:http';
import type { ActivityTracker } from '../lib/activity-tracker.js';
import type { MailTransport } from '../lib/mail.js';
import type { Operations } from '../lib/operations.js';
import type { SignInProvider } from '../lib/sign-in-providers.js';
import type { Store } from '../lib/store.js';
import type { Tier } from '../lib/tiers.js';
import type { Plan } from '../workflows/contracts/users.js';
import type { Auth } from './auth.js';
import type { CollaboratorAccess, EditorTunnel } from './collaborators.js';
import type { ProxyTraffic } from './metrics.js';
import type { ExecuteHints } from './proxy/execute-hints.js';
import type { Publisher } from './publish/publisher.js';
import type { TunnelRegistry } from './proxy/forward.js';
import type { RouteTable } from './route-table.js';

/** What the edge's platform routes share: state, identity, operations, and the proxy's plumbing. */
export interface PlatformDeps {
  store: Store;
  auth: Auth;
  operations: Operations;
  routes: RouteTable;
  devLogin: boolean;
  adminConfigured: boolean;
  upstreamAgent: Agent;
  /** Live WebSockets to users' editors, cut by owner, session or membership (`closeWhere`). */
  tunnels: TunnelRegistry<EditorTunnel>;
  /** Who else may open a user's editor (memberships), and cutting access that ends. */
  collaborators: CollaboratorAccess;
  /** Traffic to a user's editor counts as activity: the monitor never takes that user for idle. */
  activity: ActivityTracker;
  /** Reads MRP execute requests on their way to the runtime: GPU and big-RAM hints, the GPU hop's hold. */
  executeHints: ExecuteHints;
  /** Requests and bytes through `/u/<id>/`, for `/metrics`. */
  proxyTraffic: ProxyTraffic;
  /** Sign-in providers, the mail transport for email links, and the public base URL every callback is built from. */
  signIn: { providers: Map<string, SignInProvider>; mail: MailTransport | undefined; publicUrl: string; secureCookies: boolean };
  /** The tier ladder per plan, to check a migration target before starting it. */
  tiers: Record<Plan, Tier[]>;
  /** Published projects (`/@<username>/<project>/...`) and how their pages are cached. */
  publishing: { publisher: Publisher; pageMaxAgeSeconds: number; readerScriptUrl: string | null };
}
