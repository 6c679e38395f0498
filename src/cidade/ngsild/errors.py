"""NGSI-LD errors as ProblemDetails (ETSI GS CIM 009 §5.5.2, RFC 7807).

Every error the hub raises is an ``NgsiError``; the HTTP layer renders it as
``application/json`` ProblemDetails with the specification's error type URI and status code.

    NgsiError
     ├── InvalidRequest          400  (request syntactically wrong: bad JSON, unknown parameter value)
     ├── BadRequestData          400  (well-formed request, data that breaks NGSI-LD rules)
     ├── ResourceNotFound        404
     ├── AlreadyExists           409
     ├── OperationNotSupported   422
     ├── TooManyResults          403
     ├── PayloadTooLarge         413
     ├── NotAcceptable           406  (HTTP: no media type of Accept can be served)
     ├── MethodNotAllowed        405  (HTTP)
     ├── UnsupportedMediaType    415  (HTTP)
     ├── NotImplementedFeature   501
     ├── LdContextNotAvailable   503
     ├── InternalError           500
     └── HttpError               any other HTTP status (type about:blank)
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

ERROR_BASE = "https://uri.etsi.org/ngsi-ld/errors/"


class NgsiError(Exception):
    """An error the API reports to its caller as ProblemDetails."""

    status = 500
    kind = "InternalError"
    title = "Internal error"
    headers: dict[str, str] | None = None  # response headers the error needs (WWW-Authenticate)

    def __init__(self, detail: str = "", *, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if title:
            self.title = title
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.kind

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body


class InvalidRequest(NgsiError):
    status = 400
    kind = "InvalidRequest"
    title = "Invalid request"


class BadRequestData(NgsiError):
    status = 400
    kind = "BadRequestData"
    title = "Bad request data"


class ResourceNotFound(NgsiError):
    status = 404
    kind = "ResourceNotFound"
    title = "Resource not found"


class AlreadyExists(NgsiError):
    status = 409
    kind = "AlreadyExists"
    title = "Already exists"


class OperationNotSupported(NgsiError):
    status = 422
    kind = "OperationNotSupported"
    title = "Operation not supported"


class TooManyResults(NgsiError):
    status = 403
    kind = "TooManyResults"
    title = "Too many results"


class PayloadTooLarge(NgsiError):
    # The specification has no error type for this; 413 with a ProblemDetails body of our own kind.
    status = 413
    kind = "RequestEntityTooLarge"
    title = "Request entity too large"


class NotAcceptable(NgsiError):
    status = 406
    kind = "NotAcceptable"
    title = "Not acceptable"


class UnsupportedMediaType(NgsiError):
    status = 415
    kind = "UnsupportedMediaType"
    title = "Unsupported media type"


class MethodNotAllowed(NgsiError):
    status = 405
    kind = "MethodNotAllowed"
    title = "Method not allowed"


class NotImplementedFeature(NgsiError):
    status = 501
    kind = "NotImplemented"
    title = "Not implemented"


class LdContextNotAvailable(NgsiError):
    status = 503
    kind = "LdContextNotAvailable"
    title = "LD context not available"


class InternalError(NgsiError):
    pass


class HttpError(NgsiError):
    """An HTTP error the specification has no type for (408, 429, 502...): RFC 7807's
    ``about:blank`` type, titled with the status's reason phrase."""

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(detail, title=HTTPStatus(status).phrase)
        self.status = status

    @property
    def type_uri(self) -> str:
        return "about:blank"


# The error types that HTTP statuses raised outside the hub's own code stand for.
_BY_STATUS: dict[int, type[NgsiError]] = {
    error.status: error
    for error in (
        InvalidRequest,  # a request Starlette could not parse is syntactically wrong
        ResourceNotFound,
        AlreadyExists,
        OperationNotSupported,
        PayloadTooLarge,
        NotAcceptable,
        UnsupportedMediaType,
        MethodNotAllowed,
        NotImplementedFeature,
    )
}


def error_for_status(status: int, detail: str = "") -> NgsiError:
    """The error an HTTP status stands for: the specification's type where one has that
    status, else an ``HttpError`` of that status."""
    known = _BY_STATUS.get(status)
    return known(detail) if known is not None else HttpError(status, detail)


__all__ = [
    "AlreadyExists",
    "BadRequestData",
    "HttpError",
    "InternalError",
    "InvalidRequest",
    "LdContextNotAvailable",
    "MethodNotAllowed",
    "NgsiError",
    "NotAcceptable",
    "NotImplementedFeature",
    "OperationNotSupported",
    "PayloadTooLarge",
    "ResourceNotFound",
    "TooManyResults",
    "UnsupportedMediaType",
    "error_for_status",
]
