"""The pure restart check (services/gateway/runids.py): which primaries restarted empty,
and what a gateway writes back for them."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from services.gateway.runids import plan, remembered, restarted
from shared.keys import Keys
from shared.redisconn import slot_of

A, B, C = "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, {A: "r1"}, set()),  # first look
        (None, {}, set()),
        ({A: "r1"}, {A: "r1"}, set()),  # nothing happened
        ({A: "r1"}, {A: "r2"}, {A}),  # same address, another run: restarted empty
        ({A: "r1", B: "s1"}, {A: "r1", B: "s2"}, {B}),
        ({A: "r1", B: "s1", C: "t1"}, {A: "r2", B: "s1", C: "t2"}, {A, C}),
        ({A: "r1"}, {A: "r1", B: "s1"}, set()),  # a new address: promoted replica / new shard
        ({A: "r1", B: "s1"}, {A: "r1", C: "t1"}, set()),  # failover: B gone, C promoted
        ({A: "r1", B: "s1"}, {A: "r1"}, set()),  # an address gone
        ({A: "r1", B: "s1"}, {B: "s2", C: "t1"}, {B}),  # all at once
        ({A: "r1"}, {A: ""}, set()),  # an unknown run id now ...
        ({A: ""}, {A: "r1"}, set()),  # ... or before: no conclusion
        ({"": "r1"}, {"": "r2"}, {""}),  # the one server (single Redis)
        ({"": "r1"}, {"": "r1"}, set()),
    ],
)
def test_restarted(
    previous: dict[str, str] | None, current: dict[str, str], expected: set[str]
) -> None:
    assert restarted(previous, current) == expected


def test_restarted_exhaustively_over_three_addresses() -> None:
    # Every address is absent, or present with run id "1" or "2", before and after: a
    # restart is exactly "present both times with different run ids".
    states = [None, "1", "2"]
    for before in itertools.product(states, repeat=3):
        for after in itertools.product(states, repeat=3):
            prev = {a: r for a, r in zip((A, B, C), before, strict=True) if r is not None}
            cur = {a: r for a, r in zip((A, B, C), after, strict=True) if r is not None}
            want = {
                a
                for a, r0, r1 in zip((A, B, C), before, after, strict=True)
                if r0 is not None and r1 is not None and r0 != r1
            }
            assert restarted(prev, cur) == want, (prev, cur)


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, {A: "r1", B: ""}, {A: "r1", B: ""}),
        ({A: "r1", B: "s1"}, {A: "r2", B: ""}, {A: "r2", B: "s1"}),  # B did not answer
        ({A: "r1", B: "s1"}, {A: "r1"}, {A: "r1"}),  # B is no longer a primary
        ({A: "r1"}, {A: "r1", C: "t1"}, {A: "r1", C: "t1"}),
        ({A: "r1"}, {A: "", C: ""}, {A: "r1", C: ""}),
    ],
)
def test_remembered(
    previous: dict[str, str] | None, current: dict[str, str], expected: dict[str, str]
) -> None:
    assert remembered(previous, current) == expected


def test_a_primary_silent_for_a_while_then_back_empty_is_seen() -> None:
    looks = [{A: "r1", B: "s1"}, {A: "r1", B: ""}, {A: "r1", B: ""}, {A: "r1", B: "s2"}]
    seen, known = [], None
    for look in looks:
        seen.append(restarted(known, look))
        known = remembered(known, look)
    assert seen == [set(), set(), set(), {B}]


KEYS = Keys("p")
GW = "gw-1"


def make_owner(rooms: dict[str, str], fleet: dict[str, str]) -> Callable[[str], str]:
    """A slot map placing each room's keys and each fleet-wide key where told."""
    table = {slot_of(KEYS.room(b).state): n for b, n in rooms.items()}
    table.update({slot_of(k): n for k, n in fleet.items()})
    assert len(table) == len(rooms) + len(fleet)  # no two of them share a slot here
    return lambda key: table[slot_of(key)]


ROOMS = {"r1": A, "r2": A, "r3": B, "r4": C}


def test_plan_resyncs_only_the_restarted_nodes_rooms() -> None:
    owner = make_owner(ROOMS, {KEYS.rooms: C, KEYS.gateway_rooms(GW): C, KEYS.closing: C})
    repair = plan(frozenset({A}), owner, KEYS, GW, ROOMS)
    assert repair.nodes
    assert repair.resync == {"r1", "r2"}
    assert repair.register == set() and repair.rearm == set()
    assert not repair.fleet_graces


def test_plan_with_the_lobby_set_lost_registers_the_other_rooms_again() -> None:
    owner = make_owner(ROOMS, {KEYS.rooms: A, KEYS.gateway_rooms(GW): C, KEYS.closing: C})
    repair = plan(frozenset({A}), owner, KEYS, GW, ROOMS)
    assert repair.resync == {"r1", "r2"}
    assert repair.register == {"r3", "r4"}  # the resynced ones register themselves
    assert repair.rearm == set()


def test_plan_with_our_gateway_set_lost_registers_the_other_rooms_again() -> None:
    owner = make_owner(ROOMS, {KEYS.rooms: C, KEYS.gateway_rooms(GW): B, KEYS.closing: C})
    repair = plan(frozenset({B}), owner, KEYS, GW, ROOMS)
    assert repair.resync == {"r3"}
    assert repair.register == {"r1", "r2", "r4"}
    assert repair.rearm == set()


def test_plan_with_the_closing_set_lost_rearms_the_other_rooms() -> None:
    owner = make_owner(ROOMS, {KEYS.rooms: A, KEYS.gateway_rooms(GW): A, KEYS.closing: C})
    repair = plan(frozenset({C}), owner, KEYS, GW, ROOMS)
    assert repair.resync == {"r4"}
    assert repair.register == set()
    assert repair.rearm == {"r1", "r2", "r3"}
    assert repair.fleet_graces  # and the rooms no gateway serves: read from the lobby's set


def test_plan_for_two_nodes_and_for_none() -> None:
    owner = make_owner(ROOMS, {KEYS.rooms: A, KEYS.gateway_rooms(GW): B, KEYS.closing: C})
    repair = plan(frozenset({A, B}), owner, KEYS, GW, ROOMS)
    assert repair.resync == {"r1", "r2", "r3"}
    assert repair.register == {"r4"} and repair.rearm == set()
    assert not repair.fleet_graces
    nothing = plan(frozenset(), owner, KEYS, GW, ROOMS)
    assert not nothing.nodes and not nothing.fleet_graces
    assert nothing.resync == nothing.register == nothing.rearm == set()


def test_plan_on_one_server_resyncs_every_room_and_nothing_else() -> None:
    repair = plan(frozenset({""}), lambda _key: "", KEYS, GW, ROOMS)
    assert repair.resync == set(ROOMS)
    assert repair.register == set() and repair.rearm == set()  # resyncs do both


def test_plan_with_no_rooms_served() -> None:
    repair = plan(frozenset({A}), lambda _key: A, KEYS, GW, [])
    assert repair.nodes and not (repair.resync or repair.register or repair.rearm)
    assert repair.fleet_graces  # nothing served here, but others' rooms may need it
