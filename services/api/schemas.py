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


class Config(View):
    """Room-socket base URLs the browser may use (empty: same origin /ws/rooms)."""

    gateway_urls: list[str]


class Health(View):
    status: Literal["ok"] = "ok"


class ReadyChecks(View):
    mongodb: str
    redis: str


class Ready(View):
    status: Literal["ok", "unavailable"]
    checks: ReadyChecks
