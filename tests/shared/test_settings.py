"""Settings: bad values fail naming the field; the README documents every variable.

`uv run python -m tests.shared.test_settings --write` regenerates the README table.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared.settings import Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(value: object) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, tuple):
        value = ",".join(value)
    text = str(value)
    return f"`{text}`" if text else "(empty)"


def settings_table() -> str:
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name.upper()}` | {_default(field.default)} | {meaning} |")
    return "\n".join(lines)


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match, f"README.md lacks the {BEGIN} ... {END} section"
    return match.group(1)


def test_readme_lists_every_setting() -> None:
    assert readme_table() == settings_table(), (
        "README settings table is stale: uv run python -m tests.shared.test_settings --write"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", "70000"),
        ("port", "http"),
        ("mongodb_timeout_ms", "5"),
        ("redis_prefix", "has space"),
        ("max_body_bytes", "10"),
        ("log_level", "LOUD"),
        ("mentor_grace_seconds", "0"),
        ("gateway_id", "x" * 49),
    ],
)
def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(field.upper(), value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert field in str(info.value)


def test_env_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_URLS", " ws://a/ws/rooms, ws://b/ws/rooms ,")
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("log_level", "debug")
    settings = load_settings()
    assert settings.gateway_urls == ("ws://a/ws/rooms", "ws://b/ws/rooms")
    assert settings.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.log_level == "DEBUG"


def test_frozen() -> None:
    settings = load_settings(port=1234)
    with pytest.raises(ValidationError):
        settings.port = 1


if __name__ == "__main__" and "--write" in sys.argv:
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}", encoding="utf-8")


def test_client_send_buffer_reads_the_deprecated_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """CLIENT_SEND_BUFFER_BYTES was OUTBOX_MAX_BYTES: the old name still works, with a
    warning, and the new one wins when both are set."""
    monkeypatch.setenv("OUTBOX_MAX_BYTES", "65536")
    with caplog.at_level("WARNING", logger="shared.settings"):
        assert load_settings().client_send_buffer_bytes == 65536
    assert "OUTBOX_MAX_BYTES is deprecated" in caplog.text
    monkeypatch.setenv("CLIENT_SEND_BUFFER_BYTES", "8192")
    assert load_settings().client_send_buffer_bytes == 8192
    monkeypatch.delenv("OUTBOX_MAX_BYTES")
    caplog.clear()
    assert load_settings().client_send_buffer_bytes == 8192
    assert "deprecated" not in caplog.text
