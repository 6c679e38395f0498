"""The NGSI-LD Subscription data type (ETSI GS CIM 009 v1.8 §5.2.12), its NotificationParams
(§5.2.14), Endpoint (§5.2.15) and NotificationStatus: client body <-> stored form.

Stored form: the client's members under their spec names, with every term (entity types,
attribute names, ``geoQ.geoproperty``) expanded to an IRI so a subscription does not depend on
the @context it was created with, defaults filled in, and ``createdAt``/``modifiedAt``. ``q`` is
kept as the client's text (its names are expanded again when it is parsed, see
``subscription_q``), because q syntax cannot hold full IRIs. ``status`` is never stored: it is
derived from ``isActive`` and ``expiresAt`` at read time (``subscription_status``).

An entity type in an EntitySelector may be a type expression (§4.17, ``A,B``, ``A;B``, ``(A|B)``):
it is stored as the same expression over expanded IRIs.

Everything here is pure (no I/O): the API layer and the notifier build on it.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from cidade.hub.linked import MAX_JOIN_LEVEL, Join
from cidade.hub.members import (
    attribute_names,
    compiled_pattern,
    deletes_member,
    entity_selectors,
    id_and_type,
    key_values,
    non_negative,
    object_with,
    positive,
    short,
)
from cidade.hub.model import Terms, expand_name, is_uri
from cidade.hub.registrations import GEO_MEMBERS, TimeFilter, parse_time_filter
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, NgsiError
from cidade.ngsild.query.geo import GeoQuery, parse_geoquery
from cidade.ngsild.query.q import QNode, parse_q
from cidade.ngsild.query.types import TypeExpr, parse_type_expression, type_matches

SUBSCRIPTION_TYPE = "Subscription"
# Internal members of the stored form (never rendered; "_" keeps them apart from spec members):
CONTEXT_MEMBER = "_context"  # the @context the subscription was created with
Q_TERMS_MEMBER = "_qTerms"  # {name in q: IRI} as the q's own @context expanded them
OWNER_MEMBER = "_owner"  # who created it (auth.gate.owner_of): staff see only their own
CSF_TERMS_MEMBER = "_csfTerms"  # as Q_TERMS_MEMBER, for a csource subscription's csf

TRIGGERS = (
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
)
# §5.2.12: without notificationTrigger, only attribute creation and update notify; deletions
# (of entities or attributes) and entity creation only when asked for.
DEFAULT_TRIGGERS = ("attributeCreated", "attributeUpdated")
# "simplified" is another name of keyValues (§4.5.3): kept as the client wrote it.
FORMATS = ("normalized", "keyValues", "simplified", "concise")
JOINS = ("flat", "inline", "@none")
ACCEPTS = ("application/json", "application/ld+json", "application/geo+json")
ENDPOINT_SCHEMES = ("http", "https", "mqtt", "mqtts")
MQTT_SCHEMES = ("mqtt", "mqtts")
MQTT_QOS = ("0", "1", "2")
MQTT_VERSIONS = ("mqtt3.1.1", "mqtt5.0")
# NotificationStatus members (§5.2.14), kept by the notifier, not in the stored subscription.
STATUS_MEMBERS = (
    "timesSent",
    "timesFailed",
    "lastNotification",
    "lastSuccess",
    "lastFailure",
    "status",
)

# Members the system writes: a client may send them back (GET then PUT/PATCH) and they are
# ignored, as §5.2.12 says for system-generated members.
_READ_ONLY = frozenset({"status", "createdAt", "modifiedAt"})
# Spec members this hub does not implement: refused rather than silently ignored, so a client
# never believes a filter is applied when it is not.
_UNSUPPORTED = {"scopeQ": "scopeQ in subscriptions is not supported"}
# §5.2.12: members of subscriptions to context source registrations only (§5.11).
_CSOURCE_ONLY = {
    "csf": "csf (a context source filter) is for subscriptions to context source registrations",
    "temporalQ": "temporalQ is for subscriptions to context source registrations",
}
# Members of subscriptions to entities only: a registration subscription notifies of
# registrations newly matching, updated or no longer matching, not of entity changes.
_ENTITY_ONLY = {
    "notificationTrigger": "notificationTrigger is for subscriptions to entities; a"
    " subscription to registrations notifies newlyMatching, updated and noLongerMatching",
}
_TEMPORAL_Q = frozenset({"timerel", "timeAt", "endTimeAt", "timeproperty"})
_TOP = frozenset(
    {
        "id",
        "type",
        "subscriptionName",
        "description",
        "entities",
        "watchedAttributes",
        "notificationTrigger",
        "timeInterval",
        "q",
        "geoQ",
        "isActive",
        "notification",
        "expiresAt",
        "throttling",
        "lang",
        "jsonldContext",
        "datasetId",
        "@context",
    }
)
_NOTIFICATION = frozenset(
    {
        "attributes",
        "sysAttrs",
        "format",
        "endpoint",
        "showChanges",
        "pick",
        "omit",
        "join",
        "joinLevel",
        *STATUS_MEMBERS,
    }
)
_ENDPOINT = frozenset({"uri", "accept", "timeout", "cooldown", "receiverInfo", "notifierInfo"})
# Entity members that pick/omit name as they are, not as attribute terms to expand.
_ENTITY_MEMBERS = frozenset({"id", "type", "scope"})
_GEOQ = frozenset({"geometry", "coordinates", "georel", "geoproperty"})
# Characters that would change the meaning of a stored type expression if an IRI held them.
_TYPE_SYNTAX = re.compile(r"[(),;|\s]")


# -- client -> stored ---------------------------------------------------------------------------


def normalize_subscription(
    body: dict[str, Any],
    terms: Terms,
    now: str,
    *,
    subscription_id: str | None = None,
    csource: bool = False,
) -> dict[str, Any]:
    """A Create Subscription body (§5.8.1; with ``csource``, Create Context Source Registration
    Subscription, §5.11.2) in the stored form; 400 (BadRequestData) naming the offending member
    for anything invalid. ``subscription_id`` is the id to use when the body has none (else a
    ``urn:ngsi-ld:Subscription:<uuid4>`` is made)."""
    return _normalize(
        body, terms, now, subscription_id=subscription_id, check_expiry=True, csource=csource
    )


def _normalize(
    body: object,
    terms: Terms,
    now: str,
    *,
    subscription_id: str | None,
    check_expiry: bool,
    created_at: str | None = None,
    csource: bool = False,
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestData("a subscription must be a JSON object")
    for key in body:
        if key in _UNSUPPORTED:
            raise BadRequestData(_UNSUPPORTED[key])
        if key in _CSOURCE_ONLY:
            if not csource:
                raise BadRequestData(_CSOURCE_ONLY[key])
            continue
        if csource and key in _ENTITY_ONLY:
            raise BadRequestData(_ENTITY_ONLY[key])
        if key not in _TOP and key not in _READ_ONLY:
            raise BadRequestData(f"unknown subscription member {key!r}")

    sid = id_and_type(body, subscription_id, SUBSCRIPTION_TYPE, "subscription")

    out: dict[str, Any] = {"id": sid, "type": SUBSCRIPTION_TYPE}
    for key in ("subscriptionName", "description"):
        if key in body:
            out[key] = _string(body[key], key)

    if "entities" in body:
        out["entities"] = _entities(body["entities"], terms)
    if "watchedAttributes" in body:
        out["watchedAttributes"] = attribute_names(
            body["watchedAttributes"], terms, "watchedAttributes"
        )
    if "entities" not in out and "watchedAttributes" not in out:
        # §5.2.12: entities and watchedAttributes cannot both be absent.
        raise BadRequestData("a subscription needs entities or watchedAttributes (or both)")

    if not csource:
        out["notificationTrigger"] = _triggers(body.get("notificationTrigger"))

    if "timeInterval" in body:
        out["timeInterval"] = positive(body["timeInterval"], "timeInterval")
        # §5.2.12: periodic subscriptions do not watch changes, so neither watchedAttributes
        # nor throttling (a bound on change-driven notifications) makes sense with them.
        if "watchedAttributes" in out:
            raise BadRequestData("timeInterval and watchedAttributes cannot both be present")
        if "throttling" in body:
            raise BadRequestData("timeInterval and throttling cannot both be present")
    if "throttling" in body:
        out["throttling"] = positive(body["throttling"], "throttling")

    if "q" in body:
        out["q"], out[Q_TERMS_MEMBER] = _query_text(body["q"], "q", terms)
    if "geoQ" in body:
        out["geoQ"] = _geoq(body["geoQ"], terms)
        if csource and out["geoQ"]["geoproperty"] not in GEO_MEMBERS:
            raise BadRequestData(
                "geoQ.geoproperty of a subscription to registrations is location,"
                " observationSpace or operationSpace"
            )
    if "csf" in body:
        out["csf"], out[CSF_TERMS_MEMBER] = _query_text(body["csf"], "csf", terms)
    if "temporalQ" in body:
        out["temporalQ"] = _temporal_q(body["temporalQ"])

    if "expiresAt" in body:
        expires = timefmt.normalize(body["expiresAt"], "expiresAt")
        if check_expiry and expires <= timefmt.normalize(now, "now"):
            raise BadRequestData(f"expiresAt {body['expiresAt']!r} is not in the future")
        out["expiresAt"] = expires
    # Optional members with a default are stored only when given, and so shown back as given.
    if "isActive" in body:
        out["isActive"] = _flag(body["isActive"], "isActive")
    if "lang" in body:
        out["lang"] = _string(body["lang"], "lang", empty=False)
    if "jsonldContext" in body:
        ctx = body["jsonldContext"]
        if not is_uri(ctx):
            raise BadRequestData(f"jsonldContext must be a URI, got {short(ctx)}")
        out["jsonldContext"] = ctx
    if "datasetId" in body:
        out["datasetId"] = _dataset_ids(body["datasetId"])

    if "notification" not in body:
        raise BadRequestData("a subscription needs a notification member")
    out["notification"] = _notification(body["notification"], terms)

    out["createdAt"] = created_at or now
    out["modifiedAt"] = now
    return out


def _query_text(value: object, what: str, terms: Terms) -> tuple[str, dict[str, str]]:
    """A q or csf as the client wrote it, and {name in it: IRI}. Parsed once now: a 400 with the
    position on a bad one, and the IRI of every name it uses recorded, so the notifier can parse
    it later without the request's @context."""
    if not isinstance(value, str):
        raise BadRequestData(f"{what} must be a string, got {short(value)}")
    names: dict[str, str] = {}
    parse_q(_q_text(value), lambda name: names.setdefault(name, terms.expand(name)))
    return value, names


def _temporal_q(value: object) -> dict[str, str]:
    """§5.2.21 TemporalQuery of a subscription to registrations: timerel, timeAt, endTimeAt
    and timeproperty (observedAt, createdAt or modifiedAt), times in the stored format."""
    value = object_with(value, _TEMPORAL_Q, "temporalQ", "a TemporalQuery object")
    parsed = parse_time_filter(
        value.get("timerel"), value.get("timeAt"), value.get("endTimeAt"), value.get("timeproperty")
    )
    if parsed is None:
        raise BadRequestData("temporalQ needs timerel and timeAt")
    out = {"timerel": parsed.timerel, "timeAt": parsed.time_at}
    if parsed.end_time_at is not None:
        out["endTimeAt"] = parsed.end_time_at
    if "timeproperty" in value:
        out["timeproperty"] = parsed.timeproperty
    return out


def subscription_time_filter(stored: dict[str, Any]) -> TimeFilter | None:
    """The temporalQ of a stored subscription to registrations."""
    tq = stored.get("temporalQ")
    if tq is None:
        return None
    return TimeFilter(
        tq["timerel"], tq["timeAt"], tq.get("endTimeAt"), tq.get("timeproperty", "observedAt")
    )


def subscription_csf(stored: dict[str, Any]) -> QNode | None:
    """The parsed csf of a stored subscription to registrations; None without one."""
    text = stored.get("csf")
    if text is None:
        return None
    names = stored.get(CSF_TERMS_MEMBER) or {}
    return parse_q(_q_text(text), lambda name: names.get(name) or name)


def _string(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise BadRequestData(f"{what} must be a {'' if empty else 'non-empty '}string")
    return value


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequestData(f"{what} must be true or false, got {short(value)}")
    return value


def _members(value: object, terms: Terms, what: str) -> list[str]:
    """Entity members to pick or omit (§4.21): id, type, scope or attribute names (expanded)."""
    if not isinstance(value, list) or not value:
        raise BadRequestData(f"{what} must be a non-empty array of entity member names")
    out: list[str] = []
    for name in value:
        member = name if name in _ENTITY_MEMBERS else expand_name(name, terms, what)
        if member not in out:
            out.append(member)
    return out


def _dataset_ids(value: object) -> list[str]:
    """§5.2.12 datasetId: the attribute instances notified, by datasetId; "@none" names the
    default instance."""
    if not isinstance(value, list) or not value:
        raise BadRequestData("datasetId must be a non-empty array of URIs")
    out: list[str] = []
    for item in value:
        if item != "@none" and not (isinstance(item, str) and is_uri(item)):
            raise BadRequestData(f"datasetId {short(item)} is not a URI")
        if item not in out:
            out.append(item)
    return out


def _entities(value: object, terms: Terms) -> list[dict[str, str]]:
    return entity_selectors(
        value,
        "entities",
        kind="EntitySelectors",
        item="an object",
        entity_type=lambda type_, where: _type_expression(type_, terms, f"{where}.type"),
    )


def _type_expression(value: object, terms: Terms, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequestData(f"{what} must be an entity type (or a type expression)")

    def expand(name: str) -> str:
        iri = expand_name(name, terms, "entity type")
        if _TYPE_SYNTAX.search(iri):
            # The stored expression is parsed again: its IRIs must stay single tokens.
            raise BadRequestData(f"{what}: entity type {name!r} expands to an unusable IRI")
        return iri

    return render_type_expression(parse_type_expression(value, expand), lambda iri: iri)


def render_type_expression(expr: TypeExpr, name: Callable[[str], str]) -> str:
    """A parsed type expression back as text, each name written with ``name`` (compact or not).
    ``;`` binds tighter than ``,`` and ``|``, so only an or inside an and needs parentheses."""
    if isinstance(expr, str):
        return name(expr)
    op, parts = expr
    if op == "and":
        texts = [
            f"({render_type_expression(p, name)})"
            if not isinstance(p, str) and p[0] == "or"
            else render_type_expression(p, name)
            for p in parts
        ]
        return ";".join(texts)
    return "|".join(render_type_expression(p, name) for p in parts)


def _triggers(value: object) -> list[str]:
    if value is None:
        return list(DEFAULT_TRIGGERS)
    if not isinstance(value, list) or not value:
        raise BadRequestData("notificationTrigger must be a non-empty array")
    out: list[str] = []
    for trigger in value:
        if trigger not in TRIGGERS:
            raise BadRequestData(
                f"unknown notificationTrigger {short(trigger)}; expected any of "
                + ", ".join(TRIGGERS)
            )
        if trigger not in out:
            out.append(trigger)
    return out


def _geoq(value: object, terms: Terms) -> dict[str, Any]:
    value = object_with(value, _GEOQ, "geoQ")
    geo = parse_geoquery(
        value.get("georel"),
        value.get("geometry"),
        value.get("coordinates"),
        value.get("geoproperty"),
        terms.expand,
    )
    if geo is None:
        raise BadRequestData("geoQ needs georel, geometry and coordinates")
    return geo.as_geoq()


def _notification(value: object, terms: Terms) -> dict[str, Any]:
    value = object_with(value, _NOTIFICATION, "notification")
    out: dict[str, Any] = {}
    if "attributes" in value:
        out["attributes"] = attribute_names(value["attributes"], terms, "notification.attributes")
    fmt = value.get("format", "normalized")
    if fmt not in FORMATS:
        raise BadRequestData(
            f"notification.format {short(fmt)} is not one of " + ", ".join(FORMATS)
        )
    out["format"] = fmt
    for key in ("sysAttrs", "showChanges"):
        if key in value:
            out[key] = _flag(value[key], f"notification.{key}")
    for key in ("pick", "omit"):
        if key in value:
            out[key] = _members(value[key], terms, f"notification.{key}")
    if ("pick" in out or "omit" in out) and "attributes" in out:
        # §5.2.14: attributes is the older way of picking; the two cannot be combined.
        raise BadRequestData("notification.attributes cannot be combined with pick or omit")
    both = set(out.get("pick", ())) & set(out.get("omit", ()))
    if both:
        raise BadRequestData(
            "notification.pick and notification.omit cannot name the same member: "
            + ", ".join(sorted(terms.compact(m) for m in both))
        )
    if "join" in value:
        join = value["join"]
        if join not in JOINS:
            raise BadRequestData(
                f"notification.join {short(join)} is not one of " + ", ".join(JOINS)
            )
        out["join"] = join
    if "joinLevel" in value:
        level = value["joinLevel"]
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise BadRequestData(
                f"notification.joinLevel must be a positive integer, got {short(level)}"
            )
        if level > MAX_JOIN_LEVEL:
            raise BadRequestData(
                f"notification.joinLevel must be at most {MAX_JOIN_LEVEL}, got {level}"
            )
        out["joinLevel"] = level
    if "endpoint" not in value:
        raise BadRequestData("notification needs an endpoint")
    out["endpoint"] = _endpoint(value["endpoint"])
    return out


def _endpoint(value: object) -> dict[str, Any]:
    value = object_with(value, _ENDPOINT, "notification.endpoint")
    if "uri" not in value:
        raise BadRequestData("notification.endpoint needs a uri")
    uri = value["uri"]
    scheme = check_endpoint_uri(uri)
    out: dict[str, Any] = {"uri": uri}
    accept = value.get("accept", "application/json")
    if accept not in ACCEPTS:
        raise BadRequestData(
            f"notification.endpoint.accept {short(accept)} is not one of " + ", ".join(ACCEPTS)
        )
    out["accept"] = accept
    for key in ("timeout", "cooldown"):
        if key in value:
            out[key] = non_negative(value[key], f"notification.endpoint.{key}")
    if "receiverInfo" in value:
        out["receiverInfo"] = key_values(
            value["receiverInfo"], "notification.endpoint.receiverInfo"
        )
    if "notifierInfo" in value:
        info = key_values(value["notifierInfo"], "notification.endpoint.notifierInfo")
        _check_notifier_info(info, scheme)
        out["notifierInfo"] = info
    return out


def check_endpoint_uri(uri: object) -> str:
    """The scheme of a valid notification endpoint URI (http, https, mqtt, mqtts with a host;
    an MQTT URI also names its topic in the path); 400 otherwise."""
    if not isinstance(uri, str) or not is_uri(uri):
        raise BadRequestData(f"notification.endpoint.uri must be a URI, got {short(uri)}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 -- raises ValueError on a port out of range or not a number
    except ValueError:
        raise BadRequestData(f"notification.endpoint.uri {uri!r} is not a valid URI") from None
    scheme = parts.scheme.lower()
    if scheme not in ENDPOINT_SCHEMES:
        raise BadRequestData(
            f"notification.endpoint.uri {uri!r}: the scheme must be one of "
            + ", ".join(ENDPOINT_SCHEMES)
        )
    if not parts.hostname:
        raise BadRequestData(f"notification.endpoint.uri {uri!r} has no host")
    if scheme in MQTT_SCHEMES and parts.path.strip("/") == "":
        # mqtt[s]://[user[:pass]@]host[:port]/topic[/subtopic]*: the topic is mandatory.
        raise BadRequestData(f"notification.endpoint.uri {uri!r} has no MQTT topic")
    return scheme


def _check_notifier_info(info: list[dict[str, str]], scheme: str) -> None:
    for item in info:
        key, value = item["key"], item["value"]
        if key == "MQTT-QoS" and value not in MQTT_QOS:
            raise BadRequestData(f"notifierInfo MQTT-QoS must be 0, 1 or 2, got {value!r}")
        if key == "MQTT-Version" and value not in MQTT_VERSIONS:
            raise BadRequestData(
                f"notifierInfo MQTT-Version must be one of {', '.join(MQTT_VERSIONS)}, "
                f"got {value!r}"
            )
        if key.startswith("MQTT-") and scheme not in MQTT_SCHEMES:
            raise BadRequestData(f"notifierInfo {key} is only for mqtt/mqtts endpoints")


# -- update (§5.8.2) ----------------------------------------------------------------------------


def merge_subscription(
    stored: dict[str, Any], patch: dict[str, Any], terms: Terms, now: str, *, csource: bool = False
) -> dict[str, Any]:
    """Update Subscription (§5.8.2): each top-level member of ``patch`` replaces the stored
    one whole (a ``notification`` fragment is the whole new NotificationParams, so one without
    an endpoint is refused); a null (or ``urn:ngsi-ld:null``) value removes a member. The result
    is validated as a create is; ``id`` and ``type`` cannot change; ``createdAt`` stays,
    ``modifiedAt`` becomes ``now``."""
    if not isinstance(patch, dict):
        raise BadRequestData("a subscription update must be a JSON object")
    if not patch:
        raise BadRequestData("a subscription update cannot be empty")
    if "id" in patch and patch["id"] != stored["id"]:
        raise BadRequestData("the id of a subscription cannot be changed")
    if "type" in patch and patch["type"] != stored["type"]:
        raise BadRequestData("the type of a subscription cannot be changed")
    # Work in client form with the requester's terms: compacting then expanding with the same
    # terms gives back the stored IRIs, and the merged body is then checked like a new one.
    body = _client_form(stored, terms)
    for key, value in patch.items():
        if key == "notification" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if not deletes_member(v)}
        if deletes_member(value):
            body.pop(key, None)
        else:
            body[key] = value
    merged = _normalize(
        body,
        terms,
        now,
        subscription_id=stored["id"],
        # An expiresAt that passed while stored must not block unrelated updates; a new one
        # must be in the future, as at creation.
        check_expiry="expiresAt" in patch,
        created_at=stored.get("createdAt", now),
        csource=csource,
    )
    # The q the client did not touch keeps the names it was written with.
    if "q" not in patch and Q_TERMS_MEMBER in stored and "q" in merged:
        merged[Q_TERMS_MEMBER] = stored[Q_TERMS_MEMBER]
    if "csf" not in patch and CSF_TERMS_MEMBER in stored and "csf" in merged:
        merged[CSF_TERMS_MEMBER] = stored[CSF_TERMS_MEMBER]
    for member in (CONTEXT_MEMBER, OWNER_MEMBER):
        if member in stored:
            merged[member] = stored[member]
    return merged


# -- stored -> client ---------------------------------------------------------------------------


# The status of a stored subscription that can no longer be evaluated (none of §5.2.12's
# values fits: it is neither active, nor paused by its owner, nor expired).
INVALID = "invalid"


def subscription_filters(stored: dict[str, Any]) -> tuple[QNode | None, GeoQuery | None]:
    """The parsed ``q`` and ``geoQ`` of a stored subscription, its entity types checked: what
    matching a change needs. Raises when one of them no longer parses (all were validated at
    creation; a later version of the language may read them otherwise)."""
    for selector in stored.get("entities", ()):
        selector_type(selector)
    return subscription_q(stored, lambda name: name), subscription_geoq(stored)


def subscription_status(stored: dict[str, Any], now: str) -> str:
    """§5.2.12 status: "expired" once expiresAt has passed, "paused" when not isActive, else
    "active". Expiry wins: a paused subscription that expired cannot be resumed as it is."""
    expires = stored.get("expiresAt")
    if expires is not None and expires <= timefmt.normalize(now, "now"):
        return "expired"
    if not stored.get("isActive", True):
        return "paused"
    return "active"


def is_active(stored: dict[str, Any], now: str) -> bool:
    """Whether the subscription may notify at ``now``."""
    return subscription_status(stored, now) == "active"


def _client_form(stored: dict[str, Any], terms: Terms) -> dict[str, Any]:
    """The stored members with names compacted; no status, no system members."""
    out: dict[str, Any] = {}
    for key, value in stored.items():
        if key in _READ_ONLY or key.startswith("_"):
            continue
        if key == "entities":
            out[key] = [
                {
                    **{k: v for k, v in sel.items() if k != "type"},
                    "type": _shown_type(sel["type"], terms),
                }
                for sel in value
            ]
        elif key == "watchedAttributes":
            out[key] = [terms.compact(iri) for iri in value]
        elif key == "geoQ":
            out[key] = {**value, "geoproperty": terms.compact(value["geoproperty"])}
        elif key == "temporalQ":
            out[key] = {
                k: timefmt.display(v) if k in ("timeAt", "endTimeAt") else v
                for k, v in value.items()
            }
        elif key == "notification":
            notification = dict(value)
            for names in ("attributes", "pick", "omit"):
                if names in notification:
                    notification[names] = [
                        m if m in _ENTITY_MEMBERS else terms.compact(m) for m in notification[names]
                    ]
            notification["endpoint"] = _copy_endpoint(notification["endpoint"])
            out[key] = notification
        elif isinstance(value, list):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _copy_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    # Deep enough that a caller editing the rendered view cannot change the stored one.
    copy = dict(endpoint)
    for key in ("receiverInfo", "notifierInfo"):
        if key in copy:
            copy[key] = [dict(item) for item in copy[key]]
    return copy


def _shown_type(stored_type: str, terms: Terms) -> str:
    try:
        return compact_type_expression(stored_type, terms)
    except NgsiError:
        # One that no longer parses is shown as stored (its status says "invalid"), rather
        # than make every listing of the tenant's subscriptions fail.
        return stored_type


def compact_type_expression(stored_type: str, terms: Terms) -> str:
    return render_type_expression(_stored_type_expr(stored_type), terms.compact)


def render_subscription(
    stored: dict[str, Any],
    terms: Terms,
    *,
    status_info: dict[str, Any] | None = None,
    sys_attrs: bool = False,
    now: str,
) -> dict[str, Any]:
    """A stored subscription as a client sees it (§5.8.3): names compacted with ``terms``,
    ``status`` derived at ``now``, the NotificationStatus members from ``status_info`` (what the
    notifier recorded) inside ``notification``, and createdAt/modifiedAt with ``sys_attrs``."""
    body = _client_form(stored, terms)
    body.pop("@context", None)
    out: dict[str, Any] = {}
    try:
        subscription_filters(stored)
        status = subscription_status(stored, now)
    except Exception:
        status = INVALID  # it matches nothing: say so rather than look alive
    for key, value in body.items():
        out[key] = value
        if key == "isActive":
            out["status"] = status
    if "status" not in out:
        out["status"] = status
    if status_info:
        notification = out["notification"]
        for key in STATUS_MEMBERS:
            if key in status_info and status_info[key] is not None:
                notification[key] = status_info[key]
        if "status" not in notification and (
            "lastSuccess" in notification or "lastFailure" in notification
        ):
            # The outcome of the latest attempt, when the notifier did not say it explicitly.
            failed = notification.get("lastFailure", "") > notification.get("lastSuccess", "")
            notification["status"] = "failed" if failed else "ok"
    if sys_attrs:
        out["createdAt"] = stored["createdAt"]
        out["modifiedAt"] = stored["modifiedAt"]
    return out


# -- matching helpers for the notifier ----------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _stored_type_expr(stored_type: str) -> TypeExpr:
    # Stored expressions hold IRIs already: parse them without expanding anything.
    return parse_type_expression(stored_type, lambda name: name)


def selector_type(selector: dict[str, Any]) -> TypeExpr:
    """The parsed type expression of a stored EntitySelector (IRIs, as queries take them)."""
    return _stored_type_expr(selector["type"])


def subscription_matches_entity_type(stored: dict[str, Any], types: list[str]) -> bool:
    """Whether an entity with these (expanded) types may concern the subscription: true when it
    has no entities (watchedAttributes only) or any selector's type expression matches."""
    selectors = stored.get("entities")
    if not selectors:
        return True
    return any(type_matches(_stored_type_expr(sel["type"]), types) for sel in selectors)


def subscription_matches_entity(stored: dict[str, Any], entity_id: str, types: list[str]) -> bool:
    """Whether an entity (id, expanded types) is selected by the subscription's ``entities``:
    any selector whose type expression matches and whose id / idPattern (if given) match.
    idPattern is searched, not anchored, as the stores' idPattern queries are."""
    selectors = stored.get("entities")
    if not selectors:
        return True
    for sel in selectors:
        if not type_matches(_stored_type_expr(sel["type"]), types):
            continue
        if "id" in sel and sel["id"] != entity_id:
            continue
        if "idPattern" in sel and not compiled_pattern(sel["idPattern"]).search(entity_id):
            continue
        return True
    return False


def watches(stored: dict[str, Any], changed: Iterable[str]) -> bool:
    """Whether a change to these (expanded) attributes concerns the subscription: any attribute
    without watchedAttributes, else one of the watched ones."""
    watched = stored.get("watchedAttributes")
    if not watched:
        return True
    return not set(watched).isdisjoint(changed)


def triggers_on(stored: dict[str, Any], trigger: str) -> bool:
    """Whether ``trigger`` (one of TRIGGERS) is one the subscription notifies on."""
    return trigger in stored.get("notificationTrigger", DEFAULT_TRIGGERS)


def subscription_q(stored: dict[str, Any], expand: Callable[[str], str]) -> QNode | None:
    """The parsed ``q`` of a subscription, its names expanded with the subscription's own
    @context (``expand``); None without q."""
    text = stored.get("q")
    if text is None:
        return None
    names = stored.get(Q_TERMS_MEMBER) or {}
    return parse_q(_q_text(text), lambda name: names.get(name) or expand(name))


def _q_text(q: str) -> str:
    """The query of a subscription's q: percent-decoded, as in a URL, because clients copy q
    from query strings into subscriptions (``name=="Eiffel%20Tower"``); Stellio and Orion-LD
    read it so too. The stored q stays as the client wrote it."""
    return urllib.parse.unquote(q) if "%" in q else q


def notification_context(stored: dict[str, Any]) -> Any:
    """The @context to compact a subscription's notifications with (§5.8.1): ``jsonldContext``,
    else the one it was created with, else None (the core context)."""
    return stored.get("jsonldContext") or stored.get(CONTEXT_MEMBER)


def subscription_geoq(stored: dict[str, Any]) -> GeoQuery | None:
    """The parsed ``geoQ`` of a subscription (its geoproperty is stored expanded)."""
    geo = stored.get("geoQ")
    if geo is None:
        return None
    return parse_geoquery(
        geo["georel"], geo["geometry"], geo["coordinates"], geo["geoproperty"], lambda n: n
    )


def notification_join(stored: dict[str, Any]) -> Join | None:
    """How a subscription's notifications join linked entities (§4.5.23, ``notification.join``
    and ``joinLevel``, default 1); None for no join (absent or ``@none``)."""
    params = stored["notification"]
    form = params.get("join")
    if form is None or form == "@none":
        return None
    return Join(form, params.get("joinLevel", 1))


def notification_attributes(stored: dict[str, Any]) -> list[str] | None:
    """The expanded attributes a notification carries; None for all of them."""
    return stored["notification"].get("attributes")


__all__ = [
    "ACCEPTS",
    "DEFAULT_TRIGGERS",
    "FORMATS",
    "INVALID",
    "STATUS_MEMBERS",
    "TRIGGERS",
    "check_endpoint_uri",
    "compact_type_expression",
    "is_active",
    "merge_subscription",
    "normalize_subscription",
    "notification_attributes",
    "notification_context",
    "notification_join",
    "render_subscription",
    "render_type_expression",
    "selector_type",
    "subscription_csf",
    "subscription_filters",
    "subscription_geoq",
    "subscription_matches_entity",
    "subscription_matches_entity_type",
    "subscription_q",
    "subscription_status",
    "subscription_time_filter",
    "triggers_on",
    "watches",
]
