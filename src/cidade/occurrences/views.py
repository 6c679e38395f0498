"""What each audience sees of an occurrence: the operations room its whole document (never the
private part: reporters' contact is read through its own audited route), the public (the
citizens' portal, follow links) what FixMyStreet shows of a report."""

from __future__ import annotations

from typing import Any

from cidade.ngsild import timefmt
from cidade.occurrences.model import STATUSES
from cidade.occurrences.workflow import allowed_actions
from cidade.store.occurrences import StoredOccurrence

# What never leaves through the public view: the follow token is a capability, the tasks and
# deadlines are the city's internal work, the rule and agency reference are internal links.
_ROOM_ONLY = ("token", "tasks", "deadlines", "rule", "agency_ref", "followers", "source")


def photo_urls(base_url: str, doc: dict[str, Any]) -> list[str]:
    return [f"{base_url}/occurrences/{doc['number']}/photos/{p['id']}" for p in doc["photos"]]


def room_view(
    occurrence: StoredOccurrence, permissions: frozenset[str], base_url: str
) -> dict[str, Any]:
    """The operations room's view, with the actions the caller may take."""
    doc = dict(occurrence.doc)
    doc.pop("token", None)
    doc["version"] = occurrence.version
    doc["status_label"] = STATUSES[doc["status"]].label
    doc["photo_urls"] = photo_urls(base_url, doc)
    doc["actions"] = allowed_actions(doc["status"], permissions, doc.get("source") or "")
    for key in ("created_at", "updated_at", "observed_at"):
        if doc.get(key):
            doc[key] = timefmt.display(doc[key])
    return doc


def public_view(occurrence: StoredOccurrence, base_url: str) -> dict[str, Any]:
    """The public's view of an occurrence (portal, follow link, duplicates offered)."""
    doc = occurrence.doc
    view = {k: v for k, v in doc.items() if k not in _ROOM_ONLY}
    view["status_label"] = STATUSES[doc["status"]].label
    view["photo_urls"] = photo_urls(base_url, doc)
    for key in ("created_at", "updated_at", "observed_at"):
        if view.get(key):
            view[key] = timefmt.display(view[key])
    return view
