// Router: the lobby, the room and the admin pages are loaded on demand, so the lobby stays small.
import { renderNotFound } from "./notfound";

function route(): void {
  const path = location.pathname;
  if (path === "/" || path === "/index.html") {
    void import("./lobby").then((m) => m.renderLobby());
    return;
  }
  if (path === "/admin" || path === "/admin/") {
    void import("./admin").then((m) => m.renderAdmin());
    return;
  }
  const replay = /^\/admin\/replay\/([A-Za-z0-9_-]{1,64})\/?$/.exec(path);
  if (replay) {
    void import("./replay").then((m) => m.renderReplay(replay[1]));
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
