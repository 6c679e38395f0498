"""Which simulated devices the demo city has, where they stand, and what they publish.

``plan_devices(city, rng)`` places a mix modelled on Porto's operations room (118 vehicle counters,
154 traffic-light controllers and 40 retractable bollards for the whole city), scaled to the
length of the city's drivable streets, plus fleet vehicles, air-quality and noise stations,
parking spots, waste containers and streetlights. Each plan names the FIWARE Smart Data Model its
entity follows, the measures it publishes (short object ids as an IoT Agent for JSON device sends
them, mapped to the model's attribute names and UN/CEFACT unit codes) and the commands it takes.

``measures(plan, state, at, rng)`` is what the device publishes at simulated time ``at`` (or None
when it is silent), ``answer(plan, state, command, value)`` how it answers a command. Both are
deterministic given the state and the random generator, and do no input or output: the daily
rhythms (rush hours, night), faults (a sensor stuck or silent, a lamp out, a controller in
fault) and outliers (rare spikes) all come from the generator.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from cidade.demo.city import City, Place, Street, bearing, haversine

# -- what a device publishes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasureSpec:
    """One measure: the key the device sends, the attribute it becomes, its IoT Agent type
    ("Number", "Text", "Boolean", "DateTime", "geo:json") and its UN/CEFACT unit code."""

    object_id: str
    name: str
    type: str = "Number"
    unit_code: str | None = None


@dataclass(frozen=True, slots=True)
class Kind:
    """What every device of one kind shares."""

    name: str
    entity_type: str  # the Smart Data Model
    prefix: str  # of device ids
    period: float  # seconds between two messages
    measures: tuple[MeasureSpec, ...]
    commands: tuple[str, ...] = ()
    faults: tuple[str, ...] = ("stuck", "silent")
    spikes: tuple[str, ...] = ()  # object ids an outlier may hit
    #: devices per km of drivable street at scale 1 (Porto's mix, scaled to a lively demo)
    density: float = 1.0
    #: episodes per device and day: a pollution episode at an air station, a noisy night at a
    #: noise station (what the sensor rules of docs/occurrences.md are there for)
    episodes: float = 0.0


M = MeasureSpec

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "vehicle_counter",
            "TrafficFlowObserved",
            "counter",
            60,
            (
                M("i", "intensity"),
                M("o", "occupancy", unit_code="C62"),
                M("s", "averageVehicleSpeed", unit_code="KMH"),
                M("c", "congested", "Boolean"),
                M("f", "dateObservedFrom", "DateTime"),
                M("t", "dateObservedTo", "DateTime"),
                M("d", "dateObserved", "DateTime"),
            ),
            spikes=("i",),
            density=1.15,  # 118 counters for Porto's 154 traffic lights
        ),
        Kind(
            "traffic_light",
            "Device",
            "tlight",
            60,
            (M("st", "deviceState", "Text"), M("p", "value", "Text")),
            commands=("setPlan",),
            faults=("fault", "silent"),
            density=1.5,
        ),
        Kind(
            "bollard",
            "Device",
            "bollard",
            60,
            (M("st", "deviceState", "Text"), M("p", "value", "Text")),
            commands=("raise", "lower"),
            faults=("fault", "silent"),
            density=0.4,  # 40 bollards for Porto's 154 traffic lights
        ),
        Kind(
            "fleet_vehicle",
            "Vehicle",
            "vehicle",
            10,
            (
                M("l", "location", "geo:json"),
                M("s", "speed", unit_code="KMH"),
                M("h", "heading", unit_code="DD"),
                M("ss", "serviceStatus", "Text"),
                M("km", "mileageFromOdometer", unit_code="KMT"),
            ),
            faults=("silent",),
            spikes=("s",),
            density=0.5,
        ),
        Kind(
            "air_quality",
            "AirQualityObserved",
            "air",
            300,
            (
                M("no2", "no2", unit_code="GQ"),
                M("pm10", "pm10", unit_code="GQ"),
                M("pm25", "pm25", unit_code="GQ"),
                M("o3", "o3", unit_code="GQ"),
                M("co", "co", unit_code="GP"),
                M("t", "temperature", unit_code="CEL"),
                M("h", "relativeHumidity", unit_code="C62"),
                M("d", "dateObserved", "DateTime"),
            ),
            spikes=("no2", "pm10", "pm25"),
            density=0.15,
            episodes=0.7,
        ),
        Kind(
            "noise",
            "NoiseLevelObserved",
            "noise",
            60,
            (
                M("laeq", "LAeq", unit_code="2N"),
                M("lamax", "LAmax", unit_code="2N"),
                M("las", "LAS", unit_code="2N"),
                M("f", "dateObservedFrom", "DateTime"),
                M("t", "dateObservedTo", "DateTime"),
                M("d", "dateObserved", "DateTime"),
            ),
            spikes=("lamax", "laeq"),
            density=0.25,
            episodes=0.5,
        ),
        Kind(
            "parking_spot",
            "ParkingSpot",
            "parking",
            60,
            (M("st", "status", "Text"),),
            density=4.0,
        ),
        Kind(
            "waste_container",
            "WasteContainer",
            "waste",
            900,
            (
                M("f", "fillingLevel", unit_code="C62"),
                M("t", "temperature", unit_code="CEL"),
                M("st", "status", "Text"),
                M("e", "dateLastEmptying", "DateTime"),
            ),
            spikes=("t",),
            density=2.5,
        ),
        Kind(
            "streetlight",
            "Streetlight",
            "light",
            300,
            (
                M("ps", "powerState", "Text"),
                M("il", "illuminanceLevel", unit_code="C62"),
                M("pc", "powerConsumption", unit_code="WTT"),
                M("st", "status", "Text"),
            ),
            commands=("switch", "dim"),
            faults=("silent",),
            density=5.0,
        ),
    )
}

#: traffic-light signal plans a controller runs; "auto" (a command value) returns to the timetable
PLANS = ("night", "offPeak", "peakMorning", "peakEvening", "event", "flashing")


@dataclass(frozen=True, slots=True)
class Route:
    """A closed loop along drivable streets: points[i] -> points[i+1] is one OSM segment."""

    points: tuple[tuple[float, float], ...]
    lengths: tuple[float, ...]  # metres, one per segment
    speeds: tuple[float, ...]  # km/h, the street's limit
    streets: tuple[str, ...]  # street names, one per segment

    @property
    def total(self) -> float:
        return sum(self.lengths)

    def locate(self, distance: float) -> tuple[int, float]:
        """(segment index, metres into it) at ``distance`` along the loop."""
        d = distance % self.total if self.total else 0.0
        for i, length in enumerate(self.lengths):
            if d < length:
                return i, d
            d -= length
        return len(self.lengths) - 1, self.lengths[-1]

    def point(self, i: int, into: float) -> tuple[float, float, float]:
        """(lon, lat, heading in degrees) ``into`` metres along segment ``i``."""
        (x1, y1), (x2, y2) = self.points[i], self.points[i + 1]
        f = into / self.lengths[i] if self.lengths[i] else 0.0
        return x1 + (x2 - x1) * f, y1 + (y2 - y1) * f, bearing(x1, y1, x2, y2)


@dataclass(frozen=True)
class DevicePlan:
    """One simulated device: what it is, where it stands, what it says and obeys."""

    kind: str
    device_id: str
    entity_type: str
    entity_id: str
    lon: float
    lat: float
    measures: tuple[MeasureSpec, ...]
    commands: tuple[str, ...]
    period: float  # seconds between two messages
    timezone: str  # the city's, for the daily rhythms
    #: attributes that do not change (the model's names): name, category, refParkingSite, ...
    static: dict[str, Any] = field(default_factory=dict, hash=False)
    #: the simulation's knobs for this device (not published): capacity, fillRate, shift, ...
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    route: Route | None = None  # fleet vehicles only
    fault_rate: float = 0.0001  # chance per message period that a fault starts
    outlier_rate: float = 0.002  # chance per message of a spike
    episode_rate: float = 0.0  # episodes per day (Kind.episodes)

    @property
    def attributes(self) -> dict[str, str]:
        """object id -> attribute name."""
        return {m.object_id: m.name for m in self.measures}


@dataclass
class DeviceState:
    """What a device remembers between two messages."""

    last_at: datetime | None = None
    fault: str | None = None  # "stuck", "silent" or "fault" while one lasts
    fault_until: datetime | None = None
    last_payload: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the kind's own memory


# -- placing the devices --------------------------------------------------------------------


def counts(city: City, scale: float = 1.0) -> dict[str, int]:
    """How many devices of each kind the city gets: the kind's density per km of drivable street."""
    km = city.street_length / 1000
    return {k.name: max(1, round(k.density * km * scale)) for k in KINDS.values()}


def plan_devices(city: City, rng: random.Random, scale: float = 1.0) -> list[DevicePlan]:
    """Place the devices of the demo city, deterministically from ``rng``'s state."""
    wanted = counts(city, scale)
    plans: list[DevicePlan] = []

    def add(
        kind: str,
        lon: float,
        lat: float,
        static: dict[str, Any],
        params: dict[str, Any] | None = None,
        route: Route | None = None,
    ):
        spec = KINDS[kind]
        n = sum(1 for p in plans if p.kind == kind) + 1
        device_id = f"{spec.prefix}-{n:03d}"
        plans.append(
            DevicePlan(
                kind=kind,
                device_id=device_id,
                entity_type=spec.entity_type,
                entity_id=f"urn:ngsi-ld:{spec.entity_type}:{device_id}",
                lon=round(lon, 7),
                lat=round(lat, 7),
                measures=spec.measures,
                commands=spec.commands,
                period=spec.period,
                timezone=city.timezone,
                static=static,
                params=params or {},
                route=route,
                episode_rate=spec.episodes,
            )
        )

    junctions = _signalised_junctions(city, rng, wanted["traffic_light"])
    for node in junctions:
        names = sorted({s.name for s in city.streets_at(node) if s.name})
        add(
            "traffic_light",
            *city.nodes[node],
            {
                "name": " / ".join(names[:2]) or f"junction {node}",
                "deviceCategory": ["actuator"],
                "controlledProperty": ["trafficFlow"],
            },
            {"osmNode": node},
        )

    for street, forward in _counted_streets(city, rng, wanted["vehicle_counter"], junctions):
        lon, lat = city.point_on(street, 0.5)
        add(
            "vehicle_counter",
            lon,
            lat,
            {
                "name": street.name or street.highway,
                "laneId": 1,
                "laneDirection": "forward" if forward else "backward",
                "vehicleType": "car",
            },
            {
                "capacity": 900 if street.major else 400,  # vehicles per hour at saturation
                "freeSpeed": street.speed,
            },
        )

    for place in _bollard_sites(city, rng, wanted["bollard"]):
        add(
            "bollard",
            place.lon,
            place.lat,
            {
                "name": place.name or "pedestrian zone",
                "deviceCategory": ["actuator"],
                "controlledProperty": ["trafficFlow"],
            },
            {"deliveryWindow": [6, 11]},  # lowered for deliveries, local hours
        )

    fleet = (
        ("lorry", ["garbageCollection"]),
        ("van", ["maintenance"]),
        ("car", ["auxiliaryServices"]),
    )
    for i in range(wanted["fleet_vehicle"]):
        route = _loop(city, rng)
        vehicle_type, services = fleet[i % len(fleet)]
        add(
            "fleet_vehicle",
            *route.points[0],
            {
                "name": f"{vehicle_type} {i + 1}",
                "vehicleType": vehicle_type,
                "category": ["municipalServices", "tracked"],
                "serviceProvided": services,
                "fleetVehicleId": f"F{i + 1:03d}",
            },
            {"shift": [6, 22] if i % 4 else [0, 24]},  # local hours on the road
            route,
        )

    majors = [n for n in city.nodes if any(s.major for s in city.streets_at(n))] or list(city.nodes)
    stations = _farthest(city, majors, wanted["air_quality"] + wanted["noise"], rng)
    for node in stations[: wanted["air_quality"]]:
        add(
            "air_quality",
            *city.nodes[node],
            {"name": _near(city, node), "typeofLocation": "outdoor"},
        )
    for node in stations[wanted["air_quality"] :]:
        add("noise", *city.nodes[node], {"name": _near(city, node), "sonometerClass": "1"})

    for lon, lat, static in _parking_spots(city, rng, wanted["parking_spot"]):
        add("parking_spot", lon, lat, static)

    kinds = ["other"] * 5 + ["organic"] * 3 + ["paper", "plastic", "glass"]
    for lon, lat, name in _along(city, city.waste_points, rng, wanted["waste_container"], 25, 2.5):
        waste = rng.choice(kinds)
        add(
            "waste_container",
            lon,
            lat,
            {
                "name": name,
                "storedWasteKind": waste,
                "category": [rng.choice(["ground", "ground", "underground"])],
                "binCapacity": rng.choice([800, 1100, 2500]),
            },
            {
                # per busy hour: about one container in eight is 90 % full at a time
                "fillRate": round(rng.uniform(0.01, 0.03), 4),
                # organic waste goes daily, the rest twice a week; the round starts at 6:00
                "collectionDays": list(range(7))
                if waste == "organic"
                else rng.choice([[0, 3], [1, 4]]),
                "collectionMinute": 360 + rng.randrange(0, 180),
            },
        )

    for lon, lat, name in _along(city, city.street_lamps, rng, wanted["streetlight"], 20, 6.0):
        add(
            "streetlight",
            lon,
            lat,
            {
                "name": name,
                "powerRating": rng.choice([40, 60, 90, 120]),
                "controllingMethod": "individual",
                "locationCategory": "road",
            },
        )
    return plans


def _near(city: City, node: int) -> str:
    names = sorted({s.name for s in city.streets_at(node) if s.name})
    return names[0] if names else city.name


def _spread(city: City, points: Sequence[tuple[float, float]], count: int, gap: float) -> list[int]:
    """Indices of up to ``count`` points, in the given order, at least ``gap`` metres apart
    (the gap halves until enough are found or it is under a metre)."""
    chosen: list[int] = []
    while gap >= 1 and len(chosen) < count:
        for i, (lon, lat) in enumerate(points):
            if len(chosen) >= count:
                break
            if i in chosen:
                continue
            if all(haversine(lon, lat, *points[j]) >= gap for j in chosen):
                chosen.append(i)
        gap /= 2
    return chosen


def _signalised_junctions(city: City, rng: random.Random, count: int) -> list[int]:
    """Junctions with traffic lights: the intersections OSM's signals stand at, busiest first,
    then the other intersections of major streets."""
    weight: dict[int, int] = {}
    candidates = city.intersections or list(city.nodes)
    for p in city.signals:
        node = city.nearest_node(p.lon, p.lat, candidates)
        if haversine(p.lon, p.lat, *city.nodes[node]) <= 40:
            weight[node] = weight.get(node, 0) + 1
    rest = [n for n in candidates if n not in weight]
    rng.shuffle(rest)
    rest.sort(key=lambda n: -sum(s.major for s in city.streets_at(n)))
    signalled = sorted(weight, key=lambda n: (-weight[n], n))
    order = signalled + rest
    chosen = _spread(city, [city.nodes[n] for n in order], count, 60)
    return [order[i] for i in chosen]


def _counted_streets(
    city: City, rng: random.Random, count: int, junctions: list[int]
) -> list[tuple[Street, bool]]:
    """Segments of major streets leading into a junction with lights (a counter per approach),
    then other long segments of major streets."""
    at_junction = set(junctions)
    approaches, others = [], []
    for s in city.streets:
        if s.length < 15:
            continue
        into = (s.forward and s.v in at_junction) or (s.backward and s.u in at_junction)
        (approaches if into and s.major else others).append(s)
    rng.shuffle(approaches)
    rng.shuffle(others)
    others.sort(key=lambda s: (not s.major, -s.length // 50))
    order = approaches + others
    chosen = _spread(city, [city.point_on(s, 0.5) for s in order], count, 50)
    return [
        (order[i], order[i].forward and (order[i].v in at_junction or not order[i].backward))
        for i in chosen
    ]


def _bollard_sites(city: City, rng: random.Random, count: int) -> list[Place]:
    """Entries of pedestrian zones first, then OSM bollards standing on a street."""
    entries = list(city.pedestrian_entries)
    rng.shuffle(entries)
    on_street = [p for p in city.bollards if city.distance_to_street(p.lon, p.lat) <= 15]
    rng.shuffle(on_street)
    order = entries + on_street
    if len(order) < count:  # an extract that maps neither: ends of minor streets
        ends = [n for n in city.nodes if city.degree(n) == 1] or list(city.nodes)
        rng.shuffle(ends)
        order += [Place(*city.nodes[n], "street_end", _near(city, n), n) for n in ends]
    chosen = _spread(city, [(p.lon, p.lat) for p in order], count, 30)
    return [order[i] for i in chosen]


def _farthest(city: City, nodes: list[int], count: int, rng: random.Random) -> list[int]:
    """Farthest-point sampling: stations spread over the city."""
    if not nodes:
        return []
    xy = city.project([city.nodes[n][0] for n in nodes], [city.nodes[n][1] for n in nodes])
    first = rng.randrange(len(nodes))
    chosen = [first]
    best = ((xy - xy[first]) ** 2).sum(1)
    while len(chosen) < min(count, len(nodes)):
        i = int(best.argmax())
        chosen.append(i)
        best = np.minimum(best, ((xy - xy[i]) ** 2).sum(1))
    while len(chosen) < count:  # fewer nodes than stations
        chosen.append(rng.randrange(len(nodes)))
    return [nodes[i] for i in chosen]


def _along(
    city: City, mapped: list[Place], rng: random.Random, count: int, gap: float, offset: float
) -> list[tuple[float, float, str]]:
    """Points for street furniture: where OSM maps it (when within 30 m of a street), then
    along the streets, ``offset`` metres to the side."""
    near = [p for p in mapped if city.distance_to_street(p.lon, p.lat) <= 30]
    rng.shuffle(near)
    points = [(p.lon, p.lat, p.name or _near(city, city.nearest_node(p.lon, p.lat))) for p in near]
    streets = [s for s in city.streets if s.length >= 20]
    rng.shuffle(streets)
    for s in streets:
        points.append((*city.point_on(s, rng.uniform(0.2, 0.8), offset), s.name or city.name))
    chosen = _spread(city, [(lon, lat) for lon, lat, _ in points], count, gap)
    return [points[i] for i in chosen]


def _parking_spots(
    city: City, rng: random.Random, count: int
) -> list[tuple[float, float, dict[str, Any]]]:
    """On-street spots in rows of 2-6 along residential streets (three quarters) and spots at
    the city's car parks."""
    spots: list[tuple[float, float, dict[str, Any]]] = []
    parks = [p for p in city.parkings if city.distance_to_street(p.lon, p.lat) <= 60]
    rng.shuffle(parks)
    off = min(count // 4, 4 * len(parks))
    for k in range(off):
        park = parks[k % len(parks)]
        lon, lat = park.lon + rng.uniform(-8e-5, 8e-5), park.lat + rng.uniform(-4e-5, 4e-5)
        site = f"urn:ngsi-ld:OffStreetParking:osm-{park.osm_id}"
        spots.append((lon, lat, _spot(park.name or "car park", "offStreet", site)))
    kerbs = [s for s in city.streets if not s.major and s.length >= 20] or [
        s for s in city.streets if s.length >= 20
    ]
    rng.shuffle(kerbs)
    for s in kerbs:
        if len(spots) >= count:
            break
        row = min(rng.randint(2, 6), int(s.length // 6) - 1, count - len(spots))
        start = rng.uniform(0.1, max(0.1, 1 - (row * 6) / s.length - 0.1))
        site = f"urn:ngsi-ld:OnStreetParking:osm-{s.u}-{s.v}"
        for j in range(max(row, 1)):
            lon, lat = city.point_on(s, min(0.95, start + j * 6 / s.length), 3.5)
            spots.append((lon, lat, _spot(s.name or city.name, "onStreet", site)))
    return spots[:count]


def _spot(name: str, category: str, site: str) -> dict[str, Any]:
    return {
        "name": name,
        "category": [category],
        "refParkingSite": site,
        "length": 5.0,
        "width": 2.5,
    }


def _loop(city: City, rng: random.Random) -> Route:
    """A round from a depot through 3-6 random places of the city and back, by shortest paths."""
    nodes = sorted(city.out)
    depot = rng.choice(nodes)
    stops = [depot, *rng.sample(nodes, rng.randint(3, 6)), depot]
    path = [depot]
    for a, b in itertools.pairwise(stops):
        leg = city.route(a, b)
        path.extend(leg[1:])
    if len(path) < 2:  # a one-node city: stand still
        path = [depot, depot]
    points, lengths, speeds, names = [city.nodes[path[0]]], [], [], []
    for a, b in itertools.pairwise(path):
        s = city.street_from(a, b) if a != b else None
        points.append(city.nodes[b])
        lengths.append(s.length if s else 0.0)
        speeds.append(s.speed if s else 0.0)
        names.append(s.name if s else "")
    return Route(tuple(points), tuple(lengths), tuple(speeds), tuple(names))


# -- the daily rhythms ----------------------------------------------------------------------


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_time(plan: DevicePlan, at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("simulated times must be timezone-aware")
    return at.astimezone(_zone(plan.timezone))


def _hours(local: datetime) -> float:
    return local.hour + local.minute / 60 + local.second / 3600


def _bump(h: float, centre: float, width: float) -> float:
    return math.exp(-(((h - centre) / width) ** 2) / 2)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def traffic_level(local: datetime) -> float:
    """How busy the streets are, 0 (deserted) to 1 (saturated): quiet nights, a day plateau,
    rush hours at 8-9 h and 17-19 h on working days."""
    h = _hours(local)
    day = 0.42 * _sigmoid((h - 6.5) / 0.6) * _sigmoid((21.5 - h) / 0.9)
    if local.weekday() >= 5:
        return min(1.0, 0.05 + 0.8 * day + 0.1 * _bump(h, 13, 2.5))
    rush = 0.5 * _bump(h, 8.4, 0.7) + 0.45 * _bump(h, 18.0, 1.0)
    return min(1.0, 0.05 + day + rush)


def parking_demand(local: datetime) -> float:
    """Chance that an on-street spot is taken: residents at night, workers and shoppers by day."""
    h = _hours(local)
    busy = 0.85 if local.weekday() < 5 else 0.7
    return (
        0.4
        + (busy - 0.4) * _sigmoid((h - 7.5) / 0.7) * _sigmoid((18.5 - h) / 0.8)
        + 0.15 * _bump(h, 20.5, 1.5)
    )


def solar_elevation(at: datetime, lon: float, lat: float) -> float:
    """Degrees of the sun above the horizon (NOAA's approximation, a few tenths of a degree)."""
    t = at.astimezone(UTC)
    hour = t.hour + t.minute / 60 + t.second / 3600
    g = 2 * math.pi / 365 * (t.timetuple().tm_yday - 1 + (hour - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    ha = math.radians((hour * 60 + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def air_temperature(local: datetime) -> float:
    """°C: a seasonal mean (coldest late January) and a daily swing (warmest at 15 h)."""
    doy = local.timetuple().tm_yday
    mean = 6 - 11 * math.cos(2 * math.pi * (doy - 25) / 365)
    return mean + 4 * math.cos(2 * math.pi * (_hours(local) - 15) / 24)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


# -- what each kind publishes ---------------------------------------------------------------

Behaviour = Callable[[DevicePlan, DeviceState, datetime, datetime, float, random.Random], dict]


def _counter(plan, state, at, local, dt, rng) -> dict:
    level = min(1.0, traffic_level(local) * rng.uniform(0.9, 1.1))
    cap = plan.params.get("capacity", 600)
    intensity = _poisson(rng, cap * level * dt / 3600)
    occupancy = min(0.95, max(0.0, 0.5 * level**1.8 + rng.gauss(0, 0.01)))
    free = plan.params.get("freeSpeed", 40.0)
    speed = max(4.0, free * (1 - 0.7 * level**2) + rng.gauss(0, 2))
    start = at - timedelta(seconds=dt)
    return {
        "i": intensity,
        "o": round(occupancy, 3),
        "s": round(speed, 1),
        "c": occupancy > 0.3,
        "f": _iso(start),
        "t": _iso(at),
        "d": _iso(at),
    }


def _episode(
    plan: DevicePlan,
    state: DeviceState,
    at: datetime,
    dt: float,
    rng: random.Random,
    hours: tuple[float, float],
    window: float = 86400.0,
    may_start: bool = True,
) -> float | None:
    """How strong (0 to 1) the device's episode is at ``at``, None when there is none: one
    starts now and then (``plan.episode_rate`` per day, all of it within ``window`` seconds of
    the day while ``may_start``) and lasts ``hours``. Kept in ``state.data["episode"]`` as
    (until, strength)."""
    episode = state.data.get("episode")
    if episode is not None and at >= episode[0]:
        episode = state.data["episode"] = None
    if (
        episode is None
        and may_start
        and plan.episode_rate > 0
        and rng.random() < plan.episode_rate * dt / window
    ):
        episode = (at + timedelta(hours=rng.uniform(*hours)), rng.random())
        state.data["episode"] = episode
    return episode[1] if episode is not None else None


def _air(plan, state, at, local, dt, rng) -> dict:
    level = traffic_level(local - timedelta(minutes=30))  # the air lags the traffic
    site = state.data.setdefault("site", rng.uniform(0.8, 1.25))
    sun = max(0.0, math.sin(math.radians(solar_elevation(at, plan.lon, plan.lat))))
    no2 = max(1.0, site * (8 + 55 * level) + rng.gauss(0, 3))
    pm10 = max(1.0, site * (11 + 20 * level) + rng.gauss(0, 2))
    # a pollution episode (a fire nearby, a street jammed by roadworks, an inversion): NO2 above
    # the hourly limit of 200 µg/m³ for one and a half to four hours
    episode = _episode(plan, state, at, dt, rng, (1.5, 4.0))
    if episode is not None:
        no2 += 190 + 150 * episode
        pm10 += 15 + 30 * episode
    temp = air_temperature(local) + rng.gauss(0, 0.3)
    return {
        "no2": round(no2, 1),
        "pm10": round(pm10, 1),
        "pm25": round(max(0.5, 0.55 * pm10 + rng.gauss(0, 1)), 1),
        "o3": round(max(2.0, 35 + 50 * sun - 0.3 * no2 + rng.gauss(0, 3)), 1),
        "co": round(max(0.05, 0.2 + 0.7 * level + rng.gauss(0, 0.05)), 2),
        "t": round(temp, 1),
        "h": round(
            min(
                1.0,
                max(
                    0.15,
                    0.75
                    - 0.02 * (temp - air_temperature(local.replace(hour=6)))
                    + rng.gauss(0, 0.02),
                ),
            ),
            2,
        ),
        "d": _iso(at),
    }


def _noise(plan, state, at, local, dt, rng) -> dict:
    laeq = 47 + 24 * traffic_level(local) + rng.gauss(0, 1.5)
    # a noisy night (a party, a bar's terrace, night works): 10-20 dB(A) more for 45 minutes to
    # three hours, starting between 23:00 and 05:00
    h = _hours(local)
    episode = _episode(plan, state, at, dt, rng, (0.75, 3.0), 6 * 3600.0, h >= 23 or h < 5)
    if episode is not None:
        laeq += 10 + 10 * episode
    return {
        "laeq": round(laeq, 1),
        "lamax": round(laeq + 8 + rng.expovariate(1 / 4), 1),
        "las": round(laeq + rng.gauss(0, 2), 1),
        "f": _iso(at - timedelta(seconds=dt)),
        "t": _iso(at),
        "d": _iso(at),
    }


def _parking(plan, state, at, local, dt, rng) -> dict:
    p = min(
        0.97,
        parking_demand(local) * (1.0 if "onStreet" in plan.static.get("category", ()) else 0.9),
    )
    taken = state.data.get("taken")
    if taken is None:
        taken = rng.random() < p
    else:
        stay = 2 * 3600.0  # mean stay, seconds
        leave = 1 - math.exp(-dt / stay)
        arrive = 1 - math.exp(-dt * p / (1 - p) / stay)
        taken = rng.random() >= leave if taken else rng.random() < arrive
    state.data["taken"] = taken
    return {"st": "occupied" if taken else "free"}


def _collections(plan: DevicePlan, local: datetime) -> datetime:
    """The last collection round (local time) at or before ``local``."""
    days, minute = (
        plan.params.get("collectionDays", [0, 3]),
        plan.params.get("collectionMinute", 420),
    )
    for back in range(8):
        day = (local - timedelta(days=back)).replace(hour=0, minute=0, second=0, microsecond=0)
        slot = day + timedelta(minutes=minute)
        if day.weekday() in days and slot <= local:
            return slot
    return local - timedelta(days=7)


def _waste_activity(h: float) -> float:
    """How much waste goes in per hour, relative to the busiest hours."""
    return 0.15 + 0.85 * _sigmoid((h - 7.5) / 0.8) * _sigmoid((21.5 - h) / 0.8)


def _waste(plan, state, at, local, dt, rng) -> dict:
    rate = plan.params.get("fillRate", 0.05)
    slot = _collections(plan, local)
    d = state.data
    if "fill" not in d:  # a container found as it is: filled since its last collection
        hours = (local - slot).total_seconds() / 3600
        d["fill"] = min(1.0, 0.02 + rate * 0.7 * hours * rng.uniform(0.8, 1.2))
        d["emptied"] = slot
    elif d["emptied"] < slot:  # the round came by
        d["fill"] = rng.uniform(0.0, 0.03)
        d["emptied"] = slot + timedelta(minutes=rng.uniform(0, 5))
    else:
        d["fill"] = min(
            1.0,
            d["fill"] + rate * _waste_activity(_hours(local)) * dt / 3600 * rng.uniform(0.5, 1.5),
        )
    lid = rng.random() < 0.003
    return {
        "f": round(d["fill"], 3),
        "t": round(air_temperature(local) + 2 + rng.gauss(0, 0.5), 1),
        "st": "lidOpen" if lid else "ok",
        "e": _iso(d["emptied"]),
    }


def _streetlight(plan, state, at, local, dt, rng) -> dict:
    d = state.data
    # a lamp out now and then, repaired within one to three days
    if d.get("defect") and at >= d["repaired"]:
        d["defect"] = None
    if not d.get("defect") and rng.random() < 0.00005 * dt / plan.period:
        d["defect"] = rng.choice(["defectiveLamp", "defectiveLamp", "brokenLantern", "columnIssue"])
        d["repaired"] = at + timedelta(hours=rng.uniform(24, 72))
    override = d.get("override")  # (since, level): a switch or dim command, for six hours
    if override and override[0] is None:
        override = d["override"] = (at, override[1])
    if override and at - override[0] > timedelta(hours=6):
        override = d["override"] = None
    if override:
        level = override[1]
    elif solar_elevation(at, plan.lon, plan.lat) < -1.5:
        h = _hours(local)
        level = 0.5 if 0.5 <= h < 5 else 1.0  # dimmed in the small hours
    else:
        level = 0.0
    if d.get("defect"):
        level = 0.0
    state_name = "off" if level == 0 else "on" if level >= 0.75 else "low"
    rating = plan.static.get("powerRating", 60)
    power = rating * level * rng.uniform(0.97, 1.03) if level else 0.4
    return {
        "ps": state_name,
        "il": round(level, 2),
        "pc": round(power, 1),
        "st": d.get("defect") or "ok",
    }


def scheduled_plan(local: datetime) -> str:
    h = _hours(local)
    if h < 5:
        return "night"
    if local.weekday() < 5 and 7 <= h < 9.5:
        return "peakMorning"
    if local.weekday() < 5 and 16.5 <= h < 19.5:
        return "peakEvening"
    return "offPeak"


def _traffic_light(plan, state, at, local, dt, rng) -> dict:
    d = state.data
    scheduled = scheduled_plan(local)
    if d.get("override") and d["override"][1] is None:
        d["override"] = (d["override"][0], scheduled)
    if d.get("override") and d["override"][1] != scheduled:
        d["override"] = None  # a plan set by hand holds until the timetable changes plan
    running = d["override"][0] if d.get("override") else scheduled
    if state.fault == "fault":
        return {"st": "fault", "p": "flashing"}
    d["running"] = running
    return {"st": "ok", "p": running}


def scheduled_position(plan: DevicePlan, local: datetime) -> str:
    start, end = plan.params.get("deliveryWindow", [6, 11])
    return "lowered" if start <= _hours(local) < end else "raised"


def _bollard(plan, state, at, local, dt, rng) -> dict:
    d = state.data
    scheduled = scheduled_position(plan, local)
    if d.get("override") and d["override"][1] is None:
        d["override"] = (d["override"][0], scheduled)
    if d.get("override") and d["override"][1] != scheduled:
        d["override"] = None
    d["position"] = d["override"][0] if d.get("override") else scheduled
    return {"st": "fault" if state.fault == "fault" else "ok", "p": d["position"]}


def _fleet(plan, state, at, local, dt, rng) -> dict:
    route = plan.route
    d = state.data
    start, end = plan.params.get("shift", [0, 24])
    on_duty = start <= _hours(local) < end
    if "seg" not in d:
        seg, into = route.locate(rng.uniform(0, route.total)) if on_duty else (0, 0.0)
        d.update(seg=seg, into=into, km=rng.uniform(5_000, 80_000), dwell=0.0)
    speed_kmh = 0.0
    if not on_duty:
        d.update(seg=0, into=0.0, dwell=0.0)  # parked at the depot, starts its round there
    elif route.total > 0:
        remaining = dt
        factor = (1 - 0.5 * traffic_level(local)) * rng.uniform(0.85, 1.05)
        while remaining > 1e-9:
            if d["dwell"] > 0:
                used = min(d["dwell"], remaining)
                d["dwell"] -= used
                remaining -= used
                continue
            i = d["seg"]
            v = max(1.0, route.speeds[i] * factor / 3.6)  # m/s
            left = route.lengths[i] - d["into"]
            speed_kmh = v * 3.6
            if left > v * remaining:
                d["into"] += v * remaining
                d["km"] += v * remaining / 1000
                remaining = 0.0
            else:  # on to the next segment
                d["km"] += left / 1000
                remaining -= left / v
                d["seg"], d["into"] = (i + 1) % len(route.lengths), 0.0
                if rng.random() < 1 - math.exp(-route.lengths[i] / 400):
                    d["dwell"] = rng.uniform(10, 60)  # a red light, a stop to work: every ~400 m
        if d["dwell"] > 0:
            speed_kmh = 0.0
    lon, lat, heading = route.point(d["seg"], d["into"])
    # the schema's enum has no room for the "onRoute,garbageCollection" modifiers its text shows
    status = "onRoute" if on_duty else "parked"
    return {
        "l": {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]},
        "s": round(speed_kmh, 1),
        "h": round(heading, 1) if speed_kmh > 0 else -1,
        "ss": status,
        "km": round(d["km"], 3),
    }


BEHAVIOURS: dict[str, Behaviour] = {
    "vehicle_counter": _counter,
    "traffic_light": _traffic_light,
    "bollard": _bollard,
    "fleet_vehicle": _fleet,
    "air_quality": _air,
    "noise": _noise,
    "parking_spot": _parking,
    "waste_container": _waste,
    "streetlight": _streetlight,
}


def measures(
    plan: DevicePlan, state: DeviceState, at: datetime, rng: random.Random
) -> dict[str, Any] | None:
    """The JSON object the device publishes at ``at`` (short object ids and TimeInstant), or
    None when it is silent. Updates ``state``; call it with increasing times."""
    local = local_time(plan, at)
    dt = plan.period if state.last_at is None else max(0.0, (at - state.last_at).total_seconds())
    spec = KINDS[plan.kind]
    if state.fault and state.fault_until and at >= state.fault_until:
        state.fault = state.fault_until = None
    if state.fault is None and rng.random() < plan.fault_rate * max(dt, 1.0) / plan.period:
        state.fault = rng.choice(spec.faults)
        state.fault_until = at + timedelta(minutes=rng.uniform(10, 360))
    payload = BEHAVIOURS[plan.kind](plan, state, at, local, dt, rng)  # the world moves on
    state.last_at = at
    if state.fault == "silent":
        return None
    if state.fault == "stuck" and state.last_payload is not None:
        payload = dict(state.last_payload)
    else:
        state.last_payload = dict(payload)
        if spec.spikes and rng.random() < plan.outlier_rate:
            key = rng.choice(spec.spikes)
            payload[key] = round(payload[key] * rng.uniform(3, 8) + 1, 1)
    payload["TimeInstant"] = _iso(at)
    return payload


def answer(
    plan: DevicePlan,
    state: DeviceState,
    command: str,
    value: Any,
    rng: random.Random | None = None,
) -> tuple[str, Any]:
    """How the device answers a command: ("OK", result) or ("ERROR", why), as an IoT Agent
    command's status and info. A bollard sometimes fails to move (an obstacle, the motor)."""
    rng = rng or random.Random(f"{plan.device_id}:{state.last_at}:{command}")
    if command not in plan.commands:
        return "ERROR", f"unknown command {command!r}"
    if state.fault == "silent":
        return "ERROR", "device not responding"
    d = state.data
    if plan.kind == "bollard":
        if state.fault == "fault":
            return "ERROR", "bollard in fault"
        if rng.random() < 0.03:
            return "ERROR", rng.choice(["obstacle detected, movement aborted", "motor overcurrent"])
        position = "raised" if command == "raise" else "lowered"
        d["override"] = (position, None)  # holds until the timetable moves the bollard
        d["position"] = position
        return "OK", position
    if plan.kind == "traffic_light":
        if state.fault == "fault":
            return "ERROR", "controller in fault, flashing amber"
        if value == "auto":
            d["override"] = None
            return "OK", "auto"
        if value not in PLANS:
            return "ERROR", f"unknown plan {value!r}; one of {', '.join((*PLANS, 'auto'))}"
        d["override"] = (value, None)  # holds until the timetable changes plan
        return "OK", value
    if plan.kind == "streetlight":
        if command == "switch":
            levels = {"on": 1.0, "off": 0.0}
            if value == "auto":
                d["override"] = None
                return "OK", "auto"
            if value not in levels:
                return "ERROR", f"switch takes on, off or auto, not {value!r}"
            d["override"] = (None, levels[value])  # holds for six hours from the next message
            return "OK", value
        try:
            level = float(value)
        except (TypeError, ValueError):
            return "ERROR", f"dim takes a level between 0 and 1, not {value!r}"
        if not 0 <= level <= 1:
            return "ERROR", f"dim takes a level between 0 and 1, not {value!r}"
        d["override"] = (None, level)
        return "OK", level
    return "ERROR", f"unknown command {command!r}"  # pragma: no cover - every kind is above
