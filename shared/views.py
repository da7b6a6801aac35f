"""What a document looks like when it leaves a service.

Each view is a pydantic model that both builds the JSON (`View.of(doc).body()`) and
describes it (the api's OpenAPI schemas are generated from these models), so a field,
its JSON name and its limits are written once, here and in `shared.documents`. Views
copy an allow-list of fields: the public ones can never carry a block's solution;
`AdminBlock` (operator-only responses) is the one that does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from beanie import PydanticObjectId
from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from shared.documents import (
    BLOCK_ID_PATTERN,
    MAX_RUN_TIMEOUT,
    MIN_RUN_TIMEOUT,
    Code,
    Description,
    Language,
    Slug,
    Title,
)

JSON = dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


ObjectIdText = Annotated[
    PydanticObjectId,
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": BLOCK_ID_PATTERN}),
]
Time = Annotated[
    datetime | None,
    PlainSerializer(_iso, return_type=str | None),
    WithJsonSchema({"type": ["string", "null"], "format": "date-time"}),
]


class View(BaseModel):
    """A response shape: camelCase names out, every field required in the schema."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        from_attributes=True,
        alias_generator=AliasGenerator(serialization_alias=to_camel),
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
    )

    @classmethod
    def of(cls, source: Any) -> Self:
        """The view of a document (or of any object with the same attributes)."""
        return cls.model_validate(source, from_attributes=True)

    def body(self) -> JSON:
        return self.model_dump(mode="json")


class BlockSummary(View):
    """A code block in the lobby list: no template, no solution."""

    # `_id` as Beanie's projections read it from MongoDB, `id` from a document.
    id: ObjectIdText = Field(validation_alias=AliasChoices("_id", "id"))
    slug: Slug
    title: Title
    language: Language
    description: Description = ""


class Block(BlockSummary):
    """A code block as a room shows it. Never carries the solution."""

    template: Code = ""
    run_timeout_seconds: float | None = Field(
        None,
        ge=MIN_RUN_TIMEOUT,
        le=MAX_RUN_TIMEOUT,
        description="Wall-clock limit of a run in the browser (s); null: 5 s.",
    )
    created_at: Time = None
    updated_at: Time = None


class AdminBlock(Block):
    """A code block as an operator sees it (admin responses only)."""

    solution: Code = ""


class ChatMessageView(View):
    """A chat message of an archived session (author and role as the gateway set them)."""

    id: str
    name: str
    role: Literal["mentor", "student"]
    text: str = Field(max_length=1000)
    at: Time = None


class HintView(View):
    """A mentor hint of an archived session: its line, when written, when resolved."""

    id: str
    name: str
    text: str = Field(max_length=1000)
    line: int = Field(ge=1)
    at: Time = None
    resolved_at: Time = None


class RoomSessionView(View):
    """An archived room session (admin responses only)."""

    id: ObjectIdText
    block_id: str
    session_id: str
    started_at: Time = None
    ended_at: Time = None
    final_code: str = ""
    solved: bool = False
    peak_students: int = Field(0, ge=0)
    reason: str = ""
    replay_bytes: int = Field(
        0, ge=0, description="Size of the stored replay (GET /api/sessions/{sessionId}/replay)."
    )
    chat: list[ChatMessageView] = Field(default_factory=list)
    hints: list[HintView] = Field(default_factory=list)
