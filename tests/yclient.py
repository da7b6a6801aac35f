"""A small Yjs room client for tests: pycrdt document + the ``websockets`` client.

Speaks the room socket as any y-websocket client does (sync step 1/2, updates,
awareness) and records coderoom's control events and the close code. Used by the
gateway, fleet and hardening tests; wait on conditions with ``wait_for``; ``join`` and
``close_all`` open and close several at once. ``text_doc`` and ``text_update`` build the
Yjs documents and updates tests send by hand (the ``code`` Text, as the rooms use).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared import protocol
from shared.protocol import MessageType, SyncType
from shared.ywire import encode_awareness_update, read_var_uint
from tests.infra import await_until, scaled


class RoomClient:
    def __init__(
        self,
        base_url: str,
        block_id: str,
        *,
        role: str | None = None,
        client_id: str | None = None,
        token: str | None = None,
        origin: str | None = None,
        name: str = "",
        fallbacks: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # With fallbacks, a close with a "reconnect" code (or a dropped connection)
        # reconnects to the next base URL in turn, keeping the document, as a browser would.
        self.fallbacks = [u.rstrip("/") for u in fallbacks] if fallbacks else []
        self.reconnects: list[float] = []  # seconds each reconnect took
        self.close_codes: list[int | None] = []
        self._stopping = False
        self._reconnecting = False
        self._dropped = asyncio.Event()
        self.block_id = block_id
        self.role_param = role
        self.client_id = client_id
        self.token = token
        self.origin = origin
        self.headers = dict(headers or {})  # extra handshake headers
        self.name = name
        self.doc: Doc[Text] = Doc()
        self.text = self.doc.get("code", type=Text)
        self.ws: ClientConnection | None = None
        self.events: list[dict[str, Any]] = []
        self.denied: list[str] = []
        self.awareness: dict[int, str] = {}
        self.close_code: int | None = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription = self.doc.observe(self._on_update)
        self._applying = False

    # --- connection ---------------------------------------------------------------
    @property
    def url(self) -> str:
        query = []
        if self.role_param:
            query.append(f"role={self.role_param}")
        if self.client_id:
            query.append(f"client={self.client_id}")
        if self.token:
            query.append(f"token={self.token}")
        return f"{self.base_url}/{self.block_id}" + ("?" + "&".join(query) if query else "")

    async def connect(self, *, wait_synced: bool = True, timeout: float = 10.0) -> RoomClient:
        self.synced.clear()
        self.closed.clear()
        self._dropped.clear()
        self.close_code = None
        headers = {**self.headers, **({"Origin": self.origin} if self.origin else {})}
        self.ws = await connect(
            self.url,
            additional_headers=headers or None,
            max_size=None,
            open_timeout=scaled(timeout),
            compression=None,
        )
        self._task = asyncio.create_task(self._reader(self.ws))
        try:
            await self.ws.send(protocol.sync_step1(self.doc.get_state()))
        except ConnectionClosed:
            pass  # refused at once (e.g. 4404): the reader records the close code
        if wait_synced:
            await self.wait_for(
                lambda: self.synced.is_set() or self.closed.is_set() or self._dropped.is_set(),
                timeout,
            )
        return self

    @property
    def connected(self) -> bool:
        return self.synced.is_set() and not self._dropped.is_set() and not self.closed.is_set()

    async def close(self) -> None:
        self._stopping = True
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                assert isinstance(frame, bytes)
                await self._on_frame(ws, frame)
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self.close_codes.append(ws.close_code)
            if (
                self.fallbacks
                and not self._stopping
                and protocol.should_reconnect(ws.close_code or 1006)
            ):
                self._dropped.set()
                if not self._reconnecting:
                    self._reconnecting = True
                    self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())
            else:
                self.closed.set()

    async def _reconnect(self) -> None:
        try:
            await self._reconnect_loop()
        finally:
            self._reconnecting = False

    async def _reconnect_loop(self) -> None:
        started = time.monotonic()
        urls = [u for u in self.fallbacks if u != self.base_url] + [self.base_url]
        attempt = 0
        while not self._stopping:
            self.base_url = urls[attempt % len(urls)]
            attempt += 1
            try:
                await self.connect(timeout=5.0)
                if self.synced.is_set():
                    self.reconnects.append(time.monotonic() - started)
                    return
            except (OSError, TimeoutError, ConnectionClosed, Exception):
                pass
            await asyncio.sleep(min(0.05 * attempt, 0.5))

    async def _on_frame(self, ws: ClientConnection, frame: bytes) -> None:
        kind, pos = read_var_uint(frame, 0)
        if kind == MessageType.CONTROL:
            event = protocol.decode_control(frame)
            self.events.append(event)
            if event["type"] == "welcome":
                self.client_id = event["clientId"]
                if event.get("resumeToken"):
                    self.token = event["resumeToken"]
            return
        message = protocol.decode_message(frame)
        if message.type == MessageType.SYNC:
            if message.sync_type == SyncType.STEP1:
                await ws.send(protocol.sync_step2(self.doc.get_update(message.payload)))
            else:
                self._applying = True
                try:
                    self.doc.apply_update(message.payload)
                finally:
                    self._applying = False
                if message.sync_type == SyncType.STEP2:
                    self.synced.set()
        elif message.type == MessageType.AUTH:
            from shared.ywire import read_var_string

            self.denied.append(read_var_string(message.payload, 1)[0])
        elif message.type == MessageType.AWARENESS:
            from shared.ywire import parse_awareness_update

            for client, _clock, state in parse_awareness_update(message.payload):
                if state == "null":
                    self.awareness.pop(client, None)
                else:
                    self.awareness[client] = state

    def _on_update(self, event: Any) -> None:
        if self._applying or self.ws is None:
            return
        update = event.update
        if update == b"\x00\x00":
            return
        self._pending_send = asyncio.ensure_future(self._send_update(update))

    async def _send_update(self, update: bytes) -> None:
        if self.ws is not None:
            try:
                await self.ws.send(protocol.sync_update(update))
            except ConnectionClosed:
                pass

    # --- actions -------------------------------------------------------------------
    def insert(self, index: int, content: str) -> None:
        self.text.insert(index, content)

    def type_at_end(self, content: str) -> None:
        self.text.insert(len(self.text), content)

    def set_text(self, content: str) -> None:
        with self.doc.transaction():
            del self.text[:]
            self.text.insert(0, content)

    async def send_raw(self, frame: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send(frame)

    async def set_awareness(self, state: str, clock: int = 1) -> None:
        update = encode_awareness_update([(self.doc.client_id, clock, state)])
        await self.send_raw(protocol.awareness_message(update))

    # --- observations --------------------------------------------------------------
    @property
    def value(self) -> str:
        return str(self.text)

    @property
    def role(self) -> str | None:
        """The role of the latest ``welcome`` (a reconnect brings a new one)."""
        welcome = self.last("welcome")
        return None if welcome is None else str(welcome["role"])

    def last(self, kind: str) -> dict[str, Any] | None:
        for event in reversed(self.events):
            if event["type"] == kind:
                return dict(event)
        return None

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e["type"] == kind)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await wait_for(predicate, timeout)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after ``scaled(timeout)`` seconds."""
    await await_until(predicate, timeout, interval=0.01)


async def join(url: str, block_id: str, **options: Any) -> RoomClient:
    """A `RoomClient` (``options`` as its constructor's), connected and synced."""
    return await RoomClient(url, block_id, **options).connect()


async def close_all(*clients: RoomClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))


def text_doc(text: str = "", client_id: int | None = None) -> Doc[Text]:
    """A document whose ``code`` Text holds `text`, written by Yjs client `client_id`."""
    doc: Doc[Text] = Doc() if client_id is None else Doc(client_id=client_id)
    if text:
        doc.get("code", type=Text).insert(0, text)
    return doc


def text_update(
    text: str, client_id: int | None = None, *, base: bytes | None = None, at: int = 0
) -> bytes:
    """A Yjs update inserting `text` at `at` into ``code``: standalone, or, on top of the
    document `base` (an update), only the change."""
    doc = text_doc(client_id=client_id)
    if base is None:
        doc.get("code", type=Text).insert(at, text)
        return doc.get_update()
    doc.apply_update(base)
    before = doc.get_state()
    doc.get("code", type=Text).insert(at, text)
    return doc.get_update(before)
