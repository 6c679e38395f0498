"""Open311 GeoReport v2 at /open311/v2 (docs/api/open311.md), with FixMyStreet's
servicerequestupdates: the HTTP binding over OccurrenceService, so that Open311 apps and
FixMyStreet report to Cidade and follow what happens.

Every answer, errors included, is GeoReport's JSON or XML as the path's extension says; the
app's error handlers hand anything raised under /open311/ (the gate's refusals, the router's
404 and 405, the service's OccurrenceErrors) to ``error_answer``. The tenant is the default
one, or the one a configured ``jurisdiction_id`` names; a POST authenticates with the form's
``api_key`` (any Cidade API key of an account of that tenant), read before the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.errors import Unauthenticated
from cidade.auth.gate import FORM, Grant, Presented, grant_of
from cidade.auth.roles import PUBLIC
from cidade.auth.routes import GuardedRoute, guarded
from cidade.config import Settings
from cidade.http.bodies import media_type, read_capped
from cidade.ngsild import timefmt
from cidade.ngsild.errors import NgsiError, UnsupportedMediaType
from cidade.occurrences import open311_format as o311
from cidade.occurrences.api import actor_of
from cidade.occurrences.errors import OccurrenceError, OccurrenceNotFound, UnknownCategory
from cidade.occurrences.service import OccurrenceService, Report
from cidade.occurrences.workflow import ACTIONS
from cidade.store.occurrences import OccurrenceQuery, StoredOccurrence

PREFIX = "/open311/"
V2 = "/open311/v2"
MULTIPART = "multipart/form-data"
_FORM_KEY = "cidade.open311.form"
# Who answers a POST of requests or updates: an account's key (the app's, FixMyStreet's).
REPORT = "occurrences.report"
WORK = "occurrences.work"


def serves(path: str) -> bool:
    return path.startswith(PREFIX)


def _format_of(path: str) -> str:
    return "xml" if path.endswith(".xml") else "json"


def _answer(
    fmt: str, root: str, value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    # Open311 apps run in browsers too, and everything answered here is public.
    return Response(
        o311.render(fmt, root, value),
        status_code=status,
        media_type=o311.MEDIA_TYPES[fmt],
        headers={"Access-Control-Allow-Origin": "*", **(headers or {})},
    )


def error_answer(
    request: Request,
    status: int,
    description: str,
    headers: Mapping[str, str] | None = None,
    *,
    from_service: bool = False,
) -> Response:
    """An error in GeoReport's format: 403 for a missing or invalid api_key (the gate's 401),
    404 for what does not exist, 400 for any other refusal of the service; protocol answers
    (405 with its Allow, 413, 415, 429 with its Retry-After, 5xx) keep their status."""
    if status in (401, 403):
        status = 403
    elif from_service and status != 404:
        status = 400
    fmt = _format_of(request.url.path)
    kept = {k: v for k, v in (headers or {}).items() if k.lower() in ("allow", "retry-after")}
    return _answer(fmt, "errors", o311.errors(status, description), status, kept)


def ngsi_error_answer(request: Request, exc: NgsiError) -> Response:
    description = exc.detail or exc.title
    if isinstance(exc, Unauthenticated):
        description = f"a valid api_key is required: {description}"
    return error_answer(
        request,
        exc.status,
        description,
        exc.headers,
        from_service=isinstance(exc, OccurrenceError),
    )


def _bad(description: str) -> OccurrenceError:
    return OccurrenceError(description)


class Open311Api:
    def __init__(self, settings: Settings, service: OccurrenceService) -> None:
        self.service = service
        self.base_url = settings.base_url
        self.max_body_bytes = settings.max_body_bytes
        self.contact = settings.open311_contact
        self.jurisdictions = o311.parse_jurisdictions(settings.open311_jurisdictions)

    # -- what every request carries ------------------------------------------------------------

    def _tenant(self, jurisdiction: str | None) -> str:
        """The tenant a jurisdiction_id names: with none configured, the default tenant
        whatever it says (GeoReport lets a single jurisdiction ignore it)."""
        if not self.jurisdictions or not jurisdiction:
            return ""
        if jurisdiction not in self.jurisdictions:
            raise OccurrenceNotFound(f"jurisdiction_id {jurisdiction!r} was not found")
        return self.jurisdictions[jurisdiction]

    async def _form(self, request: Request) -> FormData:
        """A POST's form (url-encoded, or multipart with photos), read once within the body
        cap; the fields' text without NUL, which no store keeps."""
        cached = request.scope.get(_FORM_KEY)
        if cached is not None:
            return cached
        kind = media_type(request)
        if kind not in (FORM, MULTIPART):
            raise UnsupportedMediaType(f"Content-Type must be {FORM}, got {kind or 'none'}")
        # Starlette parses the form from the body read here, so the cap holds.
        request._body = await read_capped(request, self.max_body_bytes)
        form = await request.form(
            max_files=self.service.max_photos + 1,
            max_fields=300,
            max_part_size=max(self.service.max_photo_bytes, 64 * 1024) + 1,
        )
        if any(isinstance(v, str) and "\x00" in v for _, v in form.multi_items()):
            raise _bad("fields may not contain the NUL character")
        request.scope[_FORM_KEY] = form
        return form

    async def presents(self, request: Request) -> Presented:
        """Before the gate: the tenant of the jurisdiction_id (the query's; a POST's form's),
        and a POST's api_key. A GET is public: an api_key in its query is not looked at."""
        jurisdiction = request.query_params.get("jurisdiction_id")
        api_key = None
        # A body that is no form is refused by the handler, once the gate has had its say.
        if request.method == "POST" and media_type(request) in (FORM, MULTIPART):
            form = await self._form(request)
            jurisdiction = _text(form, "jurisdiction_id") or jurisdiction
            api_key = _text(form, "api_key") or None
        return Presented(tenant=self._tenant(jurisdiction), api_key=api_key, members_only=True)

    @staticmethod
    def _fmt(request: Request) -> str:
        fmt = request.path_params["format"]
        if fmt not in o311.MEDIA_TYPES:
            raise OccurrenceNotFound(f"no format {fmt!r} here: json or xml")
        return fmt

    async def _public(self, tenant: str) -> tuple[Any, set[str]]:
        config = await self.service.config(tenant)
        return config, {c.code for c in config.categories.values() if c.public}

    # -- discovery and services ----------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        fmt = self._fmt(request)
        return _answer(
            fmt,
            "discovery",
            {
                "changeset": o311.CHANGESET,
                "contact": self.contact or f"The city's platform team, at {self.base_url}",
                "key_service": "An account of the city's creates its API keys: POST"
                f" {self.base_url}/auth/keys (docs/api/auth.md)",
                "endpoints": [
                    {
                        "specification": o311.SPECIFICATION,
                        "url": f"{self.base_url}{V2}",
                        "changeset": o311.CHANGESET,
                        "type": "production",
                        "formats": ["text/xml", "application/json"],
                    }
                ],
            },
        )

    async def services(self, request: Request) -> Response:
        fmt = self._fmt(request)
        config, public = await self._public(grant_of(request).tenant)
        listed = [o311.service(c) for c in config.categories.values() if c.code in public]
        return _answer(fmt, "services", listed)

    async def service_definition(self, request: Request) -> Response:
        fmt = self._fmt(request)
        code = request.path_params["service_code"]
        config, public = await self._public(grant_of(request).tenant)
        if code not in public:
            raise UnknownCategory(f"service_code {code!r} was not found")
        return _answer(fmt, "service_definition", o311.definition(config.categories[code]))

    # -- service requests ----------------------------------------------------------------------

    async def list_requests(self, request: Request) -> Response:
        fmt = self._fmt(request)
        tenant = grant_of(request).tenant
        params = request.query_params
        config, public = await self._public(tenant)
        try:
            numbers = o311.request_numbers(params.get("service_request_id") or "")
            limit = o311.max_requests(params.get("max_requests"))
            if numbers:
                # "This overrides all other arguments."
                query = OccurrenceQuery(numbers=numbers[: o311.MAX_REQUESTS], limit=limit)
            else:
                since, until = o311.window(
                    params.get("start_date"), params.get("end_date"), self.service.clock()
                )
                query = OccurrenceQuery(
                    categories=_codes(params.get("service_code"), public),
                    open=_open(params.get("status")),
                    # FixMyStreet's agency_responsible: departments, '|' between them
                    departments=_agencies(params.get("agency_responsible")),
                    created_since=since,
                    created_until=until,
                    limit=limit,
                )
        except o311.Open311Input as exc:
            raise _bad(str(exc)) from None
        if query.categories == []:
            return self._requests(fmt, config, [])
        page = await self.service.list(tenant, query)
        found = [o for o in page.items if o.doc["category"] in public]
        return self._requests(fmt, config, found)

    def _requests(self, fmt: str, config: Any, found: list[StoredOccurrence]) -> Response:
        return _answer(
            fmt, "service_requests", [o311.request(o, config, self.base_url) for o in found]
        )

    async def get_request(self, request: Request) -> Response:
        fmt = self._fmt(request)
        tenant = grant_of(request).tenant
        config, public = await self._public(tenant)
        found = await self._occurrence(tenant, request.path_params["service_request_id"], public)
        return self._requests(fmt, config, [found])

    async def _occurrence(self, tenant: str, raw: str, public: set[str]) -> StoredOccurrence:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            raise OccurrenceNotFound(f"service_request_id {raw!r} was not found")
        found = await self.service.get(tenant, int(raw))
        if found.doc["category"] not in public:
            raise OccurrenceNotFound(f"service_request_id {raw!r} was not found")
        return found

    async def token(self, request: Request) -> Response:
        fmt = self._fmt(request)
        token = request.path_params["token"]
        try:
            found = await self.service.by_token(grant_of(request).tenant, token)
        except OccurrenceNotFound:
            raise OccurrenceNotFound(f"token {token!r} was not found") from None
        return _answer(
            fmt,
            "service_requests",
            [{"service_request_id": str(found.number), "token": token}],
        )

    async def post_request(self, request: Request) -> Response:
        fmt = self._fmt(request)
        grant = grant_of(request)
        form = await self._form(request)
        code = _text(form, "service_code").strip()
        if not code:
            raise _bad("service_code is required")
        config = await self.service.config(grant.tenant)
        if config.category(code) is None:
            raise UnknownCategory(f"service_code {code!r} was not found")
        lat, lon = _text(form, "lat").strip(), _text(form, "long").strip()
        if bool(lat) != bool(lon):
            raise _bad("lat and long are sent together")
        fields = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        try:
            attributes = o311.answers(fields)
        except o311.Open311Input as exc:
            raise _bad(str(exc)) from None
        photos = []
        for _, upload in form.multi_items():
            if isinstance(upload, UploadFile):
                photos.append(await upload.read(self.service.max_photo_bytes + 1))
                await upload.close()
        name = " ".join(n for n in (_text(form, "first_name"), _text(form, "last_name")) if n)
        reported = await self.service.report(
            grant.tenant,
            actor_of(grant),
            Report(
                category=code,
                description=_text(form, "description"),
                lat=lat or None,
                lon=lon or None,
                address=_text(form, "address_string"),
                address_id=_text(form, "address_id"),
                source="open311",
                attributes=attributes,
                media_url=_text(form, "media_url"),
                photos=photos,
                name=name,
                email=_text(form, "email"),
                phone=_text(form, "phone"),
            ),
        )
        made = reported.occurrence
        notice = o311.notice(config, config.category(code), made.doc["priority"])
        near = [o.number for o in reported.duplicates]
        if near:
            notice = (
                f"{notice or ''} Open reports nearby may be the same problem: service requests"
                f" {', '.join(map(str, near))}."
            ).strip()
        return _answer(
            fmt,
            "service_requests",
            [
                {
                    "service_request_id": str(made.number),
                    # Also the key to the reporter's follow page, which only they are given.
                    "token": made.doc["token"],
                    "service_notice": notice,
                    # Cidade keeps no account of the app's: there is none to name.
                    "account_id": None,
                }
            ],
        )

    # -- FixMyStreet's servicerequestupdates ---------------------------------------------------

    async def list_updates(self, request: Request) -> Response:
        fmt = self._fmt(request)
        tenant = grant_of(request).tenant
        params = request.query_params
        try:
            since, until = o311.window(
                params.get("start_date"), params.get("end_date"), self.service.clock()
            )
        except o311.Open311Input as exc:
            raise _bad(str(exc)) from None
        events = await self.service.store.occurrence_events(
            tenant, since=since, until=until, public=True, limit=o311.MAX_REQUESTS
        )
        updates = [(e, u) for e in events if (u := o311.update(e)) is not None]
        _, public = await self._public(tenant)
        numbers = sorted({e["number"] for e, _ in updates})
        shown: set[int] = set()
        if numbers:
            page = await self.service.list(
                tenant, OccurrenceQuery(numbers=numbers, limit=len(numbers))
            )
            shown = {o.number for o in page.items if o.doc["category"] in public}
        return _answer(
            fmt,
            "service_request_updates",
            [u for e, u in updates if e["number"] in shown],
        )

    async def post_update(self, request: Request) -> Response:
        fmt = self._fmt(request)
        grant = grant_of(request)
        form = await self._form(request)
        raw = _text(form, "service_request_id").strip()
        if not raw:
            raise _bad("service_request_id is required")
        _, public = await self._public(grant.tenant)
        found = await self._occurrence(grant.tenant, raw, public)
        status = _text(form, "status").strip().upper()
        if status and status not in o311.STATUS_ACTIONS:
            raise _bad(f"status is one of {', '.join(o311.STATUS_ACTIONS)}")
        if _text(form, "updated_datetime"):
            try:
                o311.moment(_text(form, "updated_datetime"), "updated_datetime")
            except o311.Open311Input as exc:
                raise _bad(str(exc)) from None
        ref = _text(form, "update_id").strip()
        if len(ref) > 200:
            raise _bad("update_id is at most 200 characters")
        text = _text(form, "description")
        earlier = next((u for u in found.doc["updates"] if ref and u.get("ref") == ref), None)
        if earlier is not None:
            # Sent again (its answer was lost): the same update, recorded once.
            seq = await self._update_seq(grant.tenant, found.number, earlier)
            return self._updated(fmt, seq)
        action = _action(found, status, grant)
        actor = actor_of(grant)
        if action is not None:
            stored = await self.service.act(
                grant.tenant,
                actor,
                found.number,
                action,
                departments=found.doc["departments"] if action == "assign" else (),
                note=text,
                ref=ref,
            )
        else:
            if not text.strip():
                raise _bad("description is required (the text of the update)")
            stored = await self.service.update(
                grant.tenant, actor, found.number, text=text, public=True, ref=ref
            )
        seq = await self._last_seq(grant.tenant, stored)
        return self._updated(fmt, seq)

    def _updated(self, fmt: str, seq: int | None) -> Response:
        return _answer(
            fmt,
            "service_request_updates",
            [{"update_id": str(seq) if seq is not None else None}],
        )

    async def _update_seq(self, tenant: str, number: int, entry: dict[str, Any]) -> int | None:
        """The update_id (its history event's number) of a public update."""
        events = await self.service.store.occurrence_events(
            tenant, number, since=_epoch(entry["at"]), public=True, limit=100
        )
        for event in events:
            if (event.get("update") or {}).get("id") == entry["id"]:
                return int(event["seq"])
        return None

    async def _last_seq(self, tenant: str, stored: StoredOccurrence) -> int | None:
        """The update_id of the change just written: its occurrence's last public event."""
        events = await self.service.store.occurrence_events(
            tenant, stored.number, since=_epoch(stored.doc["updated_at"]), public=True, limit=100
        )
        return int(events[-1]["seq"]) if events else None

    # -- routes --------------------------------------------------------------------------------

    def routes(self) -> list[GuardedRoute]:
        def route(path: str, handlers: dict[str, Any]) -> GuardedRoute:
            return guarded(f"{V2}/{path}", handlers, presents=self.presents)

        return [
            route("discovery.{format}", {"GET": (self.discovery, PUBLIC)}),
            route("services.{format}", {"GET": (self.services, PUBLIC)}),
            route(
                "services/{service_code}.{format}",
                {"GET": (self.service_definition, PUBLIC)},
            ),
            route(
                "requests.{format}",
                {"GET": (self.list_requests, PUBLIC), "POST": (self.post_request, REPORT)},
            ),
            route("requests/{service_request_id}.{format}", {"GET": (self.get_request, PUBLIC)}),
            route("tokens/{token}.{format}", {"GET": (self.token, PUBLIC)}),
            route(
                "servicerequestupdates.{format}",
                {"GET": (self.list_updates, PUBLIC), "POST": (self.post_update, WORK)},
            ),
        ]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _epoch(stored: str) -> float:
    return timefmt.to_epoch(stored)


def _codes(value: str | None, public: set[str]) -> list[str]:
    """service_code's codes, of the services listed (another code matches nothing)."""
    codes = o311.comma_list(value)
    return [c for c in codes if c in public] if codes else sorted(public)


def _agencies(value: str | None) -> list[str] | None:
    codes = [c.strip() for c in (value or "").split("|") if c.strip()]
    return codes or None


def _open(value: str | None) -> bool | None:
    statuses = {s.lower() for s in o311.comma_list(value)}
    unknown = statuses - {"open", "closed"}
    if unknown:
        raise o311.Open311Input(f"status is open or closed, not {', '.join(sorted(unknown))}")
    return None if len(statuses) != 1 else statuses == {"open"}


def _action(found: StoredOccurrence, status: str, grant: Grant) -> str | None:
    """The workflow action a posted FixMyStreet status asks for, when the caller may take it
    from the occurrence's status; None: the update alone."""
    for name in o311.STATUS_ACTIONS.get(status, ()):
        action = ACTIONS[name]
        if found.doc["status"] in action.sources and grant.may(action.permission):
            return name
    return None
