import { z } from 'zod';
import { usernamePattern } from '../workflows/contracts/users.js';
import { datasetNamePattern } from './datasets.js';

/**
 * A DoGet ticket (and a CMD descriptor): UTF-8 JSON `{"dataset": "<owner username>/<name>", "sql": "..."}`.
 * The SQL sees the dataset as the table `dataset`. Tickets are plain requests, not capabilities: the
 * caller's session is checked on every DoGet.
 */
export const maxSqlLength = 100_000;

export const TicketSchema = z
  .object({
    dataset: z
      .string({ error: 'dataset must be a string "<owner username>/<dataset name>"' })
      .refine((v) => {
        const [owner, name, ...rest] = v.split('/');
        return rest.length === 0 && owner !== undefined && name !== undefined && usernamePattern.test(owner) && datasetNamePattern.test(name);
      }, 'dataset must be "<owner username>/<dataset name>", such as "ada/trips"'),
    sql: z
      .string({ error: 'sql must be a string' })
      .min(1, 'sql must not be empty')
      .max(maxSqlLength, `sql must be at most ${maxSqlLength} characters`),
  })
  .strict();

export type Ticket = z.infer<typeof TicketSchema>;

export class TicketError extends Error {
  override name = 'TicketError';
}

export function parseTicket(bytes: Uint8Array): Ticket {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new TicketError('the ticket must be JSON such as {"dataset": "ada/trips", "sql": "SELECT * FROM dataset"}');
  }
  const parsed = TicketSchema.safeParse(raw);
  if (!parsed.success) throw new TicketError(`invalid ticket: ${parsed.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ')}`);
  return parsed.data;
}

export function encodeTicket(ticket: Ticket): Buffer {
  return Buffer.from(JSON.stringify(ticket), 'utf8');
}

/** `"ada/trips"` → owner username and dataset name (the ticket schema has checked the shape). */
export function splitDatasetId(id: string): { username: string; name: string } {
  const [username, name] = id.split('/') as [string, string];
  return { username, name };
}
