"""The devices' HTTP way in, as the IoT Agent for JSON has it: ``POST /iot/json?k=<apikey>&i=<device_id>``
with a JSON object of measures (``t`` may date them, as ``TimeInstant`` would).

The apikey in the query is the device's credential, as in the IoT agent: the route is open to
all (the gate still limits rates and body sizes), and an unknown apikey is refused. Errors use
the IoT agent's own envelope, ``{"name", "message"}``.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.roles import PUBLIC
from cidade.auth.routes import GuardedRoute, guarded
from cidade.devices.agent import HTTP_RESOURCE, Agent
from cidade.devices.messages import Measure
from cidade.http.bodies import read_capped
from cidade.ngsild import timefmt
from cidade.ngsild.errors import PayloadTooLarge


def iot_error(status: int, name: str, message: str) -> Response:
    return Response(
        orjson.dumps({"name": name, "message": message}),
        status_code=status,
        media_type="application/json",
    )


class Southbound:
    def __init__(self, agent: Agent, max_body_bytes: int) -> None:
        self.agent = agent
        self.max_body_bytes = max_body_bytes

    async def measures(self, request: Request) -> Response:
        params = request.query_params
        apikey, device_id = params.get("k"), params.get("i")
        if not apikey or not device_id:
            return iot_error(
                400,
                "MANDATORY_PARAMS_NOT_FOUND",
                "the parameters k (apikey) and i (device id) are required",
            )
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return iot_error(
                415, "UNSUPPORTED_CONTENT_TYPE", "measures are sent as application/json"
            )
        try:
            body = await read_capped(request, self.max_body_bytes)
        except PayloadTooLarge:
            return iot_error(413, "PAYLOAD_TOO_LARGE", f"at most {self.max_body_bytes} bytes")
        measure = Measure(
            apikey, device_id, body, None, timefmt.now(), "http", time_instant=params.get("t")
        )
        [refused] = await self.agent.ingest([measure], resource=HTTP_RESOURCE)
        if refused is None:
            return Response(status_code=200)
        if refused == "unknown apikey":
            return iot_error(404, "DEVICE_GROUP_NOT_FOUND", "no service group has this apikey")
        if refused.startswith("unknown device"):
            return iot_error(404, "DEVICE_NOT_FOUND", refused)
        return iot_error(400, "BAD_REQUEST", refused)

    def routes(self) -> list[GuardedRoute]:
        return [guarded("/iot/json", {"POST": (self.measures, PUBLIC)})]
