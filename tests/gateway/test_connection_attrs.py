"""A served socket's attributes stay within CPython's shared-keys limit.

CPython (3.11+) stores the attributes of a class's instances as inline values that share
one key table, of at most 30 keys; an instance that needs more gets its own attribute
dict. websockets' connection sets 27; ``RoomConnection`` keeps its own three in slots.
When a 31st attribute was added (``heartbeat``), every socket cost 2.5 KB more in the
capacity benchmark (docs/bench/README.md, "What was tried")."""

from __future__ import annotations

import asyncio
from typing import cast

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from services.gateway.connection import RoomConnection

SHARED_KEYS_MAX = 30  # CPython's SHARED_KEYS_MAX_SIZE (Objects/dictobject.c)


def test_a_served_socket_keeps_its_attributes_within_the_shared_keys() -> None:
    names: list[set[str]] = []

    async def handler(conn: ServerConnection) -> None:
        ws = cast(RoomConnection, conn)
        ws.heartbeat = True
        ws.listener = None
        await (await ws.ping())  # a pong sets ``latency``
        await ws.close()  # closing sets the close deadline
        names.append(set(vars(ws)))

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, create_connection=RoomConnection, ping_interval=None
        ) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as client:
                await client.wait_closed()

    asyncio.run(main())
    (attrs,) = names
    assert not {"heartbeat", "listener", "backlog", "heard"} & attrs  # in slots, not the dict
    # At 30 (27 + the three before they moved to slots) the benchmark already showed a
    # dict per socket: keys added once by any instance (on rarer paths) count too.
    assert len(attrs) < SHARED_KEYS_MAX, sorted(attrs)
