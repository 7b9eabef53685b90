import * as grpc from '@grpc/grpc-js';

/** Where a client on this machine reaches a Flight server bound to `host` (a wildcard bind, on loopback). */
export function flightLocation(host: string, port: number): string {
  const connect = ['0.0.0.0', '::'].includes(host) ? '127.0.0.1' : host;
  return `grpc://${connect.includes(':') ? `[${connect}]` : connect}:${port}`;
}

/**
 * Whether the data service answers Flight at `location` (`grpc://host:port`): a ListActions call, which it
 * answers without a token (with no actions). Resolves with the number of actions listed; throws with
 * gRPC's reason otherwise. For the edge's /api/health, which must not load DuckDB to ask.
 */
export async function flightAnswers(location: string, timeoutMs = 2000): Promise<{ actions: number }> {
  const target = location.replace(/^grpc(\+tcp)?:\/\//, '');
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    return await new Promise<{ actions: number }>((resolve, reject) => {
      let actions = 0;
      const call = client.makeServerStreamRequest(
        '/arrow.flight.protocol.FlightService/ListActions',
        () => Buffer.alloc(0),
        (b: Buffer) => b,
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
      );
      call.on('data', () => actions++);
      call.on('error', (err: grpc.ServiceError) => reject(new Error(`the data service at ${location} did not answer: ${err.details || err.message}`)));
      call.on('end', () => resolve({ actions }));
    });
  } finally {
    client.close();
  }
}
