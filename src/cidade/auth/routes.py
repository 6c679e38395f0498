"""Routes that declare who may call them: the only way an API of the platform adds a route.

    guarded("/ngsi-ld/v1/entities", {"GET": (handler, "entities.read"), ...})

A protocol that carries its credential or tenant elsewhere than in the headers (Open311: the
API key in the form) gives ``presents``: what the request presents, read before the gate.

Each method names one permission of ``auth.roles.PERMISSIONS``; a route without one cannot be
built, and the access-matrix test walks ``permissions`` of every route the app serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cidade.auth.gate import Presented
from cidade.auth.roles import PERMISSIONS

Handler = Callable[[Request], Awaitable[Response]]
Presents = Callable[[Request], Awaitable[Presented]]


class GuardedRoute(Route):
    """A route with the permission each of its methods needs."""

    permissions: dict[str, str]


def guarded(
    path: str, handlers: dict[str, tuple[Handler, str]], *, presents: Presents | None = None
) -> GuardedRoute:
    """One route per path, dispatching on the method (so a 405 lists every allowed method),
    each method behind the gate with its declared permission."""
    for method, (_, permission) in handlers.items():
        if permission not in PERMISSIONS:
            raise ValueError(f"{method} {path}: unknown permission {permission!r}")
    table = {m: h for m, (h, _) in handlers.items()}
    needs = {m: p for m, (_, p) in handlers.items()}
    if "GET" in needs:
        needs.setdefault("HEAD", needs["GET"])

    async def dispatch(request: Request) -> Response:
        # Starlette answers HEAD wherever GET is allowed.
        method = request.method if request.method in table else "GET"
        presented = await presents(request) if presents is not None else None
        await request.app.state.gate.enter(request, needs[method], presented)
        return await table[method](request)

    route = GuardedRoute(path, dispatch, methods=list(handlers), name=path)
    route.permissions = needs
    return route
