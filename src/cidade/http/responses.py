"""Responses: JSON from bytes without Starlette's generic header work, ProblemDetails errors."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from cidade.http.bodies import JSON
from cidade.ngsild.errors import NgsiError


def problem_response(error: NgsiError, headers: dict[str, str] | None = None) -> Response:
    """``error`` as an ``application/json`` ProblemDetails response (RFC 7807)."""
    return Response(
        orjson.dumps(error.problem()), status_code=error.status, media_type=JSON, headers=headers
    )


class JsonBytes(Response):
    """A Response built straight from bytes: Starlette's generic init_headers (charset
    sniffing, header normalisation) costs more than the rest of a small read."""

    def __init__(self, content: bytes, status: int, kind: str, headers: dict[str, str]) -> None:
        self.status_code = status
        self.body = content
        self.background = None
        raw = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", kind.encode()),
        ]
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self.raw_headers = raw
