// The admin area (/admin): sign in with the admin token (kept for this browser session
// only), list, create, edit and delete code blocks, see a block's archived sessions and
// open their replays. Everything goes through the REST api (services/api/routes).
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers } from "@codemirror/view";

import { adminFetch, AdminError, adminToken, checkToken, saveAdminToken } from "./adminapi";
import { listRooms, type RoomStatus } from "./api";
import { h, mount, plural } from "./dom";
import { languageExtension } from "./editor";

interface AdminBlock {
  id: string;
  title: string;
  slug: string;
  language: string;
  description: string;
  template: string;
  solution: string;
}
interface Summary {
  id: string;
  title: string;
  slug: string;
  language: string;
}
interface Session {
  sessionId: string;
  startedAt: string | null;
  endedAt: string | null;
  solved: boolean;
  peakStudents: number;
  reason: string;
  replayBytes: number;
}
const FIELDS = ["title", "slug", "language", "description", "template", "solution"] as const;
type Field = (typeof FIELDS)[number];

let languages: string[] = ["javascript", "typescript", "python", "text"];

async function loadLanguages(): Promise<void> {
  // The enum of the api's own schema: one list, the server's.
  try {
    const doc = (await adminFetch("/api/openapi.json")) as {
      components?: { schemas?: { BlockSpec?: { properties?: { language?: { enum?: unknown } } } } };
    };
    const list = doc.components?.schemas?.BlockSpec?.properties?.language?.enum;
    if (Array.isArray(list) && list.every((l) => typeof l === "string")) languages = list as string[];
  } catch {
    /* keep the short list */
  }
}

function topbar(signedIn: boolean): HTMLElement {
  return h(
    "header",
    { class: "topbar" },
    h("a", { class: "brand", href: "/" }, "coderoom"),
    h("span", { class: "topbar-title" }, "Admin"),
    h("a", { class: "back", href: "/" }, "Lobby"),
    signedIn
      ? h(
          "button",
          {
            type: "button",
            class: "button secondary small",
            id: "sign-out",
            onclick: () => {
              saveAdminToken(null);
              renderAdmin();
            },
          },
          "Sign out",
        )
      : null,
  );
}

export function renderAdmin(): void {
  document.title = "Admin · coderoom";
  if (!adminToken()) {
    renderSignIn();
    return;
  }
  void loadLanguages();
  renderBlocks();
}

function renderSignIn(): void {
  const input = h("input", {
    id: "admin-token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "admin-token-error",
  });
  const error = h("p", { class: "field-error", id: "admin-token-error", role: "alert" });
  const button = h("button", { class: "button", type: "submit", id: "sign-in" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", id: "signin-form", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Admin sign-in"),
    h("p", { class: "muted" }, "The admin token is kept only for this browser tab's session."),
    h("label", { for: "admin-token" }, "Admin token"),
    input,
    error,
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    error.textContent = "";
    checkToken(token)
      .then((ok) => {
        if (ok) {
          saveAdminToken(token);
          renderAdmin();
        } else {
          input.setAttribute("aria-invalid", "true");
          error.textContent = "That admin token is not accepted.";
          input.focus();
        }
      })
      .catch(() => {
        error.textContent = "Can't reach the coderoom server right now. Try again.";
      })
      .finally(() => {
        button.disabled = false;
      });
  });
  mount(topbar(false), h("main", { id: "main", class: "admin" }, form));
  input.focus();
}

function liveSummary(status: RoomStatus | undefined): string {
  if (!status || (!status.mentor && !status.students && !status.watchers)) return "";
  const parts = [status.mentor ? "mentor in" : "no mentor", plural(status.students, "student")];
  if (status.watchers) parts.push(plural(status.watchers, "watcher"));
  return parts.join(", ");
}

function renderBlocks(notice = ""): void {
  const state = h("p", { class: "state", id: "admin-state", role: "status", "aria-live": "polite" }, notice || "Loading code blocks…");
  const body = h("tbody", {});
  const table = h(
    "table",
    { class: "admin-table", id: "admin-blocks" },
    h("caption", { class: "visually-hidden" }, "Code blocks"),
    h(
      "thead",
      {},
      h("tr", {}, h("th", { scope: "col" }, "Title"), h("th", { scope: "col" }, "Language"), h("th", { scope: "col" }, "Live room"), h("th", { scope: "col" }, "Actions")),
    ),
    body,
  );
  const detail = h("section", { id: "admin-detail", "aria-live": "polite" });
  mount(
    topbar(true),
    h(
      "main",
      { id: "main", class: "admin" },
      h(
        "div",
        { class: "admin-head" },
        h("h1", {}, "Code blocks"),
        h("button", { class: "button", type: "button", id: "new-block", onclick: () => void openForm(detail, null) }, "New code block"),
      ),
      state,
      table,
      detail,
    ),
  );
  void (async () => {
    try {
      const [blocks, rooms] = await Promise.all([
        adminFetch("/api/code-blocks") as Promise<Summary[]>,
        listRooms().catch(() => new Map<string, RoomStatus>()),
      ]);
      if (!notice) state.textContent = blocks.length ? plural(blocks.length, "code block") : "There are no code blocks yet.";
      for (const block of blocks) body.append(blockRow(block, rooms.get(block.id), detail, state));
    } catch (err) {
      state.className = "state error";
      state.textContent = err instanceof Error ? err.message : "Loading failed.";
    }
  })();
}

function blockRow(block: Summary, status: RoomStatus | undefined, detail: HTMLElement, state: HTMLElement): HTMLElement {
  const actions = h("td", { class: "actions" });
  const row = h(
    "tr",
    { "data-block-id": block.id },
    h("td", {}, h("a", { href: `/blocks/${encodeURIComponent(block.id)}` }, block.title), h("div", { class: "muted small" }, block.slug)),
    h("td", {}, block.language),
    h("td", { class: "live" }, liveSummary(status) || "—"),
    actions,
  );
  const normal = (): void => {
    actions.replaceChildren(
      h("button", { type: "button", class: "button secondary small", "data-action": "edit", "aria-label": `Edit ${block.title}`, onclick: () => void openForm(detail, block.id) }, "Edit"),
      h("button", { type: "button", class: "button secondary small", "data-action": "sessions", "aria-label": `Sessions of ${block.title}`, onclick: () => void openSessions(detail, block) }, "Sessions"),
      h("button", { type: "button", class: "button secondary small danger", "data-action": "delete", "aria-label": `Delete ${block.title}`, onclick: confirmDelete }, "Delete"),
    );
  };
  const confirmDelete = (): void => {
    const yes = h(
      "button",
      {
        type: "button",
        class: "button small danger-solid",
        "data-action": "confirm-delete",
        onclick: () => {
          adminFetch(`/api/code-blocks/${encodeURIComponent(block.id)}`, { method: "DELETE" })
            .then(() => renderBlocks(`Deleted “${block.title}”.`))
            .catch((err: unknown) => {
              state.className = "state error";
              state.textContent = err instanceof Error ? err.message : "Delete failed.";
              normal();
            });
        },
      },
      "Yes, delete",
    );
    actions.replaceChildren(
      h("span", { class: "confirm" }, `Delete “${block.title}”? `),
      yes,
      h("button", { type: "button", class: "button secondary small", onclick: normal }, "Cancel"),
    );
    yes.focus();
  };
  normal();
  return row;
}

function codeField(parent: HTMLElement, value: string, language: string, label: string, errorId: string): EditorView {
  return new EditorView({
    parent,
    state: EditorState.create({
      doc: value,
      extensions: [
        lineNumbers(),
        history(),
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        languageExtension(language),
        EditorView.contentAttributes.of({ "aria-label": label, "aria-describedby": errorId }),
      ],
    }),
  });
}

async function openForm(detail: HTMLElement, blockId: string | null): Promise<void> {
  detail.replaceChildren(h("p", { class: "state" }, "Loading…"));
  let block: AdminBlock | null = null;
  let live = "";
  try {
    if (blockId) {
      block = (await adminFetch(`/api/code-blocks/${encodeURIComponent(blockId)}/admin`)) as AdminBlock;
      live = liveSummary((await listRooms().catch(() => new Map<string, RoomStatus>())).get(blockId));
    }
  } catch (err) {
    detail.replaceChildren(h("p", { class: "state error", role: "alert" }, err instanceof Error ? err.message : "Loading failed."));
    return;
  }
  const errors = new Map<Field, HTMLElement>();
  const errorEl = (field: Field): HTMLElement => {
    const el = h("p", { class: "field-error", id: `err-${field}` });
    errors.set(field, el);
    return el;
  };
  const input = (field: "title" | "slug", value: string, extra: Record<string, string> = {}) =>
    h("input", { id: `f-${field}`, name: field, value, "aria-describedby": `err-${field}`, autocomplete: "off", ...extra });
  const title = input("title", block?.title ?? "");
  const slug = input("slug", block?.slug ?? "", { spellcheck: "false" });
  const language = h(
    "select",
    { id: "f-language", name: "language", "aria-describedby": "err-language" },
    ...languages.map((l) => h("option", { value: l, selected: l === (block?.language ?? "javascript") }, l)),
  );
  const description = h("textarea", { id: "f-description", name: "description", rows: 2, "aria-describedby": "err-description" }, block?.description ?? "");
  const templateHost = h("div", { class: "code-field", id: "f-template" });
  const solutionHost = h("div", { class: "code-field", id: "f-solution" });
  const formError = h("p", { class: "field-error", id: "form-error", role: "alert" });
  const save = h("button", { class: "button", type: "submit", id: "save-block" }, blockId ? "Save changes" : "Create block");
  const form = h(
    "form",
    { class: "card block-form", id: "block-form", "aria-labelledby": "form-title", novalidate: true },
    h("h2", { id: "form-title" }, blockId ? `Edit “${block?.title ?? ""}”` : "New code block"),
    live
      ? h(
          "p",
          { class: "banner", id: "live-room-notice", role: "status" },
          `A room is open on this block now (${live}). Saving does not touch it: its students keep the code they are writing and it keeps checking against the solution it opened with. ` +
            "Title, description and slug change in the lobby at once; the new template and solution apply from the room's next session.",
        )
      : null,
    h("label", { for: "f-title" }, "Title"),
    title,
    errorEl("title"),
    h("label", { for: "f-slug" }, "Slug ", h("span", { class: "muted small" }, "(lowercase letters, digits and dashes)")),
    slug,
    errorEl("slug"),
    h("label", { for: "f-language" }, "Language"),
    language,
    errorEl("language"),
    h("label", { for: "f-description" }, "Description"),
    description,
    errorEl("description"),
    h("p", { class: "label", id: "l-template" }, "Template"),
    templateHost,
    errorEl("template"),
    h("p", { class: "label", id: "l-solution" }, "Solution"),
    solutionHost,
    errorEl("solution"),
    formError,
    h("div", { class: "form-actions" }, save, h("button", { class: "button secondary", type: "button", onclick: () => detail.replaceChildren() }, "Cancel")),
  );
  detail.replaceChildren(form);
  const lang = block?.language ?? "javascript";
  const template = codeField(templateHost, block?.template ?? "", lang, "Template", "err-template");
  const solution = codeField(solutionHost, block?.solution ?? "", lang, "Solution", "err-solution");
  title.focus();

  const showErrors = (fields: { field: string; message: string }[], fallback: string): void => {
    let shown = false;
    for (const { field, message } of fields) {
      const name = field.split(".").pop() as Field;
      const el = errors.get(name);
      if (!el) continue;
      el.textContent = message;
      document.getElementById(`f-${name}`)?.setAttribute("aria-invalid", "true");
      shown = true;
    }
    formError.textContent = shown ? "Please correct the fields marked above." : fallback;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    for (const [field, el] of errors) {
      el.textContent = "";
      document.getElementById(`f-${field}`)?.removeAttribute("aria-invalid");
    }
    formError.textContent = "";
    const body = {
      title: title.value,
      slug: slug.value,
      language: language.value,
      description: description.value,
      template: template.state.doc.toString(),
      solution: solution.state.doc.toString(),
    };
    save.disabled = true;
    const request = blockId
      ? adminFetch(`/api/code-blocks/${encodeURIComponent(blockId)}`, { method: "PUT", body })
      : adminFetch("/api/code-blocks", { method: "POST", body });
    request
      .then(() => renderBlocks(blockId ? `Saved “${body.title}”.` : `Created “${body.title}”.`))
      .catch((err: unknown) => {
        if (err instanceof AdminError && err.code === "duplicate_slug") {
          showErrors([{ field: "slug", message: "Another code block already uses this slug." }], err.message);
        } else if (err instanceof AdminError) {
          showErrors(err.fields, err.message);
        } else {
          formError.textContent = "Can't reach the coderoom server right now. Try again.";
        }
        const first = form.querySelector<HTMLElement>("[aria-invalid=true]");
        first?.focus();
      })
      .finally(() => {
        save.disabled = false;
      });
  });
}

function when(iso: string | null): string {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function minutes(from: string | null, to: string | null): string {
  if (!from || !to) return "—";
  const ms = new Date(to).getTime() - new Date(from).getTime();
  if (!Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function openSessions(detail: HTMLElement, block: Summary): Promise<void> {
  detail.replaceChildren(h("p", { class: "state" }, "Loading sessions…"));
  let sessions: Session[];
  try {
    sessions = (await adminFetch(`/api/code-blocks/${encodeURIComponent(block.id)}/sessions`)) as Session[];
  } catch (err) {
    detail.replaceChildren(h("p", { class: "state error", role: "alert" }, err instanceof Error ? err.message : "Loading failed."));
    return;
  }
  const list = h("ul", { class: "sessions", id: "sessions" });
  for (const s of sessions) {
    list.append(
      h(
        "li",
        { "data-session-id": s.sessionId },
        h("span", {}, when(s.startedAt)),
        h("span", {}, `${minutes(s.startedAt, s.endedAt)} min`),
        h("span", {}, plural(s.peakStudents, "student")),
        h("span", { class: s.solved ? "ok" : "muted" }, s.solved ? "solved" : "not solved"),
        s.replayBytes > 0
          ? h("a", { class: "button small", href: `/admin/replay/${encodeURIComponent(s.sessionId)}` }, "Replay")
          : h("span", { class: "muted" }, "no replay"),
      ),
    );
  }
  detail.replaceChildren(
    h(
      "div",
      { class: "card" },
      h("h2", {}, `Sessions of “${block.title}”`),
      sessions.length ? list : h("p", { class: "state" }, "No archived sessions yet."),
    ),
  );
}
