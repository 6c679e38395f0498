"""The backend-independent half of access-control storage (auth/): checking the records before
they reach SQL, so a bad one is a ValueError or KeyError rather than a database error, and the
shape of an audit event going in and coming out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from cidade.ngsild.timefmt import now as now_iso

# The columns of the audit log, in the order both stores write and read them (after ``seq``).
AUDIT_FIELDS = ("at", "tenant", "actor", "event", "outcome", "target", "detail")


def record_key(record: Any, field: str, what: str) -> str:
    """The key a record is stored under (an account's name, a key's or a session's id)."""
    if not isinstance(record, dict):
        raise ValueError(f"{what} must be a dict, got {type(record).__name__}")
    value = record[field]  # KeyError when absent
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} {field!r} must be a non-empty string, got {value!r}")
    return value


def key_columns(key: Any) -> tuple[str, str, str]:
    """(id, owner, JSON) of an API key."""
    key_id = record_key(key, "id", "an API key")
    owner = key["owner"]
    if not isinstance(owner, str):
        raise ValueError(f"an API key's owner must be a string, got {owner!r}")
    return key_id, owner, orjson.dumps(key).decode()


def session_columns(session: Any) -> tuple[str, str, float, str]:
    """(id, account, expires, JSON) of a session."""
    session_id = record_key(session, "id", "a session")
    account, expires = session["account"], session["expires"]
    if not isinstance(account, str):
        raise ValueError(f"a session's account must be a string, got {account!r}")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise ValueError(f"a session's expires must be epoch seconds, got {expires!r}")
    return session_id, account, float(expires), orjson.dumps(session).decode()


def one_session_filter(
    session_id: str | None, account: str | None, expired_before: float | None
) -> None:
    given = sum(v is not None for v in (session_id, account, expired_before))
    if given != 1:
        raise ValueError("delete_sessions needs exactly one of session_id, account, expired_before")


def audit_rows(events: Sequence[dict[str, Any]]) -> list[tuple]:
    """One row per event, in AUDIT_FIELDS order, ``detail`` as JSON text (or None); ``at``
    defaults to now."""
    rows = []
    for event in events:
        if not isinstance(event, dict):
            raise ValueError(f"an audit event must be a dict, got {type(event).__name__}")
        unknown = set(event) - set(AUDIT_FIELDS)
        if unknown:
            raise ValueError(f"an audit event has no field {sorted(unknown)}")
        at = event.get("at") or now_iso()
        name = event["event"]
        if not isinstance(at, str) or not isinstance(name, str) or not name:
            raise ValueError(f"an audit event needs an event name and an 'at' string: {event!r}")
        texts = [event.get(k) for k in ("tenant", "actor", "outcome", "target")]
        if any(t is not None and not isinstance(t, str) for t in texts):
            raise ValueError(f"tenant, actor, outcome and target must be strings: {event!r}")
        detail = event.get("detail")
        detail_json = None if detail is None else orjson.dumps(detail).decode()
        rows.append((at, texts[0], texts[1], name, texts[2], texts[3], detail_json))
    return rows


def audit_event(seq: int, row: Sequence[Any]) -> dict[str, Any]:
    """An audit event as read back: {seq, at, tenant, actor, event, outcome, target, detail};
    ``row`` in AUDIT_FIELDS order, its detail already decoded."""
    return {"seq": seq, **dict(zip(AUDIT_FIELDS, row, strict=True))}
