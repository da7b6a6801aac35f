// Runs as data: what a run produced, what is shared with the room, and the room's runs
// as the page shows them. Pure (no DOM, no sockets); the gateway checks the same shape
// (services/gateway/runs.py, docs/protocol.md).
import { type Chunk, utf8Length, utf8Prefix } from "./output";

export type Language = "javascript" | "python";
export type RunState = "ok" | "error" | "timeout" | "stopped";
export type RunRole = "mentor" | "student" | "watcher";

export const LANGUAGES: readonly Language[] = ["javascript", "python"];
export const RUN_STATES: readonly RunState[] = ["ok", "error", "timeout", "stopped"];
/** Output shared with the room: the first 4 KB (UTF-8), as plain text. */
export const SHARED_OUTPUT_BYTES = 4096;
export const SHARED_ERROR_BYTES = 512;
export const DEFAULT_TIMEOUT_SECONDS = 5;
export const MAX_TIMEOUT_SECONDS = 60;
/** The gateway relays at most one run a second per member (a burst of 5 aside). */
export const SHARE_INTERVAL_MS = 1000;
/** Runs a late joiner is sent (the gateway keeps as many per room). */
export const RUNS_KEPT = 50;

export interface RunError {
  message: string;
  line: number | null;
}

export interface RunResult {
  language: Language;
  state: RunState;
  durationMs: number;
  chunks: Chunk[];
  droppedBytes: number;
  error: RunError | null;
}

/** The `run-result` control message a client sends (type 100). */
export interface RunResultMessage {
  type: "run-result";
  language: Language;
  state: RunState;
  durationMs: number;
  output: string;
  truncated: boolean;
  error: string | null;
  line: number | null;
}

/** A run as the gateway relays it (`run` event) and keeps it for late joiners. */
export interface SharedRun {
  id: string;
  clientId: string;
  name: string;
  role: RunRole;
  language: Language;
  state: RunState;
  durationMs: number;
  output: string;
  truncated: boolean;
  error: string | null;
  line: number | null;
  at: number;
}

/** The language a block's code runs in, or null when it cannot be run here. */
export function runLanguage(blockLanguage: string): Language | null {
  const lang = blockLanguage.trim().toLowerCase();
  if (lang === "javascript" || lang === "js") return "javascript";
  if (lang === "python" || lang === "py") return "python";
  return null;
}

/** A block's wall-clock limit in seconds: its own `runTimeoutSeconds`, else 5. */
export function timeoutSeconds(value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) return DEFAULT_TIMEOUT_SECONDS;
  return Math.min(MAX_TIMEOUT_SECONDS, value);
}

export function runResultMessage(result: RunResult): RunResultMessage {
  const all = result.chunks.map((c) => c.text).join("");
  const output = utf8Prefix(all, SHARED_OUTPUT_BYTES);
  return {
    type: "run-result",
    language: result.language,
    state: result.state,
    durationMs: Math.max(0, Math.round(result.durationMs)),
    output,
    truncated: output.length < all.length || result.droppedBytes > 0,
    error: result.error ? utf8Prefix(result.error.message, SHARED_ERROR_BYTES) : null,
    line: result.error?.line ?? null,
  };
}

function isCount(v: unknown, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Check a `run` event's run from the gateway; null when it is not one. */
export function parseSharedRun(v: unknown): SharedRun | null {
  if (typeof v !== "object" || v === null) return null;
  const r = v as Record<string, unknown>;
  if (typeof r.id !== "string" || typeof r.clientId !== "string" || typeof r.name !== "string") return null;
  if (r.role !== "mentor" && r.role !== "student" && r.role !== "watcher") return null;
  if (!LANGUAGES.includes(r.language as Language) || !RUN_STATES.includes(r.state as RunState)) return null;
  if (!isCount(r.durationMs, 86_400_000) || !isCount(r.at, Number.MAX_SAFE_INTEGER)) return null;
  if (typeof r.output !== "string" || utf8Length(r.output) > SHARED_OUTPUT_BYTES) return null;
  if (r.error !== null && typeof r.error !== "string") return null;
  if (r.line !== null && !isCount(r.line, 10_000_000)) return null;
  return {
    id: r.id,
    clientId: r.clientId,
    name: r.name,
    role: r.role,
    language: r.language as Language,
    state: r.state as RunState,
    durationMs: r.durationMs,
    output: r.output,
    truncated: r.truncated === true,
    error: r.error as string | null,
    line: r.line as number | null,
    at: r.at,
  };
}

/** Each person's latest run, newest first (the mentor's class dashboard). */
export function latestPerPerson(runs: readonly SharedRun[]): SharedRun[] {
  const latest = new Map<string, SharedRun>();
  for (const run of runs) {
    const seen = latest.get(run.clientId);
    if (!seen || run.at >= seen.at) latest.set(run.clientId, run);
  }
  return [...latest.values()].sort((a, b) => b.at - a.at);
}

/** Merge runs into a list kept in order, without duplicates, at most RUNS_KEPT. */
export function mergeRuns(known: readonly SharedRun[], incoming: readonly SharedRun[]): SharedRun[] {
  const byId = new Map(known.map((r) => [r.id, r]));
  for (const r of incoming) byId.set(r.id, r);
  return [...byId.values()].sort((a, b) => a.at - b.at).slice(-RUNS_KEPT);
}

/** The line of user code a JavaScript error points at, from its stack. */
export function jsErrorLine(stack: string, file: string): number | null {
  const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const m = new RegExp(`${escaped}:(\\d+)(?::\\d+)?`).exec(stack);
  return m ? Number(m[1]) : null;
}

/** Python traceback: the last line of user code (`File "<exec>", line N`) and the
 * traceback without the interpreter's own frames. */
export function pythonError(traceback: string, file = "<exec>"): { message: string; line: number | null; text: string } {
  const lines = traceback.replace(/\s+$/, "").split("\n");
  let line: number | null = null;
  const kept: string[] = [];
  let skipping = false;
  for (const l of lines) {
    const frame = /^\s*File "([^"]*)", line (\d+)/.exec(l);
    if (frame) {
      skipping = frame[1] !== file;
      if (!skipping) line = Number(frame[2]);
    } else if (!/^\s/.test(l)) {
      skipping = false;
    }
    if (!skipping) kept.push(l);
  }
  const message = lines[lines.length - 1] ?? "Error";
  return { message, line, text: `${kept.join("\n")}\n` };
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export const STATE_TEXT: Record<RunState, string> = {
  ok: "finished",
  error: "error",
  timeout: "timed out",
  stopped: "stopped",
};
