"""OccurrenceService: report, triage, assign, work, close and follow occurrences (no HTTP).

Every change is one store write (store/occurrences.py): the service's function computes the
new occurrence from the current one, refuses by raising (nothing changes then), and returns
the history events and messages the change adds, which commit with it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from cidade.ngsild import timefmt
from cidade.occurrences.configuration import Category, OccurrenceConfig
from cidade.occurrences.errors import (
    IllegalTransition,
    NotAllowed,
    OccurrenceError,
    OccurrenceNotFound,
    UnknownCategory,
)
from cidade.occurrences.model import (
    MAX_ADDRESS,
    MAX_DESCRIPTION,
    MAX_TITLE,
    MAX_UPDATE,
    PRIORITIES,
    SOURCES,
    STATUSES,
    plain_text,
)
from cidade.occurrences.photos import clean_photo
from cidade.occurrences.telling import department_message, status_messages
from cidade.occurrences.workflow import ACTIONS, EVERY_DEPARTMENT_PERMISSION
from cidade.store.base import Store
from cidade.store.occurrences import (
    OccurrenceChange,
    OccurrencePage,
    OccurrenceQuery,
    StoredOccurrence,
)

log = logging.getLogger("cidade.occurrences")

# What runs after each committed change: (tenant, the occurrence as stored).
Listener = Callable[[str, StoredOccurrence], Awaitable[None]]

# A tenant's configuration is read again after this many seconds (another worker may have
# changed it through the API).
CONFIG_TTL = 1.0


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, as the service sees it: ``subject`` goes into the history (never a name or an
    address); ``permissions`` are what the actor holds in the tenant."""

    subject: str
    permissions: frozenset[str]
    departments: frozenset[str] = frozenset()

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def every_department(self) -> bool:
        return EVERY_DEPARTMENT_PERMISSION in self.permissions


@dataclass(slots=True)
class Report:
    """A new occurrence as a binding hands it over (values as received: checked here)."""

    category: str
    description: str = ""
    title: str = ""
    lat: Any = None
    lon: Any = None
    address: str = ""
    address_id: str = ""  # the place in the city's address register (Open311's address_id)
    source: str = "web"
    priority: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    media_url: str = ""
    photos: Sequence[bytes] = ()
    entities: Sequence[str] = ()
    # private: never shown by a public API
    name: str = ""
    email: str = ""
    phone: str = ""
    webhook: str = ""
    notify: str = ""  # email | sms | webhook | none ("" : the first contact given)
    agency_ref: str = ""
    rule: dict[str, str] | None = None  # sensor rules: {id, entity}
    at: str | None = None  # when it was observed (a sensor rule: when the condition began)


@dataclass(slots=True)
class Reported:
    occurrence: StoredOccurrence
    duplicates: list[StoredOccurrence]


def _event(at: str, actor: Actor, kind: str, public: bool = False, **more: Any) -> dict[str, Any]:
    return {"at": at, "actor": actor.subject, "kind": kind, "public": public, **more}


def _coordinate(value: Any, low: float, high: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OccurrenceError(f"{what} must be a number", field=what) from None
    if not low <= number <= high or number != number:
        raise OccurrenceError(f"{what} must be between {low} and {high}", field=what)
    return number


def _text(value: Any, what: str, limit: int) -> str:
    try:
        return plain_text(value if value is not None else "", what, limit)
    except ValueError as exc:
        raise OccurrenceError(str(exc), field=what) from None


_EMAIL_AT = "@"


class OccurrenceService:
    def __init__(
        self,
        store: Store,
        config: OccurrenceConfig,
        *,
        public_url: str = "",
        max_photo_bytes: int = 10 * 1024 * 1024,
        max_photos: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.base_config = config
        self.public_url = public_url.rstrip("/")
        self.max_photo_bytes = max_photo_bytes
        self.max_photos = max_photos
        self.clock = clock
        self._configs: dict[str, tuple[float, OccurrenceConfig]] = {}
        # Called in order after each change commits (the hub's entity: entities.py).
        self.on_written: list[Listener] = []
        # Called after a change that committed messages to send (the dispatcher's wake).
        self.on_messages: list[Callable[[], None]] = []

    # -- configuration ---------------------------------------------------------------------------

    async def config(self, tenant: str) -> OccurrenceConfig:
        now = time.monotonic()
        cached = self._configs.get(tenant)
        if cached and now - cached[0] < CONFIG_TTL:
            return cached[1]
        config = self.base_config.overlaid(await self.store.occurrence_settings(tenant))
        self._configs[tenant] = (now, config)
        return config

    def forget_config(self, tenant: str) -> None:
        self._configs.pop(tenant, None)

    def follow_url(self, doc: dict[str, Any]) -> str:
        return f"{self.public_url}/occurrences/follow/{doc['token']}"

    def _now(self) -> str:
        return timefmt.from_epoch(self.clock())

    # -- reporting -------------------------------------------------------------------------------

    async def report(self, tenant: str, actor: Actor, report: Report) -> Reported:
        """Register a new occurrence; the open ones it may duplicate come with it."""
        if not actor.may("occurrences.report"):
            raise NotAllowed("reporting occurrences is not allowed here")
        config = await self.config(tenant)
        category = config.category(report.category if isinstance(report.category, str) else "")
        if category is None:
            raise UnknownCategory(f"no category {report.category!r}", field="category")
        if report.source not in SOURCES:
            raise OccurrenceError(f"source is one of {', '.join(SOURCES)}", field="source")
        if (
            not category.public
            and report.source in ("web", "open311")
            and not actor.may("occurrences.triage")
        ):
            raise UnknownCategory(f"no category {report.category!r}", field="category")
        location = None
        if report.lat not in (None, "") or report.lon not in (None, ""):
            location = {
                "lat": _coordinate(report.lat, -90, 90, "lat"),
                "lon": _coordinate(report.lon, -180, 180, "long"),
            }
        address = _text(report.address, "address", MAX_ADDRESS)
        address_id = _text(report.address_id, "address_id", 200)
        if location is None and not address and not address_id:
            raise OccurrenceError(
                "a location is required: lat and long, or an address", field="location"
            )
        description = _text(report.description, "description", MAX_DESCRIPTION)
        if not description and report.source in ("web", "open311"):
            raise OccurrenceError("a description is required", field="description")
        title = _text(report.title, "title", MAX_TITLE)
        priority = report.priority or category.priority
        if priority not in PRIORITIES:
            raise OccurrenceError(f"priority is one of {', '.join(PRIORITIES)}", field="priority")
        if (
            report.priority
            and report.priority != category.priority
            and not actor.may("occurrences.triage")
        ):
            raise NotAllowed("only the operations room sets a priority", field="priority")
        # A sensor is asked nothing: the questions are for people reporting.
        answers = check_answers(category, report.attributes, required=report.source != "sensor")
        contact = _contact(report)
        if len(report.photos) > self.max_photos:
            raise OccurrenceError(f"at most {self.max_photos} photos", field="media")
        photos = [clean_photo(p, self.max_photo_bytes) for p in report.photos]
        media_url = _text(report.media_url, "media_url", 2000)
        if media_url and not media_url.lower().startswith(("http://", "https://")):
            raise OccurrenceError("media_url must be an http(s) URL", field="media_url")
        entities = [e for e in report.entities if isinstance(e, str) and ":" in e]
        if len(entities) != len(report.entities):
            raise OccurrenceError(
                "related entities are NGSI-LD entity ids (URIs)", field="entities"
            )
        now_epoch = self.clock()
        at = timefmt.from_epoch(now_epoch)
        response_s, resolution_s = category.deadlines[priority]
        area = config.area_of(location["lat"], location["lon"]) if location else ""
        duplicates = (
            await self.duplicates(tenant, category, location["lat"], location["lon"])
            if location
            else []
        )

        def apply(current: StoredOccurrence | None, number: int) -> OccurrenceChange:
            doc = {
                "number": number,
                "token": secrets.token_urlsafe(16),
                "category": category.code,
                "category_name": category.name,
                "group": category.group,
                "departments": [category.department],
                "title": title or category.name,
                "description": description,
                "address": address,
                **({"address_id": address_id} if address_id else {}),
                "location": location,
                "area": area,
                "source": report.source,
                "status": "new",
                "open": True,
                "priority": priority,
                "created_at": at,
                "updated_at": at,
                "observed_at": report.at or at,
                "deadlines": {
                    "response": {"due": timefmt.from_epoch(now_epoch + response_s)},
                    "resolution": {"due": timefmt.from_epoch(now_epoch + resolution_s)},
                },
                "tasks": [],
                "duplicate_of": None,
                "duplicates": [],
                "entities": entities,
                "attributes": answers,
                "media_url": media_url,
                "photos": [
                    {"id": f"p{i + 1}", "media_type": t, "size": len(d)}
                    for i, (t, d) in enumerate(photos)
                ],
                "updates": [],
                "rule": report.rule,
                "agency_ref": _text(report.agency_ref, "agency_ref", 200),
                "anonymous": not (
                    contact.get("name") or contact.get("email") or contact.get("phone")
                ),
                "followers": 0,
            }
            event = _event(
                at,
                actor,
                "created",
                True,
                status="new",
                source=report.source,
                category=category.code,
                priority=priority,
            )
            return OccurrenceChange(
                doc,
                {"reporter": contact, "followers": []},
                [event],
                [],
                [(f"p{i + 1}", t, d) for i, (t, d) in enumerate(photos)],
            )

        stored = await self.store.write_occurrence(tenant, None, apply)
        await self._written(tenant, stored)
        return Reported(stored, duplicates)

    async def duplicates(
        self,
        tenant: str,
        category: Category,
        lat: float,
        lon: float,
        *,
        exclude: int | None = None,
        limit: int = 10,
    ) -> list[StoredOccurrence]:
        """Open occurrences of the category's group within its radius and window, newest
        first: what a reporter may follow instead, what an operator may merge."""
        if category.duplicate_radius <= 0:
            return []
        page = await self.store.query_occurrences(
            tenant,
            OccurrenceQuery(
                open=True,
                groups=[category.group],
                near=(lat, lon, category.duplicate_radius),
                created_since=self.clock() - category.duplicate_window,
                limit=limit + (1 if exclude is not None else 0),
            ),
        )
        return [o for o in page.items if o.number != exclude][:limit]

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, tenant: str, number: int) -> StoredOccurrence:
        _check_number(number)
        found = await self.store.get_occurrence(tenant, number)
        if found is None:
            raise OccurrenceNotFound(f"no occurrence {number}")
        return found

    async def by_token(self, tenant: str, token: str) -> StoredOccurrence:
        found = await self.store.occurrence_by_token(tenant, token)
        if found is None:
            raise OccurrenceNotFound("no occurrence has this token")
        return found

    async def list(self, tenant: str, query: OccurrenceQuery) -> OccurrencePage:
        return await self.store.query_occurrences(tenant, query)

    async def history(self, tenant: str, number: int) -> list[dict[str, Any]]:
        await self.get(tenant, number)
        return await self.store.occurrence_events(tenant, number, limit=100_000)

    # -- the workflow ----------------------------------------------------------------------------

    async def act(
        self,
        tenant: str,
        actor: Actor,
        number: int,
        action_name: str,
        *,
        departments: Sequence[str] = (),
        of: int | None = None,
        note: str = "",
        ref: str = "",
    ) -> StoredOccurrence:
        """Take one workflow action (workflow.ACTIONS) on an occurrence. ``departments``: whom
        ``assign`` gives tasks to; ``of``: the occurrence ``mark_duplicate`` merges into;
        ``note``: a public update that goes with it (told to the reporter); ``ref``: the id
        another system gave that update, as in ``update``."""
        action = ACTIONS.get(action_name)
        if action is None:
            raise OccurrenceError(f"action is one of {', '.join(ACTIONS)}", field="action")
        if not actor.may(action.permission):
            raise NotAllowed(f"{action.name}: needs the permission {action.permission}")
        note = _text(note, "note", MAX_UPDATE)
        config = await self.config(tenant)
        if action.name == "assign":
            departments = list(dict.fromkeys(departments))
            if not departments:
                raise OccurrenceError("assign names one or more departments", field="departments")
            unknown = [d for d in departments if d not in config.departments]
            if unknown:
                raise OccurrenceError(
                    f"no department {', '.join(map(repr, unknown))}", field="departments"
                )
        target: StoredOccurrence | None = None
        if action.name == "mark_duplicate":
            if of is None or of == number:
                raise OccurrenceError("a duplicate names another occurrence (of)", field="of")
            _check_number(of)
            target = await self.store.get_occurrence(tenant, of)
            if target is None:
                raise OccurrenceNotFound(f"no occurrence {of}", field="of")
            if target.doc.get("duplicate_of") is not None:
                of = target.doc["duplicate_of"]  # merge into the original, never a chain
        now_epoch = self.clock()
        at = timefmt.from_epoch(now_epoch)
        deps = config.departments

        def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            assert current is not None
            doc = _copy(current.doc)
            private = _copy(current.private)
            status = doc["status"]
            if action.source and doc.get("source") != action.source:
                raise IllegalTransition(
                    f"{action.name} is only for occurrences from the source {action.source}",
                    status=status,
                )
            if status not in action.sources:
                raise IllegalTransition(
                    f"{action.name} is not possible from {status}"
                    f" (possible from: {', '.join(sorted(action.sources))})",
                    status=status,
                )
            events: list[dict[str, Any]] = []
            messages: list[dict[str, Any]] = []
            changes: dict[str, Any] = {}
            tasks: list[dict[str, Any]] = doc["tasks"]
            new_status = action.target
            if action.departmental:
                mine = [
                    t
                    for t in tasks
                    if t["status"] != "done"
                    and (actor.every_department or t["department"] in actor.departments)
                ]
                if not mine:
                    if not tasks and actor.every_department:
                        mine = []
                    else:
                        raise NotAllowed(
                            f"{action.name}: no open task of your departments on occurrence {n}"
                        )
                for t in mine:
                    if action.name == "start" and t["status"] == "assigned":
                        t["status"] = "in_progress"
                        t["started_at"] = at
                    elif action.name == "resolve":
                        t["status"] = "done"
                        t["done_at"] = at
                if action.name == "resolve" and any(t["status"] != "done" for t in tasks):
                    new_status = "in_progress"  # others still work on it
            if action.name == "assign":
                held = {t["department"] for t in tasks if t["status"] != "done"}
                added = [d for d in departments if d not in held]
                if not added:
                    raise IllegalTransition("these departments already hold open tasks")
                for d in added:
                    tasks.append({"department": d, "status": "assigned", "assigned_at": at})
                doc["departments"] = sorted(set(doc["departments"]) | set(added))
                changes["departments"] = added
                if status == "in_progress":
                    new_status = "in_progress"
                for d in added:
                    if d in deps:
                        messages += department_message(
                            deps[d].as_dict(),
                            at,
                            f"New task: occurrence {n}",
                            f"Occurrence {n} ({doc.get('category_name')}) was assigned to"
                            f" {deps[d].name}.",
                            "task",
                        )
            if action.name == "clear":
                for t in tasks:
                    if t["status"] != "done":
                        t["status"] = "done"
                        t["done_at"] = at
            if action.name == "mark_duplicate":
                doc["duplicate_of"] = of
                changes["duplicate_of"] = of
            if action.name == "reopen":
                for t in tasks:
                    if t["status"] == "done":
                        t["status"] = "assigned"
                        t.pop("done_at", None)
                if tasks:
                    new_status = "assigned"
                resolution = doc["deadlines"].setdefault("resolution", {})
                category = config.category(doc["category"])
                if category is not None:
                    seconds = category.deadlines[doc["priority"]][1]
                    doc["deadlines"]["resolution"] = {
                        "due": timefmt.from_epoch(now_epoch + seconds)
                    }
                else:
                    resolution.pop("met", None)
            assert new_status is not None
            if action.responds and not doc["deadlines"].get("response", {}).get("met"):
                doc["deadlines"].setdefault("response", {})["met"] = at
            if new_status in ("resolved", "rejected", "duplicate"):
                doc["deadlines"].setdefault("resolution", {})["met"] = at
            if new_status != status:
                changes["status"] = [status, new_status]
            doc["status"] = new_status
            doc["open"] = STATUSES[new_status].open
            doc["updated_at"] = at
            public_update = None
            if note:
                _check_ref(doc, ref)
                public_update = {
                    "id": len(doc["updates"]) + 1,
                    "at": at,
                    "text": note,
                    "status": new_status,
                    "by": "",
                    **({"ref": ref} if ref else {}),
                }
                doc["updates"].append(public_update)
            events.append(
                _event(
                    at,
                    actor,
                    action.name,
                    True,
                    changes=changes,
                    **({"update": public_update} if public_update else {}),
                )
            )
            if new_status != status:
                messages += status_messages(doc, private, at, self.follow_url(doc), note)
            return OccurrenceChange(doc, private, events, messages)

        stored = await self._write(tenant, number, apply)
        if action.name == "mark_duplicate" and of is not None:
            await self._gain_duplicate(tenant, actor, of, stored)
        return stored

    async def _gain_duplicate(
        self, tenant: str, actor: Actor, number: int, duplicate: StoredOccurrence
    ) -> None:
        """The original learns of its duplicate; the duplicate's reporter and followers follow
        the original from now on."""
        at = self._now()

        def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            assert current is not None
            doc, private = _copy(current.doc), _copy(current.private)
            if duplicate.number not in doc["duplicates"]:
                doc["duplicates"].append(duplicate.number)
            followers = private.setdefault("followers", [])
            reporter = duplicate.private.get("reporter") or {}
            for contact in [reporter, *(duplicate.private.get("followers") or ())]:
                if _reachable(contact) and contact not in followers:
                    followers.append({k: v for k, v in contact.items() if k != "name"})
            doc["followers"] = len(followers)
            doc["updated_at"] = at
            event = _event(at, actor, "merged", False, duplicate=duplicate.number)
            return OccurrenceChange(doc, private, [event])

        await self._write(tenant, number, apply)

    async def update(
        self,
        tenant: str,
        actor: Actor,
        number: int,
        *,
        text: str,
        public: bool = True,
        by: str = "",
        ref: str = "",
    ) -> StoredOccurrence:
        """A comment: public (shown with the occurrence, told to its reporter and followers)
        or an internal note of the operations room. ``ref``: the id another system gave a
        public update (Open311's update_id), kept with it; the same one twice is refused."""
        permission = "occurrences.work" if public else "occurrences.read"
        if not actor.may(permission):
            raise NotAllowed(f"updates need the permission {permission}")
        text = _text(text, "text", MAX_UPDATE)
        if not text:
            raise OccurrenceError("an update has text", field="text")
        at = self._now()

        def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            assert current is not None
            doc, private = _copy(current.doc), _copy(current.private)
            _check_ref(doc, ref)
            doc["updated_at"] = at
            messages: list[dict[str, Any]] = []
            if public:
                entry = {
                    "id": len(doc["updates"]) + 1,
                    "at": at,
                    "text": text,
                    "status": doc["status"],
                    "by": by,
                    **({"ref": ref} if ref else {}),
                }
                doc["updates"].append(entry)
                messages = status_messages(doc, private, at, self.follow_url(doc), text)
                for m in messages:
                    m["kind"] = "update"
                event = _event(at, actor, "update", True, update=entry)
            else:
                event = _event(at, actor, "note", False, text=text)
            return OccurrenceChange(doc, private, [event], messages)

        return await self._write(tenant, number, apply)

    async def change(
        self,
        tenant: str,
        actor: Actor,
        number: int,
        *,
        priority: str | None = None,
        category: str | None = None,
        entities: Sequence[str] | None = None,
    ) -> StoredOccurrence:
        """Reclassify (category, priority: deadlines follow from the creation time) or link
        hub entities; the operations room's."""
        if not actor.may("occurrences.triage"):
            raise NotAllowed("changing an occurrence needs the permission occurrences.triage")
        config = await self.config(tenant)
        new_category = None
        if category is not None:
            new_category = config.category(category)
            if new_category is None:
                raise UnknownCategory(f"no category {category!r}", field="category")
        if priority is not None and priority not in PRIORITIES:
            raise OccurrenceError(f"priority is one of {', '.join(PRIORITIES)}", field="priority")
        if entities is not None and not all(isinstance(e, str) and ":" in e for e in entities):
            raise OccurrenceError(
                "related entities are NGSI-LD entity ids (URIs)", field="entities"
            )
        at = self._now()

        def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            assert current is not None
            doc, private = _copy(current.doc), _copy(current.private)
            changes: dict[str, Any] = {}
            if new_category is not None and new_category.code != doc["category"]:
                changes["category"] = [doc["category"], new_category.code]
                doc["category"] = new_category.code
                doc["category_name"] = new_category.name
                doc["group"] = new_category.group
                if not doc["tasks"]:
                    doc["departments"] = [new_category.department]
            if priority is not None and priority != doc["priority"]:
                changes["priority"] = [doc["priority"], priority]
                doc["priority"] = priority
            if changes.keys() & {"category", "priority"}:
                cat = config.category(doc["category"])
                assert cat is not None
                created = timefmt.to_epoch(doc["created_at"])
                for which, seconds in zip(
                    ("response", "resolution"), cat.deadlines[doc["priority"]], strict=True
                ):
                    deadline = doc["deadlines"].setdefault(which, {})
                    deadline["due"] = timefmt.from_epoch(created + seconds)
            if entities is not None and list(entities) != doc["entities"]:
                changes["entities"] = [doc["entities"], list(entities)]
                doc["entities"] = list(entities)
            if not changes:
                raise OccurrenceError("nothing to change")
            doc["updated_at"] = at
            return OccurrenceChange(
                doc, private, [_event(at, actor, "changed", False, changes=changes)]
            )

        return await self._write(tenant, number, apply)

    async def follow(self, tenant: str, number: int, contact: dict[str, Any]) -> StoredOccurrence:
        """Anyone may follow an occurrence: told of its changes through the channel given."""
        follower = _contact(
            Report(
                category="",
                email=contact.get("email") or "",
                phone=contact.get("phone") or "",
                webhook=contact.get("webhook") or "",
                notify=contact.get("notify") or "",
            )
        )
        if not _reachable(follower):
            raise OccurrenceError(
                "following needs an e-mail, a phone or a webhook", field="contact"
            )
        at = self._now()

        def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            assert current is not None
            doc, private = _copy(current.doc), _copy(current.private)
            followers = private.setdefault("followers", [])
            if follower in followers:
                raise Unchanged
            followers.append(follower)
            doc["followers"] = len(followers)
            return OccurrenceChange(doc, private, [_event(at, _PUBLIC, "followed", False)])

        try:
            return await self._write(tenant, number, apply)
        except Unchanged:
            return await self.get(tenant, number)

    # -- deadlines -------------------------------------------------------------------------------

    async def mark_breaches(self) -> int:
        """Mark every deadline that passed unmet, once, and tell its departments; the number
        of occurrences marked."""
        now_epoch = self.clock()
        marked = 0
        for tenant, number in await self.store.overdue_occurrences(now_epoch):
            config = await self.config(tenant)
            at = timefmt.from_epoch(now_epoch)

            try:
                await self._write(tenant, number, _breaches(config, at, now_epoch))
            except (Unchanged, OccurrenceNotFound):
                continue
            marked += 1
        return marked

    # -- photos ----------------------------------------------------------------------------------

    async def photo(self, tenant: str, number: int, photo_id: str) -> tuple[str, bytes]:
        _check_number(number)
        found = await self.store.occurrence_photo(tenant, number, photo_id)
        if found is None:
            raise OccurrenceNotFound("no such photo")
        return found

    async def _write(
        self,
        tenant: str,
        number: int,
        apply: Callable[[StoredOccurrence | None, int], OccurrenceChange],
    ) -> StoredOccurrence:
        _check_number(number)
        told: list[bool] = []

        def counted(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
            change = apply(current, n)
            told[:] = [bool(change.messages)]
            return change

        try:
            stored = await self.store.write_occurrence(tenant, number, counted)
        except LookupError:
            raise OccurrenceNotFound(f"no occurrence {number}") from None
        if told and told[0]:
            for wake in self.on_messages:
                wake()
        await self._written(tenant, stored)
        return stored

    async def _written(self, tenant: str, stored: StoredOccurrence) -> None:
        # The change is committed whatever a listener does: a failure is the listener's to
        # make good (the mirror's catch-up), never the caller's error.
        for listener in self.on_written:
            try:
                await listener(tenant, stored)
            except Exception:
                log.exception("a listener failed after occurrence %s changed", stored.number)


def _breaches(
    config: OccurrenceConfig, at: str, now_epoch: float
) -> Callable[[StoredOccurrence | None, int], OccurrenceChange]:
    """The write that marks an occurrence's passed deadlines and tells its departments."""

    def apply(current: StoredOccurrence | None, n: int) -> OccurrenceChange:
        assert current is not None
        doc, private = _copy(current.doc), _copy(current.private)
        events, messages = [], []
        for which in ("response", "resolution"):
            d = doc["deadlines"].get(which) or {}
            if (
                doc["open"]
                and d.get("due")
                and not d.get("met")
                and not d.get("breached")
                and timefmt.to_epoch(d["due"]) < now_epoch
            ):
                d["breached"] = at
                events.append(
                    _event(at, SYSTEM, "deadline_breached", False, deadline=which, due=d["due"])
                )
                held = [t["department"] for t in doc["tasks"] if t["status"] != "done"]
                for code in held or doc["departments"]:
                    if code in config.departments:
                        messages += department_message(
                            config.departments[code].as_dict(),
                            at,
                            f"Deadline breached: occurrence {n}",
                            f"The {which} deadline of occurrence {n}"
                            f" ({doc.get('category_name')}, {doc['priority']}) passed"
                            f" at {d['due']}.",
                            "breach",
                        )
        if not events:  # another worker marked them first
            raise Unchanged
        doc["updated_at"] = at
        return OccurrenceChange(doc, private, events, messages)

    return apply


class Unchanged(Exception):
    """Raised by a write function that finds nothing to change: the store writes nothing."""


def _check_number(number: int) -> None:
    # Numbers are 64-bit in both stores: a larger one names no occurrence.
    if not 0 < number < 2**63:
        raise OccurrenceNotFound(f"no occurrence {number}")


SYSTEM = Actor("system", frozenset())
_PUBLIC = Actor("anonymous", frozenset())


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    # The documents hold JSON values only: a JSON round trip copies them several times faster
    # than copy.deepcopy, and every write copies two.
    return orjson.loads(orjson.dumps(doc))


def _check_ref(doc: dict[str, Any], ref: str) -> None:
    if ref and any(u.get("ref") == ref for u in doc["updates"]):
        raise OccurrenceError(f"update {ref!r} is already recorded", field="update_id")


def _reachable(contact: dict[str, Any]) -> bool:
    return (
        any(contact.get(k) for k in ("email", "phone", "webhook"))
        and contact.get("notify") != "none"
    )


def _contact(report: Report) -> dict[str, Any]:
    name = _text(report.name, "name", 200)
    email = (report.email or "").strip()
    phone = (report.phone or "").strip()
    webhook = (report.webhook or "").strip()
    if email and (_EMAIL_AT not in email or len(email) > 254 or any(c.isspace() for c in email)):
        raise OccurrenceError("email is not an e-mail address", field="email")
    if phone and (len(phone) > 32 or not all(c.isdigit() or c in "+ -()" for c in phone)):
        raise OccurrenceError("phone is not a phone number", field="phone")
    if webhook and not webhook.lower().startswith(("http://", "https://")):
        raise OccurrenceError("webhook must be an http(s) URL", field="webhook")
    notify = report.notify or ""
    if notify not in ("", "email", "sms", "webhook", "none"):
        raise OccurrenceError("notify is email, sms, webhook or none", field="notify")
    wanted = {"sms": phone, "email": email, "webhook": webhook}
    if notify and notify != "none" and not wanted[notify]:
        raise OccurrenceError(f"notify={notify} needs that contact", field="notify")
    contact = {
        k: v
        for k, v in (("name", name), ("email", email), ("phone", phone), ("webhook", webhook))
        if v
    }
    if notify:
        contact["notify"] = notify
    return contact


def check_answers(
    category: Category, answers: dict[str, Any], *, required: bool = True
) -> dict[str, Any]:
    """The reporter's answers to the category's questions, checked (Open311 attributes);
    ``required``: the required ones must be answered."""
    if not isinstance(answers, dict):
        raise OccurrenceError("attributes are answers by code", field="attribute")
    known = {a.code: a for a in category.attributes}
    unknown = sorted(set(answers) - set(known))
    if unknown:
        raise OccurrenceError(
            f"{category.code} asks no question {', '.join(unknown)}", field="attribute"
        )
    out: dict[str, Any] = {}
    for code, attribute in known.items():
        value = answers.get(code)
        if value in (None, "", []):
            if attribute.required and required:
                raise OccurrenceError(f"attribute[{code}] is required", field=f"attribute[{code}]")
            continue
        keys = {k for k, _ in attribute.values}
        if attribute.datatype == "multivaluelist":
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str) and v in keys for v in values):
                raise OccurrenceError(
                    f"attribute[{code}] takes values among {', '.join(sorted(keys))}",
                    field=f"attribute[{code}]",
                )
            out[code] = values
        elif attribute.datatype == "singlevaluelist":
            if value not in keys:
                raise OccurrenceError(
                    f"attribute[{code}] is one of {', '.join(sorted(keys))}",
                    field=f"attribute[{code}]",
                )
            out[code] = value
        elif attribute.datatype == "number":
            try:
                out[code] = float(value)
            except (TypeError, ValueError):
                raise OccurrenceError(
                    f"attribute[{code}] is a number", field=f"attribute[{code}]"
                ) from None
        elif attribute.datatype == "datetime":
            try:
                out[code] = timefmt.normalize(value)
            except Exception:
                raise OccurrenceError(
                    f"attribute[{code}] is a date and time", field=f"attribute[{code}]"
                ) from None
        else:
            out[code] = _text(value, f"attribute[{code}]", MAX_DESCRIPTION)
    return out


async def watch_deadlines(service: OccurrenceService, interval: float) -> None:
    """Mark passed deadlines every ``interval`` seconds, for as long as the app runs (each
    worker may: marking is idempotent, a second marker finds nothing left)."""
    while True:
        try:
            await service.mark_breaches()
        except Exception:
            log.exception("could not mark the deadlines that passed")
        await asyncio.sleep(interval)
