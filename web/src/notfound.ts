import { h, mount } from "./dom";

export function renderNotFound(what = "That code block does not exist.", heading = "Code block not found"): void {
  document.title = "Not found · coderoom";
  mount(
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "/" }, "coderoom")),
    h(
      "main",
      { id: "main", class: "message-page not-found" },
      h("h1", {}, heading),
      h("p", {}, what),
      h("p", {}, h("a", { class: "button", href: "/", id: "back-to-lobby" }, "← Back to the lobby")),
    ),
  );
}
