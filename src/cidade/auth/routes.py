"""Routes that declare who may call them: the only way an API of the platform adds a route.

    guarded("/ngsi-ld/v1/entities", {"GET": (handler, "entities.read"), ...})

Each method names one permission of ``auth.roles.PERMISSIONS``; a route without one cannot be
built, and the access-matrix test walks ``permissions`` of every route the app serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cidade.auth.roles import PERMISSIONS

Handler = Callable[[Request], Awaitable[Response]]


class GuardedRoute(Route):
    """A route with the permission each of its methods needs."""

    permissions: dict[str, str]


def guarded(path: str, handlers: dict[str, tuple[Handler, str]]) -> GuardedRoute:
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
        await request.app.state.gate.enter(request, needs[method])
        return await table[method](request)

    route = GuardedRoute(path, dispatch, methods=list(handlers), name=path)
    route.permissions = needs
    return route
