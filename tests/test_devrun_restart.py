"""`coderoom run` keeps the fleet alive: a service that dies is restarted with backoff
while the others keep serving; a crash loop stops everything with a clear message.

The backoff and crash-loop rules are pure (services/restarts.py) and tested here in
microseconds; the rest runs the real `coderoom run` on free ports and kills its
children by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from services.restarts import BACKOFF_MAX, RESTART_LIMIT, RESTART_WINDOW, Deaths, exit_reason
from tests.fleet.classroom import Classroom
from tests.infra import (
    make_block,
    pid_alive,
    port_listening,
    scaled,
    wait_until,
)
from tests.test_devrun import DevRun, descendants
from tests.yclient import wait_for

ADMIN_TOKEN = "devrun-admin-token"

# --- the rules (pure) ----------------------------------------------------------------------


def test_backoff_doubles_with_each_recent_death_up_to_a_cap() -> None:
    deaths = Deaths()
    delays = []
    for second in range(8):
        deaths.record(float(second))
        delays.append(deaths.backoff)
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == BACKOFF_MAX


def test_deaths_older_than_the_window_are_forgotten() -> None:
    deaths = Deaths()
    for at in (0.0, 10.0, 20.0, 30.0):
        deaths.record(at)
    assert not deaths.crash_loop
    assert deaths.record(RESTART_WINDOW + 15.0) == 3  # 0 and 10 are out of the window
    assert deaths.backoff == 2.0
    assert not deaths.crash_loop


def test_a_crash_loop_is_the_limit_of_deaths_within_the_window() -> None:
    deaths = Deaths()
    for n in range(1, RESTART_LIMIT):
        assert deaths.record(n * 0.1) == n
        assert not deaths.crash_loop
    deaths.record(RESTART_LIMIT * 0.1)
    assert deaths.crash_loop
    spread = Deaths()
    for n in range(RESTART_LIMIT * 3):  # one death every 20 s never loops
        spread.record(n * RESTART_WINDOW / 3)
        assert not spread.crash_loop


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (1, "exit status 1"),
        (0, "exit status 0"),
        (-200, "killed by signal 200"),
    ],
)
def test_exit_reason(code: int, reason: str) -> None:
    assert exit_reason(code) == reason


# --- real processes ------------------------------------------------------------------------


def service_pid(run: DevRun, kind: str, port: int) -> int | None:
    """The PID of the live `coderoom <kind>` child of `run` serving `port`, if any."""
    for pid in descendants(run.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"services.cli" in argv and kind.encode() in argv:
            if f"PORT={port}".encode() in environ and pid_alive(pid):
                return pid
    return None


def ready(port: int, path: str = "/readyz") -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def aready(port: int, path: str = "/readyz") -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200
    except httpx.HTTPError:
        return False


async def until_ready(port: int, within: float) -> None:
    deadline = time.monotonic() + scaled(within)
    while not await aready(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port}: no /readyz 200 within {scaled(within):.0f}s")
        await asyncio.sleep(0.05)


# Each test starts the whole system (most of a minute on a loaded 2-core machine) and
# waits for restarts: more than the suite's default 120 s timeout allows.
@pytest.mark.slow
@pytest.mark.timeout(scaled(240))
def test_an_api_that_dies_is_restarted_and_a_dependency_that_dies_stops_everything(
    tmp_path: Path,
) -> None:
    run = DevRun(tmp_path, 0).start()
    try:
        first = service_pid(run, "api", run.api_port)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        second = wait_until(
            lambda: (pid := service_pid(run, "api", run.api_port)) != first and pid,
            15,
            message="api restarted",
        )
        wait_until(lambda: ready(run.api_port), 30, message="restarted api ready")
        assert run.alive
        log = run.log_text()
        assert "run    | api died (killed by SIGKILL); restarting it in 0.5s" in log
        assert f"run    | api restarted (pid {second})" in log

        # MongoDB and Redis are not restarted: without them nothing works.
        children = descendants(run.pid)
        redis = [p for p in children if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(redis) == 1
        os.kill(redis[0], signal.SIGKILL)
        assert run.popen is not None
        assert run.popen.wait(scaled(60)) == 1
        assert "error: redis exited unexpectedly (killed by SIGKILL)" in run.log_text()
        wait_until(lambda: not any(pid_alive(p) for p in children), 5, message="children gone")
        for port in run.ports:
            assert not port_listening(port), port
    finally:
        run.kill()


@pytest.mark.slow
@pytest.mark.timeout(scaled(240))
def test_a_crash_loop_stops_everything_with_a_clear_message(tmp_path: Path) -> None:
    run = DevRun(tmp_path, 0).start()
    try:
        children = descendants(run.pid)
        killed: list[int | None] = []
        for _ in range(RESTART_LIMIT):
            pid = wait_until(
                lambda: (p := service_pid(run, "api", run.api_port)) not in killed and p,
                30,
                message=f"api started again after {len(killed)} deaths",
            )
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        assert run.popen is not None
        assert run.popen.wait(scaled(60)) == 1
        log = run.log_text()
        assert (
            f"error: api died {RESTART_LIMIT} times within {RESTART_WINDOW:.0f}s "
            "(last: killed by SIGKILL), a crash loop; stopping everything"
        ) in log
        assert log.count("run    | api died (killed by SIGKILL); restarting") == RESTART_LIMIT - 1
        assert "stopped after an error" in log.splitlines()[-1]
        everyone = children | {pid for pid in killed if pid is not None}
        wait_until(lambda: not any(pid_alive(p) for p in everyone), 5, message="children gone")
        for port in run.ports:
            assert not port_listening(port), port
    finally:
        run.kill()


@pytest.mark.slow
@pytest.mark.timeout(scaled(240))
async def test_a_killed_gateway_comes_back_and_its_room_lives_on(tmp_path: Path) -> None:
    run = DevRun(tmp_path, 2)
    run.env.update(
        ADMIN_TOKEN=ADMIN_TOKEN,
        HEARTBEAT_INTERVAL_SECONDS="0.5",
        GATEWAY_DEAD_AFTER_SECONDS="2",
        MENTOR_GRACE_SECONDS="5",
        ALLOWED_ORIGINS="*",
    )
    run.start()
    classroom: Classroom | None = None
    try:
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"http://127.0.0.1:{run.api_port}/api/code-blocks",
                json=make_block(template="start\n", solution="never typed\n"),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert created.status_code == 201, created.text
        urls = [f"ws://127.0.0.1:{port}/ws/rooms" for port in run.gateway_ports]
        # The mentor on gateway 1; students on gateway 2, gateway 1, gateway 2.
        classroom = Classroom(urls, [created.json()["id"]], students=3)
        await classroom.start()
        room = classroom.rooms[0]
        assert room.mentor.base_url == urls[0]
        on_gw2 = classroom.on(urls[1])
        assert len(on_gw2) == 2 and room.mentor not in on_gw2

        classroom.start_typing(interval=0.2)
        await wait_for(lambda: len(room.typed) >= 6, 10)
        victim = service_pid(run, "gateway", run.gateway_ports[1])
        assert victim is not None
        os.kill(victim, signal.SIGKILL)

        await wait_for(lambda: all(c.connected and c.reconnects for c in on_gw2), 15)
        await until_ready(run.gateway_ports[1], 15)
        assert service_pid(run, "gateway", run.gateway_ports[1]) not in (None, victim)
        typed_before = len(room.typed)
        await wait_for(lambda: len(room.typed) >= typed_before + 6, 10)
        edits = await classroom.stop_typing()
        await classroom.wait_converged(15)
        await wait_for(classroom.presence_ok, 15)  # gateway 2's dead members reaped

        assert room.mentor.connected and room.mentor.reconnects == []
        assert room.mentor.role == "mentor"
        assert all(c.last("room-closed") is None for c in room.clients)
        assert await aready(run.gateway_ports[0]) and await aready(run.api_port)
        assert run.alive
        log = run.log_text()
        assert "run    | gw-2 died (killed by SIGKILL); restarting it in 0.5s" in log
        print(
            f"\ngateway 2 killed under coderoom run: {len(on_gw2)} students reconnected "
            f"(slowest {max(max(c.reconnects) for c in on_gw2):.2f}s); {edits} edits converged"
        )
    finally:
        if classroom is not None:
            await classroom.close()
        run.stop(signal.SIGINT, timeout=60)
        run.kill()
