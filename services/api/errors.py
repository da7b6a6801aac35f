"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

Dependency failures (MongoDB, Redis, timeouts) become 503; anything unexpected becomes
a bare 500. No handler ever echoes a stack trace or a stored document.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.api.schemas import Error, ErrorDetail, ErrorInfo

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answered to the client as is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})
        self.details = details


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = Error(
        error=ErrorInfo(
            code=code or _CODES.get(status, "error"),
            message=message,
            details=None if details is None else [ErrorDetail(**d) for d in details],
        )
    )
    return JSONResponse(body.body(), status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status, exc.message, code=exc.code, headers=exc.headers, details=exc.details
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such resource", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(exc.status_code, message, headers=exc.headers)


async def _unavailable(request: Request, exc: Exception) -> Response:
    if isinstance(exc, PyMongoError):
        what = "MongoDB"
    elif isinstance(exc, RedisError):
        what = "Redis"
    else:
        what = "a dependency"
    log.warning("%s unavailable on %s: %s", what, request.url.path, type(exc).__name__)
    return error_response(
        503, f"{what} is unavailable, try again later", headers={"Retry-After": "1"}
    )


async def _internal(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal error")


HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    PyMongoError: _unavailable,
    RedisError: _unavailable,
    TimeoutError: _unavailable,
    500: _internal,
}
