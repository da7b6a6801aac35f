"""`coderoom seed`: validated, idempotent by slug; the seed solutions really solve."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra import SEED_FILE, EmbeddedMongo, child_env, scaled, seed_blocks, tool_missing


def run_cli(*args: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


@pytest.fixture
def mongo_env(mongo: EmbeddedMongo, mongo_db: str) -> dict[str, Any]:
    return {"MONGODB_URL": mongo.url, "MONGODB_DB": mongo_db}


@pytest.mark.slow
def test_seed_is_idempotent(mongo_env: dict[str, Any], tmp_path: Path) -> None:
    n = len(seed_blocks())
    first = run_cli("seed", str(SEED_FILE), env=mongo_env)
    assert first.returncode == 0, first.stderr
    assert f"{n} created, 0 updated, 0 unchanged" in first.stdout
    second = run_cli("seed", str(SEED_FILE), env=mongo_env)
    assert second.returncode == 0, second.stderr
    assert f"0 created, 0 updated, {n} unchanged" in second.stdout

    changed = seed_blocks()
    changed[0]["title"] = "Changed title"
    as_json = tmp_path / "blocks.json"
    as_json.write_text(json.dumps(changed))
    third = run_cli("seed", str(as_json), env=mongo_env)
    assert third.returncode == 0, third.stderr
    assert f"0 created, 1 updated, {n - 1} unchanged" in third.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{}", "must hold a non-empty list"),
        ("[]", "must hold a non-empty list"),
        ("- 3\n", "block #0 is not a mapping"),
        ("- {title: t, slug: BAD, language: javascript}\n", "block #0 is invalid: slug"),
        ("- {title: t, slug: ok, language: cobol}\n", "block #0 is invalid: language"),
        ("- {slug: ok, language: c}\n", "block #0 is invalid: title"),
        (
            "- {title: t, slug: ok, language: c}\n- {title: u, slug: ok, language: c}\n",
            "slug 'ok' appears twice",
        ),
        ("- [unclosed\n", "not valid YAML/JSON"),
    ],
)
def test_seed_rejects_bad_files(tmp_path: Path, content: str, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    # an unreachable MongoDB: validation happens before any connection
    result = run_cli("seed", str(bad), env={"MONGODB_URL": "mongodb://127.0.0.1:1/"})
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_missing_file() -> None:
    result = run_cli("seed", "/no/such/file.yaml")
    assert result.returncode == 2
    assert "cannot read /no/such/file.yaml" in result.stderr


def test_seed_unreachable_mongo() -> None:
    from tests.infra import free_port

    result = run_cli(
        "seed",
        str(SEED_FILE),
        env={"MONGODB_URL": f"mongodb://127.0.0.1:{free_port()}/", "MONGODB_TIMEOUT_MS": 300},
    )
    assert result.returncode == 2
    assert "cannot reach MongoDB" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_names_the_field() -> None:
    result = run_cli("api", env={"PORT": "not-a-port"})
    assert result.returncode == 2
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_file_has_enough_javascript() -> None:
    blocks = seed_blocks()
    assert len([b for b in blocks if b["language"] == "javascript"]) >= 4
    for block in blocks:
        assert block["template"] != block["solution"]
        assert "TODO" in block["template"]


EXPECTED_OUTPUT = {
    "async-await": "user-1, user-2\n",
    "closures": "2 1\n",
    "promises": "42\nfailed: SyntaxError\n",
    "array-methods": "39\n",
    "fizzbuzz-python": "1 2 Fizz 4 Buzz Fizz 7 8 Fizz Buzz 11 Fizz 13 14 FizzBuzz\n",
}


@pytest.mark.parametrize("block", seed_blocks(), ids=lambda b: b["slug"])
def test_seed_solutions_solve(block: dict[str, Any]) -> None:
    if block["language"] == "javascript":
        node = shutil.which("node")
        if node is None:
            tool_missing("node is not installed")
        argv = [node, "-e"]
    elif block["language"] == "python":
        argv = [sys.executable, "-c"]
    else:
        pytest.fail(f"no runner for {block['language']}")
    solved = subprocess.run(
        [*argv, block["solution"]], capture_output=True, text=True, timeout=30, check=False
    )
    assert solved.returncode == 0, solved.stderr
    assert solved.stdout == EXPECTED_OUTPUT[block["slug"]]
    unsolved = subprocess.run(
        [*argv, block["template"]], capture_output=True, text=True, timeout=30, check=False
    )
    assert unsolved.stdout != EXPECTED_OUTPUT[block["slug"]]
