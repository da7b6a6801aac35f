"""A Redis failover just after rooms closed: every session archived exactly once (#19).

Real processes: a Redis primary and its replica, a gateway, an embedded MongoDB. The
gateway's ``REDIS_URL`` and the replica's ``replicaof`` point at TCP forwarders
(tests/redis_failover.py): the one between primary and replica passes the replication
stream up to the first archive entry and keeps the rest from the replica, so the rooms'
`CLOSE` is replicated and their queue entries are not. MongoDB is stopped meanwhile, so
no drainer can archive a record from the doomed primary. Then the primary is SIGKILLed,
the replica promoted (``REPLICAOF NO ONE``) and the gateway's forwarder switched to it;
MongoDB comes back once the batch the drainer read from the old primary has failed.
Without the closing gateway's confirmation (``ARCHIVE_REPLICAS=0``) these sessions are
lost: the promoted replica holds neither their rooms nor their records.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.gateway.archive_queue import SessionRecord
from shared import protocol
from tests.fleet.storm import archived, check_archive, insert_blocks, join_all, typed_update
from tests.infra import LOCALHOST, Fleet, RedisServer, await_until, wait_until
from tests.redis_failover import Forwarder, RedisNode

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]

ROOMS = 3
BATCH_FAILED = "archive batch failed"  # the drainer's log line (archive_drainer.py)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Pair:
    """Primary, replica, the replication forwarder between them and the gateway's."""

    def __init__(self, tmp: Path) -> None:
        self.primary = RedisNode(tmp / "primary").start()
        self.link = Forwarder(self.primary.port, replication=True).start()
        self.replica = RedisNode(tmp / "replica", "--replicaof", LOCALHOST, str(self.link.port))
        self.replica.start()
        self.front = Forwarder(self.primary.port).start()
        wait_until(lambda: self.replica.info()["master_link_status"] == "up", 20, message="link")

    def in_step(self) -> bool:
        """The replica has everything the primary wrote so far."""
        offset = self.primary.info()["master_repl_offset"]
        return bool(self.replica.info()["slave_repl_offset"] >= offset)

    def stop(self) -> None:
        for forwarder in (self.front, self.link):
            forwarder.stop()
        for node in (self.replica, self.primary):
            node.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    pair = Pair(tmp_path / "redis")
    try:
        yield pair
    finally:
        pair.stop()


def tombs_and_entries(
    node: RedisNode, fleet: Fleet, block_ids: list[str]
) -> tuple[set[str], set[str]]:
    """Sessions whose room the node holds closed; sessions of its archive entries."""
    keys = fleet.keys
    client = node.client()
    try:
        tombs = {client.get(keys.room(b).tomb) for b in block_ids} - {None}
        entries = {
            SessionRecord.decode(f["r"]).session_id for _, f in client.xrange(keys.archive_queue)
        }
    finally:
        client.close()
    return tombs, entries


async def test_a_session_closed_just_before_a_failover_is_archived_once(
    tmp_path: Path, pair: Pair
) -> None:
    fleet = Fleet(
        tmp_path / "fleet",
        gateways=1,
        api=False,
        redis=RedisServer(tmp_path / "unused", port=pair.front.port),  # never started
        env={
            "MENTOR_GRACE_SECONDS": 0.5,
            "HEARTBEAT_INTERVAL_SECONDS": 0.5,
            "GATEWAY_DEAD_AFTER_SECONDS": 15.0,
            "ARCHIVE_CLAIM_IDLE_SECONDS": 2.0,
            "MONGODB_TIMEOUT_MS": 1000,  # a drainer's write fails after 6 s
        },
    )
    with fleet:
        blocks = await asyncio.to_thread(insert_blocks, fleet, ROOMS)
        url = fleet.gateways[0].ws_url
        mentors = await join_all([(url, b.id) for b in blocks])
        students = await join_all([(url, b.id) for b in blocks])
        assert not mentors.refused and not students.refused
        for student, block in zip(students.members, blocks, strict=True):
            await student.sock.send(protocol.sync_update(typed_update(block)))
        keys = fleet.keys
        client = pair.primary.client()
        try:
            await await_until(
                lambda: all(
                    int(client.hget(keys.room(b.id).state, "seq") or 0) >= 1 for b in blocks
                ),
                within=30,
                message="every update in its room's log",
            )
        finally:
            client.close()
        await await_until(pair.in_step, within=20, message="the replica in step")

        fleet.mongo.stop()  # nothing is archived from the doomed primary
        pair.link.hold_xadd_to(keys.archive_queue)
        for member in [*mentors.members, *students.members]:
            member.leave()
        await await_until(pair.link.held.is_set, within=30, message="an archive entry held back")
        ids = [b.id for b in blocks]
        await await_until(
            lambda: len(tombs_and_entries(pair.primary, fleet, ids)[1]) >= ROOMS,
            within=30,
            message="every record in the primary's queue",
        )
        tombs, entries = tombs_and_entries(pair.replica, fleet, ids)
        lost = tombs - entries
        say(
            f"before the failover, the replica holds {len(tombs)} closed rooms and "
            f"{len(entries)} of their records"
        )
        assert lost, "the scenario: rooms closed on the replica, their records not there"

        gateway = fleet.gateways[0]
        failures = gateway.log_text().count(BATCH_FAILED)
        pair.primary.kill()
        killed = time.monotonic()
        pair.replica.promote()  # before the link goes: no reconnect races its stop
        pair.link.stop()
        pair.front.switch(pair.replica.port)
        # A batch the drainer read from the old primary may still be waiting for
        # MongoDB; it must fail first, or it would archive the lost records itself.
        await await_until(
            lambda: gateway.log_text().count(BATCH_FAILED) > failures,
            within=30,
            message="the drainer's batch in flight failed",
        )
        fleet.mongo.start()
        await await_until(
            lambda: len(archived(fleet, blocks)) >= ROOMS,
            within=60,
            interval=0.25,
            message="every session archived",
        )
        took = time.monotonic() - killed
        docs = archived(fleet, blocks)
        check_archive(blocks, docs)
        assert lost <= {d["session_id"] for d in docs}
        say(
            f"{ROOMS} rooms closed just before the primary was killed ({len(lost)} records "
            f"not replicated): all archived once, {took:.1f}s after the kill"
        )
