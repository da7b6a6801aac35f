"""Prometheus metrics of a gateway process (its own registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("coderoom_gateway_connections", "Open room sockets.", registry=r)
        self.rooms = Gauge("coderoom_gateway_rooms", "Rooms served by this gateway.", registry=r)
        self.joins = Counter("coderoom_gateway_joins_total", "Joins by role.", ["role"], registry=r)
        self.closes = Counter(
            "coderoom_gateway_closes_total",
            "Sockets closed by the server, by code.",
            ["code"],
            registry=r,
        )
        self.messages_in = Counter(
            "coderoom_gateway_messages_in_total", "Frames received from clients.", registry=r
        )
        self.messages_out = Counter(
            "coderoom_gateway_messages_out_total", "Frames sent to clients.", registry=r
        )
        self.redis_messages = Counter(
            "coderoom_gateway_redis_messages_total",
            "Pub/sub messages received from Redis, by kind.",
            ["kind"],
            registry=r,
        )
        self.publishes = Counter(
            "coderoom_gateway_publishes_total",
            "Update batches appended to room logs.",
            registry=r,
        )
        self.catchups = Counter(
            "coderoom_gateway_catchups_total", "Reads of a room log to fill a gap.", registry=r
        )
        self.resyncs = Counter(
            "coderoom_gateway_resyncs_total",
            "Rooms re-registered after a Redis reconnect.",
            registry=r,
        )
        self.reaped = Counter(
            "coderoom_gateway_reaped_gateways_total",
            "Dead gateways reaped by this one.",
            registry=r,
        )
        self.rooms_closed = Counter(
            "coderoom_gateway_rooms_closed_total", "Rooms closed by this gateway.", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
