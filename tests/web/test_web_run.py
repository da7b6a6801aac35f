"""The Run button end to end in headless Chromium against the real system: every seed
block's solution runs and prints what it promises (JavaScript and Python/Pyodide); an
infinite loop is stopped at the block's limit while the page keeps answering, and the
next run starts clean; the sandbox has no network, no storage and no cookies (tested
against a local server that counts what reaches it); output is text, never HTML; a
student's run on gateway 2 reaches the mentor's dashboard on gateway 1 within a second;
no page requests a host but its own (the ``People`` guard, on every test here)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api.test_seed import EXPECTED_OUTPUT
from tests.infra import EmbeddedMongo, Fleet, RedisServer, scaled, seed_blocks
from tests.web.browser import People, Person, expect, joined, launch_browser, ms
from tests.web.browser import seed as _seed

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.slow]

PYTHON_LOAD = 90  # seconds a cold Pyodide may take on a busy 2-core machine (scaled)
FINAL = "#run-status:not([data-state=running]):not([data-state=loading]):not([data-state=idle])"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("runfleet"), gateways=2, redis=redis_server, mongo=mongo)
    with fleet:
        yield fleet


@pytest.fixture(scope="module")
def seeded(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {b["slug"]: b for b in _seed(fleet, seed_blocks())}


class Tripwire:
    """A local HTTP server that counts every connection reaching it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(b"leaked")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    try:
        yield wire
    finally:
        wire.close()


def set_code(person: Person, code: str) -> None:
    person.editor.click()
    person.page.keyboard.press("Control+a")
    person.page.keyboard.insert_text(code)


def run(person: Person, timeout: float = 20) -> str:
    """Press Ctrl+Enter and wait for the run to end; returns its state."""
    person.page.keyboard.press("Control+Enter")
    final = person.page.locator(FINAL)
    expect(final).to_be_visible(timeout=ms(timeout))
    return str(person.page.locator("#run-status").get_attribute("data-state"))


def output(person: Person) -> str:
    return str(person.page.locator("#run-output").text_content())


def room(people: People, block_id: str) -> tuple[Person, Person]:
    """A mentor on gateway 1 (index 0) and a student on gateway 2 (index 1)."""
    mentor = people.open(f"/blocks/{block_id}?gateway=0")
    joined(mentor, "mentor")
    student = people.open(f"/blocks/{block_id}?gateway=1")
    joined(student, "student")
    return mentor, student


@pytest.mark.parametrize("slug", list(EXPECTED_OUTPUT))
def test_seed_solutions_run_and_reach_the_mentor_on_the_other_gateway(
    people: People, seeded: dict[str, dict[str, Any]], slug: str
) -> None:
    block = seeded[slug]
    mentor, student = room(people, block["id"])
    expect(mentor.page.locator("#class-runs")).to_be_visible()
    expect(student.page.locator("#class-runs")).to_be_hidden()
    set_code(student, block["solution"])
    python = block["language"] == "python"
    state = run(student, PYTHON_LOAD if python else 20)
    assert (state, output(student)) == ("ok", EXPECTED_OUTPUT[slug])
    assert student.page.locator("#run-error").is_hidden()
    # The run crosses gateways to the mentor's dashboard within a second.
    client = student.page.evaluate("sessionStorage.getItem('coderoom.clientId')")
    row = mentor.page.locator(f"#class-runs li[data-client='{client}']")
    expect(row).to_have_attribute("data-state", "ok", timeout=ms(1))
    # The typed solution solved the room (the text did, not the run): close the smiley.
    expect(mentor.page.locator("dialog#solved")).to_be_visible()
    mentor.page.locator("#solved-close").click()
    row.locator("summary").click()
    expect(row.locator("pre")).to_have_text(EXPECTED_OUTPUT[slug].rstrip("\n"))
    if python:  # the second run is warm: Pyodide stays loaded
        assert run(student) == "ok" and output(student) == EXPECTED_OUTPUT[slug]


def test_infinite_loops_stop_at_the_limit_and_the_next_run_is_clean(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(language="javascript", template="", runTimeoutSeconds=1)
    _, student = room(people, block["id"])
    set_code(student, "globalThis.leftover = 1;\nconsole.log('spinning');\nwhile (true) {}\n")
    started = time.monotonic()
    student.page.keyboard.press("Control+Enter")
    expect(student.page.locator("#run-output")).to_have_text("spinning")
    # The page answers while the loop spins in the sandbox's worker.
    assert student.page.evaluate("1 + 1") == 2
    expect(student.page.locator("#run-status")).to_have_attribute("data-state", "timeout")
    assert time.monotonic() - started < scaled(10)
    assert "time limit" in str(student.page.locator("#run-error").text_content())
    set_code(student, "console.log(typeof leftover);\n")
    assert run(student) == "ok" and output(student) == "undefined\n"
    # Stop by hand (in a block with a long limit), then again a clean run.
    block = new_block(language="javascript", template="", runTimeoutSeconds=60)
    _, student = room(people, block["id"])
    set_code(student, "setInterval(() => console.log('tick'), 50);\n")
    student.page.keyboard.press("Control+Enter")
    expect(student.page.locator("#run-output")).to_contain_text("tick")
    student.page.locator("#run-stop").click()
    expect(student.page.locator("#run-status")).to_have_attribute("data-state", "stopped")
    set_code(student, "setTimeout(() => console.log('later'), 20);\nconsole.log('now');\n")
    assert run(student) == "ok" and output(student) == "now\nlater\n"


def test_python_loop_errors_and_stdin(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(language="python", template="", runTimeoutSeconds=2)
    _, student = room(people, block["id"])
    set_code(student, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nx = 1 / 0\n")
    assert run(student, PYTHON_LOAD) == "error"
    page = student.page
    expect(page.locator("#run-output [data-stream=stdout]")).to_have_text("out")
    expect(page.locator("#run-output [data-stream=stderr]").first).to_contain_text("err")
    expect(page.locator("#run-output")).to_contain_text('File "<exec>", line 4')
    expect(page.locator("#run-error")).to_have_text("ZeroDivisionError: division by zero (line 4)")
    set_code(student, "while True:\n    pass\n")
    assert run(student, PYTHON_LOAD) == "timeout"
    # After the kill the interpreter starts again (cold), clean.
    set_code(
        student,
        "print('x' in globals(), input)\ntry:\n    input()\nexcept Exception as e:\n"
        "    print(type(e).__name__)\n",
    )
    assert run(student, PYTHON_LOAD) == "ok"
    assert output(student).startswith("False <built-in function input>\n")


def test_the_sandbox_has_no_network_storage_or_cookies(
    people: People, new_block: Callable[..., dict[str, Any]], tripwire: Tripwire
) -> None:
    block = new_block(language="javascript", template="")
    _, student = room(people, block["id"])
    student.page.evaluate("document.cookie = 'secret=1; path=/'")
    ws_url = tripwire.url.replace("http://", "ws://")
    code = f"""
const attempt = async (name, fn) => {{
  const hold = setTimeout(() => {{}}, 5000); // the run goes on while a request is pending
  try {{ await fn(); console.log(name, "ALLOWED"); }}
  catch (err) {{ console.log(name, "blocked"); }}
  finally {{ clearTimeout(hold); }}
}};
(async () => {{
  await attempt("fetch", () => fetch("{tripwire.url}/fetch"));
  await attempt("fetch-own-api", () => fetch("/api/code-blocks"));
  await attempt("xhr", () => new Promise((ok, fail) => {{
    const x = new XMLHttpRequest(); x.open("GET", "{tripwire.url}/xhr");
    x.onload = ok; x.onerror = () => fail(new Error("xhr")); x.send(); }}));
  await attempt("websocket", () => new Promise((ok, fail) => {{
    const w = new WebSocket("{ws_url}/ws");
    w.onopen = ok; w.onerror = () => fail(new Error("ws")); }}));
  await attempt("eventsource", () => new Promise((ok, fail) => {{
    const s = new EventSource("{tripwire.url}/sse");
    s.onopen = ok; s.onerror = () => fail(new Error("es")); }}));
  await attempt("importScripts", () => importScripts("{tripwire.url}/remote.js"));
  await attempt("importScripts-cdn", () => importScripts("https://cdn.example.com/x.js"));
  await attempt("localStorage", () => localStorage.getItem("coderoom.name"));
  await attempt("sessionStorage", () => sessionStorage.getItem("coderoom.clientId"));
  await attempt("cookie", () => document.cookie.length);
  await attempt("parent", () => parent.document.title);
  await attempt("nested-worker", () => new Promise((ok, fail) => {{
    const src = 'fetch("{tripwire.url}/nested")'
      + '.then(() => postMessage("ok"), () => postMessage("no"))';
    const w = new Worker(URL.createObjectURL(new Blob([src])));
    w.onmessage = (e) => (e.data === "ok" ? ok() : fail(new Error("no")));
    w.onerror = () => fail(new Error("worker")); }}));
}})();
"""
    set_code(student, code)
    assert run(student) == "ok"
    lines = output(student).splitlines()
    names = [
        "fetch", "fetch-own-api", "xhr", "websocket", "eventsource", "importScripts",
        "importScripts-cdn", "localStorage", "sessionStorage", "cookie", "parent",
        "nested-worker",
    ]  # fmt: skip
    assert lines == [f"{name} blocked" for name in names]
    assert tripwire.hits == []
    # The violations this test provoked are expected; any other is still an error.
    for person in people.people:
        person.console_errors[:] = [
            e for e in person.console_errors if tripwire.url not in e and ws_url not in e
        ]


def test_python_has_no_network_and_no_packages(
    people: People, new_block: Callable[..., dict[str, Any]], tripwire: Tripwire
) -> None:
    block = new_block(language="python", template="")
    _, student = room(people, block["id"])
    code = f"""
import js, pyodide_js
async def attempt(name, coro):
    try:
        await coro()
        print(name, "ALLOWED")
    except BaseException:
        print(name, "blocked")
async def get():
    await js.fetch("{tripwire.url}/py")
async def package():
    await pyodide_js.loadPackage("micropip")
    import micropip
async def pip():
    import micropip
await attempt("fetch", get)
await attempt("loadPackage", package)
await attempt("micropip", pip)
"""
    set_code(student, code)
    assert run(student, PYTHON_LOAD) == "ok"
    assert output(student) == "fetch blocked\nloadPackage blocked\nmicropip blocked\n"
    assert tripwire.hits == []
    for person in people.people:
        person.console_errors[:] = [e for e in person.console_errors if tripwire.url not in e]


def test_output_is_text_never_html(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(language="javascript", template="")
    mentor, student = room(people, block["id"])
    html = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    set_code(student, f"console.log({html!r});\nconsole.error('<i>e</i>');\n")
    assert run(student) == "ok"
    assert output(student) == f"{html}\n<i>e</i>\n"
    for person in (student, mentor):
        assert person.page.locator("#run-panel img, #run-panel b, #class-runs img").count() == 0
    row = mentor.page.locator("#class-runs li").first
    expect(row).to_have_attribute("data-state", "ok")
    row.locator("summary").click()
    expect(row.locator("pre")).to_have_text(f"{html}\n<i>e</i>")
    assert row.locator("img, b, i").count() == 0
    assert "pwned" not in mentor.page.title() + student.page.title()


def test_watchers_run_locally_and_late_mentors_see_the_runs(
    people: People, new_block: Callable[..., dict[str, Any]]
) -> None:
    block = new_block(language="javascript", template="console.log(6 * 7);\n")
    mentor, student = room(people, block["id"])
    watcher = people.open(f"/blocks/{block['id']}?gateway=1&role=watcher")
    joined(watcher, "watcher")
    assert run(watcher) == "ok" and output(watcher) == "42\n"
    expect(watcher.page.locator("#run-note")).to_have_text("Your runs stay on this page.")
    assert run(student) == "ok"
    expect(mentor.page.locator("#class-runs li[data-state=ok]")).to_have_count(1)
    # The mentor refreshes: the runs come back with the room's state.
    mentor.page.reload()
    joined(mentor, "mentor")
    expect(mentor.page.locator("#class-runs li[data-state=ok]")).to_have_count(1)
    # The mentor may run too (read-only editor), and the run is shared.
    assert run(mentor) == "ok" and output(mentor) == "42\n"
    expect(student.page.locator("#run-status")).to_have_attribute("data-state", "ok")
    expect(mentor.page.locator("#class-runs li")).to_have_count(2)
