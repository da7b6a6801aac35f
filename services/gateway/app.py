"""The gateway's composition root: settings, clients, the gateway's parts, the server.

Built on websockets' own asyncio server (not ASGI): the room socket is the hot path and
the plain server skips a layer per frame (docs/architecture.md). Plain HTTP requests for
``/healthz``, ``/readyz`` and ``/metrics`` are answered during the handshake hook.
"""

from __future__ import annotations

import asyncio
import http
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import cast

import orjson
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from services.gateway.admission import ROOM_PATH, Admission, AdmissionPolicy
from services.gateway.archive import Archiver
from services.gateway.archive_drainer import Drainer
from services.gateway.archive_queue import ArchiveQueue
from services.gateway.background import Background
from services.gateway.blocks import BlockSource
from services.gateway.catchup import CatchUp
from services.gateway.chat import ChatRelay
from services.gateway.closing import RoomCloser
from services.gateway.compaction import Compactor
from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.follower import ChannelFollower
from services.gateway.frames import FramePath
from services.gateway.history import AuthorTags
from services.gateway.housekeeping import Housekeeper
from services.gateway.keepalive import Keepalive
from services.gateway.loader import RoomLoader
from services.gateway.looplag import LoopLagMonitor, freeze_startup_heap
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.registry import RoomRegistry
from services.gateway.relay import Relay, Subscriptions
from services.gateway.resp import Endpoint
from services.gateway.resync import Resync
from services.gateway.room import Limits
from services.gateway.runs import RunRelay
from services.gateway.shards import ShardRouter
from services.gateway.solved import SolvedChecks
from services.gateway.store import RoomStore
from shared.db import MongoGate, mongo_client, op_timeout
from shared.documents import RoomSession
from shared.keys import Keys
from shared.redisconn import hot_path, redis_client
from shared.settings import Settings, load_settings

log = logging.getLogger("coderoom.gateway")
REDIS_POOL_SIZE = 64


def _json(status: http.HTTPStatus, body: dict[str, object]) -> Response:
    data = orjson.dumps(body)
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)


def _error(status: http.HTTPStatus, code: str, message: str) -> Response:
    return _json(status, {"error": {"code": code, "message": message}})


class Gateway:
    def __init__(self, settings: Settings) -> None:
        if not settings.token_secret.get_secret_value():
            raise ValueError("TOKEN_SECRET must be set (the same on every gateway)")
        self.settings = settings
        self.metrics = GatewayMetrics()
        # A burst of joins must wait for a connection, not fail: a blocking pool.
        self.redis = redis_client(
            settings,
            wait=5,
            max_connections=REDIS_POOL_SIZE,
            socket_timeout=settings.redis_timeout_ms / 1000,
            socket_connect_timeout=settings.redis_timeout_ms / 1000,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            health_check_interval=10,
        )
        self.mongo = mongo_client(settings, appname="coderoom-gateway")
        self.gate = MongoGate(self.mongo, settings)
        self.id = gateway_id = settings.effective_gateway_id
        keys = Keys(settings.redis_prefix)
        endpoint = Endpoint.from_url(settings.redis_url)
        # The hot path's connections, per primary (known nodes are map-reload seeds too).
        hot = hot_path(settings, known=lambda: [*router.known_nodes(), *relay.known_nodes()])
        router = ShardRouter(endpoint, hot, settings.redis_timeout_ms / 1000)
        timeout = settings.redis_timeout_ms / 1000
        metrics = self.metrics
        self.background = background = Background()
        store = RoomStore(self.redis, keys)
        archive_queue = ArchiveQueue(
            self.redis, keys, settings.archive_queue_max, settings.redis_url
        )
        write_timeout = op_timeout(settings) * 4  # a batch is many documents
        self.drainer = Drainer(
            archive_queue,
            gateway_id,
            self._sessions,
            batch=settings.archive_batch,
            claim_idle_seconds=settings.archive_claim_idle_seconds,
            write_timeout=write_timeout,
            block_ms=min(1000, settings.redis_timeout_ms // 2),
            stats=self.metrics.archive,
        )
        self.archiver = Archiver(
            archive_queue,
            self._sessions,
            write_timeout,
            settings.replay_max_bytes,
            replicas=settings.archive_replicas,
            wait_ms=min(1000, settings.redis_timeout_ms // 2),
        )
        runs = RunRelay(self.redis, keys, background.spawn)
        chat = ChatRelay(self.redis, keys, background.spawn)
        subscriptions = Subscriptions()
        delivery = Delivery(settings.client_send_buffer_bytes, metrics, background)
        registry = RoomRegistry(keys, subscriptions, delivery, metrics)
        solved = SolvedChecks(store, background)
        catch_up = CatchUp(store, registry, delivery, solved, metrics)
        compactor = Compactor(
            registry, store, catch_up, settings.log_compact_entries, metrics, background
        )
        # Everything a room writes on the hot path goes through one pipelined connection
        # per Redis primary.
        self.outbox = outbox = Outbox(
            router,
            store,
            gateway_id,
            compactor.on_published,
            compactor.on_publish_lost,
            settings.history_max_bytes,
        )
        closer = RoomCloser(
            self.redis, keys, store, self.archiver, chat, metrics, settings.mentor_grace_seconds
        )
        follower = ChannelFollower(
            gateway_id, keys, registry, delivery, outbox, catch_up, solved, metrics, background
        )
        resync = Resync(
            gateway_id,
            self.redis,
            keys,
            store,
            registry,
            delivery,
            outbox,
            catch_up,
            solved,
            closer,
            metrics,
            background,
        )
        # The pub/sub connection is the relay's own (it reconnects and resyncs itself, so
        # no message loss is ever hidden by a silent reconnect).
        self.relay = relay = Relay(
            endpoint,
            hot,
            keys.relay_hello,
            subscriptions,
            follower.on_message,
            lambda lost, suspect: resync.resync_rooms(
                {b for c in lost if (b := keys.room_from_channel(c)) is not None},
                frozenset(b for c in suspect if (b := keys.room_from_channel(c)) is not None),
            ),
            connect_timeout=timeout,
        )
        limits = Limits(
            max_doc_bytes=settings.max_doc_bytes,
            max_frame_bytes=settings.max_frame_bytes,
            updates_per_second=settings.max_updates_per_second,
            burst=settings.update_burst,
        )
        self.admission = Admission(
            gateway_id,
            AdmissionPolicy.from_settings(settings),
            store,
            BlockSource(self.gate, self.redis, keys, settings, self.metrics, gateway_id),
            RoomLoader(registry, store, limits, follower.on_loaded),
            registry,
            FramePath(gateway_id, keys, delivery, outbox, runs, chat, AuthorTags(), metrics),
            delivery,
            outbox,
            closer,
            runs,
            chat,
            metrics,
        )
        self.keepalive = Keepalive(
            settings.keepalive_seconds, settings.keepalive_timeout_seconds, registry, delivery
        )
        self.housekeeper = Housekeeper(
            gateway_id,
            self.redis,
            keys,
            store,
            resync,
            closer,
            metrics,
            interval=settings.heartbeat_interval_seconds,
            dead_after=settings.gateway_dead_after_seconds,
        )
        gc_pause = [self.metrics.gc_pause.labels(str(g)).observe for g in range(3)]
        self.loop_lag = LoopLagMonitor(
            self.metrics.loop_lag.observe,
            settings.loop_stall_profile,
            gc_observe=lambda generation, seconds: gc_pause[min(generation, 2)](seconds),
        )
        origins = settings.allowed_origins
        self._any_origin = "*" in origins
        self._origins = frozenset(origins)

    async def _sessions(self) -> object:
        await self.gate.ensure()  # Beanie ready: the unique index on session_id exists
        return RoomSession.get_pymongo_collection()

    # --- plain HTTP and the handshake ------------------------------------------------------
    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return _json(http.HTTPStatus.OK, {"status": "ok", "gateway": self.id})
        if path == "/readyz":
            problems = []
            if self.admission.shutting_down:
                problems.append("shutting down")
            if not self.relay.healthy:
                problems.append("redis pub/sub disconnected")
            if not self.housekeeper.redis_ok:
                problems.append("redis unavailable")
            archive = self.metrics.archive.details()
            if problems:
                return _json(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    {"status": "unready", "problems": problems, "archive": archive},
                )
            return _json(http.HTTPStatus.OK, {"status": "ready", "archive": archive})
        if path == "/metrics":
            body = self.metrics.render()
            headers = Headers(
                [("Content-Type", "text/plain; version=0.0.4"), ("Content-Length", str(len(body)))]
            )
            return Response(200, "OK", headers, body)
        if not path.startswith(ROOM_PATH) or "/" in path[len(ROOM_PATH) :]:
            return _error(http.HTTPStatus.NOT_FOUND, "not_found", "no such path")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _error(
                http.HTTPStatus.UPGRADE_REQUIRED, "upgrade_required", "this is a websocket endpoint"
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self._any_origin and origin not in self._origins:
            self.metrics.closes.labels("403").inc()
            return _error(http.HTTPStatus.FORBIDDEN, "origin_forbidden", "origin not allowed")
        return None

    # --- life cycle -------------------------------------------------------------------------
    async def start(self) -> Server:
        self.loop_lag.start()
        self.relay.start()
        self.housekeeper.start()
        self._keepalive = asyncio.create_task(self.keepalive.run(), name="keepalive")
        self.gate.start()
        self.drainer.start()
        s = self.settings
        # Every connection is a RoomConnection (create_connection below).
        handler = cast(Callable[[ServerConnection], Awaitable[None]], self.admission.handle)
        return await serve(
            handler,
            s.host,
            s.port,
            process_request=self.process_request,
            compression=None,
            max_size=s.max_frame_bytes,
            max_queue=64,
            ping_interval=None,  # Keepalive pings every socket from one task
            close_timeout=2,
            server_header=None,
            create_connection=RoomConnection,
        )

    async def shutdown(self, server: Server) -> None:
        server.close(close_connections=False)  # stop accepting; keep the open sockets
        try:
            async with asyncio.timeout(self.settings.shutdown_drain_seconds):
                await self.admission.drain()
                await server.wait_closed()
        except TimeoutError:
            log.warning("drain did not finish in %.1fs", self.settings.shutdown_drain_seconds)
        await self.archiver.wait(2.0)
        await self.drainer.stop()
        self._keepalive.cancel()
        await self.housekeeper.stop()
        await self.outbox.stop()
        await self.relay.stop()
        await self.redis.aclose()
        await self.gate.aclose()
        await self.background.cancel()
        await self.mongo.close()
        self.loop_lag.stop()


async def run(settings: Settings) -> None:
    gateway = Gateway(settings)
    server = await gateway.start()
    gateway.metrics.gc_frozen.set(freeze_startup_heap())
    log.info("gateway %s listening on %s:%d", gateway.id, settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway %s shutting down", gateway.id)
    await gateway.shutdown(server)
    log.info("gateway %s stopped", gateway.id)


def main(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # websockets logs every handshake and close at INFO: one line per probe and socket.
    logging.getLogger("websockets").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(run(settings))
        else:
            uvloop.run(run(settings))
    except ValueError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
