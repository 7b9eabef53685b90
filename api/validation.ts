import type { FastifyReply } from 'fastify';
import type { z } from 'zod';

/**
 * Validates a body with a zod schema; on failure answers 400 naming each bad field and returns undefined.
 * No body at all counts as `{}` (routes whose fields are all optional); a body that is JSON `null` is not
 * an absent one and fails like any other non-object.
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown, reply: FastifyReply): z.infer<S> | undefined {
  const parsed = schema.safeParse(body === undefined ? {} : body);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`);
  void reply.code(400).send({ error: 'invalid request', message: problems.join('; '), problems });
  return undefined;
}
