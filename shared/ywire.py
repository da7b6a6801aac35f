"""Yjs wire primitives: lib0's variable-length encodings and the awareness update.

lib0 (the encoding library of Yjs and y-protocols) writes unsigned integers as varUint
(7 bits a byte, low first), signed ones as varInt (sign in bit 0x40 of the first byte),
byte arrays and strings with a varUint length in front. The room protocol
(``shared.protocol``) frames messages with these, and the validator
(``shared.yvalidate``) reads updates with them; both import them from here. A y-protocols
awareness update is ``count`` times (client id, clock, JSON state) in this encoding.

Pure functions over bytes, no I/O. Readers raise ``DecodeError`` on malformed input and
never read more than the buffer holds.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_SAFE_INTEGER = 2**53 - 1  # lib0 (JavaScript numbers) reads nothing larger


class DecodeError(ValueError):
    """Bytes that are not what lib0 or y-protocols would write; ``str(exc)`` says why."""


def read_var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a lib0 varUint at ``pos``; return ``(value, next_pos)``."""
    try:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
        num = b & 0x7F
        shift = 7
        pos += 1
        while True:
            b = buf[pos]
            pos += 1
            num |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift == 56:
                raise DecodeError("varUint longer than 8 bytes")
    except IndexError:
        raise DecodeError("truncated varUint") from None
    if num > MAX_SAFE_INTEGER:
        raise DecodeError("varUint above 53 bits")
    return num, pos


def read_var_int(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a lib0 varInt (sign in bit 0x40 of the first byte); return ``(value, next_pos)``."""
    try:
        b = buf[pos]
        pos += 1
        num = b & 0x3F
        negative = b & 0x40
        shift = 6
        while b & 0x80:
            if shift == 55:
                raise DecodeError("varInt longer than 8 bytes")
            b = buf[pos]
            pos += 1
            num |= (b & 0x7F) << shift
            shift += 7
    except IndexError:
        raise DecodeError("truncated varInt") from None
    if num > MAX_SAFE_INTEGER:
        raise DecodeError("varInt above 53 bits")
    return (-num if negative else num), pos


def read_var_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    """Read a lib0 varUint8Array (varUint length, then bytes); return ``(data, next_pos)``."""
    size, pos = read_var_uint(buf, pos)
    end = pos + size
    if end > len(buf):
        raise DecodeError("byte array runs past the end")
    return buf[pos:end], end


def read_var_string(buf: bytes, pos: int) -> tuple[str, int]:
    """Read a lib0 varString (UTF-8 byte length, then strict UTF-8); return ``(text, next_pos)``."""
    size, pos = read_var_uint(buf, pos)
    end = pos + size
    if end > len(buf):
        raise DecodeError("string runs past the end")
    try:
        return buf[pos:end].decode(), end
    except UnicodeDecodeError:
        raise DecodeError("string is not valid UTF-8") from None


def parse_awareness_update(
    buf: bytes, *, max_entries: int | None = None
) -> list[tuple[int, int, str]]:
    """Decode a y-protocols awareness update into ``(client_id, clock, state_json)`` entries.

    ``state_json`` is the JSON text as sent (``"null"`` means the client left); it is
    checked for UTF-8 only.
    """
    count, pos = read_var_uint(buf, 0)
    if 3 * count > len(buf) - pos:
        raise DecodeError("awareness count exceeds data")
    if max_entries is not None and count > max_entries:
        raise DecodeError("too many awareness entries")
    entries = []
    for _ in range(count):
        client, pos = read_var_uint(buf, pos)
        clock, pos = read_var_uint(buf, pos)
        state, pos = read_var_string(buf, pos)
        entries.append((client, clock, state))
    if pos != len(buf):
        raise DecodeError("trailing bytes after awareness update")
    return entries


def encode_var_uint(n: int) -> bytes:
    """Encode ``0 <= n <= 2**53 - 1`` as a lib0 varUint."""
    if n < 0 or n > MAX_SAFE_INTEGER:
        raise ValueError(f"varUint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_var_bytes(data: bytes) -> bytes:
    """Encode a lib0 varUint8Array: byte length, then the bytes."""
    return encode_var_uint(len(data)) + data


def encode_var_string(text: str) -> bytes:
    """Encode a lib0 varString: UTF-8 *byte* length, then the UTF-8 bytes."""
    return encode_var_bytes(text.encode())


def encode_awareness_update(entries: Iterable[tuple[int, int, str]]) -> bytes:
    """Encode ``(client_id, clock, state_json)`` entries as a y-protocols awareness update."""
    items = list(entries)
    parts = [encode_var_uint(len(items))]
    for client, clock, state in items:
        parts += (encode_var_uint(client), encode_var_uint(clock), encode_var_string(state))
    return b"".join(parts)
