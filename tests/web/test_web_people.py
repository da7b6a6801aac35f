"""The room as people live it (issue 18), end to end in Chromium against the real
system: an honest connection state, big pastes, a mentor who leaves, names and roles,
one mentor in two tabs, read-only people by keyboard, and a lobby of a few hundred
blocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest

from tests.infra import ROOT, EmbeddedMongo, Fleet, RedisServer, make_block, wait_until
from tests.web.browser import PHONE, People, Person, launch_browser, ms
from tests.web.browser import seed as _seed

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]

GRACE = 4.0  # MENTOR_GRACE_SECONDS here: long enough to press "Copy code"
# The gateways' defaults (KEEPALIVE_SECONDS=3, KEEPALIVE_TIMEOUT_SECONDS=2): a silent
# socket is closed within interval + timeout + one slice + the short close.
LIVENESS = 3 + 2 + 1 + 0.5
# A low per-connection rate, so that typing on a busy machine still outruns it.
RATE = {"MAX_UPDATES_PER_SECOND": 10, "UPDATE_BURST": 40}
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path_factory.mktemp("peoplefleet"),
        gateways=2,
        env={"MENTOR_GRACE_SECONDS": GRACE, **RATE},
        redis=redis_server,
        mongo=mongo,
    )
    with fleet:
        yield fleet


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=ms(10))
    return pw_expect(locator)


def joined(person: Person, role: str) -> None:
    expect(person.page.locator("#status")).to_have_attribute("data-status", "connected")
    expect(person.page.locator("#role")).to_have_attribute("data-role", role)


def counts(person: Person, students: int, timeout: float = 10) -> None:
    expect(person.page.locator("#counts")).to_have_attribute(
        "data-students", str(students), timeout=ms(timeout)
    )


def wait_text(person: Person, predicate: Callable[[str], bool], timeout: float = 10) -> str:
    def check() -> str | None:
        text = person.text()
        return text if predicate(text) else None

    result = wait_until(check, timeout, message="editor text")
    assert result is not None
    return result


def type_at_end(person: Person, text: str) -> None:
    person.editor.click()
    person.page.keyboard.press("Control+End")
    person.page.keyboard.insert_text(text)


def paste_at_end(person: Person, text: str) -> None:
    """A real paste: a clipboard event with the text, at the end of the code."""
    person.editor.click()
    person.page.keyboard.press("Control+End")
    person.page.evaluate(
        """(text) => {
          const data = new DataTransfer();
          data.setData('text/plain', text);
          document.querySelector('#editor .cm-content').dispatchEvent(
            new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
        }""",
        text,
    )


def watch_status(person: Person) -> None:
    """Record every value the connection pill takes (window.statusLog)."""
    person.page.evaluate(
        """() => {
          const el = document.getElementById('status');
          window.statusLog = [el.dataset.status];
          new MutationObserver(() => window.statusLog.push(el.dataset.status))
            .observe(el, {attributes: true, attributeFilter: ['data-status']});
        }"""
    )


def status_log(person: Person) -> list[str]:
    return list(person.page.evaluate("() => window.statusLog"))


def axe(person: Person) -> list[str]:
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (make web)")
    person.page.evaluate("(source) => { (0, eval)(source); }", AXE.read_text())
    result = person.page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter((v) => v.impact === 'serious' || v.impact === 'critical')"
        ".map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)"
    )
    return list(result)


# --- 1. an honest connection state ------------------------------------------------------


def test_offline_is_shown_at_once_and_the_others_counts_follow(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    other = people.open(f"{room}?gateway=0")
    joined(other, "student")
    for person in (mentor, student, other):
        counts(person, 2)

    student.context.set_offline(True)
    pill = student.page.locator("#status")
    expect(pill).to_have_attribute("data-status", "offline", timeout=3000)
    expect(pill).to_contain_text("offline — your changes will sync when you reconnect")
    # Counts and people: one picture, marked as last known, never half updated.
    expect(student.page.locator("#counts")).to_have_attribute("data-stale", "true")
    expect(student.page.locator("#counts")).to_contain_text("Last known: 2 students")
    expect(student.page.locator("#people-title")).to_have_text("In this room (last known)")
    expect(student.page.locator("#people li")).to_have_count(3)
    # The others stop counting the silent student within the gateways' liveness window.
    for person in (mentor, other):
        counts(person, 1, timeout=LIVENESS + 3)

    # Typed while offline, shared once back.
    type_at_end(student, "\n// typed offline")
    student.context.set_offline(False)
    joined(student, "student")
    expect(student.page.locator("#counts")).to_have_attribute("data-stale", "false")
    for person in (mentor, other):
        counts(person, 2)
        wait_text(person, lambda t: "// typed offline" in t)


# --- 2. a big paste -----------------------------------------------------------------------

BIG = "\n".join(f"// line {i:04d} " + "x" * 188 for i in range(2000))  # about 400 KB


def test_a_big_paste_is_refused_with_a_message_and_the_room_stays_shared(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    watch_status(student)

    paste_at_end(student, BIG)
    message = student.page.locator("#room-message")
    expect(message).to_contain_text("larger than the room can share at once")
    expect(message).to_contain_text("KB")
    assert "line 1999" not in student.text()  # refused before it was applied

    type_at_end(student, "\n// after the paste")
    wait_text(mentor, lambda t: "// after the paste" in t)
    assert status_log(student) == ["connected"], status_log(student)  # never dropped
    counts(mentor, 1)


def test_an_update_the_gateway_refuses_anyway_is_dropped_not_resent(
    people: People, new_block: Callable[..., dict[str, Any]], fleet: Fleet
) -> None:
    """The client's limits are wrong (a config that promises more than the gateways
    take): the gateway closes the socket (1009); the client says so, drops that change
    instead of re-sending it on every reconnect, and goes on sharing."""
    assert fleet.api is not None
    config = httpx.get(fleet.api.url + "/api/config").json()
    config["limits"]["maxFrameBytes"] = 16 * 1024 * 1024
    config["limits"]["maxDocBytes"] = 64 * 1024 * 1024
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open("about:blank")
    student.page.route("**/api/config", lambda route: route.fulfill(json=config))
    student.page.goto(f"{room}?gateway=1")
    joined(student, "student")
    watch_status(student)

    paste_at_end(student, BIG)
    message = student.page.locator("#room-message")
    expect(message).to_contain_text("The room refused your last change", timeout=ms(15))
    joined(student, "student")
    wait_until(lambda: "line 1999" not in student.text(), 10, message="paste dropped")
    type_at_end(student, "\n// after the refusal")
    wait_text(mentor, lambda t: "// after the refusal" in t)
    log = status_log(student)
    assert log.count("connected") == 2, log  # one reconnect, no loop
    assert log[-1] == "connected", log
    assert "line 1999" not in mentor.text()


def test_fast_typing_is_paced_below_the_gateways_rate_limit(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    """Every keystroke is an update and a caret move (two frames); typing faster than
    the gateway's MAX_UPDATES_PER_SECOND (here 10, burst 40) must not get the socket
    closed with 4429: the client holds and merges what it cannot send yet."""
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    watch_status(student)
    typed = "".join(f"{i % 10}" for i in range(150))
    student.editor.click()
    student.page.keyboard.press("Control+End")
    # Keystrokes as fast as the page takes them (Playwright's own typing is far slower
    # on a busy machine): each insertText is an edit and a caret move, two frames.
    took = student.page.evaluate(
        """async (text) => {
          const start = performance.now();
          for (const ch of text) {
            document.execCommand('insertText', false, ch);
            await Promise.resolve();
          }
          return performance.now() - start;
        }""",
        typed,
    )
    print(f"{len(typed)} keystrokes in {took:.0f} ms")
    wait_text(mentor, lambda t: typed in t, timeout=20)
    assert status_log(student) == ["connected"], status_log(student)
    expect(student.page.locator("#room-message")).to_be_empty()


# --- 3, 4. read-only people by keyboard, and their selections ---------------------------


def test_read_only_editor_is_reachable_by_keyboard_and_its_selection_is_shown(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(template="line one\nline two\nline three\n")
    room = f"/blocks/{block['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    student = people.open(room)
    joined(student, "student")
    wait_text(mentor, lambda t: "line three" in t)

    content = mentor.page.locator("#editor .cm-content")
    expect(content).to_have_attribute("aria-readonly", "true")
    expect(content).to_have_attribute("aria-label", f"{block['title']} code (read-only)")
    # "Skip to editor" lands in the code, and so does Tab from the skip link.
    mentor.page.keyboard.press("Tab")
    expect(mentor.page.locator(".skip-link")).to_be_focused()
    mentor.page.keyboard.press("Enter")
    expect(content).to_be_focused()
    mentor.page.locator("#lobby-link").focus()
    for _ in range(12):
        mentor.page.keyboard.press("Tab")
        if mentor.page.evaluate("() => document.activeElement?.classList.contains('cm-content')"):
            break
    expect(content).to_be_focused()
    mentor.page.keyboard.press("Control+Home")
    mentor.page.keyboard.press("ArrowDown")
    expect(mentor.page.locator("#editor .cm-activeLine")).to_have_text("line two")
    # The mentor selects a line: the student sees it, labelled with the role.
    mentor.page.keyboard.press("Shift+End")
    expect(student.page.locator(".cm-ySelection")).to_have_text("line two")
    expect(student.page.locator(".cm-ySelectionInfo", has_text="· mentor")).to_have_count(1)
    assert "line two" in student.text() and "XYZ" not in student.text()


def test_keyboard_hint_is_hidden_on_phones(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    laptop = people.open(room)
    joined(laptop, "student")
    expect(laptop.page.locator("#editor-hint")).to_be_visible()
    phone = people.open(room, viewport=PHONE)
    joined(phone, "student")
    expect(phone.page.locator("#editor-hint")).to_be_hidden()


# --- 6. a mentor who leaves ----------------------------------------------------------------


def test_mentor_leaving_shows_a_countdown_and_the_code_can_be_kept(
    fleet: Fleet, people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    student = people.open(room)
    joined(student, "student")
    assert fleet.api is not None
    student.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fleet.api.url)
    type_at_end(student, "\n// mine to keep")
    wait_text(mentor, lambda t: "// mine to keep" in t)

    mentor.context.close()
    away = student.page.locator("#mentor-away")
    expect(away).to_be_visible(timeout=ms(5))
    expect(away).to_contain_text("The mentor left — the room closes in")
    expect(away.locator("#countdown")).to_have_text(
        __import__("re").compile(r"^[1-9] s$|^a moment$")
    )
    student.page.click("#copy-code")
    expect(student.page.locator("#room-message")).to_have_text("The code is on your clipboard.")
    copied = student.page.evaluate("() => navigator.clipboard.readText()")
    assert "// mine to keep" in copied

    # Sent to the lobby, the code is still offered there.
    expect(student.page.locator("h1")).to_have_text("Choose code block", timeout=ms(GRACE + 10))
    expect(student.page.locator("#notice")).to_contain_text("The mentor left")
    kept = student.page.locator("#kept-code")
    expect(kept).to_contain_text("Your code from")
    with student.page.expect_download() as info:
        student.page.click("#kept-download")
    assert "// mine to keep" in Path(info.value.path()).read_text(encoding="utf-8")


# --- 7. the solved moment --------------------------------------------------------------------


def test_solved_dialog_shows_once_with_who_solved_and_a_lasting_badge(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(template="let x = 1;\n", solution="let x = 2;\n")
    room = f"/blocks/{block['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    student = people.open(room)
    joined(student, "student")
    student.page.fill("#display-name", "Grace")
    student.page.press("#display-name", "Enter")

    student.editor.click()
    student.page.keyboard.press("Control+A")
    student.page.keyboard.insert_text("let x = 2;\n")
    for person in (mentor, student):
        expect(person.page.locator("dialog#solved")).to_be_visible()
        person.page.keyboard.press("Escape")
        expect(person.page.locator("dialog#solved")).to_be_hidden()
    expect(mentor.page.locator("#solved-badge")).to_have_text("✓ Solved by Grace")
    expect(student.page.locator("#solved-badge")).to_have_text("✓ Solved by Grace")

    # Break the match and make it again: the gateway announces solved a second time.
    student.editor.click()
    student.page.keyboard.press("Control+End")
    student.page.keyboard.insert_text("z")
    # The gateway checks once per event-loop tick: a break mended in the same tick is never
    # seen, so the mend waits until the break has gone round (the mentor sees it).
    expect(mentor.page.locator("#editor .cm-content")).to_contain_text("z")
    student.page.keyboard.press("Backspace")
    for person in (mentor, student):
        expect(person.page.locator("body")).to_have_attribute("data-solved-events", "2")
        expect(person.page.locator("dialog#solved")).to_be_hidden()
    expect(student.editor).to_be_focused()  # the dialog did not steal the keyboard
    # A refresh keeps the badge and does not show the dialog again.
    mentor.page.reload()
    joined(mentor, "mentor")
    expect(mentor.page.locator("#solved-badge")).to_have_text("✓ Solved by Grace")
    expect(mentor.page.locator("dialog#solved")).to_be_hidden()


# --- 8, 9. names, roles, one mentor in two tabs ---------------------------------------------


def test_name_is_asked_once_and_roles_are_tagged(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    expect(mentor.page.locator("#role-note")).to_contain_text("first one in this room")
    form = mentor.page.locator("#name-form")
    expect(form).to_have_class("name-form asking")
    expect(form.locator("label")).to_have_text("What should the others call you?")
    mentor.page.fill("#display-name", "Ada")
    mentor.page.press("#display-name", "Enter")
    expect(form).to_have_class("name-form")

    student = people.open(room)
    joined(student, "student")
    expect(student.page.locator("#role-note")).to_be_hidden()
    watcher = people.open(f"{room}?role=watcher")
    joined(watcher, "watcher")
    people_list = student.page.locator("#people")
    expect(people_list.locator("li", has_text="Ada")).to_contain_text("mentor")
    expect(people_list.locator("li[data-role=watcher] .tag")).to_have_text("watcher")
    expect(people_list.locator("li[data-role=student] .tag")).to_have_count(0)

    mentor.page.reload()
    joined(mentor, "mentor")
    expect(form).to_have_class("name-form")
    expect(mentor.page.locator("#display-name")).to_have_value("Ada")
    found = {name: axe(p) for name, p in (("mentor", mentor), ("student", student))}
    assert not any(found.values()), found


def test_the_same_mentor_in_a_second_tab_stays_mentor(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    room = f"/blocks/{new_block()['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    student = people.open(room)
    joined(student, "student")

    second_tab = mentor.context.new_page()
    second_tab.goto(room)
    tab = Person(second_tab, mentor.context)
    joined(tab, "mentor")
    expect(tab.page.locator("#role-note")).to_be_hidden()  # not a fresh room
    counts(student, 1)
    expect(student.page.locator("#counts")).to_have_attribute("data-mentor", "true")
    expect(student.page.locator("#people li[data-role=mentor]")).to_have_count(1)
    # One of the two tabs closes: still the mentor, the room stays.
    mentor.page.close()
    joined(tab, "mentor")
    expect(student.page.locator("#counts")).to_have_attribute("data-mentor", "true")
    expect(student.page.locator("#mentor-away")).to_be_hidden()


# --- 5, 10. pages and the lobby ------------------------------------------------------------


def test_unknown_page_paths_get_the_friendly_page(fleet: Fleet, people: People) -> None:
    assert fleet.api is not None
    for path in ("/blocks/", "/no/such/page"):
        r = httpx.get(fleet.api.url + path, headers={"Accept": "text/html"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        person = people.open(path)
        expect(person.page.locator("h1")).to_have_text("Page not found")
        expect(person.page.locator("a#back-to-lobby")).to_have_attribute("href", "/")
    r = httpx.get(fleet.api.url + "/api/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert not axe(person)


@pytest.mark.timeout(300)
def test_lobby_search_filter_natural_order_whole_card_and_invite(
    fleet: Fleet, people: People
) -> None:
    # 299 rooms written straight into the fleet's database (300 POSTs take minutes on a
    # busy machine), and one block through the api.
    now = datetime.now(UTC)
    rooms = [
        {**make_block(title=f"Room {i}", description=f"Exercise number {i}."), "created_at": now}
        for i in range(1, 300)
    ]
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(fleet.env["MONGODB_URL"]) as client:
        collection: Any = client[fleet.env["MONGODB_DB"]]["code_blocks"]
        collection.insert_many([{**r, "updated_at": now} for r in rooms])
    binary = _seed(
        fleet,
        [
            make_block(
                title="Binary search",
                language="python",
                description="Find a value in a sorted list. " + "A long description. " * 12,
            )
        ],
    )[0]
    assert fleet.api is not None
    total = len(httpx.get(fleet.api.url + "/api/code-blocks").json())  # with other tests' blocks
    assert total >= 300
    lobby = people.open("/")
    cards = lobby.page.locator("#blocks li")
    expect(cards).to_have_count(total)
    titles = cards.locator(".block-link").all_text_contents()
    assert titles.index("Room 2") < titles.index("Room 10") < titles.index("Room 100")
    expect(lobby.page.locator("#lobby-intro")).to_contain_text("first to open a block mentors it")

    lobby.page.fill("#search", "binary")
    expect(cards).to_have_count(1)
    expect(lobby.page.locator("#result-count")).to_have_text(f"1 block of {total} shown")
    lobby.page.fill("#search", "")
    lobby.page.select_option("#language-filter", "python")
    listed = httpx.get(fleet.api.url + "/api/code-blocks").json()
    python = [b for b in listed if b["language"] == "python"]
    expect(cards).to_have_count(len(python))
    card = cards.filter(has_text="Binary search")
    # The description is readable in full (not cut to two lines).
    desc = card.locator(".block-desc")
    assert desc.evaluate("(el) => el.scrollHeight <= el.clientHeight + 1")
    assert not axe(lobby)
    # The card is one link: clicking its description enters the room.
    box = desc.bounding_box()
    assert box is not None
    lobby.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(lobby.page).to_have_url(f"{fleet.api.url}/blocks/{binary['id']}")
    joined(lobby, "mentor")

    lobby.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=fleet.api.url)
    lobby.page.click("#copy-invite")
    expect(lobby.page.locator("#room-message")).to_contain_text("Invite link copied")
    assert lobby.page.evaluate("() => navigator.clipboard.readText()") == (
        f"{fleet.api.url}/blocks/{binary['id']}"
    )
