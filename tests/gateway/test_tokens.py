"""services/gateway/tokens.py: mentor resume tokens (signed, bound, expiring)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway import tokens

SECRET = b"k" * 32
BLOCK = "64b0c0ffee0000000000beef"
CLIENT = "client-1"
SESSION = "0123456789abcdef01234567"
EXPIRY = 1_700_000_000
NOW = EXPIRY - 60.0


def _token(**overrides: object) -> str:
    args: dict[str, object] = {
        "secret": SECRET,
        "block_id": BLOCK,
        "session": SESSION,
        "client_id": CLIENT,
        "expiry": EXPIRY,
    }
    args.update(overrides)
    return tokens.issue(**args)  # type: ignore[arg-type]


def _claim(token: str, **overrides: object) -> str | None:
    args: dict[str, object] = {"secret": SECRET, "block_id": BLOCK, "client_id": CLIENT, "now": NOW}
    args.update(overrides)
    return tokens.claimed_session(token=token, **args)  # type: ignore[arg-type]


def _replace_part(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def test_issue_then_claim_round_trip() -> None:
    assert _claim(_token()) == SESSION


def test_token_format() -> None:
    token = _token()
    version, session, expiry, signature = token.split(".")
    assert (version, session, expiry) == ("v1", SESSION, str(EXPIRY))
    # urlsafe base64 of a SHA-256 digest, unpadded: 43 characters, safe in a query string
    assert len(signature) == 43
    assert "=" not in signature
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32


def test_issue_is_deterministic_and_bound_to_every_field() -> None:
    assert _token() == _token()
    variants = {
        _token(),
        _token(secret=b"other"),
        _token(block_id="other"),
        _token(session="abcdef01"),
        _token(client_id="other"),
        _token(expiry=EXPIRY + 1),
    }
    assert len(variants) == 6


@pytest.mark.parametrize("session", ["abcdef01", "0" * 64, "deadbeef" * 3])
def test_any_valid_session_shape_round_trips(session: str) -> None:
    assert _claim(_token(session=session)) == session


def test_valid_until_the_second_of_expiry() -> None:
    assert _claim(_token(), now=float(EXPIRY)) == SESSION
    assert _claim(_token(), now=EXPIRY + 0.001) is None


def _flip(char: str) -> str:
    return "A" if char != "A" else "B"


@pytest.mark.parametrize(
    ("token", "overrides"),
    [
        pytest.param(_token(), {"block_id": "another-block"}, id="wrong-block"),
        pytest.param(_token(), {"client_id": "client-2"}, id="wrong-client"),
        pytest.param(_token(), {"now": EXPIRY + 1.0}, id="expired"),
        pytest.param(_token(expiry=0), {}, id="expired-long-ago"),
        pytest.param(_token(), {"secret": b"another secret"}, id="wrong-secret"),
        pytest.param(_token(secret=b""), {}, id="signed-with-empty-secret"),
        pytest.param(
            _replace_part(_token(), 3, _flip(_token()[-1]) + _token().split(".")[3][1:]),
            {},
            id="tampered-signature-first-char",
        ),
        pytest.param(
            _replace_part(_token(), 3, _token().split(".")[3][:-1] + _flip(_token()[-1])),
            {},
            id="tampered-signature-last-char",
        ),
        pytest.param(_replace_part(_token(), 3, ""), {}, id="no-signature"),
        pytest.param(
            _replace_part(_token(), 3, _token().split(".")[3] + "="), {}, id="padded-signature"
        ),
        pytest.param(_replace_part(_token(), 1, "abcdef0123456789"), {}, id="tampered-session"),
        pytest.param(_replace_part(_token(), 2, str(EXPIRY + 3600)), {}, id="tampered-expiry"),
        pytest.param(_replace_part(_token(), 0, "v2"), {}, id="wrong-version"),
        pytest.param(_replace_part(_token(), 1, SESSION.upper()), {}, id="session-upper-case"),
        pytest.param(_replace_part(_token(), 1, "abcdef0"), {}, id="session-too-short"),
        pytest.param(_replace_part(_token(), 1, "a" * 65), {}, id="session-too-long"),
        pytest.param(_replace_part(_token(), 1, "abcdefgh"), {}, id="session-not-hex"),
        pytest.param(_replace_part(_token(), 2, "-1"), {}, id="expiry-negative"),
        pytest.param(_replace_part(_token(), 2, "1e12"), {}, id="expiry-exponent"),
        pytest.param(_replace_part(_token(), 2, " 1700000000"), {}, id="expiry-space"),
        pytest.param(_replace_part(_token(), 2, "9" * 13), {}, id="expiry-13-digits"),
        pytest.param(_replace_part(_token(), 2, ""), {}, id="expiry-empty"),
        pytest.param(_token() + ".extra", {}, id="five-parts"),
        pytest.param(".".join(_token().split(".")[:3]), {}, id="three-parts"),
        pytest.param("", {}, id="empty"),
        pytest.param("v1", {}, id="version-only"),
        pytest.param("v1...", {}, id="dots"),
        pytest.param("not a token", {}, id="words"),
        pytest.param("\x00" * 10, {}, id="nuls"),
        pytest.param("v1.Zoë🎉.1.x", {}, id="non-ascii-session"),
    ],
)
def test_claimed_session_refuses(token: str, overrides: dict[str, object]) -> None:
    assert _claim(token, **overrides) is None


@given(st.text())
@example("")
@example("v1.abcdef01.99999999999.")
@example("v1.abcdef01.99999999999.Zoë🎉")
def test_arbitrary_strings_never_raise(token: str) -> None:
    assert _claim(token) is None


_printable_ascii = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=".")
)


@given(
    st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    _printable_ascii,
)
def test_well_shaped_tokens_with_a_forged_signature_never_verify(
    session: str, expiry: str, signature: str
) -> None:
    assert _claim(f"v1.{session}.{expiry}.{signature}", now=0.0) is None


@pytest.mark.parametrize("expiry", ["²", "①", "12³"])
def test_unicode_digit_expiry_returns_none(expiry: str) -> None:
    assert _claim(f"v1.abcdef01.{expiry}.x") is None


def test_surrogate_in_signature_returns_none() -> None:
    assert _claim(_replace_part(_token(), 3, "\ud800")) is None


@given(
    st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True),
    st.text(alphabet=st.characters(exclude_characters=".", exclude_categories=["Cs"])),
    st.text(alphabet=st.characters(exclude_characters=".", exclude_categories=["Cs"])),
)
@example("abcdef01", "²", "x")
def test_well_shaped_unicode_tokens_never_raise(session: str, expiry: str, signature: str) -> None:
    assert _claim(f"v1.{session}.{expiry}.{signature}", now=0.0) is None
