"""/occurrences/{number}/followers and /occurrences/{number}/messages on both stores, through
the app (its gate, its dispatcher in the lifespan): anyone follows an occurrence they can see,
is told of its changes by the app's dispatcher, and the log shows it to staff with
occurrences.contact; bad input is a ProblemDetails and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.occurrences.service import Report
from tests.conftest import LOOPBACK, admin_client, make_settings
from tests.occurrences.helpers import CITIZEN, OPERATOR
from tests.occurrences.smtp_sink import SmtpSink

FROM = "ocorrencias@porto.example"


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def client(store_url: str, smtp: SmtpSink) -> Iterator[TestClient]:
    settings = make_settings(
        store=store_url,
        smtp_url=smtp.url,
        smtp_from=FROM,
        private_networks=LOOPBACK,
        message_poll=0.2,
    )
    with admin_client(build_app(settings), raise_server_exceptions=False) as c:
        yield c


def report(c: TestClient, category: str = "pothole", **more: Any) -> int:
    values = {
        "category": category,
        "description": "A deep hole",
        "lat": 41.1496,
        "lon": -8.6109,
        "name": "Ana",
        "email": "ana@example.org",
        **more,
    }
    who = CITIZEN if category == "pothole" else OPERATOR
    made = c.portal.call(c.app.state.occurrences.report, "", who, Report(**values))
    return made.occurrence.number


def anonymous(c: TestClient, method: str, path: str, **kw: Any) -> Any:
    """A request without credentials (the public)."""
    token = c.headers.pop("Authorization")
    try:
        return c.request(method, path, **kw)
    finally:
        c.headers["Authorization"] = token


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    return body


def followers(c: TestClient, n: int) -> int:
    return c.portal.call(c.app.state.occurrences.get, "", n).doc["followers"]


def wait_sent(c: TestClient, n: int, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        r = c.get(f"/occurrences/{n}/messages")
        assert r.status_code == 200, r.text
        log = r.json()["messages"]
        if len([m for m in log if m["state"] == "sent"]) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_anyone_follows_and_is_told_and_the_log_shows_it(client: TestClient, smtp: SmtpSink):
    n = report(client)
    r = anonymous(client, "POST", f"/occurrences/{n}/followers", json={"email": "bea@example.org"})
    assert r.status_code == 201, r.text
    assert r.json() == {"number": n, "following": True}
    assert followers(client, n) == 1
    # the status changes: reporter and follower are told by the app's own dispatcher
    client.portal.call(client.app.state.occurrences.act, "", OPERATOR, n, "accept")
    got = smtp.wait_for(2)
    assert sorted(r for _, rs, _ in got for r in rs) == ["ana@example.org", "bea@example.org"]
    log = wait_sent(client, n, 2)
    assert [(m["recipient"], m["channel"], m["state"]) for m in log] == [
        ("reporter", "email", "sent"),
        ("follower", "email", "sent"),
    ]
    first = log[0]
    assert first["to"] == "ana@example.org" and first["kind"] == "status"
    assert first["subject"] == f"Occurrence {n} (Pothole): Accepted"
    assert "/follow/" in first["text"] and first["attempts"] == 1 and first["next_at"] is None
    # paged by seq
    page = client.get(f"/occurrences/{n}/messages?limit=1").json()
    assert [m["seq"] for m in page["messages"]] == [first["seq"]]
    assert page["next_after"] == first["seq"]
    rest = client.get(f"/occurrences/{n}/messages?limit=1&after={first['seq']}").json()
    assert [m["recipient"] for m in rest["messages"]] == ["follower"]
    # every read of the log (it shows addresses) is audited
    audit = client.get("/auth/audit", params={"event": "occurrence.messages"}).json()
    reads = [e for e in audit if e["event"] == "occurrence.messages"]
    assert len(reads) >= 3 and {e["target"] for e in reads} == {str(n)}


def test_the_log_is_for_staff_who_may_contact(client: TestClient) -> None:
    n = report(client)
    problem(anonymous(client, "GET", f"/occurrences/{n}/messages"), 401)
    problem(client.get("/occurrences/999999/messages"), 404)
    for bad in ("limit=0", "limit=1001", "limit=x", "after=-1", "after=1e3"):
        body = problem(client.get(f"/occurrences/{n}/messages?{bad}"), 400)
        assert body["field"] in ("limit", "after")


BAD_FOLLOWS: list[tuple[Any, str | None]] = [
    ([], None),
    ({"email": "not an address"}, "email"),
    ({"mail": "bea@example.org"}, "mail"),
    ({"email": 7}, "email"),
    ({}, "contact"),
    ({"email": "bea@example.org", "notify": "sms"}, "notify"),
    ({"notify": "none", "email": "bea@example.org"}, "contact"),
    ({"webhook": "ftp://example.org/x"}, "webhook"),
    # not loopback, which the test allows: a private address the server may not reach
    ({"webhook": "http://10.1.2.3/hook"}, "webhook"),
]


def test_bad_follows_are_refused_and_change_nothing(client: TestClient) -> None:
    n = report(client)
    before = client.portal.call(client.app.state.occurrences.history, "", n)
    for body, field in BAD_FOLLOWS:
        r = anonymous(client, "POST", f"/occurrences/{n}/followers", json=body)
        answer = problem(r, 400)
        if field:
            assert answer.get("field") == field, (body, answer)
    assert followers(client, n) == 0
    assert client.portal.call(client.app.state.occurrences.history, "", n) == before


def test_follow_needs_json_and_an_occurrence_one_can_see(client: TestClient) -> None:
    n = report(client)
    problem(
        anonymous(
            client,
            "POST",
            f"/occurrences/{n}/followers",
            content=b"email=bea@example.org",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
    )
    problem(
        anonymous(
            client,
            "POST",
            f"/occurrences/{n}/followers",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
    )
    problem(
        anonymous(client, "POST", "/occurrences/999999/followers", json={"email": "b@c.pt"}), 404
    )
    # a sensor-raised category, not offered to citizens: as absent to the public
    hidden = report(client, "traffic-congestion", email="")
    r = anonymous(client, "POST", f"/occurrences/{hidden}/followers", json={"email": "b@c.pt"})
    assert problem(r, 404)["detail"] == f"no occurrence {hidden}"
    assert followers(client, hidden) == 0
    # the operations room may
    assert (
        client.post(f"/occurrences/{hidden}/followers", json={"email": "b@c.pt"}).status_code == 201
    )
    assert followers(client, hidden) == 1
