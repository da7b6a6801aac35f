"""The api's OpenAPI 3.1 document: the operations are written here, next to the routes
they describe; every schema is generated from the pydantic models that build the
responses (`shared.views`, `services.api.schemas`) and validate the bodies
(`shared.documents`), so no field or limit is restated by hand.

A test checks that every route of the app is described here and nothing else is, and
that real responses match their schemas. Routes added by the web UI (HTML pages) are
described generically by `build_openapi`.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel

from services.api import schemas
from shared import views
from shared.documents import BLOCK_ID_PATTERN, BlockPatch, BlockSpec

JSON = dict[str, Any]
_REF = "#/components/schemas/{model}"

# Component name -> (model, whether the schema describes what we send or what we read).
COMPONENTS: dict[str, tuple[type[BaseModel], Literal["serialization", "validation"]]] = {
    "Error": (schemas.Error, "serialization"),
    "BlockSummary": (views.BlockSummary, "serialization"),
    "Block": (views.Block, "serialization"),
    "AdminBlock": (views.AdminBlock, "serialization"),
    "BlockSpec": (BlockSpec, "validation"),
    "BlockPatch": (BlockPatch, "validation"),
    "RoomSession": (views.RoomSessionView, "serialization"),
    "Rooms": (schemas.Rooms, "serialization"),
    "Config": (schemas.Config, "serialization"),
    "Health": (schemas.Health, "serialization"),
    "Ready": (schemas.Ready, "serialization"),
}


@cache
def component_schemas() -> JSON:
    """Every schema of the document; nested models get components of their own."""
    out: JSON = {}
    for name, (model, mode) in COMPONENTS.items():
        schema = model.model_json_schema(mode=mode, ref_template=_REF)
        for nested, definition in schema.pop("$defs", {}).items():
            assert out.get(nested, definition) == definition, f"two schemas named {nested}"
            out[nested] = definition
        out[name] = schema
    out["Replay"] = REPLAY_SCHEMA
    return out


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str) -> JSON:
    return _json(_ref("Error"), description)


# The replay is built by the replay builder (services/api/routes/replays.py), not by a
# view model: its schema is written here.
REPLAY_SCHEMA: JSON = {
    "description": "A session's record for replay (docs/replay.md). Step: [t (ms since "
    "the session opened), kind (o template, u edit, r re-seed, x jump to the final "
    "code: data is a base64 Yjs update; j join, l leave, s solved: data null; c chat, "
    "h hint: data is the text), author indexes, data].",
    "type": "object",
    "required": ["session", "authors", "steps", "bound"],
    "properties": {
        "session": _ref("RoomSession"),
        "authors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "role", "name"],
                "properties": {
                    "id": {"type": "string"},
                    "role": {"type": "string", "enum": ["mentor", "student", "watcher"]},
                    "name": {"type": "string"},
                },
            },
        },
        "clients": {
            "type": "object",
            "description": "Yjs client id -> author index: who typed each character.",
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
        "steps": {
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "enum": list("ourxjlsch")},
                    {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    {"type": ["string", "null"]},
                ],
                "minItems": 4,
                "maxItems": 4,
            },
        },
        "bound": {
            "type": "object",
            "description": "How the record was bounded: windowMs 0 = every step kept.",
        },
    },
}


_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The block's ObjectId (24 lower-case hex digits); anything else is a 404.",
    "schema": {"type": "string", "pattern": BLOCK_ID_PATTERN},
}
_UNAVAILABLE = _error("MongoDB or Redis is unreachable.")
_ADMIN: list[JSON] = [{"adminToken": []}]
_ADMIN_ERRORS = {
    "401": _error("No admin bearer token."),
    "403": _error("Wrong token, or admin writes are disabled (ADMIN_TOKEN empty)."),
}
_BODY_ERRORS = {
    "400": _error("Invalid JSON or invalid fields."),
    "413": _error("Body larger than MAX_BODY_BYTES."),
    "415": _error("Body is not application/json."),
}


def _body(schema: str) -> JSON:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


PATHS: JSON = {
    "/api/code-blocks": {
        "get": {
            "operationId": "listCodeBlocks",
            "summary": "The lobby: every block, sorted by title then id. No solutions.",
            "responses": {
                "200": _json({"type": "array", "items": _ref("BlockSummary")}, "Blocks."),
                "503": _UNAVAILABLE,
            },
        },
        "post": {
            "operationId": "createCodeBlock",
            "summary": "Admin: create a block.",
            "security": _ADMIN,
            "requestBody": _body("BlockSpec"),
            "responses": {
                "201": _json(_ref("AdminBlock"), "Created (includes the solution)."),
                **_ADMIN_ERRORS,
                **_BODY_ERRORS,
                "409": _error("Slug already used."),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/code-blocks/{id}": {
        "parameters": [_ID_PARAM],
        "get": {
            "operationId": "getCodeBlock",
            "summary": "One block with its template. Never the solution.",
            "responses": {
                "200": _json(_ref("Block"), "The block."),
                "404": _error("Unknown or malformed id."),
                "503": _UNAVAILABLE,
            },
        },
        "put": {
            "operationId": "replaceCodeBlock",
            "summary": "Admin: replace every writable field.",
            "security": _ADMIN,
            "requestBody": _body("BlockSpec"),
            "responses": {
                "200": _json(_ref("AdminBlock"), "Replaced."),
                **_ADMIN_ERRORS,
                **_BODY_ERRORS,
                "404": _error("Unknown or malformed id."),
                "409": _error("Slug already used."),
                "503": _UNAVAILABLE,
            },
        },
        "patch": {
            "operationId": "patchCodeBlock",
            "summary": "Admin: change the fields given.",
            "security": _ADMIN,
            "requestBody": _body("BlockPatch"),
            "responses": {
                "200": _json(_ref("AdminBlock"), "Updated."),
                **_ADMIN_ERRORS,
                **_BODY_ERRORS,
                "404": _error("Unknown or malformed id."),
                "409": _error("Slug already used."),
                "503": _UNAVAILABLE,
            },
        },
        "delete": {
            "operationId": "deleteCodeBlock",
            "summary": "Admin: delete a block.",
            "security": _ADMIN,
            "responses": {
                "204": {"description": "Deleted."},
                **_ADMIN_ERRORS,
                "404": _error("Unknown or malformed id."),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/code-blocks/{id}/admin": {
        "parameters": [_ID_PARAM],
        "get": {
            "operationId": "getCodeBlockAdmin",
            "summary": "Admin: one block with its solution (for editing).",
            "security": _ADMIN,
            "responses": {
                "200": _json(_ref("AdminBlock"), "The block, solution included."),
                **_ADMIN_ERRORS,
                "404": _error("Unknown or malformed id."),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/code-blocks/{id}/sessions": {
        "parameters": [_ID_PARAM],
        "get": {
            "operationId": "listRoomSessions",
            "summary": "Admin: archived room sessions of a block, newest first.",
            "security": _ADMIN,
            "responses": {
                "200": _json({"type": "array", "items": _ref("RoomSession")}, "Sessions."),
                **_ADMIN_ERRORS,
                "404": _error("Unknown or malformed id."),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/sessions/{sessionId}/replay": {
        "parameters": [
            {
                "name": "sessionId",
                "in": "path",
                "required": True,
                "description": "The archived session's id (from the sessions list).",
                "schema": {"type": "string"},
            }
        ],
        "get": {
            "operationId": "getSessionReplay",
            "summary": "Admin: the replay of an archived session.",
            "security": _ADMIN,
            "responses": {
                "200": _json(_ref("Replay"), "The replay."),
                **_ADMIN_ERRORS,
                "404": _error("Unknown session, or a session archived without a replay."),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/api/rooms": {
        "get": {
            "operationId": "listRooms",
            "summary": "Live status of open rooms, from Redis.",
            "responses": {
                "200": _json(_ref("Rooms"), "Open rooms."),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/config": {
        "get": {
            "operationId": "getConfig",
            "summary": "Room-socket base URLs (empty: same origin), limits, heartbeat interval.",
            "responses": {"200": _json(_ref("Config"), "Client configuration.")},
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document.")},
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Alive.",
            "responses": {"200": _json(_ref("Health"), "The process serves requests.")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "MongoDB and Redis reachable (each within a second).",
            "responses": {
                "200": _json(_ref("Ready"), "Ready."),
                "503": _json(_ref("Ready"), "A dependency is unreachable."),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus text exposition.",
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


def build_openapi(html_paths: list[str] | None = None) -> JSON:
    """The document; `html_paths` are extra GET pages (the web UI) to list."""
    paths = dict(PATHS)
    for path in html_paths or []:
        paths.setdefault(
            path,
            {
                "get": {
                    "operationId": "page"
                    + path.replace("/", "_").replace("{", "").replace("}", ""),
                    "summary": "Web UI page.",
                    "responses": {
                        "200": {
                            "description": "HTML.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "coderoom api",
            "version": "0.1.0",
            "description": "Code blocks for the lobby, live room status, health. Errors are "
            '{"error": {"code", "message"}}. Public responses never carry a solution; '
            "admin responses (Bearer ADMIN_TOKEN) do.",
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
