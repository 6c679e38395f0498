"""The workflow as data: each action, the statuses it may start from, where it leads and the
permission it needs. The service refuses anything else, and a refusal changes nothing.

    new ─accept→ accepted ─assign→ assigned ─start→ in_progress ─resolve→ resolved ─close→ closed
     ├─reject→ rejected                                                        ↑
     └─mark_duplicate→ duplicate          reopen: resolved, closed, rejected, duplicate → accepted

    clear: new, accepted, assigned, in_progress → resolved, for an occurrence a sensor rule
    raised whose condition cleared (occurrences/rules.py): nobody has to act on a container
    that was emptied or a jam that dissolved, so it need not pass through assign to end.

Several departments can hold a task on one occurrence: ``assign`` adds tasks, ``start`` and
``resolve`` act on the caller's departments' tasks, and the occurrence is resolved when the
last of its tasks is done.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    sources: frozenset[str]
    target: str | None  # None: the status does not change by itself (assign once assigned)
    permission: str
    # Acts on one's own departments' tasks: staff of another department may not.
    departmental: bool = False
    # Meets the response deadline (the occurrence was looked at and answered).
    responds: bool = True
    label: str = ""
    # Only for occurrences from this source ("": any).
    source: str = ""


def _a(name: str, sources: str, target: str | None, permission: str, label: str, **kw) -> Action:
    return Action(name, frozenset(sources.split()), target, permission, label=label, **kw)


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        _a("accept", "new", "accepted", "occurrences.triage", "Accept"),
        _a("reject", "new accepted", "rejected", "occurrences.triage", "Reject"),
        _a(
            "mark_duplicate",
            "new accepted assigned in_progress",
            "duplicate",
            "occurrences.triage",
            "Merge into another occurrence",
        ),
        _a(
            "assign",
            "new accepted assigned in_progress",
            "assigned",
            "occurrences.assign",
            "Assign to departments",
        ),
        _a(
            "start",
            "assigned in_progress",
            "in_progress",
            "occurrences.work",
            "Start work",
            departmental=True,
        ),
        _a(
            "resolve",
            "assigned in_progress",
            "resolved",
            "occurrences.work",
            "Resolve",
            departmental=True,
        ),
        _a("close", "resolved", "closed", "occurrences.triage", "Close"),
        _a(
            "reopen",
            "resolved closed rejected duplicate",
            "accepted",
            "occurrences.triage",
            "Reopen",
            responds=False,
        ),
        _a(
            "clear",
            "new accepted assigned in_progress",
            "resolved",
            "occurrences.triage",
            "Resolve: the sensor's condition cleared",
            responds=False,
            source="sensor",
        ),
    )
}

# Roles of the actor that act on every department's tasks (the operations room).
EVERY_DEPARTMENT_PERMISSION = "occurrences.assign"


def allowed_actions(status: str, permissions: frozenset[str], source: str = "") -> list[str]:
    """The actions an actor holding ``permissions`` may take on an occurrence in ``status``
    (from ``source``: actions only for occurrences of another source are left out)."""
    return [
        a.name
        for a in ACTIONS.values()
        if status in a.sources
        and a.permission in permissions
        and (not a.source or a.source == source)
    ]
