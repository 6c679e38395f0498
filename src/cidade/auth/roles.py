"""Roles and what each may do: declared once, here, and checked the same way by every API.

A route declares the one permission it needs per method (``auth.routes.guarded``); a principal
holds roles; a role grants permissions. Reads of entities are also narrowed by *whose* they are:
anonymous and citizens see the types a deployment made public, a device sees its own entities,
so the permission below says "may read entities" and the hub applies the narrowing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

# Every permission an API may declare. A route declaring anything else fails at start.
PUBLIC = "public"  # anyone, logged in or not: health, the OpenAPI document, log-in
PERMISSIONS = {
    PUBLIC: "anyone, without logging in",
    "entities.read": "read entities (the public types only, for the public and citizens; "
    "its own entities only, for a device)",
    "entities.write": "create, change and delete entities (a device: its own only)",
    "types.read": "discover entity types and attributes (the public types only, for the public"
    " and citizens)",
    "temporal.read": "read entities' history",
    "temporal.write": "write and delete entities' history",
    "subscriptions.read": "list and read subscriptions",
    "subscriptions.write": "create, change and delete subscriptions",
    "registrations.read": "list and read context source registrations",
    "registrations.write": "register context sources: create, change and delete registrations",
    "registrations.subscribe": "subscribe to context source registrations: create, list, read,"
    " change and delete such subscriptions",
    "contexts.read": "list the hosted @contexts",
    "contexts.write": "add and delete hosted @contexts",
    "credentials.own": "change one's own password; create, list and revoke one's own API keys",
    "devices.manage": "provision service groups and devices (the IoT agent's API)",
    "accounts.manage": "create accounts, change their roles and tenants, revoke anyone's keys",
    "audit.read": "query the audit log",
    "commands.send": "send commands to actuators (an update of a command attribute)",
    "occurrences.report": "report an occurrence (a problem in the city) and follow it",
    "occurrences.read": "read every occurrence as the operations room sees it (no reporter's"
    " contact)",
    "occurrences.triage": "accept, reject, merge, reclassify, close and reopen occurrences",
    "occurrences.assign": "assign occurrences to departments; work every department's tasks",
    "occurrences.work": "start and resolve one's departments' tasks; add public updates",
    "occurrences.contact": "see a reporter's contact and message them",
    "occurrences.configure": "configure departments, categories, areas and sensor rules",
}

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    # The operations room: runs the city's data and its subscriptions.
    "operator": frozenset(
        {
            PUBLIC,
            "entities.read",
            "entities.write",
            "types.read",
            "temporal.read",
            "temporal.write",
            "subscriptions.read",
            "subscriptions.write",
            "registrations.read",
            "registrations.write",
            "registrations.subscribe",
            "contexts.read",
            "contexts.write",
            "credentials.own",
            "devices.manage",
            "commands.send",
            "occurrences.report",
            "occurrences.read",
            "occurrences.triage",
            "occurrences.assign",
            "occurrences.work",
            "occurrences.contact",
        }
    ),
    # A department's staff: reads the city's data, follows it with subscriptions; what they may
    # change is their departments' occurrences (scoped by Principal.departments).
    "staff": frozenset(
        {
            PUBLIC,
            "entities.read",
            "types.read",
            "temporal.read",
            "subscriptions.read",
            "subscriptions.write",
            "registrations.read",
            "registrations.subscribe",
            "contexts.read",
            "credentials.own",
            "occurrences.report",
            "occurrences.read",
            "occurrences.work",
        }
    ),
    # Publishes open data: reads everything it may publish.
    "publisher": frozenset(
        {PUBLIC, "entities.read", "types.read", "temporal.read", "contexts.read", "credentials.own"}
    ),
    # A sensor or actuator (or the agent speaking for it): its own entities only.
    "device": frozenset({PUBLIC, "entities.read", "entities.write"}),
    # A resident with an account: what the public may, and later their own reports.
    "citizen": frozenset(
        {PUBLIC, "entities.read", "types.read", "credentials.own", "occurrences.report"}
    ),
    "anonymous": frozenset({PUBLIC, "entities.read", "types.read", "occurrences.report"}),
}

# Roles a principal may be given (anonymous is what nobody logged in is).
ASSIGNABLE = frozenset(ROLES) - {"anonymous"}

# Roles that see and change every subscription of their tenants; the others, their own only.
EVERY_SUBSCRIPTION = frozenset({"admin", "operator"})

# Roles whose reads of entities are narrowed to the public entity types.
PUBLIC_READERS = frozenset({"citizen", "anonymous"})


@functools.lru_cache(maxsize=256)
def _granted(roles: frozenset[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLES.get(role, frozenset())
    return frozenset(granted)


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    # Every request asks this of its principal's roles: computed once per set of roles.
    return _granted(roles if isinstance(roles, frozenset) else frozenset(roles))


def check_roles(roles: Iterable[str]) -> list[str]:
    """The roles, sorted, or ValueError naming the unknown ones."""
    roles = sorted(set(roles))
    unknown = [r for r in roles if r not in ASSIGNABLE]
    if unknown:
        raise ValueError(
            f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(sorted(ASSIGNABLE))}"
        )
    return roles
