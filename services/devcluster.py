"""A throwaway local Redis Cluster: 3 primaries + 3 replicas of ``redis-server``.

What ``coderoom run --redis-cluster`` starts (and the tests' cluster fixture): six
``redis-server --cluster-enabled yes`` processes on free loopback ports, no persistence,
then ``redis-cli --cluster create ... --cluster-replicas 1`` joins them and spreads the
16384 slots over the three primaries. Pure argv builders plus a readiness check; the
callers spawn and supervise the processes.

With a ``Tls`` (one self-signed certificate, ``make_cert``) every node speaks TLS only:
no plaintext port (``--port 0 --tls-port P``), the cluster bus and replication in TLS
too; clients are asked for a certificate only with ``Tls.auth_clients`` (then they
present the same one). The URL is ``rediss://...?ssl_ca_certs=`` (``&ssl_certfile=``,
``&ssl_keyfile=``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from services.embedded import redis_server_argv
from services.ports import port_free

NODES = 6  # 3 primaries, each with one replica
NODE_TIMEOUT_MS = 2000  # how long a primary may be silent before its replica takes over


@dataclass(frozen=True, slots=True)
class Tls:
    """The certificate every node presents (and the one CA clients trust)."""

    cert_file: Path
    key_file: Path
    ca_file: Path  # a self-signed certificate is its own CA
    # Nodes ask clients for a certificate (``tls-auth-clients yes``); clients then present
    # this same one (it is signed by the CA the nodes trust: itself).
    auth_clients: bool = False


def cert_argv(directory: Path) -> list[str]:
    """``openssl``: a self-signed certificate for 127.0.0.1 (and localhost), one day."""
    return [
        *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")),
        *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
    ]


def make_cert(directory: Path, auth_clients: bool = False) -> Tls:
    """Run ``cert_argv`` (raises CalledProcessError)."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(cert_argv(directory), check=True, capture_output=True)
    cert = directory / "cert.pem"
    return Tls(
        cert_file=cert, key_file=directory / "key.pem", ca_file=cert, auth_clients=auth_clients
    )


def client_cert_options(tls: Tls | None) -> dict[str, str]:
    """redis-py's options for the certificate a client presents (none unless asked)."""
    if tls is None or not tls.auth_clients:
        return {}
    return {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}


def tools_missing(tls: bool = False) -> str | None:
    """Why a local cluster (with TLS: and its certificate) cannot start here, or None."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (apt-get install redis-server redis-tools)"
    if tls and shutil.which("openssl") is None:
        return "openssl is not on PATH (apt-get install openssl)"
    return None


BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def node_ports(count: int = NODES, first: int = 30000) -> list[int]:
    """``count`` ports that are free, and whose cluster bus ports are free too (the bus
    port must stay below 65536, so a kernel-picked ephemeral port will not do)."""
    ports: list[int] = []
    port = first
    while len(ports) < count:
        if port + BUS_OFFSET > 65535:
            raise OSError("no free ports for a local redis cluster")
        if port_free(port) and port_free(port + BUS_OFFSET):
            ports.append(port)
        port += 1
    return ports


def node_argv(
    port: int,
    data_dir: Path,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
    password: str = "",
    tls: Tls | None = None,
) -> list[str]:
    """One cluster node: a throwaway redis-server with cluster mode on (and AUTH, with
    ``password``: clients and the node's own replication use it; with ``tls``, TLS only:
    ``port`` is the TLS port, the cluster bus at ``port`` + 10000 and replication in TLS)."""
    executable = shutil.which("redis-server") or "redis-server"
    data_dir.mkdir(parents=True, exist_ok=True)
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    return [
        *redis_server_argv(executable, 0 if tls else port, data_dir),
        *(tls_argv(port, tls) if tls else []),
        *auth,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(data_dir / "nodes.conf"),
        "--cluster-node-timeout",
        str(node_timeout_ms),
        # A replica may be promoted however stale it is (tests kill primaries at will).
        "--cluster-replica-validity-factor",
        "0",
    ]


def tls_argv(port: int, tls: Tls) -> list[str]:
    """A node's TLS options: TLS on ``port`` (the plaintext port is 0, i.e. none), for
    the cluster bus and replication too; clients are asked for a certificate only with
    ``tls.auth_clients`` (the nodes present theirs to each other either way)."""
    auth_clients = "yes" if tls.auth_clients else "no"
    return [
        *("--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes"),
        *("--tls-cert-file", str(tls.cert_file), "--tls-key-file", str(tls.key_file)),
        *("--tls-ca-cert-file", str(tls.ca_file), "--tls-auth-clients", auth_clients),
    ]


def create_argv(ports: list[int], password: str = "", tls: Tls | None = None) -> list[str]:
    """``redis-cli --cluster create``: the first half of ``ports`` become primaries."""
    auth = ["-a", password, "--no-auth-warning"] if password else []
    secure = ["--tls", "--cacert", str(tls.ca_file)] if tls else []
    if tls and tls.auth_clients:
        secure += ["--cert", str(tls.cert_file), "--key", str(tls.key_file)]
    return [
        shutil.which("redis-cli") or "redis-cli",
        *secure,
        *auth,
        "--cluster",
        "create",
        *(f"127.0.0.1:{p}" for p in ports),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
    ]


def url(ports: list[int], password: str = "", tls: Tls | None = None) -> str:
    """``REDIS_URL`` for the first node (with TLS: ``rediss://`` trusting ``tls.ca_file``)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    if tls is None:
        return f"redis://{auth}127.0.0.1:{ports[0]}/0"
    query = f"ssl_ca_certs={quote(str(tls.ca_file))}"
    query += "".join(f"&{k}={quote(v)}" for k, v in client_cert_options(tls).items())
    return f"rediss://{auth}127.0.0.1:{ports[0]}/0?{query}"


def env(ports: list[int], password: str = "", tls: Tls | None = None) -> dict[str, str]:
    """The settings that point a service at the cluster."""
    return {
        "REDIS_URL": url(ports, password, tls),
        "REDIS_CLUSTER": "true",
        "REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in ports[1:]),
    }


async def cluster_ok(ports: list[int], password: str = "", tls: Tls | None = None) -> bool:
    """True once every node says ``cluster_state:ok`` and sees all six nodes."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    certificate = client_cert_options(tls)
    for port in ports:
        client = Redis(
            host="127.0.0.1",
            port=port,
            password=password or None,
            socket_timeout=1,
            socket_connect_timeout=1,
            ssl=tls is not None,
            ssl_ca_certs=str(tls.ca_file) if tls else None,
            ssl_certfile=certificate.get("ssl_certfile"),
            ssl_keyfile=certificate.get("ssl_keyfile"),
        )
        try:
            info = await client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
        if isinstance(info, dict):  # redis-py parses the reply
            fields = {str(k): str(v) for k, v in info.items()}
        else:
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if fields.get("cluster_state") != "ok" or fields.get("cluster_known_nodes") != str(
            len(ports)
        ):
            return False
    return True


def wait_ok(ports: list[int], timeout: float, password: str = "", tls: Tls | None = None) -> None:
    """Block until ``cluster_ok`` (raises TimeoutError)."""

    async def poll() -> None:
        async with asyncio.timeout(timeout):
            while not await cluster_ok(ports, password, tls):  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.1)

    asyncio.run(poll())
