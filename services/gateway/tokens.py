"""Mentor resume tokens: signed, bound to room, session and client, expiring.

Format: ``v1.<session>.<expiry unix seconds>.<urlsafe base64 HMAC-SHA256>``; the signed
message is ``v1|block|session|client|expiry``. The gateway issues one in ``welcome`` to
the mentor. On a later join, a token that verifies for this block and client names the
session it claims; the join script grants the mentor role only if that session is still
the room's session and this client is still its mentor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_SESSION = re.compile(r"^[0-9a-f]{8,64}$")
_EXPIRY = re.compile(r"^[1-9][0-9]{0,11}$")


def _sign(secret: bytes, block_id: str, session: str, client_id: str, expiry: int) -> str:
    message = f"v1|{block_id}|{session}|{client_id}|{expiry}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(secret: bytes, block_id: str, session: str, client_id: str, expiry: int) -> str:
    return f"v1.{session}.{expiry}.{_sign(secret, block_id, session, client_id, expiry)}"


def claimed_session(
    secret: bytes, token: str, block_id: str, client_id: str, now: float
) -> str | None:
    """The session an unexpired token issued for this block and client claims, else None."""
    if not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != "v1" or not _SESSION.match(parts[1]):
        return None
    if not _EXPIRY.match(parts[2]):
        return None
    session, expiry = parts[1], int(parts[2])
    if expiry < now:
        return None
    expected = _sign(secret, block_id, session, client_id, expiry)
    if not hmac.compare_digest(expected.encode(), parts[3].encode()):
        return None
    return session
