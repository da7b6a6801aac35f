"""Validate untrusted Yjs binary messages in pure Python before pycrdt decodes them.

pycrdt (yrs) trusts the counts inside an update and reserves memory for them up
front, reads strings without checking UTF-8, and recurses without limit into
nested ``any`` values. Everything a client sends goes through this module first:
a message that passes here has every count backed by the bytes that follow, only
well-formed UTF-8, bounded nesting, and no bytes left over.

Where Yjs and yrs read the same bytes differently, the bytes are rejected, so
that the structure checked here is the structure pycrdt will see:

- an item's content ref is ``info & 0x1f`` in Yjs but ``info & 0x0f`` in yrs, and
  GC/Skip are matched on the whole info byte by yrs: flag bits that either
  decoder would ignore are refused;
- ``ContentJSON`` (ref 2) is refused outright: yrs reads count + 1 strings for
  it, and Yjs 13 never writes it (it only reads it for old documents);
- an ``XmlHook`` type (type ref 5) is refused: Yjs writes a name after it, yrs
  reads none;
- clocks and lengths must fit in 32 bits (yrs silently wraps them).

The lib0 readers it uses live in ``shared.ywire``. Pure: no I/O. Run
``python -m shared.yvalidate --bench`` for a timing figure.
"""

from __future__ import annotations

import json
import re
import sys
from typing import NoReturn

from shared.ywire import (
    DecodeError,
    read_var_bytes,
    read_var_int,
    read_var_string,
    read_var_uint,
)

MAX_U32 = 2**32 - 1  # yrs keeps clocks and lengths in u32
MAX_ANY_DEPTH = 32


# Every reason an update is refused, the lib0 readers' included: one exception type.
InvalidUpdate = DecodeError


def _skip_string(buf: bytes, pos: int) -> int:
    # The hot-path twin of read_var_string: one-byte lengths inline.
    try:
        size = buf[pos]
    except IndexError:
        raise InvalidUpdate("truncated string") from None
    if size < 0x80:
        pos += 1
    else:
        size, pos = read_var_uint(buf, pos)
    end = pos + size
    if end > len(buf):
        raise InvalidUpdate("string runs past the end")
    chunk = buf[pos:end]
    if not chunk.isascii():
        _check_utf8(chunk)
    return end


def _check_utf8(chunk: bytes) -> None:
    try:
        chunk.decode()
    except UnicodeDecodeError:
        raise InvalidUpdate("string is not valid UTF-8") from None


def _reject_constant(name: str) -> object:
    raise InvalidUpdate(f"{name} is not JSON")


def _skip_json(buf: bytes, pos: int) -> int:
    text, end = read_var_string(buf, pos)
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidUpdate("embedded value is not JSON") from None
    return end


def skip_any(buf: bytes, pos: int, depth: int = 0) -> int:
    """Check one lib0 ``any`` value at ``pos`` (nesting at most 32); return the next position."""
    try:
        tag = buf[pos]
    except IndexError:
        raise InvalidUpdate("truncated any") from None
    pos += 1
    if tag == 119:  # string
        return _skip_string(buf, pos)
    if tag in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if tag == 125:  # varInt
        return read_var_int(buf, pos)[1]
    if tag == 124 or tag == 123 or tag == 122:  # float32, float64, bigint64
        pos += 4 if tag == 124 else 8
        if pos > len(buf):
            raise InvalidUpdate("truncated number")
        return pos
    if tag == 118 or tag == 117:  # object, array
        if depth >= MAX_ANY_DEPTH:
            raise InvalidUpdate("any nested too deeply")
        count, pos = read_var_uint(buf, pos)
        if tag == 118:
            if 2 * count > len(buf) - pos:
                raise InvalidUpdate("object size exceeds data")
            for _ in range(count):
                pos = skip_any(buf, _skip_string(buf, pos), depth + 1)
        else:
            if count > len(buf) - pos:
                raise InvalidUpdate("array size exceeds data")
            for _ in range(count):
                pos = skip_any(buf, pos, depth + 1)
        return pos
    if tag == 116:  # Uint8Array
        return read_var_bytes(buf, pos)[1]
    raise InvalidUpdate(f"unknown any type {tag}")


# An ID, (client varUint <= 2**53 - 1, clock varUint <= 2**32 - 1), at C speed: ids are
# most of a keystroke's bytes, and pycrdt's random client ids take 8 bytes each.
_ID = (
    rb"[\x80-\xff]{0,6}+(?:[\x00-\x7f]|[\x80-\xff][\x00-\x0f])"
    rb"[\x80-\xff]{0,3}+(?:[\x00-\x7f]|[\x80-\xff][\x00-\x0f])"
)
_match_id = re.compile(_ID).match
_match_two_ids = re.compile(_ID + _ID).match  # origin and right origin


def _bad_id(buf: bytes, pos: int) -> NoReturn:
    read_var_uint(buf, pos)  # raises with the precise reason if the client is bad
    _read_u32(buf, read_var_uint(buf, pos)[1])  # likewise for the clock
    raise InvalidUpdate("bad ID")  # pragma: no cover - one of the above raised


def _skip_id(buf: bytes, pos: int) -> int:
    m = _match_id(buf, pos)
    if m is None:
        _bad_id(buf, pos)
    return m.end()


def _read_u32(buf: bytes, pos: int) -> tuple[int, int]:
    value = buf[pos]
    if value < 0x80:
        return value, pos + 1
    value, pos = read_var_uint(buf, pos)
    if value > MAX_U32:
        raise InvalidUpdate("clock or length above 32 bits")
    return value, pos


def validate_update(
    buf: bytes | bytearray | memoryview,
    *,
    max_bytes: int | None = None,
    max_structs: int | None = None,
) -> bool:
    """Fully check a Yjs update (v1); return whether it holds any struct or deletion.

    Raises InvalidUpdate if it is larger than ``max_bytes``, holds more than
    ``max_structs`` structs (pycrdt's memory grows with their square when they are
    consecutive), is malformed, truncated, followed by trailing bytes, or claims
    more elements than its bytes can hold.
    The canonical empty update ``b"\\x00\\x00"`` returns False, as does one holding
    only Skip structs and delete-set entries without ranges.
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    n = len(buf)
    if max_bytes is not None and n > max_bytes:
        raise InvalidUpdate("update too large")
    uint = read_var_uint
    u32 = _read_u32
    match_id = _match_id
    match_two = _match_two_ids
    skip_string = _skip_string
    nonempty = False
    budget = n if max_structs is None else max_structs
    try:
        groups = buf[0]
        if groups < 0x80:
            pos = 1
        else:
            groups, pos = uint(buf, 0)
        if 3 * groups > n - pos:
            raise InvalidUpdate("struct group count exceeds data")
        for _ in range(groups):
            structs = buf[pos]
            if structs < 0x80:
                pos += 1
            else:
                structs, pos = uint(buf, pos)
            m = match_id(buf, pos)  # client, first clock
            if m is None:
                _bad_id(buf, pos)
            pos = m.end()
            if 2 * structs > n - pos:
                raise InvalidUpdate("struct count exceeds data")
            budget -= structs
            if budget < 0:
                raise InvalidUpdate("too many structs")
            for _ in range(structs):
                info = buf[pos]
                pos += 1
                ref = info & 0x1F
                if ref == 0 or ref == 10:  # GC or Skip: a length and nothing else
                    if info != ref:
                        raise InvalidUpdate("flag bits on a GC or Skip struct")
                    pos = u32(buf, pos)[1]
                    nonempty = nonempty or ref == 0
                    continue
                nonempty = True
                if info & 0xC0:  # origin (0x80) and/or right origin (0x40)
                    m = (match_two if info >= 0xC0 else match_id)(buf, pos)
                    if m is None:
                        _bad_id(buf, _skip_id(buf, pos) if info >= 0xC0 else pos)
                    pos = m.end()
                else:  # no origin: the parent is named (and a map key if 0x20)
                    parent = buf[pos]
                    pos += 1
                    if parent == 1:
                        pos = skip_string(buf, pos)  # root type name
                    elif parent == 0:
                        pos = _skip_id(buf, pos)  # parent item
                    else:
                        raise InvalidUpdate("bad parent info")
                    if info & 0x20:
                        pos = skip_string(buf, pos)
                if ref == 4:  # String, inlined: it is almost every keystroke
                    size = buf[pos]
                    if size < 0x80:
                        pos += 1
                    else:
                        size, pos = uint(buf, pos)
                    end = pos + size
                    if end > n:
                        raise InvalidUpdate("string runs past the end")
                    chunk = buf[pos:end]
                    if not chunk.isascii():
                        _check_utf8(chunk)
                    pos = end
                elif ref == 1:  # Deleted
                    pos = u32(buf, pos)[1]
                elif ref == 8:  # Any
                    count, pos = uint(buf, pos)
                    if count > n - pos:
                        raise InvalidUpdate("any count exceeds data")
                    for _ in range(count):
                        pos = skip_any(buf, pos)
                elif ref == 7:  # Type
                    type_ref = buf[pos]
                    pos += 1
                    if type_ref == 3:  # XmlElement: a tag name
                        pos = skip_string(buf, pos)
                    elif type_ref > 6 or type_ref == 5:
                        raise InvalidUpdate(f"type ref {type_ref} not accepted")
                elif ref == 6:  # Format: key, JSON value
                    pos = _skip_json(buf, skip_string(buf, pos))
                elif ref == 5:  # Embed: JSON
                    pos = _skip_json(buf, pos)
                elif ref == 3:  # Binary
                    pos = read_var_bytes(buf, pos)[1]
                elif ref == 9:  # Doc: guid, options
                    pos = skip_any(buf, skip_string(buf, pos))
                elif ref == 2:
                    raise InvalidUpdate("JSON content (read differently by yrs)")
                else:
                    raise InvalidUpdate(f"unknown content ref {ref}")
        clients = buf[pos]  # the delete set
        if clients < 0x80:
            pos += 1
        else:
            clients, pos = uint(buf, pos)
        if 2 * clients > n - pos:
            raise InvalidUpdate("delete set client count exceeds data")
        for _ in range(clients):
            pos = uint(buf, pos)[1]  # client
            ranges, pos = uint(buf, pos)
            if 2 * ranges > n - pos:
                raise InvalidUpdate("delete range count exceeds data")
            for _ in range(ranges):
                clock, pos = u32(buf, pos)
                length, pos = u32(buf, pos)
                if clock + length > MAX_U32 + 1:
                    raise InvalidUpdate("delete range ends above 32 bits")
            nonempty = nonempty or ranges > 0
    except IndexError:
        raise InvalidUpdate("truncated update") from None
    if pos != n:
        raise InvalidUpdate("trailing bytes after update")
    return nonempty


def validate_state_vector(buf: bytes) -> None:
    """Check a state vector: count, then count × (client, clock), nothing after."""
    count, pos = read_var_uint(buf, 0)
    if 2 * count > len(buf) - pos:
        raise InvalidUpdate("state vector count exceeds data")
    try:
        for _ in range(count):
            pos = read_var_uint(buf, pos)[1]
            pos = _read_u32(buf, pos)[1]
    except IndexError:
        raise InvalidUpdate("truncated state vector") from None
    if pos != len(buf):
        raise InvalidUpdate("trailing bytes after state vector")


def _bench() -> None:
    import timeit
    from functools import partial

    from pycrdt import Doc, Text

    doc: Doc[Text] = Doc()
    text = doc.get("code", type=Text)
    text += "def main():\n    return 42\n"
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text.insert(15, "x")  # a keystroke in the middle: origin and right origin
    keystroke = updates[-1]
    full = doc.get_update()
    for name, update in (("keystroke", keystroke), ("full doc", full)):
        runs = 200_000 if len(update) < 100 else 50_000
        timer = timeit.Timer(partial(validate_update, update))
        best = min(timer.repeat(number=runs, repeat=5))
        sys.stdout.write(
            f"{name}: {len(update)} bytes, {best / runs * 1e9:.0f} ns per validation\n"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--bench"]:
        _bench()
    else:
        sys.stderr.write("usage: python -m shared.yvalidate --bench\n")
        raise SystemExit(2)
