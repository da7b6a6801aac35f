"""Prometheus metrics of a gateway process (its own registry, served at /metrics).

The per-message counters are plain integers read at scrape time: a prometheus_client
Counter takes a lock on every increment, and these move with every keystroke.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.gateway.archive_drainer import DrainStats

# Seconds the event loop was held up (loop lag, garbage-collection pauses).
PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class GatewayMetrics(Collector):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = 0  # frames received from clients
        self.messages_out = 0  # frames sent to clients
        self.publishes = 0  # update batches appended to room logs
        self.redis_messages: defaultdict[bytes, int] = defaultdict(int)  # by channel kind
        self.archive = DrainStats()  # kept by the archive drainer
        self.block_mongo_reads = 0  # blocks read from MongoDB (misses of memory and Redis)
        r.register(self)
        self.connections = Gauge("coderoom_gateway_connections", "Open room sockets.", registry=r)
        self.rooms = Gauge("coderoom_gateway_rooms", "Rooms served by this gateway.", registry=r)
        self.joins = Counter("coderoom_gateway_joins_total", "Joins by role.", ["role"], registry=r)
        self.closes = Counter(
            "coderoom_gateway_closes_total",
            "Sockets closed by the server, by code.",
            ["code"],
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
        self.loop_lag = Histogram(
            "coderoom_gateway_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled 10 times a second).",
            buckets=PAUSE_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "coderoom_gateway_gc_pause_seconds",
            "How long each cyclic garbage collection stopped the gateway, by generation.",
            ["generation"],
            buckets=PAUSE_BUCKETS,
            registry=r,
        )
        self.gc_frozen = Gauge(
            "coderoom_gateway_gc_frozen_objects",
            "Objects made before serving, frozen out of the garbage collector's scans.",
            registry=r,
        )
        self.rooms_closed = Counter(
            "coderoom_gateway_rooms_closed_total", "Rooms closed by this gateway.", registry=r
        )

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "coderoom_gateway_messages_in", "Frames received from clients.", self.messages_in
        )
        yield CounterMetricFamily(
            "coderoom_gateway_messages_out", "Frames sent to clients.", self.messages_out
        )
        yield CounterMetricFamily(
            "coderoom_gateway_publishes", "Update batches appended to room logs.", self.publishes
        )
        family = CounterMetricFamily(
            "coderoom_gateway_redis_messages",
            "Pub/sub messages received from Redis, by kind (U update, A awareness, "
            "P presence, S solved, N no longer solved, C closed, Q awareness query, "
            "R run, M chat). Only rooms this gateway "
            "serves are subscribed.",
            labels=["kind"],
        )
        for kind, count in sorted(self.redis_messages.items()):
            family.add_metric([kind.decode(errors="replace")], count)
        yield family
        yield CounterMetricFamily(
            "coderoom_gateway_block_mongo_reads",
            "Code blocks read from MongoDB (not found in memory nor in Redis).",
            self.block_mongo_reads,
        )
        a = self.archive
        yield GaugeMetricFamily(
            "coderoom_gateway_archive_queue_depth",
            "Closed sessions waiting in the archive queue (fleet-wide, as last seen).",
            a.depth,
        )
        yield CounterMetricFamily(
            "coderoom_gateway_archived_sessions",
            "Sessions this gateway's drainer saw archived (new or already there).",
            a.archived,
        )
        yield CounterMetricFamily(
            "coderoom_gateway_archive_failures",
            "Archive batches that failed (MongoDB or Redis) and were retried.",
            a.failures,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
