"""@context handling: term maps, remote resolution over real HTTP, Link headers, §6.3.5 rules,
and @context management (§5.13). Remote contexts come from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest

from cidade.http.egress import EgressPolicy
from cidade.hub.jsonld import (
    CORE_CONTEXT_URL,
    DEFAULT_VOCAB,
    HOSTED_CONTEXTS_PATH,
    ContextResolver,
    is_core_context_url,
    parse_link_header,
    resolve_references,
)
from cidade.ngsild.errors import (
    BadRequestData,
    InvalidRequest,
    LdContextNotAvailable,
    OperationNotSupported,
    ResourceNotFound,
)

NGSI = "https://uri.etsi.org/ngsi-ld/"
REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
BROKER = "http://broker.invalid"  # never resolved: hosted contexts must be served locally
# The context server is on loopback, which a deployment must allow (CIDADE_PRIVATE_NETWORKS).
LOOPBACK = EgressPolicy.from_text("127.0.0.0/8")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class ContextServer:
    """A tiny real HTTP server: path -> (status, body, headers, delay); counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str], float]] = {}
        self.hits: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                status, body, headers, delay = server.routes.get(
                    self.path, (404, b"not found", {}, 0.0)
                )
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(
        self,
        path: str,
        document: Any,
        *,
        status: int = 200,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        hdrs = {"Content-Type": "application/ld+json", **(headers or {})}
        self.routes[path] = (status, body, hdrs, delay)
        return self.url(path)

    def redirect(self, path: str, target: str) -> str:
        self.routes[path] = (302, b"", {"Location": target}, 0.0)
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[ContextServer]:
    srv = ContextServer()
    yield srv
    srv.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Core @context


@pytest.mark.parametrize(
    "url",
    [
        CORE_CONTEXT_URL,
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        "http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.3.jsonld",
        "http://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.1.jsonld",
    ],
)
def test_core_context_urls_resolve_without_network(url: str) -> None:
    assert is_core_context_url(url)

    async def go() -> None:
        resolver = ContextResolver(allow_fetch=False)  # any network use would be a 503
        tm = await resolver.term_map(url)
        assert tm.expand("location") == NGSI + "location"
        tm2 = await resolver.term_map([url, {"speed": "http://example.org/speed"}])
        assert tm2.expand("speed") == "http://example.org/speed"
        assert tm2.expand("observedAt") == NGSI + "observedAt"

    run(go())


@pytest.mark.parametrize(
    "url",
    [
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld",
        "https://example.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.json",
        None,
    ],
)
def test_not_core_context_urls(url: Any) -> None:
    assert not is_core_context_url(url)


def test_core_term_definitions() -> None:
    resolver = ContextResolver(allow_fetch=False)
    tm = run(resolver.term_map(None))
    assert tm is resolver.core
    assert tm.vocab == DEFAULT_VOCAB
    expected = {
        "id": "@id",
        "type": "@type",
        "value": NGSI + "hasValue",
        "object": NGSI + "hasObject",
        "vocab": NGSI + "hasVocab",
        "languageMap": NGSI + "hasLanguageMap",
        "Property": NGSI + "Property",
        "GeoProperty": NGSI + "GeoProperty",
        "VocabProperty": NGSI + "VocabProperty",
        "Point": "https://purl.org/geojson/vocab#Point",
        "description": "http://purl.org/dc/terms/description",
        "createdAt": NGSI + "createdAt",
        "unitCode": NGSI + "unitCode",
    }
    for term, iri in expected.items():
        assert tm.expand(term) == iri, term
        assert tm.compact(iri) == term, iri
    assert tm.definition("vocab")["@type"] == "@vocab"
    assert tm.definition("datasetId")["@type"] == "@id"
    assert tm.definition("location")["protected"] is True
    assert tm.definition("ngsildproof") is None  # v1.9 only, not in the built-in v1.8 copy
    assert tm.definition("nothing") is None
    # Unknown names: the NGSI-LD default vocabulary, both ways.
    assert tm.expand("temperature") == DEFAULT_VOCAB + "temperature"
    assert tm.compact(DEFAULT_VOCAB + "temperature") == "temperature"
    assert tm.compact(NGSI + "somethingNew") == "ngsi-ld:somethingNew"
    assert tm.expand("ngsi-ld:somethingNew") == NGSI + "somethingNew"
    assert tm.compact("@type") == "type"


# ---------------------------------------------------------------------------------------------
# User @context: terms, prefixes, @vocab


USER = {
    "ex": "http://example.org/ns#",
    "schema": "https://schema.org/",
    "Streetlight": "ex:Streetlight",
    "powerState": "ex:powerState",
    "brand": {"@id": "schema:brand"},
    "category": {"@id": "ex:category", "@type": "@vocab"},
    "on": "ex:on",
    "refStreet": {"@id": "ex:refStreet", "@type": "@id"},
}


def test_user_terms_prefixes_and_default_vocab() -> None:
    tm = run(ContextResolver(allow_fetch=False).term_map(USER))
    assert tm.expand("Streetlight") == "http://example.org/ns#Streetlight"
    assert tm.expand("powerState") == "http://example.org/ns#powerState"
    assert tm.expand("brand") == "https://schema.org/brand"
    assert tm.expand("ex:lampType") == "http://example.org/ns#lampType"  # compact IRI
    assert tm.expand("urn:ngsi-ld:thing") == "urn:ngsi-ld:thing"  # absolute IRI unchanged
    assert tm.expand("http://other.org/x") == "http://other.org/x"
    assert tm.expand("luminosity") == DEFAULT_VOCAB + "luminosity"  # no user @vocab
    assert tm.expand("type") == "@type"
    assert tm.vocab == DEFAULT_VOCAB

    assert tm.compact("http://example.org/ns#powerState") == "powerState"
    assert tm.compact("http://example.org/ns#lampType") == "ex:lampType"
    assert tm.compact("https://schema.org/name") == "schema:name"
    assert tm.compact(DEFAULT_VOCAB + "luminosity") == "luminosity"
    assert tm.compact("http://other.org/x") == "http://other.org/x"
    assert tm.compact(NGSI + "location") == "location"  # core terms still apply

    assert tm.expand_vocab_value("on") == "http://example.org/ns#on"
    assert tm.expand_vocab_value(["on", "ex:off", "blinking"]) == [
        "http://example.org/ns#on",
        "http://example.org/ns#off",
        DEFAULT_VOCAB + "blinking",
    ]
    assert tm.expand_vocab_value(5) == 5
    assert tm.compact_vocab_value(["http://example.org/ns#on", DEFAULT_VOCAB + "blinking"]) == [
        "on",
        "blinking",
    ]
    assert tm.compact_vocab_value({"x": 1}) == {"x": 1}


def test_user_vocab_and_compaction_order() -> None:
    context = {
        "@vocab": "http://vocab.example/",
        "v": "http://vocab.example/",
        "p": "http://p.example/",
        "pp": "http://p.example/deeper/",
        "short": "http://p.example/thing",
        "longerName": "http://p.example/thing",
        "listy": {"@id": "http://p.example/listy", "@container": "@list"},
        "l": {"@id": "http://p.example/listy", "@container": "@list"},
        "plainListy": "http://p.example/listy",
        "gone": None,
    }
    tm = run(ContextResolver(allow_fetch=False).term_map(context))
    assert tm.vocab == "http://vocab.example/"
    assert tm.expand("anything") == "http://vocab.example/anything"
    # A term first, then vocab-relative, then the shortest compact IRI, then the IRI itself.
    assert tm.compact("http://p.example/thing") == "short"  # shortest term wins
    assert tm.compact("http://p.example/listy") == "plainListy"  # a term without container
    assert tm.compact("http://vocab.example/anything") == "anything"
    assert tm.compact("http://vocab.example/a:b") == "v:a:b"  # "a:b" would not read back
    assert tm.compact("http://p.example/deeper/x") == "pp:x"
    assert tm.compact("http://p.example/x") == "p:x"
    # A term mapped to null is not vocab-expanded: it stays itself and round-trips.
    assert tm.expand("gone") == "gone"
    assert tm.compact("gone") == "gone"
    for term in ("anything", "p:x", "pp:x", "short", "v:a:b"):
        assert tm.expand(tm.compact(tm.expand(term))) == tm.expand(term)


def test_core_terms_cannot_be_redefined() -> None:
    """NGSI-LD: the core @context comes implicitly last and its terms are protected. A user
    redefinition is superseded by the core; after an explicit core @context, JSON-LD 1.1 makes
    the redefinition of a protected term an error (400)."""
    resolver = ContextResolver(allow_fetch=False)
    mine = {"location": "http://example.org/myLocation", "value": "http://example.org/v"}
    tm = run(resolver.term_map(mine))
    assert tm.expand("location") == NGSI + "location"
    assert tm.expand("value") == NGSI + "hasValue"
    assert tm.compact(NGSI + "location") == "location"
    # Explicit core last: the same, silently.
    tm2 = run(resolver.term_map([mine, CORE_CONTEXT_URL]))
    assert tm2.expand("location") == NGSI + "location"
    # Explicit core first, then a redefinition: protected term redefinition.
    with pytest.raises(BadRequestData, match="protected"):
        run(resolver.term_map([CORE_CONTEXT_URL, mine]))
    # Redefining with the identical definition is allowed by JSON-LD 1.1.
    tm3 = run(resolver.term_map([CORE_CONTEXT_URL, {"location": "ngsi-ld:location"}]))
    assert tm3.expand("location") == NGSI + "location"


@pytest.mark.parametrize(
    "context",
    [
        {"bad": 5},
        {"@vocab": 7},
        {"x": {"@id": "http://x/", "@container": "@nonsense"}},
        42,
        [42],
        "relative/context.jsonld",
        {"s": {"@context": 5, "@id": "http://s/"}},
    ],
)
def test_invalid_inline_context_is_400(context: Any) -> None:
    with pytest.raises(BadRequestData):
        run(ContextResolver(allow_fetch=False).term_map(context))


# ---------------------------------------------------------------------------------------------
# Remote @contexts over real HTTP


def test_remote_and_nested_contexts(server: ContextServer) -> None:
    server.serve("/nested/base.jsonld", {"@context": {"b": "http://b.example/"}})
    # Relative and absolute nested references, resolved against the document URL.
    url = server.serve(
        "/nested/top.jsonld",
        {
            "@context": [
                "base.jsonld",
                {"speed": "b:speed", "Vehicle": "http://vehicles.example/Vehicle"},
            ]
        },
    )

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=2)
        tm = await resolver.term_map(url)
        assert tm.expand("speed") == "http://b.example/speed"
        assert tm.expand("b:rpm") == "http://b.example/rpm"
        assert tm.compact("http://vehicles.example/Vehicle") == "Vehicle"
        assert tm.expand("location") == NGSI + "location"
        assert tm.context == url
        await resolver.aclose()

    run(go())
    assert server.hits["/nested/base.jsonld"] == 1
    assert server.hits["/nested/top.jsonld"] == 1


def test_remote_fetched_once_for_many_resolutions(server: ContextServer) -> None:
    url = server.serve("/once/ctx.jsonld", {"@context": {"a": "http://a.example/a"}}, delay=0.2)

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=3)
        # Concurrent: same context, and different contexts sharing the URL (one fetch shared).
        maps = await asyncio.gather(
            *[resolver.term_map(url) for _ in range(10)],
            *[resolver.term_map([url, {f"t{i}": f"http://t/{i}"}]) for i in range(5)],
            resolver.term_map([url]),
        )
        assert all(m.expand("a") == "http://a.example/a" for m in maps)
        for _ in range(50):
            await resolver.term_map(url)
        info = next(i for i in await resolver.list(details=True) if i["URL"] == url)
        assert info["kind"] == "Cached"
        assert info["numberOfHits"] >= 66
        assert "lastUsage" in info
        await resolver.aclose()

    run(go())
    assert server.hits["/once/ctx.jsonld"] == 1


def test_connection_refused_is_503_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/ctx.jsonld"

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=5)
        start = time.perf_counter()
        with pytest.raises(LdContextNotAvailable) as err:
            await resolver.term_map(url)
        assert time.perf_counter() - start < 2
        assert err.value.status == 503
        assert url in err.value.detail
        await resolver.aclose()

    run(go())


def test_unresponsive_server_times_out() -> None:
    # Accepts connections (listen backlog) and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/ctx.jsonld"

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=0.5)
        start = time.perf_counter()
        with pytest.raises(LdContextNotAvailable) as err:
            await resolver.term_map(url)
        elapsed = time.perf_counter() - start
        assert 0.4 <= elapsed < 2.5, elapsed
        assert url in err.value.detail
        await resolver.aclose()

    try:
        run(go())
    finally:
        silent.close()


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/bad/html.jsonld", b"<html>not json</html>", 200),
        ("/bad/array.jsonld", b"[1, 2]", 200),
        ("/bad/nocontext.jsonld", b'{"name": "x"}', 200),
        ("/bad/invalid-jsonld.jsonld", b'{"@context": {"x": 5}}', 200),
        ("/bad/gone.jsonld", b'{"@context": {}}', 404),
        ("/bad/error.jsonld", b"oops", 500),
    ],
)
def test_unusable_remote_context_is_503(
    server: ContextServer, path: str, body: bytes, status: int
) -> None:
    url = server.serve(path, body, status=status)

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=2)
        with pytest.raises(LdContextNotAvailable) as err:
            await resolver.term_map([url, {"x": "http://x/"}])
        assert url in err.value.detail
        assert await resolver.list(kind="Cached") == [CORE_CONTEXT_URL]  # nothing cached
        await resolver.aclose()

    run(go())


def test_oversized_remote_context_is_503(server: ContextServer) -> None:
    big = {"@context": {f"term{i}": f"http://example.org/{i}" for i in range(2000)}}
    url = server.serve("/big/ctx.jsonld", big)

    async def go() -> None:
        small = ContextResolver(egress=LOOPBACK, max_context_bytes=10_000)
        with pytest.raises(LdContextNotAvailable, match="larger than"):
            await small.term_map(url)
        await small.aclose()
        roomy = ContextResolver(egress=LOOPBACK)
        assert (await roomy.term_map(url)).expand("term1999") == "http://example.org/1999"
        await roomy.aclose()

    run(go())


def test_cyclic_remote_contexts_are_503(server: ContextServer) -> None:
    a = server.url("/cycle/a.jsonld")
    b = server.url("/cycle/b.jsonld")
    server.serve("/cycle/a.jsonld", {"@context": [b, {"x": "http://x/"}]})
    server.serve("/cycle/b.jsonld", {"@context": [a]})

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=2)
        with pytest.raises(LdContextNotAvailable, match="itself"):
            await resolver.term_map(a)
        await resolver.aclose()

    run(go())


def test_redirects_followed_and_bounded(server: ContextServer) -> None:
    target = server.serve("/redir/target.jsonld", {"@context": {"r": "http://r.example/r"}})
    first = server.redirect("/redir/one", target)
    server.redirect("/redir/loop1", server.url("/redir/loop2"))
    loop = server.redirect("/redir/loop2", server.url("/redir/loop1"))

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, fetch_timeout=2, max_redirects=3)
        assert (await resolver.term_map(first)).expand("r") == "http://r.example/r"
        with pytest.raises(LdContextNotAvailable, match="could not be retrieved"):
            await resolver.term_map(loop)
        await resolver.aclose()

    run(go())


def test_fetching_disabled_is_503(server: ContextServer) -> None:
    url = server.serve("/disabled/ctx.jsonld", {"@context": {}})
    with pytest.raises(LdContextNotAvailable):
        run(ContextResolver(allow_fetch=False).term_map(url))
    assert server.hits["/disabled/ctx.jsonld"] == 0


def test_lru_bound(server: ContextServer) -> None:
    urls = [
        server.serve(f"/lru/{i}.jsonld", {"@context": {f"t{i}": f"http://t/{i}"}}) for i in range(3)
    ]

    async def go() -> None:
        resolver = ContextResolver(egress=LOOPBACK, max_cached=2, fetch_timeout=2)
        for url in urls:
            await resolver.term_map(url)
        cached = await resolver.list(kind="Cached")
        assert cached[0] == CORE_CONTEXT_URL
        assert sorted(cached[1:]) == sorted(urls[1:])  # the oldest was evicted
        await resolver.term_map(urls[2])  # still cached
        await resolver.term_map(urls[0])  # evicted: fetched again
        await resolver.aclose()

    run(go())
    assert server.hits["/lru/0.jsonld"] == 2
    assert server.hits["/lru/1.jsonld"] == 1
    assert server.hits["/lru/2.jsonld"] == 1


# ---------------------------------------------------------------------------------------------
# Link header and §6.3.5


def test_parse_link_header_valid() -> None:
    url = "https://example.org/ctx.jsonld"
    assert parse_link_header(f"<{url}>; {REL}") == url
    assert parse_link_header(f'<{url}>; rel="{"http://www.w3.org/ns/json-ld#context"}"') == url
    assert parse_link_header(f"<{url}>;rel=http://www.w3.org/ns/json-ld#context") == url
    other = '<https://example.org/next>; rel="next"; title="a, b; c"'
    assert parse_link_header(f"{other}, <{url}>; {REL}") == url
    assert parse_link_header(other) is None
    assert parse_link_header(f'<{url}>; REL="HTTP://WWW.W3.ORG/NS/JSON-LD#CONTEXT"') == url
    assert parse_link_header("") is None
    assert parse_link_header(None) is None
    assert (
        parse_link_header(f'<{url}>; rel="alternate {"http://www.w3.org/ns/json-ld#context"}"')
        == url
    )


@pytest.mark.parametrize(
    "header",
    [
        f"https://example.org/ctx.jsonld; {REL}",  # no angle brackets
        f"<https://example.org/ctx.jsonld; {REL}",  # unbalanced
        f'<https://example.org/ctx.jsonld>; rel="{"http://www.w3.org/ns/json-ld#context"}',
        f"<ctx.jsonld>; {REL}",  # relative
        f"<>; {REL}",
        f"<https://a.example/1>; {REL}, <https://a.example/2>; {REL}",  # two contexts
    ],
)
def test_parse_link_header_invalid(header: str) -> None:
    with pytest.raises(BadRequestData):
        parse_link_header(header)


def test_request_context_rules(server: ContextServer) -> None:
    url = server.serve("/req/ctx.jsonld", {"@context": {"speed": "http://s.example/speed"}})
    link = f"<{url}>; {REL}"

    async def go() -> None:
        r = ContextResolver(egress=LOOPBACK, fetch_timeout=2)
        # application/json: the Link header, or the core @context.
        tm = await r.request_context("application/json", link, None)
        assert tm.expand("speed") == "http://s.example/speed"
        tm = await r.request_context("application/json; charset=utf-8", None, None)
        assert tm is r.core
        with pytest.raises(BadRequestData, match="ld\\+json"):
            await r.request_context("application/json", None, {"speed": "http://x/"})
        with pytest.raises(BadRequestData):
            await r.request_context("application/json", "<ctx>; " + REL, None)
        # application/ld+json: the body @context, required; no JSON-LD Link header.
        tm = await r.request_context("application/ld+json", None, url)
        assert tm.expand("speed") == "http://s.example/speed"
        tm = await r.request_context("Application/LD+JSON", '<https://x/n>; rel="next"', url)
        assert tm.expand("speed") == "http://s.example/speed"
        with pytest.raises(BadRequestData, match="Link header"):
            await r.request_context("application/ld+json", link, url)
        with pytest.raises(BadRequestData, match="requires an @context"):
            await r.request_context("application/ld+json", None, None)
        # Requests without body (GET): the Link header only.
        tm = await r.request_context("", link, None)
        assert tm.expand("speed") == "http://s.example/speed"
        assert await r.request_context("", None, None) is r.core
        await r.aclose()

    run(go())


# ---------------------------------------------------------------------------------------------
# @context management (§5.13)


class MemoryContexts:
    """A ContextStore in memory, as the store keeps them: one per test, shared by the resolvers
    that stand for several workers."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.usage_writes = 0
        self.bodies_read = 0
        self.fail_saves = False

    async def context_entries(self) -> list[dict[str, Any]]:
        return [
            {k: json.loads(json.dumps(v)) for k, v in r.items() if k != "body"}
            for r in self.rows.values()
        ]

    async def context_bodies(self, local_ids: Any) -> dict[str, Any]:
        self.bodies_read += len(local_ids)
        return {
            i: json.loads(json.dumps(self.rows[i]["body"])) for i in local_ids if i in self.rows
        }

    async def save_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        if self.fail_saves:
            raise RuntimeError("disk full")
        old = self.rows.get(local_id, {"hits": 0, "last_used": None})
        self.rows[local_id] = {
            "local_id": local_id,
            "info": info,
            "body": body,
            "hits": old["hits"],
            "last_used": old["last_used"],
        }

    async def delete_context(self, local_id: str) -> None:
        self.rows.pop(local_id, None)

    async def add_context_usage(self, usage: Any) -> None:
        self.usage_writes += 1
        for local_id, hits, last_used in usage:
            row = self.rows.get(local_id)
            if row is not None:
                row["hits"] += hits
                row["last_used"] = max(row["last_used"] or "", last_used)


def test_hosted_contexts_lifecycle() -> None:
    async def go() -> None:
        store = MemoryContexts()
        r = ContextResolver(allow_fetch=False, store=store)
        body = {"@context": {"ex": "http://example.org/", "lamp": "ex:lamp"}}
        info = await r.add_hosted(body, BROKER + "/")
        assert info.kind == "Hosted"
        assert info.local_id.startswith("urn:")
        assert info.url == BROKER + HOSTED_CONTEXTS_PATH + info.local_id
        assert store.rows[info.local_id]["body"] == body
        assert store.rows[info.local_id]["info"]["kind"] == "Hosted"

        # Used as an @context: resolved locally (fetching is disabled here).
        tm = await r.term_map(info.url)
        assert tm.expand("lamp") == "http://example.org/lamp"
        tm = await r.request_context("", f"<{info.url}>; {REL}", None)
        assert tm.compact("http://example.org/lamp") == "lamp"

        assert await r.serve(info.local_id) == body
        assert await r.serve(info.url) == body  # by the URL it is served at, too
        details = await r.serve(info.local_id, details=True)
        assert details["kind"] == "Hosted" and details["numberOfHits"] == 2
        assert details["lastUsage"] >= details["createdAt"]
        assert store.rows[info.local_id]["hits"] == 2  # flushed before answering with details
        assert info.url in await r.list()
        assert (await r.list())[0] == CORE_CONTEXT_URL
        [hosted] = await r.list(details=True, kind="Hosted")
        assert set(hosted) >= {"URL", "localId", "kind", "createdAt", "numberOfHits"}
        assert hosted["URL"] == info.url and hosted["localId"] == info.local_id

        with pytest.raises(BadRequestData, match="reloaded"):
            await r.delete(info.local_id, reload=True)
        await r.delete(info.local_id)
        assert store.rows == {}
        assert info.url not in await r.list()
        with pytest.raises(ResourceNotFound):
            await r.serve(info.local_id)
        with pytest.raises(ResourceNotFound):
            await r.delete(info.local_id)
        # Our URL, but gone: 503 without any HTTP request to ourselves.
        with pytest.raises(LdContextNotAvailable):
            await r.term_map(info.url)

    run(go())


def test_serving_is_not_a_use() -> None:
    async def go() -> None:
        r = ContextResolver(allow_fetch=False, store=MemoryContexts())
        info = await r.add_hosted({"@context": {"p": "http://p.example/p"}}, BROKER)
        for _ in range(3):
            await r.serve(info.local_id)
            assert (await r.serve(info.local_id, details=True))["numberOfHits"] == 0
        await r.term_map(info.url)
        assert (await r.serve(info.local_id, details=True))["numberOfHits"] == 1

    run(go())


def test_hosted_context_bad_input() -> None:
    async def go() -> None:
        r = ContextResolver(allow_fetch=False)
        for bad in ({"ex": "http://example.org/"}, [], "x"):
            with pytest.raises(InvalidRequest):
                await r.add_hosted(bad, BROKER)
        for bad_context in (5, "", {"x": 5}):
            with pytest.raises(BadRequestData):
                await r.add_hosted({"@context": bad_context}, BROKER)
        with pytest.raises(LdContextNotAvailable):
            await r.add_hosted({"@context": "http://127.0.0.1:9/nothing.jsonld"}, BROKER)
        with pytest.raises(BadRequestData, match="not a valid URL"):
            await r.term_map("http://127.0.0.1:9503http://127.0.0.1:9503/ctx.jsonld")
        assert await r.list(kind="Hosted") == []

    run(go())


def test_stored_contexts_survive_a_restart() -> None:
    store = MemoryContexts()

    async def go() -> None:
        first = ContextResolver(allow_fetch=False, store=store)
        info = await first.add_hosted({"@context": {"p": "http://p.example/p"}}, BROKER)
        implicit = await first.register_implicit([{"qq": "http://q.example/q"}], BROKER)
        again = await first.register_implicit([{"qq": "http://q.example/q"}], BROKER)
        assert again.local_id == implicit.local_id and implicit.kind == "ImplicitlyCreated"
        assert again.number_of_hits == 2  # each request that used it
        assert len(store.rows) == 2
        await first.flush_usage()

        second = ContextResolver(allow_fetch=False, store=store)  # a restart
        assert await second.sync_stored()
        assert (await second.term_map(info.url)).expand("p") == "http://p.example/p"
        assert (await second.term_map(implicit.url)).expand("qq") == "http://q.example/q"
        assert await second.serve(implicit.local_id) == {"@context": [{"qq": "http://q.example/q"}]}
        assert await second.list(kind="ImplicitlyCreated") == [implicit.url]
        assert (await second.serve(implicit.local_id, details=True))["numberOfHits"] == 3
        # The same inline @context maps to the restored entry.
        same = await second.register_implicit([{"qq": "http://q.example/q"}], BROKER)
        assert same.local_id == implicit.local_id
        await second.delete(implicit.local_id)
        assert await second.list(kind="ImplicitlyCreated") == []
        assert list(store.rows) == [info.local_id]

    run(go())


def test_failed_persistence_rolls_back(server: ContextServer) -> None:
    url = server.serve("/rollback/ctx.jsonld", {"@context": {"c": "http://c.example/"}})

    async def go() -> None:
        store = MemoryContexts()
        store.fail_saves = True
        r = ContextResolver(egress=LOOPBACK, store=store, fetch_timeout=2)
        with pytest.raises(RuntimeError):
            await r.add_hosted({"@context": {"p": "http://p/"}}, BROKER)
        with pytest.raises(RuntimeError):
            await r.term_map(url)
        assert await r.list() == [CORE_CONTEXT_URL]
        store.fail_saves = False
        assert (await r.term_map(url)).expand("c") == "http://c.example/"
        await r.aclose()

    run(go())


def test_cached_contexts_get_delete_reload(server: ContextServer) -> None:
    url = server.serve("/cached/ctx.jsonld", {"@context": {"c": "http://c.example/v1"}})

    async def go() -> None:
        store = MemoryContexts()
        r = ContextResolver(egress=LOOPBACK, fetch_timeout=2, store=store)
        assert (await r.term_map(url)).expand("c") == "http://c.example/v1"
        [info] = [i for i in await r.list(details=True, kind="Cached") if i["URL"] == url]
        local_id = info["localId"]
        assert store.rows[local_id]["info"]["kind"] == "Cached"
        assert info["numberOfHits"] == 1
        # Content of Cached ones is not served (§5.13.4); metadata is, by id or URL.
        with pytest.raises(OperationNotSupported):
            await r.serve(local_id)
        assert (await r.serve(url, details=True))["localId"] == local_id

        # Reload: downloaded again and replaced, here and in the store; term maps follow.
        server.serve("/cached/ctx.jsonld", {"@context": {"c": "http://c.example/v2"}})
        await r.delete(local_id, reload=True)
        assert (await r.term_map(url)).expand("c") == "http://c.example/v2"
        assert server.hits["/cached/ctx.jsonld"] == 2
        assert store.rows[local_id]["body"] == {"@context": {"c": "http://c.example/v2"}}
        assert (await r.serve(url, details=True))["numberOfHits"] == 2  # counts kept

        # A failed reload is 503 LdContextNotAvailable and keeps the stored copy.
        server.serve("/cached/ctx.jsonld", b"broken", status=500)
        with pytest.raises(LdContextNotAvailable) as err:
            await r.delete(url, reload=True)
        assert err.value.status == 503
        assert (await r.term_map(url)).expand("c") == "http://c.example/v2"

        # Delete: gone from the list and the store; the next use fetches again.
        server.serve("/cached/ctx.jsonld", {"@context": {"c": "http://c.example/v3"}})
        await r.delete(local_id)
        assert url not in await r.list()
        assert local_id not in store.rows
        assert (await r.term_map(url)).expand("c") == "http://c.example/v3"
        await r.aclose()

    run(go())


def test_stored_contexts_shared_by_workers(server: ContextServer) -> None:
    """Two resolvers on one store stand for two worker processes."""
    url = server.serve("/shared/ctx.jsonld", {"@context": {"s": "http://s.example/v1"}})

    async def go() -> None:
        store = MemoryContexts()
        a = ContextResolver(egress=LOOPBACK, fetch_timeout=2, store=store, base_urls=[BROKER])
        b = ContextResolver(egress=LOOPBACK, fetch_timeout=2, store=store, base_urls=[BROKER])
        hosted = await a.add_hosted({"@context": {"h": "http://h.example/h"}}, BROKER)
        # b knows nothing yet: a miss on one of our URLs reads the store.
        assert (await b.term_map(hosted.url)).expand("h") == "http://h.example/h"
        assert await b.serve(hosted.local_id) == {"@context": {"h": "http://h.example/h"}}

        # Uses on both add up once flushed; each flush is one write of the batch.
        await a.term_map(url)
        for _ in range(3):
            await b.term_map(url)
        assert server.hits["/shared/ctx.jsonld"] == 2  # each worker fetched it once
        assert [r["info"]["URL"] for r in store.rows.values()].count(url) == 1  # one entry
        writes = store.usage_writes
        await a.flush_usage()
        await b.flush_usage()
        assert store.usage_writes == writes + 2
        assert (await a.serve(url, details=True))["numberOfHits"] == 4
        assert await b.list(kind="Cached") == [CORE_CONTEXT_URL, url]
        read = store.bodies_read
        await b.sync_stored()  # nothing new: no content read again
        assert store.bodies_read == read

        # A reload on b: a follows, its term maps built from the old copy dropped.
        server.serve("/shared/ctx.jsonld", {"@context": {"s": "http://s.example/v2"}})
        await b.delete(url, reload=True)
        await a.sync_stored()
        assert (await a.term_map(url)).expand("s") == "http://s.example/v2"
        assert server.hits["/shared/ctx.jsonld"] == 3

        # Deleted on a: gone on b too.
        await a.delete(hosted.local_id)
        await a.delete(url)
        await b.sync_stored()
        assert await b.list() == [CORE_CONTEXT_URL]
        with pytest.raises(LdContextNotAvailable):
            await b.term_map(hosted.url)
        await a.aclose()
        await b.aclose()

    run(go())


def test_cached_contexts_bounded_in_the_store(server: ContextServer) -> None:
    urls = [
        server.serve(f"/bound/{i}.jsonld", {"@context": {f"t{i}": f"http://t/{i}"}})
        for i in range(3)
    ]

    async def go() -> None:
        store = MemoryContexts()
        r = ContextResolver(egress=LOOPBACK, max_cached=2, fetch_timeout=2, store=store)
        for url in urls:
            await r.term_map(url)
        assert sorted(row["info"]["URL"] for row in store.rows.values()) == sorted(urls[1:])
        await r.aclose()

    run(go())


def test_core_context_entry() -> None:
    async def go() -> None:
        r = ContextResolver(allow_fetch=False)
        [core] = await r.list(details=True)
        assert core["URL"] == CORE_CONTEXT_URL and core["kind"] == "Cached"
        with pytest.raises(BadRequestData, match="core"):
            await r.delete(core["localId"])
        with pytest.raises(BadRequestData, match="core"):
            await r.delete(CORE_CONTEXT_URL)
        older = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"
        with pytest.raises(BadRequestData, match="core"):
            await r.delete(older)
        await r.delete(CORE_CONTEXT_URL, reload=True)  # built-in copy: nothing to do
        await r.delete(older, reload=True)
        assert await r.list() == [CORE_CONTEXT_URL]
        assert (await r.serve(core["localId"], details=True))["URL"] == CORE_CONTEXT_URL
        assert (await r.serve(older, details=True))["URL"] == CORE_CONTEXT_URL
        # Unknown identifiers are not found, whatever their form; reloading needs a URI.
        for unknown in ("urn:ngsi-ld:jsonldContext:unknown", "1234567890", "wrong id"):
            with pytest.raises(ResourceNotFound):
                await r.serve(unknown)
            with pytest.raises(ResourceNotFound):
                await r.serve(unknown, details=True)
            with pytest.raises(ResourceNotFound):
                await r.delete(unknown)
        with pytest.raises(ResourceNotFound):
            await r.delete("urn:ngsi-ld:jsonldContext:unknown", reload=True)
        with pytest.raises(BadRequestData, match="not a URI"):
            await r.delete("wrong_id_context", reload=True)
        with pytest.raises(BadRequestData, match="kind"):
            await r.list(kind="Remote")

    run(go())


def test_relative_references_resolve_against_the_document() -> None:
    base = "http://broker.example/ngsi-ld/v1/entities"
    assert (
        resolve_references("/ngsi-ld/v1/jsonldContexts/urn:x", base)
        == "http://broker.example/ngsi-ld/v1/jsonldContexts/urn:x"
    )
    assert resolve_references(["ctx.jsonld", {"a": "b"}, "https://x.example/c"], base) == [
        "http://broker.example/ngsi-ld/v1/ctx.jsonld",
        {"a": "b"},
        "https://x.example/c",
    ]
    assert resolve_references({"a": "b"}, base) == {"a": "b"}
    assert resolve_references("", base) == ""


class GatedUsage(MemoryContexts):
    """A store whose usage write waits at a gate: a flush that is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()
        self.gate = asyncio.Event()

    async def add_context_usage(self, usage: Any) -> None:
        self.writing.set()
        await self.gate.wait()
        await super().add_context_usage(usage)


def test_details_wait_for_a_flush_under_way() -> None:
    """A details answer while the periodic flush is writing counts the uses that flush carries:
    it waits for it instead of reading the store's count without them (numberOfHits read 0
    after one use, now and then, on PostgreSQL)."""

    async def go() -> None:
        store = GatedUsage()
        r = ContextResolver(allow_fetch=False, store=store)
        info = await r.add_hosted({"@context": {"p": "http://p.example/p"}}, BROKER)
        await r.term_map(info.url)  # one use, counted here, not flushed yet
        flushing = asyncio.create_task(r.flush_usage())
        await store.writing.wait()  # the flush took the count and is writing it
        details = asyncio.create_task(r.serve(info.local_id, details=True))
        listed = asyncio.create_task(r.list(details=True, kind="Hosted"))
        for _ in range(5):
            await asyncio.sleep(0)  # let them run as far as they can
        store.gate.set()
        await flushing
        assert (await details)["numberOfHits"] == 1
        assert [c["numberOfHits"] for c in await listed] == [1]
        assert store.rows[info.local_id]["hits"] == 1

    run(go())
