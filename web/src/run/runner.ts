// The room page's side of running code: one hidden sandbox frame (/run/sandbox), the
// wall-clock limit, stop, and Pyodide's files (fetched from our own /static/pyodide/
// the first time a Python block runs, then kept in memory). A run that times out or is
// stopped takes the frame with it (and so its worker): the next run starts clean.
import { type Chunk, OutputBuffer } from "./output";
import type { FromSandbox, ToSandbox } from "./sandbox";
import type { Language, RunResult } from "./result";
import type { PythonFiles } from "./worker";

declare const PYODIDE_VERSION: string;

const SANDBOX_URL = "/run/sandbox";
const FRAME_READY_MS = 10_000;
const PYTHON_LOAD_MS = 180_000;

export interface RunCallbacks {
  /** Kept output, as it arrives. */
  output(chunk: Chunk): void;
  /** "Loading Python…" and the like. */
  status(text: string): void;
  /** The code started running (after Python loaded, for a cold Python run). */
  started(): void;
}

export interface RunHandle {
  readonly result: Promise<RunResult>;
  stop(): void;
}

let pythonFiles: Promise<Omit<PythonFiles, "indexURL">> | null = null;

async function fetchBuffer(url: string): Promise<ArrayBuffer> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.arrayBuffer();
}

function loadPythonFiles(): Promise<Omit<PythonFiles, "indexURL">> {
  pythonFiles ??= (async () => {
    const v = `?v=${PYODIDE_VERSION}`;
    const base = "/static/pyodide/";
    const [asm, wasm, stdlib, lockText] = await Promise.all([
      fetchBuffer(`${base}pyodide.asm.mjs${v}`),
      fetchBuffer(`${base}pyodide.asm.wasm${v}`),
      fetchBuffer(`${base}python_stdlib.zip${v}`),
      fetch(`${base}pyodide-lock.json${v}`).then((r) => r.text()),
    ]);
    // Pyodide is told of no package at all: loadPackage and micropip find nothing.
    const lock = JSON.parse(lockText) as { packages?: unknown };
    lock.packages = {};
    return { asm, wasm, stdlib, lock: JSON.stringify(lock) };
  })();
  pythonFiles.catch(() => {
    pythonFiles = null; // try again next time
  });
  return pythonFiles;
}

export class Runner {
  private frame: HTMLIFrameElement | null = null;
  private ready: Promise<void> | null = null;
  private pythonLoaded = false;
  private nextId = 1;
  private listener: ((msg: FromSandbox) => void) | null = null;

  constructor(private readonly host: HTMLElement = document.body) {
    window.addEventListener("message", (ev: MessageEvent<FromSandbox>) => {
      if (!this.frame || ev.source !== this.frame.contentWindow) return;
      const msg = ev.data;
      if (typeof msg !== "object" || msg === null || typeof msg.kind !== "string") return;
      this.listener?.(msg);
    });
  }

  /** Load Python ahead of a run (no-op for JavaScript). */
  warm(language: Language): void {
    if (language === "python") void loadPythonFiles().catch(() => undefined);
  }

  private openFrame(): Promise<void> {
    if (this.ready && this.frame) return this.ready;
    const frame = document.createElement("iframe");
    // allow-scripts only: an opaque origin, no storage, no cookies, no top navigation.
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("title", "Code runner (sandboxed)");
    frame.setAttribute("aria-hidden", "true");
    frame.tabIndex = -1;
    frame.className = "run-sandbox";
    frame.src = SANDBOX_URL;
    this.frame = frame;
    this.pythonLoaded = false;
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the sandbox did not start")), FRAME_READY_MS);
      this.listener = (msg) => {
        if (msg.kind === "sandbox-ready") {
          clearTimeout(timer);
          this.listener = null;
          resolve();
        }
      };
    });
    this.host.append(frame);
    return this.ready;
  }

  private closeFrame(): void {
    const frame = this.frame;
    if (!frame) return;
    frame.contentWindow?.postMessage({ kind: "stop" } satisfies ToSandbox, "*");
    frame.remove(); // ends the frame's workers, whatever they are doing
    this.frame = null;
    this.ready = null;
    this.pythonLoaded = false;
    this.listener = null;
  }

  run(language: Language, code: string, limitSeconds: number, cb: RunCallbacks): RunHandle {
    const runId = this.nextId++;
    const buffer = new OutputBuffer();
    let settle!: (r: RunResult) => void;
    const result = new Promise<RunResult>((resolve) => {
      settle = resolve;
    });
    let startedAt = 0;
    let done = false;
    let limitTimer: ReturnType<typeof setTimeout> | null = null;
    let loadTimer: ReturnType<typeof setTimeout> | null = null;

    const finish = (state: RunResult["state"], error: RunResult["error"], kill: boolean): void => {
      if (done) return;
      done = true;
      if (limitTimer) clearTimeout(limitTimer);
      if (loadTimer) clearTimeout(loadTimer);
      if (kill) this.closeFrame();
      else this.listener = null;
      const durationMs = startedAt ? performance.now() - startedAt : 0;
      settle({ language, state, durationMs, chunks: buffer.chunks, droppedBytes: buffer.droppedBytes, error });
    };

    const onMessage = (msg: FromSandbox): void => {
      if (done || !("runId" in msg) || msg.runId !== runId) return;
      switch (msg.kind) {
        case "loading":
          cb.status("Loading Python…");
          loadTimer = setTimeout(
            () => finish("error", { message: "Python took too long to load", line: null }, true),
            PYTHON_LOAD_MS,
          );
          break;
        case "started":
          if (loadTimer) clearTimeout(loadTimer);
          if (language === "python") this.pythonLoaded = true;
          startedAt = performance.now();
          limitTimer = setTimeout(
            () => finish("timeout", { message: `Stopped after ${limitSeconds} s (the time limit)`, line: null }, true),
            limitSeconds * 1000,
          );
          cb.started();
          break;
        case "out": {
          buffer.drop(msg.dropped);
          const kept = buffer.push(msg.stream, String(msg.text).slice(0, 1 << 20));
          if (kept) cb.output(kept);
          break;
        }
        case "done":
          finish(msg.state, msg.error, false);
          break;
        case "sandbox-error":
          finish("error", { message: msg.message, line: null }, true);
          break;
      }
    };

    void (async () => {
      try {
        let files: PythonFiles | undefined;
        if (language === "python" && !(this.pythonLoaded && this.frame)) {
          cb.status("Loading Python…");
          files = { ...(await loadPythonFiles()), indexURL: `${location.origin}/static/pyodide/` };
        }
        await this.openFrame();
        if (done) return;
        this.listener = onMessage;
        const msg: ToSandbox =
          language === "python"
            ? { kind: "run", runId, language, code, files }
            : { kind: "run", runId, language, code };
        this.frame?.contentWindow?.postMessage(msg, "*");
      } catch (err) {
        finish("error", { message: err instanceof Error ? err.message : String(err), line: null }, true);
      }
    })();

    return {
      result,
      stop: () => finish("stopped", null, true),
    };
  }
}
