import type { FastifyReply } from 'fastify';
import type { z } from 'zod';

/** Validates a body with a zod schema; on failure answers 400 naming each bad field and returns undefined. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown, reply: FastifyReply): z.infer<S> | undefined {
  const parsed = schema.safeParse(body ?? {});
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'body'}: ${i.message}`);
  void reply.code(400).send({ error: 'invalid request', message: problems.join('; '), problems });
  return undefined;
}
