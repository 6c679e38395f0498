"""Open311 GeoReport v2 as data (docs/api/open311.md): its two formats, the parameters it
takes, and what an occurrence, a category and an update look like in it.

GeoReport's JSON is the Spark convention's mapping of its XML: a list in JSON is, in XML, an
element named for the list holding one element per item (``services`` holds ``service``s).
Nothing here reads a request or the store; ``open311.py`` is the HTTP binding.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from cidade.ngsild import timefmt
from cidade.occurrences.configuration import Category, OccurrenceConfig
from cidade.occurrences.model import STATUSES, iso_duration
from cidade.store.occurrences import StoredOccurrence

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# When this binding last changed in a way a client could notice (discovery's changeset).
CHANGESET = "2026-12-08T00:00:00Z"
MEDIA_TYPES = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
# GeoReport's default window and size of GET requests (and of servicerequestupdates here).
WINDOW_DAYS = 90
MAX_REQUESTS = 1000

# In XML, the element each item of a list is (FixMyStreet's GroupTags, the same names).
ITEMS = {
    "services": "service",
    "attributes": "attribute",
    "values": "value",
    "service_requests": "request",
    "errors": "error",
    "service_request_updates": "request_update",
    "endpoints": "endpoint",
    "formats": "format",
}

# FixMyStreet's extended statuses a POST servicerequestupdates may carry (its Open311 client
# sends them, upper case), and the workflow actions that lead to each: the first one possible
# from the occurrence's status is taken. DUPLICATE needs the original, which the field does
# not give, and the others change nothing: the update is recorded as a public update alone.
STATUS_ACTIONS: dict[str, tuple[str, ...]] = {
    "OPEN": ("reopen",),
    "REOPEN": ("reopen",),
    "INVESTIGATING": ("accept",),
    "ACTION_SCHEDULED": ("assign",),
    "IN_PROGRESS": ("start",),
    "FIXED": ("resolve",),
    "CLOSED": ("close",),
    "NO_FURTHER_ACTION": ("reject",),
    "NOT_COUNCILS_RESPONSIBILITY": ("reject",),
    "CANCELLED": ("reject",),
    "DUPLICATE": (),
    "INTERNAL_REFERRAL": (),
    "FOR_TRIAGE": (),
}

# XML 1.0 has no way to write these characters, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Open311Input(ValueError):
    """A parameter that does not hold: 400 in Open311's format, its message the description."""


# -- the two formats -------------------------------------------------------------------------


def render(fmt: str, root: str, value: Any) -> bytes:
    """``value`` (a list of objects, or an object) as GeoReport JSON or XML with ``root``
    as the XML document's element."""
    if fmt == "json":
        return orjson.dumps(value)
    element = ET.Element(root)
    _fill(element, value)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(element, encoding="utf-8")


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ET.SubElement(element, key), item)
    elif isinstance(value, list | tuple):
        tag = ITEMS.get(element.tag, "item")
        for item in value:
            _fill(ET.SubElement(element, tag), item)
    elif value is None:
        pass  # an empty element, as the specification's examples write a missing value
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = _NOT_XML.sub("", str(value))


def errors(status: int, description: str) -> list[dict[str, Any]]:
    return [{"code": status, "description": description}]


# -- parameters ------------------------------------------------------------------------------


def parse_jurisdictions(text: str) -> dict[str, str]:
    """CIDADE_OPEN311_JURISDICTIONS (``porto.pt=,matosinhos.pt=matosinhos``) -> jurisdiction_id
    to tenant; ValueError naming what does not hold."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        jurisdiction, sep, tenant = pair.partition("=")
        jurisdiction, tenant = jurisdiction.strip(), tenant.strip()
        if not sep or not jurisdiction:
            raise ValueError(f"{pair!r} is not jurisdiction_id=tenant")
        if any(c.isspace() or c in "/\\" for c in tenant) or len(tenant) > 256:
            raise ValueError(f"{tenant!r} is not a tenant name")
        if jurisdiction in out:
            raise ValueError(f"jurisdiction_id {jurisdiction!r} is given twice")
        out[jurisdiction] = tenant
    return out


def comma_list(value: str | None) -> list[str]:
    """A comma-delimited parameter's values (GeoReport's way to ask for several)."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def request_numbers(value: str) -> list[int]:
    numbers = []
    for item in comma_list(value):
        if not item.isascii() or not item.isdigit() or len(item) > 18:
            raise Open311Input(f"service_request_id {item!r} is not a service request id")
        numbers.append(int(item))
    return numbers


def moment(value: str, name: str) -> float:
    """Epoch seconds of a W3C date-time parameter (2010-01-01T00:00:00Z)."""
    try:
        return timefmt.to_epoch(timefmt.normalize(value))
    except Exception:
        raise Open311Input(f"{name} must be a W3C date-time such as 2010-01-01T00:00:00Z") from None


def window(start: str | None, end: str | None, now: float) -> tuple[float, float]:
    """[since, until) of a search by start_date and end_date: at most 90 days, the last 90
    when neither is given, the 90 after start_date or before end_date when one is."""
    span = WINDOW_DAYS * 86400.0
    since = moment(start, "start_date") if start else None
    until = moment(end, "end_date") if end else None
    if since is None and until is None:
        return now - span, now + 1  # what was reported this very second too
    if since is None:
        assert until is not None
        return until - span, until
    if until is None:
        return since, since + span
    if until < since:
        raise Open311Input("end_date is before start_date")
    if until - since > span:
        raise Open311Input(f"start_date and end_date may not span more than {WINDOW_DAYS} days")
    return since, until


def max_requests(value: str | None) -> int:
    """FixMyStreet's max_requests: fewer than the 1,000 a search answers at most."""
    if not value:
        return MAX_REQUESTS
    if not value.isascii() or not value.isdigit():
        raise Open311Input("max_requests must be a positive whole number")
    return max(1, min(int(value), MAX_REQUESTS))


def answers(fields: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The attribute answers of a form: ``attribute[code]=value``, and a multivaluelist's
    ``attribute[code][]=value`` once per value."""
    out: dict[str, Any] = {}
    for name, value in fields:
        if not name.startswith("attribute["):
            continue
        code, many = name[len("attribute[") :], False
        if code.endswith("][]"):
            code, many = code[:-3], True
        elif code.endswith("]"):
            code = code[:-1]
        else:
            raise Open311Input(f"{name} is not attribute[code] nor attribute[code][]")
        if not code or "[" in code or "]" in code:
            raise Open311Input(f"{name} is not attribute[code] nor attribute[code][]")
        if many:
            held = out.setdefault(code, [])
            if not isinstance(held, list):
                raise Open311Input(f"attribute[{code}] is given both with and without []")
            held.append(value)
        elif code in out:
            raise Open311Input(f"attribute[{code}] is given twice (a list takes [] )")
        else:
            out[code] = value
    return out


# -- what GeoReport shows --------------------------------------------------------------------


def w3c(stored: str | None) -> str | None:
    """A stored timestamp in W3C form to the second (2010-01-01T00:00:00Z)."""
    if not stored:
        return None
    return timefmt.from_epoch(int(timefmt.to_epoch(stored))).split(".")[0] + "Z"


def service(category: Category) -> dict[str, Any]:
    return {
        "service_code": category.code,
        "service_name": category.name,
        "description": category.description or category.name,
        "metadata": bool(category.attributes),
        "type": "realtime",
        "keywords": ", ".join(category.keywords),
        "group": category.group,
    }


def definition(category: Category) -> dict[str, Any]:
    return {
        "service_code": category.code,
        "attributes": [
            {
                "variable": a.variable,
                "code": a.code,
                "datatype": a.datatype,
                "required": a.required,
                "datatype_description": a.datatype_description or None,
                "order": a.order,
                "description": a.description,
                "values": [{"key": k, "name": n} for k, n in a.values],
            }
            for a in sorted(category.attributes, key=lambda a: a.order)
        ],
    }


def _within(seconds: float) -> str:
    """A deadline in words: 15 minutes, 4 hours, 5 days (ISO 8601 when it is none of these)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return iso_duration(seconds)


def agency(config: OccurrenceConfig, departments: Sequence[str]) -> str | None:
    names = [config.departments[d].name if d in config.departments else d for d in departments]
    return ", ".join(names) or None


def notice(config: OccurrenceConfig, category: Category | None, priority: str) -> str | None:
    """What the city commits to for a report of this kind: its deadlines, in words."""
    if category is None or priority not in category.deadlines:
        return None
    response, resolution = category.deadlines[priority]
    who = agency(config, [category.department]) or "The city"
    return (
        f"{who} will look at it within {_within(response)}"
        f" and aims to resolve it within {_within(resolution)}."
    )


def media_url(doc: Mapping[str, Any], base_url: str) -> str | None:
    """The media a reporter linked, else the first photo kept with the occurrence."""
    if doc.get("media_url"):
        return str(doc["media_url"])
    photos = doc.get("photos") or ()
    if photos:
        return f"{base_url}/occurrences/{doc['number']}/photos/{photos[0]['id']}"
    return None


def request(stored: StoredOccurrence, config: OccurrenceConfig, base_url: str) -> dict[str, Any]:
    """An occurrence as a GeoReport service request: its public part only (the reporter's
    contact is in ``stored.private``, never read here)."""
    doc = stored.doc
    location = doc.get("location") or {}
    updates = doc.get("updates") or ()
    status = STATUSES.get(doc["status"])
    return {
        "service_request_id": str(stored.number),
        "status": status.open311 if status else ("open" if doc.get("open") else "closed"),
        "status_notes": updates[-1]["text"] if updates else None,
        "service_name": doc.get("category_name"),
        "service_code": doc["category"],
        "description": doc.get("description") or None,
        "agency_responsible": agency(config, doc.get("departments") or ()),
        "service_notice": notice(config, config.category(doc["category"]), doc.get("priority")),
        "requested_datetime": w3c(doc.get("created_at")),
        "updated_datetime": w3c(doc.get("updated_at")),
        "expected_datetime": w3c(((doc.get("deadlines") or {}).get("resolution") or {}).get("due")),
        "address": doc.get("address") or None,
        "address_id": doc.get("address_id") or None,
        "zipcode": None,
        "lat": location.get("lat"),
        "long": location.get("lon"),
        "media_url": media_url(doc, base_url),
    }


def update_status(event: Mapping[str, Any]) -> str | None:
    """The occurrence's status after a public event of its history, when the event says."""
    changed = (event.get("changes") or {}).get("status")
    if changed:
        return changed[1]
    return (event.get("update") or {}).get("status")


def update(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A public event of an occurrence's history as FixMyStreet's request_update: a change of
    status, a public update, or both (who acted is not shown); None for other events."""
    if event.get("kind") == "created":
        return None
    status = update_status(event)
    text = (event.get("update") or {}).get("text")
    if status is None or (not text and not (event.get("changes") or {}).get("status")):
        return None
    return {
        "update_id": str(event["seq"]),
        "service_request_id": str(event["number"]),
        "status": STATUSES[status].fixmystreet if status in STATUSES else status.upper(),
        "updated_datetime": w3c(event.get("at")),
        "description": text or "",
        "media_url": None,
    }
