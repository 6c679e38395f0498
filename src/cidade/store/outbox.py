"""The backend-independent half of notification bookkeeping: how delivery outcomes become
subscription status counters, and how status rows read back as NotificationStatus members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cidade.store.base import Outcome


def attempt_row(tenant: str, subscription_id: str, at: str) -> tuple:
    """The status delta of a notification about to be sent: timesSent and lastNotification are
    counted before it leaves (§5.2.15: the times it "has been sent"), so that a receiver that
    reads the subscription as soon as it gets the notification finds it counted."""
    return (tenant, subscription_id, 1, 0, at, None, None)


def status_rows(outcomes: list[Outcome]) -> list[tuple]:
    """One status delta per subscription for attempts that are over (already counted as sent
    by ``attempt_row``): (tenant, id, sent, failed, last, success, failure)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for o in outcomes:
        if o.result in ("dropped", "merged"):
            continue  # not a notification of its own
        row = rows.setdefault((o.item.tenant, o.item.subscription_id), [0, 0, None, None, None])
        if o.result == "sent":
            row[3] = o.at
        else:
            row[1] += 1
            row[4] = o.at
    return [(*key, *row) for key, row in rows.items()]


def status_info(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("timesSent", "timesFailed", "lastNotification", "lastSuccess", "lastFailure")
    return {k: v for k, v in zip(keys, row, strict=True) if v is not None}


# A lane waits to retry after a failure (delivery_lanes.retry_at). When a subscription with
# notifications in that lane is changed (its endpoint fixed, say) or deleted, the wait was
# perhaps for it alone: the lane is tried again at once rather than after up to the longest
# back-off, so another subscription of the same endpoint is not held up by it.
UNPARK_LANE_SQLITE = (
    "UPDATE delivery_lanes SET retry_at = 0 WHERE retry_at > 0 AND lane ="
    " (SELECT json_extract(doc, '$.notification.endpoint.uri') FROM subscriptions"
    " WHERE tenant = ? AND id = ?)"
)
UNPARK_LANE_POSTGRES = (
    "UPDATE delivery_lanes SET retry_at = 0 WHERE retry_at > 0 AND lane ="
    " (SELECT doc->'notification'->'endpoint'->>'uri' FROM subscriptions"
    " WHERE tenant = $1 AND id = $2)"
)
