import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { escapeHtml, page } from './html.js';
import { DeleteAccountBody, OperatorDeleteBody } from './routes/account.js';
import { MigrateBody, StartRuntimeBody, WaitQuery } from './routes/compute.js';
import { ResourceEvent } from './routes/hooks.js';
import { CreateInviteBody } from './routes/invites.js';
import { ImportBody } from './routes/projects.js';
import { DevLoginBody } from './routes/session.js';
import { EmailBody, VerifyBody } from './routes/sign-in.js';
import { EmptyBody, RestoreBody, SandboxBody, SnapshotBody } from './routes/snapshots.js';

/**
 * The edge's API described for `/api/docs`. Bodies are validated by zod inside the handlers
 * (api/validation.ts), so the document is built from those same zod schemas plus this table, rather than
 * from Fastify route schemas the handlers do not use. A test compares the table with `app.routeList`: a
 * route added without a row here fails it.
 */

/** Who may call a route: decides the security requirement and the 401/403 answers documented. */
export type RouteAccess = 'public' | 'signed-in' | 'operator' | 'owner-or-operator';

export interface RouteDoc {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  summary: string;
  tag: string;
  access: RouteAccess;
  body?: z.ZodType;
  query?: z.ZodType;
  /** Answers beyond the access ones, by status code. */
  responses: Record<string, string>;
}

const operation = { '202': 'started: `{ operation_id, status }`, poll `/api/operations/{id}`', '200': 'finished within `?wait=`: the operation\'s final state', '400': 'invalid request', '404': 'no such runtime, snapshot or sandbox', '409': 'conflicts with the runtime\'s state or another operation' };

export const routeDocs: RouteDoc[] = [
  { method: 'GET', url: '/api/health', tag: 'operations', access: 'public', summary: 'Health of every part of the stack', responses: { '200': 'every part answers', '503': 'some parts are down (named in `down`)' } },
  { method: 'GET', url: '/api/services', tag: 'operations', access: 'operator', summary: 'Hosts, and runtimes and editors counted by state', responses: { '200': 'hosts and counts' } },
  { method: 'GET', url: '/metrics', tag: 'operations', access: 'operator', summary: 'Prometheus metrics (text format 0.0.4)', responses: { '200': 'the exposition' } },
  { method: 'GET', url: '/api/docs', tag: 'operations', access: 'public', summary: 'This API, as a page', responses: { '200': 'HTML' } },
  { method: 'GET', url: '/api/docs/openapi.json', tag: 'operations', access: 'public', summary: 'This API, as an OpenAPI 3.1 document', responses: { '200': 'the document' } },

  { method: 'GET', url: '/', tag: 'pages', access: 'signed-in', summary: 'Redirects to the dashboard', responses: { '302': 'to /dashboard' } },
  { method: 'GET', url: '/dashboard', tag: 'pages', access: 'signed-in', summary: 'Who you are, your runtime and editor', responses: { '200': 'HTML' } },
  { method: 'GET', url: '/login', tag: 'sign-in', access: 'public', summary: 'The sign-in page', responses: { '200': 'HTML' } },
  { method: 'GET', url: '/login/{provider}', tag: 'sign-in', access: 'public', summary: 'Starts signing in with an OAuth/OIDC provider', responses: { '302': 'to the provider', '404': 'no such provider' } },
  { method: 'GET', url: '/auth/callback/{provider}', tag: 'sign-in', access: 'public', summary: 'The provider\'s callback: opens a session', responses: { '302': 'signed in, on to the page asked for', '400': 'the provider refused or the sign-in expired', '403': 'state mismatch, or the account is being deleted', '404': 'no such provider' } },
  { method: 'POST', url: '/login/email', tag: 'sign-in', access: 'public', body: EmailBody, summary: 'Sends a sign-in link by email', responses: { '202': 'a link is on its way if the address may sign in', '400': 'invalid request', '404': 'email sign-in is not configured' } },
  { method: 'GET', url: '/auth/email/verify', tag: 'sign-in', access: 'public', summary: 'The page an email link opens (asks to confirm)', responses: { '200': 'HTML' } },
  { method: 'POST', url: '/auth/email/verify', tag: 'sign-in', access: 'public', body: VerifyBody, summary: 'Takes an email link\'s token: opens a session', responses: { '302': 'signed in', '400': 'invalid request', '403': 'the account is being deleted', '404': 'email sign-in is not configured', '410': 'the link expired or was used' } },
  { method: 'POST', url: '/auth/dev/login', tag: 'sign-in', access: 'public', body: DevLoginBody, summary: 'Development sign-in by email alone (MARKCO_DEV_LOGIN)', responses: { '200': 'the user and the login operation id; the session cookie is set', '400': 'invalid request', '403': 'the account is being deleted', '404': 'the development login is disabled' } },
  { method: 'POST', url: '/logout', tag: 'sign-in', access: 'public', summary: 'Ends the session', responses: { '303': 'to /login (browsers and forms)', '200': '`{ ok: true }` (API clients)' } },
  { method: 'DELETE', url: '/api/account', tag: 'account', access: 'signed-in', body: DeleteAccountBody, query: WaitQuery, summary: 'Deletes your own account (confirm with your email address)', responses: operation },
  { method: 'DELETE', url: '/api/users/{userId}', tag: 'account', access: 'operator', body: OperatorDeleteBody, query: WaitQuery, summary: 'Deletes a user\'s account (no body)', responses: operation },

  { method: 'POST', url: '/api/runtimes', tag: 'compute', access: 'operator', body: StartRuntimeBody, query: WaitQuery, summary: 'Starts a user\'s runtime and editor (login)', responses: operation },
  { method: 'GET', url: '/api/runtimes/{userId}', tag: 'compute', access: 'operator', summary: 'A user\'s runtime, editor and last migration', responses: { '200': 'the runtime', '404': 'no runtime' } },
  { method: 'DELETE', url: '/api/runtimes/{userId}', tag: 'compute', access: 'operator', query: WaitQuery, summary: 'Stops a user\'s runtime', responses: operation },
  { method: 'POST', url: '/api/runtimes/{userId}/migrate', tag: 'compute', access: 'operator', body: MigrateBody, query: WaitQuery, summary: 'Migrates a runtime to another tier or instance type', responses: operation },
  { method: 'POST', url: '/api/runtimes/{userId}/idle', tag: 'compute', access: 'operator', body: EmptyBody, query: WaitQuery, summary: 'Checkpoints the runtime as if the user went idle', responses: operation },
  { method: 'POST', url: '/api/runtimes/{userId}/wake', tag: 'compute', access: 'owner-or-operator', body: EmptyBody, query: WaitQuery, summary: 'Restores a checkpointed runtime (user return)', responses: operation },
  { method: 'POST', url: '/api/runtimes/{userId}/snapshot', tag: 'snapshots', access: 'owner-or-operator', body: SnapshotBody, query: WaitQuery, summary: 'Takes a named snapshot of the runtime', responses: operation },
  { method: 'GET', url: '/api/runtimes/{userId}/snapshots', tag: 'snapshots', access: 'owner-or-operator', summary: 'The user\'s snapshots', responses: { '200': 'the list' } },
  { method: 'POST', url: '/api/runtimes/{userId}/restore', tag: 'snapshots', access: 'owner-or-operator', body: RestoreBody, query: WaitQuery, summary: 'Restores a snapshot (by id or name)', responses: operation },
  { method: 'DELETE', url: '/api/runtimes/{userId}/snapshots/{snapshotId}', tag: 'snapshots', access: 'owner-or-operator', query: WaitQuery, summary: 'Deletes a snapshot', responses: operation },
  { method: 'POST', url: '/api/runtimes/{userId}/sandbox', tag: 'snapshots', access: 'owner-or-operator', body: SandboxBody, query: WaitQuery, summary: 'Forks the running runtime into a sandbox', responses: operation },
  { method: 'GET', url: '/api/runtimes/{userId}/sandboxes', tag: 'snapshots', access: 'owner-or-operator', summary: 'The user\'s live sandboxes', responses: { '200': 'the list' } },
  { method: 'DELETE', url: '/api/runtimes/{userId}/sandbox/{sandboxId}', tag: 'snapshots', access: 'owner-or-operator', query: WaitQuery, summary: 'Destroys a sandbox', responses: operation },
  { method: 'GET', url: '/api/operations/{id}', tag: 'compute', access: 'public', query: WaitQuery, summary: 'An operation\'s state (the id is unguessable: it is the capability)', responses: { '200': 'finished', '202': 'running', '404': 'no such operation' } },
  { method: 'POST', url: '/hooks/resource', tag: 'compute', access: 'operator', body: ResourceEvent, summary: 'A resource event from an external monitor (memory pressure, idle)', responses: { '202': 'taken', '400': 'invalid request', '404': 'no such runtime' } },

  { method: 'POST', url: '/api/invites', tag: 'collaboration', access: 'signed-in', body: CreateInviteBody, summary: 'Creates an invite link to one of your projects', responses: { '201': 'the invite with its token and URL', '400': 'invalid request' } },
  { method: 'GET', url: '/api/invites', tag: 'collaboration', access: 'signed-in', summary: 'Your invites', responses: { '200': 'the list' } },
  { method: 'GET', url: '/api/invites/{id}', tag: 'collaboration', access: 'signed-in', summary: 'One of your invites', responses: { '200': 'the invite', '404': 'no such invite' } },
  { method: 'DELETE', url: '/api/invites/{id}', tag: 'collaboration', access: 'signed-in', summary: 'Revokes an invite', responses: { '200': 'revoked', '400': 'not an invite id', '404': 'no such invite' } },
  { method: 'GET', url: '/api/memberships', tag: 'collaboration', access: 'signed-in', summary: 'Who collaborates with you, and with whom you collaborate', responses: { '200': 'the list' } },
  { method: 'DELETE', url: '/api/memberships/{id}', tag: 'collaboration', access: 'signed-in', summary: 'Ends a membership (either side); its WebSockets are cut', responses: { '200': 'ended', '404': 'no such membership' } },
  { method: 'GET', url: '/join/{token}', tag: 'collaboration', access: 'public', summary: 'Takes an invite link (signs in first if needed)', responses: { '303': 'joined: on to the owner\'s editor', '404': 'no such invite link', '410': 'the invite is used up, expired or revoked' } },

  { method: 'POST', url: '/projects/import', tag: 'projects', access: 'signed-in', body: ImportBody, summary: 'Imports a public git repository as a project', responses: { '201': 'imported', '202': 'still importing: `{ operation_id }`', '400': 'invalid request', '409': 'an import of that name is running' } },
  { method: 'GET', url: '/api/published', tag: 'projects', access: 'signed-in', summary: 'Your published projects', responses: { '200': 'the list' } },
];

/**
 * Registered routes the document leaves out, with why: catch-alls whose paths belong to users' editors and
 * published projects, not to this API.
 */
export const undocumentedRoutes: Record<string, string> = {
  '/u/:userId': 'the proxy to a user\'s editor (any method, the editor\'s own paths)',
  '/u/:userId/*': 'the proxy to a user\'s editor (any method, the editor\'s own paths)',
  '/@:user': 'published pages',
  '/@:user/*': 'published pages',
  '/_publish/:version/*': 'published pages\' static assets',
};

/** Fastify's `/a/:b` as OpenAPI's `/a/{b}`. */
export function openApiPath(fastifyUrl: string): string {
  return fastifyUrl.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function jsonSchemaOf(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

const securityOf: Record<RouteAccess, Record<string, string[]>[] | undefined> = {
  public: undefined,
  'signed-in': [{ sessionCookie: [] }, { sessionBearer: [] }],
  operator: [{ adminToken: [] }, { sessionCookie: [] }],
  'owner-or-operator': [{ adminToken: [] }, { sessionCookie: [] }, { sessionBearer: [] }],
};

const accessAnswers: Record<RouteAccess, Record<string, string>> = {
  public: {},
  'signed-in': { '401': 'not signed in (browsers are redirected to /login)' },
  operator: { '401': 'no admin token or session', '403': 'not an operator' },
  'owner-or-operator': { '401': 'not signed in', '403': 'another user\'s runtime' },
};

/** The OpenAPI 3.1 document: JSON Schema 2020-12 is its schema dialect, which is what zod emits. */
export function openApiDocument(docs: RouteDoc[] = routeDocs): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const doc of docs) {
    const pathParams = [...doc.url.matchAll(/\{([A-Za-z0-9_]+)\}/g)].map((m) => m[1]!);
    const queryParams = doc.query ? Object.entries((jsonSchemaOf(doc.query).properties ?? {}) as Record<string, unknown>) : [];
    const parameters = [
      ...pathParams.map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } })),
      ...queryParams.map(([name, schema]) => ({ name, in: 'query', required: false, schema })),
    ];
    const responses = Object.fromEntries(Object.entries({ ...doc.responses, ...accessAnswers[doc.access] }).map(([status, description]) => [status, { description }]));
    const security = securityOf[doc.access];
    (paths[doc.url] ??= {})[doc.method.toLowerCase()] = {
      summary: doc.summary,
      tags: [doc.tag],
      operationId: `${doc.method.toLowerCase()}${doc.url.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      ...(parameters.length ? { parameters } : {}),
      ...(doc.body ? { requestBody: { required: false, content: { 'application/json': { schema: jsonSchemaOf(doc.body) } } } } : {}),
      ...(security ? { security } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'markco edge API',
      version: '0.1.0',
      description: 'The Fastify edge of the markco control plane. Operations answer 202 with an operation id; add `?wait=<seconds>` to wait for the outcome.',
    },
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'MARKCO_ADMIN_TOKEN: operators and machines' },
        sessionBearer: { type: 'http', scheme: 'bearer', description: 'a session token, for API clients' },
        sessionCookie: { type: 'apiKey', in: 'cookie', name: 'markco_session', description: 'a browser session' },
      },
    },
  };
}

function docsPage(docs: RouteDoc[]): string {
  const rows = docs
    .map((d) => `<tr><td><code>${d.method}</code></td><td><code>${escapeHtml(d.url)}</code></td><td>${escapeHtml(d.summary)}</td><td>${d.access}</td><td>${d.body ? 'JSON' : ''}</td></tr>`)
    .join('\n');
  return page({
    title: 'markco edge API',
    body: `<h1>markco edge API</h1>
<p>The machine-readable document: <a href="/api/docs/openapi.json">/api/docs/openapi.json</a> (OpenAPI 3.1; load it into any OpenAPI viewer for the body schemas).</p>
<table><thead><tr><th>method</th><th>path</th><th>what</th><th>who</th><th>body</th></tr></thead><tbody>
${rows}
</tbody></table>`,
  });
}

/** `/api/docs` (a page) and `/api/docs/openapi.json`: public, like the code they describe. */
export function openApiRoutes(): FastifyPluginAsync {
  return async (app) => {
    let document: Record<string, unknown> | undefined;
    app.get('/api/docs/openapi.json', async (_req, reply) => reply.send((document ??= openApiDocument())));
    app.get('/api/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').send(docsPage(routeDocs)));
  };
}
