"""MongoDB documents (Beanie 2) and the validated shape of a code block.

`CodeBlock` is what the lobby lists and a room opens; `RoomSession` is the archive of
one room's life, written when the room closes. `BlockSpec` is the writable part of a
block (what an admin or the seed file supplies), validated the same way everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from beanie import Document
from pydantic import BaseModel, ConfigDict, Field
from pymongo import ASCENDING, DESCENDING, IndexModel

# A code block's id as it appears in URLs (the api's /api/code-blocks/<id>, the
# gateway's /ws/rooms/<id>): a MongoDB ObjectId in lower-case hex, as str(ObjectId)
# writes it. One spelling per block, so one room and one set of Redis keys per block.
BLOCK_ID_PATTERN = "^[0-9a-f]{24}$"
_BLOCK_ID = re.compile(BLOCK_ID_PATTERN)


def is_block_id(text: str) -> bool:
    """Whether ``text`` is a block id in its one accepted spelling (BLOCK_ID_PATTERN)."""
    return _BLOCK_ID.fullmatch(text) is not None


Language = Literal[
    "javascript",
    "typescript",
    "python",
    "java",
    "c",
    "cpp",
    "go",
    "rust",
    "html",
    "css",
    "sql",
    "text",
]
LANGUAGES: tuple[str, ...] = get_args(Language)
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
MAX_TITLE = 200
MAX_DESCRIPTION = 2000
MAX_CODE = 65536

Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Code = Annotated[str, Field(max_length=MAX_CODE)]
MIN_RUN_TIMEOUT = 1
MAX_RUN_TIMEOUT = 60
# Wall-clock limit of a run of the block's code in the browser (seconds); None: the
# browser's default (5 s). JSON name runTimeoutSeconds.
RunTimeout = Annotated[
    float | None,
    Field(strict=True, ge=MIN_RUN_TIMEOUT, le=MAX_RUN_TIMEOUT, alias="runTimeoutSeconds"),
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, to the millisecond (as BSON stores it)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class BlockSpec(BaseModel):
    """The writable fields of a code block; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    title: Title
    slug: Slug
    language: Language
    description: Description = ""
    template: Code = ""
    solution: Code = ""
    run_timeout_seconds: RunTimeout = None


class BlockPatch(BaseModel):
    """A partial update of a code block: only the fields given are changed."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    title: Title | None = None
    slug: Slug | None = None
    language: Language | None = None
    description: Description | None = None
    template: Code | None = None
    solution: Code | None = None
    run_timeout_seconds: RunTimeout = None  # null: back to the default


class CodeBlock(Document):
    """A code exercise: the template students start from and the hidden solution."""

    title: Title
    slug: Slug
    language: Language
    description: Description = ""
    template: Code = ""
    solution: Code = ""
    run_timeout_seconds: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "code_blocks"
        indexes = [
            IndexModel([("slug", ASCENDING)], unique=True, name="slug_unique"),
            IndexModel([("title", ASCENDING), ("_id", ASCENDING)], name="title_id"),
        ]

    def spec(self) -> BlockSpec:
        """The writable fields of this block."""
        return BlockSpec(
            title=self.title,
            slug=self.slug,
            language=self.language,
            description=self.description,
            template=self.template,
            solution=self.solution,
            run_timeout_seconds=self.run_timeout_seconds,
        )


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class ChatRecord(BaseModel):
    """One chat message of an archived session (author and role as the gateway set them)."""

    id: str
    name: str
    role: Literal["mentor", "student"]
    text: str
    at: datetime

    @classmethod
    def from_event(cls, message: dict[str, Any]) -> ChatRecord:
        """From the ``message`` of a ``chat`` event (docs/protocol.md)."""
        return cls(
            id=message["id"],
            name=message["name"],
            role=message["role"],
            text=message["text"],
            at=_from_ms(message["at"]),
        )


class HintRecord(BaseModel):
    """One mentor hint of an archived session: the line it was written on, and when
    (if ever) it was resolved."""

    id: str
    name: str
    text: str
    line: int
    at: datetime
    resolved_at: datetime | None = None

    @classmethod
    def from_event(cls, hint: dict[str, Any]) -> HintRecord:
        """From a hint of a ``chat-history`` event (docs/protocol.md)."""
        resolved = hint.get("resolvedAt")
        return cls(
            id=hint["id"],
            name=hint["name"],
            text=hint["text"],
            line=hint["line"],
            at=_from_ms(hint["at"]),
            resolved_at=_from_ms(resolved) if resolved is not None else None,
        )


class RoomSession(Document):
    """The archive of one room's life, from its mentor's arrival to its closing."""

    block_id: str
    session_id: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    final_code: str = ""
    solved: bool = False
    peak_students: int = Field(0, ge=0)
    reason: str = ""  # why it closed, e.g. "mentor-left", "gateway-died"
    # The compressed replay (shared/replay.py) lives in the same document as the binary
    # field ``replay``, which only the replay route reads (lists project it out).
    replay_bytes: int = Field(0, ge=0)
    chat: list[ChatRecord] = Field(default_factory=list)  # the room chat, oldest first
    hints: list[HintRecord] = Field(default_factory=list)  # the mentor's hints, oldest first

    class Settings:
        name = "room_sessions"
        indexes = [
            IndexModel([("session_id", ASCENDING)], unique=True, name="session_unique"),
            IndexModel(
                [("block_id", ASCENDING), ("started_at", DESCENDING)],
                name="block_started",
            ),
        ]


DOCUMENT_MODELS: tuple[type[Document], ...] = (CodeBlock, RoomSession)
