"""Entities in and out: client representations <-> the stored form (docs/stored-form.md).

``normalize_*`` turns what a client sent (normalized or concise, ETSI GS CIM 009 §4.5) into the
stored form, checking every NGSI-LD rule on the way, so nothing invalid reaches the store.
``render_entity`` turns a stored entity into what a client asked for (normalized, concise or
keyValues; sysAttrs; attrs/pick/omit projection; lang), compacting terms with its @context.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.null import NULL as NULL  # the hub's modules take it from here
from cidade.ngsild.null import is_null
from cidade.ngsild.query.geo import validate_geojson_geometry

NGSI_LD = "https://uri.etsi.org/ngsi-ld/"
# The longest entity id, entity type, attribute name and datasetId the hub takes, in UTF-8 bytes
# once expanded to an IRI. NGSI-LD sets no limit; real ids and IRIs stay far below this one (a
# Smart Data Model id is under 100 bytes), and an id must fit a request line (GET /entities/{id},
# percent-encoded) and an index key on both stores.
MAX_IRI_BYTES = 1024

KINDS: dict[str, str] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "JsonProperty": "json",
}
VALUE_MEMBERS = frozenset(KINDS.values())
# Members of an attribute that are metadata, not sub-attributes.
META = frozenset(
    {"observedAt", "unitCode", "datasetId", "objectType", "createdAt", "modifiedAt", "deletedAt"}
)
# §5.2.14 showChanges: a notification's attribute carries its value before the change. Only the
# notifier puts these in a document; clients cannot store them.
PREVIOUS = {
    "value": "previousValue",
    "object": "previousObject",
    "languageMap": "previousLanguageMap",
    "vocab": "previousVocab",
    "valueList": "previousValueList",
    "objectList": "previousObjectList",
    "json": "previousJson",
}
_PREVIOUS_MEMBERS = frozenset(PREVIOUS.values())
SYSTEM = frozenset({"createdAt", "modifiedAt", "deletedAt"})
ENTITY_MEMBERS = frozenset({"id", "type", "scope", "@context", "createdAt", "modifiedAt"})
GEO_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)
# Attribute names: NGSI-LD §4.6.2 forbids these characters in names (they break q and URLs).
_BAD_NAME = re.compile(r"[\s<>\"'=;()\[\]{}\\|^`]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*$")


class Terms(Protocol):
    def expand(self, term: str) -> str: ...
    def compact(self, iri: str) -> str: ...
    def expand_vocab_value(self, value: Any) -> Any: ...
    def compact_vocab_value(self, value: Any) -> Any: ...


def is_uri(value: object) -> bool:
    return isinstance(value, str) and _URI.match(value) is not None


def check_entity_id(value: object, what: str = "the entity id") -> str:
    if not isinstance(value, str) or not value:
        raise BadRequestData(f"{what} must be a non-empty string")
    if _too_long(value):
        raise BadRequestData(f"{what} is longer than {MAX_IRI_BYTES} bytes, this broker's limit")
    if not is_uri(value):
        raise BadRequestData(f"{what} {value!r} is not a URI")
    return value


def _too_long(value: str) -> bool:
    # A character is at most 4 bytes in UTF-8: most strings are judged without encoding them.
    return len(value) > MAX_IRI_BYTES // 4 and len(value.encode()) > MAX_IRI_BYTES


def check_name(name: object, what: str = "attribute name") -> str:
    if name.__class__ is str and _valid_name(name):  # type: ignore[arg-type]
        return name  # type: ignore[return-value]
    raise BadRequestData(f"invalid {what} {name!r}")


@functools.lru_cache(maxsize=8192)
def _valid_name(name: str) -> bool:
    # Names repeat across entities: the cache turns the regex into a dict lookup.
    return bool(name) and _BAD_NAME.search(name) is None


def expand_name(name: object, terms: Terms, what: str = "attribute name") -> str:
    """A name a request gives (an attribute, an entity type) -> its IRI. 400 BadRequestData when
    the name has a character NGSI-LD forbids, when it expands to no IRI (a JSON-LD keyword: the
    core @context maps ``type`` to ``@type``), or when the IRI is over MAX_IRI_BYTES."""
    iri = terms.expand(check_name(name, what))
    if iri.__class__ is str and _valid_iri(iri):
        return iri
    if iri.startswith("@") or not is_uri(iri):
        raise BadRequestData(f"invalid {what} {name!r}: it expands to {iri!r}, not an IRI")
    raise BadRequestData(
        f"the {what} is longer than {MAX_IRI_BYTES} bytes once expanded, this broker's limit"
    )


@functools.lru_cache(maxsize=8192)
def _valid_iri(iri: str) -> bool:
    return not iri.startswith("@") and is_uri(iri) and not _too_long(iri)


def expand_types(value: object, terms: Terms) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise BadRequestData("the entity type must be a string or a non-empty list of strings")
    out = []
    for name in names:
        out.append(expand_name(name, terms, "entity type"))
    return sorted(set(out))


def is_null_instance(inst: object) -> bool:
    """Whether an attribute instance (stored form) is NGSI-LD Null: what a merge or an update
    sends to delete the instance (by its datasetId)."""
    if not isinstance(inst, dict):
        return False
    kind = inst.get("type")
    member = KINDS.get(kind) if isinstance(kind, str) else None
    return member is not None and is_null(kind, inst.get(member))  # type: ignore[arg-type]


# -- client -> stored ---------------------------------------------------------------------------


def normalize_entity(body: object, terms: Terms, now: str) -> dict[str, Any]:
    """A complete entity (create, replace, upsert) in the stored form."""
    if not isinstance(body, dict):
        raise BadRequestData("an entity must be a JSON object")
    entity: dict[str, Any] = {
        "id": check_entity_id(body.get("id")),
        "type": expand_types(body.get("type"), terms),
    }
    if "scope" in body:
        entity["scope"] = normalize_scope(body["scope"])
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    entity["attrs"] = normalize_attrs(body, terms, now)
    return entity


def normalize_scope(value: object) -> list[str]:
    scopes = [value] if isinstance(value, str) else value
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and re.fullmatch(r"(/[^/#+\s]+)+", s) for s in scopes
    ):
        raise BadRequestData(f"invalid scope {value!r}: expected '/A/B' or a list of them")
    return scopes


def normalize_attrs(
    body: dict[str, Any], terms: Terms, now: str, *, nulls: bool = False
) -> dict[str, list[dict]]:
    """Every attribute of a body (entity members such as id and type are skipped). With
    ``nulls`` (merge, update) an instance may be NGSI-LD Null; otherwise that is 400."""
    attrs: dict[str, list[dict]] = {}
    for name, raw in body.items():
        if name in ENTITY_MEMBERS:
            continue
        attrs[expand_name(name, terms)] = normalize_attribute(name, raw, terms, now, nulls=nulls)
    return attrs


def _looks_like_instance(value: object) -> bool:
    return isinstance(value, dict) and ("type" in value or not VALUE_MEMBERS.isdisjoint(value))


def normalize_attribute(
    name: str, raw: object, terms: Terms, now: str, *, nulls: bool = False
) -> list[dict]:
    """One attribute: a list of instances (several when several datasetIds are given)."""
    if isinstance(raw, list) and raw and all(_looks_like_instance(v) for v in raw):
        instances = [normalize_instance(name, v, terms, now, nulls=nulls) for v in raw]
    else:
        instances = [normalize_instance(name, raw, terms, now, nulls=nulls)]
    seen: set[str | None] = set()
    for inst in instances:
        ds = inst.get("datasetId")
        if ds in seen:
            raise BadRequestData(
                f"attribute {name!r} has two instances with datasetId {ds!r}"
                if ds
                else f"attribute {name!r} has two default instances (without datasetId)"
            )
        seen.add(ds)
    return instances


def _infer_kind(raw: dict[str, Any]) -> str:
    for kind, member in (
        ("Relationship", "object"),
        ("LanguageProperty", "languageMap"),
        ("VocabProperty", "vocab"),
        ("ListProperty", "valueList"),
        ("ListRelationship", "objectList"),
        ("JsonProperty", "json"),
    ):
        if member in raw:
            return kind
    value = raw.get("value")
    if isinstance(value, dict) and value.get("type") in GEO_TYPES and "coordinates" in value:
        return "GeoProperty"
    return "Property"


def normalize_instance(
    name: str, raw: object, terms: Terms, now: str, *, sub: bool = False, nulls: bool = False
) -> dict[str, Any]:
    """One attribute instance in the stored form. With ``nulls`` its value may be NGSI-LD Null
    (then it is a request to delete the instance, see is_null_instance); otherwise that is 400."""
    what = f"sub-attribute {name!r}" if sub else f"attribute {name!r}"
    if raw is None:
        raise BadRequestData(f"{what} has a null value")
    if not isinstance(raw, dict):
        # Concise form: a bare value is a Property's value.
        if raw == NULL and not nulls:
            raise _null_refused(what)
        return {"type": "Property", "value": raw, "createdAt": now, "modifiedAt": now}
    kind = raw.get("type")
    if kind is not None and not isinstance(kind, str):
        raise BadRequestData(f"{what} has an invalid type {kind!r}")
    if kind is None:
        if not (VALUE_MEMBERS & raw.keys()):
            # Concise: a JSON object that is not an attribute is the value of a Property.
            return {"type": "Property", "value": raw, "createdAt": now, "modifiedAt": now}
        kind = _infer_kind(raw)
    elif kind in GEO_TYPES and "coordinates" in raw:
        # Concise: a bare GeoJSON geometry is the value of a GeoProperty.
        raw = {"type": "GeoProperty", "value": raw}
        kind = "GeoProperty"
    if kind not in KINDS:
        raise BadRequestData(f"{what} has unknown type {kind!r}")
    member = KINDS[kind]
    if member not in raw:
        raise BadRequestData(f"{what} of type {kind} needs a {member!r} member")
    inst: dict[str, Any] = {"type": kind}
    value = raw[member]
    if is_null(kind, value):
        if not nulls:
            raise _null_refused(what)
        inst[member] = value
    else:
        inst[member] = _check_value(kind, value, what, terms)
    for key, val in raw.items():
        if key in ("type", member) or key in SYSTEM:
            continue
        if key in VALUE_MEMBERS:
            raise BadRequestData(f"{what} of type {kind} cannot have a {key!r} member")
        if key == "observedAt":
            inst["observedAt"] = timefmt.normalize(val, f"observedAt of {what}")
        elif key == "unitCode":
            if not isinstance(val, str) or not val:
                raise BadRequestData(f"unitCode of {what} must be a non-empty string")
            inst["unitCode"] = val
        elif key == "datasetId":
            if sub:
                raise BadRequestData(f"{what} cannot have a datasetId")
            inst["datasetId"] = check_entity_id(val, f"the datasetId of {what}")
            if val == NULL:
                raise BadRequestData(f"the datasetId of {what} cannot be NGSI-LD Null")
        elif key == "objectType":
            if kind not in ("Relationship", "ListRelationship"):
                raise BadRequestData(f"objectType is only for relationships ({what})")
            inst["objectType"] = terms.expand_vocab_value(val)
        elif key in ("@context", "id", "scope", "instanceId", "lang"):
            if key == "lang" and kind == "Property":
                continue  # the lang member of a LanguageProperty rendered with `lang=`
            raise BadRequestData(f"{what} cannot have a {key!r} member")
        else:
            sub_iri = expand_name(key, terms, "sub-attribute name")
            inst[sub_iri] = normalize_instance(key, val, terms, now, sub=True, nulls=nulls)
    inst["createdAt"] = now
    inst["modifiedAt"] = now
    return inst


def _null_refused(what: str) -> BadRequestData:
    return BadRequestData(
        f"{what} is NGSI-LD Null (urn:ngsi-ld:null), which only merge and update operations "
        "take, to delete an attribute"
    )


def _check_value(kind: str, value: Any, what: str, terms: Terms) -> Any:
    if kind == "Property":
        if value is None:
            raise BadRequestData(f"{what} has a null value")
        return value
    if kind == "GeoProperty":
        validate_geojson_geometry(value)
        return value
    if kind == "Relationship":
        objects = value if isinstance(value, list) else [value]
        if not objects or not all(is_uri(o) for o in objects):
            raise BadRequestData(f"the object of relationship {what} must be a URI (or URIs)")
        return value
    if kind == "LanguageProperty":
        if not isinstance(value, dict) or not value:
            raise BadRequestData(f"languageMap of {what} must be a non-empty object")
        for lang, text in value.items():
            texts = text if isinstance(text, list) else [text]
            if not isinstance(lang, str) or not all(isinstance(t, str) for t in texts):
                raise BadRequestData(f"languageMap of {what} must map languages to strings")
        return value
    if kind == "VocabProperty":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise BadRequestData(f"vocab of {what} must be a string (or strings)")
        return terms.expand_vocab_value(value)
    if kind == "ListProperty":
        if not isinstance(value, list):
            raise BadRequestData(f"valueList of {what} must be an array")
        return value
    if kind == "ListRelationship":
        if not isinstance(value, list):
            raise BadRequestData(f"objectList of {what} must be an array")
        for item in value:
            obj = item.get("object") if isinstance(item, dict) else item
            if not is_uri(obj):
                raise BadRequestData(f"objectList of {what} must hold URIs")
        return value
    return value  # JsonProperty: any JSON, kept as it is


# -- stored -> client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    """One level of a pick or an omit (§4.21; parsed by hub/projection.py): the members it
    applies to (expanded attribute IRIs, or ``id``, ``type``, ``scope``) and, by relationship
    IRI, the projection of the entities that relationship links to."""

    members: frozenset[str]
    linked: Mapping[str, Projection] = field(default_factory=dict)

    def of_linked(self, relationship: str) -> Projection | None:
        return self.linked.get(relationship)


def _as_projection(value: Projection | Iterable[str] | None) -> Projection | None:
    """A Projection as given, or one of plain member names (no nested parts); None for none."""
    if value is None or isinstance(value, Projection):
        return value
    members = frozenset(value)
    return Projection(members) if members else None


class View:
    """How a client asked to see entities (one per request). ``pick`` and ``omit`` are
    projections (hub/projection.py); ``datasets`` keeps only the attribute instances of those
    datasetIds ("@none": the default instance, §4.5.5)."""

    __slots__ = ("attrs", "datasets", "form", "lang", "omit", "pick", "sys_attrs", "terms")

    def __init__(
        self,
        terms: Terms,
        *,
        form: str = "normalized",
        sys_attrs: bool = False,
        attrs: Iterable[str] | None = None,
        pick: Projection | Iterable[str] | None = None,
        omit: Projection | Iterable[str] | None = None,
        lang: str | None = None,
        datasets: Iterable[str] | None = None,
    ) -> None:
        self.terms = terms
        self.form = form
        self.sys_attrs = sys_attrs
        self.attrs = frozenset(attrs) if attrs else None
        self.pick = _as_projection(pick)
        self.omit = _as_projection(omit)
        self.lang = _parse_lang(lang) if lang else None
        self.datasets = frozenset(datasets) if datasets else None

    def wants(self, member: str) -> bool:
        """Whether a top-level member (an expanded attribute IRI, or id/type/scope) is shown."""
        if self.omit is not None and member in self.omit.members:
            return False
        if self.pick is not None and member not in self.pick.members:
            return False
        if self.attrs is not None and member not in (
            "id",
            "type",
            "scope",
            "createdAt",
            "modifiedAt",
        ):
            return member in self.attrs
        return True

    def of_linked(self, relationship: str) -> View:
        """The view of the entities a relationship links to (§4.5.23): the same representation,
        with the part of pick and omit nested under that relationship (§4.21)."""
        view = View.__new__(View)
        view.terms = self.terms
        view.form = self.form
        view.sys_attrs = self.sys_attrs
        view.attrs = None
        view.pick = self.pick.of_linked(relationship) if self.pick is not None else None
        view.omit = self.omit.of_linked(relationship) if self.omit is not None else None
        view.lang = self.lang
        view.datasets = self.datasets
        return view


def _parse_lang(header: str) -> list[str]:
    """The language tags of a ``lang`` parameter (§4.15: as Accept-Language), the most
    preferred first: by their q-value, then in the order given."""
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(header.split(",")):
        tag, *weights = (f.strip() for f in part.split(";"))
        q = 1.0
        for w in weights:
            if w.startswith("q="):
                try:
                    q = float(w[2:])
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, n, tag))
    return [tag for _, _, tag in sorted(ranked)]


def render_entity(entity: dict[str, Any], view: View) -> dict[str, Any]:
    terms = view.terms
    out: dict[str, Any] = {}
    if view.wants("id"):
        out["id"] = entity["id"]
    if view.wants("type"):
        types = [terms.compact(t) for t in entity["type"]]
        out["type"] = types[0] if len(types) == 1 else types
    if "scope" in entity and view.wants("scope"):
        scope = entity["scope"]
        out["scope"] = scope[0] if len(scope) == 1 else scope
    if view.sys_attrs:
        out["createdAt"] = timefmt.display(entity["createdAt"])
        out["modifiedAt"] = timefmt.display(entity["modifiedAt"])
    everything = view.pick is None and view.attrs is None and view.omit is None
    # The common case (normalized, no sysAttrs, no lang) has a lean renderer of its own.
    plain = view.form == "normalized" and not view.sys_attrs and not view.lang
    datasets = view.datasets
    for iri, instances in entity["attrs"].items():
        if not everything and not view.wants(iri):
            continue
        if datasets is not None:
            instances = [i for i in instances if i.get("datasetId", "@none") in datasets]
            if not instances:
                continue
        name = terms.compact(iri)
        if view.form == "keyValues":
            out[name] = _key_values(instances, view)
        elif plain:
            if len(instances) == 1:
                out[name] = _render_plain(instances[0], terms)
            else:
                out[name] = [_render_plain(i, terms) for i in instances]
        else:
            rendered = [_render_instance(i, view) for i in instances]
            out[name] = rendered[0] if len(rendered) == 1 else rendered
    return out


def _key_values(instances: list[dict], view: View) -> Any:
    """An attribute in the simplified representation (§4.5.4): its value; a multi-attribute's
    as ``{"dataset": {datasetId: value, ...}}``, "@none" naming the default instance."""
    if len(instances) == 1:
        return _key_value(instances[0], view)
    return {"dataset": {i.get("datasetId", "@none"): _key_value(i, view) for i in instances}}


def _pick_language(language_map: dict[str, Any], langs: list[str]) -> tuple[str, Any] | None:
    for lang in langs:
        if lang == "*":  # any language: the first the map holds
            break
        if lang in language_map:
            return lang, language_map[lang]
    if "@none" in language_map:
        return "@none", language_map["@none"]
    first = next(iter(language_map))
    return first, language_map[first]


def _key_value(inst: dict[str, Any], view: View) -> Any:
    kind = inst["type"]
    value = inst[KINDS[kind]]
    if kind == "LanguageProperty":
        if view.lang:
            chosen = _pick_language(value, view.lang)
            if chosen is not None:
                return chosen[1]
        return {"languageMap": value}
    if kind == "VocabProperty":
        return view.terms.compact_vocab_value(value)
    if kind == "JsonProperty":
        return {"json": value}
    return value


_HIDDEN = frozenset({"createdAt", "modifiedAt", "deletedAt"})
_TIMES = frozenset({"observedAt", "createdAt", "modifiedAt", "deletedAt"})
_VOCAB_MEMBERS = frozenset({"vocab", "objectType", "previousVocab"})


def _render_plain(inst: dict[str, Any], terms: Terms) -> dict[str, Any]:
    """Normalized, without system attributes: what most reads ask for."""
    out: dict[str, Any] = {}
    for key, val in inst.items():
        if key in _HIDDEN:
            continue
        if ":" in key:  # a sub-attribute (members that are not have no ':' in their name)
            out[terms.compact(key)] = _render_plain(val, terms)
        elif key in _VOCAB_MEMBERS:
            out[key] = terms.compact_vocab_value(val)
        elif key == "observedAt":
            out[key] = timefmt.display(val)
        else:
            out[key] = val
    return out


def _render_instance(inst: dict[str, Any], view: View) -> Any:
    terms = view.terms
    kind = inst["type"]
    member = KINDS[kind]
    value = inst[member]
    if kind == "VocabProperty":
        value = terms.compact_vocab_value(value)
    out: dict[str, Any] = {}
    if kind == "LanguageProperty" and view.lang:
        chosen = _pick_language(value, view.lang)
        if chosen is not None:
            kind, member = "Property", "value"
            value = chosen[1]
            out["lang"] = chosen[0]
    concise = view.form == "concise"
    if not concise:
        out = {"type": kind, member: value, **out}
    else:
        out = {member: value, **out}
    for key, val in inst.items():
        if key in ("type", member, KINDS[inst["type"]]):
            continue
        if key in META or key in _PREVIOUS_MEMBERS:
            if key in SYSTEM and not view.sys_attrs:
                continue
            if key in _VOCAB_MEMBERS:
                val = terms.compact_vocab_value(val)
            elif key in _TIMES:
                val = timefmt.display(val)
            out[key] = val
        elif ":" in key:
            out[terms.compact(key)] = _render_instance(val, view)
    if concise and len(out) == 1 and member in ("value",):
        # A concise Property or GeoProperty with nothing but its value is the value itself.
        if kind == "Property" and not (isinstance(value, dict) and _looks_like_instance(value)):
            if not (isinstance(value, dict) and value.get("type") in GEO_TYPES):
                return value
        if kind == "GeoProperty":
            return value
    return out


def geojson_feature(entity: dict, rendered: dict, geometry_iri: str) -> dict[str, Any]:
    """An entity as a GeoJSON Feature (§4.5.16)."""
    geometry = None
    for inst in entity["attrs"].get(geometry_iri, []):
        if inst["type"] == "GeoProperty":
            geometry = inst["value"]
            break
    props = {k: v for k, v in rendered.items() if k not in ("id", "@context")}
    return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": props}
