import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WithStartWorkflowOperation, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Activities } from '../../activities/index.js';
import { loginUpdate } from '../../workflows/contracts/runtime-entity.js';
import type { LoginPlan, RuntimePlacement } from '../../workflows/contracts/user-environment.js';
import { temporalClient, useHarness } from '../support/context.js';

/**
 * The login workflow's decisions with stand-in activities: what it cleans up when a step fails. The
 * real activities are exercised by login-workflow.test.ts and edge-login.test.ts.
 */
const h = useHarness();
// Each run has a user (and so an entity) of its own, on the run's own task queue.
let userId = '';

const planOf = (): LoginPlan => ({ user: { id: userId, name: null, email: 'c@example.test', plan: 'free' }, runtimeHostId: 'base', editorHostId: 'base', containerUser: { uid: 0, gid: 0 } });
const runtimeOf = (): RuntimePlacement => ({ runtimeId: 'rt-1', hostId: 'base', containerName: `rt-${userId}`, port: 28001, address: '127.0.0.1', state: 'starting', tier: 'base', memoryLimitBytes: 1, cpuLimit: 1 });

describe('login compensation (stand-in activities)', () => {
  let connection: NativeConnection;
  let client: Awaited<ReturnType<typeof temporalClient>>;
  const calls: string[] = [];
  let failAt: 'waitForRuntime' | 'readyEditor' = 'waitForRuntime';

  const fake: Partial<Activities> = {
    currentPlacement: async () => null,
    runtimePolicySettings: async () => ({ scaleDownAfterMs: 60_000, gpu: null }),
    planLogin: async () => planOf(),
    prepareHome: async () => ({ homeDir: '/x', initialized: false }),
    ensureRuntime: async () => runtimeOf(),
    waitForRuntime: async () => {
      if (failAt === 'waitForRuntime') throw ApplicationFailure.create({ type: 'InvalidInput', message: 'MRP never answered', nonRetryable: true });
      return { readyMs: 1 };
    },
    ensureEditor: async () => ({ editorId: 'ed-1', hostId: 'base', containerName: `ed-${userId}`, port: 20001, syncPort: 24001, address: '127.0.0.1', state: 'starting', url: `/u/${userId}/` }),
    readyEditor: async () => {
      throw ApplicationFailure.create({ type: 'InvalidInput', message: 'editor never answered', nonRetryable: true });
    },
    discardRuntime: async (input) => {
      calls.push(`discardRuntime ${input.runtimeId}`);
    },
    discardEditor: async () => {
      calls.push('discardEditor');
    },
    appendEvent: async (input) => {
      calls.push(`event ${input.type}`);
    },
  };

  async function runLogin(taskQueue: string) {
    const worker = await Worker.create({ connection, namespace: h.state.temporal.namespace, taskQueue, activities: fake, workflowBundle: { codePath: h.state.workflowBundlePath } });
    userId = `5d1c2b7e-0000-4000-8000-${randomBytes(6).toString('hex')}`;
    return worker.runUntil(async () => {
      // The way the edge starts a login: an update of the user's entity, which starts the login child.
      const ref = await client.client.workflow.executeUpdateWithStart(loginUpdate, {
        args: [{ userId }],
        startWorkflowOperation: new WithStartWorkflowOperation('userRuntime', { workflowId: `runtime/${userId}`, taskQueue, args: [{ userId }], workflowIdConflictPolicy: 'USE_EXISTING' }),
      });
      const outcome = await client.client.workflow.getHandle(ref.workflowId, ref.runId).result().catch((e: unknown) => e);
      await client.client.workflow.getHandle(`runtime/${userId}`).terminate('test done');
      return outcome;
    });
  }

  before(async () => {
    connection = await NativeConnection.connect({ address: h.state.temporal.address });
    client = await temporalClient(h.state);
  });
  after(async () => {
    await client.close();
    await connection.close();
  });

  test('a runtime that never answers is discarded with the editor started beside it, and the failure names the cause', async () => {
    calls.length = 0;
    failAt = 'waitForRuntime';
    const err = await runLogin(`test-${randomBytes(4).toString('hex')}`);
    assert.ok(err instanceof WorkflowFailedError);
    assert.match(String((err.cause as Error)?.cause ?? err.cause), /MRP never answered/);
    assert.deepEqual(calls, ['discardRuntime rt-1', 'discardEditor', 'event user.login-failed']);
  });

  test('an editor that never answers is discarded; the healthy runtime keeps serving', async () => {
    calls.length = 0;
    failAt = 'readyEditor';
    const err = await runLogin(`test-${randomBytes(4).toString('hex')}`);
    assert.ok(err instanceof WorkflowFailedError);
    assert.deepEqual(calls, ['discardEditor', 'event user.login-failed']);
  });
});
