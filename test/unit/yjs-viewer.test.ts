import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { viewerMayForward } from '../../api/proxy/yjs-viewer.js';

// The messages are made by the real y-protocols encoders (as y-websocket's client makes them), from one
// CommonJS copy of yjs, as y-websocket loads it.
const require = createRequire(import.meta.url);
const Y = require('yjs') as typeof import('yjs');
const syncProtocol = require('y-protocols/sync') as typeof import('y-protocols/sync');
const awarenessProtocol = require('y-protocols/awareness') as typeof import('y-protocols/awareness');
const encoding = require('lib0/encoding') as typeof import('lib0/encoding');

const messageSync = 0;
const messageAwareness = 1;
const messageAuth = 2;
const messageQueryAwareness = 3;

function message(write: (encoder: ReturnType<typeof encoding.createEncoder>) => void): Uint8Array {
  const encoder = encoding.createEncoder();
  write(encoder);
  return encoding.toUint8Array(encoder);
}

function docWithText(text: string) {
  const doc = new Y.Doc();
  doc.getText('body').insert(0, text);
  return doc;
}

const doc = docWithText('hello from the viewer');
const syncStep1 = message((e) => {
  encoding.writeVarUint(e, messageSync);
  syncProtocol.writeSyncStep1(e, doc);
});
const syncStep2 = message((e) => {
  encoding.writeVarUint(e, messageSync);
  syncProtocol.writeSyncStep2(e, doc);
});
const update = message((e) => {
  encoding.writeVarUint(e, messageSync);
  syncProtocol.writeUpdate(e, Y.encodeStateAsUpdate(doc));
});
const awareness = new awarenessProtocol.Awareness(doc);
awareness.setLocalState({ user: { name: 'viewer' }, cursor: 3 });
const awarenessUpdate = message((e) => {
  encoding.writeVarUint(e, messageAwareness);
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]));
});

test('a viewer may send sync-step-1 (asking for the document) and awareness (where it is)', () => {
  assert.equal(viewerMayForward(syncStep1, true), true);
  assert.equal(viewerMayForward(awarenessUpdate, true), true);
});

test("a viewer's sync-step-2 and updates (document changes) are dropped", () => {
  assert.equal(viewerMayForward(syncStep2, true), false);
  assert.equal(viewerMayForward(update, true), false);
});

test('auth, awareness queries, unknown types, text frames and empty frames are dropped', () => {
  assert.equal(viewerMayForward(message((e) => encoding.writeVarUint(e, messageQueryAwareness)), true), false);
  assert.equal(
    viewerMayForward(
      message((e) => {
        encoding.writeVarUint(e, messageAuth);
        encoding.writeVarUint(e, 0);
      }),
      true,
    ),
    false,
  );
  assert.equal(viewerMayForward(Uint8Array.of(200, 1, 0), true), false);
  assert.equal(viewerMayForward(syncStep1, false), false, 'the same bytes as a text frame');
  assert.equal(viewerMayForward(new Uint8Array(0), true), false);
});

test('a write hidden after an allowed message, or a truncated message, is dropped', () => {
  const joined = new Uint8Array(syncStep1.length + update.length);
  joined.set(syncStep1);
  joined.set(update, syncStep1.length);
  assert.equal(viewerMayForward(joined, true), false, 'step 1 followed by an update in one frame');
  assert.equal(viewerMayForward(syncStep1.subarray(0, syncStep1.length - 1), true), false);
  assert.equal(viewerMayForward(awarenessUpdate.subarray(0, awarenessUpdate.length - 1), true), false);
  assert.equal(viewerMayForward(Uint8Array.of(0x80, 0x80), true), false, 'an unfinished varint');
  assert.equal(viewerMayForward(Uint8Array.of(0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), true), false, 'an overlong varint');
});

test('the message types agree with y-protocols', () => {
  assert.equal(syncProtocol.messageYjsSyncStep1, 0);
  assert.equal(syncProtocol.messageYjsSyncStep2, 1);
  assert.equal(syncProtocol.messageYjsUpdate, 2);
  awareness.destroy();
  doc.destroy();
});
