import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/** Paths never written to logs: credentials travel in these. */
export const redactPaths = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.password',
  '*.privateKey',
  '*.token',
  '*.adminToken',
  'config.http.adminToken',
];

/** Query parameters and path segments that carry secrets: sign-in links, OAuth codes, invite links. */
const secretParams = /([?&](?:token|code|state|_csrf|access_token|id_token|next)=)[^&#]*/gi;
const secretPaths = /^(\/join\/)[^/?#]+/;

/** A URL as it may be logged: secrets in its query or its invite path replaced. */
export function redactUrl(url: string | undefined): string | undefined {
  return url?.replace(secretParams, '$1[redacted]').replace(secretPaths, '$1[redacted]');
}

/** Fastify's request serializer, minus the secrets a URL can carry. */
const requestSerializer = (req: { method?: string; url?: string; ip?: string; headers?: Record<string, unknown>; host?: string }) => ({
  method: req.method,
  url: redactUrl(req.url),
  host: req.host,
  remoteAddress: req.ip,
});

/** One pino root per process: JSON to stdout, pretty only on a terminal (when pino-pretty is installed). */
export function createLogger(opts: { level: string; name: string; destination?: DestinationStream }): Logger {
  const options: LoggerOptions = {
    name: opts.name,
    level: opts.level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    serializers: { req: requestSerializer },
    base: { pid: process.pid },
  };
  if (opts.destination) return pino(options, opts.destination);
  if (process.stdout.isTTY && process.env.MARKCO_LOG_FORMAT !== 'json') {
    try {
      return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
    } catch {
      // pino-pretty is a dev dependency; production logs stay JSON.
    }
  }
  return pino(options);
}
