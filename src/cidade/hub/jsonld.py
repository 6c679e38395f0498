"""JSON-LD @context handling: term maps, remote context resolution, hosted contexts.

NGSI-LD (ETSI GS CIM 009 v1.8) stores every term expanded (docs/stored-form.md) and compacts
responses with the requester's @context. This module turns an @context (a URL, an inline object,
or a list of them) into a :class:`TermMap`, the O(1) term <-> IRI lookup the hot paths use, and
manages the @contexts the broker keeps (§5.13: Hosted, Cached, ImplicitlyCreated).

The built-in core @context (``core_context.jsonld`` beside this file) is the project's own copy of
the NGSI-LD core @context term definitions, built from the definitions ETSI publishes at
uri.etsi.org/ngsi-ld/ (reformatted and sorted). It is the v1.9 term set, a superset of v1.8, less
``ngsildproof`` (v1.9 data-integrity proofs, whose scoped @context needs an external W3C document
a built-in copy cannot carry). Every core @context URL of any version resolves to it, never to the
network.

Precedence (NGSI-LD: the core @context is implicitly included; JSON-LD 1.1 protected terms):

* The core @context is implicitly the *last* element of every user @context, so core term
  definitions always win: a user term that redefines a core term (``location``, ``value``...) is
  silently superseded, as if the core @context had been appended to the user's array.
* When the user's own array lists the core @context explicitly *before* a redefinition of one of
  its (protected) terms, plain JSON-LD 1.1 processing of that array fails with "protected term
  redefinition"; that is reported as 400 BadRequestData.
* Deviation: the user's ``@vocab`` is kept (appending the core @context would replace it with the
  NGSI-LD default vocabulary); the default vocabulary applies only when the user sets none.

Compaction follows JSON-LD 1.1 IRI compaction (§6.1.5 of the API spec) with these deviations:
term selection does not look at the value being compacted (among terms for the same IRI the one
without an ``@container`` wins, then the shortest, then the lexicographically least); a
vocab-relative result is only used when it expands back to the same IRI (no ':' in it); a term
mapped to null expands to itself (instead of being dropped), so it round-trips unchanged.
Property- and type-scoped contexts are validated but not applied (NGSI-LD entities do not use
them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol, cast
from urllib.parse import unquote, urljoin

import aiohttp
import httpx
import orjson
from pyld import iri_resolver
from pyld.context_resolver import ContextResolver as _PyldContextResolver
from pyld.jsonld import JsonLdError, JsonLdProcessor

from cidade.http.egress import EgressPolicy, loggable_url
from cidade.ngsild.errors import (
    BadRequestData,
    InvalidRequest,
    LdContextNotAvailable,
    OperationNotSupported,
    ResourceNotFound,
)

log = logging.getLogger("cidade")

CORE_CONTEXT_URL = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
DEFAULT_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
JSONLD_CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
# Hosted contexts are served under {base_url}{HOSTED_CONTEXTS_PATH}{localId}.
HOSTED_CONTEXTS_PATH = "/ngsi-ld/v1/jsonldContexts/"
LOCAL_ID_PREFIX = "urn:ngsi-ld:jsonldContext:"

KIND_HOSTED = "Hosted"
KIND_CACHED = "Cached"
KIND_IMPLICIT = "ImplicitlyCreated"
KINDS = (KIND_HOSTED, KIND_CACHED, KIND_IMPLICIT)

_CORE_URL = re.compile(
    r"^https?://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(?:-v\d+\.\d+(?:\.\d+)?)?\.jsonld$"
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
# Extra memoized lookups per TermMap beyond its own terms: bounded, so a client sending endless
# distinct attribute names cannot grow memory without limit.
_MEMO_LIMIT = 10_000
# Distinct remote documents one @context may pull in (nested included).
_MAX_DOCUMENTS = 64

log = logging.getLogger("cidade.jsonld")


def is_core_context_url(url: object) -> bool:
    """Whether ``url`` names the NGSI-LD core @context (any version, http or https)."""
    return isinstance(url, str) and _CORE_URL.match(url) is not None


# What RFC 3987 leaves out of every IRI (reference): controls, space, surrogates, and the ASCII
# characters " < > \ ^ ` { | }.
_NOT_IN_IRI = re.compile(r'[\x00-\x20\x7f-\x9f"<>\\^`{|}\ud800-\udfff]')


def _now_iso(ts: float | None = None) -> str:
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resolve_references(context: Any, base: str) -> Any:
    """``context`` with its relative URL references made absolute against ``base``, the URL of
    the document that carries it (JSON-LD 1.1 API §4.1.2 step 5.2.1: a request body's @context
    resolves against the request URL). Only the top level and the members of an array are
    references; objects are returned as they are."""
    if isinstance(context, str):
        if not context or _SCHEME.match(context):
            return context
        return urljoin(base, context)
    if isinstance(context, list):
        return [resolve_references(c, base) if isinstance(c, str) else c for c in context]
    return context


# ---------------------------------------------------------------------------------------------
# Link header (RFC 8288; JSON-LD 1.1 API §9.4.1; NGSI-LD §6.3.5)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, buf, quoted, bracketed, escaped = [], [], False, False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if ch == "\\" and quoted:
            escaped = True
        elif ch == '"' and not bracketed:
            quoted = not quoted
        elif ch == "<" and not quoted:
            bracketed = True
        elif ch == ">" and not quoted:
            bracketed = False
        elif ch == sep and not quoted and not bracketed:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quoted or bracketed:
        raise BadRequestData("malformed Link header: unbalanced quotes or angle brackets")
    parts.append("".join(buf))
    return parts


def parse_link_header(value: str | None) -> str | None:
    """The @context URL of a JSON-LD context Link header, or None when there is none.

    Several comma-separated links may appear; only those whose ``rel`` is
    ``http://www.w3.org/ns/json-ld#context`` count. More than one of them, a malformed link, or a
    URL that is not absolute is 400 BadRequestData (the request is well-formed HTTP whose
    @context information cannot be used).
    """
    if value is None or not value.strip():
        return None
    found: list[str] = []
    for link in _split_outside_quotes(value, ","):
        link = link.strip()
        if not link:
            continue
        if not link.startswith("<") or ">" not in link:
            raise BadRequestData(f"malformed Link header: {link!r} is not '<URL>; params'")
        end = link.index(">")
        url = link[1:end].strip()
        params: dict[str, str] = {}
        for part in _split_outside_quotes(link[end + 1 :], ";"):
            part = part.strip()
            if not part:
                continue
            name, eq, val = part.partition("=")
            if not eq:
                continue  # a parameter without value (RFC 8288 allows it); not ours
            val = val.strip()
            if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                val = val[1:-1].replace('\\"', '"')
            params[name.strip().lower()] = val
        # Relation types compare case-insensitively (RFC 8288 §2.1.1).
        if JSONLD_CONTEXT_REL not in params.get("rel", "").lower().split():
            continue
        if not url or not _SCHEME.match(url):
            raise BadRequestData(f"the JSON-LD context Link header URL {url!r} is not absolute")
        found.append(url)
    if len(found) > 1:
        raise BadRequestData("more than one JSON-LD context Link header (JSON-LD 1.1 §9.4.1)")
    return found[0] if found else None


# ---------------------------------------------------------------------------------------------
# TermMap


class TermMap:
    """Term <-> IRI lookups for one @context, built once and cached by the resolver.

    ``expand``/``compact`` are a dict lookup on the hot path; misses (compact IRIs,
    vocab-relative names, IRIs without a term) are computed once and memoized.
    """

    __slots__ = ("_cmp", "_defs", "_exp", "_memo_max", "_prefixes", "context", "sources", "vocab")

    def __init__(
        self,
        context: Any,
        definitions: dict[str, dict[str, Any]],
        vocab: str,
        sources: Iterable[_Doc] = (),
    ) -> None:
        self.context = context  # the @context as the client gave it (None: core only)
        self.vocab = vocab
        self.sources: tuple[_Doc, ...] = tuple(sources)  # stored documents this map depends on
        self._defs = definitions
        exp: dict[str, str] = {}
        prefixes: dict[str, str] = {}
        for term, d in definitions.items():
            iri = d.get("@id")
            # A term mapped to null must not fall back to @vocab; it stays itself (see module doc).
            exp[term] = term if iri is None else iri
            if iri is not None and d.get("_prefix") and not iri.startswith("@"):
                prefixes[term] = iri
        self._exp = exp
        self._prefixes = prefixes
        # Inverse: the best term per IRI. JSON-LD's inverse context orders terms shortest first,
        # then lexicographically; terms with a container are only picked when nothing else fits.
        cmp: dict[str, str] = {}
        ranked = sorted(
            (
                (_container_rank(d), len(t), t, d["@id"])
                for t, d in definitions.items()
                if d.get("@id") is not None and not d.get("reverse")
            ),
        )
        for _, _, term, iri in ranked:
            cmp.setdefault(iri, term)
        self._cmp = cmp
        self._memo_max = len(exp) + len(cmp) + _MEMO_LIMIT

    # -- expansion ------------------------------------------------------------------------------

    def expand(self, term: str) -> str:
        """A term, compact IRI or absolute IRI -> its absolute IRI (JSON-LD vocab-relative IRI
        expansion). Keyword aliases give the keyword (``type`` -> ``@type``)."""
        iri = self._exp.get(term)
        if iri is None:
            iri = self._expand_miss(term)
        return iri

    def _expand_miss(self, term: str) -> str:
        if term.startswith("@"):
            iri = term  # a keyword (or keyword-like form JSON-LD ignores): never vocab-expanded
        else:
            colon = term.find(":")
            if colon > 0:
                prefix, suffix = term[:colon], term[colon + 1 :]
                base = (
                    None if prefix == "_" or suffix.startswith("//") else self._prefixes.get(prefix)
                )
                # A defined prefix makes it a compact IRI; otherwise it is an absolute IRI.
                iri = term if base is None else base + suffix
            else:
                iri = self.vocab + term
        if len(self._exp) < self._memo_max:
            self._exp[term] = iri
        return iri

    def expand_vocab_value(self, value: Any) -> Any:
        """Expand a value of a ``@type: @vocab`` member (VocabProperty ``vocab``, objectType):
        a string or a list of strings; other values are returned as they are."""
        if isinstance(value, str):
            return self.expand(value)
        if isinstance(value, list):
            return [self.expand(v) if isinstance(v, str) else v for v in value]
        return value

    # -- compaction -----------------------------------------------------------------------------

    def compact(self, iri: str) -> str:
        """An absolute IRI -> the term this @context maps to it, else a vocab-relative name,
        else a compact IRI ``prefix:suffix``, else the IRI itself (JSON-LD 1.1 order)."""
        term = self._cmp.get(iri)
        if term is None:
            term = self._compact_miss(iri)
        return term

    def _compact_miss(self, iri: str) -> str:
        out = iri
        vocab = self.vocab
        if vocab and iri.startswith(vocab) and len(iri) > len(vocab):
            suffix = iri[len(vocab) :]
            # JSON-LD: only when the suffix is not itself a term; and it must expand back to iri.
            if suffix not in self._defs and ":" not in suffix and not suffix.startswith("@"):
                out = suffix
        if out is iri:
            best = None
            for prefix, base in self._prefixes.items():
                if len(iri) > len(base) and iri.startswith(base):
                    suffix = iri[len(base) :]
                    if suffix.startswith("//"):
                        continue
                    candidate = prefix + ":" + suffix
                    defined = self._defs.get(candidate)
                    if defined is not None and defined.get("@id") != iri:
                        continue  # the compact IRI would read back as a different term
                    if best is None or (len(candidate), candidate) < (len(best), best):
                        best = candidate
            if best is not None:
                out = best
        if len(self._cmp) < self._memo_max:
            self._cmp[iri] = out
        return out

    def compact_vocab_value(self, value: Any) -> Any:
        """Compact a ``@type: @vocab`` value (string or list of strings)."""
        if isinstance(value, str):
            return self.compact(value)
        if isinstance(value, list):
            return [self.compact(v) if isinstance(v, str) else v for v in value]
        return value

    # -- introspection --------------------------------------------------------------------------

    def definition(self, term: str) -> dict[str, Any] | None:
        """The JSON-LD term definition of ``term`` (``@id``, ``@type``, ``@container``,
        ``protected``...), or None when the term is not defined."""
        d = self._defs.get(term)
        return dict(d) if d is not None else None

    def __contains__(self, term: object) -> bool:
        return term in self._defs

    def __repr__(self) -> str:
        return f"TermMap({len(self._defs)} terms, vocab={self.vocab!r})"


def _container_rank(d: dict[str, Any]) -> int:
    container = d.get("@container")
    if not container or container == ["@set"]:
        return 0
    return 1


# ---------------------------------------------------------------------------------------------
# Stored @contexts (§5.13)


@dataclass
class ContextInfo:
    """Metadata of a stored @context (§5.13.3 ``details=true``)."""

    url: str
    local_id: str
    kind: str
    created_at: str
    last_usage: str | None = None
    number_of_hits: int = 0
    extra_info: dict[str, Any] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "URL": self.url,
            "localId": self.local_id,
            "kind": self.kind,
            "createdAt": self.created_at,
        }
        if self.last_usage is not None:
            out["lastUsage"] = self.last_usage
        out["numberOfHits"] = self.number_of_hits
        if self.extra_info:
            out["extraInfo"] = self.extra_info
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContextInfo:
        return cls(
            url=data["URL"],
            local_id=data["localId"],
            kind=data["kind"],
            created_at=data["createdAt"],
            last_usage=data.get("lastUsage"),
            number_of_hits=int(data.get("numberOfHits", 0)),
            extra_info=data.get("extraInfo"),
        )


class _Doc:
    """A stored @context: the value of its @context member and its bookkeeping."""

    __slots__ = (
        "context",
        "created_at",
        "extra",
        "hits",
        "kind",
        "last_used",
        "local_id",
        "pending",
        "url",
    )

    def __init__(
        self,
        url: str,
        local_id: str,
        kind: str,
        context: Any,
        created_at: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.local_id = local_id
        self.kind = kind
        self.context = context
        self.created_at = created_at or _now_iso()
        self.extra = extra
        self.hits = 0  # uses known here: the stored count at the last sync, plus ``pending``
        self.pending = 0  # uses counted here and not yet added to the store's count
        self.last_used: float | None = None

    def used(self, now: float) -> None:
        self.hits += 1
        self.pending += 1
        self.last_used = now

    def info(self) -> ContextInfo:
        return ContextInfo(
            url=self.url,
            local_id=self.local_id,
            kind=self.kind,
            created_at=self.created_at,
            last_usage=None if self.last_used is None else _now_iso(self.last_used),
            number_of_hits=self.hits,
            extra_info=self.extra,
        )


class _Op:
    """What one resolution has loaded: documents by URL (served to pyld) and their records."""

    __slots__ = ("docs", "sources")

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.sources: list[_Doc] = []


class ContextStore(Protocol):
    """Where the stored @contexts live (the Store implements it; store/base.py documents it):
    every worker process mirrors them in memory and follows the others' changes through it."""

    async def context_entries(self) -> list[dict[str, Any]]: ...

    async def context_bodies(self, local_ids: Sequence[str]) -> dict[str, Any]: ...

    async def save_context(self, local_id: str, info: dict[str, Any], body: Any) -> None: ...

    async def delete_context(self, local_id: str) -> None: ...

    async def add_context_usage(self, usage: Sequence[tuple[str, int, str]]) -> None: ...


def cached_local_id(url: str) -> str:
    """The local id of the Cached copy of ``url``: the same in every worker, so two of them
    fetching one URL at once store one entry."""
    return LOCAL_ID_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, url))


def implicit_local_id(context: Any) -> str:
    """The local id of the ImplicitlyCreated @context for an inline or compound @context: the
    same @context gives the same entry, in every worker."""
    return LOCAL_ID_PREFIX + str(uuid.uuid5(uuid.NAMESPACE_URL, "implicit:" + _canonical(context)))


def _canonical(context: Any) -> str:
    """The cache key of an @context: equal contexts give equal keys."""
    if isinstance(context, list) and len(context) == 1:
        context = context[0]  # ["url"] and "url" mean the same
    if isinstance(context, str):
        return "s" + context
    try:
        return "j" + orjson.dumps(context, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise BadRequestData(f"the @context is not JSON: {exc}") from None


def _jsonld_message(exc: JsonLdError) -> str:
    code = getattr(exc, "code", None)
    text = exc.args[0] if exc.args else str(exc)
    return f"{text} ({code})" if code else str(text)


class ContextResolver:
    """Resolves @contexts into TermMaps and keeps the broker's stored @contexts.

    One per application (the app creates it and hands it around); all state lives here.
    Remote documents are fetched with aiohttp (timeout, size cap, bounded redirects, only from
    addresses ``egress`` permits: docs/security.md), validated
    as JSON-LD, and kept as Cached @contexts, at most ``max_cached`` of them (the least recently
    used go first); TermMaps are kept in an LRU of the same size keyed by the canonical form of
    the @context. Concurrent resolutions of the same URL share one fetch.

    Stored @contexts (Hosted, ImplicitlyCreated, Cached) are written to the ``store`` as they
    are added, reloaded or deleted, and mirrored in memory, where requests resolve them. Their
    uses (numberOfHits, lastUsage) are counted in memory on the request path and added to the
    store in batches (``flush_usage``, which the app runs every few seconds and before it
    answers with details), so a count is exact for one worker and, across workers, behind by
    at most what the others have not flushed yet.
    """

    def __init__(
        self,
        *,
        fetch_timeout: float = 5.0,
        max_cached: int = 256,
        max_context_bytes: int = 1_000_000,
        allow_fetch: bool = True,
        max_redirects: int = 5,
        max_depth: int = 8,
        base_urls: Iterable[str] = (),
        store: ContextStore | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.fetch_timeout = fetch_timeout
        self.egress = egress or EgressPolicy()
        self.max_cached = max(1, max_cached)
        self.max_context_bytes = max_context_bytes
        self.allow_fetch = allow_fetch
        self.max_redirects = max_redirects
        self.max_depth = max_depth
        # Where stored @contexts live: several workers share one store, so what one adds,
        # reloads or deletes the others pick up from there (``sync_stored``). None: this
        # process alone keeps them, in memory.
        self._store = store
        # Adding, deleting and syncing stored @contexts one at a time: a sync must never see
        # a context that is being added as one another worker deleted.
        self._stored_lock = asyncio.Lock()
        # Flushing usage counts and reading them back one at a time: a sync that read the
        # store while a flush was writing would count the uses that flush carries nowhere (not
        # pending here any more, not in the store yet), and show too few.
        self._usage_lock = asyncio.Lock()
        # Base URLs of this broker: a hosted-context URL under one of them that we do not know is
        # answered 503 at once instead of being fetched from ourselves.
        self._bases: set[str] = {b.rstrip("/") for b in base_urls}
        self._client: aiohttp.ClientSession | None = None
        self._processor = JsonLdProcessor()
        self._docs: OrderedDict[str, _Doc] = OrderedDict()  # Cached, by URL (LRU)
        self._cached_ids: dict[str, str] = {}  # localId -> URL of Cached documents
        self._local: dict[str, _Doc] = {}  # Hosted and ImplicitlyCreated, by localId
        self._maps: OrderedDict[str, TermMap] = OrderedDict()
        self._fetching: dict[str, asyncio.Task[Any]] = {}
        self._building: dict[str, asyncio.Task[TermMap]] = {}

        raw = resources.files("cidade.hub").joinpath("core_context.jsonld").read_bytes()
        self._core_document: dict[str, Any] = orjson.loads(raw)
        self._core = _Doc(
            CORE_CONTEXT_URL,
            LOCAL_ID_PREFIX + "core",
            KIND_CACHED,
            self._core_document["@context"],
            extra={"builtin": True, "version": "1.8"},
        )
        core_active = self._process(CORE_CONTEXT_URL, _Op())
        self._core_defs = {t: dict(m) for t, m in core_active["mappings"].items()}
        self._core_map = TermMap(None, dict(self._core_defs), DEFAULT_VOCAB)

    async def aclose(self) -> None:
        """Close the HTTP client (the app calls this at shutdown)."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- resolution -----------------------------------------------------------------------------

    @property
    def core(self) -> TermMap:
        """The TermMap of the core @context alone."""
        return self._core_map

    async def term_map(self, context: str | dict[str, Any] | list[Any] | None) -> TermMap:
        """The TermMap for an @context (None: the core @context only). The core @context always
        applies, last (see the module docstring). 503 LdContextNotAvailable when a remote
        @context cannot be fetched or is not valid JSON-LD; 400 BadRequestData when the
        @context itself is malformed."""
        if context is None:
            return self._core_map
        if is_core_context_url(context):
            self._core.used(time.time())
            return self._core_map
        key = _canonical(context)
        tm = self._maps.get(key)
        if tm is not None:
            self._maps.move_to_end(key)
            self._touch(tm)
            return tm
        task = self._building.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._build(context, key))
            self._building[key] = task
            task.add_done_callback(lambda t, k=key: self._task_done(self._building, k, t))
        tm = await asyncio.shield(task)
        self._touch(tm)
        return tm

    async def request_context(
        self, content_type: str, link_header: str | None, body_context: object | None
    ) -> TermMap:
        """The TermMap of a request (§6.3.5).

        ``application/ld+json``: the @context is the body's ``@context`` member (required); a
        JSON-LD context Link header as well is 400. Any other media type (``application/json``,
        merge-patch, or "" for requests without body): the @context comes from the Link header,
        and a ``@context`` member in a body is 400. No @context at all means the core @context.
        """
        kind = content_type.split(";", 1)[0].strip().lower()
        link = parse_link_header(link_header)
        if kind == "application/ld+json":
            if link is not None:
                raise BadRequestData(
                    "a JSON-LD context Link header is not allowed with Content-Type "
                    "application/ld+json: put the @context in the body"
                )
            if body_context is None:
                raise BadRequestData(
                    "Content-Type application/ld+json requires an @context member in the body"
                )
            return await self.term_map(cast(Any, body_context))
        if body_context is not None and kind:
            raise BadRequestData(
                f"an @context member in the body requires Content-Type application/ld+json "
                f"(got {kind}); with application/json give the @context in a Link header"
            )
        return await self.term_map(link)

    async def _build(self, context: Any, key: str) -> TermMap:
        items = context if isinstance(context, list) else [context]
        for item in items:
            if not isinstance(item, (str, dict)):
                raise BadRequestData(
                    "an @context must be a URL, an object or an array of them, "
                    f"not {type(item).__name__}"
                )
        op = _Op()
        for item in items:
            await self._load(item, None, (), op)
        try:
            active = self._process(items, op)
        except JsonLdError as exc:
            raise BadRequestData(f"invalid @context: {_jsonld_message(exc)}") from None
        defs = {t: dict(m) for t, m in active["mappings"].items()}
        defs.update(self._core_defs)  # the core @context comes last and wins
        vocab = active.get("@vocab") or DEFAULT_VOCAB
        tm = TermMap(context, defs, vocab, op.sources)
        # A document deleted or reloaded while this map was being built: use it, do not keep it.
        if all(self._is_current(doc) for doc in op.sources):
            self._maps[key] = tm
            while len(self._maps) > self.max_cached:
                self._maps.popitem(last=False)
        return tm

    def _is_current(self, doc: _Doc) -> bool:
        if doc.kind == KIND_CACHED:
            stored = self._docs.get(doc.url)
            return stored is None or stored is doc  # evicted is fine; replaced is not
        return self._local.get(doc.local_id) is doc

    def _touch(self, tm: TermMap) -> None:
        if not tm.sources:
            return
        now = time.time()
        for doc in tm.sources:
            doc.used(now)
            if doc.kind == KIND_CACHED and doc.url in self._docs:
                self._docs.move_to_end(doc.url)

    async def _load(self, item: Any, base: str | None, chain: tuple[str, ...], op: _Op) -> None:
        """Make every remote document ``item`` refers to (nested ones too) available in ``op``,
        fetching and validating what is not stored yet."""
        if isinstance(item, str):
            url = self._absolute(item, base)
            if is_core_context_url(url):
                return
            if url in chain:
                raise LdContextNotAvailable(
                    f"@context {chain[0]} includes itself (cycle through {url})"
                )
            if url in op.docs:
                return
            if len(chain) >= self.max_depth:
                raise LdContextNotAvailable(
                    f"@context {chain[0]} nests remote contexts deeper than {self.max_depth}"
                )
            if len(op.docs) >= _MAX_DOCUMENTS:
                raise LdContextNotAvailable(
                    f"@context refers to more than {_MAX_DOCUMENTS} remote documents"
                )
            try:
                doc = self._local_doc(url) or self._cached_doc(url)
            except LdContextNotAvailable:
                # Ours but unknown here: another worker may have just added it.
                if not await self.sync_stored():
                    raise
                doc = self._local_doc(url)
            if doc is not None:
                op.docs[url] = doc.context
                await self._load(doc.context, url, (*chain, url), op)
            else:
                ctx = await self._fetch_shared(url)
                op.docs[url] = ctx
                await self._load(ctx, url, (*chain, url), op)
                try:
                    self._process(url, op)
                except JsonLdError as exc:
                    raise LdContextNotAvailable(
                        f"{url} is not a valid JSON-LD @context: {_jsonld_message(exc)}"
                    ) from None
                doc = await self._keep_cached(url, ctx)
            op.sources.append(doc)
        elif isinstance(item, list):
            for element in item:
                await self._load(element, base, chain, op)
        elif isinstance(item, dict):
            imported = item.get("@import")
            if isinstance(imported, str):
                await self._load(imported, base, chain, op)
            # Scoped contexts are validated by pyld when the term is defined: load them too.
            for value in item.values():
                if isinstance(value, dict) and "@context" in value:
                    await self._load(value["@context"], base, chain, op)

    def _absolute(self, ref: str, base: str | None) -> str:
        if _SCHEME.match(ref):
            return ref
        if base is None:
            raise BadRequestData(f"the @context URL {ref!r} is not an absolute URL")
        return iri_resolver.resolve(ref, base)

    def _process(self, local_ctx: Any, op: _Op) -> Any:
        """Run the JSON-LD 1.1 context processing algorithm (pyld), loading documents only from
        ``op`` and the built-in core: pyld never touches the network."""

        def loader(url: str, options: Any = None) -> dict[str, Any]:
            if is_core_context_url(url):
                document = self._core_document
            elif url in op.docs:
                document = {"@context": op.docs[url]}
            else:
                raise LookupError(f"{url} was not loaded")
            return {
                "contentType": "application/ld+json",
                "contextUrl": None,
                "documentUrl": url,
                "document": document,
            }

        options = {
            "documentLoader": loader,
            # A private resolver cache per run: pyld's default one is module-global and keyed by
            # URL, which would outlive reloads and deletions of stored contexts.
            "contextResolver": _PyldContextResolver({}, loader, max_context_urls=_MAX_DOCUMENTS),
            "processingMode": "json-ld-1.1",
        }
        initial = self._processor._get_initial_context(options)
        return self._processor.process_context(initial, local_ctx, options)

    # -- fetching -------------------------------------------------------------------------------

    async def _fetch_shared(self, url: str) -> Any:
        task = self._fetching.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._download(url))
            self._fetching[url] = task
            task.add_done_callback(lambda t, u=url: self._task_done(self._fetching, u, t))
        return await asyncio.shield(task)

    @staticmethod
    def _task_done(registry: dict[str, Any], key: str, task: asyncio.Task[Any]) -> None:
        if registry.get(key) is task:
            del registry[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters got it; no "never retrieved" warning

    async def _download(self, url: str) -> Any:
        """GET a remote @context document; its @context member. 503 on any failure."""
        bad = _NOT_IN_IRI.search(url)
        if bad is not None:
            # RFC 3987 §2.2: spaces, controls, surrogates and " < > \ ^ ` { | } are in no IRI;
            # httpx would percent-encode them and fetch a URL the caller never wrote.
            raise BadRequestData(
                f"the @context URL {url!r} is not a valid URL: {bad.group()!r} is not allowed in one"
            )
        try:
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise BadRequestData(f"the @context URL {url!r} is not a valid URL: {exc}") from None
        if not self.allow_fetch:
            raise LdContextNotAvailable(f"remote @context {url} not available (fetching disabled)")
        if not url.lower().startswith(("http://", "https://")):
            raise LdContextNotAvailable(f"@context {url} cannot be retrieved (not an http(s) URL)")
        raw = await self._http_get(url)
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise LdContextNotAvailable(f"@context {url} did not return JSON") from None
        if not isinstance(document, dict) or "@context" not in document:
            raise LdContextNotAvailable(
                f"@context {url} is not a JSON-LD context document (no @context member)"
            )
        return document["@context"]

    async def _http_get(self, url: str) -> bytes:
        if self._client is None:
            # Every connection, redirects' too, to an address the egress policy permits only.
            connector = aiohttp.TCPConnector(socket_factory=self.egress.socket_factory)
            self._client = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept": "application/ld+json, application/json;q=0.9, */*;q=0.1"},
            )
        limit = self.max_context_bytes
        try:
            # This bounds the whole download, slow trickles included.
            async with asyncio.timeout(self.fetch_timeout):
                async with self._client.get(url, max_redirects=self.max_redirects) as response:
                    if response.status != 200:
                        raise LdContextNotAvailable(
                            f"@context {url} answered HTTP {response.status}"
                        )
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise LdContextNotAvailable(f"@context {url} is larger than {limit} bytes")
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(65536):
                        body += chunk
                        if len(body) > limit:
                            raise LdContextNotAvailable(
                                f"@context {url} is larger than {limit} bytes"
                            )
                    return bytes(body)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # One answer for every way of not getting a document: what went wrong (refused,
            # reset, timed out, not allowed) would tell a caller which ports of which hosts are
            # open. The log keeps the reason.
            log.info("@context %s not retrieved: %s", loggable_url(url), type(exc).__name__)
            raise LdContextNotAvailable(f"@context {url} could not be retrieved") from None

    # -- stored documents -----------------------------------------------------------------------

    def _local_doc(self, url: str) -> _Doc | None:
        """A Hosted/ImplicitlyCreated @context named by one of our URLs, resolved locally."""
        at = url.find(HOSTED_CONTEXTS_PATH)
        if at < 0:
            return None
        doc = self._local.get(unquote(url[at + len(HOSTED_CONTEXTS_PATH) :]))
        if doc is not None:
            return doc
        if url[:at].rstrip("/") in self._bases:
            # Ours, but gone: never ask ourselves over HTTP.
            raise LdContextNotAvailable(f"@context {url} is not (or no longer) hosted here")
        return None

    def _cached_doc(self, url: str) -> _Doc | None:
        doc = self._docs.get(url)
        if doc is not None:
            self._docs.move_to_end(url)
        return doc

    async def _keep_cached(self, url: str, ctx: Any) -> _Doc:
        """Keep a freshly downloaded @context as Cached, here and in the store; the least
        recently used ones go when there are more than ``max_cached``."""
        doc = self._docs.get(url)
        if doc is not None:  # a concurrent resolution kept it first
            return doc
        doc = _Doc(url, cached_local_id(url), KIND_CACHED, ctx)
        async with self._stored_lock:
            self._put_cached(doc)
            try:
                await self._save(doc)
            except BaseException:
                self._drop(doc)
                raise
            evicted = []
            while len(self._docs) > self.max_cached:
                _, old = self._docs.popitem(last=False)
                self._cached_ids.pop(old.local_id, None)
                evicted.append(old)
            for old in evicted:
                await self._remove(old)
        return doc

    def _put_cached(self, doc: _Doc) -> None:
        self._docs[doc.url] = doc
        self._cached_ids[doc.local_id] = doc.url

    def _drop(self, doc: _Doc) -> None:
        """Forget a stored @context here (not in the store) and the TermMaps built from it."""
        if doc.kind == KIND_CACHED:
            if self._docs.get(doc.url) is doc:
                del self._docs[doc.url]
                self._cached_ids.pop(doc.local_id, None)
        elif self._local.get(doc.local_id) is doc:
            del self._local[doc.local_id]
        self._forget_maps(doc)

    def _find(self, context_id: str) -> _Doc | None:
        """The stored @context a client names: by local id, or by URL (a Cached one by the URL
        it was downloaded from, ours by the URL we serve it at, the core by any core URL)."""
        if context_id == self._core.local_id or is_core_context_url(context_id):
            return self._core
        doc = self._local.get(context_id)
        if doc is not None:
            return doc
        url = self._cached_ids.get(context_id, context_id)
        doc = self._docs.get(url)
        if doc is not None:
            return doc
        at = context_id.find(HOSTED_CONTEXTS_PATH)
        if at >= 0:
            return self._local.get(unquote(context_id[at + len(HOSTED_CONTEXTS_PATH) :]))
        return None

    def _forget_maps(self, doc: _Doc) -> None:
        """Drop TermMaps built from ``doc`` (deleted or reloaded)."""
        stale = [k for k, tm in self._maps.items() if any(s is doc for s in tm.sources)]
        for k in stale:
            del self._maps[k]

    async def _save(self, doc: _Doc) -> None:
        if self._store is not None:
            await self._store.save_context(
                doc.local_id, doc.info().to_json(), {"@context": doc.context}
            )

    async def _remove(self, doc: _Doc) -> None:
        if self._store is not None:
            await self._store.delete_context(doc.local_id)

    # -- the stored @contexts across workers ----------------------------------------------------

    async def sync_stored(self) -> bool:
        """Make the stored @contexts known here exactly those in the store, with the store's
        usage counts (this worker's own are added to it first): another worker may have added,
        reloaded or deleted some. Only the content of new or changed ones is read. False when
        there is no store."""
        if self._store is None:
            return False
        async with self._usage_lock:
            await self._flush_usage()
            async with self._stored_lock:
                entries = await self._store.context_entries()
                changed = [e["local_id"] for e in entries if self._is_new(e)]
                bodies = await self._store.context_bodies(changed) if changed else {}
                self._mirror(entries, bodies)
        return True

    def _known(self, local_id: str) -> _Doc | None:
        doc = self._local.get(local_id)
        if doc is None:
            doc = self._docs.get(self._cached_ids.get(local_id, ""))
        return doc

    def _is_new(self, entry: dict[str, Any]) -> bool:
        """Whether a stored entry is not mirrored here as it is (a reload gives a Cached one a
        new createdAt)."""
        info = entry["info"]
        doc = self._known(entry["local_id"])
        return (
            doc is None
            or doc.url != info.get("URL")
            or doc.kind != info.get("kind")
            or doc.created_at != info.get("createdAt")
        )

    def _mirror(self, entries: Iterable[dict[str, Any]], bodies: dict[str, Any]) -> None:
        seen: set[str] = set()
        cached: list[_Doc] = []
        for entry in entries:
            info = ContextInfo.from_json(entry["info"])
            if info.kind not in KINDS:
                continue
            doc = self._known(info.local_id)
            if info.local_id in bodies:
                body = bodies[info.local_id]
                value = body.get("@context") if isinstance(body, dict) else None
                if value is None:
                    continue  # not a stored @context body
                fresh = _Doc(info.url, info.local_id, info.kind, value, created_at=info.created_at)
                if doc is not None:  # reloaded by another worker: terms built from it are stale
                    fresh.pending, fresh.last_used = doc.pending, doc.last_used
                    self._drop(doc)
                doc = fresh
                if doc.kind == KIND_CACHED:
                    cached.append(doc)
                else:
                    self._local[doc.local_id] = doc
                    at = info.url.find(HOSTED_CONTEXTS_PATH)
                    if at > 0:
                        self._bases.add(info.url[:at].rstrip("/"))
            elif doc is None:
                continue  # deleted between reading the entries and the bodies
            seen.add(info.local_id)
            doc.hits = int(entry.get("hits") or 0) + doc.pending
            stored_last = _parse_iso(entry.get("last_used"))
            if stored_last is not None and (doc.last_used is None or stored_last > doc.last_used):
                doc.last_used = stored_last
        for doc in [*self._local.values(), *self._docs.values()]:
            if doc.local_id not in seen:
                self._drop(doc)
        # New Cached entries join the LRU as least recently used first.
        cached.sort(key=lambda d: d.last_used or 0.0, reverse=True)
        for doc in cached:
            self._put_cached(doc)
            self._docs.move_to_end(doc.url, last=False)

    async def flush_usage(self) -> None:
        """Add the uses counted here since the last flush to the store's counts, in one batch.
        The app calls this every few seconds, so the request path never writes for it."""
        if self._store is None:
            return
        async with self._usage_lock:
            await self._flush_usage()

    async def _flush_usage(self) -> None:
        """flush_usage, its caller holding ``_usage_lock``."""
        if self._store is None:
            return
        docs = [d for d in (*self._local.values(), *self._docs.values()) if d.pending]
        if not docs:
            return
        usage = [(d.local_id, d.pending, _now_iso(d.last_used)) for d in docs]
        for d in docs:
            d.pending = 0
        try:
            await self._store.add_context_usage(usage)
        except BaseException:
            for d, (_, count, _) in zip(docs, usage, strict=True):
                d.pending += count  # counted again at the next flush
            raise

    async def run_usage_flusher(self, interval: float) -> None:
        """Flush usage counts every ``interval`` seconds until cancelled (the app's lifespan
        runs it, and flushes once more at shutdown)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_usage()
            except Exception:
                log.exception("could not store @context usage counts; retrying later")

    # -- @context management (§5.13) ------------------------------------------------------------

    async def add_hosted(self, context_body: object, base_url: str) -> ContextInfo:
        """POST /jsonldContexts (§5.13.2): store a user @context, served from this broker.

        ``context_body`` is the request body, ``{"@context": ...}``; ``base_url`` is the broker's
        external base (``scheme://host[:port][/prefix]``, without ``/ngsi-ld/v1``). 400
        InvalidRequest when the body is not such an object, BadRequestData when its @context is
        not valid JSON-LD; 503 when a remote @context it refers to cannot be retrieved.
        """
        if not isinstance(context_body, dict) or "@context" not in context_body:
            raise InvalidRequest("the body must be a JSON object with an @context member")
        value = context_body["@context"]
        await self._validate(value)
        return await self._add_local(
            value, base_url, KIND_HOSTED, LOCAL_ID_PREFIX + str(uuid.uuid4())
        )

    async def register_implicit(self, context: Any, base_url: str) -> ContextInfo:
        """Store an inline/compound @context a request used as ImplicitlyCreated (§5.13.1), so
        it can be referred to by URL (e.g. a subscription's jsonldContext); the same @context
        gives the same entry. The request counts as one use of it."""
        local_id = implicit_local_id(context)
        doc = self._local.get(local_id)
        if doc is None:
            await self._validate(context)
            await self._add_local(context, base_url, KIND_IMPLICIT, local_id)
            doc = self._local[local_id]
        doc.used(time.time())
        return doc.info()

    async def _validate(self, value: Any) -> None:
        if isinstance(value, str):
            if not value:
                raise BadRequestData("the @context must not be empty")
        elif not isinstance(value, (dict, list)):
            raise BadRequestData("the @context must be a URL, an object or an array")
        await self.term_map(value)  # 400 / 503 as for requests

    async def _add_local(self, value: Any, base_url: str, kind: str, local_id: str) -> ContextInfo:
        base = base_url.rstrip("/")
        doc = _Doc(base + HOSTED_CONTEXTS_PATH + local_id, local_id, kind, value)
        self._bases.add(base)
        async with self._stored_lock:
            self._local[local_id] = doc
            try:
                await self._save(doc)
            except BaseException:
                self._local.pop(local_id, None)
                raise
        return doc.info()

    async def list(self, details: bool = False, kind: str | None = None) -> list[Any]:
        """GET /jsonldContexts (§5.13.3): the URLs of the stored @contexts, or with ``details``
        their metadata objects; optionally only those of one ``kind``. The core @context is
        listed first, as Cached."""
        if kind is not None and kind not in KINDS:
            raise BadRequestData(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        await self.sync_stored()
        docs = [*self._docs.values(), *self._local.values()]
        docs.sort(key=lambda d: d.created_at)
        docs.insert(0, self._core)
        if kind is not None:
            docs = [d for d in docs if d.kind == kind]
        if details:
            return [d.info().to_json() for d in docs]
        return [d.url for d in docs]

    async def serve(self, context_id: str, details: bool = False) -> dict[str, Any]:
        """GET /jsonldContexts/{contextId} (§5.13.4): ``{"@context": ...}`` of a Hosted or
        ImplicitlyCreated @context, or with ``details`` the metadata of any stored one (by
        local id, or a Cached one by its URL). 404 ResourceNotFound when unknown; 422
        OperationNotSupported for the content of a Cached one (the spec serves only
        Hosted/ImplicitlyCreated content). Serving is not a use of the @context."""
        # Another worker may have added or deleted it; details: the counts of every worker, as
        # far as they flushed.
        await self.sync_stored()
        doc = self._find(context_id)
        if doc is None:
            raise ResourceNotFound(f"no stored @context {context_id}")
        if details:
            return doc.info().to_json()
        if doc.kind == KIND_CACHED:
            raise OperationNotSupported(
                f"@context {context_id} is Cached: only its metadata is served (details=true)"
            )
        return {"@context": orjson.loads(orjson.dumps(doc.context))}

    async def delete(self, context_id: str, reload: bool = False) -> None:
        """DELETE /jsonldContexts/{contextId} (§5.13.5).

        Without ``reload``: remove the entry (any kind; a Cached one may also be named by its
        original URL) - the core @context cannot be deleted (400 BadRequestData). With
        ``reload``: download a Cached @context again and replace the stored copy (400
        BadRequestData for other kinds and for an identifier that is not a URI, as only a
        downloaded @context can be reloaded; 503 LdContextNotAvailable when the download fails,
        the old copy staying in place). Reloading the core is a no-op: the built-in copy is
        authoritative. 404 ResourceNotFound when unknown.
        """
        if reload and not _URI.match(context_id):
            raise BadRequestData(f"the @context identifier {context_id!r} is not a URI")
        await self.sync_stored()
        doc = self._find(context_id)
        if doc is None:
            raise ResourceNotFound(f"no stored @context {context_id}")
        if doc is self._core:
            if reload:
                return
            raise BadRequestData("the NGSI-LD core @context cannot be deleted")
        if reload:
            if doc.kind != KIND_CACHED:
                raise BadRequestData(
                    f"only Cached @contexts can be reloaded; {context_id} is {doc.kind}"
                )
            await self._reload(doc)
            return
        async with self._stored_lock:
            await self._remove(doc)
            self._drop(doc)

    async def _reload(self, doc: _Doc) -> None:
        url = doc.url
        ctx = await self._download(url)
        op = _Op()
        op.docs[url] = ctx
        await self._load(ctx, url, (url,), op)
        try:
            self._process(url, op)
        except JsonLdError as exc:
            raise LdContextNotAvailable(
                f"{url} is not a valid JSON-LD @context: {_jsonld_message(exc)}"
            ) from None
        fresh = _Doc(url, doc.local_id, KIND_CACHED, ctx, created_at=_now_iso())
        fresh.hits, fresh.pending, fresh.last_used = doc.hits, doc.pending, doc.last_used
        async with self._stored_lock:
            await self._save(fresh)
            self._drop(doc)
            self._put_cached(fresh)


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


__all__ = [
    "CORE_CONTEXT_URL",
    "DEFAULT_VOCAB",
    "HOSTED_CONTEXTS_PATH",
    "JSONLD_CONTEXT_REL",
    "KINDS",
    "KIND_CACHED",
    "KIND_HOSTED",
    "KIND_IMPLICIT",
    "ContextInfo",
    "ContextResolver",
    "ContextStore",
    "TermMap",
    "cached_local_id",
    "implicit_local_id",
    "is_core_context_url",
    "parse_link_header",
    "resolve_references",
]
