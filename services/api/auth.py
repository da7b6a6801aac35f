"""Admin authentication: ``Authorization: Bearer <ADMIN_TOKEN>``, nothing else."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from services.api.errors import ApiError
from shared.settings import Settings

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="coderoom-admin"'}


def require_admin(request: Request, settings: Settings) -> None:
    """Raise 403 when admin writes are disabled or the token is wrong, 401 when absent.

    A token in the query string is never looked at: URLs end up in logs and histories.
    """
    expected = settings.admin_token.get_secret_value()
    if not expected:
        raise ApiError(403, "admin writes are disabled", code="admin_disabled")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "an admin bearer token is required (Authorization header)",
            headers=_CHALLENGE,
        )
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(403, "wrong admin token")
