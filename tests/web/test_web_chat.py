"""Chat, hints and follow in headless Chromium against the real system (two gateways, the
api, Redis, MongoDB; pages pinned to gateways with ``?gateway=N``): a student's message
reaches the mentor on the other gateway, as text; a hint stays on its line while a
student inserts lines above it; following scrolls to a student typing far below, and
stops on your own scroll; "Follow me" brings students to the mentor's hint unless they
decline; no serious axe violation with the panel full."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.infra import EmbeddedMongo, Fleet, RedisServer, make_block
from tests.web.browser import People, Person, expect, joined, launch_browser, type_at_end, wait_text
from tests.web.browser import seed as _seed
from tests.web.test_web_browser import AXE

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]

LONG = "".join(f"// line {i}\n" for i in range(1, 251))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("chatfleet"), gateways=2, redis=redis_server, mongo=mongo)
    with fleet:
        yield fleet


@pytest.fixture
def new_room(fleet: Fleet) -> Callable[..., str]:
    def make(**overrides: Any) -> str:
        return f"/blocks/{_seed(fleet, [make_block(**overrides)])[0]['id']}"

    return make


def _axe_panel(person: Person) -> list[str]:
    """Serious or critical axe violations in the chat panel, the people list and the
    follow status (the rest of the page has its own test in test_web_browser.py)."""
    person.page.evaluate("(source) => { (0, eval)(source); }", AXE.read_text())
    result = person.page.evaluate(
        "async () => (await axe.run({include: [['#chat'], ['#people'], ['#follow-status']]},"
        " {resultTypes: ['violations']})).violations"
        ".filter((v) => v.impact === 'serious' || v.impact === 'critical')"
        ".map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)"
    )
    return list(result)


def named(person: Person, name: str) -> None:
    person.page.fill("#display-name", name)
    person.page.click("#name-form button[type=submit]")


def say(person: Person, text: str) -> None:
    person.page.fill("#chat-input", text)
    person.page.press("#chat-input", "Enter")


def hint(person: Person, text: str, line: int) -> None:
    person.page.fill("#hint-input", text)
    person.page.fill("#hint-line", str(line))
    person.page.click("#hint-send")


def line(person: Person, text: str) -> Any:
    # A remote caret's name label is inside the line: match the start, not the end.
    return person.page.locator(".cm-line", has_text=re.compile(f"^{re.escape(text)}(?![0-9])"))


def test_a_students_message_reaches_the_mentor_on_the_other_gateway_as_text(
    people: People, new_room: Callable[..., str]
) -> None:
    room = new_room()
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    watcher = people.open(f"{room}?gateway=1&role=watcher")
    joined(watcher, "watcher")
    named(student, "Ada")
    hostile = (
        '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> '
        "see https://example.com/docs?a=1, not javascript:alert(1)"
    )
    say(student, hostile)
    message = mentor.page.locator("#chat-log li").last
    expect(message.locator(".chat-text")).to_have_text(hostile)
    expect(message.locator(".chat-author")).to_have_text("Ada")
    expect(message.locator(".chat-role")).to_have_text(" (student)")
    for person in (mentor, watcher):
        log = person.page.locator("#chat-log")
        expect(log.locator("li")).to_have_count(1)
        assert log.locator("script, img").count() == 0
        links = log.locator("a")
        expect(links).to_have_count(1)
        assert links.get_attribute("href") == "https://example.com/docs?a=1"
        assert "noopener" in (links.get_attribute("rel") or "")
        assert person.page.evaluate("() => window.pwned") is None
    # Watchers read only: no form for them.
    expect(watcher.page.locator("#chat-form")).to_be_hidden()
    expect(watcher.page.locator("#chat-readonly")).to_be_visible()
    # A late joiner (a reloading mentor) gets the history.
    mentor.page.reload()
    joined(mentor, "mentor")
    expect(mentor.page.locator("#chat-log .chat-text")).to_have_text([hostile])


def test_a_hint_stays_on_its_line_while_students_insert_lines_above(
    people: People, new_room: Callable[..., str]
) -> None:
    room = new_room(template="a = 1\nb = 2\nc = 3\nd = 4\n")
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    hint(mentor, "is c right?", 3)
    for person in (mentor, student):
        expect(person.page.locator("#hint-list li")).to_have_count(1)
        expect(person.page.locator("#hint-list li")).to_have_attribute("data-line", "3")
        expect(person.page.locator(".cm-hint-marker")).to_have_count(1)
    student.editor.click()
    student.page.keyboard.press("Control+Home")
    student.page.keyboard.insert_text("// one\n// two\n")
    wait_text(mentor, lambda t: t.startswith("// one\n// two\na = 1"))
    for person in (mentor, student):
        expect(person.page.locator("#hint-list li")).to_have_attribute("data-line", "5")
        marker = person.page.locator(".cm-hint-marker")
        target = line(person, "c = 3")
        expect(target).to_have_count(1)
        m, t = marker.bounding_box(), target.bounding_box()
        assert m is not None and t is not None
        assert abs((m["y"] + m["height"] / 2) - (t["y"] + t["height"] / 2)) < t["height"] / 2
    # Resolved: gone from the gutter and the list, for everyone.
    mentor.page.click(".hint-resolve")
    for person in (mentor, student):
        expect(person.page.locator("#hint-list li")).to_have_count(0)
        expect(person.page.locator(".cm-hint-marker")).to_have_count(0)


def test_fast_typing_keeps_every_keystroke_and_the_hint_its_line(
    people: People, new_room: Callable[..., str]
) -> None:
    """Keystrokes faster than tasks (one task, a microtask between them): the hints are
    rendered again after an edit, and a transaction dispatched to the editor before
    CodeMirror has read a keystroke from its DOM dropped that keystroke (every other
    character was lost). A hint's line still follows its anchor, not the editor's mapping:
    a line inserted at the start of the hinted line leaves the hint on its text."""
    room = new_room(template="a = 1\nb = 2\nc = 3\n")
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    hint(mentor, "is c right?", 3)
    expect(student.page.locator(".cm-hint-marker")).to_have_count(1)

    typed = "".join(str(i % 10) for i in range(60))
    student.editor.click()
    student.page.keyboard.press("Control+Home")
    student.page.keyboard.press("End")
    student.page.evaluate(
        """async (text) => {
          for (const ch of text) {
            document.execCommand('insertText', false, ch);
            await Promise.resolve();
          }
        }""",
        typed,
    )
    for person in (student, mentor):
        wait_text(person, lambda t: t.startswith(f"a = 1{typed}\nb = 2\nc = 3"))

    student.page.keyboard.press("ArrowDown")
    student.page.keyboard.press("ArrowDown")
    student.page.keyboard.press("Home")
    student.page.keyboard.insert_text("// above c\n")
    student.page.keyboard.press("End")  # the caret's name label off the start of the line
    wait_text(mentor, lambda t: "b = 2\n// above c\nc = 3" in t)
    for person in (mentor, student):
        expect(person.page.locator("#hint-list li")).to_have_attribute("data-line", "4")
        marker = person.page.locator(".cm-hint-marker")
        target = line(person, "c = 3")
        expect(target).to_have_count(1)
        m, t = marker.bounding_box(), target.bounding_box()
        assert m is not None and t is not None
        assert abs((m["y"] + m["height"] / 2) - (t["y"] + t["height"] / 2)) < t["height"] / 2


def test_follow_scrolls_to_a_student_typing_far_below(
    people: People, new_room: Callable[..., str]
) -> None:
    room = new_room(template=LONG)
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    named(student, "Ada")
    mentor.page.locator("#people .person-follow", has_text="Ada").click()
    expect(mentor.page.locator("#follow-status")).to_contain_text("Following Ada")
    expect(line(mentor, "// line 250")).not_to_be_in_viewport()
    type_at_end(student, "// Ada was here")
    expect(line(mentor, "// Ada was here")).to_be_in_viewport()
    # Your own scroll stops following.
    mentor.page.mouse.move(300, 300)
    mentor.page.locator("#editor .cm-scroller").hover()
    mentor.page.mouse.wheel(0, -4000)
    expect(mentor.page.locator("#follow-status")).to_be_hidden()
    student.editor.click()
    student.page.keyboard.press("Control+Home")
    student.page.keyboard.insert_text("// top ")
    wait_text(mentor, lambda t: t.startswith("// top "))
    expect(line(mentor, "// Ada was here")).not_to_be_in_viewport()


def test_follow_me_moves_students_to_the_mentors_hint(
    people: People, new_room: Callable[..., str]
) -> None:
    room = new_room(template=LONG)
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    named(mentor, "Grace")
    students = [people.open(f"{room}?gateway={i % 2}") for i in range(3)]
    for s in students:
        joined(s, "student")
    mentor.page.click("#follow-me")
    for s in students:
        expect(s.page.locator("#follow-status")).to_contain_text("asks everyone to follow them")
        expect(s.page.locator("#follow-status")).to_contain_text("Grace")
    students[2].page.click("#follow-stop")  # this one declines
    expect(students[2].page.locator("#follow-status")).to_contain_text("declined")
    hint(mentor, "look at this one", 200)
    for s in students[:2]:
        expect(line(s, "// line 200")).to_be_in_viewport()
        expect(s.page.locator(".cm-hint-marker")).to_be_visible()
    # The one who declined stays put: its editor did not scroll (the page around it may
    # have, with the run and chat panels beside the editor).
    scroll_top = students[2].page.evaluate(
        "document.querySelector('#editor .cm-scroller').scrollTop"
    )
    assert scroll_top == 0, scroll_top
    expect(line(students[2], "// line 200")).not_to_be_in_viewport()


def test_the_chat_panel_has_no_serious_accessibility_violations(
    people: People, new_room: Callable[..., str]
) -> None:
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (make web)")
    room = new_room()
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"{room}?gateway=1")
    joined(student, "student")
    watcher = people.open(f"{room}?gateway=0&role=watcher")
    joined(watcher, "watcher")
    say(student, "hello https://example.com")
    hint(mentor, "a hint", 1)
    for person in (mentor, student, watcher):
        expect(person.page.locator("#chat-log li")).to_have_count(1)
        expect(person.page.locator("#hint-list li")).to_have_count(1)
    pages = (("mentor", mentor), ("student", student), ("watcher", watcher))
    found = {name: _axe_panel(p) for name, p in pages}
    assert not any(found.values()), found
