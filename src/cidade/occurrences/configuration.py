"""How a city configures its occurrences (docs/occurrences.md): departments, categories (with
their deadlines, duplicate rules and the questions asked of a reporter), sensor rules and areas.

They come from a file read at start (CIDADE_OCCURRENCES_CONFIG, TOML) over the defaults below,
then from what a tenant's administrators set through the API (kept in the store); each layer
replaces the one below it entry by entry (by code), and an entry set to nothing removes it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from cidade.occurrences.model import PRIORITIES, duration_seconds, iso_duration

_CODE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
ATTRIBUTE_TYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")


class ConfigError(ValueError):
    """A configuration entry that does not hold (the message names the entry and the field)."""


def _code(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _CODE_CHARS or len(value) > 64:
        raise ConfigError(
            f"{what}: a code is 1 to 64 lower-case letters, digits, '-' or '_' (got {value!r})"
        )
    return value


def _text(value: object, what: str, *, required: bool = True, limit: int = 500) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ConfigError(f"{what}: text of 1 to {limit} characters expected")
    return value.strip()


def _only(entry: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{what}: an object expected")
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {', '.join(unknown)}")


@dataclass(frozen=True, slots=True)
class Department:
    code: str
    name: str
    email: str = ""  # where breaches and new tasks are announced (optional)
    webhook: str = ""
    description: str = ""

    @classmethod
    def parse(cls, entry: Mapping[str, Any], code: str | None = None) -> Department:
        what = f"department {code or entry.get('code')!r}"
        _only(entry, ("code", "name", "email", "webhook", "description"), what)
        return cls(
            code=_code(code or entry.get("code"), what),
            name=_text(entry.get("name"), f"{what}.name"),
            email=_text(entry.get("email"), f"{what}.email", required=False),
            webhook=_text(entry.get("webhook"), f"{what}.webhook", required=False),
            description=_text(entry.get("description"), f"{what}.description", required=False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "email": self.email,
            "webhook": self.webhook,
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class Attribute:
    """An Open311 attribute: a question asked of the reporter of a category."""

    code: str
    description: str
    datatype: str = "string"
    required: bool = False
    variable: bool = True
    order: int = 1
    datatype_description: str = ""
    values: tuple[tuple[str, str], ...] = ()  # (key, name) for the list types

    @classmethod
    def parse(cls, entry: Mapping[str, Any], what: str, order: int) -> Attribute:
        _only(
            entry,
            (
                "code",
                "description",
                "datatype",
                "required",
                "variable",
                "order",
                "datatype_description",
                "values",
            ),
            what,
        )
        datatype = entry.get("datatype", "string")
        if datatype not in ATTRIBUTE_TYPES:
            raise ConfigError(f"{what}.datatype: one of {', '.join(ATTRIBUTE_TYPES)}")
        values: list[tuple[str, str]] = []
        for v in entry.get("values") or ():
            if isinstance(v, Mapping) and "key" in v and "name" in v:
                values.append((str(v["key"]), str(v["name"])))
            else:
                raise ConfigError(f"{what}.values: each a {{key, name}}")
        if datatype.endswith("valuelist") and not values:
            raise ConfigError(f"{what}.values: a list type needs values")
        for flag in ("required", "variable"):
            if not isinstance(entry.get(flag, False), bool):
                raise ConfigError(f"{what}.{flag}: true or false")
        return cls(
            code=_code(entry.get("code"), what),
            description=_text(entry.get("description"), f"{what}.description"),
            datatype=datatype,
            required=entry.get("required", False),
            variable=entry.get("variable", True),
            order=int(entry.get("order", order)),
            datatype_description=_text(
                entry.get("datatype_description"), f"{what}.datatype_description", required=False
            ),
            values=tuple(values),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "description": self.description,
            "datatype": self.datatype,
            "required": self.required,
            "variable": self.variable,
            "order": self.order,
            "datatype_description": self.datatype_description,
            "values": [{"key": k, "name": n} for k, n in self.values],
        }


# Response (triage) and resolution deadlines per priority, in seconds.
DEFAULT_DEADLINES: dict[str, tuple[float, float]] = {
    "urgent": (15 * 60, 4 * 3600),
    "high": (2 * 3600, 24 * 3600),
    "normal": (8 * 3600, 5 * 86400),
    "low": (2 * 86400, 20 * 86400),
}


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    name: str
    group: str
    department: str
    description: str = ""
    priority: str = "normal"
    deadlines: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_DEADLINES)
    )
    duplicate_radius: float = 250.0  # metres
    duplicate_window: float = 7 * 86400.0  # seconds
    attributes: tuple[Attribute, ...] = ()
    keywords: tuple[str, ...] = ()
    public: bool = True  # offered to citizens (Open311 services); sensor-only ones are not

    @classmethod
    def parse(cls, entry: Mapping[str, Any], code: str | None = None) -> Category:
        what = f"category {code or entry.get('code')!r}"
        _only(
            entry,
            (
                "code",
                "name",
                "group",
                "department",
                "description",
                "priority",
                "deadlines",
                "duplicate_radius",
                "duplicate_window",
                "attributes",
                "keywords",
                "public",
            ),
            what,
        )
        priority = entry.get("priority", "normal")
        if priority not in PRIORITIES:
            raise ConfigError(f"{what}.priority: one of {', '.join(PRIORITIES)}")
        deadlines = dict(DEFAULT_DEADLINES)
        given = entry.get("deadlines") or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"{what}.deadlines: an object by priority")
        for p, d in given.items():
            if p not in PRIORITIES or not isinstance(d, Mapping):
                raise ConfigError(
                    f"{what}.deadlines: keys are priorities, each {{response, resolution}}"
                )
            _only(d, ("response", "resolution"), f"{what}.deadlines.{p}")
            try:
                response = duration_seconds(d.get("response", deadlines[p][0]))
                resolution = duration_seconds(d.get("resolution", deadlines[p][1]))
            except ValueError as exc:
                raise ConfigError(f"{what}.deadlines.{p}: {exc}") from None
            deadlines[p] = (response, resolution)
        try:
            radius = float(entry.get("duplicate_radius", 250))
            window = duration_seconds(entry.get("duplicate_window", "P7D"))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what}: duplicate_radius/duplicate_window: {exc}") from None
        if not 0 <= radius <= 10_000:
            raise ConfigError(f"{what}.duplicate_radius: metres, 0 to 10000")
        attributes = entry.get("attributes") or ()
        if not isinstance(attributes, list | tuple):
            raise ConfigError(f"{what}.attributes: a list")
        parsed = tuple(
            Attribute.parse(a, f"{what}.attributes[{i}]", i + 1) for i, a in enumerate(attributes)
        )
        if len({a.code for a in parsed}) != len(parsed):
            raise ConfigError(f"{what}.attributes: codes must differ")
        keywords = entry.get("keywords") or ()
        if not isinstance(keywords, list | tuple) or not all(isinstance(k, str) for k in keywords):
            raise ConfigError(f"{what}.keywords: a list of words")
        if not isinstance(entry.get("public", True), bool):
            raise ConfigError(f"{what}.public: true or false")
        return cls(
            code=_code(code or entry.get("code"), what),
            name=_text(entry.get("name"), f"{what}.name"),
            group=_text(entry.get("group"), f"{what}.group", limit=100),
            department=_code(entry.get("department"), f"{what}.department"),
            description=_text(entry.get("description"), f"{what}.description", required=False),
            priority=priority,
            deadlines=deadlines,
            duplicate_radius=radius,
            duplicate_window=window,
            attributes=parsed,
            keywords=tuple(keywords),
            public=entry.get("public", True),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "group": self.group,
            "department": self.department,
            "description": self.description,
            "priority": self.priority,
            "deadlines": {
                p: {"response": iso_duration(r), "resolution": iso_duration(s)}
                for p, (r, s) in self.deadlines.items()
            },
            "duplicate_radius": self.duplicate_radius,
            "duplicate_window": iso_duration(self.duplicate_window),
            "attributes": [a.as_dict() for a in self.attributes],
            "keywords": list(self.keywords),
            "public": self.public,
        }


@dataclass(frozen=True, slots=True)
class Area:
    """A named part of the city (a parish, a district) that statistics count by."""

    code: str
    name: str
    geometry: BaseGeometry

    @classmethod
    def parse(cls, entry: Mapping[str, Any], code: str | None = None) -> Area:
        what = f"area {code or entry.get('code')!r}"
        _only(entry, ("code", "name", "geometry"), what)
        try:
            geometry = shape(entry["geometry"])
        except Exception as exc:
            raise ConfigError(
                f"{what}.geometry: a GeoJSON Polygon or MultiPolygon ({exc})"
            ) from None
        if geometry.geom_type not in ("Polygon", "MultiPolygon") or not geometry.is_valid:
            raise ConfigError(f"{what}.geometry: a valid GeoJSON Polygon or MultiPolygon")
        return cls(_code(code or entry.get("code"), what), _text(entry.get("name"), what), geometry)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "geometry": self.geometry.__geo_interface__}


def _department(code: str, name: str, description: str) -> Department:
    return Department(code=code, name=name, description=description)


# Porto's Integrated Management Centre brings these into one room.
DEFAULT_DEPARTMENTS: tuple[Department, ...] = (
    _department("mobility", "Mobility", "traffic, traffic lights, bollards, public transport"),
    _department("municipal-police", "Municipal Police", "parking, public order, road safety"),
    _department("fire", "Fire Brigade", "fires, rescues"),
    _department("civil-protection", "Civil Protection", "floods, fallen trees, structural risk"),
    _department("environment", "Environment and Waste", "waste collection, air and noise"),
    _department("public-lighting", "Public Lighting", "streetlights and their cabinets"),
    _department("public-space", "Public Space", "pavements, roads, furniture, green spaces"),
    _department("water", "Water", "water supply, sewers and drains"),
)


def _category(
    code: str,
    name: str,
    group: str,
    department: str,
    priority: str = "normal",
    *,
    public: bool = True,
    attributes: tuple[dict[str, Any], ...] = (),
    description: str = "",
) -> Category:
    return Category.parse(
        {
            "code": code,
            "name": name,
            "group": group,
            "department": department,
            "priority": priority,
            "public": public,
            "attributes": list(attributes),
            "description": description,
        }
    )


_SIZE = {
    "code": "size",
    "description": "How large is it?",
    "datatype": "singlevaluelist",
    "values": [
        {"key": "small", "name": "Smaller than a shoe"},
        {"key": "medium", "name": "Up to a metre"},
        {"key": "large", "name": "Larger than a metre"},
    ],
}
_DANGER = {
    "code": "danger",
    "description": "Is anyone in danger right now?",
    "datatype": "singlevaluelist",
    "required": True,
    "values": [{"key": "yes", "name": "Yes"}, {"key": "no", "name": "No"}],
}

DEFAULT_CATEGORIES: tuple[Category, ...] = (
    _category("pothole", "Pothole", "Roads and pavements", "public-space", attributes=(_SIZE,)),
    _category("damaged-pavement", "Damaged pavement", "Roads and pavements", "public-space"),
    _category("graffiti", "Graffiti", "Public space", "public-space", "low"),
    _category("damaged-furniture", "Damaged bench or bin", "Public space", "public-space", "low"),
    _category(
        "streetlight-out",
        "Streetlight not working",
        "Lighting",
        "public-lighting",
        attributes=({"code": "pole", "description": "Number on the pole, if you can see it"},),
    ),
    _category(
        "streetlight-fault",
        "Streetlight fault (sensor)",
        "Lighting",
        "public-lighting",
        public=False,
    ),
    _category("waste-overflow", "Overflowing waste container", "Waste", "environment"),
    _category("illegal-dumping", "Illegal dumping", "Waste", "environment"),
    _category(
        "air-quality", "Poor air quality", "Air and noise", "environment", "high", public=False
    ),
    _category("noise", "Noise", "Air and noise", "environment"),
    _category(
        "traffic-light-fault",
        "Traffic light not working",
        "Traffic",
        "mobility",
        "high",
        attributes=(_DANGER,),
    ),
    _category("bollard-fault", "Bollard fault", "Traffic", "mobility", "high"),
    _category("traffic-congestion", "Traffic congestion", "Traffic", "mobility", public=False),
    _category("illegal-parking", "Illegal parking", "Parking", "municipal-police", "low"),
    _category("abandoned-vehicle", "Abandoned vehicle", "Parking", "municipal-police", "low"),
    _category("fire", "Fire", "Emergencies", "fire", "urgent", attributes=(_DANGER,)),
    _category("fallen-tree", "Fallen tree", "Emergencies", "civil-protection", "high"),
    _category("flooding", "Flooding", "Emergencies", "civil-protection", "high"),
    _category("water-leak", "Water leak", "Water", "water", "high"),
    _category("blocked-drain", "Blocked drain", "Water", "water"),
)


@dataclass(frozen=True, slots=True)
class OccurrenceConfig:
    """One tenant's configuration as it stands."""

    departments: Mapping[str, Department]
    categories: Mapping[str, Category]
    areas: Mapping[str, Area] = field(default_factory=dict)
    rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def category(self, code: str) -> Category | None:
        return self.categories.get(code)

    def area_of(self, lat: float, lon: float) -> str:
        # intersects_xy: no Point made (a quarter of a millisecond a report, areas or not);
        # a point intersects an area exactly when the area covers it (its border included)
        for area in self.areas.values():
            if shapely.intersects_xy(area.geometry, lon, lat):
                return area.code
        return ""

    def group_members(self, group: str) -> list[str]:
        return [c.code for c in self.categories.values() if c.group == group]

    def check(self) -> None:
        """Every category's department exists; every sensor rule holds (rules.parse_rule)
        and names a configured category."""
        from cidade.occurrences.rules import parse_rules

        for c in self.categories.values():
            if c.department not in self.departments:
                raise ConfigError(
                    f"category {c.code!r}: department {c.department!r} is not configured"
                )
        parse_rules(self.rules, self.categories)

    def overlaid(self, settings: Iterable[tuple[str, str, Any]]) -> OccurrenceConfig:
        """This configuration with a tenant's settings (kind, key, doc) over it."""
        layers: dict[str, dict[str, Any]] = {
            "department": dict(self.departments),
            "category": dict(self.categories),
            "area": dict(self.areas),
            "rule": dict(self.rules),
        }
        parsers = {
            "department": Department.parse,
            "category": Category.parse,
            "area": Area.parse,
            "rule": lambda doc, key: {**doc, "id": key},
        }
        for kind, key, doc in settings:
            if kind not in layers:
                continue
            if doc is None:
                layers[kind].pop(key, None)
            else:
                try:
                    layers[kind][key] = parsers[kind](doc, key)
                except ConfigError:
                    continue  # checked when it was set; a later Cidade may read it differently
        return replace(
            self,
            departments=layers["department"],
            categories=layers["category"],
            areas=layers["area"],
            rules=layers["rule"],
        )


def default_config() -> OccurrenceConfig:
    from cidade.occurrences.rules import DEFAULT_RULES

    return OccurrenceConfig(
        departments={d.code: d for d in DEFAULT_DEPARTMENTS},
        categories={c.code: c for c in DEFAULT_CATEGORIES},
        rules={r["id"]: dict(r) for r in DEFAULT_RULES},
    )


def load_config(path: str | Path | None) -> OccurrenceConfig:
    """The defaults, with the file's entries over them (``replace_defaults = true`` in the
    file: the file's alone). ConfigError names what does not hold."""
    config = default_config()
    if not path:
        return config
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"occurrences configuration {path}: {exc}") from None
    _only(data, ("replace_defaults", "departments", "categories", "areas", "rules"), str(path))
    fresh = data.get("replace_defaults", False)
    departments = {} if fresh else dict(config.departments)
    categories = {} if fresh else dict(config.categories)
    for entry in data.get("departments", ()):
        d = Department.parse(entry)
        departments[d.code] = d
    for entry in data.get("categories", ()):
        c = Category.parse(entry)
        categories[c.code] = c
    areas = {a.code: a for a in (Area.parse(e) for e in data.get("areas", ()))}
    rules = {} if fresh else dict(config.rules)
    for entry in data.get("rules", ()):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ConfigError(f"{path}: each [[rules]] entry is a table with an id")
        rules[str(entry.get("id"))] = dict(entry)
    loaded = OccurrenceConfig(departments, categories, areas, rules)
    loaded.check()
    return loaded
