"""The fleet behind nginx, configured like the Kubernetes Ingress (no stickiness).

nginx runs in the foreground with its own prefix, from deploy/nginx/nginx.conf.template:
one upstream of two api processes, one of three gateways, round robin, websocket
upgrade on /ws/, `proxy_next_upstream error timeout`. Clients connect only through
nginx. One gateway is stopped with SIGTERM and another killed with SIGKILL while
students type: every client reconnects through nginx, no acknowledged edit is lost and
every document converges. The figures (reconnect times, edits) are printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from shared.protocol import CloseCode, should_reconnect
from tests.infra import (
    LOCALHOST,
    EmbeddedMongo,
    Fleet,
    ManagedProcess,
    RedisServer,
    ServiceProcess,
    await_until,
    free_port,
    make_block,
    port_listening,
    scaled,
    tool_missing,
    wait_until,
)
from tests.yclient import RoomClient

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "nginx.conf.template"
TOKEN = re.compile(r"\[(s\d+)\.(\d+)\]")
STUDENTS = 6
EDITS_PER_SECOND = 12.0
ACKED_PER_PHASE = 20


# --- nginx ------------------------------------------------------------------------------


def find_nginx() -> str | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_nginx() -> str:
    """nginx's path; installs Debian's nginx when missing and root, else skips."""
    found = find_nginx()
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nginx"],
            env=env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        found = find_nginx()
        if found:
            return found
    tool_missing("nginx is not installed and could not be (apt-get install nginx as root)")


class Nginx(ManagedProcess):
    """nginx in the foreground with every file under its own prefix directory."""

    name = "nginx"

    def __init__(
        self, prefix: Path, api_ports: list[int], gateway_ports: list[int], port: int = 0
    ) -> None:
        super().__init__(prefix / "nginx.out")
        self.prefix = prefix
        self.port = port or free_port()
        self.api_ports = api_ports
        self.gateway_ports = gateway_ports
        self.binary = ensure_nginx()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}/ws/rooms"

    def config(self) -> str:
        def servers(ports: list[int]) -> str:
            return "\n".join(
                f"        server {LOCALHOST}:{p} max_fails=1 fail_timeout=5s;" for p in ports
            )

        # Workers of a root master would run as nobody, which cannot enter pytest's
        # 0700 temp directories.
        user = "user root root;" if os.geteuid() == 0 else ""
        values = {
            "PREFIX": str(self.prefix),
            "USER_DIRECTIVE": user,
            "LISTEN": f"{LOCALHOST}:{self.port}",
            "SERVER_NAME": "coderoom.localhost",
            "API_SERVERS": servers(self.api_ports),
            "GATEWAY_SERVERS": servers(self.gateway_ports),
        }
        text = TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        assert "{{" not in text, "unfilled placeholder in the nginx template"
        return text

    def argv(self, *extra: str) -> list[str]:
        conf = self.prefix / "nginx.conf"
        prefix = str(self.prefix)
        return [self.binary, "-p", prefix, "-c", str(conf), "-e", f"{prefix}/error.log", *extra]

    def write(self) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "nginx.conf").write_text(self.config())

    def test_config(self) -> subprocess.CompletedProcess[str]:
        self.write()
        return subprocess.run(self.argv("-t"), capture_output=True, text=True, check=False)

    def start(self) -> Self:
        self.write()
        self._spawn(self.argv("-g", "daemon off;"))

        def up() -> bool:
            if not self.alive:
                raise self._failed(f"exited with status {self.returncode}: {self.error_log()}")
            return port_listening(self.port)

        wait_until(up, 10, message="nginx listening")
        return self

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def upstreams(self, path_prefix: str) -> list[str]:
        """Upstream addresses of the logged requests whose path starts with path_prefix."""
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        out: list[str] = []
        for line in path.read_text().splitlines():
            match = re.search(r'"\w+ (\S+) [^"]*" \d+ upstream=(.*?) upstream_status=', line)
            if match and match.group(1).startswith(path_prefix):
                out.extend(a.strip() for a in match.group(2).split(",") if a.strip())
        return out

    def retried(self, path_prefix: str) -> int:
        """Logged requests that nginx passed on to a next upstream."""
        path = self.prefix / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(1 for line in lines if f" {path_prefix}" in line and ", " in line)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=scaled(5), **kwargs)  # type: ignore[arg-type]


def test_template_is_a_valid_nginx_config(tmp_path: Path) -> None:
    nginx = Nginx(tmp_path, [free_port(), free_port()], [free_port()])
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr
    config = "\n".join(line.split("#")[0] for line in nginx.config().splitlines())
    for word in ("ip_hash", "hash ", "sticky", "least_conn"):
        assert word not in config, f"{word!r}: the upstreams must be plain round robin"
    assert "proxy_next_upstream error timeout" in config
    assert "proxy_read_timeout 3600s" in config and "proxy_send_timeout 3600s" in config


# --- the fleet --------------------------------------------------------------------------


@dataclass
class Stack:
    fleet: Fleet
    apis: list[ServiceProcess]
    nginx: Nginx

    @property
    def gateways(self) -> list[ServiceProcess]:
        return self.fleet.gateways

    def new_block(self) -> str:
        response = httpx.post(
            self.nginx.url + "/api/code-blocks",
            json=make_block(template="// type below\n", solution="// never typed\n"),
            headers={"Authorization": f"Bearer {Fleet.ADMIN_TOKEN}"},
            timeout=scaled(5),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@pytest.fixture
def stack_factory(
    tmp_path: Path, redis_server: RedisServer, mongo: EmbeddedMongo
) -> Iterator[type[Stack]]:
    made: list[Stack] = []
    nginx_port = free_port()
    origin = f"http://{LOCALHOST}:{nginx_port}"

    class Factory(Stack):
        ORIGIN = origin

        @classmethod
        def make(cls, gateways: int, apis: int = 2) -> Stack:
            ensure_nginx()
            fleet = Fleet(
                tmp_path / "fleet",
                gateways=gateways,
                redis=redis_server,
                mongo=mongo,
                ready="/readyz",
                env={
                    "GATEWAY_URLS": "",  # same origin: the browser goes through nginx
                    "ALLOWED_ORIGINS": origin,
                    "TRUST_PROXY_HEADERS": "true",
                    "MENTOR_GRACE_SECONDS": 10,
                    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
                    "GATEWAY_DEAD_AFTER_SECONDS": 2,
                    "SHUTDOWN_DRAIN_SECONDS": 3,
                },
            )
            assert fleet.api is not None
            extra = [
                ServiceProcess("api", fleet.env, tmp_path / "fleet" / "logs", name=f"api-{i}")
                for i in range(2, apis + 1)
            ]
            for api in extra:  # starts alongside the fleet (imports take seconds)
                api.spawn()
            fleet.start()
            for api in extra:
                api.wait_ready("/readyz")
            all_apis = [fleet.api, *extra]
            nginx = Nginx(
                tmp_path / "nginx",
                [a.port for a in all_apis],
                [g.port for g in fleet.gateways],
                port=nginx_port,
            ).start()
            stack = Stack(fleet, all_apis, nginx)
            made.append(stack)
            return stack

    yield Factory
    for stack in made:
        stack.nginx.stop()
        for api in stack.apis[1:]:
            api.stop()
        stack.fleet.stop()


def test_nginx_round_robins_the_api_and_skips_a_dead_one(stack_factory: type[Stack]) -> None:
    stack = stack_factory.make(gateways=1)  # type: ignore[attr-defined]
    for _ in range(6):
        assert stack.nginx.get("/healthz").status_code == 200
    ports = {f"{LOCALHOST}:{a.port}" for a in stack.apis}
    assert set(stack.nginx.upstreams("/healthz")) == ports
    listing = stack.nginx.get("/api/code-blocks")
    assert listing.status_code == 200 and isinstance(listing.json(), list)

    stack.apis[1].kill()
    for _ in range(6):
        assert stack.nginx.get("/healthz").status_code == 200
    assert "Connection refused" in stack.nginx.error_log()


# --- rooms across gateways, through nginx ---------------------------------------------------


@dataclass
class Outage:
    phase: str
    code: int | None
    started: float
    synced: float | None = None
    attempts: int = 0

    @property
    def seconds(self) -> float:
        assert self.synced is not None
        return self.synced - self.started


@dataclass
class Participant:
    name: str
    client: RoomClient
    phase: str = "start"
    stopping: bool = False
    typed: list[str] = field(default_factory=list)
    roles: list[str | None] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    terminal: int | None = None
    task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.client.synced.is_set() and not self.client.closed.is_set()

    async def start(self) -> None:
        await self.client.connect(timeout=scaled(10))
        assert self.connected, f"{self.name} did not sync (close {self.client.close_code})"
        self.roles.append(self.client.role)
        self.task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        """Reconnect through nginx whenever the socket closes with a reconnect code."""
        while True:
            await self.client.closed.wait()
            if self.stopping:
                return
            code = self.client.close_code
            if code is not None and not should_reconnect(code):
                self.terminal = code
                return
            outage = Outage(self.phase, code, time.monotonic())
            self.outages.append(outage)
            delay = 0.0
            while not self.stopping:
                outage.attempts += 1
                self.client.events.clear()
                try:
                    await self.client.connect(timeout=scaled(5))
                except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
                    pass
                if self.connected:
                    break
                await asyncio.sleep(delay)  # backoff between attempts, as y-websocket does
                delay = min(max(delay * 2, 0.05), 1.0)
            outage.synced = time.monotonic()
            self.roles.append(self.client.role)

    async def type_until(self, stop: asyncio.Event) -> None:
        number = 0
        while not stop.is_set():
            token = f"[{self.name}.{number}]"
            self.client.type_at_end(token)
            self.typed.append(token)
            number += 1
            await asyncio.sleep(1 / EDITS_PER_SECOND)  # typing pace, not a wait

    async def close(self) -> None:
        self.stopping = True
        self.client.closed.set()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


def connections(gateway: ServiceProcess) -> int:
    text = gateway.get("/metrics").text
    match = re.search(r"^coderoom_gateway_connections (\S+)$", text, flags=re.M)
    assert match, "coderoom_gateway_connections missing from /metrics"
    return int(float(match.group(1)))


def tokens(text: str) -> set[str]:
    return {f"[{m.group(1)}.{m.group(2)}]" for m in TOKEN.finditer(text)}


async def test_rooms_survive_sigterm_and_sigkill_behind_nginx(
    stack_factory: type[Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    stack = await asyncio.to_thread(stack_factory.make, 3)  # type: ignore[attr-defined]
    block = stack.new_block()
    origin = stack_factory.ORIGIN  # type: ignore[attr-defined]

    def participant(name: str, role: str | None = None) -> Participant:
        client = RoomClient(stack.nginx.ws_url, block, role=role, origin=origin, name=name)
        return Participant(name, client)

    mentor = participant("mentor")
    await mentor.start()
    students = [participant(f"s{i}") for i in range(1, STUDENTS + 1)]
    watcher = participant("watcher", role="watcher")
    for p in [*students, watcher]:
        await p.start()
    everyone = [mentor, *students, watcher]
    assert [p.roles[0] for p in everyone] == ["mentor"] + ["student"] * STUDENTS + ["watcher"]

    # Round robin, no stickiness: every gateway holds some of the room.
    spread = [await asyncio.to_thread(connections, g) for g in stack.gateways]
    assert sum(spread) == len(everyone) and min(spread) >= 1, spread

    # Sampled while everything runs: which participant has seen which edit.
    seen_by: dict[str, set[str]] = {}
    sampling = asyncio.Event()

    def sample() -> None:
        for p in everyone:
            for token in tokens(p.client.value):
                seen_by.setdefault(token, set()).add(p.name)

    async def sampler() -> None:
        while not sampling.is_set():
            sample()
            await asyncio.sleep(0.05)

    def acknowledged() -> set[str]:
        return {t for t, who in seen_by.items() if who - {t[1:].split(".")[0]}}

    def acked_by(student: Participant) -> int:
        return sum(1 for t in acknowledged() if t.startswith(f"[{student.name}."))

    async def each_student_acked(more: int) -> None:
        base = {s.name: acked_by(s) for s in students}
        await await_until(
            lambda: all(acked_by(s) >= base[s.name] + more for s in students),
            within=20,
            message=f"every student has {more} more acknowledged edits",
        )

    async def all_reconnected() -> None:
        await await_until(
            lambda: all(p.connected and all(o.synced for o in p.outages) for p in everyone),
            within=30,
            message="every client reconnected through nginx",
        )

    stop_typing = asyncio.Event()
    sampler_task = asyncio.create_task(sampler())
    typing = [asyncio.create_task(s.type_until(stop_typing)) for s in students]
    started = time.monotonic()
    try:
        await each_student_acked(ACKED_PER_PHASE)

        # 1. Graceful: SIGTERM the busiest gateway; it drains and closes with 1012.
        spread = [await asyncio.to_thread(connections, g) for g in stack.gateways]
        term = stack.gateways[spread.index(max(spread))]
        for p in everyone:
            p.phase = "sigterm"
        term_exit = await asyncio.to_thread(term.stop, signal.SIGTERM, 20)
        await all_reconnected()
        await each_student_acked(ACKED_PER_PHASE)

        # 2. Crash: SIGKILL the busiest survivor; sockets drop without a close frame.
        live = [g for g in stack.gateways if g.alive]
        spread = [await asyncio.to_thread(connections, g) for g in live]
        crash = live[spread.index(max(spread))]
        for p in everyone:
            p.phase = "sigkill"
        crash.kill()
        await all_reconnected()
        await each_student_acked(ACKED_PER_PHASE)
    finally:
        stop_typing.set()
        await asyncio.gather(*typing, return_exceptions=True)

    typed = {t for s in students for t in s.typed}

    def converged() -> bool:
        texts = {p.client.value for p in everyone}
        return len(texts) == 1 and typed <= tokens(texts.pop())

    try:
        await await_until(converged, within=30, message="every document converged")
    finally:
        sampling.set()
        await sampler_task
    sample()
    acked = acknowledged()

    # A fresh client (a new sync from the surviving gateway) sees the same document.
    fresh = participant("late", role="watcher")
    await fresh.start()
    final = mentor.client.value
    assert fresh.client.value == final

    for p in everyone:
        assert p.client.value == final, p.name
        assert p.terminal is None, f"{p.name} was sent away with {p.terminal}"
        assert not p.client.denied or p is mentor or p is watcher, p.client.denied
    assert acked <= tokens(final), f"lost acknowledged edits: {sorted(acked - tokens(final))}"
    assert typed <= tokens(final), f"lost edits: {sorted(typed - tokens(final))}"
    assert set(mentor.roles) == {"mentor"}, mentor.roles
    assert all(set(s.roles) == {"student"} for s in students)

    outages = [o for p in everyone for o in p.outages]
    by_phase = {ph: [o for o in outages if o.phase == ph] for ph in ("sigterm", "sigkill")}
    assert by_phase["sigterm"] and by_phase["sigkill"]
    assert {o.code for o in by_phase["sigterm"]} == {CloseCode.SERVICE_RESTART}
    assert term_exit == 0, f"the SIGTERMed gateway exited with {term_exit}"

    lines = [
        "",
        f"nginx fleet: 2 api, 3 gateways, {len(everyone)} clients in one room, "
        f"{time.monotonic() - started:.1f}s of typing",
        f"  edits typed {len(typed)}, acknowledged {len(acked)}, "
        f"all in the final document ({len(final)} chars), {len(everyone) + 1} copies equal",
    ]
    for phase, items in by_phase.items():
        seconds = sorted(o.seconds * 1000 for o in items)
        codes = sorted({int(o.code or 0) for o in items})
        lines.append(
            f"  {phase}: {len(items)} reconnects (close codes {codes}), "
            f"ms to resynced: min {seconds[0]:.0f} median {statistics.median(seconds):.0f} "
            f"max {seconds[-1]:.0f}; attempts max {max(o.attempts for o in items)}"
        )
    with capsys.disabled():
        sys.stdout.write("\n".join(lines) + "\n")

    await asyncio.gather(*(p.close() for p in [*everyone, fresh]))
    # nginx logs a websocket request when it ends: now every one of them is logged.
    await await_until(
        lambda: len(stack.nginx.upstreams("/ws/")) >= len(outages) + len(everyone) + 1,
        within=10,
        message="nginx logged every room socket",
    )
    used = set(stack.nginx.upstreams("/ws/"))
    assert used == {f"{LOCALHOST}:{g.port}" for g in stack.gateways}, used
    retried = stack.nginx.retried("/ws/")
    with capsys.disabled():
        sys.stdout.write(
            f"  nginx: {len(stack.nginx.upstreams('/ws/'))} gateway attempts, "
            f"{retried} room sockets passed on to the next gateway after a refused connect\n"
        )
