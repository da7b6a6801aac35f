// The replay page (/admin/replay/<session id>): a closed session, keystroke by keystroke.
// Downloads the replay once, indexes every character the room ever had (timeline.ts),
// then plays, pauses, changes speed and scrubs; every character is coloured by the author
// who typed it.
import { RangeSetBuilder, StateEffect, StateField, EditorState } from "@codemirror/state";
import { Decoration, type DecorationSet, EditorView, lineNumbers } from "@codemirror/view";

import { adminFetch, AdminError, adminToken } from "./adminapi";
import { h, mount } from "./dom";
import { type Author, parseSteps, type Step, textChange, Timeline } from "./timeline";

const SPEEDS = [1, 2, 4, 8, 16];
const PALETTE = 8; // author colours (CSS classes author-0 .. author-7)

const setMarks = StateEffect.define<DecorationSet>();
const marks = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update: (value, tr) => {
    for (const e of tr.effects) if (e.is(setMarks)) return e.value;
    return tr.docChanged ? value.map(tr.changes) : value;
  },
  provide: (f) => EditorView.decorations.from(f),
});

function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function authorLabel(a: Author | undefined): string {
  if (!a) return "someone";
  return `${a.name || `${a.role} ${a.id.slice(0, 4)}`} (${a.role})`;
}

function eventText(step: Step, authors: Author[]): string {
  const who = step.authors.map((i) => authorLabel(authors[i])).join(", ");
  switch (step.kind) {
    case "j":
      return `${who} joined`;
    case "l":
      return `${who} left`;
    case "s":
      return "Solved!";
    case "c":
      return `${who}: ${step.text ?? ""}`;
    case "h":
      return `Hint: ${step.text ?? ""}`;
    case "x":
      return "The record was cut here: jump to the final code";
    case "r":
      return "Room restored after a Redis restart";
    default:
      return "";
  }
}

export function renderReplay(sessionId: string): void {
  document.title = "Replay · coderoom";
  const state = h("p", { class: "state", id: "replay-state", role: "status", "aria-live": "polite" }, "Loading the replay…");
  mount(
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "/" }, "coderoom"), h("span", { class: "topbar-title" }, "Replay"), h("a", { class: "back", href: "/admin" }, "Admin")),
    h("main", { id: "main", class: "admin replay" }, h("h1", {}, "Session replay"), state),
  );
  if (!adminToken()) {
    state.replaceChildren("Sign in to the admin area first: ", h("a", { href: "/admin" }, "Admin sign-in"));
    return;
  }
  const started = performance.now();
  adminFetch(`/api/sessions/${encodeURIComponent(sessionId)}/replay`)
    .then((data) => show(data as ReplayData, started))
    .catch((err: unknown) => {
      state.className = "state error";
      state.textContent =
        err instanceof AdminError && err.status === 404
          ? "There is no replay for this session."
          : err instanceof AdminError && (err.status === 401 || err.status === 403)
            ? "The admin token is not accepted: sign in again in the admin area."
            : "Can't load the replay right now.";
    });
}

interface ReplayData {
  session: { blockId: string; sessionId: string; startedAt: string | null; finalCode: string; solved: boolean };
  authors: Author[];
  clients?: Record<string, number>;
  steps: unknown;
  bound: { windowMs?: number | null; historyCut?: boolean };
}

function show(data: ReplayData, started: number): void {
  const steps = parseSteps(data.steps);
  const authors = Array.isArray(data.authors) ? data.authors : [];
  const clients = new Map<number, number>();
  for (const [client, author] of Object.entries(data.clients ?? {})) clients.set(Number(client), author);
  const timeline = new Timeline(steps, clients);
  const duration = timeline.duration;

  const play = h("button", { type: "button", class: "button", id: "play" }, "Play");
  const speed = h(
    "select",
    { id: "speed", "aria-label": "Speed" },
    ...SPEEDS.map((s) => h("option", { value: s, selected: s === 1 }, `${s}×`)),
  );
  const scrub = h("input", {
    type: "range",
    id: "scrub",
    min: 0,
    max: duration,
    step: 1,
    value: 0,
    "aria-label": "Timeline",
    "aria-valuetext": `0:00 of ${clock(duration)}`,
  });
  const time = h("span", { class: "replay-time", id: "replay-time" }, `0:00 / ${clock(duration)}`);
  const solvedAt = steps.find((s) => s.kind === "s")?.t;
  const track = h("div", { class: "scrub-track" }, scrub);
  if (solvedAt !== undefined && duration > 0) {
    track.append(
      h("span", { class: "solved-mark", id: "solved-mark", style: `left: ${(100 * solvedAt) / duration}%`, title: `Solved at ${clock(solvedAt)}`, "aria-hidden": "true" }),
    );
  }
  const legend = h(
    "ul",
    { class: "legend", id: "legend", "aria-label": "Authors" },
    ...authors
      .map((a, i) => ({ a, i }))
      .filter(({ a }) => a.role === "student")
      .map(({ a, i }) => h("li", {}, h("span", { class: `swatch author-${i % PALETTE}` }), authorLabel(a))),
  );
  const events = h("ol", { class: "events", id: "events", "aria-label": "Events" });
  const eventItems: { t: number; el: HTMLElement }[] = [];
  for (const step of steps) {
    const text = eventText(step, authors);
    if (!text || step.kind === "r") continue;
    const el = h(
      "li",
      { class: `event kind-${step.kind} future`, "data-t": step.t },
      h("button", { type: "button", class: "link-button", onclick: () => go(step.t) }, clock(step.t)),
      " ",
      text,
    );
    events.append(el);
    eventItems.push({ t: step.t, el });
  }
  const editorHost = h("div", { class: "replay-editor", id: "editor" });
  const solvedButton =
    solvedAt !== undefined
      ? h("button", { type: "button", class: "button secondary small", id: "jump-solved", onclick: () => go(solvedAt) }, `Solved at ${clock(solvedAt)}`)
      : h("span", { class: "muted" }, "Not solved");
  const main = document.getElementById("main");
  main?.replaceChildren(
    h("h1", {}, "Session replay"),
    h(
      "p",
      { class: "muted" },
      `Session ${data.session.sessionId}` + (data.session.startedAt ? ` · ${new Date(data.session.startedAt).toLocaleString()}` : ""),
      data.bound.windowMs ? ` · steps closer than ${data.bound.windowMs} ms merged to fit the bound` : "",
    ),
    h("div", { class: "replay-controls" }, play, h("label", { for: "speed", class: "visually-hidden" }, "Speed"), speed, time, solvedButton),
    track,
    h("div", { class: "replay-body" }, editorHost, h("aside", { class: "replay-side" }, h("h2", {}, "Authors"), legend, h("h2", {}, "Events"), events)),
    h("p", { class: "visually-hidden", id: "replay-ready", "data-open-ms": Math.round(performance.now() - started) }, "Replay ready"),
  );
  const view = new EditorView({
    parent: editorHost,
    state: EditorState.create({
      doc: "",
      extensions: [
        lineNumbers(),
        // No language: the text is coloured by author, not by syntax, and a parser would
        // re-parse at every seek for nothing.
        marks,
        EditorState.readOnly.of(true),
        EditorView.editable.of(false),
        EditorView.contentAttributes.of({ "aria-label": "Code at this moment of the replay" }),
      ],
    }),
  });

  let now = 0;
  let playing = false;
  let last = 0;
  let frame = 0;
  let shownIndex = -1;

  const render = (): void => {
    timeline.seek(now);
    if (timeline.position !== shownIndex) {
      shownIndex = timeline.position;
      const text = timeline.text();
      const builder = new RangeSetBuilder<Decoration>();
      for (const run of timeline.runs()) {
        if (run.author >= 0 && run.to > run.from) {
          builder.add(run.from, run.to, Decoration.mark({ class: `author-${run.author % PALETTE}`, attributes: { "data-author": String(run.author) } }));
        }
      }
      // Only what differs from the text shown, so that CodeMirror redraws the changed
      // lines rather than the whole document.
      view.dispatch({
        changes: textChange(view.state.doc.toString(), text),
        effects: setMarks.of(builder.finish()),
      });
      editorHost.dataset.index = String(shownIndex);
    }
    scrub.value = String(Math.round(now));
    scrub.setAttribute("aria-valuetext", `${clock(now)} of ${clock(duration)}`);
    time.textContent = `${clock(now)} / ${clock(duration)}`;
    editorHost.dataset.t = String(Math.round(now));
    for (const item of eventItems) item.el.classList.toggle("future", item.t > now);
  };
  const go = (t: number): void => {
    now = Math.max(0, Math.min(duration, t));
    render();
  };
  const tick = (at: number): void => {
    if (!playing) return;
    now += (at - last) * Number(speed.value);
    last = at;
    if (now >= duration) {
      now = duration;
      setPlaying(false);
    }
    render();
    if (playing) frame = requestAnimationFrame(tick);
  };
  const setPlaying = (on: boolean): void => {
    playing = on;
    play.textContent = on ? "Pause" : "Play";
    play.setAttribute("aria-pressed", String(on));
    cancelAnimationFrame(frame);
    if (on) {
      if (now >= duration) now = 0;
      last = performance.now();
      frame = requestAnimationFrame(tick);
    }
  };
  play.addEventListener("click", () => setPlaying(!playing));
  scrub.addEventListener("input", () => go(Number(scrub.value)));
  go(0);
  document.getElementById("replay-state")?.remove();
}
