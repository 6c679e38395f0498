"""Open311 GeoReport v2 at /open311/v2 on both stores: every endpoint in JSON and XML (the XML
read with xml.etree), the POST of a request with its api_key and attribute answers, the
search's filters and defaults, tokens, FixMyStreet's servicerequestupdates both ways, errors
in GeoReport's envelope (the gate's and the router's too) that change nothing, and no
reporter's name, e-mail or phone in any answer."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.occurrences import open311_format
from cidade.occurrences.service import Report
from tests.auth.helpers import ROOT, key_of
from tests.conftest import make_settings
from tests.occurrences.helpers import CITIZEN, OPERATOR, Clock, photo

V2 = "/open311/v2"
LAT, LON = 41.1496, -8.6109
SECRET = {
    "first_name": "Maria",
    "last_name": "Sousa-Figueiredo",
    "email": "maria.sousa@example.org",
    "phone": "+351912345678",
}
SECRET_WORDS = ("Sousa-Figueiredo", "maria.sousa@example.org", "912345678")
DAY = 86400.0

# A category with every kind of question, over the defaults (a city's TOML file).
CONFIG = """
[[categories]]
code = "tree-damage"
name = "Damaged tree"
group = "Green spaces"
department = "public-space"
description = "A tree that is damaged or dangerous"
keywords = ["tree", "branch"]

[[categories.attributes]]
code = "parts"
description = "What is damaged?"
datatype = "multivaluelist"
required = true
order = 1
values = [{key = "trunk", name = "Trunk"}, {key = "branch", name = "Branches"}, {key = "roots", name = "Roots"}]

[[categories.attributes]]
code = "height"
description = "How tall is it, in metres?"
datatype = "number"
datatype_description = "metres"
order = 2
"""


class Open311:
    """A client of one app, with keys of several holders, that checks every answer it gets
    for the reporters' personal data."""

    def __init__(self, client: TestClient, app: Any, clock: Clock) -> None:
        self.client = client
        self.app = app
        self.clock = clock
        self.keys: dict[str, str] = {}

    def _checked(self, response: Any) -> Any:
        for word in SECRET_WORDS:
            assert word not in response.text, f"{word!r} in {response.request.url}"
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self._checked(self.client.get(f"{V2}/{path}", params=params))

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self._checked(self.client.post(f"{V2}/{path}", data=data, **kw))

    def run(self, coroutine_function: Any, *args: Any) -> Any:
        return self.client.portal.call(coroutine_function, *args)

    @property
    def service(self) -> Any:
        return self.app.state.occurrences

    def report(self, actor: Any = CITIZEN, tenant: str = "", **more: Any) -> int:
        """An occurrence made through the service (at the clock's time)."""
        values: dict[str, Any] = {
            "category": "pothole",
            "description": "A hole",
            "lat": LAT,
            "lon": LON,
            "name": "Maria Sousa-Figueiredo",
            "email": SECRET["email"],
        }
        values.update(more)
        made = self.run(self.service.report, tenant, actor, Report(**values))
        return made.occurrence.number

    def act(self, number: int, action: str, **kw: Any) -> None:
        async def go() -> None:
            await self.service.act("", OPERATOR, number, action, **kw)

        self.run(go)

    def count(self) -> int:
        async def go() -> int:
            from cidade.store.occurrences import OccurrenceQuery

            page = await self.service.list("", OccurrenceQuery(limit=100_000, count=True))
            return page.total

        return self.run(go)


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> Iterator[Open311]:
    config = tmp_path / "occurrences.toml"
    config.write_text(CONFIG)
    settings = make_settings(
        store=store_url,
        occurrences_config=str(config),
        occurrence_photo_max_bytes=60_000,
        public_url="https://city.example",
    )
    app = build_app(settings)
    clock = Clock()
    app.state.occurrences.clock = clock
    with TestClient(app, raise_server_exceptions=False) as client:
        o = Open311(client, app, clock)
        o.keys = client.portal.call(_keys, app)
        yield o


async def _keys(app: Any) -> dict[str, str]:
    """Keys of accounts (without passwords: hashing one costs a second on a busy machine)."""
    keys = {}
    for name, role, tenant, more in (
        ("resident", "citizen", "", {}),
        ("room", "operator", "", {}),
        ("space", "staff", "", {"departments": ["public-space"]}),
        ("publisher", "publisher", "", {}),
        ("elsewhere", "citizen", "matosinhos", {}),
    ):
        await app.state.accounts.create(ROOT, name, roles=[role], tenants=[tenant], **more)
        keys[name] = await key_of(app, name)
    return keys


def xml(response: Any) -> ET.Element:
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(response.content)


def json_of(response: Any) -> Any:
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    return response.json()


def error(response: Any, status: int) -> str:
    """The description of a GeoReport error, checked in either format."""
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/xml"):
        root = xml(response)
        assert root.tag == "errors" and [e.tag for e in root] == ["error"]
        assert root.findtext("error/code") == str(status)
        return root.findtext("error/description") or ""
    body = json_of(response)
    assert isinstance(body, list) and len(body) == 1 and body[0]["code"] == status, body
    return body[0]["description"]


def noise() -> bytes:
    """A PNG larger than the 60 kB the tests allow (noise does not compress)."""
    import io
    import random

    from PIL import Image

    pixels = random.Random(1).randbytes(200 * 200 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (200, 200), pixels).save(out, "PNG")
    assert len(out.getvalue()) > 60_000
    return out.getvalue()


def pothole(o: Open311, **more: Any) -> dict[str, Any]:
    return {
        "api_key": o.keys["resident"],
        "service_code": "pothole",
        "lat": str(LAT),
        "long": str(LON),
        "description": "A deep hole in the road",
        **more,
    }


# -- discovery and services ------------------------------------------------------------------


def test_discovery_in_both_formats(env: Open311) -> None:
    body = json_of(env.get("discovery.json"))
    assert set(body) == {"changeset", "contact", "key_service", "endpoints"}
    (endpoint,) = body["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == "https://city.example/open311/v2"
    assert endpoint["formats"] == ["text/xml", "application/json"]
    root = xml(env.get("discovery.xml"))
    assert root.tag == "discovery"
    assert [f.text for f in root.findall("endpoints/endpoint/formats/format")] == [
        "text/xml",
        "application/json",
    ]
    assert root.findtext("endpoints/endpoint/url") == "https://city.example/open311/v2"


def test_services_list_the_public_categories(env: Open311) -> None:
    services = json_of(env.get("services.json"))
    by_code = {s["service_code"]: s for s in services}
    assert "air-quality" not in by_code and "traffic-congestion" not in by_code  # sensors'
    assert by_code["tree-damage"] == {
        "service_code": "tree-damage",
        "service_name": "Damaged tree",
        "description": "A tree that is damaged or dangerous",
        "metadata": True,
        "type": "realtime",
        "keywords": "tree, branch",
        "group": "Green spaces",
    }
    assert by_code["graffiti"]["metadata"] is False
    root = xml(env.get("services.xml"))
    assert root.tag == "services" and {e.tag for e in root} == {"service"}
    tree = next(s for s in root if s.findtext("service_code") == "tree-damage")
    assert [c.tag for c in tree] == [
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    ]
    assert tree.findtext("metadata") == "true" and tree.findtext("type") == "realtime"
    assert [s.findtext("service_code") for s in root] == [s["service_code"] for s in services]


def test_service_definition_in_both_formats(env: Open311) -> None:
    body = json_of(env.get("services/tree-damage.json"))
    assert body["service_code"] == "tree-damage"
    parts, height = body["attributes"]
    assert parts == {
        "variable": True,
        "code": "parts",
        "datatype": "multivaluelist",
        "required": True,
        "datatype_description": None,
        "order": 1,
        "description": "What is damaged?",
        "values": [
            {"key": "trunk", "name": "Trunk"},
            {"key": "branch", "name": "Branches"},
            {"key": "roots", "name": "Roots"},
        ],
    }
    assert height["datatype"] == "number" and height["datatype_description"] == "metres"
    root = xml(env.get("services/tree-damage.xml"))
    assert root.tag == "service_definition"
    assert root.findtext("service_code") == "tree-damage"
    first = root.find("attributes/attribute")
    assert first is not None
    assert [c.tag for c in first] == [
        "variable",
        "code",
        "datatype",
        "required",
        "datatype_description",
        "order",
        "description",
        "values",
    ]
    assert first.findtext("required") == "true" and first.findtext("datatype_description") == ""
    assert [(v.findtext("key"), v.findtext("name")) for v in first.findall("values/value")] == [
        ("trunk", "Trunk"),
        ("branch", "Branches"),
        ("roots", "Roots"),
    ]


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_or_private_service_code_is_404(env: Open311, fmt: str) -> None:
    assert "no-such" in error(env.get(f"services/no-such.{fmt}"), 404)
    assert "air-quality" in error(env.get(f"services/air-quality.{fmt}"), 404)


# -- POST requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_post_request_and_read_it_back(env: Open311, fmt: str) -> None:
    answer = env.post(
        f"requests.{fmt}",
        pothole(
            env,
            **SECRET,
            **{"attribute[size]": "large"},
            address_string="Avenida dos Aliados, Porto",
            device_id="phone-1",
            account_id="app-user-7",
        ),
    )
    assert answer.status_code == 200, answer.text
    if fmt == "json":
        (created,) = json_of(answer)
        assert set(created) == {"service_request_id", "token", "service_notice", "account_id"}
        assert created["account_id"] is None
        number, token = created["service_request_id"], created["token"]
        notice = created["service_notice"]
    else:
        root = xml(answer)
        assert root.tag == "service_requests" and [e.tag for e in root] == ["request"]
        assert [c.tag for c in root[0]] == [
            "service_request_id",
            "token",
            "service_notice",
            "account_id",
        ]
        number, token = root.findtext("request/service_request_id"), root.findtext("request/token")
        notice = root.findtext("request/service_notice")
    assert number.isdigit() and token
    assert notice == (
        "Public Space will look at it within 8 hours and aims to resolve it within 5 days."
    )
    assert "app-user-7" not in answer.text

    stored = env.run(env.service.get, "", int(number))
    assert stored.doc["source"] == "open311"
    assert stored.doc["attributes"] == {"size": "large"}
    assert stored.private["reporter"] == {
        "name": "Maria Sousa-Figueiredo",
        "email": SECRET["email"],
        "phone": SECRET["phone"],
    }

    (request,) = json_of(env.get(f"requests/{number}.json"))
    assert list(request) == [
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
    ]
    assert request["service_request_id"] == number
    assert request["status"] == "open" and request["status_notes"] is None
    assert request["service_code"] == "pothole" and request["service_name"] == "Pothole"
    assert request["description"] == "A deep hole in the road"
    assert request["agency_responsible"] == "Public Space"
    assert request["address"] == "Avenida dos Aliados, Porto"
    assert (request["lat"], request["long"]) == (LAT, LON)
    assert request["requested_datetime"] == "2027-01-15T08:00:00Z"  # the clock's
    assert request["expected_datetime"] == "2027-01-20T08:00:00Z"  # within 5 days
    assert request["media_url"] is None
    root = xml(env.get(f"requests/{number}.xml"))
    assert root.tag == "service_requests"
    assert [c.tag for c in root.find("request")] == list(request)
    assert root.findtext("request/lat") == str(LAT) and root.findtext("request/status") == "open"

    for token_answer in (env.get(f"tokens/{token}.json"), env.get(f"tokens/{token}.xml")):
        if token_answer.headers["content-type"].startswith("text/xml"):
            assert xml(token_answer).findtext("request/service_request_id") == number
            assert xml(token_answer).findtext("request/token") == token
        else:
            assert json_of(token_answer) == [{"service_request_id": number, "token": token}]
    # The token is for the reporter: no search answers it.
    assert token not in env.get("requests.json").text
    assert token not in env.get(f"requests/{number}.xml").text


def test_anonymous_report_with_answers_of_every_kind(env: Open311) -> None:
    answer = env.post(
        "requests.json",
        {
            "api_key": env.keys["resident"],
            "service_code": "tree-damage",
            "address_id": "PT-13-1234",
            "description": "Branch <b>hanging</b> over the path<script>alert(1)</script>",
            "attribute[parts][]": ["trunk", "branch"],
            "attribute[height]": "12.5",
        },
    )
    assert answer.status_code == 200, answer.text
    number = int(json_of(answer)[0]["service_request_id"])
    stored = env.run(env.service.get, "", number)
    assert stored.doc["attributes"] == {"parts": ["trunk", "branch"], "height": 12.5}
    assert stored.doc["anonymous"] is True and stored.private["reporter"] == {}
    (request,) = json_of(env.get(f"requests/{number}.json"))
    assert request["description"] == "Branch hanging over the path"  # markup removed
    assert request["address_id"] == "PT-13-1234" and request["lat"] is None


def test_photos_and_media_url(env: Open311) -> None:
    answer = env.post(
        "requests.json",
        pothole(env),
        files={"photo1": ("hole.jpg", photo(exif=True), "image/jpeg")},
    )
    assert answer.status_code == 200, answer.text
    number = json_of(answer)[0]["service_request_id"]
    (request,) = json_of(env.get(f"requests/{number}.json"))
    assert request["media_url"] == f"https://city.example/occurrences/{number}/photos/p1"
    linked = env.post(
        "requests.json", pothole(env, media_url="https://img.example/hole.jpg")
    ).json()[0]["service_request_id"]
    (request,) = json_of(env.get(f"requests/{linked}.json"))
    assert request["media_url"] == "https://img.example/hole.jpg"


def test_refusals_of_a_post_change_nothing(env: Open311) -> None:
    before = env.count()
    cases: list[tuple[dict[str, Any], dict[str, Any], int, str]] = [
        ({k: v for k, v in pothole(env).items() if k != "api_key"}, {}, 403, "api_key"),
        (pothole(env, api_key="cdk_not-a-key"), {}, 403, "api_key"),
        (pothole(env, api_key=env.keys["publisher"]), {}, 403, ""),
        (pothole(env, api_key=env.keys["elsewhere"]), {}, 403, ""),
        (pothole(env, service_code="no-such"), {}, 404, "no-such"),
        (pothole(env, service_code=""), {}, 400, "service_code"),
        ({k: v for k, v in pothole(env).items() if k not in ("lat", "long")}, {}, 400, "location"),
        (pothole(env, long=""), {}, 400, "lat and long"),
        (pothole(env, lat="91"), {}, 400, "lat"),
        (pothole(env, description="x" * 4001), {}, 400, "4000"),
        (pothole(env, description="<p></p>"), {}, 400, "description"),
        (pothole(env, **{"attribute[size]": "huge"}), {}, 400, "attribute[size]"),
        (pothole(env, **{"attribute[colour]": "red"}), {}, 400, "colour"),
        (pothole(env, **{"attribute[size": "large"}), {}, 400, "attribute"),
        (pothole(env, service_code="tree-damage"), {}, 400, "attribute[parts]"),
        (pothole(env, media_url="javascript:alert(1)"), {}, 400, "media_url"),
        (pothole(env, email="not an address"), {}, 400, "email"),
        (pothole(env, description="a\x00b"), {}, 400, "NUL"),
        (
            pothole(env),
            {"files": {"photo1": ("x.jpg", b"not an image at all", "image/jpeg")}},
            400,
            "",
        ),
        (
            pothole(env),
            {"files": {"photo1": ("big.png", noise(), "image/png")}},
            400,
            "",
        ),
    ]
    for fmt in ("json", "xml"):
        for data, more, status, says in cases:
            answer = env.post(f"requests.{fmt}", data, **more)
            assert answer.status_code == status, (data, more.keys(), answer.text)
            description = error(answer, status)
            assert says in description, (data, description)
    # JSON is no form: its api_key is not read (403), and with the key as a header it is 415.
    assert error(env.client.post(f"{V2}/requests.xml", json=pothole(env)), 403)
    key = {"X-API-Key": env.keys["resident"]}
    assert error(env.client.post(f"{V2}/requests.xml", json=pothole(env), headers=key), 415)
    assert env.count() == before


def test_the_form_key_is_no_credential_elsewhere(env: Open311) -> None:
    # Only Open311's routes read a key from the form: /auth/keys takes it from no form.
    answer = env.client.post("/auth/keys", data={"api_key": env.keys["room"]})
    assert answer.status_code == 401
    assert answer.json()["type"].endswith("/Unauthenticated")


# -- GET requests: filters and defaults ------------------------------------------------------


def test_search_defaults_and_filters(env: Open311, monkeypatch: pytest.MonkeyPatch) -> None:
    env.clock.advance(-100 * DAY)
    old = env.report(description="Old hole")
    env.clock.advance(100 * DAY - 10 * DAY)
    ten_days = env.report(category="graffiti", description="Tags on a wall")
    env.clock.advance(10 * DAY)
    fresh = env.report(category="water-leak", description="Water in the street")
    closed = env.report(description="Not a hole after all")
    env.act(closed, "reject", note="Checked: nothing there.")
    sensor = env.report(OPERATOR, category="air-quality", source="sensor", description="NO2")

    def ids(**params: Any) -> list[int]:
        return [int(r["service_request_id"]) for r in json_of(env.get("requests.json", **params))]

    # The last 90 days, newest first; sensor categories are not Open311 services.
    assert ids() == [closed, fresh, ten_days]
    assert sensor not in ids() and old not in ids()
    assert ids(start_date="2026-10-01T00:00:00Z", end_date="2026-10-10T00:00:00Z") == [old]
    assert ids(end_date="2026-10-10T00:00:00Z") == [old]  # the 90 days before it
    assert ids(start_date="2027-01-10T00:00:00+01:00") == [closed, fresh]
    assert ids(status="open") == [fresh, ten_days]
    assert ids(status="closed") == [closed]
    assert ids(status="open,closed") == [closed, fresh, ten_days]
    assert ids(service_code="graffiti,water-leak") == [fresh, ten_days]
    assert ids(service_code="air-quality") == []
    assert ids(agency_responsible="water|environment") == [fresh]
    assert ids(max_requests="2") == [closed, fresh]
    assert ids(jurisdiction_id="anything.example") == ids()  # one jurisdiction: ignored
    # service_request_id overrides every other parameter (the window too), not the services.
    assert ids(service_request_id=f"{old},{fresh},{sensor}", status="closed") == [fresh, old]
    (rejected,) = json_of(env.get(f"requests/{closed}.json"))
    assert rejected["status"] == "closed" and rejected["status_notes"] == "Checked: nothing there."

    root = xml(env.get("requests.xml"))
    assert root.tag == "service_requests" and len(root.findall("request")) == 3
    assert [r.findtext("service_request_id") for r in root] == [
        str(closed),
        str(fresh),
        str(ten_days),
    ]
    assert xml(env.get("requests.xml", service_code="air-quality")).findall("request") == []

    monkeypatch.setattr(open311_format, "MAX_REQUESTS", 2)
    assert ids() == [closed, fresh]
    assert ids(max_requests="50") == [closed, fresh]
    assert open311_format.MAX_REQUESTS != 1000  # the patch took; the real one is below
    monkeypatch.undo()
    assert open311_format.MAX_REQUESTS == 1000 and open311_format.WINDOW_DAYS == 90

    for params, says in (
        ({"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-06-01T00:00:00Z"}, "90 days"),
        ({"start_date": "2027-01-02T00:00:00Z", "end_date": "2027-01-01T00:00:00Z"}, "before"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"status": "pending"}, "pending"),
        ({"service_request_id": "1,x"}, "service_request_id"),
        ({"max_requests": "-1"}, "max_requests"),
    ):
        for fmt in ("json", "xml"):
            assert says in error(env.get(f"requests.{fmt}", **params), 400), params


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_one_request_that_is_not_there(env: Open311, fmt: str) -> None:
    sensor = env.report(OPERATOR, category="air-quality", source="sensor", description="NO2")
    for missing in ("999", "abc", "99999999999999999999", str(sensor)):
        assert error(env.get(f"requests/{missing}.{fmt}"), 404)
    assert "token" in error(env.get(f"tokens/no-such-token.{fmt}"), 404)


# -- FixMyStreet's servicerequestupdates -----------------------------------------------------


def test_updates_list_public_changes_in_fixmystreets_statuses(env: Open311) -> None:
    hole = env.report()
    env.act(hole, "accept", note="We will look at it this week.")
    env.clock.advance(3600)
    env.act(hole, "assign", departments=["public-space"])
    env.clock.advance(3600)

    async def internal() -> None:
        await env.service.update("", OPERATOR, hole, text="Crew B, not A", public=False)

    env.run(internal)
    env.act(hole, "start")
    env.act(hole, "resolve", note="Filled.")
    sensor = env.report(OPERATOR, category="air-quality", source="sensor", description="NO2")
    env.act(sensor, "accept", note="Measuring again")

    updates = json_of(env.get("servicerequestupdates.json"))
    assert [(u["status"], u["description"]) for u in updates] == [
        ("INVESTIGATING", "We will look at it this week."),
        ("ACTION_SCHEDULED", ""),
        ("IN_PROGRESS", ""),
        ("FIXED", "Filled."),
    ]
    assert {u["service_request_id"] for u in updates} == {str(hole)}
    assert updates[0]["updated_datetime"] == "2027-01-15T08:00:00Z"
    assert len({u["update_id"] for u in updates}) == 4
    assert set(updates[0]) == {
        "update_id",
        "service_request_id",
        "status",
        "updated_datetime",
        "description",
        "media_url",
    }
    assert "Crew B" not in env.get("servicerequestupdates.json").text  # an internal note

    root = xml(env.get("servicerequestupdates.xml"))
    assert root.tag == "service_request_updates"
    assert [u.findtext("status") for u in root.findall("request_update")] == [
        "INVESTIGATING",
        "ACTION_SCHEDULED",
        "IN_PROGRESS",
        "FIXED",
    ]
    late = json_of(env.get("servicerequestupdates.json", start_date="2027-01-15T09:30:00Z"))
    assert [u["status"] for u in late] == ["IN_PROGRESS", "FIXED"]
    early = json_of(env.get("servicerequestupdates.json", end_date="2027-01-15T08:30:00Z"))
    assert [u["status"] for u in early] == ["INVESTIGATING"]
    assert "end_date" in error(
        env.get("servicerequestupdates.xml", start_date="2027-01-16T00:00:00Z", end_date="2027"),
        400,
    )


def test_posted_updates_act_when_they_may(env: Open311) -> None:
    hole = env.report()
    env.act(hole, "accept")
    env.act(hole, "assign", departments=["public-space"])
    # Staff of the department: IN_PROGRESS starts the work, with its public note.
    answer = env.post(
        "servicerequestupdates.xml",
        {
            "api_key": env.keys["space"],
            "service_request_id": str(hole),
            "update_id": "fms-1",
            "status": "IN_PROGRESS",
            "updated_datetime": "2027-01-15T08:00:00Z",
            "description": "Crew on its way",
            **SECRET,
        },
    )
    root = xml(answer)
    assert answer.status_code == 200 and root.tag == "service_request_updates"
    first_id = root.findtext("request_update/update_id")
    assert first_id and first_id.isdigit()
    stored = env.run(env.service.get, "", hole)
    assert stored.doc["status"] == "in_progress"
    assert stored.doc["updates"][-1]["text"] == "Crew on its way"
    assert SECRET["email"] not in str(stored.doc)  # the sender's contact is not kept

    # The same update sent again (its answer was lost) is recorded once.
    again = env.post(
        "servicerequestupdates.json",
        {
            "api_key": env.keys["space"],
            "service_request_id": str(hole),
            "update_id": "fms-1",
            "status": "IN_PROGRESS",
            "description": "Crew on its way",
        },
    )
    assert json_of(again) == [{"update_id": first_id}]
    assert len(env.run(env.service.get, "", hole).doc["updates"]) == 1
    listed = json_of(env.get("servicerequestupdates.json"))
    assert [u["update_id"] for u in listed if u["description"] == "Crew on its way"] == [first_id]

    # INVESTIGATING is the room's to decide (accept): from staff it is a public update alone.
    note = env.post(
        "servicerequestupdates.json",
        {
            "api_key": env.keys["space"],
            "service_request_id": str(hole),
            "status": "INVESTIGATING",
            "description": "Looking at the drain too",
        },
    )
    assert note.status_code == 200, note.text
    assert env.run(env.service.get, "", hole).doc["status"] == "in_progress"

    fixed = env.post(
        "servicerequestupdates.json",
        {"api_key": env.keys["room"], "service_request_id": str(hole), "status": "FIXED"},
    )
    assert fixed.status_code == 200, fixed.text
    (request,) = json_of(env.get(f"requests/{hole}.json"))
    assert request["status"] == "closed"
    assert request["status_notes"] == "Looking at the drain too"
    statuses = [u["status"] for u in json_of(env.get("servicerequestupdates.json"))]
    assert statuses[-1] == "FIXED"


def test_refused_updates_change_nothing(env: Open311) -> None:
    hole = env.report()
    private = env.report(OPERATOR, category="air-quality", source="sensor", description="NO2")
    before = env.run(env.service.get, "", hole)
    base = {"api_key": env.keys["space"], "service_request_id": str(hole), "description": "x"}
    cases = [
        ({**base, "api_key": env.keys["resident"]}, 403),  # a citizen may not update
        ({k: v for k, v in base.items() if k != "api_key"}, 403),
        ({**base, "service_request_id": ""}, 400),
        ({**base, "service_request_id": "424242"}, 404),
        ({**base, "service_request_id": str(private)}, 404),
        ({**base, "status": "SOLVED"}, 400),
        ({**base, "updated_datetime": "soon"}, 400),
        ({**base, "description": ""}, 400),  # no text, and OPEN asks nothing of a new one
        ({**base, "description": "y" * 4001}, 400),
        ({**base, "status": "CLOSED", "description": ""}, 400),  # close is from resolved only
    ]
    for fmt in ("json", "xml"):
        for data, status in cases:
            error(env.post(f"servicerequestupdates.{fmt}", data), status)
    assert env.run(env.service.get, "", hole).doc == before.doc


# -- errors from anywhere under /open311/ ----------------------------------------------------


def test_errors_of_the_router_and_the_gate_are_open311s(env: Open311) -> None:
    assert "xyz" in error(env.get("services.xyz"), 404)
    assert error(env.get("nothing.xml"), 404)
    assert error(env.client.get("/open311/v3/services.json"), 404)
    deleted = env.client.delete(f"{V2}/requests.xml")
    assert error(deleted, 405) and "POST" in deleted.headers["allow"]
    assert error(
        env.post("requests.json", data=None, content=b"x", headers={"content-type": "text/plain"}),
        403,
    )
    bad_tenant = env.client.get(f"{V2}/services.xml", headers={"NGSILD-Tenant": "a b"})
    assert error(bad_tenant, 400)
    assert "NUL" in error(env.client.get(f"{V2}/requests.xml?service_code=%00"), 400)
    assert env.get("services.json").headers["access-control-allow-origin"] == "*"


def test_rate_limit_answers_in_open311s_format(store_url: str) -> None:
    app = build_app(make_settings(store=store_url, rate_limit_anonymous=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.get(f"{V2}/services.json") for _ in range(4)]
    limited = answers[-1]
    assert error(limited, 429) and limited.headers["retry-after"]


def test_jurisdictions_name_tenants(store_url: str) -> None:
    settings = make_settings(
        store=store_url, open311_jurisdictions="porto.pt=, matosinhos.pt=matosinhos"
    )
    app = build_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        keys = client.portal.call(_keys, app)
        porto, matosinhos = keys["resident"], keys["elsewhere"]
        form = {"service_code": "pothole", "lat": str(LAT), "long": str(LON), "description": "x"}

        def post(key: str, jurisdiction: str | None) -> Any:
            extra = {"jurisdiction_id": jurisdiction} if jurisdiction is not None else {}
            return client.post(f"{V2}/requests.json", data={**form, "api_key": key, **extra})

        assert post(porto, "porto.pt").status_code == 200
        assert post(porto, None).status_code == 200  # none given: the default tenant
        assert post(matosinhos, "matosinhos.pt").status_code == 200
        error(post(porto, "matosinhos.pt"), 403)  # a key of another tenant's
        assert "gaia.pt" in error(post(porto, "gaia.pt"), 404)

        def count(jurisdiction: str) -> int:
            answer = client.get(f"{V2}/requests.json", params={"jurisdiction_id": jurisdiction})
            return len(answer.json())

        assert (count("porto.pt"), count("matosinhos.pt")) == (2, 1)
        assert "gaia.pt" in error(client.get(f"{V2}/services.xml?jurisdiction_id=gaia.pt"), 404)
