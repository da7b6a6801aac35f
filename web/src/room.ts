// The room page: a shared editor plus role, presence, connection status and the smiley.
import * as Y from "yjs";

import { type ClientConfig, type CodeBlock, clientConfig, getBlock, HttpError } from "./api";
import { h, mount, plural } from "./dom";
import { renderNotFound } from "./notfound";
import { ChatPanel, hintGutter } from "./chat";
import { CodeEditor } from "./editor";
import { Follow } from "./follow";
import * as identity from "./identity";
import { formatBytes, refusal, utf8Length } from "./limits";
import { type ControlEvent, type Role, terminalAction } from "./protocol";
import { RoomProvider, type Status } from "./provider";
import { copyText, download, fileName, keepCode } from "./share";
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
  offline: "offline — your changes will sync when you reconnect",
  closed: "disconnected",
};

const ROLE_TAG: Record<Role, string> = { mentor: "mentor", student: "student", watcher: "watcher" };

interface PersonState {
  user?: { name?: unknown; displayName?: unknown; color?: unknown; role?: unknown; person?: unknown };
  solved?: unknown;
}

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
  let config: ClientConfig;
  try {
    [block, config] = await Promise.all([getBlock(blockId), clientConfig()]);
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
  new RoomPage(block, config).start();
}

class RoomPage {
  private readonly params = new URLSearchParams(location.search);
  private readonly watcher = this.params.get("role") === "watcher";
  // A mentor's second tab joins with the first tab's client id and token (one person).
  private readonly seat = this.watcher ? null : identity.mentorSeat(this.block.id);
  private readonly clientId = this.seat?.clientId ?? identity.clientId();
  private presentedToken = false;
  private role: Role | null = null;
  private session = "";
  private graceSeconds = 5;
  private mentorPresent: boolean | null = null;
  private countdownTimer: ReturnType<typeof setInterval> | undefined;
  private connected = false;
  private lastCounts = "";
  private docBytesCache = 0;
  private docBytesAt = 0;
  private solvedBy: string[] = [];
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
  private readonly roleNoteEl = h("p", { class: "role-note", id: "role-note", hidden: true });
  private readonly awayEl = h("div", { class: "mentor-away", id: "mentor-away", role: "alert", hidden: true });
  private readonly solvedBadge = h("span", { class: "badge solved-badge", id: "solved-badge", hidden: true }, "✓ Solved");
  private readonly peopleTitle = h("h2", { class: "people-title", id: "people-title" }, "In this room");
  private readonly peopleEl = h("ul", { class: "people", id: "people", "aria-labelledby": "people-title" });
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
    private readonly config: ClientConfig,
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
        bases: this.config.bases,
        // `?gateway=N` (for tests and debugging) starts on base N; otherwise pick at random.
        startIndex: Number.isFinite(pin) ? pin : Math.floor(Math.random() * this.config.bases.length),
        blockId: this.block.id,
        clientId: this.clientId,
        watcher: this.watcher,
        token: () => {
          const token = identity.resumeToken(this.block.id) ?? this.seat?.token ?? null;
          this.presentedToken = token !== null;
          return token;
        },
        probeAfterMs,
        deadAfterMs: probeAfterMs && probeAfterMs * 2 + 1000,
        heartbeatMs: this.config.heartbeatSeconds && this.config.heartbeatSeconds * 1000,
        rate: { perSecond: this.config.limits.maxUpdatesPerSecond, burst: this.config.limits.updateBurst },
      },
      {
        status: (s, info) => this.onStatus(s, info.base, info.delayMs),
        control: (ev) => this.onControl(ev),
        docReset: () => this.bindEditor(true),
        denied: () => this.say("You can't edit this code: you are read-only here."),
        terminal: (code) => this.onTerminal(code),
        refused: (code) => this.onRefused(code),
      },
    );
    this.setUser();
    this.renderShell();
    this.bindEditor(false);
    this.provider.connect();
  }

  private renderShell(): void {
    const asking = identity.storedName() === null;
    const nameInput = h("input", {
      id: "display-name",
      name: "name",
      type: "text",
      maxlength: 40,
      autocomplete: "nickname",
      placeholder: asking ? this.name : null,
      value: asking ? "" : this.name,
      "aria-describedby": asking ? "name-ask" : null,
    });
    const nameLabel = h("label", { for: "display-name" }, asking ? "What should the others call you?" : "Your name");
    const askNote = h("p", { class: "name-ask", id: "name-ask" }, `Asked once, remembered on this device. Until then you are “${this.name}”.`);
    const nameForm = h(
      "form",
      { class: asking ? "name-form asking" : "name-form", id: "name-form" },
      nameLabel,
      nameInput,
      h("button", { type: "submit", class: "button small" }, "Save"),
      asking ? askNote : null,
    );
    nameForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = nameInput.value.trim();
      if (!value) return;
      this.name = value.slice(0, 40);
      identity.saveName(this.name);
      this.setUser();
      nameForm.className = "name-form";
      nameLabel.textContent = "Your name";
      nameInput.removeAttribute("aria-describedby");
      nameInput.removeAttribute("placeholder");
      askNote.remove();
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

    const skip = h("a", { class: "skip-link", href: "#editor" }, "Skip to editor");
    skip.addEventListener("click", (e) => {
      e.preventDefault();
      this.editor.view.focus();
    });
    const invite = h("button", { type: "button", class: "button small secondary", id: "copy-invite" }, "Copy invite link");
    invite.addEventListener("click", () => void this.copyInvite());
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
      skip,
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
          this.solvedBadge,
          invite,
        ),
        this.block.description ? h("p", { class: "room-desc" }, this.block.description) : "",
        h("div", { class: "roombar" }, this.roleEl, this.statusEl, this.countsEl),
        h("div", { class: "room-notes" }, this.roleNoteEl, this.awayEl, this.messageEl),
        this.follow.element,
        this.editorHost,
        this.hintEl,
        this.runPanel?.element,
        h(
          "aside",
          { class: "room-side" },
          nameForm,
          this.peopleTitle,
          this.peopleEl,
          this.chat.element,
          this.runPanel?.dashboard,
        ),
      ),
      this.dialog,
    );
  }

  private label(): string {
    // Carets carry the role of read-only people, so a mentor can point at a line.
    return this.role && this.role !== "student" ? `${this.name} · ${ROLE_TAG[this.role]}` : this.name;
  }

  private setUser(): void {
    // y-codemirror.next redraws a remote caret label only when the colour string
    // changes (its widget's eq() compares colours), so each new name is published with
    // the same colour spelled another way (#rrggbb / rgb()).
    this.userVersion += 1;
    const [r, g, b] = [1, 3, 5].map((i) => Number.parseInt(this.color.slice(i, i + 2), 16));
    const color = this.userVersion % 2 ? this.color : `rgb(${r}, ${g}, ${b})`;
    this.provider.awareness.setLocalStateField("user", {
      name: this.label(),
      displayName: this.name,
      role: this.role,
      person: this.clientId,
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

  private docBytes(): number {
    const now = Date.now();
    if (now - this.docBytesAt > 1000) {
      this.docBytesCache = Y.encodeStateAsUpdate(this.provider.doc).length;
      this.docBytesAt = now;
    }
    return this.docBytesCache;
  }

  private bindEditor(rebind: boolean): void {
    const opts = {
      parent: this.editorHost,
      ytext: this.provider.doc.getText("code"),
      awareness: this.provider.awareness,
      language: this.block.language,
      readOnly: this.readOnly,
      label: this.editorLabel(),
      check: (inserted: string) =>
        refusal(utf8Length(inserted), this.docBytes(), this.provider.unsentBytes, this.config.limits),
      refused: (why: string) => this.say(why, true),
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
      this.renderSolved();
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
      const color = (state as PersonState).user?.color;
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
    // While disconnected the others' states are gone: keep the last list, marked stale.
    if (!this.provider.connected && this.peopleEl.childElementCount > 0) return;
    const items: HTMLElement[] = [];
    const self = this.provider.doc.clientID;
    const selfPerson = this.clientId;
    const seen = new Set<string>();
    const states = [...this.provider.awareness.getStates()].sort(([a], [b]) => (a === self ? -1 : b === self ? 1 : 0));
    for (const [clientId, state] of states) {
      const user = (state as PersonState).user;
      if (!user) continue;
      // One person in two tabs (a mentor's second tab) is listed once.
      const person = typeof user.person === "string" ? user.person : `y${clientId}`;
      if (seen.has(person)) continue;
      seen.add(person);
      const name =
        typeof user.displayName === "string" ? user.displayName : typeof user.name === "string" ? user.name : "Anonymous";
      const color = typeof user.color === "string" ? user.color : "#888";
      const role = typeof user.role === "string" && user.role in ROLE_TAG ? (user.role as Role) : null;
      const dot = h("span", { class: "dot", "aria-hidden": "true" });
      dot.style.backgroundColor = color;
      const you = clientId === self || person === selfPerson;
      items.push(
        h(
          "li",
          { "data-role": role ?? "" },
          dot,
          you
            ? h("span", { class: "person-name" }, `${name} (you)`)
            : this.follow.personButton(clientId, name),
          role && role !== "student" ? h("span", { class: `tag tag-${role}` }, ROLE_TAG[role]) : null,
        ),
      );
    }
    this.peopleEl.replaceChildren(...items);
  }

  private onStatus(status: Status, base: string, delayMs?: number): void {
    this.statusEl.textContent = STATUS_TEXT[status];
    this.statusEl.dataset.status = status;
    this.statusEl.dataset.gateway = base;
    this.statusEl.className = `pill status-${status}`;
    this.statusEl.title = delayMs ? `next try in ${(delayMs / 1000).toFixed(1)} s` : base;
    const connected = status === "connected";
    if (connected === this.connected) return;
    this.connected = connected;
    // One consistent picture while away: the counts and the people as last seen.
    const stale = !connected;
    this.countsEl.dataset.stale = String(stale);
    this.peopleEl.dataset.stale = String(stale);
    this.countsEl.classList.toggle("stale", stale);
    this.peopleEl.classList.toggle("stale", stale);
    this.peopleTitle.textContent = stale ? "In this room (last known)" : "In this room";
    if (this.lastCounts) this.countsEl.textContent = stale ? `Last known: ${this.lastCounts}` : this.lastCounts;
    if (connected) this.renderPeople();
  }

  private onControl(ev: ControlEvent): void {
    switch (ev.type) {
      case "welcome":
        this.onWelcome(ev.role, ev.resumeToken, ev.session, ev.graceSeconds);
        this.runPanel?.setRole(ev.role);
        this.chat.setRole(ev.role);
        break;
      case "presence": {
        const parts = [plural(ev.students, "student"), plural(ev.watchers, "watcher")];
        parts.push(ev.mentor ? "mentor present" : "no mentor");
        this.lastCounts = parts.join(" · ");
        this.countsEl.textContent = this.lastCounts;
        this.countsEl.dataset.students = String(ev.students);
        this.countsEl.dataset.watchers = String(ev.watchers);
        this.countsEl.dataset.mentor = String(ev.mentor);
        this.onMentorPresence(ev.mentor);
        break;
      }
      case "solved":
        this.onSolved();
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

  private onWelcome(role: Role, token: string | null, session: string, grace: number | undefined): void {
    const first = this.role === null;
    this.role = role;
    this.session = session;
    if (grace !== undefined) this.graceSeconds = grace;
    identity.saveResumeToken(this.block.id, role === "mentor" ? token : null);
    if (role === "mentor" && token) {
      identity.saveMentorSeat(this.block.id, { clientId: this.clientId, token });
    } else if (this.seat && role !== "mentor") {
      identity.saveMentorSeat(this.block.id, null); // the seat was stale (room closed since)
    }
    this.roleEl.textContent = ROLE_TEXT[role];
    this.roleEl.dataset.role = role;
    this.roleEl.className = `badge role-${role}`;
    this.editor.setReadOnly(this.readOnly, this.editorLabel());
    this.hintEl.hidden = this.readOnly;
    document.body.dataset.role = role;
    this.setUser();
    if (first && role === "mentor" && !this.presentedToken) {
      this.roleNoteEl.textContent =
        "You are the first one in this room, so you mentor it: you follow the students' code read-only. " +
        "If you leave, the room closes for everyone.";
      this.roleNoteEl.hidden = false;
    } else if (role !== "mentor") {
      this.roleNoteEl.hidden = true;
    }
    const mark = identity.solvedMark(this.block.id);
    if (mark && mark.session === session) {
      this.solvedBy = mark.by;
      this.renderSolved();
    }
  }

  // --- the mentor leaves ------------------------------------------------------------

  private onMentorPresence(present: boolean): void {
    const was = this.mentorPresent;
    this.mentorPresent = present;
    if (this.role === "mentor") return;
    if (was === true && !present) this.startCountdown();
    else if (present && this.countdownTimer !== undefined) {
      this.stopCountdown();
      this.say("The mentor is back.");
    }
  }

  private startCountdown(): void {
    this.stopCountdown();
    const ends = Date.now() + this.graceSeconds * 1000;
    const seconds = h("strong", { id: "countdown" });
    const copy = h("button", { type: "button", class: "button small", id: "copy-code" }, "Copy code");
    copy.addEventListener("click", () => void this.copyCode());
    const save = h("button", { type: "button", class: "button small secondary", id: "download-code" }, "Download");
    save.addEventListener("click", () => this.downloadCode());
    const text = h("span", {}, "The mentor left — the room closes in ", seconds, " unless they come back. ");
    this.awayEl.replaceChildren(h("p", {}, text, "The code is yours: keep a copy."), h("p", { class: "actions" }, copy, save));
    this.awayEl.hidden = false;
    const tick = () => {
      const left = Math.max(0, Math.ceil((ends - Date.now()) / 1000));
      seconds.textContent = left > 0 ? `${left} s` : "a moment";
    };
    tick();
    this.countdownTimer = setInterval(tick, 250);
  }

  private stopCountdown(): void {
    clearInterval(this.countdownTimer);
    this.countdownTimer = undefined;
    this.awayEl.hidden = true;
    this.awayEl.replaceChildren();
  }

  private code(): string {
    return this.provider.doc.getText("code").toString();
  }

  private async copyCode(): Promise<void> {
    const ok = await copyText(this.code());
    this.say(ok ? "The code is on your clipboard." : "Copying was refused by the browser: use Download.", !ok);
  }

  private downloadCode(): void {
    const name = fileName(this.block.title, this.block.language);
    download(this.code(), name);
    this.say(`The code was saved as ${name}.`);
  }

  private async copyInvite(): Promise<void> {
    const link = `${location.origin}/blocks/${encodeURIComponent(this.block.id)}`;
    const ok = await copyText(link);
    this.say(ok ? `Invite link copied: ${link}` : `Copy this invite link: ${link}`);
  }

  // --- solved -----------------------------------------------------------------------

  private onSolved(): void {
    document.body.dataset.solvedEvents = String(Number(document.body.dataset.solvedEvents ?? 0) + 1);
    // The person whose own edit made the text match says so (awareness), so everyone
    // can tell who solved it; the gateway itself only knows that it matches.
    if (this.role === "student" && this.provider.lastChangeWasLocal) {
      this.provider.awareness.setLocalStateField("solved", this.session);
    }
    const mark = identity.solvedMark(this.block.id);
    const seen = mark !== null && mark.session === this.session;
    if (!seen) {
      this.solvedBy = [];
      identity.saveSolvedMark(this.block.id, { session: this.session, by: [] });
      // Once per person per room: a later re-match only keeps the badge.
      if (!this.dialog.open) this.dialog.showModal();
    }
    this.renderSolved();
  }

  private renderSolved(): void {
    const mark = identity.solvedMark(this.block.id);
    if (!mark || mark.session !== this.session || !this.session) return;
    // Names only ever add up: who solved it stays known after they leave or we reload.
    const by = new Set([...mark.by, ...this.solvedBy]);
    for (const state of this.provider.awareness.getStates().values()) {
      const st = state as PersonState;
      if (st.solved === this.session && st.user) {
        const name = typeof st.user.displayName === "string" ? st.user.displayName : st.user.name;
        if (typeof name === "string") by.add(name);
      }
    }
    const names = [...by];
    if (names.length > mark.by.length) identity.saveSolvedMark(this.block.id, { session: this.session, by: names });
    this.solvedBy = names;
    const who = names.length ? ` by ${names.join(" and ")}` : "";
    this.solvedBadge.textContent = `✓ Solved${who}`;
    this.solvedBadge.hidden = false;
    const text = this.dialog.querySelector("#solved-text");
    if (text) {
      text.textContent = names.length
        ? `Solved by ${names.join(" and ")}: the code matches the solution. Well done!`
        : "The code matches the solution. Well done!";
    }
  }

  // --- refusals and the end ---------------------------------------------------------

  private onRefused(code: number): void {
    const what =
      code === 1009
        ? `it was larger than the room takes at once (${formatBytes(this.config.limits.maxFrameBytes)})`
        : `the room's code would grow past its limit (${formatBytes(this.config.limits.maxDocBytes)})`;
    this.say(
      `The room refused your last change: ${what}. It was not shared and was removed here; ` +
        "everything else is still shared.",
      true,
    );
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
    // The code is the students': the lobby offers it for copy or download.
    if (this.role !== "mentor") keepCode({ title: this.block.title, language: this.block.language, text: this.code() });
    this.stopCountdown();
    this.provider.destroy();
    location.assign(`/?notice=${encodeURIComponent(notice)}`);
  }

  private say(text: string, isError = false): void {
    this.messageEl.textContent = text;
    this.messageEl.className = isError ? "room-message error" : "room-message";
  }
}
