// Router: the lobby and the room are loaded on demand, so the lobby stays small.
import { renderNotFound } from "./notfound";

function route(): void {
  const path = location.pathname;
  if (path === "/" || path === "/index.html") {
    void import("./lobby").then((m) => m.renderLobby());
    return;
  }
  const match = /^\/blocks\/([^/]+)\/?$/.exec(path);
  if (match) {
    let id: string;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      renderNotFound();
      return;
    }
    void import("./room").then((m) => m.renderRoom(id));
    return;
  }
  renderNotFound("There is no page at this address.", "Page not found");
}

route();
