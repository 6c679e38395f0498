"""The occurrences service's refusals, rendered as ProblemDetails by the platform's handlers
(Open311's binding renders them in its own format)."""

from __future__ import annotations

from cidade.ngsild.errors import NgsiError

ERROR_BASE = "https://cidade.city/errors/occurrences/"


class OccurrenceError(NgsiError):
    status = 400
    kind = "InvalidOccurrence"
    title = "Invalid occurrence"

    def __init__(self, detail: str = "", *, field: str | None = None, **extra: object) -> None:
        if field:
            extra["field"] = field
        super().__init__(detail, **extra)
        self.field = field

    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.kind


class UnknownCategory(OccurrenceError):
    status = 404
    kind = "UnknownCategory"
    title = "No such category"


class OccurrenceNotFound(OccurrenceError):
    status = 404
    kind = "OccurrenceNotFound"
    title = "No such occurrence"


class IllegalTransition(OccurrenceError):
    status = 409
    kind = "IllegalTransition"
    title = "Not possible in the occurrence's status"


class NotAllowed(OccurrenceError):
    status = 403
    kind = "AccessDenied"
    title = "Access denied"


class BadPhoto(OccurrenceError):
    status = 400
    kind = "BadPhoto"
    title = "Photo refused"


class PhotoTooLarge(BadPhoto):
    status = 413
    kind = "PhotoTooLarge"
    title = "Photo too large"


class InvalidFilter(OccurrenceError):
    status = 400
    kind = "InvalidFilter"
    title = "Invalid filter"
