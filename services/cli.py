"""The `coderoom` command: api, gateway, seed, mongo, redis, run."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.settings import Settings, load_settings

log = logging.getLogger("coderoom")


class CliError(Exception):
    """A failure explained to the user in one message (exit status 2)."""


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            # A check of several settings together (REDIS_CLUSTER...) names them itself.
            (f"{'.'.join(str(p) for p in err['loc']).upper()}: " if err["loc"] else "") + err["msg"]
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise CliError(f"invalid settings: {problems}") from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- seed ------------------------------------------------------------------------------


@dataclass
class SeedResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def load_seed_file(path: Path) -> list[Any]:
    """The validated blocks of a YAML or JSON seed file (a list of mappings)."""
    from shared.documents import BlockSpec

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise CliError(f"{path} must hold a non-empty list of code blocks")
    specs: list[BlockSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise CliError(f"{path}: block #{index} is not a mapping")
        try:
            spec = BlockSpec.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_input=False, include_url=False)
            )
            raise CliError(f"{path}: block #{index} is invalid: {problems}") from None
        if spec.slug in seen:
            raise CliError(f"{path}: slug {spec.slug!r} appears twice")
        seen.add(spec.slug)
        specs.append(spec)
    return specs


async def seed_blocks(settings: Settings, specs: Sequence[Any]) -> SeedResult:
    """Create or update blocks by slug; blocks already equal are left alone."""
    from pymongo.errors import DuplicateKeyError

    from shared.db import connect_mongo, op_timeout
    from shared.documents import CodeBlock, utcnow

    result = SeedResult()
    client = await connect_mongo(settings)
    try:
        for spec in specs:
            async with asyncio.timeout(op_timeout(settings) * 2):
                doc = await CodeBlock.find_one({"slug": spec.slug})
                if doc is None:
                    try:
                        await CodeBlock(**spec.model_dump()).insert()
                        result.created += 1
                        continue
                    except DuplicateKeyError:  # another seeder won the race
                        doc = await CodeBlock.find_one({"slug": spec.slug})
                        assert doc is not None
                if doc.spec() == spec:
                    result.unchanged += 1
                    continue
                for name, value in spec.model_dump().items():
                    setattr(doc, name, value)
                doc.updated_at = utcnow()
                await doc.save()
                result.updated += 1
    finally:
        await client.close()
    return result


def cmd_seed(args: argparse.Namespace) -> int:
    from pymongo.errors import PyMongoError

    settings = _settings()
    specs = load_seed_file(Path(args.file))
    try:
        result = asyncio.run(seed_blocks(settings, specs))
    except (PyMongoError, TimeoutError) as exc:
        raise CliError(
            f"cannot reach MongoDB at {settings.mongodb_url}: {type(exc).__name__}"
        ) from None
    _out(
        f"seeded {args.file}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


# --- services ---------------------------------------------------------------------------


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from services.api.app import create_app

    settings = _settings(host=args.host, port=args.port)
    _logging(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level=settings.log_level.lower(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(host=args.host, port=args.port)
    _logging(settings)
    # Imported by name so that the api's tests and tools do not depend on the gateway.
    gateway = importlib.import_module("services.gateway.app")
    gateway.main(settings)
    return 0


def cmd_mongo(args: argparse.Namespace) -> int:
    from services.embedded import missing, serve_mongo

    if why := missing("mongoeco"):
        raise CliError(why)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve_mongo(Path(args.data), args.host, args.port))
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    from services.embedded import missing, serve_fake_redis

    if why := missing("fakeredis"):
        raise CliError(why)

    serve_fake_redis(args.host, args.port)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from services.devrun import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coderoom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, func, what in (
        ("api", cmd_api, "serve the REST api (uvicorn)"),
        ("gateway", cmd_gateway, "serve a websocket gateway"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("--host", help="listen address (default: HOST)")
        p.add_argument("--port", type=int, help="listen port (default: PORT)")
        p.set_defaults(func=func)

    p = sub.add_parser("seed", help="create/update code blocks from a YAML or JSON file")
    p.add_argument("file")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("mongo", help="embedded MongoDB-wire server (development)")
    p.add_argument("--data", default="var/mongo", help="data directory (default: var/mongo)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=27018)
    p.set_defaults(func=cmd_mongo)

    p = sub.add_parser("redis", help="embedded Redis stand-in (fakeredis; development)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6399)
    p.set_defaults(func=cmd_redis)

    p = sub.add_parser("run", help="run the whole system on this machine (make run)")
    from services.devrun import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
    except CliError as exc:
        sys.stderr.write(f"coderoom {args.command}: {exc}\n")
        code = 2
    except KeyboardInterrupt:
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
