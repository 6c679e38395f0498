"""Which notifications a change of a context source registration causes (ETSI GS CIM 009 v1.8
§5.11: subscriptions to registrations), and the initial and periodic ones: pure, run inside the
write transaction as entity matching is (``matching.py``).

A subscription to registrations selects a registration when one of its EntitySelectors (or,
without ``entities``, its other members alone) matches one of the registration's
RegistrationInfo elements (its ``watchedAttributes`` against their attribute names), its ``q``
and ``csf`` hold on the registration's Context Source Properties, its ``geoQ`` on the
registration's geometry and its ``temporalQ`` on its intervals (``registrations.py``). A change
then notifies ``newlyMatching`` (selected now, not before), ``updated`` (before and now) or
``noLongerMatching`` (before, not now: deleted, or changed away). A notification carries the
registration with only the RegistrationInfo elements the subscription selects.
"""

from __future__ import annotations

from typing import Any

import orjson

from cidade.hub.registrations import RegistrationFilter, select
from cidade.hub.subscriptions import (
    selector_type,
    subscription_csf,
    subscription_geoq,
    subscription_q,
    subscription_status,
    subscription_time_filter,
)
from cidade.ngsild import timefmt
from cidade.store.base import OutboxEntry

NEWLY_MATCHING = "newlyMatching"
UPDATED = "updated"
NO_LONGER_MATCHING = "noLongerMatching"


def csource_filters(sub: dict[str, Any]) -> list[RegistrationFilter]:
    """What a stored subscription to registrations asks of registrations: one filter per
    EntitySelector (one without entities when it has none)."""
    q = subscription_q(sub, lambda name: name)
    csf = subscription_csf(sub)
    geo = subscription_geoq(sub)
    time = subscription_time_filter(sub)
    attrs = tuple(sub.get("watchedAttributes", ()))
    selectors = sub.get("entities")
    if not selectors:
        return [RegistrationFilter(attrs=attrs, q=q, csf=csf, geo=geo, time=time)]
    return [
        RegistrationFilter(
            ids=(sel["id"],) if "id" in sel else (),
            id_pattern=sel.get("idPattern"),
            types=selector_type(sel),
            attrs=attrs,
            q=q,
            csf=csf,
            geo=geo,
            time=time,
        )
        for sel in selectors
    ]


def _entry(sub: dict[str, Any], reason: str, registrations: list[dict[str, Any]]) -> OutboxEntry:
    body = {"trigger": reason, "entities": registrations, "csource": True}
    return (sub["notification"]["endpoint"]["uri"], sub["id"], orjson.dumps(body))


def match_registration(
    subs: list[dict[str, Any]],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: str | None = None,
) -> list[OutboxEntry]:
    """The outbox entries one registration's change (``before`` -> ``after``, either None)
    causes for the tenant's subscriptions to registrations."""
    now = now or timefmt.now()
    entries: list[OutboxEntry] = []
    for sub in subs:
        try:
            if subscription_status(sub, now) != "active":
                continue
            filters = csource_filters(sub)
        except Exception:  # one that no longer parses matches nothing (shown as invalid)
            continue
        old = select(filters, before, now) if before is not None else None
        new = select(filters, after, now) if after is not None else None
        if new is not None:
            entries.append(_entry(sub, UPDATED if old is not None else NEWLY_MATCHING, [new]))
        elif old is not None:
            entries.append(_entry(sub, NO_LONGER_MATCHING, [after if after is not None else old]))
    return entries


def initial_entry(
    sub: dict[str, Any], registrations: list[dict[str, Any]], now: str | None = None
) -> OutboxEntry | None:
    """The notification of every registration a subscription selects (newlyMatching): sent when
    it is created or changed, and at each turn of a periodic (timeInterval) one; None when it
    selects none or is not active."""
    now = now or timefmt.now()
    if subscription_status(sub, now) != "active":
        return None
    filters = csource_filters(sub)
    selected = [r for r in (select(filters, reg, now) for reg in registrations) if r is not None]
    if not selected:
        return None
    return _entry(sub, NEWLY_MATCHING, selected)


__all__ = [
    "NEWLY_MATCHING",
    "NO_LONGER_MATCHING",
    "UPDATED",
    "csource_filters",
    "initial_entry",
    "match_registration",
]
