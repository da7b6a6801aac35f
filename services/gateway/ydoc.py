"""The room's Yjs document as the gateway builds and reads it (pure, no I/O).

One place for what several parts do to a document: build the template's update (the
same bytes on every gateway), replay the room log (a snapshot, then the entries after
it) and tell whether a text matches the solution.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycrdt import Doc, Text

EMPTY_UPDATE = b"\x00\x00"
TEXT = "code"  # the name of the document's one shared text
# The template is written with a fixed Yjs client id, so that every gateway that
# builds it produces the same bytes (a duplicate is then a no-op, never a second copy).
TEMPLATE_CLIENT_ID = 1


def template_update(template: str) -> bytes:
    """The Yjs update that creates the room's text from the block's template."""
    doc: Doc[Text] = Doc(client_id=TEMPLATE_CLIENT_ID)
    text = doc.get(TEXT, type=Text)
    if template:
        text += template
    return doc.get_update()


def replay(doc: Doc[Text], snapshot: bytes | None, entries: Iterable[tuple[int, bytes]]) -> None:
    """Apply a room log read from Redis to ``doc``: the snapshot, then the entries after it
    (trusted input: every byte was validated before it was written)."""
    if snapshot:
        doc.apply_update(snapshot)
    for _, update in entries:
        doc.apply_update(update)


def log_text(snapshot: bytes | None, entries: Iterable[tuple[int, bytes]]) -> str:
    """The text a room log describes."""
    doc: Doc[Text] = Doc()
    replay(doc, snapshot, entries)
    return str(doc.get(TEXT, type=Text))


def normalize_code(code: str) -> str:
    """The solved rule: line endings unified, trailing whitespace of every line and
    trailing blank lines ignored. Everything else (indentation, blank lines inside)
    counts."""
    if "\r" in code:
        code = code.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join([line.rstrip() for line in code.split("\n")]).rstrip("\n")
