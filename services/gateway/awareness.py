"""A room's awareness (cursors, names, selections) as this gateway knows it: pure, no I/O.

y-protocols' rule decides what is new: a higher clock, or the removal of a live state
at the same clock; only what is new is taken and relayed, so the echoes that stock
clients send back die here. coderoom's rule decides who may say it: a Yjs client id
belongs to the member that introduced it (its owner, ``Member.owner``: role letter and
client id, so the same tab keeps its ids on a new socket on any gateway), and nobody
else may announce a newer state for it (docs/security.md, "Awareness rules"). The room
core (``room.py``) keeps which local member holds which ids; this table keeps the
states, the clocks and the owners.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from shared import protocol
from shared.yvalidate import InvalidUpdate
from shared.ywire import encode_awareness_update, parse_awareness_update

MAX_AWARENESS_STATE_BYTES = 4096
MAX_AWARENESS_CLIENTS_PER_MEMBER = 4

Entry = tuple[int, int, str]  # Yjs client id, clock, state JSON ("null": removed)


class AwarenessRefused(ValueError):
    """A member's awareness update that breaks a rule: the sender is closed with 4400."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What a member's awareness update changed (already taken into the table)."""

    fresh: list[Entry]  # newer than what the room knew: relay these
    stale: list[Entry]  # ids the room saw removed later: tell the sender (with "null")
    new_ids: set[int]  # ids this member introduces now (it holds them from here on)
    whole: bool  # ``fresh`` is the whole update (the sender's frame can be relayed as is)


class AwarenessTable:
    def __init__(self) -> None:
        self.states: dict[int, tuple[int, str]] = {}  # Yjs client id -> (clock, JSON)
        self.clocks: dict[int, int] = {}  # last clock seen, removed ids included
        self.owners: dict[int, str] = {}  # Yjs client id -> Member.owner

    def is_newer(self, client: int, clock: int, state: str) -> bool:
        """y-protocols' rule: a higher clock, or a removal of a live state at the same clock."""
        known = self.clocks.get(client)
        if known is None or clock > known:
            return True
        return clock == known and state == "null" and client in self.states

    def remember(self, client: int, clock: int, state: str) -> None:
        self.clocks[client] = clock
        if state == "null":
            self.states.pop(client, None)
        else:
            self.states[client] = (clock, state)

    def snapshot(self) -> bytes | None:
        """Every live state, as one awareness message (None when there is none)."""
        states = [(c, clock, s) for c, (clock, s) in self.states.items() if s != "null"]
        if not states:
            return None
        return protocol.awareness_message(encode_awareness_update(states))

    def update_of(self, ids: Iterable[int]) -> bytes | None:
        """The live states of ``ids``, as one awareness update (None when none is live)."""
        mine = [(c, *self.states[c]) for c in ids if c in self.states]
        return encode_awareness_update(mine) if mine else None

    def remove(self, ids: Iterable[int]) -> bytes:
        """``ids`` removed at their next clock (their socket closed): the update saying so."""
        gone = []
        for client in ids:
            clock = self.clocks.get(client, 0) + 1
            self.remember(client, clock, "null")
            gone.append((client, clock, "null"))
        return encode_awareness_update(gone)

    def merge_remote(self, update: bytes, owner: str) -> tuple[list[Entry], bool] | None:
        """Awareness relayed by another gateway (which checked that ``owner`` owns its
        ids): take what is new. Returns (the new entries, whether that is all of them),
        or None for bytes that are not an awareness update."""
        try:
            entries = parse_awareness_update(update)
        except InvalidUpdate:
            return None
        fresh = [e for e in entries if self.is_newer(*e)]
        for client, clock, state in fresh:
            self.remember(client, clock, state)
            if owner:
                self.owners[client] = owner
        return fresh, len(fresh) == len(entries)

    def accept(self, owner: str, held: set[int], payload: bytes) -> Accepted:
        """A local member's awareness update (``held``: the ids it holds already).

        Raises ``AwarenessRefused`` (or ``InvalidUpdate`` for malformed bytes) and then
        changes nothing. A newer state for an id another member owns is refused; the
        same clock (a stock client that timed a silent peer out removes it) is dropped."""
        entries = parse_awareness_update(payload)
        fresh: list[Entry] = []
        stale: list[Entry] = []
        for client, clock, state in entries:
            if len(state.encode()) > MAX_AWARENESS_STATE_BYTES:
                raise AwarenessRefused("awareness state too large")
            if state != "null":
                try:
                    orjson.loads(state)
                except orjson.JSONDecodeError:
                    raise AwarenessRefused("awareness is not JSON") from None
            if self.is_newer(client, clock, state):
                holder = self.owners.get(client, owner)
                if holder == owner:
                    fresh.append((client, clock, state))
                elif clock != self.clocks[client]:
                    raise AwarenessRefused("awareness id of another member")
            elif state != "null" and client not in self.states:
                # The room saw this id removed at a later clock (its socket closed, e.g.
                # on a gateway restart) and the client did not hear of it: tell it, and
                # y-protocols re-announces its state with a higher clock.
                stale.append((client, self.clocks[client], "null"))
        new_ids = {client for client, _, _ in fresh} - held
        if len(held) + len(new_ids) > MAX_AWARENESS_CLIENTS_PER_MEMBER:
            raise AwarenessRefused("too many awareness ids")
        for client, clock, state in fresh:
            if client in new_ids:
                self.owners[client] = owner
            self.remember(client, clock, state)
        return Accepted(fresh, stale, new_ids, len(fresh) == len(entries))
