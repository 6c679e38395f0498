"""Request bodies: media types, JSON read with a size cap, NUL refused."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from cidade.ngsild.errors import (
    BadRequestData,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)

JSON = "application/json"
JSON_LD = "application/ld+json"
GEO_JSON = "application/geo+json"
MERGE_PATCH = "application/merge-patch+json"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request, max_bytes: int, *, merge: bool = False) -> tuple[Any, str]:
    """The request body as JSON, and its media type. 415 for other media types, 413 when too
    large, 400 when not JSON."""
    kind = media_type(request)
    allowed = (JSON, JSON_LD, MERGE_PATCH) if merge else (JSON, JSON_LD)
    if kind not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type must be one of {', '.join(allowed)}, got {kind or 'none'}"
        )
    raw = await read_capped(request, max_bytes)
    if not raw:
        raise InvalidRequest("the request has no body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    # A raw NUL byte is not valid JSON, so a NUL can only arrive escaped; the byte search keeps
    # the common case free. PostgreSQL cannot store NUL in text or jsonb, and both stores must
    # accept the same data.
    if b"\\u0000" in raw and _has_nul(body):
        raise BadRequestData("strings may not contain the NUL character (\\u0000)")
    return body, kind


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The request body, at most ``max_bytes`` of it: 413 (PayloadTooLarge) past that, known
    from Content-Length before reading when the client declares it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
