"""Documents: validation of a block, the JSON views, and the unique indexes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from shared.db import admin_block, block_summary, connect_mongo, public_block
from shared.documents import LANGUAGES, BlockPatch, BlockSpec, CodeBlock, RoomSession, utcnow


def spec(**overrides: Any) -> dict[str, Any]:
    return {"title": "T", "slug": "t", "language": "python", **overrides}


@pytest.mark.parametrize(
    "overrides",
    [
        {"slug": ""},
        {"slug": "A"},
        {"slug": "a_b"},
        {"slug": "-a"},
        {"slug": "a" * 65},
        {"title": ""},
        {"title": "x" * 201},
        {"language": "JavaScript"},
        {"description": "x" * 2001},
        {"solution": "x" * 65537},
        {"unknown": 1},
    ],
)
def test_invalid_specs(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BlockSpec.model_validate(spec(**overrides))


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language(language: str) -> None:
    assert BlockSpec.model_validate(spec(language=language)).language == language


def test_patch_is_partial() -> None:
    patch = BlockPatch.model_validate({"title": "New"})
    assert patch.model_dump(exclude_unset=True) == {"title": "New"}
    with pytest.raises(ValidationError):
        BlockPatch.model_validate({"slug": "Bad Slug"})


def test_utcnow_is_aware_and_millisecond() -> None:
    now = utcnow()
    assert now.utcoffset() is not None
    assert now.microsecond % 1000 == 0


@given(
    title=st.text(min_size=1, max_size=200),
    template=st.text(max_size=300),
    solution=st.text(min_size=1, max_size=300),
)
def test_views_never_carry_the_solution(title: str, template: str, solution: str) -> None:
    doc = CodeBlock.model_construct(
        id=None,
        title=title,
        slug="s",
        language="python",
        description="",
        template=template,
        solution=solution,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    assert "solution" not in public_block(doc)
    assert "solution" not in block_summary(doc)
    assert set(public_block(doc).values()) >= {template}
    assert admin_block(doc)["solution"] == solution


async def test_unique_indexes(settings_factory: Any) -> None:
    client = await connect_mongo(settings_factory())
    try:
        await CodeBlock(title="A", slug="same", language="c").insert()
        with pytest.raises(DuplicateKeyError):
            await CodeBlock(title="B", slug="same", language="c").insert()
        await RoomSession(block_id="b", session_id="s1").insert()
        with pytest.raises(DuplicateKeyError):
            await RoomSession(block_id="b", session_id="s1").insert()
        stored = await CodeBlock.find_one({"slug": "same"})
        assert stored is not None
        assert stored.created_at.utcoffset() is not None  # tz-aware round trip
    finally:
        await client.close()
