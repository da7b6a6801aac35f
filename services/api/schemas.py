"""The api's own response shapes (the documents' views are in `shared.views`).

Pydantic models that build the responses and, through `services.api.openapi`, their
OpenAPI schemas: one source for both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.views import View


class ErrorDetail(View):
    field: str
    message: str


class ErrorInfo(View):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    code: str
    message: str
    details: list[ErrorDetail] | None = None  # field by field, for invalid input only


class Error(View):
    """Every failure: `{"error": {"code", "message", "details"?}}`."""

    error: ErrorInfo

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class RoomStatus(View):
    block_id: str
    mentor: bool
    students: int = Field(ge=0)
    watchers: int = Field(ge=0)


class Rooms(View):
    """Live status of open rooms, by block id."""

    rooms: list[RoomStatus]


class Limits(View):
    """The gateways' limits (MAX_FRAME_BYTES, MAX_DOC_BYTES, MAX_UPDATES_PER_SECOND,
    UPDATE_BURST), so a client refuses an edit that cannot be shared before making it."""

    max_frame_bytes: int = Field(ge=1)
    max_doc_bytes: int = Field(ge=1)
    max_updates_per_second: float = Field(gt=0)
    update_burst: int = Field(ge=1)


class Config(View):
    """What the browser needs before joining: room-socket base URLs (empty: same origin
    /ws/rooms), the gateways' limits, and how often a gateway sends each socket a
    heartbeat event (KEEPALIVE_SECONDS)."""

    gateway_urls: list[str]
    limits: Limits
    heartbeat_seconds: float


class Health(View):
    status: Literal["ok"] = "ok"


class ReadyChecks(View):
    mongodb: str
    redis: str


class Ready(View):
    status: Literal["ok", "unavailable"]
    checks: ReadyChecks
