"""Reading a bounded JSON request body into a validated model."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from services.api.errors import ApiError


async def read_json(request: Request, limit: int) -> Any:
    """The decoded JSON body; 415 if not JSON, 413 past `limit` bytes, 400 if malformed."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "the request body must be application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "invalid Content-Length")
        if int(declared) > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body exceeds {limit} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None


def validate[M: BaseModel](model: type[M], data: Any) -> M:
    """`data` as `model`, or a 400 naming each bad field (never echoing its value)."""
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_input")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "(body)",
                "message": err["msg"],
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(
            400, f"invalid input: {summary}", code="invalid_input", details=details
        ) from None
