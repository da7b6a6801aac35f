"""Embedded stand-ins for one machine: a MongoDB-wire server and a Redis server.

`serve_mongo` runs mongoeco's wire server over a SQLite file (data survive restarts)
and `serve_fake_redis` runs fakeredis's TCP server; both serve in the foreground until
SIGTERM or SIGINT and then close cleanly. `redis_server_argv` is the command line of a
real, non-persistent `redis-server`, preferred whenever one is on PATH.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MONGO_FILE = "coderoom.sqlite"
EXTRA = "embedded"  # pyproject's optional dependencies holding mongoeco and fakeredis


def missing(module: str) -> str | None:
    """Why an embedded server cannot start (its package is not installed), or None."""
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
        pass
    return (
        f"{module} is not installed: the embedded servers come with coderoom's "
        f"'{EXTRA}' extra (make run, or uv sync --extra {EXTRA})"
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def sqlite_engine(path: str) -> Any:
    """mongoeco's SQLite engine, minus one full scan per insert.

    mongoeco (4.11) checks every inserted document's ``_id`` twice: by its storage key
    (an indexed lookup, exact for every non-numeric id) and then, unconditionally, by
    loading and decoding every document of the collection to compare ids by BSON
    equality (which only differs from the storage key for numeric ids, 1 == 1.0, or
    files written by older versions). That scan makes each insert cost O(collection):
    48 inserts/s at 300 archived sessions, 8/s at 2,300 (docs/bench/archive.md). Our
    documents have ObjectId ids in files this version wrote, so the scan is skipped for
    non-numeric ids; numeric ids keep mongoeco's full check. Unique secondary indexes
    (``session_unique``, ``slug_unique``) are still enforced by mongoeco's index lookup.
    """
    from mongoeco.core.identity import id_contains_numeric_value
    from mongoeco.engines.sqlite import SQLiteEngine

    class Engine(SQLiteEngine):
        def _validate_document_against_unique_indexes(
            self, db_name: str, coll_name: str, document: Any, **flags: Any
        ) -> None:
            if flags.get("scan_payload_id") and not id_contains_numeric_value(document.get("_id")):
                flags["scan_payload_id"] = False
            super()._validate_document_against_unique_indexes(db_name, coll_name, document, **flags)

    return Engine(path)


async def serve_mongo(data_dir: Path, host: str = "127.0.0.1", port: int = 27018) -> None:
    """Serve the MongoDB wire protocol on host:port until SIGTERM/SIGINT."""
    from mongoeco.wire import AsyncMongoEcoProxyServer

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    server = AsyncMongoEcoProxyServer(
        engine=sqlite_engine(str(data_dir / MONGO_FILE)), host=host, port=port
    )
    address = await server.start()
    _say(f"embedded MongoDB listening on {address.uri} (data in {data_dir})")
    try:
        await _until_signal()
    finally:
        await server.close()
        _say("embedded MongoDB closed")


def serve_fake_redis(host: str = "127.0.0.1", port: int = 6399) -> None:
    """Serve fakeredis over TCP on host:port until SIGTERM/SIGINT (in memory only)."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer((host, port))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    _say(f"embedded Redis (fakeredis) listening on redis://{host}:{port}/0")
    stop.wait()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    _say("embedded Redis closed")


def redis_server_argv(executable: str, port: int, data_dir: Path) -> list[str]:
    """A throwaway redis-server: loopback only, no persistence, files under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        executable,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--loglevel",
        "warning",
    ]
