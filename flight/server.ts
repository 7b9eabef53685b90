import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createAuth } from '../api/auth.js';
import { loadConfigOrExit } from '../lib/config.js';
import { createPool } from '../lib/db.js';
import { flightLocation } from '../lib/flight-probe.js';
import { createLogger, type Logger } from '../lib/logger.js';
import { createStore } from '../lib/store.js';
import type { UserRecord } from '../lib/accounts.js';
import { encapsulatedSchema, flightDataOfBatch, flightDataOfHeader, schemaHeader } from './arrow-ipc.js';
import { createFlightAccess, tokenFromMetadata, type FlightAccess } from './auth.js';
import { DatasetCatalog, type DatasetFile } from './datasets.js';
import { UnsupportedResultError } from './duckdb-arrow.js';
import { DatasetSandbox, QueryError, defaultSandboxLimits, type SandboxLimits } from './sandbox.js';
import { TicketError, TicketSchema, encodeTicket, parseTicket, splitDatasetId, type Ticket } from './ticket.js';

/**
 * The data service: an Arrow Flight server (gRPC, the Flight protocol's messages from flight/Flight.proto)
 * over the datasets directory. ListFlights lists the datasets the caller may read with their schema, row
 * and byte counts; GetFlightInfo/GetSchema describe a dataset (PATH `["<username>", "<name>"]` or
 * `["<username>/<name>"]`) or a query (CMD: a ticket's JSON); DoGet runs a ticket's SQL in a sandboxed
 * DuckDB (flight/sandbox.ts) and streams the result as Arrow record batches. Every call needs an edge
 * session token (flight/auth.ts). docs/flight.md has the design and a notebook example.
 */

const execFileAsync = promisify(execFile);
const protoPath = join(dirname(fileURLToPath(import.meta.url)), 'Flight.proto');

/** A Flight error: a gRPC status with a message meant for the person at the notebook. */
export class FlightError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'FlightError';
  }
}

const unauthenticated = () => new FlightError(grpc.status.UNAUTHENTICATED, 'sign in first: send an edge session token as "authorization: Bearer <token>" (or through the Flight handshake)');

interface DatasetSummary {
  schema: Buffer;
  rows: number;
}

export interface FlightServerOptions {
  datasetsDir: string;
  access: FlightAccess;
  log: Logger;
  limits?: SandboxLimits;
  /** Record batch size in rows (default 65,536). */
  batchRows?: number;
}

/**
 * A kernel's connection left open would keep CRIU from checkpointing its runtime (an established TCP
 * connection makes the idle checkpoint and migrations wait, activities/migration.ts): the server closes
 * connections idle this long (HTTP/2 GOAWAY), and pyarrow's client opens a new one on its next call.
 */
export const defaultIdleConnectionMs = 10_000;

export interface RunningFlightServer {
  port: number;
  /** `grpc://host:port`, what a Flight client connects to. */
  location: string;
  /** The addresses it listens on by now (a runtimes address may appear only after start). */
  listeningOn(): string[];
  close(): Promise<void>;
}

/** How often a runtimes address that does not exist yet is looked for (podman makes its bridge with the first container). */
const runtimeBindRetryMs = 5_000;

/** Wire messages as proto-loader decodes them (keepCase). */
interface FlightDescriptorMessage {
  type: 'UNKNOWN' | 'PATH' | 'CMD' | number;
  cmd: Buffer;
  path: string[];
}

export function createFlightService(opts: FlightServerOptions): { definition: grpc.ServiceDefinition; handlers: grpc.UntypedServiceImplementation } {
  const catalog = new DatasetCatalog(opts.datasetsDir);
  const limits = opts.limits ?? defaultSandboxLimits;
  const summaries = new Map<string, { key: string; summary: DatasetSummary }>();
  const log = opts.log;

  const packageDefinition = protoLoader.loadSync(protoPath, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  const proto = grpc.loadPackageDefinition(packageDefinition) as unknown as { arrow: { flight: { protocol: { FlightService: { service: grpc.ServiceDefinition } } } } };
  const base = proto.arrow.flight.protocol.FlightService.service;
  // DoGet's responses are already-encoded FlightData (flight/arrow-ipc.ts): sent as they are.
  const definition: grpc.ServiceDefinition = { ...base, DoGet: { ...base.DoGet!, responseSerialize: (b: Buffer) => b } };

  /** The user of a session token; a missing, unknown, expired or revoked one is UNAUTHENTICATED. */
  async function userOfToken(token: string | undefined): Promise<UserRecord> {
    if (!token) throw unauthenticated();
    const user = await opts.access.userOf(token);
    if (!user) throw new FlightError(grpc.status.UNAUTHENTICATED, 'the session token is unknown, expired or revoked: sign in again');
    return user;
  }

  const caller = (metadata: grpc.Metadata) => userOfToken(tokenFromMetadata(metadata));

  /** The dataset behind `<username>/<name>` if `user` may read it. */
  async function datasetFor(user: UserRecord, datasetId: string): Promise<{ dataset: DatasetFile; id: string }> {
    const { username, name } = splitDatasetId(datasetId);
    const owner = await opts.access.ownerByUsername(username);
    // Someone else's datasets: refused alike whether or not the owner or the dataset exists.
    if (!owner || !(await opts.access.mayRead(user, owner.id))) {
      throw new FlightError(grpc.status.PERMISSION_DENIED, `no access to ${datasetId}: datasets are readable by their owner and the collaborators they invited`);
    }
    const dataset = await catalog.find(owner.id, name);
    if (!dataset) throw new FlightError(grpc.status.NOT_FOUND, `no dataset ${datasetId}: ListFlights shows the datasets you can read`);
    return { dataset, id: `${owner.username}/${name}` };
  }

  async function summaryOf(dataset: DatasetFile): Promise<DatasetSummary> {
    const key = `${dataset.bytes}:${dataset.modifiedMs}`;
    const cached = summaries.get(dataset.path);
    if (cached?.key === key) return cached.summary;
    const sandbox = await DatasetSandbox.open(dataset, limits);
    try {
      const { schema, rows } = await sandbox.describe();
      const summary = { schema: encapsulatedSchema(schema), rows };
      summaries.set(dataset.path, { key, summary });
      return summary;
    } finally {
      sandbox.close();
    }
  }

  async function datasetInfo(dataset: DatasetFile, id: string) {
    const summary = await summaryOf(dataset);
    const ticket: Ticket = { dataset: id, sql: 'SELECT * FROM dataset' };
    return {
      schema: summary.schema,
      flight_descriptor: { type: 'PATH', path: id.split('/'), cmd: Buffer.alloc(0) },
      endpoint: [{ ticket: { ticket: encodeTicket(ticket) }, location: [] }],
      total_records: summary.rows,
      total_bytes: dataset.bytes,
      ordered: true,
    };
  }

  async function queryInfo(user: UserRecord, ticket: Ticket, cmd: Buffer) {
    const { dataset } = await datasetFor(user, ticket.dataset);
    const sandbox = await DatasetSandbox.open(dataset, limits);
    try {
      const prepared = await sandbox.prepare(ticket.sql);
      return {
        schema: encapsulatedSchema(prepared.schema),
        flight_descriptor: { type: 'CMD', cmd, path: [] },
        endpoint: [{ ticket: { ticket: encodeTicket(ticket) }, location: [] }],
        total_records: -1,
        total_bytes: -1,
        ordered: true,
      };
    } finally {
      sandbox.close();
    }
  }

  async function describe(user: UserRecord, descriptor: FlightDescriptorMessage) {
    if (descriptor.type === 'CMD' || descriptor.type === 2) return queryInfo(user, parseTicket(descriptor.cmd), descriptor.cmd);
    if (descriptor.type === 'PATH' || descriptor.type === 1) {
      const id = descriptor.path.join('/');
      if (!TicketSchema.shape.dataset.safeParse(id).success) {
        throw new FlightError(grpc.status.INVALID_ARGUMENT, `a dataset path is ["<owner username>", "<dataset name>"] or ["<owner username>/<dataset name>"], got ${JSON.stringify(descriptor.path)}`);
      }
      const { dataset, id: canonical } = await datasetFor(user, id);
      return datasetInfo(dataset, canonical);
    }
    throw new FlightError(grpc.status.INVALID_ARGUMENT, 'the descriptor must be a PATH (a dataset) or a CMD (a ticket\'s JSON)');
  }

  /** Any error as a gRPC status the client can act on; unexpected ones are logged and answered INTERNAL. */
  function toStatus(err: unknown, call: string): Partial<grpc.StatusObject> {
    if (err instanceof FlightError) return { code: err.code, details: err.message };
    if (err instanceof TicketError) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
    if (err instanceof UnsupportedResultError) return { code: grpc.status.INVALID_ARGUMENT, details: err.message };
    if (err instanceof QueryError) {
      const code = err.kind === 'forbidden' ? grpc.status.PERMISSION_DENIED : err.kind === 'resources' ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INVALID_ARGUMENT;
      return { code, details: err.message };
    }
    log.error({ err, call }, 'flight call failed');
    return { code: grpc.status.INTERNAL, details: `the data service failed: ${(err as Error)?.message ?? String(err)}` };
  }

  const unary = <Req, Res>(name: string, fn: (req: Req, metadata: grpc.Metadata) => Promise<Res>): grpc.handleUnaryCall<Req, Res> => (call, callback) => {
    fn(call.request, call.metadata).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toStatus(err, name) as grpc.ServiceError),
    );
  };

  async function writeAll<T>(call: grpc.ServerWritableStream<unknown, T>, messages: AsyncIterable<T> | Iterable<T>): Promise<void> {
    for await (const m of messages) {
      if (call.cancelled) return;
      if (!call.write(m)) await once(call, 'drain');
    }
  }

  const streaming = <Req, Res>(name: string, fn: (call: grpc.ServerWritableStream<Req, Res>) => Promise<void>): grpc.handleServerStreamingCall<Req, Res> => (call) => {
    fn(call).then(
      () => call.end(),
      // grpc-js sends a stream's status from an 'error' event carrying { code, details }.
      (err: unknown) => call.emit('error', toStatus(err, name)),
    );
  };

  const handlers: grpc.UntypedServiceImplementation = {
    Handshake: (call: grpc.ServerDuplexStream<{ payload: Buffer }, { protocol_version: number; payload: Buffer }>) => {
      let accepted: string | undefined;
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        call.emit('error', toStatus(err, 'Handshake'));
      };
      const accept = async (token: string | undefined) => {
        await userOfToken(token);
        if (accepted === undefined) {
          const headers = new grpc.Metadata();
          headers.set('authorization', `Bearer ${token}`);
          call.sendMetadata(headers);
        }
        accepted = token;
      };
      const fromHeader = tokenFromMetadata(call.metadata);
      const headerChecked = fromHeader ? accept(fromHeader) : Promise.resolve();
      headerChecked.catch(fail);
      call.on('data', (req: { payload: Buffer }) => {
        headerChecked
          .then(() => (accepted ? undefined : accept(req.payload.length > 0 ? req.payload.toString('utf8') : undefined)))
          .then(() => {
            if (!failed) call.write({ protocol_version: 0, payload: Buffer.from(accepted ?? '', 'utf8') });
          })
          .catch(fail);
      });
      call.on('end', () => {
        headerChecked
          .then(() => {
            if (failed) return;
            if (!accepted) return fail(unauthenticated());
            call.end();
          })
          .catch(fail);
      });
    },

    ListFlights: streaming('ListFlights', async (call) => {
      const user = await caller(call.metadata);
      const infos = async function* () {
        for (const owner of await opts.access.readableOwners(user)) {
          for (const dataset of await catalog.listOwner(owner.id)) {
            try {
              yield await datasetInfo(dataset, `${owner.username}/${dataset.name}`);
            } catch (err) {
              // One unreadable file (a broken CSV) must not hide the others.
              log.warn({ err, dataset: dataset.path }, 'a dataset could not be described; left out of ListFlights');
            }
          }
        }
      };
      await writeAll(call, infos());
    }),

    GetFlightInfo: unary('GetFlightInfo', async (descriptor: FlightDescriptorMessage, metadata) => describe(await caller(metadata), descriptor)),

    GetSchema: unary('GetSchema', async (descriptor: FlightDescriptorMessage, metadata) => ({ schema: (await describe(await caller(metadata), descriptor)).schema })),

    DoGet: streaming('DoGet', async (call: grpc.ServerWritableStream<{ ticket: Buffer }, Buffer>) => {
      const user = await caller(call.metadata);
      const ticket = parseTicket(call.request.ticket);
      const { dataset, id } = await datasetFor(user, ticket.dataset);
      const started = performance.now();
      const sandbox = await DatasetSandbox.open(dataset, limits);
      let rows = 0;
      try {
        const prepared = await sandbox.prepare(ticket.sql);
        const messages = async function* () {
          yield flightDataOfHeader(schemaHeader(prepared.schema));
          for await (const batch of prepared.run(opts.batchRows)) {
            rows += batch.rows;
            yield flightDataOfBatch(batch);
          }
        };
        await writeAll(call, messages());
      } finally {
        sandbox.close();
      }
      log.info({ user: user.id, dataset: id, rows, ms: Math.round(performance.now() - started), cancelled: call.cancelled }, 'flight DoGet');
    }),

    DoPut: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'uploads are not offered: datasets are files in the datasets directory' }),
    DoExchange: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'DoExchange is not offered' }),
    DoAction: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'no actions are offered' }),
    ListActions: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
  };
  return { definition, handlers };
}

/** Starts the service on `host:port` (0: a free port). */
export async function startFlightServer(
  opts: FlightServerOptions & {
    host: string;
    port: number;
    /**
     * Addresses of this machine where runtimes reach the service (podman's bridge gateway, the address
     * runtime hosts forward to), listened on as well, on the same port, as soon as each exists.
     */
    alsoListenOn?: readonly string[];
    idleConnectionMs?: number;
    /** How often an address not on this machine yet is looked for again (default 5 s). */
    addressPollMs?: number;
  },
): Promise<RunningFlightServer> {
  mkdirSync(opts.datasetsDir, { recursive: true });
  const server = new grpc.Server({
    'grpc.max_send_message_length': -1,
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    'grpc.max_connection_idle_ms': opts.idleConnectionMs ?? defaultIdleConnectionMs,
  });
  const { definition, handlers } = createFlightService(opts);
  server.addService(definition, handlers);
  const hostPort = (host: string, port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
  const bind = (address: string) =>
    new Promise<number>((resolve, reject) => server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const port = await bind(hostPort(opts.host, opts.port));
  const wildcard = ['0.0.0.0', '::'].includes(opts.host);
  const listening = new Set<string>([opts.host]);
  const waits = new Set<NodeJS.Timeout>();
  let closing: Promise<void> | undefined;
  const isLocalAddress = (address: string) =>
    Object.values(networkInterfaces()).some((addrs) => addrs?.some((a) => a.address === address));
  // grpc-js remembers a failed bind and answers every later one on that address with the same error, so
  // the server binds an address once, after it exists (podman makes its bridge with the first container).
  const bindWhenThere = async (address: string, waitedBefore: boolean) => {
    if (closing) return;
    if (!isLocalAddress(address)) {
      if (!waitedBefore) opts.log.warn({ address }, 'a runtimes address is not on this machine yet; the data service will listen there once it is');
      const wait = setTimeout(() => {
        waits.delete(wait);
        void bindWhenThere(address, true);
      }, opts.addressPollMs ?? runtimeBindRetryMs);
      wait.unref();
      waits.add(wait);
      return;
    }
    try {
      await bind(hostPort(address, port));
      listening.add(address);
      opts.log.info({ address: hostPort(address, port) }, 'data service listening for runtimes');
    } catch (err) {
      opts.log.error({ err, address: hostPort(address, port) }, 'the data service cannot listen for runtimes there');
    }
  };
  for (const address of new Set(opts.alsoListenOn ?? [])) {
    if (wildcard) listening.add(address);
    else if (!listening.has(address)) await bindWhenThere(address, false);
  }
  return {
    port,
    location: flightLocation(opts.host, port),
    listeningOn: () => [...listening],
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        for (const wait of waits) clearTimeout(wait);
        // Running streams get a few seconds to finish, then are cut.
        const force = setTimeout(() => server.forceShutdown(), 5000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      })),
  };
}

/** The gateway of podman's default network on this machine: what its containers reach as host.containers.internal. */
export async function podmanGateway(): Promise<string | undefined> {
  const { stdout } = await execFileAsync('podman', ['network', 'inspect', 'podman', '--format', '{{range .Subnets}}{{.Gateway}} {{end}}'], { timeout: 30_000 });
  return stdout.trim().split(/\s+/).find((a) => isIP(a) !== 0);
}

// ---------------------------------------------------------------- the process (started by scripts/start)

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const config = loadConfigOrExit();
  const log = createLogger({ level: config.logLevel, name: 'flight' });
  if (!config.database.url) {
    log.fatal('DATABASE_URL is not set: the data service checks edge sessions in PostgreSQL (scripts/start sets it)');
    process.exit(2);
  }
  const pool = createPool(config.database.url, { max: 5, application: 'markco-flight' });
  const store = createStore(pool);
  const auth = createAuth({ sessions: store.sessions, adminToken: undefined, secureCookies: false });
  const access = createFlightAccess({ auth, dataTokens: store.dataTokens, memberships: store.memberships, users: store.users });
  const alsoListenOn: string[] = [];
  if (config.flight.runtimeHost === 'podman') {
    const gateway = await podmanGateway().catch((err: unknown) => {
      log.warn({ err }, "podman's network could not be inspected: runtimes on this server will not reach the data service (MARKCO_FLIGHT_RUNTIME_HOST)");
      return null;
    });
    if (gateway) alsoListenOn.push(gateway);
    else if (gateway === undefined) log.warn("podman's network reports no gateway: runtimes on this server will not reach the data service (MARKCO_FLIGHT_RUNTIME_HOST)");
  } else if (config.flight.runtimeHost) alsoListenOn.push(config.flight.runtimeHost);
  if (config.flight.hostsHost) alsoListenOn.push(config.flight.hostsHost);
  const running = await startFlightServer({ host: config.http.host, port: config.flight.port, datasetsDir: config.flight.datasetsDir, access, log, alsoListenOn });
  log.info({ location: running.location, alsoListenOn, datasetsDir: config.flight.datasetsDir }, 'data service (Arrow Flight) listening');
  const stop = async (signal: string) => {
    log.info({ signal }, 'data service stopping');
    await running.close();
    await pool.end();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));
}
