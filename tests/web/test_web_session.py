"""A page that was away while its room closed and reopened must not leak the old
session's text into the new one: on a `welcome` with another `session` it starts a
fresh Y.Doc. The page's socket is cut and held off with Playwright's WebSocket routing
(the page talks to the real gateway through it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.infra import Fleet, wait_until
from tests.web.browser import People, expect, joined, ms, type_at_end, wait_text
from tests.web.test_web_browser import GRACE

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]


class SocketGate:
    """Routes a page's room sockets to the server until `cut()`, then refuses them."""

    def __init__(self) -> None:
        self.open = True
        self.live: list[Any] = []

    def route(self, ws: Any) -> None:
        if not self.open:
            ws.close(code=1013, reason="held off by the test")
            return
        ws.connect_to_server()
        self.live.append(ws)

    def cut(self) -> None:
        self.open = False
        for ws in self.live:
            ws.close(code=1012, reason="cut by the test")
        self.live.clear()


def test_new_session_resets_the_document(browser: Any, fleet_factory: Callable[..., Fleet]) -> None:
    fleet = fleet_factory(gateways=2, MENTOR_GRACE_SECONDS=GRACE)
    template = "const answer = 0;\n"
    block = fleet.new_block(template=template)
    assert fleet.api is not None
    crowd = People(browser, fleet.api.url)
    try:
        room = f"/blocks/{block['id']}"
        mentor = crowd.open(f"{room}?gateway=0")
        joined(mentor, "mentor")

        gate = SocketGate()
        student = crowd.open("about:blank")
        student.page.route_web_socket("**/ws/rooms/**", gate.route)
        student.page.goto(f"{room}?gateway=1")
        joined(student, "student")
        type_at_end(student, "// old session")
        wait_text(mentor, lambda t: "// old session" in t)

        # The student drops off and types while away.
        gate.cut()
        status = student.page.locator("#status")
        expect(status).to_have_attribute("data-status", "reconnecting")
        expect(status).to_have_text("reconnecting…")
        type_at_end(student, "\n// typed while away")

        # Meanwhile the mentor leaves, the room closes, and someone opens it again.
        mentor.context.close()

        def room_closed() -> bool:
            assert fleet.api is not None
            rooms = fleet.api.get("/api/rooms").json()["rooms"]
            return all(r["blockId"] != block["id"] for r in rooms)

        wait_until(room_closed, GRACE + 15, interval=0.1, message="room closed")
        newcomer = crowd.open(f"{room}?gateway=0")
        expect(newcomer.page.locator("#role")).to_have_attribute(
            "data-role", "mentor", timeout=ms(GRACE + 15)
        )
        wait_text(newcomer, lambda t: t.strip() == template.strip())

        # The student comes back into the new session: its stale text is dropped.
        gate.open = True
        joined(student, "student")
        wait_text(student, lambda t: t.strip() == template.strip())
        type_at_end(student, "\n// new session")
        wait_text(newcomer, lambda t: "// new session" in t)
        text = newcomer.text()
        assert "old session" not in text and "typed while away" not in text
        crowd.check()
    finally:
        crowd.close()
