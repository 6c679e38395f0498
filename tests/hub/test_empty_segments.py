"""An NGSI-LD path with an empty segment (an id or a name left out) is 400 BadRequestData,
whatever the method and whichever route the rest of the path would match, and changes nothing
(http/middleware.py EmptySegments). Ids with an encoded ``//``, or sent unencoded after a URI
scheme, are not empty segments. On both stores."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.conftest import NGSI, problem_type

E = "urn:ngsi-ld:Vehicle:empty-segments"
URL_ID = "http://example.org/vehicles//2"
INSTANCE = "urn:ngsi-ld:attribute:instance:0123"
FRAGMENT = {"speed": {"type": "Property", "value": 99}}


@pytest.fixture
def vehicle(client):
    body = {
        "id": E,
        "type": "Vehicle",
        "speed": [{"type": "Property", "value": 50, "observedAt": "2020-01-01T00:00:00Z"}],
    }
    assert client.post(f"{NGSI}/temporal/entities", json=body).status_code == 201
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/temporal/entities//attrs"),
        ("POST", "/temporal/entities/attrs"),
        ("PATCH", f"/temporal/entities/{E}/attrs//{INSTANCE}"),
        ("DELETE", f"/temporal/entities/{E}/attrs//{INSTANCE}"),
        ("DELETE", f"/temporal/entities/{E}/attrs//"),
        ("DELETE", "/temporal/entities//attrs/speed"),
        ("GET", "/temporal/entities//"),
        ("GET", "/entities//attrs"),
        ("POST", "/entities//attrs"),
        ("PATCH", "/entities//attrs"),
        ("POST", "/entities/attrs"),
        ("PATCH", "/entities/attrs/speed"),
        ("PATCH", f"/entities/{E}/attrs//"),
        ("PATCH", f"/entities/{E}//attrs"),
        ("DELETE", "/entities//attrs/speed"),
        ("DELETE", f"/entities/{E}//"),
        ("GET", "/entities//"),
        ("GET", "/subscriptions//"),
        ("DELETE", "/subscriptions//"),
        ("GET", "/types//"),
        ("GET", "//entities"),
    ],
)
def test_empty_segment_is_bad_request_data(vehicle, method: str, path: str) -> None:
    body = FRAGMENT if method in ("POST", "PATCH") else None
    r = vehicle.request(method, NGSI + path, json=body)
    assert r.status_code == 400, (method, path, r.status_code, r.text)
    assert problem_type(r) == "BadRequestData"
    speed = vehicle.get(f"{NGSI}/entities/{E}").json()["speed"]
    assert speed["value"] == 50  # nothing changed
    assert len(vehicle.get(f"{NGSI}/temporal/entities/{E}").json()["speed"]) == 1


def test_one_trailing_slash_still_names_the_resource(vehicle) -> None:
    r = vehicle.patch(f"{NGSI}/entities/{E}/attrs/", json=FRAGMENT)
    assert r.status_code == 204, r.text
    assert vehicle.get(f"{NGSI}/entities/{E}/").json()["speed"]["value"] == 99
    # .../attrs/speed/ is .../attrs/speed, which has no PATCH (the instance id is missing)
    r = vehicle.patch(f"{NGSI}/temporal/entities/{E}/attrs/speed/", json=FRAGMENT["speed"])
    assert r.status_code == 405


def test_ids_with_double_slashes_are_not_empty_segments(client) -> None:
    body = {"id": URL_ID, "type": "Vehicle", "speed": {"type": "Property", "value": 1}}
    assert client.post(f"{NGSI}/entities", json=body).status_code == 201
    encoded = urllib.parse.quote(URL_ID, safe="")
    assert client.get(f"{NGSI}/entities/{encoded}").json()["id"] == URL_ID
    # sent unencoded: the '//' after the scheme is part of the id, the later one is empty
    assert client.get(f"{NGSI}/entities/http://example.org/vehicles").status_code == 404
    r = client.get(f"{NGSI}/entities/{URL_ID}")
    assert r.status_code == 400 and problem_type(r) == "BadRequestData"
