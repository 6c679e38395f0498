"""The application the benchmarks serve: Cidade as deployed, plus one bare handler.

The bare handler answers a fixed JSON body through the same granian and Starlette stack, so
"GET one entity" can be reported as a fraction of what the server itself can do.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cidade.app import build_app
from cidade.config import load_settings

BARE_BODY = b'{"id":"urn:ngsi-ld:Bench:bare","type":"Bench","v":{"type":"Property","value":1}}'


async def bare(request: Request) -> Response:
    return Response(BARE_BODY, media_type="application/json")


def make():  # granian factory
    app = build_app(load_settings())
    app.router.routes.insert(0, Route("/bench/bare", bare, methods=["GET"]))
    return app
