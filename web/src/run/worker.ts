// Runs inside a Web Worker created by the sandbox page (runner.ts), itself a sandboxed
// iframe without allow-same-origin whose CSP forbids every connection: user code here
// has no DOM, no storage, no cookies and no network. One worker runs JavaScript once
// (a fresh worker per run); a Python worker keeps Pyodide loaded between runs and gives
// each run fresh globals. The page kills the worker (and the frame) on timeout or stop.
import type { PyodideAPI } from "pyodide";
import { loadPyodide } from "pyodide";
import { OutputBuffer, type Stream } from "./output";
import { jsErrorLine, pythonError, type RunError } from "./result";

export interface PythonFiles {
  indexURL: string;
  lock: string;
  asm: ArrayBuffer;
  wasm: ArrayBuffer;
  stdlib: ArrayBuffer;
}

export type ToWorker =
  | { kind: "run"; runId: number; language: "javascript"; code: string }
  | { kind: "run"; runId: number; language: "python"; code: string; files?: PythonFiles };

export type FromWorker =
  | { kind: "loading"; runId: number }
  | { kind: "started"; runId: number }
  | { kind: "out"; runId: number; stream: Stream; text: string; dropped: number }
  | { kind: "done"; runId: number; state: "ok" | "error"; error: RunError | null };

const scope = self as unknown as {
  postMessage(msg: FromWorker): void;
  addEventListener(type: string, fn: (ev: MessageEvent<ToWorker>) => void): void;
  importScripts(...urls: string[]): void;
} & typeof globalThis;
const post = (msg: FromWorker): void => scope.postMessage(msg);

// --- output: each write is posted at once (a busy loop never yields, so nothing may
// wait for later), until KEEP_BYTES are kept; beyond that, only a count, now and then.
const DROPPED_EVERY_MS = 50;

class Sink {
  private readonly buffer = new OutputBuffer();
  private droppedSent = 0;
  private lastDropped = 0;

  constructor(private readonly runId: number) {}

  write(stream: Stream, text: string): void {
    const kept = this.buffer.push(stream, text);
    if (kept) post({ kind: "out", runId: this.runId, stream, text: kept.text, dropped: 0 });
    else if (Date.now() - this.lastDropped >= DROPPED_EVERY_MS) this.flush();
  }

  flush(): void {
    this.lastDropped = Date.now();
    const dropped = this.buffer.droppedBytes - this.droppedSent;
    this.droppedSent = this.buffer.droppedBytes;
    if (dropped > 0) post({ kind: "out", runId: this.runId, stream: "stdout", text: "", dropped });
  }
}

// --- JavaScript -------------------------------------------------------------------------
const USER_FILE = "user-code.js";
const SETTLE_MS = 50;
const realSetTimeout = setTimeout;
const realClearTimeout = clearTimeout;
const realSetInterval = setInterval;
const realClearInterval = clearInterval;

function show(value: unknown, seen = new WeakSet<object>(), depth = 0): string {
  if (typeof value === "string") return depth === 0 ? value : JSON.stringify(value);
  if (typeof value === "function") return `[Function: ${value.name || "(anonymous)"}]`;
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol" || value === undefined || value === null || typeof value !== "object") {
    return String(value);
  }
  if (value instanceof Error) return value.stack && depth === 0 ? cleanStack(value) : `${value.name}: ${value.message}`;
  if (seen.has(value)) return "[Circular]";
  if (depth > 4) return Array.isArray(value) ? "[Array]" : "[Object]";
  seen.add(value);
  try {
    if (Array.isArray(value)) return `[ ${value.map((v) => show(v, seen, depth + 1)).join(", ")} ]`;
    if (value instanceof Map) {
      return `Map(${value.size}) { ${[...value].map(([k, v]) => `${show(k, seen, depth + 1)} => ${show(v, seen, depth + 1)}`).join(", ")} }`;
    }
    if (value instanceof Set) return `Set(${value.size}) { ${[...value].map((v) => show(v, seen, depth + 1)).join(", ")} }`;
    if (value instanceof Promise) return "Promise { … }";
    const entries = Object.entries(value).map(([k, v]) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}: ${show(v, seen, depth + 1)}`);
    const name = value.constructor && value.constructor !== Object ? `${value.constructor.name} ` : "";
    return entries.length ? `${name}{ ${entries.join(", ")} }` : `${name}{}`;
  } finally {
    seen.delete(value);
  }
}

function cleanStack(err: Error): string {
  // Keep the message and the frames in the user's code, with their lines.
  const lines = (err.stack ?? `${err.name}: ${err.message}`).split("\n");
  const head = lines[0]?.startsWith(err.name) ? [lines[0]] : [`${err.name}: ${err.message}`];
  const frames = lines.filter((l) => l.includes(USER_FILE));
  return [...head, ...frames].join("\n");
}

function runJavaScript(runId: number, code: string): void {
  const sink = new Sink(runId);
  const timers = new Set<number>();
  let finished = false;

  const finish = (state: "ok" | "error", error: RunError | null): void => {
    if (finished) return;
    finished = true;
    sink.flush();
    post({ kind: "done", runId, state, error });
  };
  const fail = (err: unknown): void => {
    if (finished) return;
    const e = err instanceof Error ? err : new Error(String(err));
    sink.write("stderr", `Uncaught ${show(e)}\n`);
    finish("error", { message: `${e.name}: ${e.message}`, line: jsErrorLine(e.stack ?? "", USER_FILE) });
  };
  // Node's rule: the run is over when nothing is left to do: no timer pending, and
  // nothing happened for SETTLE_MS (events of a blocked request arrive as tasks, after
  // the microtasks); an uncaught error ends it at once.
  let idle = false;
  let lastActivity = 0;
  const settle = (): void => {
    const quiet = Date.now() - lastActivity;
    if (quiet < SETTLE_MS) {
      realSetTimeout(settle, SETTLE_MS - quiet);
      return;
    }
    idle = false;
    if (timers.size === 0) finish("ok", null);
  };
  const checkIdle = (): void => {
    if (finished) return;
    lastActivity = Date.now();
    if (!idle) {
      idle = true;
      realSetTimeout(settle, SETTLE_MS);
    }
  };
  const wrap = (fn: unknown, args: unknown[], id: () => number, once: boolean) => () => {
    if (finished) return;
    if (once) timers.delete(id());
    try {
      if (typeof fn === "function") fn(...args);
    } catch (err) {
      fail(err);
      return;
    }
    checkIdle();
  };

  const g = scope as unknown as Record<string, unknown>;
  g.setTimeout = (fn: unknown, ms?: number, ...args: unknown[]): number => {
    let handle = 0;
    handle = realSetTimeout(wrap(fn, args, () => handle, true), ms) as unknown as number;
    timers.add(handle);
    return handle;
  };
  g.clearTimeout = (handle: number): void => {
    timers.delete(handle);
    realClearTimeout(handle);
    checkIdle();
  };
  g.setInterval = (fn: unknown, ms?: number, ...args: unknown[]): number => {
    let handle = 0;
    handle = realSetInterval(wrap(fn, args, () => handle, false), ms) as unknown as number;
    timers.add(handle);
    return handle;
  };
  g.clearInterval = (handle: number): void => {
    timers.delete(handle);
    realClearInterval(handle);
    checkIdle();
  };
  const log = (stream: Stream) => (...args: unknown[]) => {
    if (finished) return;
    sink.write(stream, `${args.map((a) => show(a)).join(" ")}\n`);
    if (timers.size === 0) checkIdle();
  };
  g.console = {
    log: log("stdout"),
    info: log("stdout"),
    debug: log("stdout"),
    table: log("stdout"),
    dir: log("stdout"),
    warn: log("stderr"),
    error: log("stderr"),
    trace: log("stderr"),
    assert: (cond: unknown, ...args: unknown[]) => {
      if (!cond) log("stderr")("Assertion failed:", ...args);
    },
  };
  scope.addEventListener("unhandledrejection", ((ev: PromiseRejectionEvent) => {
    ev.preventDefault();
    fail(ev.reason);
  }) as unknown as (ev: MessageEvent<ToWorker>) => void);
  scope.addEventListener("error", ((ev: ErrorEvent) => {
    ev.preventDefault();
    fail(ev.error ?? new Error(ev.message));
  }) as unknown as (ev: MessageEvent<ToWorker>) => void);

  post({ kind: "started", runId });
  // The code runs as a classic script from a blob (the CSP allows blob: scripts but no
  // eval), so its errors carry real line numbers.
  const url = URL.createObjectURL(new Blob([`${code}\n//# sourceURL=${USER_FILE}\n`], { type: "text/javascript" }));
  try {
    scope.importScripts(url);
  } catch (err) {
    fail(err);
  } finally {
    URL.revokeObjectURL(url);
  }
  checkIdle();
}

// --- Python -----------------------------------------------------------------------------
let pyodide: Promise<PyodideAPI> | null = null;
let pySink: Sink | null = null;

async function startPython(files: PythonFiles): Promise<PyodideAPI> {
  // Pyodide is given its files by the page (fetched from our own /static/pyodide/): this
  // frame may connect nowhere, so while Pyodide starts, fetch() answers from memory
  // and only for those files. Nothing else can be loaded (no packages, no micropip).
  const asmUrl = URL.createObjectURL(new Blob([files.asm], { type: "text/javascript" }));
  const module = (await import(/* @vite-ignore */ asmUrl)) as { default: unknown };
  URL.revokeObjectURL(asmUrl);
  const served: Record<string, [ArrayBuffer, string]> = {
    [`${files.indexURL}pyodide.asm.wasm`]: [files.wasm, "application/wasm"],
    [`${files.indexURL}python_stdlib.zip`]: [files.stdlib, "application/zip"],
  };
  const realFetch = scope.fetch;
  scope.fetch = (async (input: RequestInfo | URL): Promise<Response> => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const file = served[url];
    if (!file) throw new TypeError(`coderoom: ${url} is not available in the sandbox`);
    return new Response(file[0], { headers: { "Content-Type": file[1] } });
  }) as typeof fetch;
  try {
    const py = await loadPyodide({
      indexURL: files.indexURL,
      packageBaseUrl: files.indexURL,
      lockFileContents: files.lock,
      createPyodideModule: module.default as never,
      stdout: undefined,
      stderr: undefined,
      env: { HOME: "/home/pyodide" },
    });
    py.setStdout({ write: (buf: Uint8Array) => writePy("stdout", buf) });
    py.setStderr({ write: (buf: Uint8Array) => writePy("stderr", buf) });
    py.setStdin({ error: true });
    return py;
  } finally {
    scope.fetch = realFetch;
  }
}

const pyDecoders: Record<Stream, TextDecoder> = { stdout: new TextDecoder(), stderr: new TextDecoder() };

function writePy(stream: Stream, buf: Uint8Array): number {
  pySink?.write(stream, pyDecoders[stream].decode(buf, { stream: true }));
  return buf.length;
}

async function runPython(runId: number, code: string, files?: PythonFiles): Promise<void> {
  if (!pyodide) {
    if (!files) {
      post({ kind: "done", runId, state: "error", error: { message: "Python is not loaded", line: null } });
      return;
    }
    post({ kind: "loading", runId });
    pyodide = startPython(files);
  }
  let py: PyodideAPI;
  try {
    py = await pyodide;
  } catch (err) {
    pyodide = null;
    post({ kind: "done", runId, state: "error", error: { message: `Python could not start: ${String(err)}`, line: null } });
    return;
  }
  const sink = new Sink(runId);
  pySink = sink;
  const globals = py.globals.get("dict")();
  globals.set("__name__", "__main__");
  post({ kind: "started", runId });
  let error: RunError | null = null;
  try {
    await py.runPythonAsync(code, { globals, filename: "<exec>" });
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    const parsed = pythonError(text);
    sink.write("stderr", parsed.text);
    error = { message: parsed.message, line: parsed.line };
  } finally {
    try {
      py.runPython("import sys\nsys.stdout.flush()\nsys.stderr.flush()");
    } catch {
      // the streams were replaced by the user's code: nothing to flush
    }
    globals.destroy();
  }
  pySink = null;
  sink.flush();
  post({ kind: "done", runId, state: error ? "error" : "ok", error });
}

scope.addEventListener("message", (ev: MessageEvent<ToWorker>) => {
  const msg = ev.data;
  if (msg?.kind !== "run") return;
  if (msg.language === "javascript") runJavaScript(msg.runId, msg.code);
  else void runPython(msg.runId, msg.code, msg.files);
});
