"""GET /api/rooms reads the room hashes the gateways keep in Redis."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from shared.keys import Keys


async def test_no_rooms(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/api/rooms")
    assert response.status_code == 200
    assert response.json() == {"rooms": []}


async def test_rooms_from_redis(
    api_client: httpx.AsyncClient, redis_client: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    await redis_client.sadd(keys.rooms, "b2", "b1", "b3", "gone")
    await redis_client.hset(
        keys.room("b1").state,
        mapping={"session": "s1", "n_mentor": "1", "n_student": "3", "n_watcher": "2"},
    )
    await redis_client.hset(keys.room("b2").state, mapping={"session": "s2", "n_student": "1"})
    await redis_client.hset(
        keys.room("b3").state, mapping={"session": "s3", "n_mentor": "x", "n_student": "-4"}
    )
    await redis_client.hset(keys.room("gone").state, mapping={"n_student": "5"})  # no session
    # another deployment's prefix is invisible
    await redis_client.sadd(Keys(redis_prefix + "x").rooms, "b9")

    response = await api_client.get("/api/rooms")
    assert response.status_code == 200
    assert response.json() == {
        "rooms": [
            {"blockId": "b1", "mentor": True, "students": 3, "watchers": 2},
            {"blockId": "b2", "mentor": False, "students": 1, "watchers": 0},
            {"blockId": "b3", "mentor": False, "students": 0, "watchers": 0},
        ]
    }


async def test_redis_down_is_503(api_client_factory: object) -> None:
    from tests.infra import free_port

    make = api_client_factory
    client = await make(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # type: ignore[operator]
    response = await client.get("/api/rooms")
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "unavailable",
        "message": "Redis is unavailable, try again later",
    }
    assert response.headers["retry-after"] == "1"
