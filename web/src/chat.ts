// Room chat and the mentor's line hints (docs/protocol.md, "Chat and hints").
// Text is only ever put in the page as text nodes; only http(s) links become links.
// A hint is anchored to its line with a Yjs relative position, so it stays on that line
// while students edit around it; it shows in the editor's gutter and in the panel.
import { RangeSet, StateEffect, StateField, type Extension, type Text } from "@codemirror/state";
import { EditorView, gutter, GutterMarker } from "@codemirror/view";
import { fromBase64, toBase64 } from "lib0/buffer";
import * as Y from "yjs";
import { h } from "./dom";

export const MAX_CHARS = 1000;
const BURST = 8; // the gateway's budget (services/gateway/chat.py): 8 at once ...
const RATE = 1; // ... then one a second

export type ChatRole = "mentor" | "student" | "watcher";

export interface ChatMessage {
  id: string;
  name: string;
  role: ChatRole;
  text: string;
  at: number;
}

export interface Hint {
  id: string;
  name: string;
  text: string;
  anchor: string;
  line: number;
  at: number;
  resolvedAt: number | null;
}

export type ChatEvent =
  | { type: "chat"; message: ChatMessage }
  | { type: "chat-history"; messages: ChatMessage[]; hints: Hint[] }
  | { type: "hint"; hint: Hint }
  | { type: "hint-resolved"; id: string; at: number }
  | { type: "follow-me"; on: boolean; name: string; awarenessIds: number[] }
  | { type: "refused"; of: string; code: string; reason: string };

const CHAT_TYPES = new Set(["chat", "chat-history", "hint", "hint-resolved", "follow-me", "refused"]);

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}
function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}

function parseMessage(v: unknown): ChatMessage | null {
  if (typeof v !== "object" || v === null) return null;
  const m = v as Record<string, unknown>;
  const role = str(m.role);
  if (!m.id || !["mentor", "student", "watcher"].includes(role)) return null;
  return { id: str(m.id), name: str(m.name) || "Guest", role: role as ChatRole, text: str(m.text), at: num(m.at) };
}

function parseHint(v: unknown): Hint | null {
  if (typeof v !== "object" || v === null) return null;
  const m = v as Record<string, unknown>;
  if (!m.id || typeof m.anchor !== "string") return null;
  return {
    id: str(m.id),
    name: str(m.name) || "Mentor",
    text: str(m.text),
    anchor: m.anchor,
    line: Math.max(1, num(m.line)),
    at: num(m.at),
    resolvedAt: typeof m.resolvedAt === "number" ? m.resolvedAt : null,
  };
}

/** A chat/hint control event, or null (not ours or malformed). */
export function parseChatEvent(ev: Record<string, unknown>): ChatEvent | null {
  if (!CHAT_TYPES.has(str(ev.type))) return null;
  switch (ev.type) {
    case "chat": {
      const message = parseMessage(ev.message);
      return message ? { type: "chat", message } : null;
    }
    case "chat-history": {
      const messages = (Array.isArray(ev.messages) ? ev.messages : []).map(parseMessage);
      const hints = (Array.isArray(ev.hints) ? ev.hints : []).map(parseHint);
      return {
        type: "chat-history",
        messages: messages.filter((m): m is ChatMessage => m !== null),
        hints: hints.filter((x): x is Hint => x !== null),
      };
    }
    case "hint": {
      const hint = parseHint(ev.hint);
      return hint ? { type: "hint", hint } : null;
    }
    case "hint-resolved":
      return { type: "hint-resolved", id: str(ev.id), at: num(ev.at) };
    case "follow-me":
      return {
        type: "follow-me",
        on: ev.on === true,
        name: str(ev.name) || "The mentor",
        awarenessIds: Array.isArray(ev.awarenessIds) ? ev.awarenessIds.filter((x): x is number => typeof x === "number") : [],
      };
    default:
      return { type: "refused", of: str(ev.of), code: str(ev.code), reason: str(ev.reason) };
  }
}

/** The text as nodes: plain text, with http(s) URLs as links (nothing else is a link). */
export function textWithLinks(text: string): Node[] {
  const out: Node[] = [];
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  for (const match of text.matchAll(re)) {
    const start = match.index ?? 0;
    let url = match[0].replace(/[.,;:!?)\]]+$/, "");
    let href: URL | null = null;
    try {
      href = new URL(url);
    } catch {
      href = null;
    }
    if (!href || (href.protocol !== "http:" && href.protocol !== "https:")) {
      url = "";
      continue;
    }
    if (start > last) out.push(document.createTextNode(text.slice(last, start)));
    const a = document.createElement("a");
    a.href = href.href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    a.textContent = url;
    out.push(a);
    last = start + url.length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

/** Characters as the gateway counts them (code points). */
export function charCount(text: string): number {
  return [...text].length;
}

// --- anchors -------------------------------------------------------------------------

/** A relative position at the start of a line (1-based) of the text, as base64. */
export function anchorForLine(ytext: Y.Text, view: EditorView, line: number): string {
  const start = view.state.doc.line(Math.min(Math.max(1, line), view.state.doc.lines)).from;
  return toBase64(Y.encodeRelativePosition(Y.createRelativePositionFromTypeIndex(ytext, start)));
}

/** The offset an anchor points at now, or null if it cannot be resolved in this doc. */
export function resolveAnchor(doc: Y.Doc, anchor: string): number | null {
  try {
    const abs = Y.createAbsolutePositionFromRelativePosition(Y.decodeRelativePosition(fromBase64(anchor)), doc);
    return abs ? abs.index : null;
  } catch {
    return null;
  }
}

/** The line (1-based) a hint is on now: its anchor, else the line it was written on. */
export function hintLine(doc: Y.Doc, view: EditorView, hint: Hint): number {
  const index = resolveAnchor(doc, hint.anchor);
  const lines = view.state.doc.lines;
  if (index === null) return Math.min(hint.line, lines);
  return view.state.doc.lineAt(Math.min(index, view.state.doc.length)).number;
}

// --- the gutter ----------------------------------------------------------------------

class HintMarker extends GutterMarker {
  constructor(readonly label: string) {
    super();
  }
  eq(other: HintMarker): boolean {
    return other.label === this.label;
  }
  toDOM(): Node {
    const el = h("span", { class: "cm-hint-marker", title: this.label, "aria-hidden": "true" }, "💡");
    return el;
  }
}

const setHintMarkers = StateEffect.define<RangeSet<GutterMarker>>();

/** The gutter's markers for hints on these lines (1-based; lines past the end are left out). */
export function hintMarkerSet(doc: Text, lines: { line: number; label: string }[]): RangeSet<GutterMarker> {
  const ranges = lines
    .filter((x) => x.line >= 1 && x.line <= doc.lines)
    .sort((a, b) => a.line - b.line)
    .map((x) => new HintMarker(x.label).range(doc.line(x.line).from));
  return RangeSet.of(ranges, true);
}

// Between two renders (ChatPanel.renderHints) the markers move with the edits.
const hintMarkers = StateField.define<RangeSet<GutterMarker>>({
  create: () => RangeSet.empty,
  update(markers, tr) {
    for (const effect of tr.effects) if (effect.is(setHintMarkers)) return effect.value;
    return markers.map(tr.changes);
  },
});

/** The editor extension that shows hints in a gutter (given to the editor by room.ts). */
export function hintGutter(): Extension {
  return [
    hintMarkers,
    gutter({ class: "cm-hint-gutter", markers: (view) => view.state.field(hintMarkers) }),
  ];
}

// --- the panel -----------------------------------------------------------------------

export interface ChatPanelOptions {
  send: (message: object) => boolean;
  doc: () => Y.Doc;
  view: () => EditorView;
  /** The mentor points at a hint: followers go there (follow.ts). */
  point: (anchor: string) => void;
}

export class ChatPanel {
  readonly element: HTMLElement;
  private role: ChatRole | null = null;
  private messages = new Map<string, ChatMessage>();
  private hints = new Map<string, Hint>();
  private tokens = BURST;
  private stamp = Date.now();
  private following = false;
  private observed: Y.Text | null = null;
  private renderTimer: ReturnType<typeof setTimeout> | undefined;

  private readonly log = h("ol", { class: "chat-log", id: "chat-log", "aria-label": "Chat messages" });
  private readonly logBox = h("div", { class: "chat-log-box", role: "log", "aria-live": "polite", "aria-label": "Chat" }, this.log);
  private readonly hintList = h("ul", { class: "hint-list", id: "hint-list", "aria-label": "Hints" });
  private readonly input = h("textarea", {
    id: "chat-input",
    name: "message",
    rows: 2,
    maxlength: MAX_CHARS,
    "aria-describedby": "chat-note",
  });
  private readonly hintInput = h("textarea", { id: "hint-input", name: "hint", rows: 2, maxlength: MAX_CHARS });
  private readonly hintLineInput = h("input", { id: "hint-line", name: "line", type: "number", min: 1, inputmode: "numeric", placeholder: "cursor" });
  private readonly note = h("p", { class: "chat-note", id: "chat-note", role: "status", "aria-live": "polite" }, "");
  private readonly form = h(
    "form",
    { class: "chat-form", id: "chat-form" },
    h("label", { for: "chat-input" }, "Message"),
    this.input,
    h("button", { type: "submit", class: "button small", id: "chat-send" }, "Send"),
  );
  private readonly hintForm = h(
    "form",
    { class: "chat-form", id: "hint-form", hidden: true },
    h("label", { for: "hint-input" }, "Hint"),
    this.hintInput,
    h("label", { for: "hint-line" }, "on line (empty: your cursor's)"),
    this.hintLineInput,
    h("button", { type: "submit", class: "button small", id: "hint-send" }, "Add hint"),
  );
  private readonly followButton = h(
    "button",
    { type: "button", class: "button small secondary", id: "follow-me", hidden: true, "aria-pressed": "false" },
    "Follow me",
  );
  private readonly readOnlyNote = h("p", { class: "chat-note", id: "chat-readonly", hidden: true }, "Watchers read the chat but can't write.");

  constructor(private readonly opts: ChatPanelOptions) {
    this.element = h(
      "section",
      { class: "chat", id: "chat", "aria-labelledby": "chat-title" },
      h("h2", { id: "chat-title" }, "Chat"),
      this.logBox,
      this.form,
      this.readOnlyNote,
      this.note,
      h("h2", { id: "hints-title" }, "Hints"),
      this.hintList,
      this.hintForm,
      this.followButton,
    );
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendChat();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.sendChat();
      }
    });
    this.hintForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.sendHint();
    });
    this.followButton.addEventListener("click", () => {
      this.following = !this.following;
      this.followButton.setAttribute("aria-pressed", String(this.following));
      this.followButton.textContent = this.following ? "Stop “follow me”" : "Follow me";
      this.opts.send({ type: "follow-me", on: this.following });
    });
  }

  setRole(role: ChatRole): void {
    this.role = role;
    this.form.hidden = role === "watcher";
    this.readOnlyNote.hidden = role !== "watcher";
    this.hintForm.hidden = role !== "mentor";
    this.followButton.hidden = role !== "mentor";
    this.renderHints();
  }

  /** A chat event from the room (room.ts passes them on). */
  receive(ev: ChatEvent): void {
    switch (ev.type) {
      case "chat":
        this.addMessages([ev.message]);
        break;
      case "chat-history":
        this.addMessages(ev.messages);
        for (const hint of ev.hints) this.hints.set(hint.id, hint);
        this.renderHints();
        break;
      case "hint":
        this.hints.set(ev.hint.id, ev.hint);
        this.renderHints();
        break;
      case "hint-resolved": {
        const hint = this.hints.get(ev.id);
        if (hint) hint.resolvedAt = ev.at;
        this.renderHints();
        break;
      }
      case "refused":
        this.say(ev.code === "rate-limited" ? "Too many messages: wait a moment." : `Not sent: ${ev.reason}.`);
        break;
      default:
        break;
    }
  }

  /** The document changed (an edit, or a new session's doc): move the gutter markers. */
  refresh(): void {
    const ytext = this.opts.doc().getText("code");
    if (this.observed !== ytext) {
      this.observed = ytext;
      ytext.observe(() => this.renderHintsSoon());
    }
    this.renderHints();
  }

  // An edit gets here from inside an editor update (our own, through y-codemirror) or a
  // Yjs update (someone else's). The hints are rendered again in a task of their own,
  // never in a microtask: typed text is in the editor's DOM before CodeMirror reads it
  // (its MutationObserver runs as a microtask), and a transaction dispatched in between
  // makes CodeMirror drop that input (EditorView.update clears the observer's pending
  // records). Keystrokes coming faster than tasks (several in one task) lost every other
  // character that way. One render for a burst of edits.
  private renderHintsSoon(): void {
    if (this.renderTimer !== undefined) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = undefined;
      this.renderHints();
    }, 0);
  }

  private addMessages(list: ChatMessage[]): void {
    let added = false;
    for (const m of list) {
      if (this.messages.has(m.id)) continue;
      this.messages.set(m.id, m);
      added = true;
    }
    if (!added) return;
    const sorted = [...this.messages.values()].sort((a, b) => a.at - b.at);
    this.log.replaceChildren(...sorted.map((m) => this.messageItem(m)));
    this.log.scrollTop = this.log.scrollHeight;
  }

  private messageItem(m: ChatMessage): HTMLElement {
    const when = new Date(m.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return h(
      "li",
      { class: `chat-message role-${m.role}`, "data-id": m.id },
      h("span", { class: "chat-author" }, m.name),
      h("span", { class: "chat-role" }, ` (${m.role})`),
      h("time", { class: "chat-time", datetime: new Date(m.at).toISOString() }, ` ${when}`),
      h("p", { class: "chat-text" }, ...textWithLinks(m.text)),
    );
  }

  private renderHints(): void {
    let view: EditorView;
    try {
      view = this.opts.view();
    } catch {
      return;
    }
    const doc = this.opts.doc();
    const open = [...this.hints.values()].filter((x) => x.resolvedAt === null).sort((a, b) => a.at - b.at);
    const items = open.map((hint) => {
      const line = hintLine(doc, view, hint);
      const go = h("button", { type: "button", class: "link-button hint-go", "data-line": line }, `Line ${line}`);
      go.addEventListener("click", () => this.goTo(hint));
      const item = h("li", { class: "hint-item", "data-id": hint.id, "data-line": line }, go, h("span", { class: "hint-text" }, ` ${hint.name}: `, ...textWithLinks(hint.text)));
      if (this.role === "mentor") {
        const resolve = h("button", { type: "button", class: "button small secondary hint-resolve" }, "Resolve");
        resolve.setAttribute("aria-label", `Resolve the hint on line ${line}`);
        resolve.addEventListener("click", () => this.opts.send({ type: "hint-resolve", id: hint.id }));
        item.append(" ", resolve);
      }
      return { item, line, label: `${hint.name}: ${hint.text}` };
    });
    this.hintList.replaceChildren(...items.map((x) => x.item));
    // The markers usually moved with the edit already: the editor is told only when
    // a hint's line is not the one the anchor gives (or hints came and went).
    const markers = hintMarkerSet(view.state.doc, items);
    const shown = view.state.field(hintMarkers, false);
    if (shown && !RangeSet.eq([shown], [markers])) view.dispatch({ effects: setHintMarkers.of(markers) });
  }

  private goTo(hint: Hint): void {
    const view = this.opts.view();
    const line = view.state.doc.line(hintLine(this.opts.doc(), view, hint));
    view.dispatch({ effects: EditorView.scrollIntoView(line.from, { y: "center" }) });
    if (this.role === "mentor") this.opts.point(hint.anchor);
  }

  private take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(BURST, this.tokens + ((now - this.stamp) / 1000) * RATE);
    this.stamp = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private check(text: string): string | null {
    if (!text.trim()) return null;
    if (charCount(text) > MAX_CHARS) {
      this.say(`At most ${MAX_CHARS} characters.`);
      return null;
    }
    if (!this.take()) {
      this.say("Too many messages: wait a moment.");
      return null;
    }
    return text.replace(/\r\n?/g, "\n");
  }

  private sendChat(): void {
    const text = this.check(this.input.value);
    if (text === null) return;
    if (this.opts.send({ type: "chat", text })) {
      this.input.value = "";
      this.say("");
    } else {
      this.say("Not connected: the message was not sent.");
    }
  }

  private sendHint(): void {
    const view = this.opts.view();
    const text = this.check(this.hintInput.value);
    if (text === null) return;
    const typed = Number.parseInt(this.hintLineInput.value, 10);
    const cursorLine = view.state.doc.lineAt(view.state.selection.main.head).number;
    const line = Number.isFinite(typed) ? Math.min(Math.max(1, typed), view.state.doc.lines) : cursorLine;
    const anchor = anchorForLine(this.opts.doc().getText("code"), view, line);
    if (this.opts.send({ type: "hint", text, anchor, line })) {
      this.hintInput.value = "";
      this.hintLineInput.value = "";
      this.say(`Hint added on line ${line}.`);
      this.opts.point(anchor);
    } else {
      this.say("Not connected: the hint was not sent.");
    }
  }

  private say(text: string): void {
    this.note.textContent = text;
  }
}
