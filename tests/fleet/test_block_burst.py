"""A burst of room opens on two gateways reads each block from MongoDB once (#19).

Real processes (two gateways on the shared Redis and MongoDB). The blocks are inserted
straight into MongoDB, so no cache has seen them; every room is opened on both gateways
at the same moment. The gateways' ``coderoom_gateway_block_mongo_reads_total`` counts
the blocks each read from MongoDB: at most one read per block for the fleet (the load
lock next to the block's Redis copy, docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.fleet.storm import insert_blocks, join_all
from tests.infra import Fleet, scrape

pytestmark = [pytest.mark.fleet]

ROOMS = 60
READS = "coderoom_gateway_block_mongo_reads_total"


def reads(fleet: Fleet) -> list[float]:
    return [scrape(g.url).get(READS, 0.0) for g in fleet.gateways]


async def test_a_burst_of_opens_on_two_gateways_reads_each_block_once(room_fleet: Fleet) -> None:
    fleet = room_fleet
    blocks = await asyncio.to_thread(insert_blocks, fleet, ROOMS)
    before = reads(fleet)
    urls = [g.ws_url for g in fleet.gateways]
    joined = await join_all([(url, b.id) for b in blocks for url in urls])
    try:
        assert joined.refused == {}, joined.refused
        assert len(joined.members) == 2 * ROOMS
        after = reads(fleet)
        per_gateway = [a - b for a, b in zip(after, before, strict=True)]
        sys.stdout.write(
            f"{ROOMS} rooms opened on both gateways at once: MongoDB reads per gateway "
            f"{[int(n) for n in per_gateway]}; {joined.summary()}\n"
        )
        assert sum(per_gateway) <= ROOMS
    finally:
        for member in joined.members:
            member.leave()
