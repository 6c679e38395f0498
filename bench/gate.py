"""What access control costs on the hottest route, measured in-process (no HTTP, no network).

GET one entity is sent straight to the ASGI app, thousands of times, once on an app with access
control on (an operator's API key: its principal cached, tenant, permission, rate bucket) and
once on the same store with access control off; rounds alternate, and the figure is the median
per-request time of each and their ratio. In-process, the machine's noise (granian, the kernel,
wrk) stays out, which the wrk figure of bench/run.py cannot avoid.

    .venv/bin/python bench/gate.py [--requests 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

from cidade.app import build_app
from cidade.auth.accounts import account_principal
from cidade.auth.principal import EVERY_TENANT, Principal
from cidade.config import Settings

ENTITY = "urn:ngsi-ld:AirQualityObserved:bench-1"
ROOT = Principal(
    subject="bench", kind="account", roles=frozenset({"admin"}), tenants=frozenset({EVERY_TENANT})
)


async def per_request_us(app: Any, headers: list[tuple[bytes, bytes]], n: int) -> float:
    path = f"/ngsi-ld/v1/entities/{ENTITY}"
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"accept", b"application/json"), *headers],
        "server": ("bench", 80),
        "client": ("127.0.0.1", 40000),
    }
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - start
    assert statuses == {200}, statuses
    return elapsed / n * 1e6


async def main(args: argparse.Namespace) -> None:
    folder = tempfile.mkdtemp(prefix="cidade-gate-")
    store = f"sqlite:///{folder}/gate.db"
    guarded = build_app(Settings(store=store, rate_limit=10**9))
    open_app = build_app(Settings(store=store, auth=False))
    async with guarded.router.lifespan_context(guarded):
        accounts = guarded.state.accounts
        await accounts.create(ROOT, "operator", roles=["operator"], tenants=[""])
        owner = account_principal(await accounts.store.get_account("operator"))
        key, _ = await accounts.create_key(owner, {"label": "bench"})
        body = {"id": ENTITY, "type": "AirQualityObserved", "no2": {"type": "Property", "value": 1}}

        await guarded.state.hub.entities.create("", body, guarded.state.hub.resolver.core)
        with_key = [(b"authorization", f"Bearer {key}".encode())]
        async with open_app.router.lifespan_context(open_app):
            on, off = [], []
            for _ in range(args.rounds):
                on.append(await per_request_us(guarded, with_key, args.requests))
                off.append(await per_request_us(open_app, [], args.requests))
    a, b = statistics.median(on), statistics.median(off)
    print(
        f"GET one entity in-process: {a:.1f} µs with an API key, {b:.1f} µs with access control"
        f" off; the gate adds {a - b:.1f} µs; throughput with / without {b / a:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
