"""/occurrences over HTTP on both stores: reporting (JSON and a form with photos), the
operations room's list and actions, the public follow link, configuration, and bad input
answered with ProblemDetails that change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from tests.auth.helpers import account_with_key, bearer
from tests.conftest import admin_client
from tests.occurrences.helpers import photo

LAT, LON = 41.1496, -8.6109
SECRET = {"name": "Maria Sousa", "email": "maria@example.org", "phone": "+351912345678"}


@pytest.fixture
def app(settings):
    return build_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with admin_client(app, raise_server_exceptions=False) as c:
        yield c


class Public:
    """The client's requests without its credentials: the public, on the same app and loop."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def request(self, method: str, url: str, **kw: Any) -> Any:
        saved = self.client.headers.pop("Authorization")
        try:
            return self.client.request(method, url, **kw)
        finally:
            self.client.headers["Authorization"] = saved

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.request("POST", url, **kw)


def keys(client: TestClient, app: Any) -> dict[str, dict[str, str]]:
    """Headers of an operator, two departments' staff and a citizen."""
    out = {}
    for name, roles, more in (
        ("op", ["operator"], {}),
        ("space", ["staff"], {"departments": ["public-space"]}),
        ("water", ["staff"], {"departments": ["water"]}),
        ("resident", ["citizen"], {}),
    ):
        token = client.portal.call(_account, app, name, roles, more)
        out[name] = bearer(token)
    return out


async def _account(app: Any, name: str, roles: list[str], more: dict[str, Any]) -> str:
    if more:
        accounts = app.state.accounts
        from tests.auth.helpers import PASSWORD, ROOT

        await accounts.create(ROOT, name, password=PASSWORD, roles=roles, tenants=[""], **more)
        from tests.auth.helpers import key_of

        return await key_of(app, name)
    return await account_with_key(app, name, roles, [""])


def report(client: Any, headers: dict[str, str] | None = None, **more: Any) -> Any:
    body = {"category": "pothole", "description": "Hole", "lat": LAT, "long": LON, **SECRET}
    body.update(more)
    return client.post("/occurrences", json=body, headers=headers or {})


def no_secret(text: str) -> None:
    for value in SECRET.values():
        assert value not in text


def test_report_and_follow_without_personal_data(client):
    anonymous = Public(client)
    r = report(anonymous, attributes={"size": "small"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/occurrences/{body['number']}"
    assert body["status"] == "new" and body["possible_duplicates"] == []
    no_secret(r.text)
    follow = anonymous.get(f"/occurrences/follow/{body['follow_token']}")
    assert follow.status_code == 200 and follow.json()["number"] == body["number"]
    no_secret(follow.text)
    assert "token" not in follow.json() and "tasks" not in follow.json()
    # a second report nearby is offered the first
    again = report(anonymous, lat=LAT + 0.0005).json()
    assert [d["number"] for d in again["possible_duplicates"]] == [body["number"]]
    near = anonymous.get(
        "/occurrences/duplicates", params={"category": "pothole", "lat": LAT, "long": LON}
    )
    assert {d["number"] for d in near.json()} == {body["number"], again["number"]}
    no_secret(near.text)
    # the operations room sees it, still without contact; the contact route is audited
    listed = client.get("/occurrences", params={"count": "true"})
    assert listed.headers["x-total-count"] == "2"
    no_secret(listed.text)
    one = client.get(f"/occurrences/{body['number']}").json()
    assert "accept" in one["actions"] and one["possible_duplicates"] == [again["number"]]
    contact = client.get(f"/occurrences/{body['number']}/contact")
    assert contact.json()["email"] == SECRET["email"]
    audit = client.get("/auth/audit", params={"event": "occurrence.contact"}).json()
    assert audit and audit[-1]["target"] == str(body["number"])
    assert SECRET["email"] not in str(audit)


def test_form_report_with_photo(client):
    anonymous = Public(client)
    r = anonymous.post(
        "/occurrences",
        data={"category": "graffiti", "description": "Tag on wall", "lat": LAT, "long": LON},
        files=[("photo", ("wall.jpg", photo(exif=True), "image/jpeg"))],
    )
    assert r.status_code == 201, r.text
    url = r.json()["photo_urls"][0]
    got = anonymous.get(url.removeprefix("http://127.0.0.1:8000"))
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    bad = anonymous.post(
        "/occurrences",
        data={"category": "graffiti", "description": "x", "lat": LAT, "long": LON},
        files=[("photo", ("doc.pdf", b"%PDF-1.7", "application/pdf"))],
    )
    assert bad.status_code == 400 and bad.json()["type"].endswith("/BadPhoto")


@pytest.mark.parametrize(
    ("change", "status", "kind"),
    [
        ({"category": "no-such"}, 404, "UnknownCategory"),
        ({"lat": None, "long": None}, 400, "InvalidOccurrence"),
        ({"description": "x" * 4001}, 400, "InvalidOccurrence"),
        ({"colour": "red"}, 400, "InvalidOccurrence"),
        ({"source": "sensor"}, 400, "InvalidOccurrence"),  # not for citizens
        ({"lat": "north"}, 400, "InvalidOccurrence"),
    ],
)
def test_bad_reports_change_nothing(client, change, status, kind):
    r = report(Public(client), **change)
    assert r.status_code == status, r.text
    assert r.json()["type"] == f"https://cidade.city/errors/occurrences/{kind}"
    assert client.get("/occurrences", params={"count": "true"}).headers["x-total-count"] == "0"


def test_html_is_stripped(client):
    r = report(Public(client), description="<b>Big</b> <img src=x onerror=alert(1)>hole")
    assert r.json()["description"] == "Big hole"


def test_workflow_over_http(client, app):
    k = keys(client, app)
    n = report(Public(client)).json()["number"]
    # staff may not accept; an illegal transition is 409 and changes nothing
    assert client.post(f"/occurrences/{n}/actions", json={"action": "accept"},
                       headers=k["space"]).status_code == 403  # fmt: skip
    before = client.get(f"/occurrences/{n}").json()
    r = client.post(f"/occurrences/{n}/actions", json={"action": "resolve"}, headers=k["op"])
    assert r.status_code == 409 and r.json()["type"].endswith("/IllegalTransition")
    assert client.get(f"/occurrences/{n}").json()["version"] == before["version"]
    r = client.post(f"/occurrences/{n}/actions", json={"action": "assign",
                    "departments": ["public-space", "water"]}, headers=k["op"])  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "assigned", r.text
    # each department works its own task
    assert client.post(f"/occurrences/{n}/actions", json={"action": "resolve"},
                       headers=k["space"]).json()["status"] == "in_progress"  # fmt: skip
    queue = client.get("/occurrences", params={"department": "water", "open": "true"}).json()
    assert [o["number"] for o in queue] == [n]
    r = client.post(f"/occurrences/{n}/updates", json={"text": "Crew on site"},
                    headers=k["water"])  # fmt: skip
    assert r.status_code == 201 and r.json()["updates"][-1]["text"] == "Crew on site"
    r = client.post(f"/occurrences/{n}/actions", json={"action": "resolve"}, headers=k["water"])
    assert r.json()["status"] == "resolved"
    # a citizen cannot read the room's view nor the contact; staff cannot read the contact
    assert client.get(f"/occurrences/{n}", headers=k["resident"]).status_code == 403
    assert client.get(f"/occurrences/{n}/contact", headers=k["space"]).status_code == 403
    kinds = [e["kind"] for e in client.get(f"/occurrences/{n}/history").json()]
    assert kinds == ["created", "assign", "resolve", "update", "resolve"]
    # reclassify: the deadlines follow the new priority
    r = client.patch(f"/occurrences/{n}", json={"priority": "urgent"}, headers=k["op"])
    assert r.status_code == 200 and r.json()["priority"] == "urgent"
    assert client.patch(f"/occurrences/{n}", json={"priority": "now"}).status_code == 400
    assert client.get("/occurrences/999999").status_code == 404


def test_list_filters_and_bad_parameters(client):
    anonymous = Public(client)
    report(anonymous)
    report(anonymous, category="water-leak", lat=LAT + 0.01)
    r = client.get("/occurrences", params={"category": "water-leak"})
    assert [o["category"] for o in r.json()] == ["water-leak"]
    r = client.get("/occurrences", params={"near": f"{LAT},{LON},100"})
    assert [o["category"] for o in r.json()] == ["pothole"]
    r = client.get(
        "/occurrences", params={"bbox": f"{LON - 0.001},{LAT - 0.001},{LON + 0.001},{LAT + 0.001}"}
    )
    assert [o["category"] for o in r.json()] == ["pothole"]
    for bad in ({"status": "lost"}, {"near": "1,2"}, {"limit": "5000"}, {"sort": "x"},
                {"created_since": "yesterday"}, {"bbox": "1,1,0,0"}):  # fmt: skip
        r = client.get("/occurrences", params=bad)
        assert r.status_code == 400, (bad, r.text)


def test_configuration_api(client, app):
    k = keys(client, app)
    category = {
        "code": "broken-bench",
        "name": "Broken bench",
        "group": "Public space",
        "department": "public-space",
        "priority": "low",
        "deadlines": {"low": {"response": "P1D", "resolution": "P10D"}},
        "duplicate_radius": 50,
        "attributes": [{"code": "seats", "description": "How many seats?", "datatype": "number"}],
    }
    assert client.put("/occurrences/config/category/broken-bench", json=category,
                      headers=k["op"]).status_code == 403  # fmt: skip
    r = client.put("/occurrences/config/category/broken-bench", json=category)
    assert r.status_code == 204, r.text
    got = client.get("/occurrences/config/category/broken-bench").json()
    assert got["deadlines"]["low"] == {"response": "P1D", "resolution": "P10D"}
    made = report(Public(client), category="broken-bench", attributes={"seats": "3"})
    assert made.status_code == 201 and made.json()["attributes"] == {"seats": 3.0}
    # a category routed to no department, a bad deadline: refused, nothing changes
    for bad in ({**category, "department": "nowhere"},
                {**category, "deadlines": {"low": {"response": "soon"}}},
                {**category, "code": "other"}):  # fmt: skip
        r = client.put("/occurrences/config/category/broken-bench", json=bad)
        assert r.status_code == 400, r.text
    assert client.get("/occurrences/config/category/broken-bench").json() == got
    # a department with categories cannot go; removing the category, then it can
    assert client.delete("/occurrences/config/department/public-space").status_code == 400
    assert client.delete("/occurrences/config/category/broken-bench").status_code == 204
    assert client.get("/occurrences/config/category/broken-bench").status_code == 404
    assert report(Public(client), category="broken-bench").status_code == 404
    config = client.get("/occurrences/config").json()
    assert len(config["departments"]) == 8
