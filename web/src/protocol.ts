// Wire format of the room socket, as pure functions (no sockets, no DOM).
// y-websocket framing: varUint message type, then the payload (lib0 encoding).
import * as decoding from "lib0/decoding";
import * as encoding from "lib0/encoding";
import { type ChatEvent, parseChatEvent } from "./chat";
import { parseSharedRun, type SharedRun } from "./run/result";

export const MESSAGE_SYNC = 0;
export const MESSAGE_AWARENESS = 1;
export const MESSAGE_AUTH = 2;
export const MESSAGE_QUERY_AWARENESS = 3;
export const MESSAGE_CONTROL = 100;

export type Role = "mentor" | "student" | "watcher";

export interface WelcomeEvent {
  type: "welcome";
  role: Role;
  clientId: string;
  resumeToken: string | null;
  session: string;
  blockId: string;
  graceSeconds?: number;
}
export interface PresenceEvent {
  type: "presence";
  mentor: boolean;
  students: number;
  watchers: number;
}
export interface SolvedEvent {
  type: "solved";
}
export interface RoomClosedEvent {
  type: "room-closed";
  reason: string;
}
/** A run shared by someone in the room (run/result.ts; docs/protocol.md). */
export interface RunEvent {
  type: "run";
  run: SharedRun;
}
/** The room's last runs, sent to a joiner. */
export interface RunsEvent {
  type: "runs";
  runs: SharedRun[];
}
export type ControlEvent = WelcomeEvent | PresenceEvent | SolvedEvent | RoomClosedEvent | RunEvent | RunsEvent | ChatEvent;

const ROLES: readonly string[] = ["mentor", "student", "watcher"];

/** Parse the JSON of a type-100 frame; null when it is not an event we understand. */
export function parseControl(json: string): ControlEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const ev = value as Record<string, unknown>;
  switch (ev.type) {
    case "welcome":
      if (typeof ev.role !== "string" || !ROLES.includes(ev.role)) return null;
      return {
        type: "welcome",
        role: ev.role as Role,
        clientId: String(ev.clientId ?? ""),
        resumeToken: typeof ev.resumeToken === "string" ? ev.resumeToken : null,
        session: String(ev.session ?? ""),
        blockId: String(ev.blockId ?? ""),
        graceSeconds: typeof ev.graceSeconds === "number" ? ev.graceSeconds : undefined,
      };
    case "presence":
      return {
        type: "presence",
        mentor: Boolean(ev.mentor),
        students: toCount(ev.students),
        watchers: toCount(ev.watchers),
      };
    case "solved":
      return { type: "solved" };
    case "room-closed":
      return { type: "room-closed", reason: String(ev.reason ?? "") };
    case "run": {
      const run = parseSharedRun(ev.run);
      return run ? { type: "run", run } : null;
    }
    case "runs": {
      if (!Array.isArray(ev.runs)) return null;
      const runs = ev.runs.map(parseSharedRun).filter((r): r is SharedRun => r !== null);
      return { type: "runs", runs };
    }
    default:
      return parseChatEvent(ev); // chat.ts: chat, hints, follow-me, refused
  }
}

function toCount(v: unknown): number {
  const n = typeof v === "number" ? v : Number(v);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : 0;
}

export function encodeControl(ev: object): Uint8Array {
  const enc = encoding.createEncoder();
  encoding.writeVarUint(enc, MESSAGE_CONTROL);
  encoding.writeVarString(enc, JSON.stringify(ev));
  return encoding.toUint8Array(enc);
}

/** Decode the body of a type-100 frame (after the message type). */
export function readControl(dec: decoding.Decoder): ControlEvent | null {
  try {
    return parseControl(decoding.readVarString(dec));
  } catch {
    return null;
  }
}

/** Decode the body of a type-2 auth frame: the reason when it is "permission denied". */
export function readAuth(dec: decoding.Decoder): string | null {
  try {
    const sub = decoding.readVarUint(dec);
    if (sub !== 0) return null;
    return decoding.readVarString(dec);
  } catch {
    return "permission denied";
  }
}

// --- close codes -------------------------------------------------------------------

// The same names and numbers as CloseCode in shared/protocol.py (a test compares them).
export const CLOSE = {
  NORMAL: 1000,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4000,
  BAD_REQUEST: 4400,
  FORBIDDEN: 4403,
  UNKNOWN_BLOCK: 4404,
  ROOM_FULL: 4409,
  ROOM_CLOSED: 4410,
  DOC_TOO_LARGE: 4413,
  RATE_LIMITED: 4429,
  UNAVAILABLE: 4503,
} as const;

/** The rule of the registry: 4400–4499 mirror HTTP 4xx and mean "do not reconnect". */
export function shouldReconnect(code: number): boolean {
  return !(code >= 4400 && code <= 4499);
}

/** What the page does after a terminal close code. */
export type Terminal =
  | { kind: "not-found" }
  | { kind: "lobby"; notice: string }
  | { kind: "error"; message: string };

export function terminalAction(code: number): Terminal {
  switch (code) {
    case CLOSE.UNKNOWN_BLOCK:
      return { kind: "not-found" };
    case CLOSE.ROOM_FULL:
      return { kind: "lobby", notice: "room-full" };
    case CLOSE.ROOM_CLOSED:
      return { kind: "lobby", notice: "mentor-left" };
    case CLOSE.FORBIDDEN:
      return { kind: "error", message: "This page's origin is not allowed to join rooms." };
    case CLOSE.DOC_TOO_LARGE:
      return { kind: "error", message: "The code grew too large for the room, so the connection was closed." };
    case CLOSE.RATE_LIMITED:
      return { kind: "error", message: "Too many connections or edits from here. Wait a moment and try again." };
    case CLOSE.BAD_REQUEST:
      return { kind: "error", message: "The server refused the connection (bad request)." };
    default:
      return { kind: "error", message: `The server closed the room connection (code ${code}).` };
  }
}

/** Lobby banners, keyed by the `notice` query parameter. */
export const NOTICES: Record<string, string> = {
  "mentor-left": "The mentor left, so the room was closed.",
  "room-full": "That room is full. Try again later.",
};
