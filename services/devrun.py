"""`coderoom run` (what `make run` starts): the whole system on one machine.

Starts, in order: MongoDB (the embedded wire server, unless MONGODB_URL is set), Redis
(`redis-server` if on PATH, else fakeredis; unless REDIS_URL is set; with
`--redis-cluster` a local Redis Cluster of 3 primaries and 3 replicas instead), the seed,
the api and the gateways, each as a child process in its own process group whose output is
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

The dependencies' starters are services/devdeps.py (the cluster's own argv:
services/devcluster.py); how a child is spawned and its output prefixed,
services/devproc.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services import devdeps, devproc
from services.devdeps import StartupError
from services.devproc import Child, Service, http_ok, say
from services.ports import port_free
from services.restarts import exit_reason

STOP_TIMEOUT = 10.0  # seconds each group of children gets to exit after SIGTERM
START_TIMEOUT = 60.0  # seconds for every dependency and service to become ready
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = ROOT / "seeds" / "blocks.yaml"


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
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a local Redis Cluster (3 primaries + 3 replicas) instead of one Redis",
    )


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
        child = await devproc.spawn(name, argv, env)
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
            say(
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
            say(f"{service.name} restarted (pid {service.child.proc.pid})")

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
                say(f"{child.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
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

    async def until(
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

        redis = (
            devdeps.start_redis_cluster(self, env, data)
            if args.redis_cluster
            else devdeps.start_redis(self, env, args.redis_port, data)
        )
        notes = list(
            await asyncio.gather(devdeps.start_mongo(self, env, args.mongo_port, data), redis)
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
            self.until("api", api, lambda: http_ok(args.api_port, "/healthz")),
            *(
                self.until(gw.name, gw, functools.partial(http_ok, port, "/healthz"))
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
            say("coderoom is up:")
            for line in startup.result():
                say("  " + line)
            say("press Ctrl-C to stop")
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
            say(f"error: {self.failure}; stopping everything")
        else:
            say("stopping")
        await self.shutdown()
        say("stopped" if not self.failure else "stopped after an error")
        return 1 if self.failure else 0


def run(args: argparse.Namespace) -> int:
    args.data = str(Path(args.data).resolve())
    return asyncio.run(Supervisor(args).main())
