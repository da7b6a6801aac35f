"""A member's leave that Redis times out is retried: otherwise a live gateway keeps a
ghost member in the room's state, the counts stay wrong and the room never closes
(nobody else removes a live gateway's members)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fleet.conftest import Blocks, own_fleet
from tests.infra import scaled
from tests.yclient import join, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

PAUSE_MS = 2500  # longer than the gateways' Redis timeout below


async def test_a_leave_that_times_out_is_retried(tmp_path: Path) -> None:
    with own_fleet(tmp_path, gateways=1, REDIS_TIMEOUT_MS=500) as fleet:
        block = Blocks(fleet).new()
        url = fleet.gateways[0].ws_url + "/ws/rooms"
        mentor = await join(url, block.id)
        student = await join(url, block.id)
        await mentor.wait_for(lambda: (mentor.last("presence") or {}).get("students") == 1)
        redis = fleet.redis.client()
        try:
            # Every Redis command stalls (no data lost): the student's LEAVE times out.
            redis.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
            await student.close()
            await wait_for(
                lambda: (mentor.last("presence") or {}).get("students") == 0,
                timeout=scaled(PAUSE_MS / 1000 + 15),
            )
            members = redis.hgetall(fleet.keys.room(block.id).members)
            assert len(members) == 1 and next(iter(members.values())).startswith("m"), members
        finally:
            redis.close()
            await mentor.close()
        log = fleet.gateways[0].log_text()
        assert "failed (attempt 1), retrying" in log, "the leave never timed out: no test"
