"""The occurrence's vocabulary: statuses (as data: open or closed, and what Open311 and
FixMyStreet call them), sources, priorities; text and durations as reports carry them."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import nh3


@dataclass(frozen=True, slots=True)
class Status:
    code: str
    label: str
    open: bool  # still to be dealt with: counted in queues, offered as a duplicate, watched
    open311: str  # GeoReport v2's two statuses: open | closed
    fixmystreet: str  # FixMyStreet's extended status (servicerequestupdates)


STATUSES: dict[str, Status] = {
    s.code: s
    for s in (
        Status("new", "New", True, "open", "OPEN"),
        Status("accepted", "Accepted", True, "open", "INVESTIGATING"),
        Status("assigned", "Assigned", True, "open", "ACTION_SCHEDULED"),
        Status("in_progress", "In progress", True, "open", "IN_PROGRESS"),
        Status("resolved", "Resolved", False, "closed", "FIXED"),
        Status("closed", "Closed", False, "closed", "CLOSED"),
        Status("rejected", "Rejected", False, "closed", "NO_FURTHER_ACTION"),
        Status("duplicate", "Duplicate", False, "closed", "DUPLICATE"),
    )
}
OPEN_STATUSES = tuple(c for c, s in STATUSES.items() if s.open)

# Where an occurrence came from.
SOURCES = {
    "web": "a citizen, on the city's portal",
    "open311": "a citizen, through an Open311 app",
    "phone": "a citizen, by phone through an operator",
    "operator": "an operator of the operations room",
    "sensor": "a sensor rule over the hub's data",
    "agency": "another agency's system",
}

# Most urgent first.
PRIORITIES = ("urgent", "high", "normal", "low")

# A task: one department's part of an occurrence.
TASK_STATUSES = ("assigned", "in_progress", "done")

MAX_DESCRIPTION = 4000
MAX_TITLE = 200
MAX_ADDRESS = 500
MAX_UPDATE = 4000


# What removing markup may change besides tags and entities: what HTML's parser normalises
# (carriage returns, NUL, a leading byte order mark). Text with none of these and no markup
# comes out as it went in, without the sanitizer's cost (a tenth of a millisecond a field,
# six fields a report; tests/occurrences/test_lookups.py checks that the two agree).
_MARKUP = re.compile("[<&\r\x00\ufeff]")


def plain_text(value: object, what: str, limit: int) -> str:
    """Text as a person wrote it: markup removed (its tags; script and style with their
    content), entities read, surrounding space trimmed; ValueError when too long."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    text = value if _MARKUP.search(value) is None else html.unescape(nh3.clean(value, tags=set()))
    text = text.strip()
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters ({len(text)})")
    return text


_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def duration_seconds(value: object) -> float:
    """Seconds of an ISO 8601 duration in days, hours, minutes and seconds (P2D, PT30M,
    P1DT12H), or of a number of seconds; ValueError otherwise (months and years have no fixed
    length, so a deadline cannot be one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    m = _DURATION.fullmatch(value.strip().upper())
    if m is None or value.strip().upper() in ("P", "PT") or value.strip().upper().endswith("T"):
        raise ValueError(f"{value!r} is not an ISO 8601 duration such as PT4H or P2D")
    d, h, mi, s = (float(m.group(k) or 0) for k in "dhms")
    return d * 86400 + h * 3600 + mi * 60 + s


def iso_duration(seconds: float) -> str:
    """The ISO 8601 form of a number of seconds (P2D, PT4H, P1DT30M)."""
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if v)
    out = "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return out if out != "P" else "PT0S"
