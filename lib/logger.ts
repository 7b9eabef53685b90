import { pino, type Logger, type LoggerOptions } from 'pino';

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

/** One pino root per process: JSON to stdout, pretty only on a terminal (when pino-pretty is installed). */
export function createLogger(opts: { level: string; name: string }): Logger {
  const options: LoggerOptions = {
    name: opts.name,
    level: opts.level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    base: { pid: process.pid },
  };
  if (process.stdout.isTTY && process.env.MARKCO_LOG_FORMAT !== 'json') {
    try {
      return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
    } catch {
      // pino-pretty is a dev dependency; production logs stay JSON.
    }
  }
  return pino(options);
}
