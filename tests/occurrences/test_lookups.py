"""The fast paths of reporting (bench/occurrences.py) answer as the slow ones did: the
duplicate lookup through the index of open occurrences (SQLite 0018) or the R*Tree against a
brute-force search over every occurrence, on both stores; text without markup kept as the
sanitizer would keep it; areas found without making a point."""

from __future__ import annotations

import html
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nh3
import pytest

from cidade.ngsild import timefmt
from cidade.occurrences.configuration import Area, default_config
from cidade.occurrences.model import plain_text
from cidade.occurrences.service import OccurrenceService, Report
from cidade.store.occurrences import OccurrenceQuery, distance_m
from tests.conftest import running_store
from tests.occurrences.helpers import OPERATOR, Clock

LAT, LON = 41.1496, -8.6109
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any, Clock]]:
    with running_store(request.param, tmp_path) as (store, loop):
        clock = Clock()
        yield (
            OccurrenceService(store, default_config(), clock=clock),
            loop.run_until_complete,
            clock,
        )


def test_duplicates_are_what_a_search_of_every_occurrence_finds(env):
    service, run, clock = env
    config = default_config()
    rng = random.Random(4)
    codes = ["pothole", "damaged-pavement", "graffiti", "waste-overflow", "illegal-dumping"]
    # 300 occurrences over some 10 days within about 600 m of one point; some closed on the way
    for _ in range(300):
        clock.advance(rng.uniform(0, 0.066) * DAY)
        made = run(
            service.report(
                "",
                OPERATOR,
                Report(
                    category=rng.choice(codes),
                    description="x",
                    lat=LAT + rng.uniform(-0.005, 0.005),
                    lon=LON + rng.uniform(-0.007, 0.007),
                    source="phone",
                ),
            )
        )
        if rng.random() < 0.4:
            run(service.act("", OPERATOR, made.occurrence.number, "reject"))
    every = [o.doc for o in run(service.list("", OccurrenceQuery(limit=10_000))).items]
    assert len(every) == 300
    now = clock()
    checked = 0
    for _ in range(60):
        category = config.categories[rng.choice(codes)]
        lat, lon = LAT + rng.uniform(-0.004, 0.004), LON + rng.uniform(-0.005, 0.005)
        expected = sorted(
            (
                d
                for d in every
                if d["open"]
                and d["group"] == category.group
                and timefmt.to_epoch(d["created_at"]) >= now - category.duplicate_window
                and distance_m(lat, lon, d["location"]["lat"], d["location"]["lon"])
                <= category.duplicate_radius
            ),
            key=lambda d: (d["created_at"], d["number"]),
            reverse=True,
        )[:10]
        found = run(service.duplicates("", category, lat, lon))
        assert [o.number for o in found] == [d["number"] for d in expected]
        checked += len(expected)
    assert checked > 60  # the points were close enough to find some
    # Near a point without the duplicate lookup's shape (closed ones too): the R*Tree path.
    near = run(service.list("", OccurrenceQuery(near=(LAT, LON, 300), limit=10_000)))
    assert sorted(o.number for o in near.items) == sorted(
        d["number"]
        for d in every
        if distance_m(LAT, LON, d["location"]["lat"], d["location"]["lon"]) <= 300
    )


def test_text_without_markup_is_kept_as_the_sanitizer_keeps_it():
    rng = random.Random(11)

    def char() -> str:
        r = rng.random()
        if r < 0.6:
            return chr(rng.randint(1, 0x7F))
        if r < 0.95:
            return chr(rng.randint(0x80, 0xD7FF))
        return chr(rng.randint(0x10000, 0x10FFFF))

    compared = 0
    for _ in range(20_000):
        text = "".join(char() for _ in range(rng.randint(0, 24)))
        slow = html.unescape(nh3.clean(text, tags=set())).strip()
        assert plain_text(text, "t", 10_000) == slow, repr(text)
        compared += 1
    for text in (
        "<b>deep</b> hole &amp; cracks",
        "line\r\nbreak",
        "\ufeffleading mark",
        "nul\x00char",
        "a > b",
        "<script>alert(1)</script>hole",
        "  spaced \u00a0",
    ):
        assert plain_text(text, "t", 100) == html.unescape(nh3.clean(text, tags=set())).strip()
    assert compared == 20_000


def test_areas_cover_their_border():
    ring = [[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.155], [-8.62, 41.155], [-8.62, 41.14]]
    area = Area.parse(
        {"name": "Baixa", "geometry": {"type": "Polygon", "coordinates": [ring]}}, "baixa"
    )
    config = default_config()
    assert config.area_of(41.15, -8.61) == ""  # no areas configured
    config = replace(config, areas={"baixa": area})
    assert config.area_of(41.15, -8.61) == "baixa"
    assert config.area_of(41.14, -8.61) == "baixa"  # on the border
    assert config.area_of(41.16, -8.61) == ""
