// The Run panel of the room page: Run / Stop / Clear, the output (stdout and stderr
// told apart, as text only), the exit state and duration; the result is shared with the
// room, and the mentor sees each person's latest run (the class dashboard).
import { h, plural } from "../dom";
import type { Chunk } from "./output";
import {
  formatDuration,
  type Language,
  latestPerPerson,
  mergeRuns,
  type RunResult,
  type RunResultMessage,
  runResultMessage,
  type RunRole,
  SHARE_INTERVAL_MS,
  type SharedRun,
  STATE_TEXT,
} from "./result";
import { type RunHandle, Runner } from "./runner";

export interface RunPanelOptions {
  language: Language;
  limitSeconds: number;
  code: () => string;
  /** Send a control message to the room; false when not connected. */
  share: (msg: RunResultMessage) => boolean;
}

export class RunPanel {
  readonly element: HTMLElement;
  readonly dashboard: HTMLElement;
  private readonly runner = new Runner();
  private current: RunHandle | null = null;
  private role: RunRole | null = null;
  private runs: SharedRun[] = [];
  private lastShared = 0;
  private shareTimer: ReturnType<typeof setTimeout> | null = null;
  private pendingShare: RunResultMessage | null = null;
  private pressedAt = 0;

  private readonly runButton = h(
    "button",
    { type: "button", class: "button", id: "run", "aria-keyshortcuts": "Control+Enter Meta+Enter", title: "Run (Ctrl+Enter)" },
    "▶ Run",
  );
  private readonly stopButton = h("button", { type: "button", class: "button secondary", id: "run-stop", disabled: true }, "Stop");
  private readonly clearButton = h("button", { type: "button", class: "button secondary", id: "run-clear" }, "Clear");
  private readonly statusEl = h("p", { class: "run-status", id: "run-status", role: "status", "aria-live": "polite", "data-state": "idle" }, "");
  private readonly errorEl = h("p", { class: "run-error", id: "run-error", hidden: true });
  private readonly outputEl = h("pre", {
    class: "run-output",
    id: "run-output",
    // A log the keyboard can reach and scroll; the status line announces the end.
    role: "log",
    "aria-live": "off",
    tabindex: 0,
    "aria-label": "Output of the last run",
    "aria-describedby": "run-status",
  });
  private readonly noteEl = h("p", { class: "hint run-note", id: "run-note" });
  private readonly runsList = h("ul", { class: "class-runs-list", id: "class-runs-list" });

  constructor(private readonly opts: RunPanelOptions) {
    this.runButton.addEventListener("click", () => this.run());
    this.stopButton.addEventListener("click", () => this.current?.stop());
    this.clearButton.addEventListener("click", () => this.clear());
    const lang = opts.language === "python" ? "Python" : "JavaScript";
    this.element = h(
      "section",
      { class: "run-panel", id: "run-panel", "aria-labelledby": "run-title" },
      h(
        "div",
        { class: "run-head" },
        h("h2", { id: "run-title" }, "Output"),
        h("div", { class: "run-actions" }, this.runButton, this.stopButton, this.clearButton),
      ),
      h(
        "p",
        { class: "hint" },
        `Runs the ${lang} code in your browser, in a sandbox (Ctrl+Enter or ⌘+Enter; time limit ${opts.limitSeconds} s).`,
      ),
      this.statusEl,
      this.errorEl,
      this.outputEl,
      this.noteEl,
    );
    this.dashboard = h(
      "section",
      { class: "class-runs", id: "class-runs", "aria-labelledby": "class-runs-title", hidden: true },
      h("h2", { id: "class-runs-title" }, "Latest runs"),
      this.runsList,
    );
    this.renderRuns();
    // Ctrl/Cmd-Enter anywhere on the page (the editor included) runs the code.
    document.addEventListener(
      "keydown",
      (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.altKey && !e.shiftKey) {
          e.preventDefault();
          e.stopPropagation();
          this.run();
        }
      },
      true,
    );
  }

  setRole(role: RunRole): void {
    this.role = role;
    this.dashboard.hidden = role !== "mentor";
    this.noteEl.textContent =
      role === "watcher" ? "Your runs stay on this page." : "The result of each run is shared with the room.";
  }

  /** `run` and `runs` events from the room. */
  receive(runs: SharedRun[]): void {
    this.runs = mergeRuns(this.runs, runs);
    this.renderRuns();
  }

  run(): void {
    if (this.current) return; // one run at a time; Stop ends it
    this.clear();
    this.pressedAt = performance.now();
    this.outputEl.dataset.firstOutputMs = "";
    this.setState("running", "Running…");
    this.runButton.disabled = true;
    this.stopButton.disabled = false;
    const handle = this.runner.run(this.opts.language, this.opts.code(), this.opts.limitSeconds, {
      output: (chunk) => this.append(chunk),
      status: (text) => this.setState("loading", text),
      started: () => this.setState("running", "Running…"),
    });
    this.current = handle;
    void handle.result.then((result) => this.finished(result));
  }

  private finished(result: RunResult): void {
    this.current = null;
    this.runButton.disabled = false;
    this.stopButton.disabled = true;
    const parts = [STATE_TEXT[result.state], formatDuration(result.durationMs)];
    this.setState(result.state, parts.join(" · "));
    this.statusEl.dataset.durationMs = String(Math.round(result.durationMs));
    if (result.error) {
      const where = result.error.line ? ` (line ${result.error.line})` : "";
      this.errorEl.textContent = `${result.error.message}${where}`;
      this.errorEl.dataset.line = result.error.line ? String(result.error.line) : "";
      this.errorEl.hidden = false;
    }
    if (result.droppedBytes > 0) {
      this.outputEl.append(
        h("span", { class: "out-dropped" }, `\n… ${plural(result.droppedBytes, "more byte")} of output not shown (64 KB kept)\n`),
      );
    }
    if (this.role && this.role !== "watcher") this.share(runResultMessage(result));
  }

  private share(msg: RunResultMessage): void {
    // The gateway relays about one run a second per person: send the latest then.
    this.pendingShare = msg;
    const wait = this.lastShared + SHARE_INTERVAL_MS - Date.now();
    if (wait > 0) {
      this.shareTimer ??= setTimeout(() => {
        this.shareTimer = null;
        this.flushShare();
      }, wait);
      return;
    }
    this.flushShare();
  }

  private flushShare(): void {
    const msg = this.pendingShare;
    if (!msg) return;
    if (this.opts.share(msg)) {
      this.pendingShare = null;
      this.lastShared = Date.now();
    }
  }

  private append(chunk: Chunk): void {
    if (!this.outputEl.dataset.firstOutputMs) {
      this.outputEl.dataset.firstOutputMs = String(Math.round(performance.now() - this.pressedAt));
    }
    const last = this.outputEl.lastElementChild as HTMLElement | null;
    if (last && last.dataset.stream === chunk.stream) last.append(chunk.text);
    else this.outputEl.append(h("span", { class: `out-${chunk.stream}`, "data-stream": chunk.stream }, chunk.text));
    this.outputEl.scrollTop = this.outputEl.scrollHeight;
  }

  private clear(): void {
    this.outputEl.replaceChildren();
    this.errorEl.hidden = true;
    this.errorEl.textContent = "";
    if (!this.current) this.setState("idle", "");
  }

  private setState(state: string, text: string): void {
    this.statusEl.dataset.state = state;
    this.statusEl.textContent = text;
    this.statusEl.className = `run-status state-${state}`;
  }

  private renderRuns(): void {
    const latest = latestPerPerson(this.runs);
    if (!latest.length) {
      this.runsList.replaceChildren(h("li", { class: "empty" }, "No runs yet."));
      return;
    }
    this.runsList.replaceChildren(
      ...latest.map((run) => {
        const when = new Date(run.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
        const output = h("pre", { class: "run-output small" }, run.output || "(no output)");
        if (run.truncated) output.append(h("span", { class: "out-dropped" }, "\n… (more output not shared)"));
        const who = run.role === "mentor" ? `${run.name} (mentor)` : run.name;
        return h(
          "li",
          { "data-client": run.clientId, "data-state": run.state },
          h(
            "details",
            {},
            h(
              "summary",
              {},
              h("span", { class: "run-who" }, who),
              " ",
              h("span", { class: `run-badge state-${run.state}` }, STATE_TEXT[run.state]),
              " ",
              h("span", { class: "run-when" }, `${formatDuration(run.durationMs)} · ${when}`),
            ),
            run.error ? h("p", { class: "run-error small" }, run.line ? `${run.error} (line ${run.line})` : run.error) : "",
            output,
          ),
        );
      }),
    );
  }
}
