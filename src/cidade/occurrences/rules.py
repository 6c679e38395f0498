"""Sensor rules (docs/occurrences.md): declarative conditions over the hub's entities that raise
one occurrence per entity while they hold, and resolve or flag it when they clear.

A rule names an entity type (and optionally an id pattern), an NGSI-LD ``q`` condition, how
long it must hold before an occurrence is raised (``hold``), when it clears (``clear``: another
``q``, by default "``q`` no longer holds", which a second condition turns into hysteresis) and
for how long it must stay cleared (``clear_hold``), the category and priority of the occurrence,
and what clearing does (``on_clear``: ``resolve`` it, or ``flag`` it with an internal note for
the operations room). ``aggregate`` makes the condition hold over a period rather than over the
last value (NO₂'s hourly mean), ``hours`` limits it to a time of day (noise at night).

Time is the entity's own: an entity's time is the newest ``observedAt`` of its attributes
(its ``modifiedAt`` when none is observed), so "30 minutes" are 30 minutes of the device's
observations, whatever the clock of the platform (a device that buffers, the demo city's
simulated clock) and however often the engine looks.

The ``RuleEngine`` evaluates every tenant's rules every CIDADE_RULES_INTERVAL seconds: one
query of type + ``q`` per rule (the store filters, in SQL, with its indexes), the few entities
it watches read by id, one history query per rule with an aggregate. What it remembers of an
entity (since when its condition holds, which occurrence it raised, since when it clears) is a
row of the store's ``rule_watch`` table, only while something is going on; another worker or a
restart goes on from there. One worker at a time evaluates (a lease in the store).

Storms cannot happen: the hold time must pass before anything is raised (a condition that
flaps faster raises nothing), a raised occurrence stays the entity's while the condition comes
and goes until it has stayed clear for ``clear_hold``, and the store refuses a second open
occurrence of one rule and entity whatever happens (OccurrenceConflict).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from cidade.ngsild import timefmt
from cidade.ngsild.errors import NgsiError
from cidade.ngsild.query.q import And, Exists, NotExists, Or, QNode, evaluate, parse_q
from cidade.occurrences.configuration import ConfigError, OccurrenceConfig, _code, _only, _text
from cidade.occurrences.errors import IllegalTransition, OccurrenceError
from cidade.occurrences.model import PRIORITIES, duration_seconds, iso_duration
from cidade.occurrences.service import Actor, OccurrenceService, Report
from cidade.store.base import EntityQuery, HistoryQuery, Store
from cidade.store.occurrences import OccurrenceConflict, OccurrenceQuery, RuleWatch, rule_key

log = logging.getLogger("cidade.occurrences.rules")

ON_CLEAR = ("resolve", "flag")
AGGREGATES = ("mean", "min", "max")
# An aggregate counts once the instances cover this share of its period (the EU's air quality
# directive asks 75 % of an hour's data for an hourly mean).
COVERAGE = 0.75
MAX_PERIOD = 7 * 86400.0
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
PAGE = 1000  # entities per store query
FIELDS = (
    "id",
    "name",
    "type",
    "id_pattern",
    "q",
    "aggregate",
    "hours",
    "hold",
    "clear",
    "clear_hold",
    "category",
    "priority",
    "on_clear",
    "title",
    "description",
    "enabled",
)
# What a rule's actor may do: raise (report, with the rule's priority), clear (a triage
# action) and note (internal notes are the room's, who read every occurrence).
RULE_PERMISSIONS = frozenset(
    {"occurrences.report", "occurrences.read", "occurrences.triage", "occurrences.work"}
)


@functools.cache
def core_terms() -> Any:
    """The NGSI-LD core @context's TermMap (the one the device agent writes entities with):
    rules name types and attributes as devices' entities do, in short terms."""
    from cidade.hub.jsonld import ContextResolver

    return ContextResolver().core


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The condition holds over a period: ``function`` of ``attribute``'s values observed in
    the ``period`` up to the entity's time replaces its value in ``q``."""

    function: str
    attribute: str
    iri: str
    period: float  # seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "attribute": self.attribute,
            "period": iso_duration(self.period),
        }


@dataclass(frozen=True, slots=True)
class Hours:
    """A time of day, local to ``timezone`` ("" : the engine's, the city's): from ``start`` to
    ``end`` minutes after midnight, across midnight when ``end`` <= ``start``."""

    start: int
    end: int
    timezone: str = ""

    def holds(self, epoch: float, default_zone: str) -> bool:
        zone = _zone(self.timezone or default_zone)
        local = datetime.fromtimestamp(epoch, UTC).astimezone(zone)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def as_dict(self) -> dict[str, Any]:
        out = {"from": _hhmm(self.start), "to": _hhmm(self.end)}
        if self.timezone:
            out["timezone"] = self.timezone
        return out


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    entity_type: str  # as written (a short term or an IRI)
    type_iri: str
    q_text: str
    q: QNode
    category: str
    hold: float = 0.0  # seconds
    clear_text: str = ""
    clear: QNode | None = None  # None: the rule clears when q no longer holds
    clear_hold: float = 0.0
    priority: str | None = None  # None: the category's
    on_clear: str = "resolve"
    id_pattern: str | None = None
    aggregate: Aggregate | None = None
    hours: Hours | None = None
    name: str = ""
    title: str = ""
    description: str = ""  # a template: {attribute}, {attribute:.0%}, {id}, {value}, {since}
    enabled: bool = True
    terms: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return self.name or self.id

    def as_dict(self) -> dict[str, Any]:
        """The rule as it is written (parse_rule's input)."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": self.entity_type,
            "q": self.q_text,
            "hold": iso_duration(self.hold),
            "clear_hold": iso_duration(self.clear_hold),
            "category": self.category,
            "on_clear": self.on_clear,
            "enabled": self.enabled,
        }
        for key, value in (
            ("id_pattern", self.id_pattern),
            ("clear", self.clear_text),
            ("priority", self.priority),
            ("title", self.title),
            ("description", self.description),
            ("aggregate", self.aggregate.as_dict() if self.aggregate else None),
            ("hours", self.hours.as_dict() if self.hours else None),
        ):
            if value:
                out[key] = value
        return out

    def describe(self, entity: dict[str, Any], since: float, value: Any = None) -> str:
        """The occurrence's description: the rule's template filled with the entity's values,
        or a sentence saying which condition held, where and since when."""
        if self.description:
            return render(self.description, entity, self.terms, since=since, value=value)
        where = _value(entity, self.terms.expand("name")) or entity.get("id")
        held = f" for {iso_duration(self.hold)}" if self.hold else ""
        what = (
            f"{self.aggregate.function} over {iso_duration(self.aggregate.period)}: "
            if (self.aggregate)
            else ""
        )
        shown = f" ({_show(value)})" if value is not None else ""
        return (
            f"{self.label}: {what}{self.q_text}{shown} held{held} at {where},"
            f" since {_display(since)}."
        )


# -- parsing -----------------------------------------------------------------------------------


def parse_rule(
    doc: Mapping[str, Any],
    key: str | None = None,
    *,
    categories: Iterable[str] | None = None,
    terms: Any = None,
) -> Rule:
    """A rule as a configuration file or the admin API gives it -> Rule; ConfigError naming
    the rule and the field that does not hold. ``key``: the rule's id when the caller keeps it
    apart (a tenant's setting); ``categories``: the codes the rule's category must be among;
    ``terms``: what names expand with (default: the NGSI-LD core @context)."""
    terms = terms or core_terms()
    if not isinstance(doc, Mapping):
        raise ConfigError(f"rule {key!r}: an object expected")
    rid = key if key is not None else doc.get("id")
    what = f"rule {rid!r}"
    _only(doc, FIELDS, what)
    if key is not None and doc.get("id") not in (None, key):
        raise ConfigError(f"{what}.id: {doc.get('id')!r} differs from the rule's key")
    rid = _code(rid, what)
    entity_type = doc.get("type")
    if not isinstance(entity_type, str) or not entity_type:
        raise ConfigError(f"{what}.type: the entity type the rule watches (e.g. WasteContainer)")
    type_iri = _expand(terms, entity_type, f"{what}.type", "entity type")
    q_text, q = _q(doc.get("q"), terms, f"{what}.q", required=True)
    clear_text, clear = _q(doc.get("clear"), terms, f"{what}.clear", required=False)
    hold = _duration(doc.get("hold", 0), f"{what}.hold")
    clear_hold = _duration(doc.get("clear_hold", doc.get("hold", 0)), f"{what}.clear_hold")
    category = _code(doc.get("category"), f"{what}.category")
    if categories is not None and category not in set(categories):
        raise ConfigError(f"{what}.category: no category {category!r} is configured")
    priority = doc.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise ConfigError(f"{what}.priority: one of {', '.join(PRIORITIES)}")
    on_clear = doc.get("on_clear", "resolve")
    if on_clear not in ON_CLEAR:
        raise ConfigError(f"{what}.on_clear: one of {', '.join(ON_CLEAR)} (got {on_clear!r})")
    id_pattern = doc.get("id_pattern")
    if id_pattern is not None:
        if not isinstance(id_pattern, str) or not id_pattern:
            raise ConfigError(f"{what}.id_pattern: a regular expression over entity ids")
        try:
            re.compile(id_pattern)
        except re.error as exc:
            raise ConfigError(f"{what}.id_pattern: not a regular expression ({exc})") from None
    aggregate = _aggregate(doc.get("aggregate"), terms, q, what)
    hours = _hours(doc.get("hours"), what)
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{what}.enabled: true or false")
    description = _text(doc.get("description"), f"{what}.description", required=False, limit=2000)
    _check_template(description, f"{what}.description")
    return Rule(
        id=rid,
        entity_type=entity_type,
        type_iri=type_iri,
        q_text=q_text,
        q=q,
        category=category,
        hold=hold,
        clear_text=clear_text,
        clear=clear,
        clear_hold=clear_hold,
        priority=priority,
        on_clear=on_clear,
        id_pattern=id_pattern,
        aggregate=aggregate,
        hours=hours,
        name=_text(doc.get("name"), f"{what}.name", required=False, limit=200),
        title=_text(doc.get("title"), f"{what}.title", required=False, limit=200),
        description=description,
        enabled=enabled,
        terms=terms,
    )


def parse_rules(
    docs: Mapping[str, Mapping[str, Any]], categories: Iterable[str] | None = None
) -> dict[str, Rule]:
    """Every rule of a configuration, parsed (the first that does not hold: ConfigError)."""
    return {k: parse_rule(d, k, categories=categories) for k, d in docs.items()}


def _expand(terms: Any, name: str, what: str, kind: str) -> str:
    from cidade.hub.model import expand_name

    try:
        return expand_name(name, terms, kind)
    except NgsiError as exc:
        raise ConfigError(f"{what}: {exc.detail}") from None


def _q(text: object, terms: Any, what: str, *, required: bool) -> tuple[str, QNode | None]:
    if text is None and not required:
        return "", None
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{what}: an NGSI-LD q condition (e.g. fillingLevel>=0.9)")

    def expand(name: str) -> str:
        return _expand(terms, name, what, "attribute name")

    try:
        return text, parse_q(text, expand)
    except NgsiError as exc:
        raise ConfigError(f"{what}: {exc.detail}") from None


def _duration(value: object, what: str) -> float:
    try:
        seconds = duration_seconds(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if seconds > MAX_PERIOD:
        raise ConfigError(f"{what}: at most {iso_duration(MAX_PERIOD)}")
    return seconds


def q_attributes(node: QNode) -> set[str]:
    """The attribute IRIs a q tree names."""
    if isinstance(node, And | Or):
        return set().union(*(q_attributes(n) for n in node.items))
    if isinstance(node, Exists | NotExists):
        return {node.path.attr}
    return {node.path.attr}  # type: ignore[union-attr]


def _aggregate(value: object, terms: Any, q: QNode | None, what: str) -> Aggregate | None:
    if value is None:
        return None
    where = f"{what}.aggregate"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {{function, attribute, period}}")
    _only(value, ("function", "attribute", "period"), where)
    function = value.get("function")
    if function not in AGGREGATES:
        raise ConfigError(f"{where}.function: one of {', '.join(AGGREGATES)} (got {function!r})")
    attribute = value.get("attribute")
    if not isinstance(attribute, str) or not attribute:
        raise ConfigError(f"{where}.attribute: the attribute aggregated (e.g. no2)")
    iri = _expand(terms, attribute, f"{where}.attribute", "attribute name")
    if q is not None and iri not in q_attributes(q):
        raise ConfigError(f"{where}.attribute: q does not name {attribute!r}, so it is not tested")
    period = _duration(value.get("period"), f"{where}.period")
    if period <= 0:
        raise ConfigError(f"{where}.period: longer than nothing (e.g. PT1H)")
    return Aggregate(function, attribute, iri, period)


_HHMM = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")


def _minutes(value: object, what: str) -> int:
    m = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if m is None or (m.group(1) == "24" and m.group(2) != "00"):
        raise ConfigError(f"{what}: a local time HH:MM (e.g. 23:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _hours(value: object, what: str) -> Hours | None:
    if value is None:
        return None
    where = f"{what}.hours"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {{from, to, timezone}}, e.g. from 23:00 to 07:00")
    _only(value, ("from", "to", "timezone"), where)
    start = _minutes(value.get("from"), f"{where}.from") % 1440
    end = _minutes(value.get("to"), f"{where}.to") % 1440
    if start == end:
        raise ConfigError(f"{where}: from and to are the same time (leave hours out: always)")
    zone = value.get("timezone", "")
    if not isinstance(zone, str):
        raise ConfigError(f"{where}.timezone: an IANA time zone such as Europe/Lisbon")
    if zone:
        try:
            _zone(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{where}.timezone: {zone!r} is not an IANA time zone such as Europe/Lisbon"
            ) from None
    return Hours(start, end, zone)


# -- descriptions ------------------------------------------------------------------------------

# {name} or {name:format}: a short name (the first colon starts the number format)
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)(?::([^{}]*))?\}")
_SPECIALS = ("id", "type", "since", "value")


def _check_template(template: str, what: str) -> None:
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        raise ConfigError(f"{what}: braces hold a name, as in {{name}} or {{fillingLevel:.0%}}")
    for m in _PLACEHOLDER.finditer(template):
        if m.group(2):
            try:
                format(0.5, m.group(2))
            except ValueError:
                raise ConfigError(
                    f"{what}: {{{m.group(1)}:{m.group(2)}}} is not a number format (e.g. .1f, .0%)"
                ) from None


def _value(entity: dict[str, Any], iri: str) -> Any:
    """The value of an entity's attribute (its first instance), None when absent."""
    instances = (entity.get("attrs") or {}).get(iri) or ()
    for inst in instances:
        for member in (
            "value",
            "object",
            "vocab",
            "languageMap",
            "valueList",
            "objectList",
            "json",
        ):
            if member in inst:
                v = inst[member]
                return v.get("@value") if isinstance(v, dict) and "@value" in v else v
    return None


def _show(value: Any, spec: str = "") -> str:
    if isinstance(value, bool) or value is None:
        return "unknown" if value is None else str(value).lower()
    if isinstance(value, int | float):
        if spec:
            return format(value, spec)
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _display(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(
    template: str, entity: dict[str, Any], terms: Any, *, since: float, value: Any = None
) -> str:
    """A description template filled in: ``{attribute}`` (a short name, as in q) or
    ``{attribute:.0%}`` (a number format) the entity's value, ``{id}``, ``{type}``, ``{since}``
    (when the condition began to hold) and ``{value}`` (an aggregate's value)."""

    def fill(m: re.Match[str]) -> str:
        name, spec = m.group(1), m.group(2) or ""
        if name == "id":
            return str(entity.get("id"))
        if name == "type":
            types = entity.get("type") or []
            return ", ".join(t.rsplit("/", 1)[-1] for t in types)
        if name == "since":
            return _display(since)
        if name == "value":
            return _show(value, spec)
        try:
            return _show(_value(entity, terms.expand(name)), spec)
        except ValueError:
            return _show(_value(entity, terms.expand(name)))

    return _PLACEHOLDER.sub(fill, template)


# -- the default rules: the demo city's devices (Smart Data Models) ----------------------------

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "id": "waste-container-full",
        "name": "Waste container full",
        "type": "WasteContainer",
        "q": "fillingLevel>=0.9",
        "hold": "PT30M",
        # emptied, not just a bag less: no new occurrence while it hovers around 90 %
        "clear": "fillingLevel<0.5",
        "clear_hold": "PT0S",
        "category": "waste-overflow",
        "on_clear": "resolve",
        "title": "Waste container full",
        "description": "The {storedWasteKind} container at {name} is {fillingLevel:.0%} full"
        " (sensor {id}), 90 % or more since {since}.",
    },
    {
        "id": "no2-hourly-mean",
        "name": "NO2 hourly mean above 200 µg/m³",
        "type": "AirQualityObserved",
        "q": "no2>200",
        "aggregate": {"function": "mean", "attribute": "no2", "period": "PT1H"},
        "hold": "PT0S",
        "clear_hold": "PT1H",
        "category": "air-quality",
        "priority": "high",
        "on_clear": "resolve",
        "title": "NO2 above the hourly limit",
        "description": "The hourly mean of NO2 at {name} is {value:.0f} µg/m³, above the limit"
        " of 200 µg/m³ (EU Directive 2008/50/EC), since {since} (station {id}).",
    },
    {
        "id": "noise-night-limit",
        "name": "Noise above the night limit",
        "type": "NoiseLevelObserved",
        # Portugal's Regulamento Geral do Ruído: 55 dB(A) at night (23:00-07:00) in mixed zones
        "q": "LAeq>55",
        "hours": {"from": "23:00", "to": "07:00"},
        "hold": "PT30M",
        "clear_hold": "PT15M",
        "category": "noise",
        "on_clear": "resolve",
        "title": "Noise above the night limit",
        "description": "LAeq at {name} is {LAeq:.0f} dB(A), above the night limit of 55 dB(A),"
        " since {since} (station {id}).",
    },
    {
        "id": "streetlight-fault",
        "name": "Streetlight fault",
        "type": "Streetlight",
        "q": 'status!="ok"',
        "hold": "PT10M",
        "clear_hold": "PT10M",
        "category": "streetlight-fault",
        "on_clear": "resolve",
        "title": "Streetlight fault",
        "description": "The streetlight at {name} reports {status} since {since} (lamp {id}).",
    },
    {
        "id": "traffic-congestion",
        "name": "Traffic congestion at a counter",
        "type": "TrafficFlowObserved",
        "q": "congested==true",
        "hold": "PT15M",
        "clear_hold": "PT10M",
        "category": "traffic-congestion",
        "on_clear": "resolve",
        "title": "Traffic congestion",
        "description": "Congestion at {name}: occupancy {occupancy:.0%}, average speed"
        " {averageVehicleSpeed:.0f} km/h, since {since} (counter {id}).",
    },
    {
        "id": "bollard-fault",
        "name": "Bollard fault",
        "type": "Device",
        "id_pattern": "^urn:ngsi-ld:Device:bollard-",
        "q": 'deviceState=="fault"',
        "hold": "PT2M",
        "clear_hold": "PT5M",
        "category": "bollard-fault",
        "priority": "high",
        "on_clear": "flag",
        "title": "Bollard in fault",
        "description": "The bollard at {name} reports a fault since {since} (device {id}).",
    },
    {
        "id": "traffic-light-fault",
        "name": "Traffic-light controller fault",
        "type": "Device",
        "id_pattern": "^urn:ngsi-ld:Device:tlight-",
        "q": 'deviceState=="fault"',
        "hold": "PT2M",
        "clear_hold": "PT5M",
        "category": "traffic-light-fault",
        "priority": "urgent",
        "on_clear": "flag",
        "title": "Traffic lights flashing: controller in fault",
        "description": "The traffic-light controller at {name} is in fault (flashing amber)"
        " since {since} (device {id}).",
    },
)


# -- the engine --------------------------------------------------------------------------------


def entity_time(entity: dict[str, Any]) -> float | None:
    """The entity's own time: its newest observation (observedAt), else its modifiedAt."""
    newest = ""
    for instances in (entity.get("attrs") or {}).values():
        for inst in instances:
            at = inst.get("observedAt") if isinstance(inst, dict) else None
            if isinstance(at, str) and at > newest:
                newest = at
    newest = newest or entity.get("modifiedAt") or ""
    try:
        return timefmt.to_epoch(newest) if newest else None
    except ValueError:
        return None


def entity_place(entity: dict[str, Any], terms: Any) -> tuple[float | None, float | None, str]:
    """(lat, lon, address) of an entity: its location's point (a shape's centroid), and its
    address or name when it has no location."""
    geometry = _value(entity, LOCATION)
    if isinstance(geometry, dict) and geometry.get("type"):
        try:
            if geometry["type"] == "Point":
                lon, lat = geometry["coordinates"][:2]
            else:
                from shapely.geometry import shape

                c = shape(geometry).centroid
                lon, lat = c.x, c.y
            if isinstance(lat, int | float) and isinstance(lon, int | float):
                return float(lat), float(lon), ""
        except Exception:  # a shape shapely cannot read: the address then
            pass
    address = _value(entity, terms.expand("address"))
    if isinstance(address, dict):
        address = ", ".join(
            str(address[k])
            for k in ("streetAddress", "addressLocality")
            if isinstance(address.get(k), str)
        )
    text = address or _value(entity, terms.expand("name")) or entity.get("id")
    return None, None, str(text)[:500]


@dataclass(slots=True)
class Seen:
    """One entity as a rule sees it in a turn: the entity (an aggregate's value in place of the
    attribute's), its time, whether the condition holds, and the aggregate's value."""

    entity: dict[str, Any]
    at: float
    holds: bool
    value: Any = None


class RuleEngine:
    """Evaluates the sensor rules of every tenant, every ``interval`` seconds (``run``), or
    once (``turn``)."""

    def __init__(
        self,
        store: Store,
        service: OccurrenceService,
        *,
        interval: float = 10.0,
        timezone: str | Callable[[], str] = "UTC",
        owner: str | None = None,
        lease: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.service = service
        self.interval = interval
        self._timezone = timezone
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease if lease is not None else max(60.0, 3 * interval)
        self.clock = clock
        self._parsed: dict[tuple[str, bytes], Rule | None] = {}
        self.counts: Counter[str] = Counter()

    @property
    def timezone(self) -> str:
        zone = self._timezone() if callable(self._timezone) else self._timezone
        return zone or "UTC"

    # -- running

    async def run(self) -> None:
        """Evaluate every ``interval`` seconds while this worker holds the lease; until
        cancelled (the lease is then given back)."""
        try:
            while True:
                started = time.monotonic()
                try:
                    if await self.store.claim_rule_lease(self.owner, self.clock(), self.lease):
                        await self.turn()
                except Exception:
                    log.exception("sensor rules: a turn failed")
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            try:
                await asyncio.shield(self.store.release_rule_lease(self.owner))
            except Exception:
                log.debug("sensor rules: the lease was not given back", exc_info=True)

    async def turn(self) -> Counter[str]:
        """One evaluation of every rule of every tenant: what it did, counted (raised,
        cleared, flagged, ...)."""
        done: Counter[str] = Counter()
        for tenant in await self.store.tenant_names():
            try:
                await self.evaluate_tenant(tenant, done)
            except Exception:
                log.exception("sensor rules: tenant %r could not be evaluated", tenant)
        self.counts.update(done)
        return done

    def rules_of(self, tenant: str, config: OccurrenceConfig) -> list[Rule]:
        """The tenant's rules, parsed once per version of each (a rule that does not hold is
        left out, said once in the log)."""
        out = []
        for key, doc in config.rules.items():
            raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)
            cache_key = (f"{tenant}\0{key}", raw)
            if cache_key not in self._parsed:
                try:
                    self._parsed[cache_key] = parse_rule(
                        {k: v for k, v in doc.items() if k != "id"}, key
                    )
                except ConfigError as exc:
                    log.warning("sensor rules: tenant %r: %s; left out", tenant, exc)
                    self._parsed[cache_key] = None
            rule = self._parsed[cache_key]
            if rule is not None and rule.enabled:
                out.append(rule)
        if len(self._parsed) > 10_000:
            self._parsed.clear()
        return out

    async def evaluate_tenant(self, tenant: str, done: Counter[str]) -> None:
        config = await self.service.config(tenant)
        rules = self.rules_of(tenant, config)
        watches: dict[str, dict[str, RuleWatch]] = {}
        for w in await self.store.rule_watches(tenant):
            watches.setdefault(w.rule, {})[w.entity] = w
        if not rules and not watches:
            return
        saved: list[RuleWatch] = []
        dropped: list[tuple[str, str]] = []
        for rule in rules:
            if config.category(rule.category) is None:
                self._say_once(tenant, rule, f"no category {rule.category!r}: the rule waits")
                continue
            try:
                await self.evaluate(tenant, rule, watches.pop(rule.id, {}), saved, dropped, done)
            except Exception:
                log.exception("sensor rules: tenant %r, rule %s failed", tenant, rule.id)
        # Rules removed or disabled: their watches go, their occurrences stay as they are.
        for rule_id, gone in watches.items():
            dropped.extend((rule_id, entity) for entity in gone)
        gone_keys = set(dropped)
        kept = {(w.rule, w.entity): w for w in saved if (w.rule, w.entity) not in gone_keys}
        if kept or dropped:
            await self.store.save_rule_watches(tenant, list(kept.values()), dropped, self.clock())

    def _say_once(self, tenant: str, rule: Rule, text: str) -> None:
        key = (f"{tenant}\0{rule.id}\0said", text.encode())
        if key not in self._parsed:
            self._parsed[key] = None
            log.warning("sensor rules: tenant %r, rule %s: %s", tenant, rule.id, text)

    # -- one rule

    async def evaluate(
        self,
        tenant: str,
        rule: Rule,
        watches: dict[str, RuleWatch],
        saved: list[RuleWatch],
        dropped: list[tuple[str, str]],
        done: Counter[str],
    ) -> None:
        seen = await self.look(tenant, rule, watches)
        for eid, s in seen.items():
            w = watches.get(eid)
            if s.holds:
                if w is None:
                    w = RuleWatch(rule.id, eid, "holding", s.at)
                    changed = True
                elif w.state == "raised":
                    changed = w.clear_since is not None
                    w.clear_since = None  # it clears only after clear_hold without a break
                else:
                    changed = False
                if w.state == "holding" and s.at - w.since >= rule.hold:
                    number = await self.raise_occurrence(tenant, rule, eid, s, w.since, done)
                    if number is not None:
                        w.state, w.number, w.clear_since = "raised", number, None
                        changed = True
                if changed:
                    saved.append(w)
            elif w is not None:
                if w.state == "holding":
                    dropped.append((rule.id, eid))  # broke before the hold: nothing raised
                    done["broke"] += 1
                    continue
                if not self.clears(rule, s):
                    if w.clear_since is not None:  # between the two conditions: hysteresis
                        w.clear_since = None
                        saved.append(w)
                    continue
                if w.clear_since is None:
                    w.clear_since = s.at
                    saved.append(w)
                if s.at - w.clear_since >= rule.clear_hold:
                    await self.clear_occurrence(tenant, rule, w, s, done)
                    dropped.append((rule.id, eid))
        # Watched entities that are gone from the hub: the condition cannot hold any more.
        for eid, w in watches.items():
            if eid in seen:
                continue
            if w.state == "raised":
                await self.clear_occurrence(tenant, rule, w, None, done)
            dropped.append((rule.id, eid))

    def clears(self, rule: Rule, s: Seen) -> bool:
        """Whether a raised entity's condition counts as cleared (it does not hold, already):
        outside the rule's hours, or without a clear condition, or when that holds."""
        if rule.hours is not None and not rule.hours.holds(s.at, self.timezone):
            return True
        return rule.clear is None or evaluate(rule.clear, s.entity)

    async def look(
        self, tenant: str, rule: Rule, watches: Mapping[str, RuleWatch]
    ) -> dict[str, Seen]:
        """The entities the rule must decide on this turn: those whose condition holds, and
        those it watches (whose condition may be clearing)."""
        seen: dict[str, Seen] = {}
        if rule.aggregate is None:
            # The store selects by type and q with its indexes: only the few that hold come.
            for e in await self._query(tenant, rule, rule.q):
                at = entity_time(e)
                if at is not None:
                    seen[e["id"]] = Seen(e, at, self._in_hours(rule, at))
            rest = [eid for eid in watches if eid not in seen]
            if rest:
                for e in await self.store.get_entities(tenant, rest):
                    at = entity_time(e)
                    if at is not None and rule.type_iri in (e.get("type") or ()):
                        seen[e["id"]] = Seen(e, at, False)
            return seen
        # An aggregate is a value no entity holds: every entity of the type is looked at, with
        # one history query for all of them.
        entities = await self._query(tenant, rule, None)
        times = {e["id"]: entity_time(e) for e in entities}
        times = {k: v for k, v in times.items() if v is not None}
        if not times:
            return seen
        agg = rule.aggregate
        history = await self.store.history(
            tenant,
            HistoryQuery(
                entity_ids=list(times),
                attrs=[agg.iri],
                after=timefmt.from_epoch(min(times.values()) - agg.period),
                values_only=True,
            ),
        )
        for e in entities:
            eid = e["id"]
            if eid not in times:
                continue
            at = times[eid]
            value = aggregate_value(agg, (history.get(eid) or {}).get(agg.iri) or (), at)
            attrs = dict(e.get("attrs") or {})
            if value is None:
                attrs.pop(agg.iri, None)
            else:
                attrs[agg.iri] = [{"type": "Property", "value": value}]
            shown = {**e, "attrs": attrs}
            holds = value is not None and self._in_hours(rule, at) and evaluate(rule.q, shown)
            seen[eid] = Seen(shown, at, holds, value)
        return seen

    def _in_hours(self, rule: Rule, at: float) -> bool:
        return rule.hours is None or rule.hours.holds(at, self.timezone)

    async def _query(self, tenant: str, rule: Rule, q: QNode | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = await self.store.query(
                tenant,
                EntityQuery(
                    types=rule.type_iri, id_pattern=rule.id_pattern, q=q, limit=PAGE, offset=offset
                ),
            )
            out.extend(page.entities)
            if len(page.entities) < PAGE:
                return out
            offset += PAGE

    # -- what the rule does

    def actor(self, rule: Rule) -> Actor:
        return Actor(f"rule:{rule.id}", RULE_PERMISSIONS)

    async def raise_occurrence(
        self, tenant: str, rule: Rule, eid: str, s: Seen, since: float, done: Counter[str]
    ) -> int | None:
        """The occurrence of the rule and entity: a new one, or the one already open (the
        condition came back after a flag, or a turn was cut short after raising it)."""
        lat, lon, address = entity_place(s.entity, rule.terms)
        report = Report(
            category=rule.category,
            title=rule.title,
            description=rule.describe(s.entity, since, s.value)[:4000],
            lat=lat,
            lon=lon,
            address=address,
            source="sensor",
            priority=rule.priority,
            entities=[eid],
            rule={"id": rule.id, "entity": eid},
            at=timefmt.from_epoch(since),
        )
        try:
            reported = await self.service.report(tenant, self.actor(rule), report)
        except OccurrenceConflict:
            page = await self.store.query_occurrences(
                tenant, OccurrenceQuery(rule_key=rule_key(rule.id, eid), open=True, limit=1)
            )
            if not page.items:
                return None  # closed in between: the next turn raises it
            number = page.items[0].number
            await self.service.update(
                tenant,
                self.actor(rule),
                number,
                text=f"{rule.label}: the condition holds again since {_display(since)}.",
                public=False,
            )
            done["again"] += 1
            return number
        except OccurrenceError as exc:
            self._say_once(tenant, rule, f"cannot raise an occurrence: {exc.detail}")
            return None
        done["raised"] += 1
        log.info(
            "sensor rules: tenant %r, rule %s raised occurrence %d for %s",
            tenant,
            rule.id,
            reported.occurrence.number,
            eid,
        )
        return reported.occurrence.number

    async def clear_occurrence(
        self, tenant: str, rule: Rule, w: RuleWatch, s: Seen | None, done: Counter[str]
    ) -> None:
        """The condition cleared: resolve the occurrence (``clear``, with a public update) or
        flag it (an internal note), unless people closed it already."""
        if w.number is None:
            return
        current = await self.store.get_occurrence(tenant, w.number)
        if current is None or not current.doc.get("open"):
            return
        if s is None:
            why = f"{rule.label}: the entity {w.entity} is no longer in the hub."
        else:
            why = (
                f"{rule.label}: the condition no longer holds since"
                f" {_display(w.clear_since if w.clear_since is not None else s.at)}."
            )
        actor = self.actor(rule)
        try:
            if rule.on_clear == "resolve":
                await self.service.act(tenant, actor, w.number, "clear", note=f"Cleared. {why}")
                done["cleared"] += 1
            else:
                await self.service.update(tenant, actor, w.number, text=why, public=False)
                done["flagged"] += 1
        except IllegalTransition:
            pass  # people closed or merged it meanwhile: nothing left to do


def aggregate_value(agg: Aggregate, instances: Iterable[dict[str, Any]], at: float) -> Any:
    """``agg.function`` of the numbers observed in (at - period, at], or None when they cover
    less than COVERAGE of the period."""
    start = at - agg.period
    numbers: list[float] = []
    earliest = math.inf
    for inst in instances:
        t = inst.get("_t")
        v = inst.get("value")
        if not isinstance(t, str) or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        epoch = timefmt.to_epoch(t)
        if start < epoch <= at:
            numbers.append(v)
            earliest = min(earliest, epoch)
    if not numbers or at - earliest < COVERAGE * agg.period:
        return None
    if agg.function == "mean":
        return sum(numbers) / len(numbers)
    return min(numbers) if agg.function == "min" else max(numbers)
