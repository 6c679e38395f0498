"""Access errors, rendered as ProblemDetails like every other error of the platform.

NGSI-LD defines no error type for authentication or authorization; the type names follow
Stellio's (``AccessDenied``) so that NGSI-LD clients see the same shape they see elsewhere.
"""

from __future__ import annotations

from cidade.ngsild.errors import NgsiError


class Unauthenticated(NgsiError):
    """401: no credentials where they are needed, or credentials that do not hold."""

    status = 401
    kind = "Unauthenticated"
    title = "Authentication required"
    headers = {"WWW-Authenticate": 'Bearer realm="cidade"'}


class AccessDenied(NgsiError):
    """403: the caller is known but may not do this (here, or in this tenant)."""

    status = 403
    kind = "AccessDenied"
    title = "Access denied"


class TooManyRequests(NgsiError):
    status = 429
    kind = "TooManyRequests"
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


__all__ = ["AccessDenied", "TooManyRequests", "Unauthenticated"]
