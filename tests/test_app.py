"""The application's life cycle, beyond any one API."""

from __future__ import annotations

import gc

import pytest
from starlette.exceptions import HTTPException
from starlette.routing import Route

from cidade.app import build_app
from cidade.config import GC_YOUNG_THRESHOLD
from tests.conftest import admin_client


def test_the_collector_is_tuned_while_serving_and_restored_after(settings):
    before = gc.get_threshold()
    assert before[0] != GC_YOUNG_THRESHOLD
    with admin_client(build_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before


def test_a_trailing_slash_names_the_same_resource(client):
    # The specification writes resource paths with a trailing slash; clients copy them.
    sub = {
        "type": "Subscription",
        "entities": [{"type": "Room"}],
        "notification": {"endpoint": {"uri": "http://example.org/notify"}},
    }
    created = client.post("/ngsi-ld/v1/subscriptions/", json=sub)
    assert created.status_code == 201, created.text
    listed = client.get("/ngsi-ld/v1/subscriptions/")
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [created.headers["Location"].rsplit("/", 1)[1]]
    entity = {"id": "urn:ngsi-ld:Room:1", "type": "Room"}
    assert client.post("/ngsi-ld/v1/entities/", json=entity).status_code == 201
    assert client.get("/ngsi-ld/v1/entities/", params={"type": "Room"}).json()[0]["id"] == (
        "urn:ngsi-ld:Room:1"
    )
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Room:1/").status_code == 200


def test_an_encoded_trailing_slash_is_part_of_an_id(client):
    entity = {"id": "urn:ngsi-ld:Room:a/", "type": "Room"}
    assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Room:a%2F")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == "urn:ngsi-ld:Room:a/"


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (400, None, "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"),
        (401, None, "https://uri.etsi.org/ngsi-ld/errors/Unauthenticated"),
        (403, None, "https://uri.etsi.org/ngsi-ld/errors/AccessDenied"),
        (409, None, "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"),
        (413, None, "https://uri.etsi.org/ngsi-ld/errors/RequestEntityTooLarge"),
        (415, None, "https://uri.etsi.org/ngsi-ld/errors/UnsupportedMediaType"),
        (418, None, "about:blank"),
        (429, {"Retry-After": "7"}, "about:blank"),
        (503, {"Retry-After": "30"}, "about:blank"),
    ],
)
def test_an_http_error_is_answered_with_its_own_status(settings, status, headers, kind):
    """An HTTPException (Starlette's own, or a handler's) is not a 500: its status, its
    headers, a ProblemDetails body like every other error."""
    app = build_app(settings)

    async def fails(request):
        raise HTTPException(status, detail="as raised", headers=headers)

    for path in ("/ngsi-ld/v1/failing", "/iot/failing", "/auth/failing"):
        app.router.routes.insert(0, Route(path, fails))
    with admin_client(app, raise_server_exceptions=False) as client:
        for path in ("/ngsi-ld/v1/failing", "/iot/failing", "/auth/failing"):
            r = client.get(path)
            assert r.status_code == status, r.text
            assert r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["type"] == kind and body["status"] == status
            assert body["detail"] == "as raised" and body["title"]
            for name, value in (headers or {}).items():
                assert r.headers[name] == value
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
