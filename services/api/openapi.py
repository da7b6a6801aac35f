"""The api's OpenAPI 3.1 document, written by hand next to the routes it describes.

A test checks that every route of the app is described here and nothing else is.
Routes added by the web UI (HTML pages) are described generically by `build_openapi`.
"""

from __future__ import annotations

from typing import Any

from shared.documents import BLOCK_ID_PATTERN, LANGUAGES, SLUG_PATTERN, BlockPatch, BlockSpec

JSON = dict[str, Any]
_OBJECT_ID = {"type": "string", "pattern": BLOCK_ID_PATTERN}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _error(description: str) -> JSON:
    return _json(_ref("Error"), description)


_SUMMARY_PROPS: JSON = {
    "id": _OBJECT_ID,
    "slug": {"type": "string", "pattern": SLUG_PATTERN},
    "title": {"type": "string", "minLength": 1, "maxLength": 200},
    "language": {"type": "string", "enum": list(LANGUAGES)},
    "description": {"type": "string", "maxLength": 2000},
}
_SUMMARY_REQUIRED = list(_SUMMARY_PROPS)
_BLOCK_PROPS: JSON = {
    **_SUMMARY_PROPS,
    "template": {"type": "string", "maxLength": 65536},
    "createdAt": _NULLABLE_TIME,
    "updatedAt": _NULLABLE_TIME,
}

SCHEMAS: JSON = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    },
    "BlockSummary": {
        "type": "object",
        "required": _SUMMARY_REQUIRED,
        "additionalProperties": False,
        "properties": _SUMMARY_PROPS,
    },
    "Block": {
        "description": "A code block as a room shows it. Never carries the solution.",
        "type": "object",
        "required": [*_SUMMARY_REQUIRED, "template", "createdAt", "updatedAt"],
        "additionalProperties": False,
        "properties": _BLOCK_PROPS,
    },
    "AdminBlock": {
        "description": "A code block as an operator sees it (admin responses only).",
        "type": "object",
        "required": [
            *_SUMMARY_REQUIRED,
            "template",
            "solution",
            "createdAt",
            "updatedAt",
        ],
        "additionalProperties": False,
        "properties": {
            **_BLOCK_PROPS,
            "solution": {"type": "string", "maxLength": 65536},
        },
    },
    "BlockSpec": BlockSpec.model_json_schema(),
    "BlockPatch": BlockPatch.model_json_schema(),
    "RoomSession": {
        "type": "object",
        "required": [
            "id",
            "blockId",
            "sessionId",
            "startedAt",
            "endedAt",
            "finalCode",
            "solved",
            "peakStudents",
            "reason",
        ],
        "properties": {
            "id": _OBJECT_ID,
            "blockId": {"type": "string"},
            "sessionId": {"type": "string"},
            "startedAt": _NULLABLE_TIME,
            "endedAt": _NULLABLE_TIME,
            "finalCode": {"type": "string"},
            "solved": {"type": "boolean"},
            "peakStudents": {"type": "integer", "minimum": 0},
            "reason": {"type": "string"},
        },
    },
    "Rooms": {
        "type": "object",
        "required": ["rooms"],
        "properties": {
            "rooms": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["blockId", "mentor", "students", "watchers"],
                    "properties": {
                        "blockId": {"type": "string"},
                        "mentor": {"type": "boolean"},
                        "students": {"type": "integer", "minimum": 0},
                        "watchers": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    },
    "Config": {
        "type": "object",
        "required": ["gatewayUrls"],
        "properties": {"gatewayUrls": {"type": "array", "items": {"type": "string"}}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {
                "type": "object",
                "required": ["mongodb", "redis"],
                "properties": {
                    "mongodb": {"type": "string"},
                    "redis": {"type": "string"},
                },
            },
        },
    },
}

_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The block's ObjectId (24 hex digits); anything else is a 404.",
    "schema": {"type": "string"},
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
            "summary": "Room-socket base URLs the browser may use (empty: same origin).",
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
            "schemas": SCHEMAS,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
