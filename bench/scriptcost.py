"""Redis CPU per call of the room's PUBLISH script, and of variants without parts of it.

``uv run python -m bench.scriptcost`` (``N=20000`` calls each): a throwaway
``redis-server`` on a free loopback port, two subscribers on the room's channel (as two
gateways serving the room), one call at a time (a flush carrying one batch). Prints the
server's CPU per call (``INFO cpu``, wake-ups and replies included) and the script's own
time (``INFO commandstats`` usec_per_call). The variants are measurements only: they
drop what the product needs (the replay history, the log). docs/bench/2026-11-30/s4.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from redis.asyncio import Redis

from services.gateway.scripts import PUBLISH
from services.ports import free_port
from shared.keys import Keys

HISTORY = """if tonumber(v[4] or 0) + size <= tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'hist_bytes', size)
  redis.call('XADD', KEYS[7], '*', 'k', 'u', 'a', ARGV[4], 'd', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'hist_cut', 1)
end
"""
LOG = "redis.call('XADD', KEYS[3], seq .. '-1', 'u', ARGV[5])\n"
VARIANTS = {
    "as shipped": PUBLISH,
    "no history": PUBLISH.replace(HISTORY, ""),
    "no log": PUBLISH.replace(LOG, ""),
    "PUBLISH only": "redis.call('PUBLISH', KEYS[5], ARGV[5]) return {1, 1, 1}",
}
# A variant equal to the script would measure nothing: the script's text changed.
if len(set(VARIANTS.values())) != len(VARIANTS):
    raise RuntimeError("bench.scriptcost: a variant no longer removes anything; update it")


def cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(port: int, calls: int) -> None:
    redis = Redis(port=port)
    keys = Keys("bench").room("b")
    gateways = [Redis(port=port) for _ in range(2)]
    listeners = [gateway.pubsub() for gateway in gateways]
    for listener in listeners:
        await listener.subscribe(keys.channel)

    async def drain(listener: Any) -> None:
        while True:
            await listener.get_message(timeout=1.0)

    tasks = [asyncio.create_task(drain(listener)) for listener in listeners]
    update = os.urandom(40)  # about one keystroke's Yjs update
    for name, script in VARIANTS.items():
        await redis.delete(*keys.as_list())
        state = {"session": "s", "epoch": "e", "seq": 0, "snap_seq": 0, "hist_bytes": 0}
        await redis.hset(keys.state, mapping=state)  # type: ignore[arg-type]
        sha = await redis.script_load(script)
        await redis.config_resetstat()
        before = await redis.info("cpu")
        started = time.perf_counter()
        for _ in range(calls):
            await redis.evalsha(sha, 7, *keys.as_list(), "s", "gw-1", 1 << 40, "sc1", update)  # type: ignore[misc]
        wall = time.perf_counter() - started
        after = await redis.info("cpu")
        stats = await redis.info("commandstats")
        own = stats.get("cmdstat_evalsha", {}).get("usec_per_call")
        sys.stdout.write(
            f"{name:13s} redis CPU {(cpu(after) - cpu(before)) / calls * 1e6:5.1f} µs/call, "
            f"script {own} µs/call, round trip {wall / calls * 1e6:4.0f} µs\n"
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for listener in listeners:
        await listener.aclose()  # type: ignore[no-untyped-call]
    for client in [redis, *gateways]:
        await client.aclose()


def main() -> None:
    port = free_port()
    server = shutil.which("redis-server") or "redis-server"
    argv = [server, "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        asyncio.run(measure(port, int(os.environ.get("N", "20000"))))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
