import fp from 'fastify-plugin';
import type { FastifyError } from 'fastify';

/**
 * One error mapping for the whole edge: validation errors say what is wrong (400), unknown routes are
 * JSON 404s, and server errors never leak internals (they are logged with the request instead).
 */
export default fp(
  async (app) => {
    app.setErrorHandler((err: FastifyError, req, reply) => {
      if (err.validation) {
        return reply.code(400).send({ error: 'invalid request', message: err.message });
      }
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) {
        req.log.error({ err, request: { method: req.method, url: req.url } }, 'request failed');
        return reply.code(status).send({ error: 'internal error', message: 'the server failed to handle this request; it has been logged' });
      }
      return reply.code(status).send({ error: err.code ?? 'error', message: err.message });
    });
    app.setNotFoundHandler((req, reply) => {
      reply.code(404).send({ error: 'not found', message: `no route for ${req.method} ${req.url.split('?')[0]}` });
    });
  },
  { name: 'errors' },
);
