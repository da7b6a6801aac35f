"""Shared test infrastructure: real processes on free ports, stopped and killed by PID.

Everything here is synchronous and usable from sync or async tests and fixtures.

Time
    Every timeout is multiplied by ``CODEROOM_TIME_FACTOR`` (default 1; set 3 on a slow
    machine): use `scaled(seconds)`, `wait_until(...)`, `await_until(...)`. Never sleep
    a fixed time to wait for something; poll with a deadline.

Processes (each a `ManagedProcess`: ``.pid``, ``.alive``, ``.stop(sig, timeout)``,
``.kill()``, ``.log_path``, ``.log_text()``; each runs in its own process group)
    `RedisServer(tmp_dir)` a real ``redis-server`` without persistence; ``.url``,
        ``.port``, ``.restart()`` (same port), ``.client()``.
    `EmbeddedRedis(tmp_dir)` ``coderoom redis`` (fakeredis over TCP, what ``make run``
        uses without a redis-server); ``.url``, ``.port``.
    `EmbeddedMongo(tmp_dir)` ``coderoom mongo`` (mongoeco wire server over SQLite);
        ``.url``, ``.restart()``, ``.new_db_name()``. When the env var ``MONGODB_URL`` is
        set, no process is started and that server is used instead (``.external``);
        database names are then unique per session/test, so runs never collide.
    `ServiceProcess(kind, env, log_dir)` ``python -m services.cli api|gateway`` on a
        free port; ``.start(ready="/healthz"|"/readyz"|None)``, ``.url`` (http),
        ``.ws_url``, ``.get(path)``. Its environment holds none of the developer's
        coderoom variables: only what the test passes (`child_env`).
    `Fleet(tmp_dir, gateways=2)` redis + mongo (own, or shared ones passed in) + api +
        N gateways; ``.api``, ``.gateways``, ``.env``, ``.keys`` (its Redis keys, from
        `shared.keys`), ``.new_block(**fields)``, ``.stop()``.

Every process started here is also registered, and `kill_all()` (called at session end
and at interpreter exit) kills whatever a failing test left behind.

Data
    `make_block(**fields)` a valid block body; `create_block(api_url, admin_token,
    **fields)` POSTs one and returns it with its ``id``; `seed_blocks()`.
    `parse_metrics(text)` / `scrape(base_url)`: Prometheus text (or a service's
    ``/metrics``) as ``{'name{label="v"}': value}``, by prometheus_client's parser.

Tools
    `tool_missing(why)` for a test that needs a tool (Node, Chromium, nginx): a skip on a
    developer's machine, a failure under CI (the env var ``CI`` set), where ``.ci/run``
    installs every tool. `CHROMIUM_NAMES` are the names ``.ci/run`` accepts too.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Self

import httpx
import pytest
import yaml

from services import ports
from shared.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
SEED_FILE = ROOT / "seeds" / "blocks.yaml"
TIME_FACTOR = float(os.environ.get("CODEROOM_TIME_FACTOR") or "1")
LOCALHOST = "127.0.0.1"


# --- time -------------------------------------------------------------------------------


def scaled(seconds: float) -> float:
    """`seconds` times ``CODEROOM_TIME_FACTOR``."""
    return seconds * TIME_FACTOR


def wait_until[T](
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy (returned); raise TimeoutError
    after `scaled(timeout)` seconds. Exceptions raised by the predicate count as falsy."""
    deadline = time.monotonic() + scaled(timeout)
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {scaled(timeout):.1f}s") from last
        time.sleep(interval)


async def await_until[T](
    predicate: Callable[[], Awaitable[T]] | Callable[[], T],
    within: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """`wait_until` for async tests: `predicate` may be sync or async; `within` seconds."""
    deadline = time.monotonic() + scaled(within)
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {scaled(within):.1f}s") from last
        await asyncio.sleep(interval)


# --- tools --------------------------------------------------------------------------------

# The browser's names, in the order .ci/run looks for them.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "/usr/bin/chromium")


def in_ci() -> bool:
    """True when the env var ``CI`` is set (to anything but "", "0" or "false")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def tool_missing(why: str) -> NoReturn:
    """Skip a test whose tool is missing; under CI, fail it (.ci/run installs the tools)."""
    if in_ci():
        pytest.fail(f"{why} (CI is set: .ci/run should have installed it)", pytrace=False)
    pytest.skip(why)


def find_chromium() -> str | None:
    """``$CHROMIUM``, else the first of `CHROMIUM_NAMES` on PATH (or as a path)."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# --- names and ports ----------------------------------------------------------------------


def worker_id() -> str:
    """The pytest-xdist worker ("gw0", ...) or "main"."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def unique_name(prefix: str = "t") -> str:
    """A short name unique across workers and runs: ``<prefix><worker><random>``.

    Fits a Redis prefix (≤32 chars of [A-Za-z0-9_.-]) and a MongoDB database name."""
    return f"{prefix}{worker_id()}_{uuid.uuid4().hex[:12]}"


_handed_out: set[int] = set()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nothing listens on now (and not handed out before by this process)."""
    for _ in range(100):
        port = ports.free_port(host)
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def port_listening(port: int, host: str = LOCALHOST) -> bool:
    """True if something accepts TCP connections on host:port."""
    return ports.listening(port, host)


def pid_alive(pid: int) -> bool:
    """True if a process (not a zombie) with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def coderoom_env_names() -> set[str]:
    """Environment variable names read by `shared.settings.Settings`."""
    from shared.settings import Settings

    return {name.upper() for name in Settings.model_fields}


def child_env(overrides: Mapping[str, object] | None = None) -> dict[str, str]:
    """os.environ without any coderoom setting, plus `overrides` (values str()-ed)."""
    drop = coderoom_env_names()
    env = {k: v for k, v in os.environ.items() if k.upper() not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (overrides or {}).items():
        env[key] = str(value)
    return env


# --- processes ----------------------------------------------------------------------------

_live: dict[int, ManagedProcess] = {}


def kill_all() -> None:
    """SIGKILL every process started through this module that is still running."""
    for proc in list(_live.values()):
        proc.kill()


atexit.register(kill_all)


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped by PID."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live[self.popen.pid] = self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _failed(self, why: str) -> RuntimeError:
        tail = "\n".join(self.log_text().splitlines()[-40:])
        self.kill()
        return RuntimeError(f"{self.name}: {why}\n--- {self.log_path} (tail) ---\n{tail}")

    def send_signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig`, wait up to `scaled(timeout)`, then SIGKILL; the exit status."""
        if self.popen is None:
            return None
        self.send_signal(sig)
        try:
            self.popen.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
        _live.pop(self.popen.pid, None)
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.popen is None:
            return
        self.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        _live.pop(self.popen.pid, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ManagedProcess):
    """A real ``redis-server`` on a free loopback port, no persistence, files in tmp_dir."""

    name = "redis"

    def __init__(self, tmp_dir: Path, port: int | None = None) -> None:
        super().__init__(tmp_dir / "redis.log")
        self.tmp_dir = tmp_dir
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        from services.embedded import redis_server_argv

        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self._spawn(redis_server_argv(executable, self.port, self.tmp_dir / "redis-data"))
        try:
            wait_until(self.ping, timeout, message=f"redis on port {self.port}")
        except TimeoutError:
            raise self._failed("did not answer PING") from None
        return self

    def ping(self) -> bool:
        if not self.alive:
            raise self._failed(f"exited with status {self.returncode}")
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self) -> Self:
        """Stop (SIGTERM) and start again on the same port; the data are gone."""
        self.stop()
        wait_until(lambda: not port_listening(self.port), 5, message="redis port released")
        return self.start()

    def client(self) -> Any:
        """A synchronous redis client (decode_responses=True); close it when done."""
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)


class EmbeddedRedis(ManagedProcess):
    """``coderoom redis``: the fakeredis stand-in over TCP, on a free loopback port."""

    name = "fakeredis"

    def __init__(self, tmp_dir: Path, port: int | None = None) -> None:
        super().__init__(tmp_dir / "fakeredis.log")
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> Self:
        argv = [sys.executable, "-m", "services.cli", "redis", "--port", str(self.port)]
        self._spawn(argv, child_env())

        def up() -> bool:
            if not self.alive:
                raise self._failed(f"exited with status {self.returncode}")
            return port_listening(self.port)

        try:
            wait_until(up, timeout, message=f"fakeredis on port {self.port}")
        except TimeoutError:
            raise self._failed("did not listen") from None
        return self


class EmbeddedMongo(ManagedProcess):
    """``coderoom mongo`` on a free port with data in tmp_dir, or ``$MONGODB_URL``."""

    name = "mongo"

    def __init__(self, tmp_dir: Path, port: int | None = None) -> None:
        super().__init__(tmp_dir / "mongo.log")
        self.tmp_dir = tmp_dir
        self.external_url = os.environ.get("MONGODB_URL") or None
        self.port = port or free_port()
        self.db_name = unique_name("coderoom_test_")

    @property
    def external(self) -> bool:
        return self.external_url is not None

    @property
    def url(self) -> str:
        if self.external_url:
            return self.external_url
        return f"mongodb://{LOCALHOST}:{self.port}/?directConnection=true"

    def new_db_name(self) -> str:
        """A database name no other test uses."""
        return unique_name("cr_")

    def start(self, timeout: float = 20.0) -> Self:
        if not self.external:
            argv = [sys.executable, "-m", "services.cli", "mongo"]
            argv += ["--data", str(self.tmp_dir / "mongo-data"), "--port", str(self.port)]
            self._spawn(argv, child_env())
        try:
            wait_until(self.ping, timeout, message=f"mongo at {self.url}")
        except TimeoutError:
            raise self._failed("did not answer ping") from None
        return self

    def ping(self) -> bool:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        if not self.external and not self.alive:
            raise self._failed(f"exited with status {self.returncode}")
        client: MongoClient[dict[str, Any]] = MongoClient(
            self.url, serverSelectionTimeoutMS=300, connectTimeoutMS=300, timeoutMS=1000
        )
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def drop_database(self, name: str) -> None:
        """Best effort: drop a test database."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient[dict[str, Any]] = MongoClient(self.url, timeoutMS=2000)
        try:
            client.drop_database(name)
        except PyMongoError:
            pass
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        return None if self.external else super().stop(sig, timeout)

    def kill(self) -> None:
        if not self.external:
            super().kill()

    def restart(self) -> Self:
        """Stop and start again on the same port; the data survive."""
        if self.external:
            return self
        self.stop()
        wait_until(lambda: not port_listening(self.port), 5, message="mongo port released")
        return self.start()


class ServiceProcess(ManagedProcess):
    """``python -m services.cli <kind>`` (api or gateway) on a free port."""

    def __init__(
        self,
        kind: str,
        env: Mapping[str, object],
        log_dir: Path,
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name or kind
        self.port = port or free_port()
        super().__init__(log_dir / f"{self.name}-{self.port}.log")
        self.env = child_env({**env, "HOST": LOCALHOST, "PORT": self.port})

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}"

    def spawn(self) -> Self:
        """Start the process without waiting (see `wait_ready`)."""
        self._spawn([sys.executable, "-m", "services.cli", self.kind], self.env)
        return self

    def start(self, ready: str | None = "/healthz", timeout: float = 30.0) -> Self:
        """Spawn, then wait until GET `ready` answers 200 (None: until the port listens)."""
        return self.spawn().wait_ready(ready, timeout)

    def wait_ready(self, ready: str | None = "/healthz", timeout: float = 30.0) -> Self:
        def up() -> bool:
            if not self.alive:
                raise self._failed(f"exited with status {self.returncode}")
            if ready is None:
                return port_listening(self.port)
            try:
                return self.get(ready, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(up, timeout, interval=0.05, message=f"{self.name} {ready or 'port'}")
        except TimeoutError:
            raise self._failed(f"not ready ({ready}) in {scaled(timeout):.0f}s") from None
        return self

    def get(self, path: str, timeout: float = 5.0, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=scaled(timeout), **kwargs)

    def request(self, method: str, path: str, timeout: float = 5.0, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=scaled(timeout), **kw)


class Fleet:
    """redis + mongo + api + N gateways as processes, torn down by PID.

    Pass `redis`/`mongo` to share running servers (they are then left running at
    stop); otherwise the fleet starts and stops its own. `env` overrides settings for
    every service; the fleet sets the connection URLs, a unique REDIS_PREFIX and
    MONGODB_DB, TOKEN_SECRET, ADMIN_TOKEN (`Fleet.ADMIN_TOKEN`), GATEWAY_URLS and
    ALLOWED_ORIGINS=*.
    """

    ADMIN_TOKEN = "fleet-admin-token"

    def __init__(
        self,
        tmp_dir: Path,
        *,
        gateways: int = 2,
        api: bool = True,
        env: Mapping[str, object] | None = None,
        redis: RedisServer | None = None,
        mongo: EmbeddedMongo | None = None,
        ready: str | None = "/healthz",
    ) -> None:
        self.tmp_dir = tmp_dir
        self.owns_redis = redis is None
        self.owns_mongo = mongo is None
        self.redis = redis or RedisServer(tmp_dir / "redis")
        self.mongo = mongo or EmbeddedMongo(tmp_dir / "mongo")
        self.ready = ready
        gateway_ports = [free_port() for _ in range(gateways)]
        self.env: dict[str, str] = {
            "MONGODB_URL": self.mongo.url,
            "MONGODB_DB": self.mongo.new_db_name(),
            "REDIS_URL": self.redis.url,
            "REDIS_PREFIX": unique_name("f"),
            "TOKEN_SECRET": uuid.uuid4().hex,
            "ADMIN_TOKEN": self.ADMIN_TOKEN,
            "GATEWAY_URLS": ",".join(f"ws://{LOCALHOST}:{p}/ws/rooms" for p in gateway_ports),
            "ALLOWED_ORIGINS": "*",
        }
        self.env.update(getattr(self.redis, "extra_env", {}))  # a cluster: REDIS_CLUSTER...
        self.env.update({k: str(v) for k, v in (env or {}).items()})
        logs = tmp_dir / "logs"
        self.gateways = [
            ServiceProcess("gateway", self.env, logs, port=p, name=f"gw-{i}")
            for i, p in enumerate(gateway_ports, start=1)
        ]
        self.api = ServiceProcess("api", self.env, logs) if api else None

    @property
    def services(self) -> list[ServiceProcess]:
        return [*self.gateways, *([self.api] if self.api else [])]

    def start(self) -> Self:
        try:
            if self.owns_redis:
                self.redis.start()
            if self.owns_mongo:
                self.mongo.start()
            for service in self.services:
                service.spawn()
            for service in self.services:  # started together, waited for one by one
                service.wait_ready(self.ready)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for service in self.gateways:
            service.stop(timeout=timeout)
        if self.api:
            self.api.stop(timeout=timeout)
        if self.owns_redis:
            self.redis.stop()
        if self.owns_mongo:
            self.mongo.stop()

    @property
    def keys(self) -> Keys:
        """The fleet's Redis keys (its REDIS_PREFIX), from `shared.keys`."""
        return Keys(self.env["REDIS_PREFIX"])

    def new_block(self, **fields: Any) -> dict[str, Any]:
        """Create a block (`make_block(**fields)`) through the api; the body with its id."""
        assert self.api is not None, "this fleet has no api"
        return create_block(self.api.url, self.env["ADMIN_TOKEN"], **fields)

    def pids(self) -> list[int]:
        procs: Iterable[ManagedProcess] = [*self.services, self.redis, self.mongo]
        return [p.pid for p in procs if p.popen is not None]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- data ---------------------------------------------------------------------------------


def seed_blocks() -> list[dict[str, Any]]:
    """The blocks of seeds/blocks.yaml (with their solutions)."""
    data = yaml.safe_load(SEED_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def make_block(**overrides: Any) -> dict[str, Any]:
    """A valid block body for POST /api/code-blocks, with a unique slug."""
    block: dict[str, Any] = {
        "title": "Sample block",
        "slug": "sample-" + uuid.uuid4().hex[:12],
        "language": "javascript",
        "description": "A block made by a test.",
        "template": "const answer = 0;\n",
        "solution": "const answer = 42; // SOLUTION-" + uuid.uuid4().hex + "\n",
    }
    block.update(overrides)
    return block


def create_block(api_url: str, admin_token: str, **fields: Any) -> dict[str, Any]:
    """POST `make_block(**fields)` to the api at `api_url`; the body with its ``id``."""
    body = make_block(**fields)
    response = httpx.post(
        api_url + "/api/code-blocks",
        json=body,
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=scaled(10),
    )
    assert response.status_code == 201, response.text
    return {**body, "id": response.json()["id"]}


# --- metrics ------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{label="v",...}': value}`` (labels sorted by name, as
    prometheus_client writes them; no braces without labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def scrape(base_url: str) -> dict[str, float]:
    """GET ``base_url/metrics`` and `parse_metrics` it."""
    response = httpx.get(base_url + "/metrics", timeout=scaled(5))
    response.raise_for_status()
    return parse_metrics(response.text)
