"""The UI end to end: headless Chromium pages against the real system (redis-server,
embedded MongoDB, api and two gateways as processes), several people at once, their
pages pinned to different gateways with the test-only ``?gateway=N`` query."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.infra import (
    ROOT,
    EmbeddedMongo,
    Fleet,
    RedisServer,
    scaled,
    seed_blocks,
    tool_missing,
)
from tests.web.browser import (
    PHONE,
    People,
    Person,
    expect,
    joined,
    ms,
    screenshot,
    type_at_end,
    wait_text,
)

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]

GRACE = 1.5  # MENTOR_GRACE_SECONDS of the fleets here


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path_factory.mktemp("webfleet"),
        gateways=2,
        env={"MENTOR_GRACE_SECONDS": GRACE},
        redis=redis_server,
        mongo=mongo,
    )
    with fleet:
        for block in seed_blocks():
            fleet.new_block(**block)
        yield fleet


def gateway_url(fleet: Fleet, index: int) -> str:
    return f"{fleet.gateways[index].ws_url}/ws/rooms"


def counts(person: Person, students: int, watchers: int, mentor: bool = True) -> None:
    el = person.page.locator("#counts")
    expect(el).to_have_attribute("data-students", str(students), timeout=ms(10))
    expect(el).to_have_attribute("data-watchers", str(watchers), timeout=ms(10))
    expect(el).to_have_attribute("data-mentor", "true" if mentor else "false", timeout=ms(10))


# --- the lobby ---------------------------------------------------------------------------


def test_lobby_lists_blocks_with_live_room_status(fleet: Fleet, people: People) -> None:
    blocks = seed_blocks()
    lobby = people.open("/")
    expect(lobby.page.locator("h1")).to_have_text("Choose code block")
    items = lobby.page.locator("#blocks li")
    expect(items).to_have_count(len(blocks))
    assert len(blocks) >= 4
    first = lobby.page.locator("#blocks li", has_text=blocks[0]["title"])
    link = first.locator("a.block-link")
    href = link.get_attribute("href")
    assert href and re.fullmatch(r"/blocks/[0-9a-f]{24}", href)
    expect(first.locator(".lang")).to_have_text(blocks[0]["language"])
    expect(first.locator(".live")).to_have_text("No one here yet")

    # Someone enters the room: the lobby shows it without a reload.
    mentor = people.open(href)
    joined(mentor, "mentor")
    expect(first.locator(".live")).to_have_text("Mentor in · 0 students", timeout=ms(10))
    student = people.open(href)
    joined(student, "student")
    expect(first.locator(".live")).to_have_text("Mentor in · 1 student", timeout=ms(10))
    screenshot(lobby.page, "lobby")

    # Following the link from the lobby enters the room.
    link.click()
    expect(lobby.page).to_have_url(re.compile(re.escape(href) + "$"))
    joined(lobby, "student")


def test_lobby_states_loading_empty_and_api_down(people: People) -> None:
    down = people.open("about:blank")
    down.page.route("**/api/code-blocks", lambda route: route.abort())
    down.page.goto("/")
    expect(down.page.locator("#lobby-state")).to_contain_text("Can't reach the coderoom server")
    expect(down.page.locator("#lobby-state button")).to_have_text("Retry now")

    empty = people.open("about:blank")
    empty.page.route("**/api/code-blocks", lambda route: route.fulfill(json=[]))
    empty.page.goto("/")
    expect(empty.page.locator("#lobby-state")).to_have_text("There are no code blocks yet.")

    # The lobby recovers by itself once the api answers again.
    down.page.unroute("**/api/code-blocks")
    expect(down.page.locator("#blocks li").first).to_be_visible(timeout=ms(10))


def test_unknown_block_shows_not_found(people: People) -> None:
    for path in ("/blocks/0123456789abcdef01234567", "/blocks/not-a-block"):
        person = people.open(path)
        expect(person.page.locator("h1")).to_have_text("Code block not found")
        back = person.page.locator("a#back-to-lobby")
        expect(back).to_have_attribute("href", "/")
    back.click()
    expect(person.page.locator("h1")).to_have_text("Choose code block")


# --- a room ------------------------------------------------------------------------------


def test_roles_typing_counts_and_smiley(
    fleet: Fleet, people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(
        title="Sum two numbers",
        template="function add(a, b) {\n  // TODO\n}\n",
        solution="function add(a, b) {\n  return a + b;\n}\n",
    )
    room = f"/blocks/{block['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor", gateway_url(fleet, 0))
    expect(mentor.page.locator("#role")).to_have_text("Mentor — read-only")
    expect(mentor.page.locator("#block-title")).to_have_text("Sum two numbers")
    expect(mentor.editor).to_have_attribute("contenteditable", "false")
    wait_text(mentor, lambda t: t == block["template"].rstrip("\n") or t == block["template"])

    student = people.open(f"{room}?gateway=1")
    joined(student, "student", gateway_url(fleet, 1))
    expect(student.page.locator("#role")).to_have_text("Student — you can edit")
    expect(student.editor).to_have_attribute("contenteditable", "true")

    watcher = people.open(f"{room}?role=watcher&gateway=1")
    joined(watcher, "watcher", gateway_url(fleet, 1))
    expect(watcher.page.locator("#role")).to_have_text("Watcher — read-only")
    expect(watcher.editor).to_have_attribute("contenteditable", "false")

    for person in (mentor, student, watcher):
        counts(person, students=1, watchers=1)
        expect(person.page.locator("#counts")).to_have_text(
            "1 student · 1 watcher · mentor present"
        )

    # The student types on gateway 2; the mentor (gateway 1) and the watcher see it.
    type_at_end(student, "// student was here")
    for person in (mentor, watcher):
        wait_text(person, lambda t: "// student was here" in t)

    # Read-only people cannot change the text. Whatever their keystrokes sent went out
    # before their names (awareness, same socket) and before the student's later edit
    # came back to them: once both are seen, a write the server let through is visible.
    before = mentor.text()
    for person in (mentor, watcher):
        person.editor.click()
        person.page.keyboard.type("XYZ")
    # Remote carets carry the other person's name; names are set once and remembered.
    mentor.page.fill("#display-name", "Ada (mentor)")
    mentor.page.click("#name-form button")
    watcher.page.fill("#display-name", "Wanda")
    watcher.page.press("#display-name", "Enter")
    expect(student.page.locator("#people")).to_contain_text("Ada (mentor)", timeout=ms(10))
    expect(student.page.locator("#people")).to_contain_text("Wanda", timeout=ms(10))
    type_at_end(student, "\n// after the read-only keystrokes")
    for person in (mentor, watcher):
        wait_text(person, lambda t: "// after the read-only keystrokes" in t)
    for person in (student, mentor, watcher):
        assert "XYZ" not in person.text()
    assert mentor.text() == before + "\n// after the read-only keystrokes"
    student.page.fill("#display-name", "Grace")
    student.page.press("#display-name", "Enter")
    # Every remote caret is labelled (the watcher's too, since read-only people show
    # theirs): the student's is among them.
    carets = mentor.page.locator(".cm-ySelectionInfo", has_text="Grace")
    expect(carets).to_have_count(1, timeout=ms(10))
    expect(mentor.page.locator("#people")).to_contain_text("Grace")
    screenshot(mentor.page, "mentor-view")
    screenshot(student.page, "student-view")

    # A second student: counts change on every page.
    second = people.open(f"{room}?gateway=0")
    joined(second, "student", gateway_url(fleet, 0))
    for person in (mentor, student, watcher, second):
        counts(person, students=2, watchers=1)

    # Typing the solution shows the smiley to everyone; Esc closes it.
    student.editor.click()
    student.page.keyboard.press("Control+A")
    student.page.keyboard.insert_text(block["solution"])
    for person in (mentor, student, watcher, second):
        dialog = person.page.locator("dialog#solved")
        expect(dialog).to_be_visible(timeout=ms(10))
        expect(dialog.locator(".smiley")).to_have_text("😃")
        expect(dialog.locator("#solved-close")).to_be_focused()
    screenshot(watcher.page, "solved")
    watcher.page.keyboard.press("Escape")
    expect(watcher.page.locator("dialog#solved")).to_be_hidden()
    mentor.page.click("#solved-close")
    expect(mentor.page.locator("dialog#solved")).to_be_hidden()

    # A student leaves: the counts drop everywhere.
    second.context.close()
    for person in (mentor, student, watcher):
        counts(person, students=1, watchers=1)


def test_late_joiner_on_another_gateway_sees_who_is_there(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    mentor.page.fill("#display-name", "Mentor Mia")
    mentor.page.press("#display-name", "Enter")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    # Well before the mentor's next awareness renewal (15 s).
    expect(student.page.locator("#people")).to_contain_text("Mentor Mia", timeout=ms(5))
    expect(mentor.page.locator("#people li")).to_have_count(2, timeout=ms(5))


def test_mentor_refresh_keeps_the_room(
    fleet: Fleet, people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    type_at_end(student, "// kept across the refresh")
    wait_text(mentor, lambda t: "kept across the refresh" in t)

    mentor.page.fill("#display-name", "Linus")
    mentor.page.press("#display-name", "Enter")
    expect(student.page.locator("#people")).to_contain_text("Linus")

    mentor.page.reload()
    joined(mentor, "mentor")
    wait_text(mentor, lambda t: "kept across the refresh" in t)
    # The name was set once and is remembered (localStorage).
    expect(mentor.page.locator("#display-name")).to_have_value("Linus")
    expect(student.page.locator("#people")).to_contain_text("Linus")
    joined(student, "student")
    counts(student, students=1, watchers=0, mentor=True)
    assert student.page.url.endswith(f"{room}?gateway=1")


def test_mentor_leaving_sends_everyone_to_the_lobby(
    fleet: Fleet, people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    watcher = people.open(f"{room}?role=watcher&gateway=0")
    joined(watcher, "watcher")
    type_at_end(student, "// will be gone")
    wait_text(mentor, lambda t: "will be gone" in t)

    mentor.context.close()
    for person in (student, watcher):
        expect(person.page.locator("h1")).to_have_text("Choose code block", timeout=ms(GRACE + 10))
        expect(person.page.locator("#notice")).to_contain_text(
            "The mentor left, so the room was closed."
        )
        assert fleet.api is not None
        expect(person.page).to_have_url(fleet.api.url + "/")

    # The room starts again from the template: the next person is its mentor.
    again = people.open(room)
    joined(again, "mentor")
    wait_text(again, lambda t: t.strip() == "const answer = 0;")


def test_phone_sized_room(people: People, new_block: Callable[..., dict[str, Any]]) -> None:
    block = new_block(language="python", template="def f():\n    return 1\n")
    room = f"/blocks/{block['id']}"
    mentor = people.open(room, viewport=PHONE)
    joined(mentor, "mentor")
    student = people.open(room, viewport=PHONE)
    joined(student, "student")
    type_at_end(student, "# from a phone")
    wait_text(mentor, lambda t: "# from a phone" in t)
    overflow = student.page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the room page scrolls sideways on a phone"
    expect(student.page.locator(".tok-keyword").first).to_have_text("def")
    screenshot(student.page, "student-phone", full_page=True)


# --- a gateway goes away -------------------------------------------------------------------


def test_gateway_sigterm_pages_move_to_the_other_gateway(
    browser: Any, fleet_factory: Callable[..., Fleet]
) -> None:
    own = fleet_factory(gateways=2, MENTOR_GRACE_SECONDS=5)
    block = own.new_block()
    assert own.api is not None
    crowd = People(browser, own.api.url)
    try:
        room = f"/blocks/{block['id']}"
        mentor = crowd.open(f"{room}?gateway=0")
        joined(mentor, "mentor", gateway_url(own, 0))
        leaving = crowd.open(f"{room}?gateway=0")
        joined(leaving, "student", gateway_url(own, 0))
        staying = crowd.open(f"{room}?gateway=1")
        joined(staying, "student", gateway_url(own, 1))
        type_at_end(leaving, "// before")
        wait_text(staying, lambda t: "// before" in t)

        own.gateways[0].send_signal(signal.SIGTERM)
        # Typed while its gateway is going away or gone: kept and synced afterwards.
        type_at_end(leaving, "\n// during")
        own.gateways[0].popen.wait(scaled(15))  # type: ignore[union-attr]
        type_at_end(leaving, "\n// after")

        for person in (mentor, leaving):
            joined(person, "mentor" if person is mentor else "student", gateway_url(own, 1))
        for person in (mentor, leaving, staying):
            wait_text(person, lambda t: all(s in t for s in ("// before", "// during", "// after")))
            counts(person, students=2, watchers=0, mentor=True)
        type_at_end(staying, "\n// still live")
        wait_text(mentor, lambda t: "// still live" in t)
        crowd.check()
    finally:
        crowd.close()


def test_hung_gateway_is_left_for_the_other_one(
    browser: Any, fleet_factory: Callable[..., Fleet]
) -> None:
    """A gateway that stops answering (SIGSTOP) without closing its sockets: its pages
    notice the silence (probe, then give up: `?silence=1`) and move over."""
    own = fleet_factory(gateways=2, MENTOR_GRACE_SECONDS=15)
    block = own.new_block()
    assert own.api is not None
    crowd = People(browser, own.api.url)
    hung = own.gateways[0]
    try:
        room = f"/blocks/{block['id']}"
        mentor = crowd.open(f"{room}?gateway=0&silence=1")
        joined(mentor, "mentor", gateway_url(own, 0))
        student = crowd.open(f"{room}?gateway=1&silence=1")
        joined(student, "student", gateway_url(own, 1))
        watcher = crowd.open(f"{room}?gateway=0&silence=1&role=watcher")
        joined(watcher, "watcher", gateway_url(own, 0))

        hung.send_signal(signal.SIGSTOP)
        type_at_end(student, "// typed while a gateway hangs")
        for person, role in ((mentor, "mentor"), (watcher, "watcher")):
            expect(person.page.locator("#status")).to_have_attribute(
                "data-gateway", gateway_url(own, 1), timeout=ms(20)
            )
            joined(person, role)
            wait_text(person, lambda t: "typed while a gateway hangs" in t)
        crowd.check()
    finally:
        hung.send_signal(signal.SIGCONT)
        crowd.close()


def test_api_serves_the_shell_with_csp(fleet: Fleet) -> None:
    assert fleet.api is not None
    r = httpx.get(fleet.api.url + "/blocks/anything")
    assert r.status_code == 200
    assert "connect-src 'self' ws: wss:" in r.headers["content-security-policy"]


# --- the socket client against a scripted gateway ------------------------------------------


@pytest.mark.parametrize(
    ("code", "heading", "text"),
    [
        (4404, "Code block not found", "That code block does not exist."),
        (4409, "Choose code block", "That room is full. Try again later."),
        (4410, "Choose code block", "The mentor left, so the room was closed."),
        (4429, None, "Too many connections or edits from here."),
    ],
)
def test_do_not_reconnect_close_codes(
    people: People,
    new_block: Callable[..., dict[str, Any]],
    code: int,
    heading: str | None,
    text: str,
) -> None:
    attempts: list[str] = []

    def gateway(ws: Any) -> None:
        attempts.append(ws.url)
        ws.close(code=code, reason="scripted")

    person = people.open("about:blank")
    person.page.route_web_socket("**/ws/rooms/**", gateway)
    person.page.goto(f"/blocks/{new_block()['id']}")
    if heading is None:
        expect(person.page.locator("#room-message")).to_contain_text(text)
        expect(person.page.locator("#status")).to_have_attribute("data-status", "closed")
    else:
        expect(person.page.locator("h1")).to_have_text(heading)
        expect(person.page.locator("main")).to_contain_text(text)
    person.page.wait_for_timeout(ms(1.5))  # long enough for a (wrong) reconnect attempt
    assert len(attempts) == 1, attempts


def test_reconnect_rotates_gateways_and_sends_the_resume_token(
    fleet: Fleet, people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    attempts: list[str] = []
    live: list[Any] = []

    def gateway(ws: Any) -> None:
        attempts.append(ws.url)
        ws.connect_to_server()
        live.append(ws)

    mentor = people.open("about:blank")
    mentor.page.route_web_socket("**/ws/rooms/**", gateway)
    mentor.page.goto(f"/blocks/{new_block()['id']}?gateway=0")
    joined(mentor, "mentor", gateway_url(fleet, 0))
    assert "token=" not in attempts[0]
    live[-1].close(code=1012, reason="scripted restart")  # "gateway restarting"
    joined(mentor, "mentor", gateway_url(fleet, 1))
    assert len(attempts) == 2
    assert attempts[1].startswith(gateway_url(fleet, 1) + "/")
    assert "token=" in attempts[1]
    client = [a.split("client=")[1].split("&")[0] for a in attempts]
    assert client[0] == client[1]


# --- accessibility ---------------------------------------------------------------------------

AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


def _axe(person: Person) -> list[str]:
    # evaluate() rather than a <script> tag: the page's CSP (rightly) refuses inline scripts.
    person.page.evaluate("(source) => { (0, eval)(source); }", AXE.read_text())
    result = person.page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter((v) => v.impact === 'serious' || v.impact === 'critical')"
        ".map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)"
    )
    return list(result)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_have_no_serious_accessibility_violations(
    people: People, new_block: Callable[..., dict[str, Any]], scheme: str
) -> None:
    if not AXE.is_file():
        tool_missing("axe-core is not installed (make web)")
    room = f"/blocks/{new_block()['id']}"
    lobby = people.open("/")
    mentor = people.open(room)
    joined(mentor, "mentor")  # before the student opens the room: the first one in is mentor
    student = people.open(room)
    joined(student, "student")
    for person in (lobby, mentor, student):
        person.page.emulate_media(color_scheme=scheme)
    expect(lobby.page.locator("#blocks li").first).to_be_visible()
    type_at_end(student, "// hello")
    wait_text(mentor, lambda t: "// hello" in t)
    found = {
        name: _axe(p) for name, p in (("lobby", lobby), ("mentor", mentor), ("student", student))
    }
    assert not any(found.values()), found
