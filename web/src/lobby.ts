// The lobby: every code block, with live room status polled from /api/rooms.
import { type CodeBlock, listBlocks, listRooms, type RoomStatus } from "./api";
import { h, mount, plural } from "./dom";
import { NOTICES } from "./protocol";

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
  const status = h("p", { class: "state", id: "lobby-state", role: "status", "aria-live": "polite" }, "Loading code blocks…");
  const list = h("ul", { class: "blocks", id: "blocks", "aria-label": "Code blocks" });
  const liveNote = h("p", { class: "live-note", id: "live-note", "aria-live": "polite" });
  const banner = notice
    ? h(
        "div",
        { class: "banner", id: "notice", role: "alert" },
        h("span", {}, notice),
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
      banner ?? "",
      status,
      list,
      liveNote,
    ),
  );

  let blocks: CodeBlock[] | null = null;
  const rows = new Map<string, HTMLElement>();

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
            h("a", { class: "block-link", href: `/blocks/${encodeURIComponent(b.id)}` }, b.title),
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
      const items = await listBlocks();
      blocks = items;
      if (items.length === 0) {
        status.textContent = "There are no code blocks yet.";
        status.className = "state empty";
      } else {
        status.textContent = "";
        status.className = "state hidden";
      }
      renderBlocks(items);
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
      const rooms = await listRooms();
      for (const [id, el] of rows) {
        const text = liveText(rooms.get(id));
        if (el.textContent !== text) el.textContent = text;
        el.classList.toggle("active", text !== "No one here yet");
      }
      liveNote.textContent = "";
    } catch {
      liveNote.textContent = "Live room status is unavailable right now.";
    }
  };

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
