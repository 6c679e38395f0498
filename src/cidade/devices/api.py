"""/iot/services and /iot/devices: the FIWARE IoT Agent's provisioning API (docs/devices.md).

The tenant is the request's (Fiware-Service or NGSILD-Tenant, checked by the gate); the
Fiware-ServicePath is kept with each record. Errors are the agent's ``{"name", "message"}``
with its status codes, as its clients expect; the gate's own refusals (401, 403, 429) come
before any handler and stay ProblemDetails.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.gate import grant_of
from cidade.auth.routes import GuardedRoute, guarded
from cidade.config import Settings
from cidade.devices.provisioning import (
    DeviceProvisioning,
    IotError,
    bad_request,
    check_key,
    check_resource,
    check_service_path,
    from_ngsi,
)
from cidade.http.bodies import JSON, read_json
from cidade.ngsild.errors import NgsiError

PERMISSION = "devices.manage"
DEFAULT_LIMIT = 20  # the agent's page of devices


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _agent_errors(
    handler: Callable[[Any, Request], Awaitable[Response]],
) -> Callable[[Any, Request], Awaitable[Response]]:
    """Answer an IotError in the agent's format."""

    @functools.wraps(handler)
    async def run(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except IotError as exc:
            return _json(exc.body(), exc.status)

    return run


class ProvisioningApi:
    def __init__(self, settings: Settings, provisioning: DeviceProvisioning) -> None:
        self.settings = settings
        self.provisioning = provisioning

    async def _body(self, request: Request) -> Any:
        try:
            body, _ = await read_json(request, self.settings.max_body_bytes)
        except NgsiError as exc:
            raise from_ngsi(exc) from None
        return body

    @staticmethod
    def _where(request: Request) -> tuple[str, str]:
        """(tenant, service path) of a request."""
        return grant_of(request).tenant, check_service_path(
            request.headers.get("fiware-servicepath")
        )

    def _page(self, request: Request, default: int | None) -> tuple[int | None, int]:
        params = request.query_params
        out: list[int | None] = []
        for name, fallback in (("limit", default), ("offset", 0)):
            raw = params.get(name)
            if raw is None:
                out.append(fallback)
                continue
            if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
                raise bad_request(f"{name} must be a non-negative integer")
            out.append(int(raw))
        limit, offset = out
        if limit is not None and limit > self.settings.max_page_size:
            raise bad_request(f"limit may be at most {self.settings.max_page_size}")
        return limit, offset or 0

    @staticmethod
    def _group_key(request: Request) -> tuple[str, str]:
        """apikey and resource of PUT and DELETE /iot/services: both required."""
        params = request.query_params
        missing = [p for p in ("resource", "apikey") if p not in params]
        if missing:
            raise IotError(
                400,
                "MISSING_HEADERS",
                "Some headers were missing from the request: " + orjson.dumps(missing).decode(),
            )
        return check_key(params["apikey"], "apikey"), check_resource(params["resource"])

    # -- /iot/services --------------------------------------------------------------------------

    @_agent_errors
    async def list_groups(self, request: Request) -> Response:
        tenant, _ = self._where(request)
        limit, offset = self._page(request, None)
        params = request.query_params
        apikey, resource = params.get("apikey"), params.get("resource")
        if apikey is not None:
            try:
                check_key(apikey, "apikey")
            except IotError:  # no group could have it
                return _json({"count": 0, "services": []})
        groups = await self.provisioning.list_groups(tenant, apikey=apikey, resource=resource)
        page = groups[offset:] if limit is None else groups[offset : offset + limit]
        return _json({"count": len(groups), "services": page})

    @_agent_errors
    async def create_groups(self, request: Request) -> Response:
        tenant, path = self._where(request)
        await self.provisioning.create_groups(tenant, path, await self._body(request))
        return _json({}, 201)

    @_agent_errors
    async def update_group(self, request: Request) -> Response:
        tenant, path = self._where(request)
        apikey, resource = self._group_key(request)
        body = await self._body(request)
        await self.provisioning.update_group(tenant, path, apikey, resource, body)
        return Response(status_code=204)

    @_agent_errors
    async def delete_group(self, request: Request) -> Response:
        tenant, _ = self._where(request)
        apikey, resource = self._group_key(request)
        await self.provisioning.delete_group(tenant, apikey, resource)
        return Response(status_code=204)

    # -- /iot/devices ---------------------------------------------------------------------------

    @_agent_errors
    async def list_devices(self, request: Request) -> Response:
        tenant, _ = self._where(request)
        limit, offset = self._page(request, DEFAULT_LIMIT)
        assert limit is not None
        devices, count = await self.provisioning.list_devices(tenant, limit, offset)
        return _json({"count": count, "devices": devices})

    @_agent_errors
    async def create_devices(self, request: Request) -> Response:
        tenant, path = self._where(request)
        await self.provisioning.create_devices(tenant, path, await self._body(request))
        return _json({}, 201)

    @_agent_errors
    async def get_device(self, request: Request) -> Response:
        tenant, _ = self._where(request)
        device_id = request.path_params["device_id"]
        return _json(await self.provisioning.get_device(tenant, device_id))

    @_agent_errors
    async def update_device(self, request: Request) -> Response:
        tenant, path = self._where(request)
        device_id = request.path_params["device_id"]
        body = await self._body(request)
        await self.provisioning.update_device(tenant, path, device_id, body)
        return Response(status_code=204)

    @_agent_errors
    async def delete_device(self, request: Request) -> Response:
        tenant, _ = self._where(request)
        await self.provisioning.delete_device(tenant, request.path_params["device_id"])
        return Response(status_code=204)

    def routes(self) -> list[GuardedRoute]:
        return [
            guarded(
                "/iot/services",
                {
                    "GET": (self.list_groups, PERMISSION),
                    "POST": (self.create_groups, PERMISSION),
                    "PUT": (self.update_group, PERMISSION),
                    "DELETE": (self.delete_group, PERMISSION),
                },
            ),
            guarded(
                "/iot/devices",
                {
                    "GET": (self.list_devices, PERMISSION),
                    "POST": (self.create_devices, PERMISSION),
                },
            ),
            guarded(
                "/iot/devices/{device_id}",
                {
                    "GET": (self.get_device, PERMISSION),
                    "PUT": (self.update_device, PERMISSION),
                    "DELETE": (self.delete_device, PERMISSION),
                },
            ),
        ]
