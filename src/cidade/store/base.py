"""The storage interface every backend implements.

The hub never writes SQL: it hands the store *write operations* (an entity id and a pure function
from the stored entity, or None, to the new stored entity, or None to delete it) and *queries*
(an ``EntityQuery`` whose filters are parsed trees). A backend runs each write operation atomically
(read, apply, write), each in its own savepoint, so a batch commits what succeeded and reports the
rest, and a failed operation leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cidade.ngsild.query.geo import GeoQuery
from cidade.ngsild.query.order import OrderKey
from cidade.ngsild.query.q import QNode
from cidade.ngsild.query.scope import ScopeNode
from cidade.store.occurrences import (
    OccurrenceAggregates,
    OccurrenceApply,
    OccurrenceMessage,
    OccurrencePage,
    OccurrenceQuery,
    OccurrenceStatisticsQuery,
    RuleWatch,
    StoredOccurrence,
)

Entity = dict[str, Any]

# A type expression (NGSI-LD §4.17): an expanded type IRI, or ("and"|"or", [expr, ...]).
TypeExpr = str | tuple[str, list["TypeExpr"]]


@dataclass(slots=True)
class WriteOp:
    """One atomic change of one entity: ``apply(current) -> new`` (None = absent / delete)."""

    entity_id: str
    apply: Callable[[Entity | None], Entity | None]


class WriteChainBroken(Exception):
    """A write of a chain that was not tried: one handed to the store before it failed."""


class WriteChain:
    """Writes that must apply in the order they are handed to the store, each only if the one
    before it did. A caller may hand the next write before the previous one returned (the
    device bridge writes one batch while the next is on its way): SQLite's writer takes them in
    the order it got them, PostgreSQL one at a time. Once one fails, the later ones fail with
    WriteChainBroken without being tried; the caller tries again, in order, on a new chain."""

    __slots__ = ("broken", "number", "turn")

    def __init__(self, number: int = 0) -> None:
        self.number = number  # which chain of its owner this is (they count up)
        self.broken: BaseException | None = None  # the failure that ended it
        self.turn = asyncio.Lock()  # where the store runs a chain's writes one at a time

    def refusal(self) -> WriteChainBroken | None:
        """What a write of the chain fails with, once the chain is broken."""
        if self.broken is None:
            return None
        return WriteChainBroken(
            f"not tried: an earlier write failed ({type(self.broken).__name__})"
        )

    def check(self) -> None:
        refusal = self.refusal()
        if refusal is not None:
            raise refusal


@dataclass(slots=True)
class EntityQuery:
    ids: Sequence[str] = ()
    id_pattern: str | None = None
    types: TypeExpr | None = None
    attrs: Sequence[str] = ()  # entity must have at least one of these (expanded) attributes
    q: QNode | None = None
    scope: ScopeNode | None = None  # scopeQ (§4.19)
    geo: GeoQuery | None = None
    # orderBy (§4.23): the store sorts by these keys, then in its own order (creation), before
    # it pages; empty: its own order only.
    order: tuple[OrderKey, ...] = ()
    collation: str | None = None  # strings of ``order`` by this ICU collation (None: root)
    limit: int = 20
    offset: int = 0
    count: bool = False


TIME_COLUMNS = {
    "observedAt": "time",  # NGSI-LD: the default time index; modifiedAt when nothing was observed
    "modifiedAt": "modified_at",
    "createdAt": "created_at",
    # The instances recording deletions (store/history.py deletion) only, by their deletedAt,
    # which is also their modifiedAt.
    "deletedAt": "modified_at",
}


@dataclass(slots=True)
class HistoryQuery:
    """Which attribute instances of which entities, in what time window (temporal API)."""

    entity_ids: Sequence[str]
    attrs: Sequence[str] = ()  # expanded attribute IRIs; empty = all
    dataset_ids: Sequence[str] = ()  # only instances with these datasetIds ("" none); empty = all
    time_property: str = "observedAt"
    after: str | None = None  # lower bound (stored timestamp format)
    after_inclusive: bool = True
    before: str | None = None  # upper bound
    before_inclusive: bool = False
    last_n: int | None = None  # only the last N instances of each attribute (and datasetId)
    first_n: int | None = None  # only the first N instances of each attribute (and datasetId)
    # For aggregations: a numeric Property instance may come back as just its type, value,
    # datasetId and time (read from the history's number column, no JSON to parse).
    values_only: bool = False
    limit: int | None = None  # at most this many rows in all (in entity, attribute, time order)


OutboxEntry = tuple[str, str, bytes]  # (lane = endpoint URI, subscription id, body JSON)

# The kinds of subscription (one table, one id space, one outbox): to entities (§5.8) and to
# context source registrations (§5.11).
ENTITY_KIND = "entity"
CSOURCE_KIND = "csource"

# A change of one context source registration: the stored registration (None: absent) -> the new
# one (None: delete it); raises an NgsiError to refuse, changing nothing.
RegistrationApply = Callable[[dict[str, Any] | None], dict[str, Any] | None]
# (the tenant's csource subscriptions, registration before, after) -> the notifications due.
RegistrationMatch = Callable[
    [list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None], list[OutboxEntry]
]


@dataclass(slots=True)
class ChangeWatch:
    """How the hub's notifier hooks into writes. Inside every write transaction the store
    compiles the subscriptions (once per subscription epoch, re-read in that transaction), asks
    ``match`` which notifications the change causes, and inserts them into the outbox before
    committing; after the commit it calls ``enqueued`` to wake the notifier."""

    compile: Callable[[dict[str, Any]], Any | None]
    # (compiled subscriptions of the tenant, changed ids, before, after, now) -> entries
    match: Callable[[list[Any], list[str], dict, dict, str], list[OutboxEntry]]
    enqueued: Callable[[], None]


@dataclass(slots=True)
class OutboxItem:
    """One notification waiting in a lane."""

    seq: int
    tenant: str
    subscription_id: str
    created_at: float  # epoch seconds of the change
    attempts: int
    body: dict[str, Any]


@dataclass(slots=True)
class Outcome:
    """What became of one outbox item: "sent", "failed" (given up: counted, not retried),
    "merged" (went out inside the notification of the item before it: not counted again) or
    "dropped" (its subscription is gone, or throttled: not counted)."""

    item: OutboxItem
    result: str
    at: str  # when it was attempted (stored timestamp format)


@dataclass(slots=True)
class AuditQuery:
    """Which audit events, newest first: every filter left None matches everything."""

    tenants: Sequence[str] | None = None  # events of these tenants only (None: every tenant)
    event: str | None = None  # e.g. "login.failed"
    actor: str | None = None  # a principal's subject
    since: str | None = None  # stored timestamp format, inclusive
    until: str | None = None  # exclusive
    before_seq: int | None = None  # paging: events older than this sequence number
    limit: int = 100


@dataclass(slots=True)
class QueryResult:
    entities: list[Entity]
    count: int | None


class Store(Protocol):
    """What the hub needs from storage. Every method is tenant-scoped; "" is the default tenant."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def exists(self) -> bool:
        """Whether the store was made already (opening one that was not makes it: only
        ``cidade serve``, ``demo`` and ``migrate`` may do that)."""
        ...

    async def tenant_exists(self, tenant: str) -> bool: ...

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def get_entities(self, tenant: str, entity_ids: Sequence[str]) -> list[Entity]:
        """The entities of those ids that exist, in no particular order: one indexed read for
        all of them (linked entity retrieval reads each level of links this way)."""
        ...

    async def write(
        self, tenant: str, ops: Sequence[WriteOp], *, chain: WriteChain | None = None
    ) -> list[Any]:
        """Run each op atomically; the result list holds, per op, the new entity (or None when it
        was deleted) or the exception that op raised (its changes rolled back). Ops on one
        entity apply in order, each on the state the previous one left and each its own change:
        its own history instances, its own notifications. With a ``chain``, the write applies
        after the chain's earlier writes, and only if they did (``WriteChain``)."""
        ...

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    async def entity_types(self, tenant: str) -> list[dict[str, Any]]:
        """[{type, attrs: [(attr, kinds, count)], count}] for discovery."""
        ...

    async def attributes(self, tenant: str) -> list[dict[str, Any]]:
        """[{attr, kinds: [..], types: [..], count}] for discovery."""
        ...

    async def history(
        self, tenant: str, query: HistoryQuery
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """{entity id: {attribute IRI: [instance, ...]}} oldest first; every instance carries
        its ``instanceId`` and ``_t`` (its time on the requested time property)."""
        ...

    async def history_stats(
        self,
        tenant: str,
        entity_id: str,
        attrs: Sequence[str],
        time_property: str,
        bounds: list[str],
        methods: Sequence[str],
    ) -> dict[str, dict[str, list[tuple]]] | None:
        """{attribute: {datasetId or "": [(period, instances, numbers, sum, min, max, sum of
        squares, distinct numbers, sum of squared deviations), ...]}} for the periods
        [bounds[k], bounds[k+1]) that hold instances (hub/temporal.py ``PeriodStats``); None
        when the store cannot compute them exactly (the caller then aggregates instances)."""
        ...

    async def add_history(self, tenant: str, entity_id: str, rows: list[Any]) -> None:
        """Add instances to an entity's history (the temporal API's writes), in one
        transaction: an instance observed at the time an instance of its series (attribute,
        datasetId) was observed replaces it."""
        ...

    async def delete_history(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None, every: bool
    ) -> int: ...

    async def replace_history_instance(
        self, tenant: str, entity_id: str, attr: str, row: Any
    ) -> bool: ...

    async def delete_history_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str
    ) -> bool: ...

    async def deleted_entity(self, tenant: str, entity_id: str) -> dict[str, Any] | None:
        """{id, type, deletedAt} of an entity deleted while its history was kept (setting
        history_after_delete), while some of that history remains; else None."""
        ...

    async def query_deleted(self, tenant: str, query: EntityQuery) -> QueryResult:
        """The deleted entities with history matching a query's ids, idPattern, types and attrs
        (never q nor geo), as {id, type, deletedAt}, in deletion order, paged."""
        ...

    async def forget_history(self, tenant: str, entity_id: str) -> bool:
        """Delete an entity's whole history; whether there was any."""
        ...

    async def purge_history(self, cutoffs: dict[str, str], default: str | None) -> int:
        """Retention, in every tenant: delete the history instances whose time index is older
        than the cutoff of their entity's type (``cutoffs``: {type IRI: stored timestamp};
        ``default`` for the other types, None to keep them). An entity with several types
        keeps the instances any of its types keeps. The number of instances deleted."""
        ...

    # -- subscriptions, of either kind (ENTITY_KIND, CSOURCE_KIND) -----------------------------
    # One id space: a subscription id is taken whatever its kind. ``outbox``: notifications
    # committed with the change (a csource subscription's initial notification).

    async def create_subscription(
        self,
        tenant: str,
        sub: dict[str, Any],
        *,
        kind: str = ENTITY_KIND,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Store a new subscription; False when one with its id exists in the tenant."""
        ...

    async def get_subscription(
        self, tenant: str, sub_id: str, *, kind: str | None = ENTITY_KIND
    ) -> dict[str, Any] | None:
        """The subscription of that id and kind (``kind=None``: of any kind)."""
        ...

    async def replace_subscription(
        self,
        tenant: str,
        sub: dict[str, Any],
        *,
        kind: str = ENTITY_KIND,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool: ...

    async def delete_subscription(
        self, tenant: str, sub_id: str, *, kind: str = ENTITY_KIND
    ) -> bool: ...

    async def list_subscriptions(
        self, tenant: str, limit: int, offset: int, *, kind: str = ENTITY_KIND
    ) -> tuple[list[dict[str, Any]], int]: ...

    # -- context source registrations (§5.9, §5.10; hub/registrations.py) ---------------------

    async def get_registration(self, tenant: str, reg_id: str) -> dict[str, Any] | None: ...

    async def list_registrations(self, tenant: str) -> list[dict[str, Any]]:
        """Every registration of the tenant, in creation order (a broker has tens or hundreds:
        the hub filters them in memory)."""
        ...

    async def write_registration(
        self, tenant: str, reg_id: str, apply: RegistrationApply, match: RegistrationMatch
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Create, change or delete one registration in one transaction: ``apply`` maps the
        stored one (or None) to the new one (None deletes it) or raises to refuse; ``match``
        gets the tenant's csource subscriptions and the registration before and after, and the
        notifications it returns are committed with the change. (before, after)."""
        ...

    # -- notification delivery (hub/notify); every method is one short transaction ----------

    watch: ChangeWatch | None

    async def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another process commits a change of ``topic`` ("outbox",
        "contexts", "auth", "devices"). A store that only one process uses has nothing to
        listen to."""
        ...

    async def claim_lanes(self, owner: str, now: float, lease: float) -> list[str]:
        """Take every lane that has notifications waiting, is due (past its retry time) and is
        not leased by a live owner: its lease becomes ``owner``'s until ``now + lease``."""
        ...

    async def lane_items(self, lane: str, limit: int) -> list[OutboxItem]:
        """The oldest ``limit`` notifications of a lane, in order."""
        ...

    async def record_attempt(self, tenant: str, subscription_id: str, at: str) -> None:
        """A notification of the subscription is about to be sent at ``at``: count it in the
        subscription's status (timesSent, lastNotification) before it leaves, so that whoever
        receives it and reads the subscription at once finds it counted."""
        ...

    async def settle(
        self, lane: str, owner: str, outcomes: list[Outcome], lease_until: float
    ) -> bool:
        """Record attempts that are over (remove their items, count their outcomes in their
        subscription's status: lastSuccess, timesFailed, lastFailure) and renew the lease;
        False, changing nothing, when the lane is no longer ``owner``'s."""
        ...

    async def defer_lane(
        self, lane: str, owner: str, item: OutboxItem, at: str, retry_at: float
    ) -> None:
        """A retryable failure of ``item`` (its attempt already recorded): count the failure,
        keep it at the head, and release the lane until ``retry_at``."""
        ...

    async def release_lane(self, lane: str, owner: str) -> None: ...

    async def notification_status(self, tenant: str, ids: list[str]) -> dict[str, dict]:
        """{subscription id: {timesSent, timesFailed, lastNotification, lastSuccess,
        lastFailure}} for those that have notified."""
        ...

    async def claim_periodic(
        self, now: float, *, kind: str = ENTITY_KIND
    ) -> list[tuple[str, dict[str, Any]]]:
        """(tenant, subscription) of every periodic subscription of ``kind`` due at ``now``,
        each moved to its next due time in the same statement, so one worker takes each turn."""
        ...

    async def enqueue(self, tenant: str, entries: list[OutboxEntry]) -> None: ...

    # -- stored @contexts (§5.13: Hosted, ImplicitlyCreated and Cached; hub/jsonld.py) -------
    # Global, not per tenant. Adding, changing and deleting one is announced on the "contexts"
    # topic (``listen``); usage counters are not.

    async def context_entries(self) -> list[dict[str, Any]]:
        """Every stored @context without its content: {local_id, info (ContextInfo.to_json()),
        hits, last_used}."""
        ...

    async def context_bodies(self, local_ids: Sequence[str]) -> dict[str, Any]:
        """{local_id: body ({"@context": ...})} of those of ``local_ids`` that are stored."""
        ...

    async def save_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        """Store an @context, or replace the info and body of the one with that ``local_id``
        (its usage counters are kept)."""
        ...

    async def delete_context(self, local_id: str) -> None: ...

    async def add_context_usage(self, usage: Sequence[tuple[str, int, str]]) -> None:
        """Add ``(local_id, hits, last_used)`` counts to the stored @contexts' usage (one
        batch); ``last_used`` only moves forward. Unknown ids are ignored."""
        ...

    # -- access control (auth/): accounts, API keys, sessions, the audit log ------------------
    # Records are plain dicts stored as JSON beside the few columns they are looked up by. Every
    # change of an account or a key is announced on the "auth" topic (``listen``), so every
    # worker drops what it cached about it.

    async def save_account(self, account: dict[str, Any], *, create: bool) -> bool:
        """Insert (``create``: False when the name is taken) or replace (False when absent)
        the account ``{"name": ..., ...}``."""
        ...

    async def get_account(self, name: str) -> dict[str, Any] | None: ...

    async def list_accounts(self) -> list[dict[str, Any]]:
        """Every account, by name."""
        ...

    async def delete_account(self, name: str) -> bool:
        """Delete an account and its sessions; whether it existed (its keys stay, revoked by
        the caller, so the audit trail can still name them)."""
        ...

    async def save_api_key(self, key: dict[str, Any], *, create: bool) -> bool:
        """Insert (False when the id is taken) or replace (False when absent) the key
        ``{"id", "secret_hash", "owner", ...}``."""
        ...

    async def get_api_key(self, key_id: str) -> dict[str, Any] | None: ...

    async def list_api_keys(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every key (of one owner), oldest first."""
        ...

    async def save_session(self, session: dict[str, Any]) -> None:
        """Insert or replace ``{"id" (a hash of the cookie), "account", "expires" (epoch
        seconds), ...}``."""
        ...

    async def get_session(self, session_id: str) -> dict[str, Any] | None: ...

    async def delete_sessions(
        self,
        *,
        session_id: str | None = None,
        account: str | None = None,
        expired_before: float | None = None,
    ) -> int:
        """Delete one session, every session of an account, or those expired before a time."""
        ...

    async def add_login_failure(self, name_key: str, address_key: str, at: float) -> None:
        """Record a failed log-in of a name from an address (both hashed by the caller, so
        a password typed into the name field is not kept as it is) at ``at`` (epoch
        seconds). Shared by every worker (auth/limits.py, LoginLockout)."""
        ...

    async def login_failures(
        self, name_key: str, address_key: str, since: float
    ) -> tuple[list[float], list[float]]:
        """The times of the failed log-ins since ``since``, oldest first: of this name from
        this address, and of any name from this address."""
        ...

    async def forget_login_failures(
        self, *, before: float, name_key: str | None = None, address_key: str | None = None
    ) -> None:
        """Forget the failures older than ``before``; with ``name_key`` and ``address_key``,
        every failure of that name from that address (a log-in that succeeded)."""
        ...

    async def append_audit(self, events: Sequence[dict[str, Any]]) -> None:
        """Append events ``{"at", "tenant", "actor", "event", "outcome", "target", "detail"}``
        to the audit log; the log refuses every update and delete."""
        ...

    async def audit_events(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Events matching ``query``, newest first, each with its ``seq``."""
        ...

    # -- devices (devices/): the IoT agent's service groups and devices ----------------------
    # Plain dicts stored as JSON beside their keys, as the IoT Agent's provisioning API shows
    # them. Every change is announced on the "devices" topic (``listen``), so every worker's
    # agent drops what it cached.

    async def save_service_group(self, tenant: str, group: dict[str, Any], *, create: bool) -> bool:
        """Insert (``create``: False when a group with this ``apikey`` and ``resource`` exists,
        in any tenant: the apikey alone routes a device's messages) or replace (False when the
        tenant has no such group) ``{"apikey", "resource", ...}``."""
        ...

    async def service_groups(
        self, tenant: str | None = None, *, apikey: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(tenant, group) of every group of ``tenant`` (None: every tenant), or of the groups
        with ``apikey``; by apikey, then resource."""
        ...

    async def delete_service_group(self, tenant: str, apikey: str, resource: str) -> bool: ...

    async def save_device(self, tenant: str, device: dict[str, Any], *, create: bool) -> bool:
        """Insert (False when the tenant has a device with this ``device_id``) or replace
        (False when absent) ``{"device_id", ...}``."""
        ...

    async def get_device(self, tenant: str, device_id: str) -> dict[str, Any] | None: ...

    async def list_devices(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a tenant's devices by device_id, and how many it has."""
        ...

    async def device_tenants(self) -> list[str]:
        """The tenants that have devices or service groups."""
        ...

    async def delete_device(self, tenant: str, device_id: str) -> bool: ...

    # -- occurrences (store/occurrences.py, docs/occurrences.md) ---------------------------------

    async def write_occurrence(
        self, tenant: str, number: int | None, apply: OccurrenceApply
    ) -> StoredOccurrence:
        """Create (``number`` None: the store gives the number) or change one occurrence in one
        transaction: ``apply(current, number)`` returns its new documents with the events and
        messages the change adds; raising refuses it and nothing changes. LookupError: no such
        occurrence; OccurrenceConflict: a second open occurrence for a rule's entity."""
        ...

    async def get_occurrence(self, tenant: str, number: int) -> StoredOccurrence | None: ...

    async def occurrence_by_token(self, tenant: str, token: str) -> StoredOccurrence | None: ...

    async def query_occurrences(self, tenant: str, query: OccurrenceQuery) -> OccurrencePage: ...

    async def occurrence_photo(
        self, tenant: str, number: int, photo_id: str
    ) -> tuple[str, bytes] | None:
        """(media type, bytes) of one of an occurrence's photos."""
        ...

    async def occurrence_statistics(
        self, tenant: str, query: OccurrenceStatisticsQuery, now: float
    ) -> OccurrenceAggregates:
        """Open and closed counts by category, department, status and area, and the times to
        meet the response and resolution deadlines, of the occurrences ``query`` chooses,
        computed in SQL from one snapshot; ``now`` decides which unmet deadlines are overdue."""
        ...

    async def overdue_occurrences(self, now: float, limit: int = 1000) -> list[tuple[str, int]]:
        """(tenant, number) of open occurrences with a deadline before ``now`` not yet met nor
        marked as breached."""
        ...

    async def occurrence_events(
        self,
        tenant: str,
        number: int | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        public: bool | None = None,
        kinds: list[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """History events in the order they were appended (each with its ``seq`` and
        ``number``): of one occurrence, or of a tenant's occurrences between two times."""
        ...

    async def claim_occurrence_messages(
        self, now: float, lease: float, limit: int = 20
    ) -> list[OccurrenceMessage]:
        """Up to ``limit`` pending messages due by ``now`` (epoch seconds), oldest due first,
        each claimed for ``lease`` seconds: its ``attempts`` counted, its ``next_at`` moved to
        the lease's end, so no other sender takes it meanwhile (PostgreSQL: FOR UPDATE SKIP
        LOCKED, senders claiming at once split the due messages); a sender that dies leaves
        them due again when the lease ends."""
        ...

    async def settle_occurrence_message(
        self,
        seq: int,
        attempts: int,
        state: str,
        result: str,
        next_at: float | None = None,
    ) -> bool:
        """Record how a claimed message went: ``sent``, ``failed`` (for good), or ``pending``
        again, due at ``next_at`` (a retry). Only the claim that ``attempts`` names settles it:
        False when the message was claimed again since (its lease ran out) or is settled."""
        ...

    async def occurrence_messages(
        self, tenant: str, number: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[OccurrenceMessage]:
        """The message log in the order the messages were written (by ``seq``), those after
        ``after``: of one occurrence, or of every occurrence of the tenant (paged by ``seq``)."""
        ...

    async def occurrence_settings(self, tenant: str) -> list[tuple[str, str, Any]]:
        """(kind, key, doc) of what a tenant's administrators set; doc None: removed."""
        ...

    async def save_occurrence_setting(self, tenant: str, kind: str, key: str, doc: Any) -> None: ...

    # -- occurrences' hub entities (occurrences/entities.py) ------------------------------------

    async def occurrences_to_mirror(
        self, *, after: int = 0, limit: int = 500, every: bool = False
    ) -> list[tuple[str, int, int, str]]:
        """(tenant, number, version, source) of the occurrences numbered above ``after``, in
        number order, at most ``limit``: every one with ``every``, else only those whose entity
        was not yet seen at their version (``mark_occurrences_mirrored``)."""
        ...

    async def mark_occurrences_mirrored(self, marks: Sequence[tuple[str, int, int]]) -> None:
        """Note (tenant, number, version): the occurrence's hub entity was seen carrying that
        version (a mark never goes back: a lower one than noted is ignored)."""
        ...

    # -- sensor rules (occurrences/rules.py): their watches, and who evaluates them ------------

    async def rule_watches(self, tenant: str) -> list[RuleWatch]:
        """Every watch the rule engine keeps in the tenant (few: an entity has one only while
        its rule's condition holds, or while its occurrence waits for the condition to clear)."""
        ...

    async def save_rule_watches(
        self,
        tenant: str,
        saved: list[RuleWatch],
        dropped: list[tuple[str, str]],
        now: float,
    ) -> None:
        """In one transaction: forget the watches of ``dropped`` (rule id, entity id) and write
        ``saved`` (inserted or replaced), stamped with the wall clock ``now``."""
        ...

    async def claim_rule_lease(self, owner: str, now: float, lease: float) -> bool:
        """Take or renew the lease of the rule engine until ``now + lease``: True when ``owner``
        holds it now (free, expired or already its own), False when another worker does."""
        ...

    async def release_rule_lease(self, owner: str) -> None: ...

    async def tenant_names(self) -> list[str]:
        """Every tenant that has been written to, the default tenant ("") first."""
        ...


def open_store(url: str, *, history: bool = True, history_after_delete: bool = False) -> Store:
    """The backend for a store URL (not yet opened); ``history`` keeps every attribute change,
    ``history_after_delete`` keeps an entity's history when the entity is deleted."""
    if url.startswith("sqlite://"):
        from cidade.store.sqlite import SqliteStore

        path = url.removeprefix("sqlite://")
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs/x.db -> "/abs/x.db"; sqlite:///:memory:
        path = path[1:] if path.startswith("/") else path
        return SqliteStore(
            path or "cidade.db", history=history, history_after_delete=history_after_delete
        )
    if url.startswith(("postgresql://", "postgres://")):
        from cidade.store.postgres import PostgresStore

        return PostgresStore(url, history=history, history_after_delete=history_after_delete)
    raise SystemExit(
        f"unknown store URL {url!r}: use sqlite:///path.db or postgresql://user@host/db"
    )
