// Follow someone's cursor, built on awareness: y-codemirror.next publishes each
// person's cursor (`cursor.head`, a Yjs relative position), and a person may point at a
// place with `pointer` ({ anchor: base64 relative position, at }) — the mentor does so
// when adding or clicking a hint. Following scrolls the editor to whichever of the two
// moved last; it stops when you scroll, click or type in the editor yourself.
// "Follow me" (the mentor) comes as a `follow-me` event naming the mentor's awareness
// ids (set by the gateway from the mentor's socket, so a student cannot fake it); a
// student can decline.
import { EditorView } from "@codemirror/view";
import type { Awareness } from "y-protocols/awareness";
import * as Y from "yjs";
import { resolveAnchor } from "./chat";
import { h } from "./dom";

export interface FollowOptions {
  awareness: () => Awareness;
  doc: () => Y.Doc;
  view: () => EditorView;
  /** The editor's host: your own scroll, click or key there stops following. */
  host: HTMLElement;
}

interface Seen {
  cursor: string;
  pointer: string;
}

type State = { user?: { name?: unknown }; cursor?: { head?: unknown } | null; pointer?: { anchor?: unknown; at?: unknown } | null };

export class Follow {
  readonly element = h("p", { class: "follow-status", id: "follow-status", role: "status", "aria-live": "polite", hidden: true });
  private target: number | null = null;
  private targetName = "";
  private seen: Seen = { cursor: "", pointer: "" };
  private byRequest = false;
  private declined = false;
  private listening: Awareness | null = null;
  private changed: () => void = () => {};

  constructor(private readonly opts: FollowOptions) {
    const stop = (): void => {
      if (this.target !== null) this.stop(true);
    };
    for (const type of ["wheel", "mousedown", "touchstart", "keydown"]) {
      opts.host.addEventListener(type, stop, { passive: true });
    }
  }

  /** Call when the room's awareness is (re)created; `changed` re-renders the people list. */
  attach(changed: () => void): void {
    this.changed = changed;
    const awareness = this.opts.awareness();
    if (this.listening === awareness) return;
    this.listening = awareness;
    awareness.on("change", () => this.onAwareness());
  }

  get following(): number | null {
    return this.target;
  }

  /** A person of the people list: a button that follows them (or stops). */
  personButton(clientId: number, name: string): HTMLElement {
    const on = this.target === clientId;
    const button = h(
      "button",
      { type: "button", class: "link-button person-follow", "aria-pressed": String(on), "data-client": clientId },
      name,
    );
    button.title = on ? `Stop following ${name}` : `Follow ${name}'s cursor`;
    button.addEventListener("click", () => (this.target === clientId ? this.stop(true) : this.follow(clientId, name, false)));
    return button;
  }

  follow(clientId: number, name: string, byRequest: boolean): void {
    this.target = clientId;
    this.targetName = name;
    this.byRequest = byRequest;
    this.seen = { cursor: "", pointer: "" };
    const state = this.opts.awareness().getStates().get(clientId) as State | undefined;
    if (state) {
      this.seen = this.keys(state);
      // Where to start: the place the person pointed at, else their cursor.
      this.scrollTo(this.pointerPos(state) ?? this.cursorPos(state));
    }
    this.render();
  }

  stop(own: boolean): void {
    if (own && this.byRequest) this.declined = true;
    this.target = null;
    this.byRequest = false;
    this.render();
  }

  /** The mentor's `follow-me` event. */
  onFollowMe(on: boolean, name: string, ids: number[]): void {
    if (!on) {
      this.declined = false;
      if (this.byRequest) this.stop(false);
      return;
    }
    const self = this.opts.doc().clientID;
    const id = ids.find((x) => x !== self);
    if (id === undefined) return;
    this.declined = false;
    this.follow(id, name, true);
  }

  /** Point at a place for those who follow you (awareness field `pointer`). */
  point(anchor: string): void {
    this.opts.awareness().setLocalStateField("pointer", { anchor, at: Date.now() });
  }

  private onAwareness(): void {
    if (this.target === null) return;
    const state = this.opts.awareness().getStates().get(this.target) as State | undefined;
    if (!state) return;
    const keys = this.keys(state);
    let pos: number | null = null;
    if (keys.pointer !== this.seen.pointer) pos = this.pointerPos(state);
    else if (keys.cursor !== this.seen.cursor) pos = this.cursorPos(state);
    this.seen = keys;
    this.scrollTo(pos);
  }

  private keys(state: State): Seen {
    return { cursor: JSON.stringify(state.cursor?.head ?? null), pointer: JSON.stringify(state.pointer ?? null) };
  }

  private pointerPos(state: State): number | null {
    const anchor = state.pointer?.anchor;
    return typeof anchor === "string" ? resolveAnchor(this.opts.doc(), anchor) : null;
  }

  private cursorPos(state: State): number | null {
    const head = state.cursor?.head;
    if (!head) return null;
    try {
      const abs = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(head), this.opts.doc());
      return abs ? abs.index : null;
    } catch {
      return null;
    }
  }

  private scrollTo(pos: number | null): void {
    if (pos === null) return;
    const view = this.opts.view();
    const at = Math.min(pos, view.state.doc.length);
    view.dispatch({ effects: EditorView.scrollIntoView(at, { y: "center" }) });
  }

  private render(): void {
    const el = this.element;
    if (this.target === null) {
      el.hidden = !this.declined;
      el.replaceChildren(this.declined ? "You declined to follow the mentor." : "");
      el.dataset.following = "";
    } else {
      el.hidden = false;
      el.dataset.following = String(this.target);
      const stop = h("button", { type: "button", class: "link-button", id: "follow-stop" }, this.byRequest ? "Decline" : "Stop following");
      stop.addEventListener("click", () => this.stop(true));
      const text = this.byRequest ? `${this.targetName} asks everyone to follow them.` : `Following ${this.targetName}.`;
      el.replaceChildren(text, " ", stop);
    }
    this.changed();
  }
}
