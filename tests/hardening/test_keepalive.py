"""Keepalive on a real gateway: every socket is pinged once per interval, a slice at a
time (never all at once), and a socket that does not answer is closed with 1011."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.protocol import CloseCode
from tests.fleet.conftest import Blocks
from tests.hardening.tools import OP_CLOSE, OP_PING, OP_PONG, RawSocket, frame, raw_join
from tests.infra import scaled

pytestmark = [pytest.mark.fleet]

KEEPALIVE = 3.0  # three slices of about a second
FLEET_ENV = {"KEEPALIVE_SECONDS": KEEPALIVE, "MAX_CONNECTIONS_PER_IP": 0}
SOCKETS = 36


async def _answer_pings(sock: RawSocket, pings: list[float], until: float) -> int | None:
    """Answer every ping (noting when it came) until ``until``; the close code, if any."""
    try:
        while (left := until - time.monotonic()) > 0:
            async with asyncio.timeout(left):
                op, data = await sock.read_frame()
            if op == OP_PING:
                pings.append(time.monotonic())
                sock.send_nowait(frame(data, OP_PONG))
            elif op == OP_CLOSE:
                return int.from_bytes(data[:2], "big")
    except TimeoutError:
        pass
    return None


async def test_pings_are_spread_over_the_interval_and_silence_closes(
    hblocks: Blocks, hgw: list[str]
) -> None:
    blocks = [hblocks.new() for _ in range(SOCKETS // 4)]
    socks = [await raw_join(hgw[0], blocks[i % len(blocks)].id) for i in range(SOCKETS)]
    silent = await raw_join(hgw[0], blocks[0].id)  # never answers

    until = time.monotonic() + scaled(2 * KEEPALIVE + 0.5)
    pings: list[list[float]] = [[] for _ in socks]
    codes = await asyncio.gather(
        *(_answer_pings(s, p, until) for s, p in zip(socks, pings, strict=True))
    )
    assert codes == [None] * SOCKETS  # answering sockets stay open
    assert all(p for p in pings), "every socket is pinged within two intervals"
    firsts = sorted(p[0] for p in pings)
    spread = firsts[-1] - firsts[0]
    print(f"{SOCKETS} sockets: first pings spread over {spread:.2f}s (interval {KEEPALIVE}s)")
    assert spread > KEEPALIVE / 3  # in slices, not one burst

    code = await silent.until_closed(2 * KEEPALIVE)
    assert code == CloseCode.INTERNAL_ERROR  # 1011: reconnect, as for a dead peer
    for sock in socks:
        sock.abort()


async def _events(sock: RawSocket, until: float) -> list[str]:
    """Answer pings and collect the control events' types until ``until``."""
    from shared.protocol import MessageType, decode_control

    kinds: list[str] = []
    try:
        while (left := until - time.monotonic()) > 0:
            async with asyncio.timeout(left):
                op, data = await sock.read_frame()
            if op == OP_PING:
                sock.send_nowait(frame(data, OP_PONG))
            elif op == OP_CLOSE:
                break
            elif data[:1] == bytes([MessageType.CONTROL]):
                kinds.append(str(decode_control(data)["type"]))
    except TimeoutError:
        pass
    return kinds


async def test_heartbeat_events_only_for_clients_that_ask(hblocks: Blocks, hgw: list[str]) -> None:
    """The coderoom client asks for heartbeats (?heartbeat=1) to notice a silent socket;
    a stock y-websocket client does not, and would log each one as an unknown message."""
    block = hblocks.new()
    asking = await raw_join(hgw[0], block.id, "?client=hb-yes&heartbeat=1")
    stock = await raw_join(hgw[0], block.id, "?client=hb-no")
    until = time.monotonic() + scaled(2 * KEEPALIVE + 0.5)
    got_yes, got_no = await asyncio.gather(_events(asking, until), _events(stock, until))
    assert got_yes.count("heartbeat") >= 1, got_yes
    assert "heartbeat" not in got_no, got_no
    asking.abort()
    stock.abort()


async def test_a_socket_that_speaks_is_not_pinged_a_silent_one_is(
    hblocks: Blocks, hgw: list[str]
) -> None:
    """A message is proof of life: a typing student's socket needs no ping (the pings and
    pongs were a tenth of a busy gateway's syscalls); a quiet one is still pinged."""
    block = hblocks.new()
    talker = await raw_join(hgw[0], block.id, "?client=ka-talker")
    quiet = await raw_join(hgw[0], block.id, "?client=ka-quiet")
    step1 = frame(bytes([0, 0, 1, 0]))  # sync step 1, empty state vector: harmless
    until = time.monotonic() + scaled(2 * KEEPALIVE + 0.5)

    async def talk() -> list[float]:
        pings: list[float] = []
        reading = asyncio.create_task(_answer_pings(talker, pings, until))
        while time.monotonic() < until:
            talker.send_nowait(step1)
            await asyncio.sleep(KEEPALIVE / 6)
        await reading
        return pings

    quiet_pings: list[float] = []
    talker_pings, code = await asyncio.gather(talk(), _answer_pings(quiet, quiet_pings, until))
    assert code is None
    assert quiet_pings, "the quiet socket is pinged"
    assert talker_pings == [], "the socket that keeps speaking is not"
    talker.abort()
    quiet.abort()
