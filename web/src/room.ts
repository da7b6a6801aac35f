// The room page: a shared editor plus role, presence, connection status and the smiley.
import { type CodeBlock, gatewayBases, getBlock, HttpError } from "./api";
import { h, mount, plural } from "./dom";
import { renderNotFound } from "./notfound";
import { ChatPanel, hintGutter } from "./chat";
import { CodeEditor } from "./editor";
import { Follow } from "./follow";
import * as identity from "./identity";
import { type ControlEvent, type Role, terminalAction } from "./protocol";
import { RoomProvider, type Status } from "./provider";
import { RunPanel } from "./run/panel";
import { runLanguage, timeoutSeconds } from "./run/result";

const ROLE_TEXT: Record<Role, string> = {
  mentor: "Mentor — read-only",
  student: "Student — you can edit",
  watcher: "Watcher — read-only",
};

const STATUS_TEXT: Record<Status, string> = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  closed: "disconnected",
};

function renderLoadError(message: string, retry: () => void): void {
  mount(
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "/" }, "coderoom")),
    h(
      "main",
      { id: "main", class: "message-page error" },
      h("h1", {}, "Can't open this room"),
      h("p", { role: "alert" }, message),
      h(
        "p",
        { class: "actions" },
        h("button", { type: "button", class: "button", onclick: retry }, "Try again"),
        h("a", { class: "button secondary", href: "/" }, "Back to the lobby"),
      ),
    ),
  );
}

export async function renderRoom(blockId: string): Promise<void> {
  document.title = "Loading… · coderoom";
  mount(
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "/" }, "coderoom")),
    h("main", { id: "main", class: "message-page" }, h("p", { class: "state", role: "status" }, "Loading the room…")),
  );
  let block: CodeBlock;
  let bases: string[];
  try {
    [block, bases] = await Promise.all([getBlock(blockId), gatewayBases()]);
  } catch (err) {
    if (err instanceof HttpError && err.status === 404) {
      renderNotFound();
      return;
    }
    renderLoadError(
      err instanceof HttpError
        ? `The server answered: ${err.message}.`
        : "Can't reach the coderoom server. Check your connection and try again.",
      () => void renderRoom(blockId),
    );
    return;
  }
  new RoomPage(block, bases).start();
}

class RoomPage {
  private readonly params = new URLSearchParams(location.search);
  private readonly watcher = this.params.get("role") === "watcher";
  private readonly clientId = identity.clientId();
  private role: Role | null = null;
  private provider!: RoomProvider;
  private editor!: CodeEditor;
  private leaving = false;
  private runPanel: RunPanel | null = null;
  private chat!: ChatPanel;
  private follow!: Follow;

  private readonly roleEl = h("span", { class: "badge role-pending", id: "role", "data-role": "" }, "Joining…");
  private readonly statusEl = h(
    "span",
    { class: "pill status-connecting", id: "status", "data-status": "connecting", role: "status", "aria-live": "polite" },
    STATUS_TEXT.connecting,
  );
  private readonly countsEl = h("span", { class: "counts", id: "counts", "aria-live": "polite", "aria-atomic": "true" }, "");
  private readonly messageEl = h("p", { class: "room-message", id: "room-message", role: "status", "aria-live": "polite" });
  private readonly peopleEl = h("ul", { class: "people", id: "people", "aria-label": "People in this room" });
  private readonly editorHost = h("div", { class: "editor", id: "editor" });
  private readonly hintEl = h(
    "p",
    { class: "hint", id: "editor-hint", hidden: true },
    "Keyboard: Tab indents; press Esc, then Tab, to leave the editor.",
  );
  private readonly dialog = h("dialog", { class: "solved", id: "solved", "aria-labelledby": "solved-title", "aria-describedby": "solved-text" });
  private name: string;
  private color: string;
  private hue: number;
  private userVersion = 0;

  constructor(
    private readonly block: CodeBlock,
    private readonly bases: string[],
  ) {
    this.name = identity.storedName() ?? identity.defaultName(this.clientId);
    this.hue = identity.hueFor(this.clientId);
    this.color = identity.colorForHue(this.hue);
  }

  start(): void {
    document.title = `${this.block.title} · coderoom`;
    const pin = Number.parseInt(this.params.get("gateway") ?? "", 10);
    // `?silence=S` (tests, debugging): probe a silent gateway after S seconds.
    const silence = Number.parseFloat(this.params.get("silence") ?? "");
    const probeAfterMs = silence > 0 ? silence * 1000 : undefined;
    this.provider = new RoomProvider(
      {
        bases: this.bases,
        // `?gateway=N` (for tests and debugging) starts on base N; otherwise pick at random.
        startIndex: Number.isFinite(pin) ? pin : Math.floor(Math.random() * this.bases.length),
        blockId: this.block.id,
        clientId: this.clientId,
        watcher: this.watcher,
        token: () => identity.resumeToken(this.block.id),
        probeAfterMs,
        deadAfterMs: probeAfterMs && probeAfterMs * 2 + 1000,
      },
      {
        status: (s, info) => this.onStatus(s, info.base, info.delayMs),
        control: (ev) => this.onControl(ev),
        docReset: () => this.bindEditor(true),
        denied: () => this.say("You can't edit this code: you are read-only here."),
        terminal: (code) => this.onTerminal(code),
      },
    );
    this.setUser();
    this.renderShell();
    this.bindEditor(false);
    this.provider.connect();
  }

  private renderShell(): void {
    const nameInput = h("input", {
      id: "display-name",
      name: "name",
      type: "text",
      maxlength: 40,
      autocomplete: "nickname",
      value: this.name,
    });
    const nameForm = h(
      "form",
      { class: "name-form", id: "name-form" },
      h("label", { for: "display-name" }, "Your name"),
      nameInput,
      h("button", { type: "submit", class: "button small" }, "Save"),
    );
    nameForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = nameInput.value.trim();
      if (!value) return;
      this.name = value.slice(0, 40);
      identity.saveName(this.name);
      this.setUser();
      this.say(`Your name is now “${this.name}”.`);
    });

    const close = h("button", { type: "button", class: "button", id: "solved-close", autofocus: true }, "Close");
    close.addEventListener("click", () => this.dialog.close());
    this.dialog.append(
      h(
        "div",
        { class: "solved-body" },
        h("div", { class: "smiley", "aria-hidden": "true" }, "😃"),
        h("h2", { id: "solved-title" }, "Solved!"),
        h("p", { id: "solved-text" }, "The code matches the solution. Well done!"),
        close,
      ),
    );
    this.dialog.addEventListener("click", (e) => {
      if (e.target === this.dialog) this.dialog.close();
    });
    this.dialog.addEventListener("close", () => this.editor?.view.focus());
    const language = runLanguage(this.block.language);
    if (language) {
      this.runPanel = new RunPanel({
        language,
        limitSeconds: timeoutSeconds(this.block.runTimeoutSeconds),
        code: () => this.provider.doc.getText("code").toString(),
        share: (msg) => this.provider.sendControl(msg),
      });
    }

    this.follow = new Follow({
      awareness: () => this.provider.awareness,
      doc: () => this.provider.doc,
      view: () => this.editor.view,
      host: this.editorHost,
    });
    this.chat = new ChatPanel({
      send: (msg) => this.provider.sendControl(msg),
      doc: () => this.provider.doc,
      view: () => this.editor.view,
      point: (anchor) => this.follow.point(anchor),
    });

    mount(
      h("a", { class: "skip-link", href: "#editor" }, "Skip to editor"),
      h(
        "header",
        { class: "topbar" },
        h("a", { class: "brand", href: "/" }, "coderoom"),
        h("a", { class: "back", href: "/", id: "lobby-link" }, "← Lobby"),
      ),
      h(
        "main",
        { id: "main", class: "room" },
        h(
          "div",
          { class: "room-head" },
          h("h1", { id: "block-title" }, this.block.title),
          h("span", { class: `lang lang-${this.block.language.toLowerCase().replace(/[^a-z0-9]/g, "")}` }, this.block.language),
        ),
        this.block.description ? h("p", { class: "room-desc" }, this.block.description) : "",
        h("div", { class: "roombar" }, this.roleEl, this.statusEl, this.countsEl),
        this.messageEl,
        this.follow.element,
        this.editorHost,
        this.hintEl,
        this.runPanel?.element,
        h(
          "aside",
          { class: "room-side" },
          nameForm,
          h("h2", { class: "people-title" }, "In this room"),
          this.peopleEl,
          this.chat.element,
          this.runPanel?.dashboard,
        ),
      ),
      this.dialog,
    );
  }

  private setUser(): void {
    // y-codemirror.next redraws a remote caret label only when the colour string
    // changes (its widget's eq() compares colours), so each new name is published with
    // the same colour spelled another way (#rrggbb / rgb()).
    this.userVersion += 1;
    const [r, g, b] = [1, 3, 5].map((i) => Number.parseInt(this.color.slice(i, i + 2), 16));
    const color = this.userVersion % 2 ? this.color : `rgb(${r}, ${g}, ${b})`;
    this.provider.awareness.setLocalStateField("user", {
      name: this.name,
      color,
      colorLight: `rgba(${r}, ${g}, ${b}, 0.2)`,
    });
  }

  private get readOnly(): boolean {
    return this.role !== "student";
  }

  private editorLabel(): string {
    return this.readOnly ? `${this.block.title} code (read-only)` : `${this.block.title} code`;
  }

  private bindEditor(rebind: boolean): void {
    const opts = {
      parent: this.editorHost,
      ytext: this.provider.doc.getText("code"),
      awareness: this.provider.awareness,
      language: this.block.language,
      readOnly: this.readOnly,
      label: this.editorLabel(),
      extensions: [hintGutter()],
    };
    if (rebind) {
      this.setUser();
      this.editor.rebind(opts);
    } else {
      this.editor = new CodeEditor(opts);
    }
    this.provider.awareness.on("change", () => {
      this.renderPeople();
      this.avoidColourClash();
    });
    this.renderPeople();
    this.chat.refresh();
    this.follow.attach(() => this.renderPeople());
  }

  // Colours come from a hash of the client id, so two people may get close hues. The
  // one with the higher Yjs client id moves to the hue farthest from everyone else's
  // (the lower one keeps its colour, so the two never move at once).
  private avoidColourClash(): void {
    const self = this.provider.doc.clientID;
    const taken: number[] = [];
    let clash = false;
    for (const [clientId, state] of this.provider.awareness.getStates()) {
      const color = (state as { user?: { color?: unknown } }).user?.color;
      if (clientId === self || typeof color !== "string") continue;
      const hue = identity.hueOf(color);
      if (hue === null) continue;
      taken.push(hue);
      if (clientId < self && identity.hueDistance(hue, this.hue) < 40) clash = true;
    }
    if (!clash) return;
    const hue = identity.freestHue(taken, this.hue);
    if (hue === this.hue) return;
    this.hue = hue;
    this.color = identity.colorForHue(hue);
    this.setUser();
  }

  private renderPeople(): void {
    const items: HTMLElement[] = [];
    const self = this.provider.doc.clientID;
    for (const [clientId, state] of this.provider.awareness.getStates()) {
      const user = (state as { user?: { name?: unknown; color?: unknown } }).user;
      if (!user) continue;
      const name = typeof user.name === "string" ? user.name : "Anonymous";
      const color = typeof user.color === "string" ? user.color : "#888";
      const dot = h("span", { class: "dot", "aria-hidden": "true" });
      dot.style.backgroundColor = color;
      const who = clientId === self ? `${name} (you)` : this.follow.personButton(clientId, name);
      items.push(h("li", {}, dot, who));
    }
    this.peopleEl.replaceChildren(...items);
  }

  private onStatus(status: Status, base: string, delayMs?: number): void {
    this.statusEl.textContent = STATUS_TEXT[status];
    this.statusEl.dataset.status = status;
    this.statusEl.dataset.gateway = base;
    this.statusEl.className = `pill status-${status}`;
    this.statusEl.title = delayMs ? `next try in ${(delayMs / 1000).toFixed(1)} s` : base;
  }

  private onControl(ev: ControlEvent): void {
    switch (ev.type) {
      case "welcome":
        this.role = ev.role;
        identity.saveResumeToken(this.block.id, ev.role === "mentor" ? ev.resumeToken : null);
        this.roleEl.textContent = ROLE_TEXT[ev.role];
        this.roleEl.dataset.role = ev.role;
        this.roleEl.className = `badge role-${ev.role}`;
        this.editor.setReadOnly(this.readOnly, this.editorLabel());
        this.hintEl.hidden = this.readOnly;
        document.body.dataset.role = ev.role;
        this.runPanel?.setRole(ev.role);
        this.chat.setRole(ev.role);
        break;
      case "presence": {
        const parts = [plural(ev.students, "student"), plural(ev.watchers, "watcher")];
        parts.push(ev.mentor ? "mentor present" : "no mentor");
        this.countsEl.textContent = parts.join(" · ");
        this.countsEl.dataset.students = String(ev.students);
        this.countsEl.dataset.watchers = String(ev.watchers);
        this.countsEl.dataset.mentor = String(ev.mentor);
        break;
      }
      case "solved":
        if (!this.dialog.open) this.dialog.showModal();
        break;
      case "room-closed":
        this.goToLobby("mentor-left");
        break;
      case "run":
      case "runs":
        this.runPanel?.receive(ev.type === "run" ? [ev.run] : ev.runs);
        break;
      case "follow-me":
        this.follow.onFollowMe(ev.on, ev.name, ev.awarenessIds);
        break;
      default:
        this.chat.receive(ev); // chat, hints, refusals (chat.ts)
        break;
    }
  }

  private onTerminal(code: number): void {
    const action = terminalAction(code);
    if (action.kind === "not-found") {
      this.provider.destroy();
      renderNotFound();
    } else if (action.kind === "lobby") {
      this.goToLobby(action.notice);
    } else {
      this.say(action.message, true);
      this.messageEl.append(
        " ",
        h("button", { type: "button", class: "link-button", onclick: () => location.reload() }, "Reconnect"),
      );
    }
  }

  private goToLobby(notice: string): void {
    if (this.leaving) return;
    this.leaving = true;
    this.provider.destroy();
    location.assign(`/?notice=${encodeURIComponent(notice)}`);
  }

  private say(text: string, isError = false): void {
    this.messageEl.textContent = text;
    this.messageEl.className = isError ? "room-message error" : "room-message";
  }
}
