/**
 * Which y-websocket messages a viewer may send to a document's sync server. A viewer follows the document
 * live (the server's updates reach it) and shows where it is (awareness), but changes nothing: of the
 * y-protocols messages only these pass:
 *   messageSync (0) / syncStep1 (0): "here is my state vector, send me what I lack" (a read);
 *   messageAwareness (1): cursor, name, selection.
 * Dropped: syncStep2 (0/1) and update (0/2), which carry document changes, and everything else (auth,
 * queries, text frames, unknown types). A frame must hold exactly one well-formed message: a server that
 * reads several messages per frame must not find a write hidden after an allowed one.
 */
export const messageSync = 0;
export const messageAwareness = 1;
export const syncStep1 = 0;
export const syncStep2 = 1;
export const syncUpdate = 2;

/** lib0's variable-length unsigned integer (7 bits per byte, little end first). */
function readVarUint(bytes: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let shift = 0;
  for (let i = at; i < bytes.length; i++) {
    const byte = bytes[i]!;
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return { value, next: i + 1 };
    shift += 7;
    // Lengths and types here are far below 2^53; a longer run is not a message we accept.
    if (shift > 49) return undefined;
  }
  return undefined;
}

/** A varUint length followed by exactly that many bytes, ending the frame. */
function isOneLengthPrefixedPayload(bytes: Uint8Array, at: number): boolean {
  const length = readVarUint(bytes, at);
  return length !== undefined && length.next + length.value === bytes.length;
}

/** Whether a frame from a viewer may go on to the sync server. */
export function viewerMayForward(frame: Uint8Array, isBinary: boolean): boolean {
  if (!isBinary) return false;
  const type = readVarUint(frame, 0);
  if (!type) return false;
  if (type.value === messageAwareness) return isOneLengthPrefixedPayload(frame, type.next);
  if (type.value !== messageSync) return false;
  const step = readVarUint(frame, type.next);
  return step !== undefined && step.value === syncStep1 && isOneLengthPrefixedPayload(frame, step.next);
}
