"""`coderoom run` (make run): starts everything, then stops everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.infra import (
    ManagedProcess,
    child_env,
    free_port,
    pid_alive,
    port_listening,
    scaled,
    wait_until,
)

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """PIDs of every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class DevRun(ManagedProcess):
    name = "coderoom-run"

    def __init__(self, tmp_path: Path, gateways: int, *options: str) -> None:
        super().__init__(tmp_path / "run.log")
        self.options = list(options)
        self.api_port = free_port()
        self.gateway_ports = [free_port() for _ in range(gateways)]
        self.mongo_port = free_port()
        self.redis_port = free_port()
        self.env = child_env(
            {
                "API_PORT": self.api_port,
                "GATEWAY_PORTS": ",".join(map(str, self.gateway_ports)),
                "MONGO_PORT": self.mongo_port,
                "REDIS_PORT": self.redis_port,
                "CODEROOM_DATA": tmp_path / "var",
            }
        )

    @property
    def ports(self) -> list[int]:
        return [self.api_port, *self.gateway_ports, self.mongo_port, self.redis_port]

    def start(self) -> DevRun:
        self._spawn([sys.executable, "-m", "services.cli", "run", *self.options], self.env)

        def blocks() -> bool:
            if not self.alive:
                raise self._failed(f"exited with status {self.returncode}")
            try:
                response = httpx.get(f"http://127.0.0.1:{self.api_port}/api/code-blocks")
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and len(response.json()) >= 4

        try:
            wait_until(blocks, 90, interval=0.2, message="api serving the seeded blocks")
            wait_until(lambda: "press Ctrl-C" in self.log_text(), 30, message="ready banner")
        except TimeoutError:
            raise self._failed("did not come up") from None
        return self


def test_run_starts_everything_and_stops_cleanly(tmp_path: Path) -> None:
    run = DevRun(tmp_path, 2).start()
    try:
        for port in run.gateway_ports:
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        api = f"http://127.0.0.1:{run.api_port}"
        assert httpx.get(f"{api}/readyz").status_code == 200
        urls = httpx.get(f"{api}/api/config").json()["gatewayUrls"]
        assert urls == [f"ws://127.0.0.1:{p}/ws/rooms" for p in run.gateway_ports]
        children = descendants(run.pid)
        assert len(children) >= 3 + 2  # mongo, redis, api, gateways
        log = run.log_text()
        for name in ("mongo", "redis", "seed", "api", "gw-1", "gw-2"):
            assert f"{name:<6} | " in log

        assert run.popen is not None
        # One Ctrl-C under `make run` arrives twice (terminal + uv forwarding it): still
        # a graceful stop, not the "hurry" of a second, later Ctrl-C.
        run.popen.send_signal(signal.SIGINT)
        run.popen.send_signal(signal.SIGINT)
        assert run.popen.wait(scaled(60)) == 0
        wait_until(lambda: not any(pid_alive(p) for p in children), 5, message="children gone")
        for port in run.ports:
            assert not port_listening(port), port
        log = run.log_text()
        assert "stopped" in log.splitlines()[-1]
        assert "Application shutdown complete" in log  # the api stopped gracefully
        assert "embedded MongoDB closed" in log
    finally:
        run.kill()


def test_run_with_a_local_redis_cluster(tmp_path: Path) -> None:
    """`coderoom run --redis-cluster`: six redis-server nodes in cluster mode, the fleet
    on them (a room's state lands on a cluster node), all stopped on Ctrl-C."""
    from tests.fleet.classroom import Classroom

    run = DevRun(tmp_path, 2, "--redis-cluster").start()
    try:
        log = run.log_text()
        assert "Redis Cluster, primaries on" in log
        assert all(f"redis-{i} | " in log for i in range(1, 7))
        api = f"http://127.0.0.1:{run.api_port}"
        assert httpx.get(f"{api}/readyz").status_code == 200
        block = httpx.get(f"{api}/api/code-blocks").json()[0]["id"]
        urls = [f"ws://127.0.0.1:{p}/ws/rooms" for p in run.gateway_ports]

        async def open_room() -> None:
            room = Classroom(urls, [block], students=1)
            await room.start()
            await room.close()

        asyncio.run(open_room())
        children = descendants(run.pid)
        assert run.popen is not None
        run.popen.send_signal(signal.SIGINT)
        assert run.popen.wait(scaled(60)) == 0
        wait_until(lambda: not any(pid_alive(p) for p in children), 5, message="children gone")
    finally:
        run.kill()


def test_seeded_data_survive_a_restart(tmp_path: Path) -> None:
    first = DevRun(tmp_path, 0).start()
    api = f"http://127.0.0.1:{first.api_port}/api/code-blocks"
    ids = [b["id"] for b in httpx.get(api).json()]
    first.stop(signal.SIGINT, timeout=60)
    second = DevRun(tmp_path, 0).start()  # same data directory, new ports
    try:
        api = f"http://127.0.0.1:{second.api_port}/api/code-blocks"
        assert [b["id"] for b in httpx.get(api).json()] == ids
        assert "0 created" in second.log_text()
    finally:
        second.stop(signal.SIGINT, timeout=60)


def test_children_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    run = DevRun(tmp_path, 1).start()
    try:
        children = descendants(run.pid)
        assert len(children) >= 3
        assert run.popen is not None
        run.popen.kill()  # SIGKILL: the supervisor cannot stop anything itself
        run.popen.wait(scaled(10))
        wait_until(lambda: not any(pid_alive(p) for p in children), 30, message="children gone")
        for port in run.ports:
            assert not port_listening(port), port
    finally:
        run.kill()
        for pid in descendants(1) & children:
            os.kill(pid, signal.SIGKILL)
