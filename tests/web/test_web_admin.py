"""The admin area and the session replay end to end: headless Chromium against the real
system (redis-server, embedded MongoDB, api and two gateways as processes)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from pycrdt import Doc, Text
from redis import Redis

from shared.keys import Keys
from tests.infra import EmbeddedMongo, Fleet, RedisServer, make_block, wait_until
from tests.web.browser import (
    People,
    Person,
    expect,
    joined,
    launch_browser,
    ms,
    type_at_end,
    wait_text,
)
from tests.web.browser import seed as _seed
from tests.web.test_web_browser import AXE, GRACE, _axe

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]

TOKEN = Fleet.ADMIN_TOKEN


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    # The log is never compacted here, so the test can read every state the room had.
    env = {"MENTOR_GRACE_SECONDS": GRACE, "LOG_COMPACT_ENTRIES": 100000}
    fleet = Fleet(
        tmp_path_factory.mktemp("adminfleet"), gateways=2, env=env, redis=redis_server, mongo=mongo
    )
    with fleet:
        yield fleet


def sign_in(person: Person, token: str = TOKEN) -> None:
    person.page.fill("#admin-token", token)
    person.page.click("#sign-in")


def storage(person: Person) -> dict[str, Any]:
    return dict(
        person.page.evaluate(
            "() => ({local: JSON.stringify(localStorage), session: JSON.stringify(sessionStorage)})"
        )
    )


def code_field(person: Person, field: str, text: str) -> None:
    person.page.click(f"#f-{field} .cm-content")
    person.page.keyboard.insert_text(text)


def test_admin_manages_blocks(fleet: Fleet, people: People) -> None:
    admin = people.open("/admin")
    expect(admin.page.locator("#signin-form")).to_be_visible()

    # A wrong token is refused and kept nowhere.
    sign_in(admin, "not-the-token")
    expect(admin.page.locator("#admin-token-error")).to_have_text(
        "That admin token is not accepted."
    )
    expect(admin.page.locator("#admin-token")).to_have_attribute("aria-invalid", "true")
    assert "not-the-token" not in str(storage(admin))

    sign_in(admin)
    expect(admin.page.locator("#admin-blocks")).to_be_visible()

    # A validation error shows at its field, and nothing is created.
    admin.page.click("#new-block")
    admin.page.fill("#f-title", "Closures, replayed")
    admin.page.fill("#f-slug", "Not A Slug!")
    code_field(admin, "template", "function counter() {\n}\n")
    code_field(admin, "solution", "function counter() { let n = 0; return () => ++n; }\n")
    admin.page.click("#save-block")
    expect(admin.page.locator("#err-slug")).to_contain_text("pattern")
    expect(admin.page.locator("#f-slug")).to_have_attribute("aria-invalid", "true")
    expect(admin.page.locator("#err-title")).to_be_hidden()
    slug = f"closures-{int(time.time() * 1000)}"
    admin.page.fill("#f-slug", slug)
    admin.page.click("#save-block")
    expect(admin.page.locator("#admin-state")).to_have_text("Created “Closures, replayed”.")
    row = admin.page.locator("#admin-blocks tr", has_text="Closures, replayed")
    expect(row).to_have_count(1)
    block_id = row.get_attribute("data-block-id")
    assert block_id

    # It is in the lobby, and a room on it works.
    lobby = people.open("/")
    expect(lobby.page.locator("#blocks li", has_text="Closures, replayed")).to_have_count(1)
    mentor = people.open(f"/blocks/{block_id}")
    joined(mentor, "mentor")
    student = people.open(f"/blocks/{block_id}")
    joined(student, "student")
    wait_text(student, lambda t: t.startswith("function counter()"))
    type_at_end(student, "// typed in the new block")
    wait_text(mentor, lambda t: "// typed in the new block" in t)

    # Editing it while the room is live says what happens to the room.
    row.locator("[data-action=edit]").click()
    expect(admin.page.locator("#f-title")).to_have_value("Closures, replayed")
    notice = admin.page.locator("#live-room-notice")
    expect(notice).to_contain_text("A room is open on this block now (mentor in, 1 student)")
    expect(notice).to_contain_text("apply from the room's next session")
    admin.page.fill("#f-description", "Now with a description.")
    admin.page.click("#save-block")
    expect(admin.page.locator("#admin-state")).to_have_text("Saved “Closures, replayed”.")
    assert fleet.api is not None
    assert fleet.api.get(f"/api/code-blocks/{block_id}").json()["description"] == (
        "Now with a description."
    )

    # The token: in this tab's sessionStorage only, never in a URL or a log line.
    kept = storage(admin)
    assert TOKEN in kept["session"] and TOKEN not in kept["local"]
    assert TOKEN not in admin.page.url
    for service in fleet.services:
        assert TOKEN not in service.log_path.read_text(errors="replace"), service.name

    # Delete, after an in-page confirmation.
    mentor.context.close()
    student.context.close()
    row.locator("[data-action=delete]").click()
    admin.page.click("[data-action=confirm-delete]")
    expect(admin.page.locator("#admin-state")).to_have_text("Deleted “Closures, replayed”.")
    expect(admin.page.locator("#admin-blocks tr", has_text="Closures, replayed")).to_have_count(0)


def _room_states(fleet: Fleet, block_id: str, template: str) -> tuple[list[str], list[int]]:
    """Every text the room had (the template, then after each log entry) and the Redis
    time of each update in its history, read straight from Redis while it is open."""
    keys = Keys(fleet.env["REDIS_PREFIX"]).room(block_id)
    client = Redis.from_url(fleet.redis.url)
    try:
        log: list[Any] = list(client.xrange(keys.log) or [])
        history: list[Any] = list(client.xrange(keys.history) or [])
        snap_seq = int(client.hget(keys.state, "snap_seq") or 0)
        snapshot: Any = client.get(keys.doc)
    finally:
        client.close()
    assert snap_seq == 0, "the log was compacted: raise LOG_COMPACT_ENTRIES"
    doc: Doc[Text] = Doc()
    assert snapshot is not None
    doc.apply_update(bytes(snapshot))
    texts = [str(doc.get("code", type=Text))]
    assert texts[0] == template
    for _, fields in log:
        doc.apply_update(bytes(fields[b"u"]))
        texts.append(str(doc.get("code", type=Text)))
    times = [int(bytes(eid).split(b"-")[0]) for eid, f in history if f[b"k"] == b"u"]
    assert len(times) == len(log)
    return texts, times


@pytest.mark.timeout(300)
def test_replay_of_a_session_typed_by_three_students(fleet: Fleet, people: People) -> None:
    template = "// three students\n"
    block = _seed(fleet, [make_block(template=template, solution="// solved\n")])[0]
    room = f"/blocks/{block['id']}"
    mentor = people.open(f"{room}?gateway=0")
    joined(mentor, "mentor")
    students = []
    for i, name in enumerate(("Ada", "Grace", "Linus")):
        page = people.open("about:blank")
        page.context.add_init_script(f"localStorage.setItem('coderoom.name', '{name}')")
        page.page.goto(f"{room}?gateway={i % 2}")
        joined(page, "student")
        students.append(page)

    # Phase one: each student types a line; the mentor sees the result.
    for i, student in enumerate(students):
        type_at_end(student, f"\nlet s{i} = {i};")
    phase_one = wait_text(mentor, lambda t: all(f"let s{i} = {i};" in t for i in range(3)))
    quiet_at = int(time.time() * 1000)  # nothing typed from here ...
    for student in students:
        wait_text(student, lambda t: t == phase_one)
    # Phase two: all three type at once, twice.
    for round_ in range(2):
        for i, student in enumerate(students):
            type_at_end(student, f"\n// {round_}{i} by student {i}")
    wait_text(mentor, lambda t: t.count("by student") == 6)
    final_seen = mentor.text()
    for student in students:
        wait_text(student, lambda t: t == final_seen)
    texts, update_times = _room_states(fleet, block["id"], template)
    assert final_seen in texts and phase_one in texts

    # The mentor leaves: the room closes and is archived with its replay.
    mentor.context.close()
    for student in students:
        student.context.close()
    assert fleet.api is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def archived() -> dict[str, Any] | None:
        assert fleet.api is not None
        rows = fleet.api.get(f"/api/code-blocks/{block['id']}/sessions", headers=headers).json()
        return rows[0] if rows else None

    session = wait_until(archived, GRACE + 20, interval=0.2, message="session archived")
    assert session is not None and session["replayBytes"] > 0
    started_ms = int(datetime.fromisoformat(session["startedAt"]).timestamp() * 1000)

    admin = people.open("/admin")
    sign_in(admin)
    admin.page.locator(f"tr[data-block-id='{block['id']}'] [data-action=sessions]").click()
    admin.page.locator(f"#sessions li[data-session-id='{session['sessionId']}'] a").click()
    try:
        expect(admin.page.locator("#replay-ready")).to_be_attached()
    except AssertionError:
        raise AssertionError(
            (admin.errors, admin.console_errors, admin.page.content()[:3000])
        ) from None
    assert f"/admin/replay/{session['sessionId']}" in admin.page.url
    scrub = admin.page.locator("#scrub")
    duration = int(scrub.get_attribute("max") or 0)
    assert duration > 0
    legend = admin.page.locator("#legend li")
    expect(legend).to_have_count(3)
    for name in ("Ada", "Grace", "Linus"):
        expect(admin.page.locator("#legend")).to_contain_text(f"{name} (student)")
    expect(admin.page.locator("#events")).to_contain_text("Ada (student) joined")

    def shown_at(t: int) -> str:
        scrub.fill(str(t))
        expect(admin.page.locator("#editor")).to_have_attribute("data-t", str(t))
        return admin.text()

    # The end: exactly the archived final code.
    assert shown_at(duration) == session["finalCode"] == final_seen
    # The middle: the text the room had then (its updates up to that moment, from Redis).
    middle = duration // 2
    before = sum(1 for at in update_times if at - started_ms <= middle)
    assert shown_at(middle) == texts[before]
    # The quiet moment after phase one, as the mentor saw it.
    assert shown_at(quiet_at - started_ms) == phase_one
    # Scrubbing back and forth never shows a text the room never had.
    rng = random.Random(16)
    real = set(texts)
    for t in [0, duration, 1, duration // 3, *(rng.randrange(duration + 1) for _ in range(25))]:
        assert shown_at(t) in real, t
    # Edits are coloured by who typed them; solved was never reached here.
    shown_at(duration)
    authors = admin.page.evaluate(
        "() => new Set([...document.querySelectorAll('#editor [data-author]')]"
        ".map((e) => e.dataset.author)).size"
    )
    assert authors == 3
    expect(admin.page.locator("#jump-solved")).to_have_count(0)

    # Play at 16x runs to the end.
    admin.page.select_option("#speed", "16")
    shown_at(0)
    admin.page.click("#play")
    expect(admin.page.locator("#play")).to_have_text("Play", timeout=ms(duration / 16000 + 10))
    assert admin.text() == final_seen


@pytest.mark.timeout(300)
def test_solved_moment_is_marked_and_pages_are_accessible(fleet: Fleet, people: People) -> None:
    if not AXE.is_file():
        pytest.skip("axe-core is not installed (make web)")
    block = _seed(fleet, [make_block(template="let x = 1;\n", solution="let x = 42;\n")])[0]
    room = f"/blocks/{block['id']}"
    mentor = people.open(room)
    joined(mentor, "mentor")
    student = people.open(room)
    joined(student, "student")
    wait_text(student, lambda t: t.startswith("let x = 1;"))
    student.editor.click()
    student.page.keyboard.press("Control+End")
    for _ in range(2):
        student.page.keyboard.press("ArrowLeft")
    student.page.keyboard.press("Backspace")
    student.page.keyboard.insert_text("42")
    wait_text(mentor, lambda t: t.strip() == "let x = 42;")
    mentor.context.close()
    student.context.close()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def archived() -> dict[str, Any] | None:
        assert fleet.api is not None
        rows = fleet.api.get(f"/api/code-blocks/{block['id']}/sessions", headers=headers).json()
        return rows[0] if rows else None

    session = wait_until(archived, GRACE + 20, interval=0.2, message="session archived")
    assert session is not None and session["solved"]

    signin = people.open("/admin")
    expect(signin.page.locator("#signin-form")).to_be_visible()
    found = {"signin": _axe(signin)}
    sign_in(signin)
    expect(signin.page.locator("#admin-blocks tbody tr").first).to_be_visible()
    found["blocks"] = _axe(signin)
    signin.page.locator(f"tr[data-block-id='{block['id']}'] [data-action=edit]").click()
    expect(signin.page.locator("#block-form")).to_be_visible()
    found["form"] = _axe(signin)
    signin.page.goto(f"/admin/replay/{session['sessionId']}")
    expect(signin.page.locator("#replay-ready")).to_be_attached()
    mark = signin.page.locator("#solved-mark")
    expect(mark).to_be_attached()
    signin.page.click("#jump-solved")
    expect(signin.page.locator("#events .kind-s")).not_to_have_class("event kind-s future")
    assert signin.text().strip() == "let x = 42;"
    for scheme in ("light", "dark"):
        signin.page.emulate_media(color_scheme=scheme)
        found[f"replay-{scheme}"] = _axe(signin)
    assert not any(found.values()), found

    signin.page.goto("/admin/replay/no-such-session")
    expect(signin.page.locator("#replay-state")).to_have_text(
        "There is no replay for this session."
    )
