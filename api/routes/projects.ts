import type { FastifyPluginAsync } from 'fastify';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { z } from 'zod';
import { projectNamePattern, type ImportProjectResult } from '../../workflows/contracts/user-environment.js';
import { requireUser } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parseBody } from '../validation.js';

export const ImportBody = z.strictObject({
  repo_url: z.url({ protocol: /^https?$/, error: 'expected an http(s) git URL of a public repository' }).max(2000),
  name: z
    .string()
    .regex(projectNamePattern, "expected letters, digits, '.', '_' or '-' (at most 64, not starting with a dot)")
    .optional(),
});

/** How long the request waits for the clone before answering 202 with the operation to poll. */
const importWaitMs = 90_000;

const statusOfFailure: Record<string, number> = { InvalidInput: 400, Conflict: 409, NotFound: 404 };

export function projectRoutes(deps: PlatformDeps): FastifyPluginAsync {
  return async (app) => {
    app.post('/projects/import', { preHandler: requireUser(deps.auth) }, async (req, reply) => {
      const body = parseBody(ImportBody, req.body, reply);
      if (!body) return reply;
      const user = req.user!;
      let operationId: string;
      try {
        ({ operationId } = await deps.operations.startImportProject({ userId: user.id, repoUrl: body.repo_url, ...(body.name ? { name: body.name } : {}) }));
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) return reply.code(409).send({ error: 'conflict', message: `an import named ${body.name} is already running` });
        throw err;
      }
      const state = await deps.operations.describe(operationId, { waitMs: importWaitMs });
      if (!state || state.status === 'running') return reply.code(202).send({ operation_id: operationId, status: 'running' });
      if (state.status === 'failed') {
        return reply.code(statusOfFailure[state.error?.type ?? ''] ?? 502).send({ error: 'import failed', message: state.error?.message ?? 'the import failed' });
      }
      return reply.code(201).send(state.result as ImportProjectResult);
    });
  };
}
