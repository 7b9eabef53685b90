import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { repoRoot } from '../../lib/paths.js';
import * as workflows from '../../workflows/index.js';
import { runbookCommands, shellWords } from '../support/runbook.js';

/**
 * docs/runbook.md against the worker's workflow types (issue 9): every operation has its section, the
 * `temporal` line that starts it (directly or as an update of the user's entity), a way to see its step,
 * a cancel line and what to check first when it is stuck; every JSON input in it is JSON.
 */
const runbook = readFileSync(join(repoRoot, 'docs', 'runbook.md'), 'utf8');
const commands = runbookCommands();
const workflowTypes = Object.keys(workflows).filter((name) => typeof (workflows as Record<string, unknown>)[name] === 'function');

/** Operations that run only through the entity `runtime/<userId>`: the update that starts each. */
const throughEntity: Record<string, string> = {
  login: 'login',
  stopRuntime: 'stopRuntime',
  migrateRuntime: 'migrate',
  idleCheckpoint: 'idle',
  returnRuntime: 'login',
  snapshotRuntime: 'snapshot',
  restoreSnapshot: 'restoreSnapshot',
  forkSandbox: 'sandbox',
  deleteAccount: 'deleteAccount',
};
/** Started by a schedule rather than by hand: the schedule's lines are what an operator runs. */
const bySchedule: Record<string, string> = { expireSandboxes: 'markco-sandbox-expiry' };

/** The runbook's `## ` sections, each with its text. */
function sections(): { heading: string; text: string }[] {
  const parts = runbook.split(/^## /m).slice(1);
  return parts.map((p) => ({ heading: p.slice(0, p.indexOf('\n')), text: p }));
}

function sectionOf(type: string): { heading: string; text: string } {
  const all = sections();
  const own = all.find((s) => s.heading.includes(type)) ?? all.find((s) => new RegExp(`\\*\\*${type}\\*\\*`).test(s.text));
  assert.ok(own, `docs/runbook.md has a section for ${type}`);
  return own;
}

describe('docs/runbook.md covers every workflow the worker serves', () => {
  test('the worker serves the workflow types this check knows about', () => {
    assert.ok(workflowTypes.length >= 19, `found ${workflowTypes.join(', ')}`);
  });

  for (const type of workflowTypes) {
    test(`${type}: a section, a start line, its step, a cancel line and what to check when stuck`, () => {
      const section = sectionOf(type);
      if (throughEntity[type]) {
        assert.ok(
          commands.some((c) => c.startsWith('temporal workflow execute-update-with-start ') && c.includes('--type userRuntime') && c.includes(`--update-name ${throughEntity[type]} `)),
          `the entity update ${throughEntity[type]} that runs ${type}`,
        );
      } else if (bySchedule[type]) {
        assert.ok(commands.some((c) => c.startsWith('temporal schedule trigger ') && c.includes(bySchedule[type]!)), `the schedule ${bySchedule[type]} that runs ${type}`);
      } else {
        assert.ok(commands.some((c) => /^temporal workflow (start|execute|execute-update-with-start) /.test(c) && new RegExp(`--type ${type}( |$)`).test(c)), `a temporal workflow start line of ${type}`);
      }
      assert.match(section.text, /stuck/i, `the ${section.heading} section says what to check first when one is stuck`);
    });
  }

  test('every workflow answers the step query and takes the cancel update, as the runbook says', () => {
    assert.ok(commands.some((c) => /^temporal workflow query .* --type step$/.test(c)));
    assert.ok(commands.some((c) => /^temporal workflow update execute .* --name cancel /.test(c)));
    assert.ok(commands.some((c) => /^temporal workflow cancel /.test(c)));
    assert.ok(commands.some((c) => /^temporal activity reset /.test(c)), 'retrying an activity now');
    assert.ok(commands.some((c) => /^temporal workflow reset /.test(c)));
    assert.ok(commands.some((c) => /^temporal workflow describe /.test(c)));
    const sources = ['delete-account', 'migrate', 'monitor', 'provision-host', 'reaper', 'register-host', 'snapshots', 'user-environment', 'user-runtime'].map((f) =>
      readFileSync(join(repoRoot, 'workflows', `${f}.ts`), 'utf8'),
    );
    for (const type of workflowTypes) {
      const source = sources.find((s) => new RegExp(`export async function ${type}\\(`).test(s));
      assert.ok(source, `the source of ${type}`);
      const body = source.slice(source.search(new RegExp(`export async function ${type}\\(`)));
      const end = body.indexOf('\nexport ', 1);
      assert.match(end > 0 ? body.slice(0, end) : body, /operatorControls\(|stepper\(/, `${type} registers the step query and the cancel update`);
    }
  });

  test('every JSON input in the runbook is JSON', () => {
    for (const line of commands) {
      const words = shellWords(line);
      for (const flag of ['--input', '--update-input']) {
        const at = words.indexOf(flag);
        if (at < 0) continue;
        const json = words[at + 1]!.replace(/"<[^>"]+>"/g, '"x"').replace(/<[^>]+>/g, '0');
        assert.doesNotThrow(() => JSON.parse(json), `${flag} of: ${line}`);
      }
    }
  });

  test('tctl users get the equivalent lines', () => {
    for (const verb of ['start', 'describe', 'query', 'cancel', 'reset', 'signal']) {
      assert.ok(commands.some((c) => c.startsWith(`tctl workflow ${verb} `)), `a tctl workflow ${verb} line`);
    }
  });
});
