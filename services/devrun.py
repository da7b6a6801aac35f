"""`coderoom run` (what `make run` starts): the whole system on one machine.

Starts, in order: MongoDB (the embedded wire server, unless MONGODB_URL is set), Redis
(`redis-server` if on PATH, else fakeredis; unless REDIS_URL is set), the seed, the api
and the gateways, each as a child process in its own process group whose output is
prefixed with its name. Ctrl-C or SIGTERM stops them in reverse order (gateways, api,
redis, mongo): SIGTERM, a deadline, then SIGKILL. Should the supervisor itself be killed
(SIGKILL), every child gets SIGTERM from the kernel (Linux's parent-death signal).

Like Kubernetes with its pods, the supervisor keeps the api and the gateways running: one
that dies once everything is up is started again (a gateway with a new GATEWAY_ID, as a
new pod would be) after a backoff that doubles with each recent death, and a line says
why it died; the others keep serving. A service that dies too often is in a crash loop
(services/restarts.py: 5 deaths within 60 s): everything stops and the exit status is
1, as it is when MongoDB or Redis dies or anything dies during the start.

Ports and paths: --api-port/API_PORT (8000), --gateway-ports/GATEWAY_PORTS
(8001,8002), --mongo-port/MONGO_PORT (27018), --redis-port/REDIS_PORT (6399),
--data/CODEROOM_DATA (./var). A busy mongo or redis port is replaced by a free one; a
busy api or gateway port is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.embedded import missing, redis_server_argv
from services.ports import free_port, port_free
from services.restarts import Deaths, exit_reason

STOP_TIMEOUT = 10.0  # seconds each group of children gets to exit after SIGTERM
START_TIMEOUT = 60.0  # seconds for every dependency and service to become ready
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = ROOT / "seeds" / "blocks.yaml"


class StartupError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--api-port", type=int, default=int(env("API_PORT", "8000")))
    parser.add_argument(
        "--gateway-ports",
        default=env("GATEWAY_PORTS", "8001,8002"),
        help="comma-separated; empty for no gateway",
    )
    parser.add_argument("--mongo-port", type=int, default=int(env("MONGO_PORT", "27018")))
    parser.add_argument("--redis-port", type=int, default=int(env("REDIS_PORT", "6399")))
    parser.add_argument("--data", default=env("CODEROOM_DATA", "var"), help="data directory")
    parser.add_argument("--seed", default=str(DEFAULT_SEED), help="seed file ('' to skip)")


def _say(line: str) -> None:
    sys.stdout.write(f"{'run':<6} | {line}\n")
    sys.stdout.flush()


async def http_ok(port: int, path: str, wait: float = 1.0) -> bool:
    """True if GET http://127.0.0.1:port/path answers 200."""
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return status.split(b" ")[1:2] == [b"200"]


PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """A child's pre-exec step: SIGTERM when the supervisor dies, even by SIGKILL (Linux;
    elsewhere a killed supervisor leaves its children running)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    watch: asyncio.Task[None] | None = None


@dataclass
class Service:
    """A child the supervisor keeps running (the api, a gateway)."""

    name: str
    argv: list[str]
    env: Callable[[], dict[str, str]]  # called for each start: a restart may differ
    child: Child | None = None
    deaths: Deaths = field(default_factory=Deaths)


@dataclass
class Supervisor:
    args: argparse.Namespace
    children: list[Child] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    up: bool = False  # everything started: from now on a service that dies is restarted
    failure: str | None = None
    hurry: bool = False
    # Held while a restart spawns and while shutdown begins, so a restart never starts a
    # child that shutdown has already passed by.
    spawning: asyncio.Lock = field(default_factory=asyncio.Lock)
    keepers: list[asyncio.Task[None]] = field(default_factory=list)

    # --- children -----------------------------------------------------------------

    async def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
            preexec_fn=_die_with(os.getpid()),
            limit=1 << 20,
        )
        child = Child(name, proc, asyncio.create_task(self._pump(name, proc)))
        self.children.append(child)
        return child

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
        self.stop.set()

    def watch(self, child: Child) -> None:
        """A dependency (MongoDB, Redis): its death stops everything."""

        async def watcher() -> None:
            code = await child.proc.wait()
            if not self.stopping:
                self._fail(f"{child.name} exited unexpectedly ({exit_reason(code)})")

        child.watch = asyncio.create_task(watcher())

    async def keep(self, service: Service) -> Child:
        """Start a service and keep it running (see the module's docstring)."""
        service.child = await self.spawn(service.name, service.argv, service.env())
        self.keepers.append(asyncio.create_task(self._keep(service), name=service.name))
        return service.child

    async def _keep(self, service: Service) -> None:
        loop = asyncio.get_running_loop()
        while service.child is not None:
            code = await service.child.proc.wait()
            if self.stopping:
                return
            reason = exit_reason(code)
            if not self.up:  # it would only die again: report it as a failed start
                self._fail(f"{service.name} exited during start ({reason})")
                return
            recent = service.deaths.record(loop.time())
            if service.deaths.crash_loop:
                self._fail(
                    f"{service.name} died {recent} times within {service.deaths.window:.0f}s "
                    f"(last: {reason}), a crash loop"
                )
                return
            delay = service.deaths.backoff
            _say(
                f"{service.name} died ({reason}); restarting it in {delay:.1f}s "
                f"(death {recent} of {service.deaths.limit} allowed within "
                f"{service.deaths.window:.0f}s)"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            async with self.spawning:
                if self.stopping or self.stop.is_set():
                    return
                old = service.child
                service.child = await self.spawn(service.name, service.argv, service.env())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.pump, timeout=2)  # its last lines, then forget it
            self.children.remove(old)
            _say(f"{service.name} restarted (pid {service.child.proc.pid})")

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        prefix = f"{name:<6} | ".encode()
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line longer than the limit: pass it on in pieces
                line = await proc.stdout.read(1 << 16)
            if not line:
                return
            sys.stdout.buffer.write(prefix + line.rstrip(b"\n") + b"\n")
            sys.stdout.buffer.flush()

    def _signal(self, child: Child, sig: signal.Signals) -> None:
        if child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.proc.pid, sig)

    async def _stop_group(self, group: list[Child]) -> None:
        alive = [c for c in group if c.proc.returncode is None]
        if not alive:
            return
        for child in alive:
            self._signal(child, signal.SIGKILL if self.hurry else signal.SIGTERM)
        waits = [asyncio.create_task(c.proc.wait()) for c in alive]
        _, pending = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
        for child in alive:
            if child.proc.returncode is None:
                _say(f"{child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
                self._signal(child, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending)

    async def shutdown(self) -> None:
        async with self.spawning:
            self.stopping = True
        for keeper in self.keepers:
            keeper.cancel()
        await asyncio.gather(*self.keepers, return_exceptions=True)
        order = ["gw-", "api", "seed", "redis", "mongo"]
        for head in order:
            await self._stop_group([c for c in self.children if c.name.startswith(head)])
        await self._stop_group(self.children)  # anything else
        for child in self.children:
            if child.watch is not None:
                child.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(child.pump, timeout=2)

    # --- startup ------------------------------------------------------------------

    async def _until(
        self, what: str, child: Child | None, probe: Callable[[], Awaitable[bool]]
    ) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if child is not None and child.proc.returncode is not None:
                raise StartupError(f"{child.name} exited during start ({child.proc.returncode})")
            if await probe():
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{what} not ready after {START_TIMEOUT:.0f}s")
            await asyncio.sleep(0.1)

    async def start_all(self, env: dict[str, str]) -> list[str]:
        args = self.args
        data = Path(args.data)  # made absolute by run()
        python = [sys.executable, "-m", "services.cli"]
        gateway_ports = [int(p) for p in str(args.gateway_ports).split(",") if p.strip()]
        for port in [args.api_port, *gateway_ports]:
            if not port_free(port):
                raise StartupError(f"port {port} is already in use")
        notes: list[str] = []

        if "MONGODB_URL" not in env:
            if why := missing("mongoeco"):
                raise StartupError(f"{why}; or set MONGODB_URL")
            port = args.mongo_port if port_free(args.mongo_port) else free_port()
            mongo = await self.spawn(
                "mongo", [*python, "mongo", "--data", str(data / "mongo"), "--port", str(port)], env
            )
            self.watch(mongo)
            env["MONGODB_URL"] = f"mongodb://127.0.0.1:{port}/?directConnection=true"
            notes.append(f"MongoDB     {env['MONGODB_URL']} (embedded, data in {data / 'mongo'})")
        else:
            mongo = None
            notes.append(f"MongoDB     {env['MONGODB_URL']}")

        if "REDIS_URL" not in env:
            port = args.redis_port if port_free(args.redis_port) else free_port()
            server = shutil.which("redis-server")
            if server:
                argv = redis_server_argv(server, port, data / "redis")
                kind = "redis-server"
            else:
                if why := missing("fakeredis"):
                    raise StartupError(f"redis-server is not on PATH and {why}; or set REDIS_URL")
                argv = [*python, "redis", "--port", str(port)]
                kind = "fakeredis"
            redis = await self.spawn("redis", argv, env)
            self.watch(redis)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            notes.append(f"Redis       {env['REDIS_URL']} ({kind}, not persisted)")
        else:
            redis = None
            notes.append(f"Redis       {env['REDIS_URL']}")

        await asyncio.gather(
            self._until("MongoDB", mongo, lambda: _mongo_ok(env["MONGODB_URL"])),
            self._until("Redis", redis, lambda: _redis_ok(env["REDIS_URL"])),
        )

        if args.seed:
            seeder = await self.spawn("seed", [*python, "seed", args.seed], env)
            if await seeder.proc.wait() != 0:
                raise StartupError("seeding failed (see seed output above)")

        env.setdefault("TOKEN_SECRET", secrets.token_urlsafe(32))
        api_origin = f"http://127.0.0.1:{args.api_port}"
        gateway_urls = [f"ws://127.0.0.1:{p}/ws/rooms" for p in gateway_ports]
        env.setdefault(
            "ALLOWED_ORIGINS",
            f"{api_origin},http://localhost:{args.api_port},"
            "http://127.0.0.1:8000,http://localhost:8000",
        )
        env.setdefault("GATEWAY_URLS", ",".join(gateway_urls))

        def gateway_env(index: int, port: int) -> dict[str, str]:
            # A new id at each start, as a new pod gets: the members of the dead process
            # are reaped under its own id, never mistaken for the new one's.
            return {**env, "PORT": str(port), "GATEWAY_ID": f"gw-{index}-{secrets.token_hex(2)}"}

        gateways = []
        for index, port in enumerate(gateway_ports, start=1):
            service = Service(
                f"gw-{index}", [*python, "gateway"], functools.partial(gateway_env, index, port)
            )
            gateways.append((await self.keep(service), port))
        api = await self.keep(
            Service("api", [*python, "api"], lambda: {**env, "PORT": str(args.api_port)})
        )

        await asyncio.gather(
            self._until("api", api, lambda: http_ok(args.api_port, "/healthz")),
            *(
                self._until(gw.name, gw, functools.partial(http_ok, port, "/healthz"))
                for gw, port in gateways
            ),
        )
        lines = [f"UI and REST {api_origin}/"]
        if gateway_urls:
            lines.append(f"gateways    {', '.join(gateway_urls)}")
        return lines + notes

    async def main(self) -> int:
        loop = asyncio.get_running_loop()

        first_signal: list[float] = []

        def on_signal() -> None:
            # A second Ctrl-C means "no more waiting", but one keypress often arrives
            # twice (the terminal signals the group, and `uv run` forwards it).
            now = time.monotonic()
            if first_signal and now - first_signal[0] > 1.0:
                self.hurry = True
            first_signal[:1] = first_signal[:1] or [now]
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

        env = dict(os.environ)
        startup = asyncio.create_task(self.start_all(env))
        stopped = asyncio.create_task(self.stop.wait())
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if startup.done() and startup.exception() is None:
            self.up = True
            _say("coderoom is up:")
            for line in startup.result():
                _say("  " + line)
            _say("press Ctrl-C to stop")
            await stopped
        elif startup.done():
            exc = startup.exception()
            self.failure = str(exc) if isinstance(exc, StartupError) else repr(exc)
        else:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await startup
        stopped.cancel()
        if self.failure:
            _say(f"error: {self.failure}; stopping everything")
        else:
            _say("stopping")
        await self.shutdown()
        _say("stopped" if not self.failure else "stopped after an error")
        return 1 if self.failure else 0


async def _mongo_ok(url: str) -> bool:
    from pymongo import AsyncMongoClient
    from pymongo.errors import PyMongoError

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=500, connectTimeoutMS=500, timeoutMS=1000
    )
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    finally:
        await client.close()
    return True


async def _redis_ok(url: str) -> bool:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    args.data = str(Path(args.data).resolve())
    return asyncio.run(Supervisor(args).main())
