"""Geo-queries (ETSI GS CIM 009 §4.10) and GeoProperty values (§4.7.1): parsing, validation,
exact relation evaluation, geodesic distances and the conservative R*Tree prefilter box."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import orjson
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pyproj import Geod

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.geo import (
    CORE_LOCATION,
    GeoQuery,
    distance_m,
    geometry_bbox,
    parse_geoquery,
    validate_geojson_geometry,
)

GEOD = Geod(ellps="WGS84")
EX = "https://example.org/"


def expand(term: str) -> str:
    return CORE_LOCATION if term == "location" else EX + term


def gq(georel: str, geometry: str, coordinates, geoproperty: str | None = None) -> GeoQuery:
    if not isinstance(coordinates, str):
        coordinates = orjson.dumps(coordinates).decode()
    query = parse_geoquery(georel, geometry, coordinates, geoproperty, expand)
    assert query is not None
    return query


def pt(x: float, y: float) -> dict:
    return {"type": "Point", "coordinates": [x, y]}


def geo(kind: str, coordinates) -> dict:
    return {"type": kind, "coordinates": coordinates}


def haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    r = 6_371_008.8  # mean Earth radius (IUGG)
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def inside(box: tuple[float, float, float, float], lon: float, lat: float) -> bool:
    return box[0] <= lon <= box[2] and box[1] <= lat <= box[3]


def boxes_meet(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


# A 10x10 square with a 2x2 hole in the middle, and other shapes around it.
SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
HOLE = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
HOLED = [SQUARE, HOLE]
SMALL = [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]
OVER_HOLE = [[[3, 3], [7, 3], [7, 7], [3, 7], [3, 3]]]
IN_HOLE = [[[4.5, 4.5], [5.5, 4.5], [5.5, 5.5], [4.5, 5.5], [4.5, 4.5]]]
HALF_OUT = [[[8, 8], [12, 8], [12, 12], [8, 12], [8, 8]]]
FAR = [[[20, 20], [21, 20], [21, 21], [20, 21], [20, 20]]]

# Porto: Torre dos Clérigos and Casa da Música.
CLERIGOS = (-8.6146, 41.1456)
CASA_MUSICA = (-8.6305, 41.1589)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def test_no_geo_parameters_is_no_geoquery():
    assert parse_geoquery(None, None, None, None, expand) is None
    # A lone geoproperty selects nothing: there is no geo-query to apply it to.
    assert parse_geoquery(None, None, None, "observationSpace", expand) is None


def test_parse_url_form():
    q = gq("near;maxDistance==2000", "Point", "[8,40]", "observationSpace")
    assert (q.georel, q.max_distance, q.min_distance) == ("near", 2000.0, None)
    assert q.georel_text == "near;maxDistance==2000"
    assert q.geometry == "Point" and q.coordinates == (8, 40)
    assert q.geoproperty == EX + "observationSpace"
    assert q.point == (8.0, 40.0)


def test_coordinates_with_spaces_encoded_as_plus_signs():
    """A client that encodes a space in the query string as "+" (Python's requests, HTML
    forms) sends "[8,+40]" for "[8, 40]": no JSON number starts with "+"."""
    q = gq("within", "Polygon", "[[[0,0],[1,+0],+[1,1],[0,0]]]", "location")
    assert q.coordinates == (((0, 0), (1, 0), (1, 1), (0, 0)),)
    with pytest.raises(BadRequestData):
        gq("near;maxDistance==1", "Point", "[8,+4+0]", "location")


def test_parse_body_form_with_parsed_coordinates():
    coords = [[[100.0, 0.0], [101.0, 0.0], [101.0, 1.0], [100.0, 1.0], [100.0, 0.0]]]
    q = parse_geoquery("within", "Polygon", coords, "location", expand)
    assert q is not None and q.georel == "within" and q.point is None
    assert q.geoproperty == CORE_LOCATION


def test_geoproperty_defaults_to_core_location():
    q = gq("near;minDistance==5.5", "Point", [8, 40])
    assert q.geoproperty == CORE_LOCATION
    assert (q.max_distance, q.min_distance) == (None, 5.5)


@pytest.mark.parametrize("number", ["1", "0.5", "2000.0", "1e3", "1E+3", "2.5e-1", "10"])
def test_positive_numbers(number):
    q = gq(f"near;maxDistance=={number}", "Point", [8, 40])
    assert q.max_distance == float(number)


def test_geoquery_is_hashable_and_round_trips():
    q = gq("within", "Polygon", [SQUARE])
    again = gq("within", "Polygon", [SQUARE])
    assert q == again and hash(q) == hash(again)
    geoq = q.as_geoq()
    assert geoq == {
        "georel": "within",
        "geometry": "Polygon",
        "coordinates": [SQUARE],
        "geoproperty": CORE_LOCATION,
    }
    assert parse_geoquery(geoq["georel"], geoq["geometry"], geoq["coordinates"], None, expand) == q


def test_near_is_allowed_with_any_reference_geometry():
    # §4.10: near takes the buffer of the reference geometry, whatever its type.
    q = gq("near;maxDistance==1000", "Polygon", [SQUARE])
    assert q.matches(pt(5, 5)) and q.matches(pt(10.005, 5)) and not q.matches(pt(10.02, 5))


BAD = [
    # missing parameters
    ("near;maxDistance==10", None, "[8,40]"),
    ("near;maxDistance==10", "Point", None),
    (None, "Point", "[8,40]"),
    # coordinates
    ("within", "Point", "[8.6,41.15"),
    ("within", "Point", "8.6,41.15"),
    ("within", "Point", "42"),
    ("within", "Point", '{"x": 1}'),
    ("within", "Point", "[8, 91]"),
    ("within", "Point", "[8, -90.5]"),
    ("within", "Point", "[181, 0]"),
    ("within", "Point", "[-180.1, 0]"),
    ("within", "Point", "[1]"),
    ("within", "Point", "[1, 2, 3, 4]"),
    ("within", "Point", '["8", 40]'),
    ("within", "Point", "[true, 40]"),
    ("within", "Point", "[[8, 40]]"),
    ("within", "MultiPoint", "[]"),
    ("within", "LineString", "[[0, 0]]"),
    ("within", "LineString", "[[0, 0], [0, 0]]"),
    ("within", "MultiLineString", "[]"),
    ("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]"),  # not closed
    ("within", "Polygon", "[[[0,0],[1,0],[0,0]]]"),  # fewer than 4 positions
    ("within", "Polygon", "[]"),
    ("within", "Polygon", "[[0,0],[1,0],[1,1],[0,0]]"),  # one level too shallow
    ("within", "MultiPolygon", "[]"),
    ("within", "MultiPolygon", "[[[[0,0],[1,0],[1,1],[0,1]]]]"),
    # geometry
    ("within", "point", "[8,40]"),
    ("within", "Circle", "[8,40]"),
    ("within", "GeometryCollection", "[]"),
    ("within", "", "[8,40]"),
    # georel
    ("nearby", "Point", "[8,40]"),
    ("crosses", "Point", "[8,40]"),
    ("", "Point", "[8,40]"),
    ("Within", "Point", "[8,40]"),
    ("near", "Point", "[8,40]"),
    ("near;", "Point", "[8,40]"),
    ("near;maxDistance==", "Point", "[8,40]"),
    ("near;maxDistance==-10", "Point", "[8,40]"),
    ("near;maxDistance==0", "Point", "[8,40]"),
    ("near;maxDistance==0.0", "Point", "[8,40]"),
    ("near;maxDistance==abc", "Point", "[8,40]"),
    ("near;maxDistance==10m", "Point", "[8,40]"),
    ("near;maxDistance==010", "Point", "[8,40]"),
    ("near;maxDistance==1e999", "Point", "[8,40]"),
    ("near;maxDistance==NaN", "Point", "[8,40]"),
    ("near;maxDistance:100", "Point", "[8,40]"),  # the NGSIv2 form
    ("near;distance==100", "Point", "[8,40]"),
    ("near;maxDistance==100;minDistance==10", "Point", "[8,40]"),  # one modifier only
    ("within;maxDistance==100", "Point", "[8,40]"),
]


@pytest.mark.parametrize(("georel", "geometry", "coordinates"), BAD)
def test_invalid_geoqueries_are_bad_request_data(georel, geometry, coordinates):
    with pytest.raises(BadRequestData) as info:
        parse_geoquery(georel, geometry, coordinates, None, expand)
    assert info.value.status == 400 and info.value.detail


@pytest.mark.parametrize("value", [12, ["near"], {"near": 1}])
def test_non_string_georel_from_a_body(value):
    # The POST query body and subscriptions carry geoQ as JSON: anything may arrive.
    with pytest.raises(BadRequestData):
        parse_geoquery(value, "Point", [8, 40], None, expand)


@pytest.mark.parametrize("value", [12, ["Point"], None])
def test_non_string_geometry_from_a_body(value):
    with pytest.raises(BadRequestData):
        parse_geoquery("within", value, [8, 40], None, expand)


@pytest.mark.parametrize("geoproperty", ["", 12, ["location"]])
def test_bad_geoproperty(geoproperty):
    with pytest.raises(BadRequestData):
        parse_geoquery("within", "Point", [8, 40], geoproperty, expand)


def test_error_details_say_what_is_wrong():
    with pytest.raises(BadRequestData, match="missing: geometry"):
        parse_geoquery("within", None, "[8,40]", None, expand)
    with pytest.raises(BadRequestData, match="latitude"):
        parse_geoquery("within", "Point", "[8,91]", None, expand)
    with pytest.raises(BadRequestData, match="closed"):
        parse_geoquery("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]", None, expand)
    with pytest.raises(BadRequestData, match="case-sensitive"):
        parse_geoquery("within", "polygon", "[8,40]", None, expand)


def test_a_ring_that_crosses_itself_is_a_polygon_still():
    """RFC 7946 asks closed rings of 4 positions or more, not simple ones (OGC): a bow tie is
    accepted as a GeoProperty value and as a query geometry, and related as GEOS relates it."""
    bow_tie = [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]]
    validate_geojson_geometry({"type": "Polygon", "coordinates": bow_tie})
    overlapping = [
        [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
        [[[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]],
    ]
    validate_geojson_geometry({"type": "MultiPolygon", "coordinates": overlapping})
    query = parse_geoquery("intersects", "Polygon", json.dumps(bow_tie), None, expand)
    assert query.matches({"type": "Point", "coordinates": [1.5, 1]})
    assert not query.matches({"type": "Point", "coordinates": [5, 5]})
    equals = parse_geoquery("equals", "Polygon", bow_tie, None, expand)
    assert equals.matches({"type": "Polygon", "coordinates": bow_tie})


# --------------------------------------------------------------------------------------------
# Topological relations: target geometry (entity) first, reference (query) second
# --------------------------------------------------------------------------------------------

RELATIONS = [
    # within: the target lies within the reference
    ("within", "Polygon", HOLED, pt(2, 2), True),
    ("within", "Polygon", HOLED, pt(5, 5), False),  # in the hole
    ("within", "Polygon", HOLED, pt(4, 5), False),  # on the hole's ring: boundary, not interior
    ("within", "Polygon", HOLED, pt(10, 5), False),  # on the outer ring
    ("within", "Polygon", HOLED, pt(20, 20), False),
    ("within", "Polygon", HOLED, geo("MultiPoint", [[1, 1], [2, 2]]), True),
    ("within", "Polygon", HOLED, geo("MultiPoint", [[1, 1], [5, 5]]), False),
    ("within", "Polygon", HOLED, geo("LineString", [[1, 1], [3, 3]]), True),
    ("within", "Polygon", HOLED, geo("LineString", [[1, 1], [9, 9]]), False),  # crosses hole
    (
        "within",
        "Polygon",
        HOLED,
        geo("MultiLineString", [[[1, 1], [2, 1]], [[7, 7], [8, 8]]]),
        True,
    ),
    ("within", "Polygon", HOLED, geo("Polygon", SMALL), True),
    ("within", "Polygon", HOLED, geo("Polygon", OVER_HOLE), False),
    ("within", "Polygon", HOLED, geo("Polygon", IN_HOLE), False),
    ("within", "Polygon", HOLED, geo("Polygon", HALF_OUT), False),
    (
        "within",
        "Polygon",
        HOLED,
        geo("MultiPolygon", [SMALL, [[[7, 7], [8, 7], [8, 8], [7, 7]]]]),
        True,
    ),
    ("within", "Polygon", HOLED, geo("MultiPolygon", [SMALL, FAR]), False),
    ("within", "MultiPolygon", [SMALL, FAR], pt(20.5, 20.5), True),
    ("within", "MultiPolygon", [SMALL, FAR], pt(15, 15), False),
    ("within", "LineString", [[0, 0], [10, 10]], pt(5, 5), True),
    ("within", "LineString", [[0, 0], [10, 10]], pt(0, 0), False),  # an end point is boundary
    ("within", "LineString", [[0, 0], [10, 10]], pt(5, 6), False),
    ("within", "MultiLineString", [[[0, 0], [1, 0]], [[0, 5], [9, 5]]], pt(3, 5), True),
    ("within", "Point", [3, 4], pt(3, 4), True),
    ("within", "Point", [3, 4], pt(3, 4.0001), False),
    ("within", "MultiPoint", [[3, 4], [5, 6]], pt(5, 6), True),
    # contains: the target contains the reference
    ("contains", "Point", [2, 2], geo("Polygon", HOLED), True),
    ("contains", "Point", [5, 5], geo("Polygon", HOLED), False),  # the hole is not the polygon
    ("contains", "Point", [10, 5], geo("Polygon", HOLED), False),  # boundary only
    ("contains", "Point", [2, 2], pt(2, 2), True),
    ("contains", "Point", [2, 2], pt(2, 3), False),
    ("contains", "Point", [5, 5], geo("LineString", [[0, 0], [10, 10]]), True),
    ("contains", "MultiPoint", [[1, 1], [2, 2]], geo("Polygon", HOLED), True),
    ("contains", "LineString", [[1, 1], [3, 3]], geo("Polygon", HOLED), True),
    ("contains", "LineString", [[1, 1], [9, 9]], geo("Polygon", HOLED), False),
    ("contains", "MultiLineString", [[[1, 1], [2, 1]]], geo("Polygon", HOLED), True),
    ("contains", "Polygon", SMALL, geo("Polygon", HOLED), True),
    ("contains", "Polygon", SMALL, geo("MultiPolygon", [SMALL, FAR]), True),
    ("contains", "Polygon", OVER_HOLE, geo("Polygon", HOLED), False),
    ("contains", "Polygon", SMALL, pt(2, 2), False),
    (
        "contains",
        "MultiPolygon",
        [SMALL, FAR],
        geo("Polygon", [[[0, 0], [30, 0], [30, 30], [0, 0]]]),
        False,
    ),
    (
        "contains",
        "MultiPolygon",
        [SMALL, FAR],
        geo("Polygon", [[[0, 0], [30, 0], [30, 30], [0, 30], [0, 0]]]),
        True,
    ),
    # intersects: any shared point
    ("intersects", "Polygon", HOLED, pt(2, 2), True),
    ("intersects", "Polygon", HOLED, pt(10, 5), True),  # boundary counts
    ("intersects", "Polygon", HOLED, pt(4, 5), True),  # the hole's ring too
    ("intersects", "Polygon", HOLED, pt(5, 5), False),
    ("intersects", "Polygon", HOLED, geo("LineString", [[-5, 5], [1, 5]]), True),
    ("intersects", "Polygon", HOLED, geo("LineString", [[-5, 5], [-1, 5]]), False),
    ("intersects", "Polygon", HOLED, geo("Polygon", IN_HOLE), False),
    ("intersects", "Polygon", HOLED, geo("Polygon", HALF_OUT), True),
    ("intersects", "Polygon", HOLED, geo("MultiPolygon", [IN_HOLE, FAR]), False),
    ("intersects", "Polygon", HOLED, geo("MultiPoint", [[5, 5], [20, 20], [1, 1]]), True),
    ("intersects", "LineString", [[0, 0], [10, 10]], geo("LineString", [[0, 10], [10, 0]]), True),
    ("intersects", "LineString", [[0, 0], [10, 10]], geo("LineString", [[0, 1], [9, 10]]), False),
    ("intersects", "MultiLineString", [[[0, 0], [1, 1]], [[5, 0], [5, 9]]], pt(5, 3), True),
    ("intersects", "MultiPoint", [[5, 5], [2, 2]], geo("Polygon", HOLED), True),
    ("intersects", "MultiPolygon", [IN_HOLE, FAR], geo("Polygon", HOLED), False),
    ("intersects", "Point", [2, 2], geo("MultiPolygon", [SMALL, FAR]), True),
    # disjoint: no shared point
    ("disjoint", "Polygon", HOLED, pt(5, 5), True),
    ("disjoint", "Polygon", HOLED, pt(4, 5), False),
    ("disjoint", "Polygon", HOLED, pt(2, 2), False),
    ("disjoint", "Polygon", HOLED, geo("Polygon", IN_HOLE), True),
    ("disjoint", "Polygon", HOLED, geo("Polygon", OVER_HOLE), False),
    ("disjoint", "Point", [50, 50], geo("LineString", [[0, 0], [10, 10]]), True),
    ("disjoint", "LineString", [[0, 0], [10, 10]], geo("MultiPoint", [[1, 2], [3, 4]]), True),
    ("disjoint", "MultiPolygon", [SMALL, FAR], geo("MultiLineString", [[[2, 2], [2, 9]]]), False),
    # equals: topological equality
    ("equals", "Point", [3, 4], pt(3, 4), True),
    ("equals", "Point", [3, 4], pt(3, 5), False),
    (
        "equals",
        "Polygon",
        [SQUARE],
        geo("Polygon", [[[10, 0], [10, 10], [0, 10], [0, 0], [10, 0]]]),
        True,
    ),
    (
        "equals",
        "Polygon",
        [SQUARE],
        geo("Polygon", [[[0, 0], [0, 10], [10, 10], [10, 0], [0, 0]]]),
        True,
    ),
    ("equals", "Polygon", HOLED, geo("Polygon", [SQUARE]), False),
    ("equals", "LineString", [[0, 0], [2, 2]], geo("LineString", [[0, 0], [1, 1], [2, 2]]), True),
    ("equals", "MultiPoint", [[1, 1], [2, 2]], geo("MultiPoint", [[2, 2], [1, 1]]), True),
    ("equals", "MultiLineString", [[[0, 0], [1, 1]]], geo("LineString", [[0, 0], [1, 1]]), True),
    ("equals", "MultiPolygon", [SMALL], geo("Polygon", SMALL), True),
    # overlaps: same dimension, shared interior, neither contains the other
    ("overlaps", "Polygon", HOLED, geo("Polygon", HALF_OUT), True),
    ("overlaps", "Polygon", HOLED, geo("Polygon", SMALL), False),  # inside: not an overlap
    ("overlaps", "Polygon", HOLED, geo("Polygon", OVER_HOLE), True),  # part of it is in the hole
    ("overlaps", "Polygon", HOLED, geo("Polygon", FAR), False),
    ("overlaps", "Polygon", HOLED, pt(2, 2), False),  # different dimensions never overlap
    ("overlaps", "LineString", [[0, 0], [10, 0]], geo("LineString", [[5, 0], [15, 0]]), True),
    ("overlaps", "LineString", [[0, 0], [10, 0]], geo("LineString", [[2, 0], [8, 0]]), False),
    ("overlaps", "MultiPoint", [[0, 0], [1, 1]], geo("MultiPoint", [[1, 1], [2, 2]]), True),
    ("overlaps", "MultiPolygon", [SMALL, FAR], geo("Polygon", HALF_OUT), False),
    (
        "overlaps",
        "MultiLineString",
        [[[0, 0], [10, 0]]],
        geo("MultiLineString", [[[5, 0], [15, 0]]]),
        True,
    ),
]


@pytest.mark.parametrize(("georel", "kind", "coords", "target", "expected"), RELATIONS)
def test_relations(georel, kind, coords, target, expected):
    q = gq(georel, kind, coords)
    assert q.matches(target) is expected
    # The JSON text the store keeps gives the same answer, as str and bytes.
    assert q.matches(orjson.dumps(target)) is expected
    assert q.matches(orjson.dumps(target).decode()) is expected
    # The prefilter box never excludes a match.
    box = q.bbox()
    if expected and box is not None:
        assert boxes_meet(box, geometry_bbox(target))


def test_every_georel_and_geometry_type_parses_and_evaluates():
    references = {
        "Point": [5, 5],
        "MultiPoint": [[1, 1], [5, 5]],
        "LineString": [[0, 0], [10, 10]],
        "MultiLineString": [[[0, 0], [10, 10]], [[0, 10], [10, 0]]],
        "Polygon": HOLED,
        "MultiPolygon": [SMALL, FAR],
    }
    targets = [
        pt(1, 1),
        geo("MultiPoint", [[1, 1], [2, 2]]),
        geo("LineString", [[1, 1], [2, 2]]),
        geo("MultiLineString", [[[1, 1], [2, 2]]]),
        geo("Polygon", SMALL),
        geo("MultiPolygon", [SMALL]),
    ]
    georels = [
        "near;maxDistance==1000",
        "near;minDistance==1000",
        "within",
        "contains",
        "intersects",
        "equals",
        "disjoint",
        "overlaps",
    ]
    for georel in georels:
        for kind, coords in references.items():
            q = gq(georel, kind, coords)
            for target in targets:
                assert isinstance(q.matches(target), bool)
                if georel == "intersects":
                    assert q.matches(target) is not gq("disjoint", kind, coords).matches(target)


# --------------------------------------------------------------------------------------------
# near: geodesic distances
# --------------------------------------------------------------------------------------------


def test_point_distance_against_haversine_and_the_ellipsoid():
    d = distance_m(pt(*CASA_MUSICA), *CLERIGOS)
    # Independent check on the sphere: the ellipsoid differs by well under 0.5 %.
    assert d == pytest.approx(haversine(*CLERIGOS, *CASA_MUSICA), rel=0.005)
    # And on the ellipsoid, pyproj's own geodesic inverse.
    assert d == pytest.approx(GEOD.inv(*CLERIGOS, *CASA_MUSICA)[2], rel=1e-12)
    assert 1900 < d < 2100
    q = gq("near;maxDistance==2000", "Point", list(CLERIGOS))
    assert q.distance(pt(*CASA_MUSICA)) == pytest.approx(d, rel=1e-12)


def test_max_and_min_distance_boundaries():
    d = GEOD.inv(*CLERIGOS, *CASA_MUSICA)[2]
    target = pt(*CASA_MUSICA)

    def near(modifier: str, metres: float) -> bool:
        return gq(f"near;{modifier}=={metres!r}", "Point", list(CLERIGOS)).matches(target)

    assert near("maxDistance", d * (1 + 1e-9))
    assert not near("maxDistance", d * (1 - 1e-6))
    assert near("minDistance", d * (1 - 1e-9))
    assert not near("minDistance", d * (1 + 1e-6))
    # The same points in the other direction, and the Clérigos tower itself.
    back = gq(f"near;maxDistance=={d * (1 + 1e-9)!r}", "Point", list(CASA_MUSICA))
    assert back.matches(pt(*CLERIGOS))
    assert gq("near;maxDistance==1", "Point", list(CLERIGOS)).matches(pt(*CLERIGOS))
    assert not gq("near;minDistance==1", "Point", list(CLERIGOS)).matches(pt(*CLERIGOS))


def _segment_samples(coords: list, step: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples along lon/lat-straight segments (RFC 7946 edges)."""
    lons, lats = [], []
    for (x0, y0), (x1, y1) in itertools.pairwise(coords):
        n = max(2, int(max(abs(x1 - x0), abs(y1 - y0)) / step) + 1)
        t = np.linspace(0.0, 1.0, n)
        lons.append(x0 + (x1 - x0) * t)
        lats.append(y0 + (y1 - y0) * t)
    return np.concatenate(lons), np.concatenate(lats)


def _brute(lon: float, lat: float, rings: list[list]) -> float:
    best = math.inf
    for ring in rings:
        xs, ys = _segment_samples(ring)
        d = GEOD.inv(np.full_like(xs, lon), np.full_like(ys, lat), xs, ys)[2]
        best = min(best, float(d.min()))
    return best


def test_distance_to_a_line_matches_brute_force():
    line = [[-8.62, 41.14], [-8.60, 41.16], [-8.58, 41.155]]
    for lon, lat in [CLERIGOS, CASA_MUSICA, (-8.59, 41.14), (-8.65, 41.10)]:
        got = distance_m(geo("LineString", line), lon, lat)
        assert got == pytest.approx(_brute(lon, lat, [line]), abs=0.05)
    multi = geo("MultiLineString", [line, [[-8.70, 41.20], [-8.69, 41.21]]])
    assert distance_m(multi, *CASA_MUSICA) == pytest.approx(_brute(*CASA_MUSICA, [line]), abs=0.05)


def test_distance_to_a_polygon_with_a_hole():
    outer = [[-8.64, 41.13], [-8.58, 41.13], [-8.58, 41.17], [-8.64, 41.17], [-8.64, 41.13]]
    hole = [[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.16], [-8.62, 41.16], [-8.62, 41.14]]
    polygon = geo("Polygon", [outer, hole])
    assert distance_m(polygon, -8.63, 41.135) == 0.0  # inside
    assert distance_m(polygon, -8.64, 41.15) == 0.0  # on the boundary
    # In the hole: the distance is to the hole's ring.
    got = distance_m(polygon, -8.61, 41.15)
    assert got == pytest.approx(_brute(-8.61, 41.15, [hole]), abs=0.05)
    assert 800 < got < 900
    # Outside: to the outer ring.
    assert distance_m(polygon, *CASA_MUSICA) == 0.0  # Casa da Música is inside it
    for lon, lat in [(-8.66, 41.16), (-8.55, 41.12), (-8.61, 41.2)]:
        got = distance_m(polygon, lon, lat)
        assert got == pytest.approx(_brute(lon, lat, [outer]), abs=0.05)
        assert got > 1000
    multi = geo("MultiPolygon", [[outer, hole], [[[0, 0], [1, 0], [1, 1], [0, 0]]]])
    assert distance_m(multi, -8.66, 41.16) == pytest.approx(distance_m(polygon, -8.66, 41.16))


def test_near_with_line_and_polygon_targets():
    line = geo("LineString", [[-8.62, 41.14], [-8.60, 41.16]])
    d = _brute(*CASA_MUSICA, [line["coordinates"]])
    point = list(CASA_MUSICA)
    assert gq(f"near;maxDistance=={d + 0.2!r}", "Point", point).matches(line)
    assert not gq(f"near;maxDistance=={d - 0.2!r}", "Point", point).matches(line)
    assert gq(f"near;minDistance=={d - 0.2!r}", "Point", point).matches(line)
    assert not gq(f"near;minDistance=={d + 0.2!r}", "Point", point).matches(line)
    # A polygon around the point is at distance 0: near with any max, never with a min.
    around = geo("Polygon", [[[-8.64, 41.15], [-8.62, 41.15], [-8.62, 41.17], [-8.64, 41.15]]])
    assert gq("near;maxDistance==1", "Point", point).matches(around)
    assert not gq("near;minDistance==1", "Point", point).matches(around)
    multipoint = geo("MultiPoint", [list(CLERIGOS), [0, 0]])
    d2 = GEOD.inv(*CASA_MUSICA, *CLERIGOS)[2]
    assert gq("near;maxDistance==1", "Point", [0, 0]).matches(multipoint)
    assert gq(f"near;maxDistance=={d2 + 0.01!r}", "Point", point).matches(multipoint)
    assert not gq(f"near;maxDistance=={d2 - 0.01!r}", "Point", point).matches(multipoint)


def _brute_pair(a: list, b: list) -> float:
    """Minimum geodesic distance between two polylines by sampling: coarse everywhere, then
    fine around the closest coarse pair."""

    def closest(xa, ya, xb, yb) -> tuple[float, int, int]:
        ga, gb = np.meshgrid(np.arange(len(xa)), np.arange(len(xb)), indexing="ij")
        d = GEOD.inv(xa[ga.ravel()], ya[ga.ravel()], xb[gb.ravel()], yb[gb.ravel()])[2]
        k = int(d.argmin())
        return float(d[k]), int(ga.ravel()[k]), int(gb.ravel()[k])

    xa, ya = _segment_samples(a, 5e-4)
    xb, yb = _segment_samples(b, 5e-4)
    _, i, j = closest(xa, ya, xb, yb)
    fxa, fya = _segment_samples(a, 1e-5)
    fxb, fyb = _segment_samples(b, 1e-5)
    near_a = (np.abs(fxa - xa[i]) < 1e-3) & (np.abs(fya - ya[i]) < 1e-3)
    near_b = (np.abs(fxb - xb[j]) < 1e-3) & (np.abs(fyb - yb[j]) < 1e-3)
    return closest(fxa[near_a], fya[near_a], fxb[near_b], fyb[near_b])[0]


def test_near_with_a_polygon_reference():
    outer = [[-8.62, 41.14], [-8.60, 41.14], [-8.60, 41.16], [-8.62, 41.16], [-8.62, 41.14]]
    q = gq("near;maxDistance==500", "Polygon", [outer])
    assert q.matches(pt(-8.61, 41.15))  # inside: distance 0
    lon, lat = -8.595, 41.15
    d = _brute(lon, lat, [outer])
    assert q.distance(pt(lon, lat)) == pytest.approx(d, abs=0.05)
    assert q.matches(pt(lon, lat)) is (d <= 500)
    # A line target against a polygon reference.
    line = [[-8.59, 41.13], [-8.58, 41.17]]
    assert q.distance(geo("LineString", line)) == pytest.approx(_brute_pair(line, outer), abs=0.1)
    # Two lines, neither a point: the nearest pair is found and measured geodesically.
    ref = [[-8.62, 41.14], [-8.60, 41.16]]
    q_line = gq("near;maxDistance==5000", "LineString", ref)
    assert q_line.distance(geo("LineString", line)) == pytest.approx(
        _brute_pair(line, ref), abs=0.1
    )
    assert q_line.matches(geo("LineString", line))
    # Crossing shapes are at distance 0.
    assert q_line.distance(geo("LineString", [[-8.62, 41.16], [-8.60, 41.14]])) == 0.0


def test_long_distances_stay_geodesic():
    # Porto to Lisbon and across the antimeridian.
    lisbon = (-9.1393, 38.7223)
    assert distance_m(pt(*lisbon), *CLERIGOS) == pytest.approx(
        GEOD.inv(*CLERIGOS, *lisbon)[2], rel=1e-12
    )
    assert distance_m(pt(-179.99, 0), 179.99, 0) == pytest.approx(
        GEOD.inv(179.99, 0, -179.99, 0)[2], rel=1e-9
    )
    assert gq("near;maxDistance==2300", "Point", [179.99, 0]).matches(pt(-179.99, 0))


# --------------------------------------------------------------------------------------------
# bbox(): the R*Tree prefilter
# --------------------------------------------------------------------------------------------


def test_bbox_of_topological_relations_is_the_reference_box():
    for georel in ("within", "contains", "intersects", "equals", "overlaps"):
        assert gq(georel, "Polygon", HOLED).bbox() == (0, 0, 10, 10)
    assert gq("within", "Point", [3, 4]).bbox() == (3, 4, 3, 4)
    assert gq("disjoint", "Polygon", HOLED).bbox() is None
    assert gq("near;minDistance==10", "Point", [3, 4]).bbox() is None


def test_near_bbox_holds_the_whole_circle():
    d = 2000.0
    q = gq(f"near;maxDistance=={d!r}", "Point", list(CLERIGOS))
    box = q.bbox()
    assert box is not None
    for az in range(0, 360, 3):
        lon, lat, _ = GEOD.fwd(*CLERIGOS, az, d)
        assert inside(box, lon, lat)
    # ...and is not wastefully large (within 2 % of the circle's extent).
    assert box[3] - CLERIGOS[1] < 1.02 * (GEOD.fwd(*CLERIGOS, 0, d)[1] - CLERIGOS[1])
    assert box[2] - CLERIGOS[0] < 1.02 * (GEOD.fwd(*CLERIGOS, 90, d)[0] - CLERIGOS[0])


def test_near_bbox_at_the_antimeridian_and_the_poles():
    box = gq("near;maxDistance==1000", "Point", [179.999, 0]).bbox()
    assert box is not None and (box[0], box[2]) == (-180.0, 180.0)
    box = gq("near;maxDistance==1000", "Point", [-179.999, 10]).bbox()
    assert box is not None and (box[0], box[2]) == (-180.0, 180.0)
    box = gq("near;maxDistance==1000", "Point", [10, 89.995]).bbox()
    assert box == (-180.0, box[1], 180.0, 90.0) and box[1] < 89.995
    box = gq("near;maxDistance==1000", "Point", [10, -89.995]).bbox()
    assert box == (-180.0, -90.0, 180.0, box[3]) and box[3] > -89.995
    # Near a pole but not reaching it: the longitude step is taken at the band's edge.
    lon0, lat0 = 10.0, 89.9
    box = gq("near;maxDistance==5000", "Point", [lon0, lat0]).bbox()
    assert box is not None and box[3] < 90
    for az in range(0, 360, 5):
        lon, lat, _ = GEOD.fwd(lon0, lat0, az, 4999.0)
        assert inside(box, lon, lat)
    # A huge distance covers everything.
    assert gq("near;maxDistance==2e7", "Point", [0, 0]).bbox() == (-180.0, -90.0, 180.0, 90.0)


# --------------------------------------------------------------------------------------------
# entities
# --------------------------------------------------------------------------------------------


def _entity(**attrs) -> dict:
    return {"id": "urn:ngsi-ld:Thing:1", "type": [EX + "Thing"], "attrs": attrs}


def test_entity_matches_looks_up_the_geoproperty():
    q = gq("within", "Polygon", HOLED)
    inside_ = {"type": "GeoProperty", "value": pt(2, 2)}
    outside = {"type": "GeoProperty", "value": pt(50, 50), "datasetId": "urn:ds:1"}
    assert q.entity_matches(_entity(**{CORE_LOCATION: [inside_]}))
    assert not q.entity_matches(_entity(**{CORE_LOCATION: [outside]}))
    # Any instance (datasetId) may match.
    assert q.entity_matches(_entity(**{CORE_LOCATION: [outside, inside_]}))
    # Missing attribute: never matches, not even for disjoint (§4.10).
    assert not q.entity_matches(_entity())
    assert not gq("disjoint", "Polygon", HOLED).entity_matches(_entity())
    assert not q.entity_matches({"id": "urn:x", "type": []})
    # Only GeoProperty instances count.
    prop = {"type": "Property", "value": pt(2, 2)}
    assert not q.entity_matches(_entity(**{CORE_LOCATION: [prop]}))
    # Another geoproperty.
    q2 = gq("within", "Polygon", HOLED, "observationSpace")
    assert q2.entity_matches(_entity(**{EX + "observationSpace": [inside_]}))
    assert not q2.entity_matches(_entity(**{CORE_LOCATION: [inside_]}))


def test_unusable_stored_values_never_match():
    q = gq("intersects", "Polygon", HOLED)
    for bad in [{}, {"type": "Point"}, {"type": "Point", "coordinates": "x"}, [], "nonsense"]:
        assert q.matches(bad) is False  # type: ignore[arg-type]
    assert q.matches(b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}') is False
    assert gq("near;maxDistance==10", "Point", [1, 1]).matches({"type": "Nope"}) is False


# --------------------------------------------------------------------------------------------
# GeoProperty values and their boxes
# --------------------------------------------------------------------------------------------

VALID_VALUES = [
    pt(-8.61, 41.15),
    {"type": "Point", "coordinates": [-8.61, 41.15, 120.5]},
    {"type": "Point", "coordinates": [180, -90]},
    geo("MultiPoint", [[1, 2], [3, 4]]),
    geo("LineString", [[1, 2], [3, 4]]),
    geo("MultiLineString", [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
    geo("Polygon", HOLED),
    geo("MultiPolygon", [SMALL, FAR]),
    {"type": "Point", "coordinates": [1, 2], "bbox": [1, 2, 1, 2]},  # RFC 7946 bbox member
]


@pytest.mark.parametrize("value", VALID_VALUES)
def test_valid_geoproperty_values(value):
    validate_geojson_geometry(value)


INVALID_VALUES = [
    None,
    "POINT(1 2)",
    [1, 2],
    {"coordinates": [1, 2]},
    {"type": "Point"},
    {"type": "GeometryCollection", "geometries": [pt(1, 2)]},
    {"type": "Feature", "geometry": pt(1, 2)},
    {"type": "point", "coordinates": [1, 2]},
    pt(1, 95),
    pt(-200, 0),
    pt(float("nan"), 0),
    {"type": "Point", "coordinates": "[1, 2]"},
    {"type": "Point", "coordinates": [1, False]},
    geo("LineString", [[1, 2]]),
    geo("Polygon", [[[0, 0], [1, 0], [1, 1], [0, 1]]]),
    geo("MultiPoint", []),
]


@pytest.mark.parametrize("value", INVALID_VALUES)
def test_invalid_geoproperty_values(value):
    with pytest.raises(BadRequestData) as info:
        validate_geojson_geometry(value)
    assert info.value.detail


def test_geometry_bbox():
    assert geometry_bbox(pt(-8.61, 41.15)) == (-8.61, 41.15, -8.61, 41.15)
    assert geometry_bbox(geo("MultiPoint", [[1, 2], [3, -4]])) == (1, -4, 3, 2)
    assert geometry_bbox(geo("LineString", [[1, 2], [3, 4], [0, 5]])) == (0, 2, 3, 5)
    assert geometry_bbox(geo("MultiLineString", [[[1, 2], [3, 4]], [[-5, 6], [7, 8]]])) == (
        -5,
        2,
        7,
        8,
    )
    assert geometry_bbox(geo("Polygon", HOLED)) == (0, 0, 10, 10)
    assert geometry_bbox(geo("MultiPolygon", [SMALL, FAR])) == (1, 1, 21, 21)
    assert geometry_bbox({"type": "Point", "coordinates": [1, 2, 3]}) == (1, 2, 1, 2)
    for bad in [{}, {"type": "Point", "coordinates": []}, geo("LineString", []), pt("a", 1)]:
        with pytest.raises(ValueError):
            geometry_bbox(bad)


# --------------------------------------------------------------------------------------------
# The prefilter is conservative (property-based)
# --------------------------------------------------------------------------------------------

lons = st.floats(-179.0, 179.0, allow_nan=False)
lats = st.floats(-80.0, 80.0, allow_nan=False)
sizes = st.floats(1e-4, 5.0, allow_nan=False)
unit = st.floats(-0.5, 1.5, allow_nan=False)


@st.composite
def query_polygons(draw) -> list:
    """A box, or a convex polygon through random points of a box."""
    x0, y0, w, h = draw(lons), draw(lats), draw(sizes), draw(sizes)
    x1, y1 = min(x0 + w, 180.0), min(y0 + h, 90.0)
    if draw(st.booleans()):
        return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]
    pts = draw(st.lists(st.tuples(st.floats(x0, x1), st.floats(y0, y1)), min_size=3, max_size=8))
    hull = shapely.MultiPoint(pts).convex_hull
    assume(hull.geom_type == "Polygon" and hull.area > 0)
    return [[list(c) for c in hull.exterior.coords]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    polygon=query_polygons(),
    georel=st.sampled_from(["within", "intersects", "contains", "overlaps", "equals"]),
    fx=unit,
    fy=unit,
    fx2=unit,
    fy2=unit,
)
def test_bbox_never_excludes_a_match_topological(polygon, georel, fx, fy, fx2, fy2):
    q = gq(georel, "Polygon", polygon)
    box = q.bbox()
    assert box is not None
    x0, y0, x1, y1 = box
    # Targets placed relative to the box (some inside, some around it).
    x, y = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
    x2, y2 = x0 + fx2 * (x1 - x0), y0 + fy2 * (y1 - y0)
    assume(all(-180 <= v <= 180 for v in (x, x2)) and all(-90 <= v <= 90 for v in (y, y2)))
    targets = [pt(x, y)]
    if (x, y) != (x2, y2):
        targets.append(geo("LineString", [[x, y], [x2, y2]]))
    targets.append(geo("Polygon", polygon))
    for target in targets:
        if q.matches(target):
            assert boxes_meet(box, geometry_bbox(target))


@settings(max_examples=200, deadline=None)
@given(
    lon=st.floats(-180.0, 180.0, allow_nan=False),
    lat=st.floats(-89.99, 89.99, allow_nan=False),
    d=st.floats(1.0, 300_000.0, allow_nan=False),
    az=st.floats(-180.0, 180.0, allow_nan=False),
    f=st.floats(0.0, 1.3, allow_nan=False),
)
def test_bbox_never_excludes_a_match_near(lon, lat, d, az, f):
    q = gq(f"near;maxDistance=={d!r}", "Point", [lon, lat])
    box = q.bbox()
    assert box is not None
    tlon, tlat, _ = GEOD.fwd(lon, lat, az, f * d)
    tlon = max(-180.0, min(180.0, tlon))
    if q.matches(pt(tlon, tlat)):
        assert inside(box, tlon, tlat)
    # A short line through the target point.
    elon, elat, _ = GEOD.fwd(tlon, tlat, az + 90, d * 0.1)
    elon = max(-180.0, min(180.0, elon))
    line = geo("LineString", [[tlon, tlat], [elon, elat]])
    if (tlon, tlat) != (elon, elat) and q.matches(line):
        assert boxes_meet(box, geometry_bbox(line))
