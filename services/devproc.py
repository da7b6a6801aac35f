"""The children of `coderoom run` (services/devrun.py): how one is spawned, its output
prefixed with its name, and the small probes and records the supervisor keeps."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from services.restarts import Deaths

PR_SET_PDEATHSIG = 1


def say(line: str) -> None:
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


def die_with(parent: int) -> Callable[[], None] | None:
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


async def spawn(name: str, argv: list[str], env: dict[str, str]) -> Child:
    """Start a child in its own session, its output prefixed with its name."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        preexec_fn=die_with(os.getpid()),
        limit=1 << 20,
    )
    return Child(name, proc, asyncio.create_task(_pump(name, proc)))


async def _pump(name: str, proc: asyncio.subprocess.Process) -> None:
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
