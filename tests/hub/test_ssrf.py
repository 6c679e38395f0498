"""URLs that callers give (@contexts, notification endpoints) never make the server connect to
loopback, private or link-local addresses unless CIDADE_PRIVATE_NETWORKS allows them, and a
failed fetch says nothing of why (docs/security.md). The test servers listen on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cidade.app import build_app
from cidade.http.egress import EgressPolicy
from cidade.hub.notify.payload import Rendered
from cidade.hub.notify.senders import FAILED, SENT, HttpSender, MqttSender
from tests.conftest import (
    LOOPBACK,
    NGSI,
    admin_client,
    make_settings,
    problem_type,
    service_missing,
)
from tests.hub.test_jsonld import ContextServer, free_port
from tests.hub.test_notifications_mqtt import broker_unavailable

REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
DOCUMENT = {"@context": {"speed": "http://example.org/speed"}}


def link(url: str) -> dict[str, str]:
    return {"Link": f"<{url}>; {REL}"}


@pytest.fixture
def server() -> Iterator[ContextServer]:
    srv = ContextServer()
    yield srv
    srv.close()


def test_remote_context_on_loopback_is_never_fetched(client, server):
    url = server.serve("/ctx.jsonld", DOCUMENT)
    # A Link header on a read, and on a write.
    r = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=link(url))
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable", r.text
    entity = {"id": "urn:ngsi-ld:T:1", "type": "T", "speed": {"type": "Property", "value": 1}}
    r = client.post(f"{NGSI}/entities", json=entity, headers=link(url))
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable", r.text
    # A body's @context, and one nested in an inline @context.
    for context in (url, [{"a": "http://a.example/a"}, url]):
        r = client.post(
            f"{NGSI}/entities",
            content=json.dumps({**entity, "@context": context}),
            headers={"Content-Type": "application/ld+json"},
        )
        assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable", r.text
    # A hosted @context that refers to it.
    r = client.post(f"{NGSI}/jsonldContexts", json={"@context": url})
    assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable", r.text
    assert server.hits["/ctx.jsonld"] == 0
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:T:1").status_code == 404


def test_a_failed_fetch_tells_nothing_of_why(client, server):
    """An open port, a closed one, a silent one, an HTTP server: one and the same answer."""
    silent = __import__("socket").socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    urls = [
        server.serve("/open.jsonld", DOCUMENT),
        f"http://127.0.0.1:{free_port()}/closed.jsonld",
        f"http://127.0.0.1:{silent.getsockname()[1]}/silent.jsonld",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:5432/",
        "http://localhost:22/",
    ]
    try:
        details = set()
        for url in urls:
            r = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=link(url))
            assert r.status_code == 503, r.text
            details.add(r.json()["detail"].replace(url, "URL"))
    finally:
        silent.close()
    assert details == {"@context URL could not be retrieved"}


def test_private_networks_setting_lets_contexts_through(store_url, server):
    url = server.serve("/allowed.jsonld", DOCUMENT)
    settings = make_settings(store=store_url, private_networks=LOOPBACK)
    with admin_client(build_app(settings)) as client:
        r = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=link(url))
        assert r.status_code == 200, r.text
    assert server.hits["/allowed.jsonld"] == 1


def test_a_redirect_to_an_address_not_allowed_is_not_followed(store_url, server):
    """127.0.0.2 is allowed; it redirects to 127.0.0.1, which is not: refused at the connection."""
    target = server.serve("/target.jsonld", DOCUMENT)

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    redirector = ThreadingHTTPServer(("127.0.0.2", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.2:{redirector.server_address[1]}/ctx.jsonld"
        settings = make_settings(store=store_url, private_networks="127.0.0.2/32")
        with admin_client(build_app(settings)) as client:
            r = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=link(url))
            assert r.status_code == 503 and problem_type(r) == "LdContextNotAvailable", r.text
            assert r.json()["detail"] == f"@context {url} could not be retrieved"
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert server.hits["/target.jsonld"] == 0


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:9/notify",
        "http://localhost:9/notify",  # a name: resolved, then checked
        "https://[::1]/notify",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/notify",
        "http://[::ffff:127.0.0.1]:9/notify",
        "mqtt://127.0.0.1:1883/topic",
        "mqtts://localhost/topic",
    ],
)
def test_subscription_to_a_private_endpoint_is_refused(client, uri):
    body = {
        "type": "Subscription",
        "entities": [{"type": "T"}],
        "notification": {"endpoint": {"uri": uri}},
    }
    r = client.post(f"{NGSI}/subscriptions", json=body)
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    assert client.get(f"{NGSI}/subscriptions").json() == []
    # Nor can an existing subscription be pointed there.
    body["notification"]["endpoint"]["uri"] = "http://notify.example.org/n"
    body["id"] = "urn:ngsi-ld:Subscription:ssrf"
    assert client.post(f"{NGSI}/subscriptions", json=body).status_code == 201
    r = client.patch(
        f"{NGSI}/subscriptions/urn:ngsi-ld:Subscription:ssrf",
        json={"notification": {"endpoint": {"uri": uri}}},
    )
    assert r.status_code == 400 and problem_type(r) == "BadRequestData", r.text
    got = client.get(f"{NGSI}/subscriptions/urn:ngsi-ld:Subscription:ssrf").json()
    assert got["notification"]["endpoint"]["uri"] == "http://notify.example.org/n"


def _rendered() -> Rendered:
    return Rendered({"Content-Type": "application/json"}, {"type": "Notification", "data": []})


def test_http_notification_is_checked_when_sent(receiver):
    """Whatever a subscription's creation found (a name may resolve elsewhere later), the
    connection itself is refused: FAILED, and the receiver sees nothing."""

    async def go() -> None:
        strict = HttpSender(2.0, EgressPolicy())
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            assert await strict.send(url, _rendered(), None) == FAILED
        await strict.aclose()
        allowed = HttpSender(2.0, EgressPolicy.from_text(LOOPBACK))
        assert await allowed.send(receiver.url, _rendered(), None) == SENT
        await allowed.aclose()

    asyncio.run(go())
    assert receiver.attempts == 1


def test_mqtt_notification_is_checked_when_sent():
    reason = broker_unavailable()
    if reason:
        service_missing(reason)

    async def go() -> None:
        strict = MqttSender(2.0, EgressPolicy())
        for uri in ("mqtt://127.0.0.1:1883/cidade/ssrf", "mqtt://localhost:1883/cidade/ssrf"):
            assert await strict.send(uri, _rendered(), None, {}) == FAILED
        assert strict.clients == {}  # never connected
        allowed = MqttSender(2.0, EgressPolicy.from_text(LOOPBACK))
        assert await allowed.send("mqtt://localhost:1883/cidade/ssrf", _rendered(), None, {}) == (
            SENT
        )
        await allowed.aclose()

    asyncio.run(go())
