import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Activities } from '../../activities/index.js';
import type { LoginPlan, RuntimePlacement } from '../../workflows/contracts/user-environment.js';
import { temporalClient, useHarness } from '../support/context.js';

/**
 * The login workflow's decisions with stand-in activities: what it cleans up when a step fails. The
 * real activities are exercised by login-workflow.test.ts and edge-login.test.ts.
 */
const h = useHarness();
const userId = '5d1c2b7e-0000-4000-8000-00000000c0de';

const plan: LoginPlan = { user: { id: userId, name: null, email: 'c@example.test', plan: 'free' }, runtimeHostId: 'base', editorHostId: 'base', containerUser: { uid: 0, gid: 0 } };
const runtime: RuntimePlacement = { runtimeId: 'rt-1', hostId: 'base', containerName: `rt-${userId}`, port: 28001, address: '127.0.0.1', state: 'starting', tier: 'base', memoryLimitBytes: 1, cpuLimit: 1 };

describe('login compensation (stand-in activities)', () => {
  let connection: NativeConnection;
  let client: Awaited<ReturnType<typeof temporalClient>>;
  const calls: string[] = [];
  let failAt: 'waitForRuntime' | 'readyEditor' = 'waitForRuntime';

  const fake: Partial<Activities> = {
    planLogin: async () => plan,
    prepareHome: async () => ({ homeDir: '/x', initialized: false }),
    ensureRuntime: async () => runtime,
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
    return worker.runUntil(
      client.client.workflow.execute('login', { taskQueue, workflowId: `test/${randomBytes(4).toString('hex')}`, args: [{ userId }] }).catch((e: unknown) => e),
    );
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
