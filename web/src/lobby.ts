// The lobby: every code block, with live room status polled from /api/rooms.
import { type CodeBlock, listBlocks, listRooms, type RoomStatus } from "./api";
import { h, mount, plural } from "./dom";
import { NOTICES } from "./protocol";
import { copyText, download, fileName, type KeptCode, takeKeptCode } from "./share";

const POLL_MS = 3000;

export function liveText(status: RoomStatus | undefined): string {
  if (!status || (!status.mentor && status.students === 0 && status.watchers === 0)) {
    return "No one here yet";
  }
  const parts = [status.mentor ? "Mentor in" : "No mentor"];
  parts.push(plural(status.students, "student"));
  if (status.watchers) parts.push(plural(status.watchers, "watcher"));
  return parts.join(" · ");
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/** Natural order by title ("Room 2" before "Room 10"), then language, then id. */
export function sortBlocks(blocks: CodeBlock[]): CodeBlock[] {
  return [...blocks].sort(
    (a, b) => collator.compare(a.title, b.title) || collator.compare(a.language, b.language) || collator.compare(a.id, b.id),
  );
}

/** The blocks whose title, description or language hold every word of `query`, in
 * `language` ("" for any). */
export function filterBlocks(blocks: CodeBlock[], query: string, language: string): CodeBlock[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const lang = language.toLowerCase();
  return blocks.filter((b) => {
    if (lang && b.language.toLowerCase() !== lang) return false;
    const hay = `${b.title}\n${b.description}\n${b.language}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}

function keptCodeNotice(kept: KeptCode): HTMLElement {
  const note = h("p", { class: "kept", id: "kept-code" }, `Your code from “${kept.title}” is kept here until you leave this page: `);
  const copy = h("button", { type: "button", class: "link-button", id: "kept-copy" }, "Copy it");
  copy.addEventListener("click", () => {
    void copyText(kept.text).then((ok) => {
      copy.textContent = ok ? "Copied" : "Copy refused: use Download";
    });
  });
  const save = h("button", { type: "button", class: "link-button", id: "kept-download" }, "Download it");
  save.addEventListener("click", () => download(kept.text, fileName(kept.title, kept.language)));
  note.append(copy, " · ", save);
  return note;
}

function takeNotice(): string | null {
  const url = new URL(location.href);
  const key = url.searchParams.get("notice");
  let text: string | null = key ? (NOTICES[key] ?? null) : null;
  try {
    const stored = sessionStorage.getItem("coderoom.notice");
    if (stored) {
      sessionStorage.removeItem("coderoom.notice");
      text ??= NOTICES[stored] ?? null;
    }
  } catch {
    /* storage disabled */
  }
  if (key) {
    url.searchParams.delete("notice");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return text;
}

export function renderLobby(): void {
  document.title = "Choose code block · coderoom";
  const notice = takeNotice();
  const kept = takeKeptCode();
  const status = h("p", { class: "state", id: "lobby-state", role: "status", "aria-live": "polite" }, "Loading code blocks…");
  const list = h("ul", { class: "blocks", id: "blocks", "aria-label": "Code blocks" });
  const liveNote = h("p", { class: "live-note", id: "live-note", "aria-live": "polite" });
  const search = h("input", {
    id: "search",
    type: "search",
    name: "q",
    autocomplete: "off",
    placeholder: "Title, words of the description…",
  });
  const language = h("select", { id: "language-filter", name: "language" }, h("option", { value: "" }, "All languages"));
  const count = h("p", { class: "result-count", id: "result-count", role: "status", "aria-live": "polite" });
  const filters = h(
    "form",
    { class: "filters", id: "filters", role: "search", hidden: true },
    h("div", { class: "field" }, h("label", { for: "search" }, "Search code blocks"), search),
    h("div", { class: "field" }, h("label", { for: "language-filter" }, "Language"), language),
    count,
  );
  filters.addEventListener("submit", (e) => e.preventDefault());
  const banner = notice
    ? h(
        "div",
        { class: "banner", id: "notice", role: "alert" },
        h("div", {}, h("span", {}, notice), kept ? keptCodeNotice(kept) : null),
        h("button", { class: "banner-close", type: "button", "aria-label": "Dismiss notice", onclick: () => banner?.remove() }, "×"),
      )
    : null;

  mount(
    h("a", { class: "skip-link", href: "#main" }, "Skip to code blocks"),
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "/" }, "coderoom")),
    h(
      "main",
      { id: "main", class: "lobby", tabindex: "-1" },
      h("h1", {}, "Choose code block"),
      h(
        "p",
        { class: "lobby-intro", id: "lobby-intro" },
        "Open a block to join its room. The first to open a block mentors it (read-only, and the room closes when the mentor leaves); everyone after joins as a student who can edit. “Watch” follows a room without editing.",
      ),
      banner ?? "",
      filters,
      status,
      list,
      liveNote,
    ),
  );

  let blocks: CodeBlock[] | null = null;
  const rows = new Map<string, HTMLElement>();
  let lastRooms: Map<string, RoomStatus> | null = null;

  const applyFilter = () => {
    if (blocks === null) return;
    const shown = filterBlocks(blocks, search.value, language.value);
    renderBlocks(shown);
    const filtering = search.value.trim() !== "" || language.value !== "";
    count.textContent = filtering ? `${plural(shown.length, "block")} of ${blocks.length} shown` : "";
    if (lastRooms) showRooms(lastRooms);
  };

  const renderBlocks = (items: CodeBlock[]) => {
    list.replaceChildren();
    rows.clear();
    for (const b of items) {
      const live = h("span", { class: "live", "data-live": b.id, "aria-live": "polite" }, "No one here yet");
      rows.set(b.id, live);
      list.append(
        h(
          "li",
          { class: "block", "data-block-id": b.id },
          h(
            "div",
            { class: "block-head" },
            // The whole card follows this link (its ::after covers the card); its
            // text is the card's one accessible name.
            h("h2", { class: "block-title" }, h("a", { class: "block-link", href: `/blocks/${encodeURIComponent(b.id)}` }, b.title)),
            h("span", { class: `lang lang-${b.language.toLowerCase().replace(/[^a-z0-9]/g, "")}` }, b.language),
          ),
          b.description ? h("p", { class: "block-desc" }, b.description) : null,
          h(
            "div",
            { class: "block-meta" },
            live,
            h(
              "a",
              { class: "watch-link", href: `/blocks/${encodeURIComponent(b.id)}?role=watcher`, "aria-label": `Watch ${b.title}` },
              "Watch",
            ),
          ),
        ),
      );
    }
  };

  const loadBlocks = async (): Promise<void> => {
    try {
      const items = sortBlocks(await listBlocks());
      blocks = items;
      const languages = [...new Set(items.map((b) => b.language))].sort((a, b) => collator.compare(a, b));
      language.replaceChildren(h("option", { value: "" }, "All languages"), ...languages.map((l) => h("option", { value: l }, l)));
      filters.hidden = items.length === 0;
      if (items.length === 0) {
        status.textContent = "There are no code blocks yet.";
        status.className = "state empty";
      } else {
        status.textContent = "";
        status.className = "state hidden";
      }
      applyFilter();
    } catch {
      status.className = "state error";
      status.replaceChildren(
        "Can't reach the coderoom server right now. Retrying… ",
        h("button", { type: "button", class: "link-button", onclick: () => void tick() }, "Retry now"),
      );
    }
  };

  const loadRooms = async (): Promise<void> => {
    try {
      lastRooms = await listRooms();
      showRooms(lastRooms);
      liveNote.textContent = "";
    } catch {
      liveNote.textContent = "Live room status is unavailable right now.";
    }
  };

  function showRooms(rooms: Map<string, RoomStatus>): void {
    for (const [id, el] of rows) {
      const text = liveText(rooms.get(id));
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("active", text !== "No one here yet");
    }
  }
  search.addEventListener("input", applyFilter);
  language.addEventListener("change", applyFilter);

  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = async (): Promise<void> => {
    clearTimeout(timer);
    if (blocks === null) await loadBlocks();
    if (blocks !== null) await loadRooms();
    timer = setTimeout(() => void tick(), POLL_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") void tick();
  });
  void tick();
}
