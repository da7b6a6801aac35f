"""One frozen, validated settings object per process, read from the environment.

Every field is an environment variable of the same name in upper case (``REDIS_URL``,
``MENTOR_GRACE_SECONDS`` ...). A bad value fails at start, naming the field.
The Kubernetes ConfigMap/Secret keys are exactly these names (tests check it).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from functools import cached_property
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
# CLIENT_SEND_BUFFER_BYTES was called OUTBOX_MAX_BYTES (unrelated to the gateway's Redis
# outbox, hence the new name); the old name is read when the new one is not set.
DEPRECATED_SEND_BUFFER = "outbox_max_bytes"
log = logging.getLogger(__name__)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Configuration shared by the api and the gateway (each reads what it needs)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, env_file=None
    )

    # --- where things are ---------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the service listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the service listens on.")
    mongodb_url: str = Field(
        "mongodb://127.0.0.1:27017/?directConnection=true",
        description="MongoDB connection URL (a real MongoDB or the embedded wire server).",
    )
    mongodb_db: str = Field("coderoom", min_length=1, description="MongoDB database name.")
    mongodb_timeout_ms: int = Field(
        2000, ge=100, le=60000, description="Server selection/connect/socket timeout."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis connection URL.")
    redis_timeout_ms: int = Field(
        2000, ge=100, le=60000, description="Connect/socket timeout of Redis calls."
    )
    redis_prefix: str = Field(
        "coderoom", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Prefix of every Redis key."
    )
    redis_cluster: bool = Field(
        False,
        description="REDIS_URL is a seed node of a Redis Cluster (or Valkey cluster) "
        "rather than one Redis (docs/cluster.md).",
    )
    redis_cluster_nodes: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="More cluster seeds, host:port,... (same scheme and credentials as "
        "REDIS_URL); only with REDIS_CLUSTER=true.",
    )

    # --- api ------------------------------------------------------------------------
    admin_token: SecretStr = Field(
        SecretStr(""), description="Bearer token for admin writes; empty disables them."
    )
    gateway_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated room-socket base URLs the browser may use "
        "(e.g. ws://127.0.0.1:8001/ws/rooms); empty means same origin /ws/rooms.",
    )
    max_body_bytes: int = Field(65536, ge=1024, description="Largest accepted request body.")
    block_list_fresh_seconds: float = Field(
        30.0,
        ge=0,
        description="The api serves its cached block list and blocks this long "
        "(unless an admin write bumps the generation first).",
    )
    block_list_stale_seconds: float = Field(
        3600.0,
        ge=0,
        description="Oldest cached copy the api serves (X-Cache: stale) while MongoDB is "
        "slow or down; 0 = never serve stale.",
    )
    block_list_wait_ms: int = Field(
        300,
        ge=0,
        le=60000,
        description="How long a request waits for a reload before a stale copy is served.",
    )

    # --- gateway --------------------------------------------------------------------
    gateway_id: str = Field(
        "", pattern=r"^[A-Za-z0-9_.-]{0,48}$", description="Unique id; empty = generated."
    )
    token_secret: SecretStr = Field(
        SecretStr(""), description="HMAC key for mentor resume tokens (same on every gateway)."
    )
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        ("http://127.0.0.1:8000", "http://localhost:8000"),
        description="Browser Origins allowed on the room socket ('*' allows any). "
        "Clients that send no Origin (non-browsers) are allowed.",
    )
    mentor_grace_seconds: float = Field(
        5.0, gt=0, le=300, description="How long a room waits for its mentor to come back."
    )
    resume_token_ttl_seconds: int = Field(
        43200, ge=10, description="Lifetime of a mentor resume token."
    )
    heartbeat_interval_seconds: float = Field(
        1.0, gt=0, le=30, description="How often a gateway heartbeats and does housekeeping."
    )
    gateway_dead_after_seconds: float = Field(
        4.0,
        gt=0,
        le=300,
        description="Heartbeat age after which a gateway is reaped (its members removed).",
    )
    keepalive_seconds: float = Field(
        3.0,
        gt=0,
        le=600,
        description="Heartbeat and ping interval per socket (clients expect a frame this often).",
    )
    keepalive_timeout_seconds: float = Field(
        2.0, gt=0, le=600, description="A socket that does not answer a ping this soon is closed."
    )
    block_cache_seconds: float = Field(
        30.0,
        ge=0,
        description="How long a gateway keeps a block in memory, and its copy in Redis lives.",
    )
    archive_queue_max: int = Field(
        100000,
        ge=10,
        description="Closed sessions the archive queue holds at most; beyond, a record "
        "is refused and logged in full (the stream is never trimmed).",
    )
    archive_batch: int = Field(
        100, ge=1, le=5000, description="Sessions written to MongoDB per archive batch."
    )
    archive_replicas: int = Field(
        -1,
        ge=-1,
        le=16,
        description="Replicas that must hold a closed session's queue entry (WAIT) before "
        "its closing gateway forgets the record; -1: every replica Redis reports connected, "
        "0: never wait.",
    )
    archive_claim_idle_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Pending archive entries idle this long are claimed by another "
        "drainer (their reader is presumed dead).",
    )
    max_frame_bytes: int = Field(262144, ge=1024, description="Largest websocket frame.")
    max_doc_bytes: int = Field(1048576, ge=4096, description="Largest room document.")
    max_updates_per_second: float = Field(50.0, gt=0, description="Per-connection rate.")
    update_burst: int = Field(200, ge=1, description="Per-connection burst allowance.")
    client_send_buffer_bytes: int = Field(
        1048576,
        ge=4096,
        validation_alias=AliasChoices("client_send_buffer_bytes", DEPRECATED_SEND_BUFFER),
        description="Unsent bytes in a client socket's send buffer after which the slow "
        "client is closed (4000). The old name OUTBOX_MAX_BYTES is still read (deprecated).",
    )
    max_room_members: int = Field(500, ge=1, description="Students + watchers per room.")
    max_connections_per_ip: int = Field(
        0, ge=0, description="Concurrent sockets per client address; 0 = unlimited."
    )
    trust_proxy_headers: bool = Field(
        False, description="Take the client address from X-Forwarded-For (behind an ingress)."
    )
    history_max_bytes: int = Field(
        4194304,
        ge=0,
        description="Update bytes a room's replay history keeps in Redis; beyond, edits stop "
        "being recorded (events still are) and the replay jumps to the final code.",
    )
    replay_max_bytes: int = Field(
        262144,
        ge=4096,
        description="Largest stored replay of a session (compressed); a longer history is "
        "coarsened (docs/replay.md).",
    )
    log_compact_entries: int = Field(
        200, ge=10, description="Update-log entries after which a room is compacted."
    )
    shutdown_drain_seconds: float = Field(
        5.0, ge=0, le=120, description="Time to flush and close sockets on SIGTERM."
    )

    loop_stall_profile: str = Field(
        "",
        description="Gateway: file to write a profile of event-loop stalls to at shutdown "
        "(a sampling thread; for benchmarks). Empty = off.",
    )

    log_level: LogLevel = Field("INFO", description="Logging level.")

    @field_validator("gateway_urls", "allowed_origins", "redis_cluster_nodes", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _host_ports(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for node in value:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"REDIS_CLUSTER_NODES: {node!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _redis_mode(self) -> Settings:
        if self.redis_cluster_nodes and not self.redis_cluster:
            raise ValueError("REDIS_CLUSTER_NODES is set but REDIS_CLUSTER is not true")
        if self.redis_cluster:
            url = self.redis_url
            if url.startswith("unix:"):
                raise ValueError(
                    "REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL, not unix://"
                )
            if not url.startswith(("redis://", "rediss://")):
                raise ValueError("REDIS_URL must start with redis:// or rediss://")
            db = urlsplit(url).path.strip("/")
            if db not in ("", "0"):
                raise ValueError(
                    f"REDIS_CLUSTER: a cluster has only db 0 (REDIS_URL names db {db})"
                )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @cached_property
    def effective_gateway_id(self) -> str:
        if self.gateway_id:
            return self.gateway_id
        host = socket.gethostname().split(".")[0][:24] or "gw"
        return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def load_settings(**overrides: object) -> Settings:
    """Build the process's settings from the environment (plus explicit overrides)."""
    if any(name.lower() == DEPRECATED_SEND_BUFFER for name in os.environ):
        log.warning("OUTBOX_MAX_BYTES is deprecated: set CLIENT_SEND_BUFFER_BYTES instead")
    return Settings(**overrides)  # type: ignore[arg-type]
