"""Noticing a Redis primary that restarted empty, and what to write back (pure).

Housekeeping keeps each primary's ``run_id`` by address. The same address with another
run id is a process that restarted (with no persistence: empty); a new address is a
replica promoted by a failover, which holds the data. ``plan`` says which rooms to
resync and which fleet-wide keys to write again (docs/cluster.md, "A primary that
restarts empty").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from shared.keys import Keys

RunIds = Mapping[str, str]  # primary's address -> its run id


def restarted(previous: RunIds | None, current: RunIds) -> frozenset[str]:
    """Addresses whose run id changed. A new or vanished address, an unknown (empty)
    run id and a first look (``previous`` None) are not restarts."""
    if previous is None:
        return frozenset()
    return frozenset(
        address
        for address, run_id in current.items()
        if run_id and previous.get(address) and previous[address] != run_id
    )


def remembered(previous: RunIds | None, current: RunIds) -> dict[str, str]:
    """What to compare the next look with: the current primaries, each with its run id,
    or the last one known when it did not answer (``""``) — so that a primary down for a
    while and back empty is still seen as restarted."""
    before = previous or {}
    return {address: run_id or before.get(address, "") for address, run_id in current.items()}


@dataclass(frozen=True, slots=True)
class Repair:
    """What a gateway writes again after ``nodes`` restarted empty."""

    nodes: frozenset[str]
    resync: frozenset[str]  # rooms whose keys lived there: RESYNC each
    register: frozenset[str]  # other rooms to add again to the lobby's and our sets
    rearm: frozenset[str]  # other rooms whose mentor grace may have to be set again
    # The closing set was lost: rooms no gateway serves may have had a grace there too
    # (their mentor_left_at tells), so the fleet's open rooms are read and checked.
    fleet_graces: bool = False


def plan(
    nodes: frozenset[str],
    owner: Callable[[str], str],
    keys: Keys,
    gateway_id: str,
    rooms: Iterable[str],
) -> Repair:
    """``owner(key)``: the address of the primary owning the key's slot. Resynced rooms
    register themselves and restart their own grace, so the fleet-wide repairs list the
    others only."""
    served = frozenset(rooms)
    if not nodes:
        return Repair(nodes, frozenset(), frozenset(), frozenset())
    resync = frozenset(b for b in served if owner(keys.room(b).state) in nodes)
    others = served - resync
    sets_lost = owner(keys.rooms) in nodes or owner(keys.gateway_rooms(gateway_id)) in nodes
    closing_lost = owner(keys.closing) in nodes
    return Repair(
        nodes,
        resync,
        others if sets_lost else frozenset(),
        others if closing_lost else frozenset(),
        closing_lost,
    )
