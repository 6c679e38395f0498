"""The occurrences service on both stores: reporting, its checks, the workflow with its
permissions, tasks of several departments, deadlines and their breaches, duplicates, history."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cidade.occurrences.configuration import default_config
from cidade.occurrences.errors import (
    BadPhoto,
    IllegalTransition,
    NotAllowed,
    OccurrenceError,
    OccurrenceNotFound,
    PhotoTooLarge,
    UnknownCategory,
)
from cidade.occurrences.service import OccurrenceService, Report
from cidade.store.occurrences import OccurrenceQuery
from tests.conftest import running_store
from tests.occurrences.helpers import ADMIN, CITIZEN, OPERATOR, Clock, actor, photo

LAT, LON = 41.1496, -8.6109  # Porto's Avenida dos Aliados


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def env(kind: str, tmp_path: Path) -> Iterator[tuple[OccurrenceService, Any, Clock]]:
    with running_store(kind, tmp_path) as (store, loop):
        clock = Clock()
        service = OccurrenceService(
            store,
            default_config(),
            public_url="https://city.example",
            clock=clock,
            max_photo_bytes=200_000,
        )
        yield service, loop.run_until_complete, clock


def report(**more: Any) -> Report:
    values: dict[str, Any] = {
        "category": "pothole",
        "description": "A deep hole in the road",
        "lat": LAT,
        "lon": LON,
        "email": "ana@example.org",
        "name": "Ana",
    }
    values.update(more)
    return Report(**values)


def test_report_keeps_what_was_said_and_deadlines(env):
    service, run, _ = env
    made = run(service.report("", CITIZEN, report(attributes={"size": "large"}))).occurrence
    doc = made.doc
    assert doc["status"] == "new" and doc["open"] is True
    assert doc["category"] == "pothole" and doc["group"] == "Roads and pavements"
    assert doc["departments"] == ["public-space"] and doc["priority"] == "normal"
    assert doc["location"] == {"lat": LAT, "lon": LON}
    assert doc["attributes"] == {"size": "large"}
    # normal priority: respond within 8 hours, resolve within 5 days (the defaults)
    assert doc["deadlines"]["response"]["due"].startswith("2027-01-15T16:00:00")
    assert "email" not in str(doc) and "Ana" not in str(doc)
    assert made.private["reporter"] == {"name": "Ana", "email": "ana@example.org"}
    again = run(service.get("", made.number))
    assert again.doc == doc
    history = run(service.history("", made.number))
    assert [e["kind"] for e in history] == ["created"]
    assert history[0]["actor"] == "anonymous"


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"category": "no-such"}, UnknownCategory, "category"),
        ({"lat": None, "lon": None}, OccurrenceError, "location"),
        ({"lat": 91}, OccurrenceError, "lat"),
        ({"lon": "x"}, OccurrenceError, "long"),
        ({"description": "x" * 4001}, OccurrenceError, "description"),
        ({"attributes": {"size": "huge"}}, OccurrenceError, "attribute[size]"),
        ({"attributes": {"colour": "red"}}, OccurrenceError, "attribute"),
        ({"email": "not an address"}, OccurrenceError, "email"),
        ({"notify": "sms"}, OccurrenceError, "notify"),
        ({"media_url": "file:///etc/passwd"}, OccurrenceError, "media_url"),
        ({"category": "air-quality"}, UnknownCategory, "category"),  # not offered to citizens
    ],
)
def test_bad_reports_are_refused_and_change_nothing(env, change, error, field):
    service, run, _ = env
    with pytest.raises(error) as caught:
        run(service.report("", CITIZEN, report(**change)))
    assert caught.value.field == field
    assert run(service.list("", OccurrenceQuery(count=True))).total == 0


def test_html_is_stripped_and_address_alone_is_a_location(env):
    service, run, _ = env
    made = run(
        service.report(
            "",
            CITIZEN,
            report(
                lat=None,
                lon=None,
                address="Rua de <b>Santa</b> Catarina 1",
                description="<script>alert(1)</script>Broken <i>kerb</i> &amp; hole",
            ),
        )
    ).occurrence
    assert made.doc["description"] == "Broken kerb & hole"
    assert made.doc["address"] == "Rua de Santa Catarina 1"
    assert made.doc["location"] is None


def test_photos_are_checked_and_stripped_of_metadata(env):
    service, run, _ = env
    made = run(service.report("", CITIZEN, report(photos=[photo(exif=True), photo("PNG")])))
    doc = made.occurrence.doc
    assert [p["media_type"] for p in doc["photos"]] == ["image/jpeg", "image/png"]
    media_type, data = run(service.photo("", made.occurrence.number, "p1"))
    assert media_type == "image/jpeg"
    kept = Image.open(io.BytesIO(data))
    assert kept.size == (64, 48) and not kept.getexif()
    with pytest.raises(BadPhoto):
        run(service.report("", CITIZEN, report(photos=[b"%PDF-1.4 not an image"])))
    with pytest.raises(PhotoTooLarge):
        run(service.report("", CITIZEN, report(photos=[b"\xff" * 200_001])))
    assert run(service.list("", OccurrenceQuery(count=True))).total == 1


def test_workflow_with_permissions_and_tasks_of_two_departments(env):
    service, run, _ = env
    n = run(service.report("", CITIZEN, report())).occurrence.number
    lighting = actor("staff", "public-lighting", subject="account:luz")
    space = actor("staff", "public-space", subject="account:rua")
    # a citizen or a department's staff may not triage
    for who in (CITIZEN, space):
        with pytest.raises(NotAllowed):
            run(service.act("", who, n, "accept"))
    # an illegal transition is refused and changes nothing
    with pytest.raises(IllegalTransition):
        run(service.act("", OPERATOR, n, "close"))
    assert run(service.get("", n)).version == 1
    run(service.act("", OPERATOR, n, "accept"))
    with pytest.raises(OccurrenceError):
        run(service.act("", OPERATOR, n, "assign", departments=["nope"]))
    occ = run(
        service.act("", OPERATOR, n, "assign", departments=["public-space", "public-lighting"])
    )
    assert occ.doc["status"] == "assigned"
    assert {t["department"] for t in occ.doc["tasks"]} == {"public-space", "public-lighting"}
    # a department outside the tasks may not work it
    water = actor("staff", "water")
    with pytest.raises(NotAllowed):
        run(service.act("", water, n, "start"))
    occ = run(service.act("", space, n, "start"))
    assert occ.doc["status"] == "in_progress"
    occ = run(service.act("", space, n, "resolve"))
    assert occ.doc["status"] == "in_progress"  # lighting's task is still open
    occ = run(service.act("", lighting, n, "resolve", note="Lamp replaced"))
    assert occ.doc["status"] == "resolved" and occ.doc["open"] is False
    assert occ.doc["updates"][-1]["text"] == "Lamp replaced"
    assert occ.doc["deadlines"]["resolution"]["met"]
    occ = run(service.act("", OPERATOR, n, "close"))
    occ = run(service.act("", OPERATOR, n, "reopen"))
    assert occ.doc["status"] == "assigned" and occ.doc["open"] is True
    kinds = [e["kind"] for e in run(service.history("", n))]
    assert kinds == [
        "created",
        "accept",
        "assign",
        "start",
        "resolve",
        "resolve",
        "close",
        "reopen",
    ]
    # the reporter was told of each status change, through the e-mail given
    messages = run(service.store.occurrence_events("", n))
    assert messages  # (messages are checked by the dispatcher's tests)


def test_duplicates_within_radius_window_and_group(env):
    service, run, clock = env
    first = run(service.report("", CITIZEN, report())).occurrence
    # 100 m north: offered; the same group (damaged pavement) too
    near = run(service.report("", CITIZEN, report(lat=LAT + 0.0009)))
    assert [o.number for o in near.duplicates] == [first.number]
    pavement = run(
        service.report("", CITIZEN, report(category="damaged-pavement", lat=LAT + 0.0001))
    )
    assert {o.number for o in pavement.duplicates} == {first.number, near.occurrence.number}
    # 400 m away: not offered; another group: not offered
    far = run(service.report("", CITIZEN, report(lat=LAT + 0.0036)))
    assert first.number not in [o.number for o in far.duplicates]
    graffiti = run(service.report("", CITIZEN, report(category="graffiti")))
    assert graffiti.duplicates == []
    # 8 days later: out of the window
    clock.advance(8 * 86400)
    assert run(service.report("", CITIZEN, report())).duplicates == []
    # merge: the duplicate is closed as such, the original gains it and its reporter
    dup = near.occurrence.number
    occ = run(service.act("", OPERATOR, dup, "mark_duplicate", of=first.number))
    assert occ.doc["status"] == "duplicate" and occ.doc["duplicate_of"] == first.number
    original = run(service.get("", first.number))
    assert original.doc["duplicates"] == [dup] and original.doc["followers"] == 1
    assert original.private["followers"] == [{"email": "ana@example.org"}]
    with pytest.raises(OccurrenceNotFound):
        run(service.act("", OPERATOR, first.number, "mark_duplicate", of=99999))


def test_deadline_breach_is_marked_once_and_told_to_the_department(env):
    service, run, clock = env
    n = run(
        service.report("", CITIZEN, report(category="fire", attributes={"danger": "yes"}))
    ).occurrence.number
    assert run(service.mark_breaches()) == 0
    clock.advance(16 * 60)  # urgent: respond within 15 minutes
    assert run(service.mark_breaches()) == 1
    assert run(service.mark_breaches()) == 0  # once
    doc = run(service.get("", n)).doc
    assert doc["deadlines"]["response"]["breached"]
    assert "breached" not in doc["deadlines"]["resolution"]
    kinds = [e["kind"] for e in run(service.history("", n))]
    assert kinds == ["created", "deadline_breached"]
    run(service.act("", OPERATOR, n, "accept"))
    clock.advance(4 * 3600)
    assert run(service.mark_breaches()) == 1
    doc = run(service.get("", n)).doc
    assert doc["deadlines"]["resolution"]["breached"]


def test_tenants_are_apart(env):
    service, run, _ = env
    n = run(service.report("porto", CITIZEN, report())).occurrence.number
    with pytest.raises(OccurrenceNotFound):
        run(service.get("gaia", n))
    assert run(service.list("gaia", OccurrenceQuery(count=True))).total == 0
    assert run(service.list("porto", OccurrenceQuery(count=True))).total == 1


def test_history_is_append_only(env, kind):
    service, run, _ = env
    n = run(service.report("", CITIZEN, report())).occurrence.number
    store = service.store
    if kind == "sqlite":
        with pytest.raises(Exception, match="append-only"):
            run(store.db.write(lambda c: c.execute("DELETE FROM occurrence_events").rowcount))
    else:
        with pytest.raises(Exception, match="append-only"):
            run(store._pool.execute("DELETE FROM occurrence_events"))
    assert len(run(service.history("", n))) == 1
    assert ADMIN.may("occurrences.configure")
    asyncio  # noqa: B018


def test_anyone_may_follow_once(env):
    service, run, _ = env
    n = run(service.report("", CITIZEN, report(email="", name=""))).occurrence
    assert n.doc["anonymous"] is True and n.private["reporter"] == {}
    occ = run(service.follow("", n.number, {"email": "vizinho@example.org"}))
    assert occ.doc["followers"] == 1 and occ.version == 2
    again = run(service.follow("", n.number, {"email": "vizinho@example.org"}))
    assert again.version == 2  # already following: nothing written
    with pytest.raises(OccurrenceError):
        run(service.follow("", n.number, {}))
    with pytest.raises(OccurrenceError):
        run(service.follow("", n.number, {"email": "not-an-address"}))
    assert [e["kind"] for e in run(service.history("", n.number))] == ["created", "followed"]
