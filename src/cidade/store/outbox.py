"""The backend-independent half of notification bookkeeping: how delivery outcomes become
subscription status counters, and how status rows read back as NotificationStatus members."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cidade.store.base import Outcome


def status_rows(outcomes: list[Outcome]) -> list[tuple]:
    """One status delta per subscription: (tenant, id, sent, failed, last, success, failure)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for o in outcomes:
        if o.result in ("dropped", "merged"):
            continue  # not a notification of its own
        row = rows.setdefault((o.item.tenant, o.item.subscription_id), [0, 0, None, None, None])
        row[0] += 1
        row[2] = o.at
        if o.result == "sent":
            row[3] = o.at
        else:
            row[1] += 1
            row[4] = o.at
    return [(*key, *row) for key, row in rows.items()]


def status_info(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("timesSent", "timesFailed", "lastNotification", "lastSuccess", "lastFailure")
    return {k: v for k, v in zip(keys, row, strict=True) if v is not None}
