"""How many archive writes per second the embedded MongoDB sustains, and why.

    uv run python -m bench.archive_mongo [--sessions 2000] [--batch 100]

Starts two embedded servers (mongoeco over SQLite, each on a fresh file): mongoeco's
stock engine and ours (`services.embedded.sqlite_engine`, which skips mongoeco's
full-collection scan per insert). Against each it writes ``--sessions`` RoomSession-like
documents the way the gateway used to (one insert per session, 100 at once, as 100
concurrent closes did) and the way the drainer does (``insert_many`` batches, one at a
time), and prints the rate per thousand documents already in the collection, since
the stock engine's cost per insert grows with the collection. Figures:
docs/bench/archive.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel

from tests.infra import free_port

SERVE = """
import asyncio, sys
from mongoeco.wire import AsyncMongoEcoProxyServer
from services.embedded import sqlite_engine

async def main(kind, path, port):
    if kind == "stock":
        from mongoeco.engines.sqlite import SQLiteEngine
        engine = SQLiteEngine(path)
    else:
        engine = sqlite_engine(path)
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=port)
    await server.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def document(code_bytes: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "block_id": uuid.uuid4().hex[:24],
        "session_id": uuid.uuid4().hex,
        "started_at": now,
        "ended_at": now,
        "final_code": "x" * code_bytes,
        "solved": False,
        "peak_students": 1,
        "reason": "mentor-left",
    }


async def measure(url: str, sessions: int, batch: int, code_bytes: int) -> list[str]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, timeoutMS=600_000)
    lines = []
    try:
        for style in ("one insert per session, 100 concurrent", f"insert_many of {batch}"):
            col = client["bench"][uuid.uuid4().hex[:8]]
            await col.create_indexes(
                [IndexModel([("session_id", ASCENDING)], unique=True, name="session_unique")]
            )
            done = 0
            rates = []
            started = time.perf_counter()
            while done < sessions:
                t0 = time.perf_counter()
                n = min(batch if "many" in style else 100, sessions - done)
                if "many" in style:
                    await col.insert_many([document(code_bytes) for _ in range(n)], ordered=False)
                else:
                    await asyncio.gather(*(col.insert_one(document(code_bytes)) for _ in range(n)))
                rates.append((done, n / (time.perf_counter() - t0)))
                done += n
            total = time.perf_counter() - started
            per_k = {d // 1000 * 1000: r for d, r in rates}
            lines.append(
                f"  {style}: {sessions} in {total:.1f}s = {sessions / total:.0f}/s overall; "
                + ", ".join(f"at {k}: {r:.0f}/s" for k, r in sorted(per_k.items()))
            )
    finally:
        await client.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--code-bytes", type=int, default=400)
    parser.add_argument("--engines", default="stock,ours")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    for kind in args.engines.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-c", SERVE, kind, os.path.join(tmp, "m.sqlite"), str(port)],
                cwd=root,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{kind} server did not start")
                url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
                lines = asyncio.run(measure(url, args.sessions, args.batch, args.code_bytes))
                sys.stdout.write(f"{kind} engine:\n" + "\n".join(lines) + "\n")
                sys.stdout.flush()
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is None:
                    proc.kill()


if __name__ == "__main__":
    main()
