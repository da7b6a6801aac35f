// The gateways' limits, as served by GET /api/config, and the pure checks the editor
// runs before it applies an edit: an edit the room cannot take is refused with a
// message instead of being sent and getting the socket closed (and then re-sent on
// every reconnect, as the offline edits of a step 2).
export interface Limits {
  maxFrameBytes: number;
  maxDocBytes: number;
  maxUpdatesPerSecond: number;
  updateBurst: number;
}

/** What a gateway uses when nothing else is configured (shared/settings.py). */
export const DEFAULT_LIMITS: Limits = {
  maxFrameBytes: 262_144,
  maxDocBytes: 1_048_576,
  maxUpdatesPerSecond: 50,
  updateBurst: 200,
};

/** Room for the Yjs item ids, lengths and the sync framing around the inserted text. */
export const UPDATE_OVERHEAD = 1024;

function positive(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? v : fallback;
}

export function parseLimits(raw: unknown): Limits {
  const r = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  return {
    maxFrameBytes: positive(r.maxFrameBytes, DEFAULT_LIMITS.maxFrameBytes),
    maxDocBytes: positive(r.maxDocBytes, DEFAULT_LIMITS.maxDocBytes),
    maxUpdatesPerSecond: positive(r.maxUpdatesPerSecond, DEFAULT_LIMITS.maxUpdatesPerSecond),
    updateBurst: positive(r.updateBurst, DEFAULT_LIMITS.updateBurst),
  };
}

/** The UTF-8 length of a string (what Yjs writes for inserted text). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i += 1;
    } else n += 3;
  }
  return n;
}

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${+(n / (1024 * 1024)).toFixed(1)} MB`;
  if (n >= 1024) return `${Math.round(n / 1024)} KB`;
  return `${n} bytes`;
}

/**
 * Why an edit that inserts `inserted` bytes cannot be shared, or null when it can.
 * `unsent` is what this client changed while disconnected (sent as one message when it
 * reconnects); `docBytes` the size of the document now.
 */
export function refusal(inserted: number, docBytes: number, unsent: number, limits: Limits): string | null {
  if (inserted === 0) return null;
  if (inserted + UPDATE_OVERHEAD > limits.maxFrameBytes) {
    return (
      `That change (${formatBytes(inserted)}) is larger than the room can share at once ` +
      `(${formatBytes(limits.maxFrameBytes - UPDATE_OVERHEAD)}), so it was not made. Paste it in smaller parts.`
    );
  }
  if (inserted + unsent + UPDATE_OVERHEAD > limits.maxFrameBytes) {
    return (
      `You are offline with ${formatBytes(unsent)} of changes not yet shared; with this one they ` +
      `would be more than the room can take at once (${formatBytes(limits.maxFrameBytes - UPDATE_OVERHEAD)}), ` +
      "so it was not made. Wait until you are back online."
    );
  }
  if (docBytes + inserted + UPDATE_OVERHEAD > limits.maxDocBytes) {
    return (
      `The code would grow past the room's limit of ${formatBytes(limits.maxDocBytes)}, ` +
      "so that change was not made."
    );
  }
  return null;
}
