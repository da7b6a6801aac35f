"""The pure room core: one room's document, local members, roles and what to send.

No sockets, no Redis, no clock of its own: the shells (``frames.py`` for sockets,
``follower.py`` through ``inbound.py`` for the room channel) feed it frames, remote
events and the time, and carry out the returned ``Effects``. Everything that decides
who may do what, what reaches whom and what is published lives here, the rules of the
room's awareness states in their own table (``awareness.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pycrdt import Doc, Text

from services.gateway.awareness import AwarenessRefused, AwarenessTable
from services.gateway.channel import Presence
from services.gateway.ydoc import TEXT, normalize_code, replay
from shared import protocol
from shared.protocol import CloseCode, MessageType, ProtocolError, Role, SyncType
from shared.yvalidate import InvalidUpdate, validate_state_vector, validate_update
from shared.ywire import encode_awareness_update

# Structs in one client update. Keystrokes hold 1-3; a reconnecting client's step 2
# holds its offline edits (Yjs squashes consecutive typing). pycrdt's memory to apply an
# update grows with the square of its consecutive items, hence a bound.
MAX_STRUCTS = 4096


def _is_fatal(exc: BaseException) -> bool:
    # pycrdt reports some malformed input with a Rust panic (PanicException derives from
    # BaseException): that is bad input, not a reason to stop the process.
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)) or (
        type(exc).__name__ == "CancelledError"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    max_doc_bytes: int = 1 << 20
    max_frame_bytes: int = 1 << 18
    updates_per_second: float = 50.0
    burst: int = 200


@dataclass(slots=True)
class Member:
    """One local socket in the room."""

    id: str
    client_id: str
    role: Role
    tokens: float
    stamp: float
    awareness_ids: set[int] = field(default_factory=set)

    @property
    def can_write(self) -> bool:
        return self.role == "student"

    @property
    def owner(self) -> str:
        """Who owns the awareness ids this socket introduces: the role's letter and the
        client's own id, so the same tab on a new socket (any gateway) keeps its ids."""
        return self.role[0] + self.client_id


@dataclass(slots=True)
class Effects:
    """What the shell must do after one input."""

    reply: list[bytes] = field(default_factory=list)  # to the sender only
    broadcast: list[bytes] = field(default_factory=list)  # to every other local member
    publish_update: bytes | None = None  # append to the room log and fan out
    publish_awareness: bytes | None = None  # fan out to the other gateways
    awareness_owner: str = ""  # the owner of publish_awareness's ids (Member.owner)
    close: CloseCode | None = None  # close the sender with this code
    reason: str = ""


class RoomCore:
    """One room as seen by one gateway."""

    def __init__(
        self,
        block_id: str,
        session: str,
        epoch: str,
        solution: str | None,
        limits: Limits,
    ) -> None:
        self.block_id = block_id
        self.session = session
        self.epoch = epoch
        self.limits = limits
        self.doc: Doc[Text] = Doc()
        self.text = self.doc.get(TEXT, type=Text)
        self.members: dict[str, Member] = {}
        self.awareness = AwarenessTable()  # states, clocks and owners of every Yjs id
        self.applied_seq = 0  # every log entry up to here is in self.doc
        self.doc_bytes = 0  # approximate size of the document (snapshot + log)
        self._solution = normalize_code(solution) if solution is not None else None
        # A match starts with the solution's first line as it is (its trailing whitespace
        # aside): a cheap test that spares normalising most texts that do not match.
        self._solution_head = (self._solution or "").split("\n", 1)[0].rstrip()
        self._text_dirty = True
        self.solved = False  # the fleet-wide flag as this gateway last knew it
        self.presence: Presence | None = None  # the newest member counts seen

    # --- state from Redis ---------------------------------------------------------
    def load(self, snapshot: bytes | None, entries: list[tuple[int, bytes]], seq: int) -> None:
        """Apply a snapshot and log entries read from Redis (trusted: written by us)."""
        replay(self.doc, snapshot, entries)
        self.applied_seq = max(self.applied_seq, seq)
        self._text_dirty = True

    def apply_remote_update(self, seq: int, update: bytes, own: bool) -> tuple[bytes | None, bool]:
        """A log entry from the room channel. Returns (frame for local members, gap?).

        A gap (an entry skipped) tells the shell to read the log from ``applied_seq``."""
        previous = self.applied_seq
        if seq <= previous:
            return None, False  # already in the document (read from the log)
        gap = seq > previous + 1
        if not gap:
            self.applied_seq = seq
        if own:
            return None, gap  # applied when our client sent it
        self.doc.apply_update(update)
        self._text_dirty = True
        return protocol.sync_update(update), gap

    def apply_foreign_update(self, update: bytes) -> bytes:
        """A log entry of another epoch (Redis lost the room meanwhile): apply it, leave
        the sequence alone (the resync re-reads the new log)."""
        self.doc.apply_update(update)
        self._text_dirty = True
        return protocol.sync_update(update)

    def apply_remote_awareness(self, update: bytes, owner: str = "") -> bytes | None:
        """Awareness relayed by another gateway (which checked ``owner`` owns its ids):
        keep what is new, forward that."""
        merged = self.awareness.merge_remote(update, owner)
        if merged is None or not merged[0]:
            return None
        fresh, whole = merged
        for client, _, _ in fresh:
            for member in self.members.values():
                member.awareness_ids.discard(client)  # it lives on another gateway now
        return protocol.awareness_message(update if whole else encode_awareness_update(fresh))

    # --- members ------------------------------------------------------------------
    def add_member(self, member_id: str, client_id: str, role: Role, now: float) -> list[bytes]:
        """Register a local socket; returns the frames it gets first (after welcome)."""
        self.members[member_id] = Member(member_id, client_id, role, self.limits.burst, now)
        out = [protocol.sync_step1(self.doc.get_state())]
        states = self.awareness.snapshot()
        if states is not None:
            out.append(states)
        return out

    def remove_member(self, member_id: str) -> Effects:
        """A local socket closed: its awareness states are removed for everyone."""
        effects = Effects()
        member = self.members.pop(member_id, None)
        if member is None or not member.awareness_ids:
            return effects
        update = self.awareness.remove(member.awareness_ids)
        effects.broadcast.append(protocol.awareness_message(update))
        effects.publish_awareness = update
        effects.awareness_owner = member.owner
        return effects

    def local_awareness(self) -> list[tuple[str, bytes]]:
        """The awareness updates of this gateway's own members, one per owner (to answer
        another gateway that just started serving the room)."""
        out = []
        for m in self.members.values():
            mine = self.awareness.update_of(m.awareness_ids)
            if mine is not None:
                out.append((m.owner, mine))
        return out

    # --- client frames --------------------------------------------------------------
    def receive(self, member_id: str, frame: bytes, now: float) -> Effects:
        member = self.members[member_id]
        if not self._take_token(member, now):
            return Effects(close=CloseCode.RATE_LIMITED, reason="too many messages")
        try:
            message = protocol.decode_message(frame)
            if message.type == MessageType.SYNC:
                return self._sync(member, message.sync_type, message.payload, frame)
            if message.type == MessageType.AWARENESS:
                return self._awareness(member, message.payload, frame)
            if message.type == MessageType.QUERY_AWARENESS:
                states = self.awareness.snapshot()
                return Effects(reply=[states] if states else [])
            return Effects()  # auth messages from clients mean nothing to us
        except (ProtocolError, InvalidUpdate) as exc:
            return Effects(close=CloseCode.BAD_REQUEST, reason=str(exc)[:100])

    def _sync(
        self, member: Member, sync_type: SyncType | None, payload: bytes, frame: bytes
    ) -> Effects:
        if sync_type == SyncType.STEP1:
            validate_state_vector(payload)
            try:
                diff = self.doc.get_update(payload)
            except BaseException as exc:  # pycrdt rejects a state vector it cannot use
                if _is_fatal(exc):
                    raise
                return Effects(close=CloseCode.BAD_REQUEST, reason="bad state vector")
            return Effects(reply=[protocol.sync_step2(diff)])
        if not validate_update(
            payload, max_bytes=self.limits.max_frame_bytes, max_structs=MAX_STRUCTS
        ):
            return Effects()  # empty: nothing to write, nothing to refuse
        # A step 2 always carries the whole delete set, so an up-to-date client's answer
        # is not empty; it matters only if it adds something (checked once per connect).
        # A read-only role's updates are checked the same way before refusing them.
        if (sync_type == SyncType.STEP2 or not member.can_write) and not self._adds(payload):
            return Effects()
        if not member.can_write:
            return Effects(reply=[protocol.permission_denied(f"{member.role}s are read-only")])
        if self.doc_bytes + len(payload) > self.limits.max_doc_bytes:
            return Effects(close=CloseCode.DOC_TOO_LARGE, reason="document too large")
        try:
            self.doc.apply_update(payload)
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            return Effects(close=CloseCode.BAD_REQUEST, reason="invalid update")
        self._text_dirty = True
        self.doc_bytes += len(payload)
        out = frame if sync_type == SyncType.UPDATE else protocol.sync_update(payload)
        return Effects(broadcast=[out], publish_update=payload)

    def _adds(self, update: bytes) -> bool:
        """Whether a (validated) update would change the document: tried on a copy."""
        current = self.doc.get_update()
        probe: Doc[Text] = Doc()
        try:
            probe.apply_update(current)
            probe.apply_update(update)
        except BaseException as exc:
            if _is_fatal(exc):
                raise
            return True  # let the real apply report it
        return probe.get_update() != current

    def _awareness(self, member: Member, payload: bytes, frame: bytes) -> Effects:
        """A client's awareness update, taken by the rules of ``awareness.py``; the ids
        it introduces are this member's from now on (a socket of the same tab that held
        them before lets go)."""
        try:
            accepted = self.awareness.accept(member.owner, member.awareness_ids, payload)
        except AwarenessRefused as exc:
            return Effects(close=CloseCode.BAD_REQUEST, reason=str(exc))
        for client in accepted.new_ids:
            for other in self.members.values():
                other.awareness_ids.discard(client)
            member.awareness_ids.add(client)
        stale = accepted.stale
        reply = [protocol.awareness_message(encode_awareness_update(stale))] if stale else []
        if not accepted.fresh:
            return Effects(reply=reply)
        if not accepted.whole:
            payload = encode_awareness_update(accepted.fresh)
            frame = protocol.awareness_message(payload)
        return Effects(
            reply=reply, broadcast=[frame], publish_awareness=payload, awareness_owner=member.owner
        )

    def take_token(self, member_id: str, now: float) -> bool:
        """Count a frame that the core does not read itself (a shared run) in the rate."""
        return self._take_token(self.members[member_id], now)

    def _take_token(self, member: Member, now: float) -> bool:
        limits = self.limits
        member.tokens = min(
            float(limits.burst), member.tokens + (now - member.stamp) * limits.updates_per_second
        )
        member.stamp = now
        if member.tokens < 1.0:
            return False
        member.tokens -= 1.0
        return True

    # --- solved -------------------------------------------------------------------------
    def solved_check(self) -> bool | None:
        """What to report to the room's solved flag, or None if there is nothing to say.

        ``self.solved`` is this gateway's view of the fleet-wide flag (from the room's
        state at load, and from ``solved`` events); a change of the match is reported
        only when it disagrees with that view, so the flag flips, and ``solved`` is
        announced, once per match however many gateways serve the room."""
        if self._solution is None or not self._text_dirty:
            return None
        self._text_dirty = False
        # Normalising only removes characters: a text shorter than the solution cannot
        # match, and one equal to it needs no normalising. The Yjs length (UTF-8 bytes,
        # never fewer than the characters) rules out a short text before it is copied
        # out of the document.
        solution = self._solution
        match = (
            len(self.text) >= len(solution)
            and len(text := str(self.text)) >= len(solution)
            and text.startswith(self._solution_head)
            and (text == solution or normalize_code(text) == solution)
        )
        if match == self.solved:
            return None
        self.solved = match
        return match

    def unsolved(self) -> None:
        """The fleet-wide flag went back to 0: the next check compares the text again."""
        self.solved = False
        self._text_dirty = True

    def full_update(self, state_vector: bytes | None = None) -> bytes:
        return self.doc.get_update(state_vector) if state_vector else self.doc.get_update()
