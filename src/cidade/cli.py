"""The `cidade` command: serve the platform, migrate the store."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from cidade import __version__
from cidade.config import load_settings, settings_to_env


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(store=args.store, host=args.host, port=args.port, workers=args.workers)
    os.environ.update(settings_to_env(settings))
    from granian.constants import Interfaces
    from granian.server import Server

    print(f"Cidade {__version__} serving on http://{settings.host}:{settings.port}", flush=True)
    print(f"  store: {settings.store}", flush=True)
    server = Server(
        "cidade.app:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        factory=True,
        log_access=False,
        respawn_failed_workers=True,
    )
    server.serve()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from cidade.store import open_store

    settings = load_settings(store=args.store)

    async def run() -> None:
        store = open_store(settings.store)
        await store.open()  # opening applies every pending migration
        await store.close()

    asyncio.run(run())
    print(f"store {settings.store} is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cidade", description="Cidade, the open urban platform")
    parser.add_argument("--version", action="version", version=f"cidade {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve every API of the platform from one process")
    serve.add_argument("--host", help="address to listen on (CIDADE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (CIDADE_PORT, default 8000)")
    serve.add_argument("--store", help="store URL (CIDADE_STORE, default sqlite:///cidade.db)")
    serve.add_argument("--workers", type=int, help="worker processes (CIDADE_WORKERS, default 1)")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="bring the store's schema up to date")
    migrate.add_argument("--store", help="store URL (CIDADE_STORE)")
    migrate.set_defaults(func=_migrate)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
