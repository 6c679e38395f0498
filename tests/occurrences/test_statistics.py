"""Statistics of occurrences on both stores: counts by category, department, status and area,
times to respond and to resolve (mean, p90) and the share within the deadline, computed in SQL
and checked here against the same figures computed in Python from the occurrences' documents;
filters; the migration's backfill; GET /occurrences/statistics with its bad filters."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from cidade.app import build_app
from cidade.ngsild import timefmt
from cidade.occurrences.configuration import Area, OccurrenceConfig, default_config
from cidade.occurrences.errors import InvalidFilter
from cidade.occurrences.service import OccurrenceService, Report
from cidade.occurrences.statistics import occurrence_statistics
from cidade.store.occurrences import OccurrenceQuery, occurrence_columns
from tests.conftest import admin_client, make_settings, running_store
from tests.occurrences.helpers import OPERATOR, Clock

HOUR = 3600.0


def _box(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, Any]:
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


# Two parts of Porto; the rest of the city is in no area.
AREAS = {
    "baixa": Area.parse({"name": "Baixa", "geometry": _box(-8.62, 41.14, -8.60, 41.155)}, "baixa"),
    "boavista": Area.parse(
        {"name": "Boavista", "geometry": _box(-8.66, 41.155, -8.62, 41.17)}, "boavista"
    ),
}
CATEGORIES = ["pothole", "graffiti", "waste-overflow", "illegal-dumping", "water-leak"]


def city_config() -> OccurrenceConfig:
    return replace(default_config(), areas=AREAS)


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def env(kind: str, tmp_path: Path) -> Iterator[tuple[OccurrenceService, Any, Clock]]:
    with running_store(kind, tmp_path) as (store, loop):
        clock = Clock()
        yield OccurrenceService(store, city_config(), clock=clock), loop.run_until_complete, clock


def craft(service: OccurrenceService, run: Any, clock: Clock, n: int = 40, seed: int = 7) -> None:
    """``n`` occurrences reported over days at random times and places, each then taken
    through the workflow its own way, at random delays from its report (all of them on one
    timeline, the clock moving from one step to the next): some never looked at, some
    rejected or merged, others accepted, assigned to one or two departments, started,
    resolved, closed, reopened and resolved again; some left to go overdue."""
    rng = random.Random(seed)
    steps: list[tuple[float, int, int, str, dict[str, Any]]] = []  # (at, order, which, action)
    at = clock()
    for i in range(n):
        at += rng.uniform(0.1, 6) * HOUR
        steps.append((at, len(steps), i, "report", {}))
        fate, t = rng.random(), at + rng.uniform(0.1, 12) * HOUR

        def then(action: str, delay: float = 0.0, i: int = i, **kw: Any) -> None:
            nonlocal t
            t += delay * HOUR
            steps.append((t, len(steps), i, action, kw))

        if fate < 0.15:
            continue  # never looked at
        if fate < 0.25:
            then("reject")
        elif fate < 0.32 and i > 0:
            then("mark_duplicate", of=0)
        else:
            then("accept")
            if fate < 0.45:
                continue
            two = rng.random() < 0.3
            then(
                "assign",
                rng.uniform(0, 5),
                departments=["public-space", "water"] if two else ["environment"],
            )
            then("start", rng.uniform(1, 24))
            if fate < 0.55:
                continue
            then("resolve", rng.uniform(1, 120))
            if fate < 0.8:
                then("close", rng.uniform(1, 48))
            if fate > 0.92:
                then("reopen", rng.uniform(1, 48))
                then("assign", rng.uniform(0, 5), departments=["civil-protection"])
                then("resolve", rng.uniform(1, 50))
    numbers: dict[int, int] = {}
    for at, _, i, action, kw in sorted(steps):
        clock.now = at
        if action == "report":
            made = run(
                service.report(
                    "",
                    OPERATOR,
                    Report(
                        category=rng.choice(CATEGORIES),
                        description="Reported by phone",
                        lat=rng.uniform(41.14, 41.18),
                        lon=rng.uniform(-8.66, -8.58),
                        source="phone",
                        priority=rng.choice(["normal", "high", None]),
                    ),
                )
            )
            numbers[i] = made.occurrence.number
        else:
            if "of" in kw:
                kw = {"of": numbers[kw["of"]]}
            run(service.act("", OPERATOR, numbers[i], action, **kw))
    # The other tenant's occurrences are never counted here.
    run(
        service.report(
            "other",
            OPERATOR,
            Report(category="pothole", description="x", lat=41.15, lon=-8.61, source="phone"),
        )
    )
    clock.advance(30 * HOUR)


def documents(service: OccurrenceService, run: Any) -> list[dict[str, Any]]:
    return [o.doc for o in run(service.list("", OccurrenceQuery(limit=10_000))).items]


def p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    # R's type 7 (linear between the closest ranks): PostgreSQL's percentile_cont
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def expected(docs: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """The statistics computed in Python from the documents alone."""
    t = timefmt.to_epoch
    by: dict[str, dict[Any, list[int]]] = {
        d: {} for d in ("category", "department", "status", "area")
    }
    for doc in docs:
        keys = {
            "category": [doc["category"]],
            "department": doc["departments"],
            "status": [doc["status"]],
            "area": [doc["area"] or None],
        }
        for dimension, values in keys.items():
            for value in values:
                counts = by[dimension].setdefault(value, [0, 0])
                counts[0 if doc["open"] else 1] += 1
    out: dict[str, Any] = {
        "open": sum(d["open"] for d in docs),
        "closed": sum(not d["open"] for d in docs),
        **{f"by_{dim}": {k: tuple(v) for k, v in counts.items()} for dim, counts in by.items()},
    }
    for which in ("response", "resolution"):
        times, within, late, overdue = [], 0, 0, 0
        for doc in docs:
            deadline = doc["deadlines"][which]
            if deadline.get("met"):
                times.append(t(deadline["met"]) - t(doc["created_at"]))
                if t(deadline["met"]) <= t(deadline["due"]):
                    within += 1
                else:
                    late += 1
            elif t(deadline["due"]) < now:
                overdue += 1
        out[which] = {
            "met": len(times),
            "mean_seconds": sum(times) / len(times) if times else None,
            "p90_seconds": p90(times) if times else None,
            "within_deadline": within,
            "late": late,
            "overdue": overdue,
            "share_within_deadline": within / (len(times) + overdue) if times or overdue else None,
        }
    return out


def check(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["open"] == want["open"] and got["closed"] == want["closed"]
    assert got["total"] == want["open"] + want["closed"]
    for dim in ("category", "department", "status", "area"):
        counted = {e["code"]: (e["open"], e["closed"]) for e in got[f"by_{dim}"]}
        assert counted == want[f"by_{dim}"], dim
    for which in ("response", "resolution"):
        g, w = got[which], want[which]
        for key in ("met", "within_deadline", "late", "overdue"):
            assert g[key] == w[key], (which, key)
        for key in ("mean_seconds", "p90_seconds", "share_within_deadline"):
            if w[key] is None:
                assert g[key] is None, (which, key)
            else:
                assert g[key] == pytest.approx(w[key], abs=2e-3), (which, key)


def test_figures_match_a_python_computation(env):
    service, run, clock = env
    craft(service, run, clock)
    docs = documents(service, run)
    want = expected(docs, clock())
    got = run(occurrence_statistics(service, ""))
    check(got, want)
    # the crafted history exercises every figure
    assert want["open"] and want["closed"]
    assert len(want["by_status"]) >= 6 and len(want["by_area"]) == 3
    assert any(len(d["departments"]) > 1 for d in docs)
    for which in ("response", "resolution"):
        assert want[which]["met"] >= 10
        assert want[which]["within_deadline"] and want[which]["overdue"]
    assert want["resolution"]["late"]
    # names come from the configuration; no area is null
    assert {e["name"] for e in got["by_area"]} == {"Baixa", "Boavista", None}
    assert {"code": "new", "name": "New"}.items() <= got["by_status"][0].items()
    assert [e["code"] for e in got["by_status"]][:2] == ["new", "accepted"]
    assert got["computed_at"] == timefmt.display(timefmt.from_epoch(clock()))
    # The next day, more has gone overdue; nothing else changed.
    clock.advance(24 * HOUR)
    check(run(occurrence_statistics(service, "")), expected(docs, clock()))
    # Another tenant sees only its own.
    other = run(occurrence_statistics(service, "other"))
    assert (other["open"], other["closed"], other["response"]["met"]) == (1, 0, 0)


def test_filters_narrow_every_figure(env):
    service, run, clock = env
    craft(service, run, clock, n=30, seed=11)
    docs = documents(service, run)
    now = clock()
    created = sorted(timefmt.to_epoch(d["created_at"]) for d in docs)
    since, until = created[5], created[20]
    cases = [
        (
            {"categories": ["pothole", "graffiti"]},
            lambda d: d["category"] in ("pothole", "graffiti"),
        ),
        ({"groups": ["Waste"]}, lambda d: d["group"] == "Waste"),
        ({"departments": ["water"]}, lambda d: "water" in d["departments"]),
        ({"areas": ["baixa"]}, lambda d: d["area"] == "baixa"),
        (
            {
                "created_since": timefmt.from_epoch(since),
                "created_until": timefmt.from_epoch(until),
            },
            lambda d: since <= timefmt.to_epoch(d["created_at"]) < until,
        ),
        (
            {"departments": ["environment"], "areas": ["boavista", "baixa"]},
            lambda d: "environment" in d["departments"] and d["area"] in ("boavista", "baixa"),
        ),
    ]
    for filters, keep in cases:
        chosen = [d for d in docs if keep(d)]
        assert 0 < len(chosen) < len(docs), filters
        check(run(occurrence_statistics(service, "", **filters)), expected(chosen, now))
    # dates alone name midnight UTC; a window with nothing in it counts nothing
    empty = run(occurrence_statistics(service, "", created_until="2000-01-01"))
    assert empty["total"] == 0 and empty["by_category"] == []
    assert empty["response"] == {
        "met": 0,
        "mean_seconds": None,
        "p90_seconds": None,
        "within_deadline": 0,
        "late": 0,
        "overdue": 0,
        "share_within_deadline": None,
    }
    assert empty["filters"]["created_until"] == "2000-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "filters, field",
    [
        ({"categories": ["no-such"]}, "category"),
        ({"groups": ["Nowhere"]}, "group"),
        ({"departments": ["pothole"]}, "department"),
        ({"areas": ["atlantis"]}, "area"),
        ({"created_since": "yesterday"}, "created_since"),
        ({"created_since": "2027-02-01", "created_until": "2027-01-01"}, "created_until"),
        ({"created_since": "2027-01-01", "created_until": "2027-01-01"}, "created_until"),
    ],
)
def test_bad_filters_are_refused(env, filters, field):
    service, run, _ = env
    with pytest.raises(InvalidFilter) as refused:
        run(occurrence_statistics(service, "", **filters))
    assert refused.value.field == field and refused.value.status == 400


def test_one_occurrence_and_exact_times(env):
    """Hand-computed figures: p90 of one time is that time; of two, 90 % of the way."""
    service, run, clock = env
    start = clock()
    numbers = []
    for _ in range(2):
        made = run(
            service.report(
                "",
                OPERATOR,
                Report(category="pothole", description="x", lat=41.15, lon=-8.61, source="phone"),
            )
        )
        numbers.append(made.occurrence.number)
    clock.advance(600)
    run(service.act("", OPERATOR, numbers[0], "accept"))
    one = run(occurrence_statistics(service, ""))["response"]
    assert (one["met"], one["mean_seconds"], one["p90_seconds"]) == (1, 600.0, 600.0)
    # 8 hours to respond for a normal pothole: the second answered an hour late
    clock.advance(9 * HOUR - 600)
    run(service.act("", OPERATOR, numbers[1], "reject"))
    two = run(occurrence_statistics(service, ""))
    assert two["response"]["met"] == 2
    assert two["response"]["mean_seconds"] == pytest.approx((600 + 9 * HOUR) / 2, abs=1e-3)
    assert two["response"]["p90_seconds"] == pytest.approx(600 + 0.9 * (9 * HOUR - 600), abs=1e-3)
    assert (two["response"]["within_deadline"], two["response"]["late"]) == (1, 1)
    assert two["response"]["share_within_deadline"] == 0.5
    # rejected: its resolution deadline met at once; the accepted one is not resolved yet
    assert two["resolution"]["met"] == 1
    assert two["resolution"]["mean_seconds"] == pytest.approx(clock() - start, abs=1e-3)
    assert two["resolution"]["overdue"] == 0
    clock.advance(5 * 24 * HOUR)  # the accepted one's 5 days to resolve have passed
    later = run(occurrence_statistics(service, ""))["resolution"]
    assert later["overdue"] == 1 and later["share_within_deadline"] == 0.5


def test_the_migration_fills_the_times_as_writes_do(env, kind):
    """The backfill of 0017 (SQLite) / 0015 (PostgreSQL) reads the documents into the same
    columns ``occurrence_columns`` gives a write."""
    service, run, clock = env
    craft(service, run, clock, n=12, seed=3)
    store = service.store
    names = ("responded_at", "resolved_at", "response_deadline", "resolution_deadline")
    migration = (
        Path(__file__).parents[2]
        / "src/cidade/store"
        / (
            "sqlite/migrations/0017_occurrence_times.sql"
            if kind == "sqlite"
            else "postgres/migrations/0015_occurrence_times.sql"
        )
    ).read_text()
    backfill = migration[migration.index("UPDATE occurrences") :]
    cleared = f"UPDATE occurrences SET {', '.join(f'{n} = NULL' for n in names)}"
    select = f"SELECT doc, {', '.join(names)} FROM occurrences WHERE version > 0 ORDER BY number"

    async def rows() -> list[Any]:
        if kind == "sqlite":
            return await store.db.read(lambda c: c.execute(select).fetchall())
        return await store._pool.fetch(select)

    async def execute(sql: str) -> None:
        if kind == "sqlite":
            await store.db.write(lambda c: c.execute(sql).rowcount)
        else:
            await store._pool.execute(sql)

    written = run(rows())
    run(execute(cleared))
    assert all(r[1] is None for r in run(rows()))
    run(execute(backfill))
    filled = run(rows())
    assert len(filled) == len(written) > 10
    for before, after in zip(written, filled, strict=True):
        doc = before[0] if isinstance(before[0], dict) else orjson.loads(before[0])
        columns = occurrence_columns(doc)
        for i, name in enumerate(names, start=1):
            if columns[name] is None:
                assert after[i] is None and before[i] is None
            else:
                assert before[i] == columns[name]
                assert math.isclose(after[i], columns[name], abs_tol=1e-5), name


# -- the API -------------------------------------------------------------------------------------


def test_api_answers_statistics_and_refuses_bad_filters(store_url):
    app = build_app(make_settings(store=store_url))
    with admin_client(app, raise_server_exceptions=False) as client:
        service = app.state.occurrences
        for category, lat in (("pothole", 41.15), ("graffiti", 41.16), ("pothole", 41.17)):
            client.portal.call(
                service.report,
                "",
                OPERATOR,
                Report(category=category, description="x", lat=lat, lon=-8.61, source="phone"),
            )
        r = client.get("/occurrences/statistics")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["total"] == 3 and body["open"] == 3
        assert {e["code"]: e["open"] for e in body["by_category"]} == {"pothole": 2, "graffiti": 1}
        assert "email" not in r.text and "reporter" not in r.text
        r = client.get(
            "/occurrences/statistics",
            params=[("category", "pothole,graffiti"), ("department", "public-space")],
        )
        assert r.status_code == 200 and r.json()["total"] == 3
        assert r.json()["filters"]["category"] == ["pothole", "graffiti"]
        r = client.get("/occurrences/statistics", params=[("category", "graffiti")])
        assert r.json()["total"] == 1
        r = client.get(
            "/occurrences/statistics",
            params=[("group", "Roads and pavements"), ("group", "Public space")],
        )
        assert r.json()["total"] == 3
        r = client.get("/occurrences/statistics", params={"created_since": "2000-01-01T00:00:00Z"})
        assert r.json()["total"] == 3
        for params, field in (
            ({"category": "no-such"}, "category"),
            ({"category": ""}, "category"),
            ({"category": "pothole,"}, "category"),
            ({"created_until": "31/12/2026"}, "created_until"),
            ({"created_since": "2026-02-01", "created_until": "2026-01-01"}, "created_until"),
            ({"department": "nope"}, "department"),
            ({"area": "baixa"}, "area"),  # the default configuration has no areas
            ({"created_since": ["2026-01-01", "2026-02-01"]}, "created_since"),
            ({"status": "new"}, "status"),  # not a filter: refused, not ignored
        ):
            r = client.get("/occurrences/statistics", params=params)
            assert r.status_code == 400, (params, r.text)
            problem = r.json()
            assert problem["type"].endswith("/InvalidFilter"), problem
            assert problem["field"] == field, problem
