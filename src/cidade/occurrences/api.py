"""/occurrences: the operations room's API and the citizens' reporting (docs/occurrences.md).

Thin handlers over OccurrenceService: each reads the request, builds the Actor from the gate's
Grant, calls one service method and renders a view. Errors are the platform's ProblemDetails
(occurrences/errors.py gives the occurrence-specific types). The route's permission is the
coarse check; the service checks each workflow action's own.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.audit import Audit
from cidade.auth.gate import Grant, grant_of
from cidade.auth.roles import PUBLIC
from cidade.auth.routes import GuardedRoute, guarded
from cidade.config import Settings
from cidade.http.bodies import JSON, read_json
from cidade.ngsild import timefmt
from cidade.occurrences.configuration import Area, Category, ConfigError, Department
from cidade.occurrences.errors import OccurrenceError, OccurrenceNotFound
from cidade.occurrences.model import PRIORITIES, SOURCES, STATUSES
from cidade.occurrences.rules import parse_rule
from cidade.occurrences.service import Actor, OccurrenceService, Report
from cidade.occurrences.views import public_view, room_view
from cidade.store.occurrences import ORDERS, OccurrenceQuery

MAX_LIMIT = 1000
_KINDS = {"department": Department.parse, "category": Category.parse, "area": Area.parse}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def actor_of(grant: Grant) -> Actor:
    principal = grant.principal
    return Actor(principal.subject, grant.permissions, principal.departments)


def _list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v for v in (p.strip() for p in value.split(",")) if v]


def _number(value: str | None, what: str, *, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise OccurrenceError(f"{what} must be a number", field=what) from None
    if not low <= number <= high:
        raise OccurrenceError(f"{what} must be between {low} and {high}", field=what)
    return number


def _time(value: str | None, what: str) -> float | None:
    if not value:
        return None
    try:
        return timefmt.to_epoch(timefmt.normalize(value))
    except Exception:
        raise OccurrenceError(f"{what} must be an ISO 8601 date and time", field=what) from None


def parse_query(params: Any) -> OccurrenceQuery:
    """The list's filters, from query parameters; OccurrenceError names a bad one."""
    known = {
        "status",
        "category",
        "group",
        "department",
        "priority",
        "source",
        "area",
        "open",
        "created_since",
        "created_until",
        "updated_since",
        "updated_until",
        "near",
        "bbox",
        "order",
        "limit",
        "offset",
        "count",
    }
    unknown = sorted(set(params.keys()) - known)
    if unknown:
        raise OccurrenceError(f"unknown parameter(s) {', '.join(unknown)}", field=unknown[0])
    statuses = _list(params.get("status"))
    if statuses and not set(statuses) <= set(STATUSES):
        raise OccurrenceError(f"status is among {', '.join(STATUSES)}", field="status")
    priorities = _list(params.get("priority"))
    if priorities and not set(priorities) <= set(PRIORITIES):
        raise OccurrenceError(f"priority is among {', '.join(PRIORITIES)}", field="priority")
    sources = _list(params.get("source"))
    if sources and not set(sources) <= set(SOURCES):
        raise OccurrenceError(f"source is among {', '.join(SOURCES)}", field="source")
    open_ = params.get("open")
    if open_ not in (None, "true", "false"):
        raise OccurrenceError("open is true or false", field="open")
    near = None
    if params.get("near"):
        parts = params["near"].split(",")
        if len(parts) != 3:
            raise OccurrenceError("near is lat,long,metres", field="near")
        lat = _number(parts[0], "near", low=-90, high=90)
        lon = _number(parts[1], "near", low=-180, high=180)
        metres = _number(parts[2], "near", low=0, high=50_000)
        assert lat is not None and lon is not None and metres is not None
        near = (lat, lon, metres)
    bbox = None
    if params.get("bbox"):
        parts = params["bbox"].split(",")
        if len(parts) != 4:
            raise OccurrenceError("bbox is min_long,min_lat,max_long,max_lat", field="bbox")
        values = [
            _number(p, "bbox", low=-180 if i % 2 == 0 else -90, high=180 if i % 2 == 0 else 90)
            for i, p in enumerate(parts)
        ]
        bbox = tuple(v for v in values if v is not None)
        if len(bbox) != 4 or bbox[0] > bbox[2] or bbox[1] > bbox[3]:
            raise OccurrenceError("bbox is min_long,min_lat,max_long,max_lat", field="bbox")
    order = params.get("order", "-created")
    if order not in ORDERS:
        raise OccurrenceError(f"order is one of {', '.join(ORDERS)}", field="order")
    limit = _number(params.get("limit"), "limit", low=0, high=MAX_LIMIT)
    offset = _number(params.get("offset"), "offset", low=0, high=10**9)
    count = params.get("count")
    if count not in (None, "true", "false"):
        raise OccurrenceError("count is true or false", field="count")
    return OccurrenceQuery(
        statuses=statuses,
        categories=_list(params.get("category")),
        groups=_list(params.get("group")),
        departments=_list(params.get("department")),
        priorities=priorities,
        sources=sources,
        areas=_list(params.get("area")),
        open=None if open_ is None else open_ == "true",
        created_since=_time(params.get("created_since"), "created_since"),
        created_until=_time(params.get("created_until"), "created_until"),
        updated_since=_time(params.get("updated_since"), "updated_since"),
        updated_until=_time(params.get("updated_until"), "updated_until"),
        near=near,
        bbox=bbox,  # type: ignore[arg-type]
        order=order,
        limit=int(limit) if limit is not None else 50,
        offset=int(offset or 0),
        count=count == "true",
    )


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


class OccurrencesApi:
    def __init__(self, settings: Settings, service: OccurrenceService, audit: Audit) -> None:
        self.settings = settings
        self.service = service
        self.audit = audit
        self.base_url = settings.base_url

    # -- reporting -------------------------------------------------------------------------------

    async def _report_from(self, request: Request) -> Report:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            async with request.form(
                max_files=self.service.max_photos + 1,
                max_fields=200,
                max_part_size=self.service.max_photo_bytes + 1,
            ) as form:
                photos = []
                for upload in form.getlist("photo"):
                    if isinstance(upload, UploadFile):
                        photos.append(await upload.read(self.service.max_photo_bytes + 1))
                answers = {
                    k[len("attribute[") : -1]: v
                    for k, v in form.items()
                    if k.startswith("attribute[") and k.endswith("]")
                }
                return Report(
                    category=_field(form, "category"),
                    description=_field(form, "description"),
                    title=_field(form, "title"),
                    lat=_field(form, "lat") or None,
                    lon=_field(form, "long") or None,
                    address=_field(form, "address"),
                    source=_field(form, "source") or "web",
                    attributes=answers,
                    photos=photos,
                    name=_field(form, "name"),
                    email=_field(form, "email"),
                    phone=_field(form, "phone"),
                    notify=_field(form, "notify"),
                )
        body, _ = await read_json(request, self.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise OccurrenceError("the body is a JSON object")
        allowed = {
            "category",
            "description",
            "title",
            "lat",
            "long",
            "address",
            "source",
            "priority",
            "attributes",
            "media_url",
            "entities",
            "name",
            "email",
            "phone",
            "webhook",
            "notify",
            "agency_ref",
        }
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise OccurrenceError(f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
        for key in (
            "category",
            "description",
            "title",
            "address",
            "source",
            "priority",
            "media_url",
            "name",
            "email",
            "phone",
            "webhook",
            "notify",
            "agency_ref",
        ):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise OccurrenceError(f"{key} is text", field=key)
        entities = body.get("entities") or []
        if not isinstance(entities, list):
            raise OccurrenceError("entities is a list of entity ids", field="entities")
        return Report(
            category=body.get("category") or "",
            description=body.get("description") or "",
            title=body.get("title") or "",
            lat=body.get("lat"),
            lon=body.get("long"),
            address=body.get("address") or "",
            source=body.get("source") or "web",
            priority=body.get("priority"),
            attributes=body.get("attributes") or {},
            media_url=body.get("media_url") or "",
            entities=entities,
            name=body.get("name") or "",
            email=body.get("email") or "",
            phone=body.get("phone") or "",
            webhook=body.get("webhook") or "",
            notify=body.get("notify") or "",
            agency_ref=body.get("agency_ref") or "",
        )

    async def create(self, request: Request) -> Response:
        """Report an occurrence (JSON, or a form with photos); the open ones it may duplicate
        come back with it, for the reporter to follow instead."""
        grant = grant_of(request)
        actor = actor_of(grant)
        report = await self._report_from(request)
        if report.source not in ("web", "open311") and not actor.may("occurrences.triage"):
            raise OccurrenceError(
                "only the operations room records phone, operator, sensor or agency reports",
                field="source",
            )
        reported = await self.service.report(grant.tenant, actor, report)
        occ = reported.occurrence
        body = {
            **public_view(occ, self.base_url),
            "follow_token": occ.doc["token"],
            "follow_url": self.service.follow_url(occ.doc),
            "possible_duplicates": [public_view(d, self.base_url) for d in reported.duplicates],
        }
        return _json(body, 201, {"Location": f"/occurrences/{occ.number}"})

    async def duplicates(self, request: Request) -> Response:
        """Open occurrences a report at this place may duplicate (ask before sending)."""
        tenant = grant_of(request).tenant
        params = request.query_params
        config = await self.service.config(tenant)
        category = config.category(params.get("category") or "")
        if category is None:
            raise OccurrenceError("category names a category", field="category")
        lat = _number(params.get("lat"), "lat", low=-90, high=90)
        lon = _number(params.get("long"), "long", low=-180, high=180)
        if lat is None or lon is None:
            raise OccurrenceError("lat and long are required", field="lat")
        found = await self.service.duplicates(tenant, category, lat, lon)
        return _json([public_view(o, self.base_url) for o in found])

    async def follow_page(self, request: Request) -> Response:
        """What anyone holding the follow link sees."""
        occ = await self.service.by_token(grant_of(request).tenant, request.path_params["token"])
        return _json(public_view(occ, self.base_url))

    # -- the operations room ---------------------------------------------------------------------

    async def list(self, request: Request) -> Response:
        grant = grant_of(request)
        page = await self.service.list(grant.tenant, parse_query(request.query_params))
        headers = {"X-Total-Count": str(page.total)} if page.total is not None else None
        return _json(
            [room_view(o, grant.permissions, self.base_url) for o in page.items], headers=headers
        )

    async def show(self, request: Request) -> Response:
        grant = grant_of(request)
        occ = await self.service.get(grant.tenant, request.path_params["number"])
        view = room_view(occ, grant.permissions, self.base_url)
        config = await self.service.config(grant.tenant)
        category = config.category(occ.doc["category"])
        if category is not None and occ.doc.get("location"):
            nearby = await self.service.duplicates(
                grant.tenant,
                category,
                occ.doc["location"]["lat"],
                occ.doc["location"]["lon"],
                exclude=occ.number,
            )
            view["possible_duplicates"] = [o.number for o in nearby]
        return _json(view)

    async def history(self, request: Request) -> Response:
        grant = grant_of(request)
        events = await self.service.history(grant.tenant, request.path_params["number"])
        for e in events:
            e["at"] = timefmt.display(e["at"])
        return _json(events)

    async def act(self, request: Request) -> Response:
        """One workflow action: {action, departments?, of?, note?}."""
        grant = grant_of(request)
        body, _ = await read_json(request, 64 * 1024)
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise OccurrenceError("the body names an action", field="action")
        unknown = sorted(set(body) - {"action", "departments", "of", "note"})
        if unknown:
            raise OccurrenceError(f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
        departments = body.get("departments") or []
        if not isinstance(departments, list) or not all(isinstance(d, str) for d in departments):
            raise OccurrenceError("departments is a list of codes", field="departments")
        of = body.get("of")
        if of is not None and (not isinstance(of, int) or isinstance(of, bool)):
            raise OccurrenceError("of is an occurrence number", field="of")
        note = body.get("note") or ""
        if not isinstance(note, str):
            raise OccurrenceError("note is text", field="note")
        occ = await self.service.act(
            grant.tenant,
            actor_of(grant),
            request.path_params["number"],
            body["action"],
            departments=departments,
            of=of,
            note=note,
        )
        return _json(room_view(occ, grant.permissions, self.base_url))

    async def add_update(self, request: Request) -> Response:
        """A public update ({text}) or an internal note ({text, public: false})."""
        grant = grant_of(request)
        body, _ = await read_json(request, 64 * 1024)
        if not isinstance(body, dict) or not set(body) <= {"text", "public"}:
            raise OccurrenceError("an update is {text, public}")
        public = body.get("public", True)
        if not isinstance(public, bool) or not isinstance(body.get("text"), str):
            raise OccurrenceError("text is text, public true or false", field="text")
        by = ",".join(sorted(grant.principal.departments))
        occ = await self.service.update(
            grant.tenant,
            actor_of(grant),
            request.path_params["number"],
            text=body["text"],
            public=public,
            by=by,
        )
        return _json(room_view(occ, grant.permissions, self.base_url), 201)

    async def change(self, request: Request) -> Response:
        """Reclassify or relate: {category?, priority?, entities?}."""
        grant = grant_of(request)
        body, _ = await read_json(request, 64 * 1024)
        if (
            not isinstance(body, dict)
            or not body
            or not set(body)
            <= {
                "category",
                "priority",
                "entities",
            }
        ):
            raise OccurrenceError("a change names category, priority or entities")
        entities = body.get("entities")
        if entities is not None and not isinstance(entities, list):
            raise OccurrenceError("entities is a list of entity ids", field="entities")
        for key in ("category", "priority"):
            if key in body and not isinstance(body[key], str):
                raise OccurrenceError(f"{key} is text", field=key)
        occ = await self.service.change(
            grant.tenant,
            actor_of(grant),
            request.path_params["number"],
            priority=body.get("priority"),
            category=body.get("category"),
            entities=entities,
        )
        return _json(room_view(occ, grant.permissions, self.base_url))

    async def contact(self, request: Request) -> Response:
        """The reporter's contact, for the operations room to call back; every read audited."""
        grant = grant_of(request)
        number = request.path_params["number"]
        occ = await self.service.get(grant.tenant, number)
        await self.audit.record(
            "occurrence.contact", grant.principal, tenant=grant.tenant, target=str(number)
        )
        return _json(occ.private.get("reporter") or {})

    async def photo(self, request: Request) -> Response:
        media_type, data = await self.service.photo(
            grant_of(request).tenant, request.path_params["number"], request.path_params["photo"]
        )
        return Response(
            data,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    # -- configuration ---------------------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        config = await self.service.config(grant_of(request).tenant)
        return _json(
            {
                "departments": [d.as_dict() for d in config.departments.values()],
                "categories": [c.as_dict() for c in config.categories.values()],
                "areas": [a.as_dict() for a in config.areas.values()],
                "rules": [dict(r) for r in config.rules.values()],
            }
        )

    async def config_entry(self, request: Request) -> Response:
        kind, key = request.path_params["kind"], request.path_params["key"]
        config = await self.service.config(grant_of(request).tenant)
        table: Any = {
            "department": config.departments,
            "category": config.categories,
            "area": config.areas,
            "rule": config.rules,
        }.get(kind)
        if table is None:
            raise OccurrenceNotFound(f"no kind {kind!r}: department, category, area or rule")
        entry = table.get(key)
        if entry is None:
            raise OccurrenceNotFound(f"no {kind} {key!r}")
        return _json(dict(entry) if kind == "rule" else entry.as_dict())

    async def set_config_entry(self, request: Request) -> Response:
        """Set (PUT) or remove (DELETE) one entry of a tenant's configuration."""
        grant = grant_of(request)
        kind, key = request.path_params["kind"], request.path_params["key"]
        doc = None
        if request.method == "PUT":
            doc, _ = await read_json(request, 256 * 1024)
            if not isinstance(doc, dict):
                raise OccurrenceError("the body is a JSON object")
            if doc.get("code", key) != key or doc.get("id", key) != key:
                raise OccurrenceError("the body's code is the one in the path", field="code")
            try:
                if kind == "rule":
                    # its category must be one the tenant has, or the rule could never raise
                    config = await self.service.config(grant.tenant)
                    parse_rule({**doc, "id": key}, categories=config.categories)
                elif kind in _KINDS:
                    parsed = _KINDS[kind](doc, key)
                    if isinstance(parsed, Category):
                        config = await self.service.config(grant.tenant)
                        if parsed.department not in config.departments:
                            raise ConfigError(
                                f"category {key!r}: no department {parsed.department!r}"
                            )
                else:
                    raise OccurrenceNotFound(
                        f"no kind {kind!r}: department, category, area or rule"
                    )
            except ConfigError as exc:
                raise OccurrenceError(str(exc)) from None
        elif kind not in (*_KINDS, "rule"):
            raise OccurrenceNotFound(f"no kind {kind!r}: department, category, area or rule")
        else:
            config = await self.service.config(grant.tenant)
            table: Any = {
                "department": config.departments,
                "category": config.categories,
                "area": config.areas,
                "rule": config.rules,
            }[kind]
            if key not in table:
                raise OccurrenceNotFound(f"no {kind} {key!r}")
            if kind == "department":
                users = [c.code for c in config.categories.values() if c.department == key]
                if users:
                    raise OccurrenceError(
                        f"categories {', '.join(users)} are routed to {key!r}: change them first"
                    )
        await self.service.store.save_occurrence_setting(grant.tenant, kind, key, doc)
        self.service.forget_config(grant.tenant)
        await self.audit.record(
            "occurrences.configured",
            grant.principal,
            tenant=grant.tenant,
            target=f"{kind}:{key}",
            change="set" if doc is not None else "removed",
        )
        return Response(status_code=204)

    def routes(self) -> list[GuardedRoute]:
        n = "/occurrences/{number:int}"
        return [
            guarded(
                "/occurrences",
                {
                    "GET": (self.list, "occurrences.read"),
                    "POST": (self.create, "occurrences.report"),
                },
            ),
            guarded("/occurrences/duplicates", {"GET": (self.duplicates, "occurrences.report")}),
            guarded("/occurrences/follow/{token}", {"GET": (self.follow_page, PUBLIC)}),
            guarded("/occurrences/config", {"GET": (self.config, "occurrences.read")}),
            guarded(
                "/occurrences/config/{kind}/{key}",
                {
                    "GET": (self.config_entry, "occurrences.read"),
                    "PUT": (self.set_config_entry, "occurrences.configure"),
                    "DELETE": (self.set_config_entry, "occurrences.configure"),
                },
            ),
            guarded(
                n,
                {
                    "GET": (self.show, "occurrences.read"),
                    "PATCH": (self.change, "occurrences.triage"),
                },
            ),
            guarded(f"{n}/history", {"GET": (self.history, "occurrences.read")}),
            guarded(f"{n}/actions", {"POST": (self.act, "occurrences.read")}),
            guarded(f"{n}/updates", {"POST": (self.add_update, "occurrences.read")}),
            guarded(f"{n}/contact", {"GET": (self.contact, "occurrences.contact")}),
            guarded(f"{n}/photos/{{photo}}", {"GET": (self.photo, PUBLIC)}),
        ]
