// The sandbox page (/run/sandbox): a sandboxed iframe without allow-same-origin (an
// opaque origin: no cookies, no storage, no access to the room page) whose CSP allows
// no connection at all. It starts the worker that runs the user's code and passes
// messages between it and the room page. It never runs user code itself.
import type { FromWorker, ToWorker } from "./worker";

declare const WORKER_SOURCE: string;

export type ToSandbox = ToWorker | { kind: "stop" };
export type FromSandbox = FromWorker | { kind: "sandbox-ready" } | { kind: "sandbox-error"; runId: number; message: string };

// One worker at a time runs code; the Python one is kept between runs (Pyodide loaded).
let worker: Worker | null = null;
let python: Worker | null = null;
let workerUrl: string | null = null;
let current = 0; // the run in progress

const toPage = (msg: FromSandbox): void => window.parent.postMessage(msg, "*");

function stop(): void {
  worker?.terminate();
  if (worker === python) python = null;
  worker = null;
}

function newWorker(language: string): Worker {
  workerUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  const w = new Worker(workerUrl, { name: `coderoom-${language}` });
  w.addEventListener("message", (ev: MessageEvent<FromWorker>) => {
    if (w !== worker) return;
    const msg = ev.data;
    // What the worker says may come from the user's code: pass on known shapes only.
    if (typeof msg !== "object" || msg === null || typeof msg.runId !== "number") return;
    switch (msg.kind) {
      case "loading":
      case "started":
        toPage({ kind: msg.kind, runId: msg.runId });
        break;
      case "out":
        if ((msg.stream === "stdout" || msg.stream === "stderr") && typeof msg.text === "string") {
          toPage({ kind: "out", runId: msg.runId, stream: msg.stream, text: msg.text, dropped: Number(msg.dropped) || 0 });
        }
        break;
      case "done":
        toPage({
          kind: "done",
          runId: msg.runId,
          state: msg.state === "ok" ? "ok" : "error",
          error: msg.error ? { message: String(msg.error.message), line: typeof msg.error.line === "number" ? msg.error.line : null } : null,
        });
        break;
    }
  });
  w.addEventListener("error", (ev) => {
    ev.preventDefault();
    if (w === worker) toPage({ kind: "sandbox-error", runId: current, message: ev.message || "the runner failed" });
  });
  return w;
}

window.addEventListener("message", (ev: MessageEvent<ToSandbox>) => {
  if (ev.source !== window.parent) return;
  const msg = ev.data;
  if (msg?.kind === "stop") {
    stop();
    return;
  }
  if (msg?.kind !== "run") return;
  current = msg.runId;
  // JavaScript gets a fresh worker every run; Python keeps its interpreter loaded.
  if (worker && worker !== python) stop();
  if (msg.language === "javascript") {
    worker = newWorker("javascript");
  } else {
    python ??= newWorker("python");
    worker = python;
  }
  worker.postMessage(msg);
});

toPage({ kind: "sandbox-ready" });
