"""NGSI-LD geo-queries (ETSI GS CIM 009 §4.10) and GeoProperty values (§4.7.1).

A geo-query has four parameters: ``georel`` (the relation), ``geometry`` and ``coordinates`` (the
*reference* geometry) and ``geoproperty`` (the *target* GeoProperty of the entity, ``location`` by
default). §4.10 grammar::

    georel  = nearRel / withinRel / containsRel / overlapsRel / intersectsRel / equalsRel
              / disjointRel
    nearRel = "near" ";" ("maxDistance" / "minDistance") "==" PositiveNumber   ; metres

``PositiveNumber`` is an RFC 8259 number without the minus sign and not 0. The reference geometry
may be any GeoJSON geometry type except GeometryCollection, for every relation (the spec puts no
further restriction: ``near`` takes the buffer of whatever reference geometry is given).
Whatever is wrong with a geo-query is 400 BadRequestData (§5.7.2: a query or geo-query that is
not valid as per §4.9/§4.10).

Semantics, decided here once for the whole hub:

* Topological relations (within, contains, intersects, equals, disjoint, overlaps) follow the OGC
  Simple Features / DE-9IM predicates ([14]) evaluated by GEOS on lon/lat coordinates, the target
  geometry first: ``within`` = target within reference, ``contains`` = target contains reference.
  Edges are straight lines in lon/lat, as RFC 7946 §3.1.1 defines them; holes are honoured.
* ``near;maxDistance==d`` matches when the minimum geodesic distance (WGS84 ellipsoid) between the
  target and the reference is <= d, i.e. the target meets the d-buffer of the reference;
  ``near;minDistance==d`` when it is >= d (the target stays out of the buffer). A point inside a
  polygon is at distance 0. This is how PostGIS ``ST_DWithin`` on geography, Stellio and
  Orion-LD evaluate it. (Read to the letter, [14] "within the buffer" would demand the *whole*
  target inside the buffer; for point targets, the usual case, both readings agree.)
* Entities without the target GeoProperty never match (§4.10). An entity with several instances
  of it (datasetIds) matches when any instance does.

Distances. Point to point is pyproj's geodesic inverse (Karney, exact to nanometres). A distance
that involves a line or polygon is measured in an azimuthal equidistant projection (AEQD, PROJ's
ellipsoidal formulas) centred on the point the distance is measured from, where the distance from
the centre to any projected point *is* its geodesic distance. The line/polygon is first densified
to vertices at most ``DENSIFY_DEG`` (0.01°, <= 1.12 km) apart so that its projected chords stay
within the sagitta L²·κ/8 of the true image (κ ≈ tan(lat)/R): about 2 cm at Porto's latitude,
under 15 cm below 80°. Between two non-point geometries the closest pair is found in an AEQD
centred on the reference's side of the closest approach and measured with the geodesic inverse, so
the result is always the length of a real geodesic between the two shapes (never an underestimate
beyond the chord sagitta).

Speed: the reference geometry is built and prepared once per query; a point target never becomes
a shapely object (GEOS' scalar xy predicates and the geodesic inverse take raw floats); AEQD
transformers are built from a PROJ pipeline string (~70 µs, not the ~20 ms of a CRS lookup) and
cached by centre; targets given as raw JSON text are parsed by GEOS and cached by content.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import shapely
from pyproj import Geod, Transformer
from shapely.errors import GEOSException
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from cidade.ngsild.errors import BadRequestData

CORE_LOCATION = "https://uri.etsi.org/ngsi-ld/location"

GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
TOPOLOGICAL_GEORELS = ("within", "contains", "intersects", "equals", "disjoint", "overlaps")
GEORELS = ("near", *TOPOLOGICAL_GEORELS)

# Densification step (degrees) before projecting lines/polygons; see the module docstring.
DENSIFY_DEG = 0.01

_GEOD = Geod(ellps="WGS84")
_ORIGIN = shapely.Point(0.0, 0.0)
_AREAL = ("Polygon", "MultiPolygon")
# How deep positions sit in "coordinates", per geometry type (0: the coordinates are a position).
_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}

# Lower bounds (metres per degree) for the conservative near-box: the meridian arc per degree is
# smallest at the equator (a·(1-e²)·π/180 = 110 574 m) and a parallel's radius is at least a·cos φ
# (a·π/180 = 111 319 m per degree at the equator). Rounded down so the box only ever grows.
_M_PER_DEG_LAT = 110_500.0
_M_PER_DEG_LON_EQ = 111_250.0

# RFC 8259 number without the minus sign; 0 is excluded by value (§4.10 PositiveNumber).
_POSITIVE_NUMBER = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

# shapely >= 2.1 has scalar fast paths for the xy predicates (~0.3 µs instead of ~4 µs through the
# ufunc machinery); fall back to the public ufuncs elsewhere.
_contains_xy: Callable[[Any, float, float], Any] = getattr(
    shapely.lib, "contains_xy_scalar", shapely.contains_xy
)
_intersects_xy: Callable[[Any, float, float], Any] = getattr(
    shapely.lib, "intersects_xy_scalar", shapely.intersects_xy
)


# --------------------------------------------------------------------------------------------
# Validation of GeoJSON geometries
# --------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_position(pos: Any, what: str) -> None:
    if not isinstance(pos, list | tuple) or len(pos) not in (2, 3):
        raise BadRequestData(
            f"{what}: a position must be an array of 2 or 3 numbers, got {_short(pos)}"
        )
    for v in pos:
        # bool is an int in Python but not a number in JSON.
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BadRequestData(f"{what}: a position holds numbers only, got {_short(pos)}")
    # Range checks also reject NaN and infinities (every comparison with NaN is False).
    if not -180 <= pos[0] <= 180:
        raise BadRequestData(f"{what}: longitude {pos[0]!r} is outside [-180, 180]")
    if not -90 <= pos[1] <= 90:
        raise BadRequestData(f"{what}: latitude {pos[1]!r} is outside [-90, 90]")


def _check_positions(value: Any, what: str, minimum: int) -> None:
    if not isinstance(value, list | tuple) or len(value) < minimum:
        raise BadRequestData(f"{what}: expected an array of at least {minimum} positions")
    for pos in value:
        _check_position(pos, what)


def _check_ring(ring: Any, what: str) -> None:
    _check_positions(ring, what, 4)  # RFC 7946 §3.1.6: a linear ring has >= 4 positions
    if list(ring[0]) != list(ring[-1]):
        raise BadRequestData(f"{what}: a linear ring must be closed (first position == last)")


def _check_polygon(rings: Any, what: str) -> None:
    if not isinstance(rings, list | tuple) or not rings:
        raise BadRequestData(f"{what}: a Polygon is a non-empty array of linear rings")
    for ring in rings:
        _check_ring(ring, what)


def _check_coordinates(kind: str, coords: Any, what: str) -> None:
    """The shape of ``coordinates`` for each geometry type (RFC 7946 §3.1), and ranges."""
    if kind == "Point":
        _check_position(coords, what)
    elif kind == "MultiPoint":
        _check_positions(coords, what, 1)
    elif kind == "LineString":
        _check_positions(coords, what, 2)
    elif kind == "MultiLineString":
        if not isinstance(coords, list | tuple) or not coords:
            raise BadRequestData(f"{what}: a MultiLineString is a non-empty array of lines")
        for line in coords:
            _check_positions(line, what, 2)
    elif kind == "Polygon":
        _check_polygon(coords, what)
    else:  # MultiPolygon
        if not isinstance(coords, list | tuple) or not coords:
            raise BadRequestData(f"{what}: a MultiPolygon is a non-empty array of polygons")
        for polygon in coords:
            _check_polygon(polygon, what)


def _check_type(kind: Any, what: str) -> str:
    if kind in GEOMETRY_TYPES:
        return kind
    if kind == "GeometryCollection":
        raise BadRequestData(f"{what}: GeometryCollection is not allowed in NGSI-LD")
    hint = ""
    if isinstance(kind, str):
        # GeoJSON type names are case-sensitive (RFC 7946 §1.4); NGSIv2 used lower case.
        for name in GEOMETRY_TYPES:
            if name.lower() == kind.lower():
                hint = f" (type names are case-sensitive: {name!r})"
    raise BadRequestData(
        f"{what}: {_short(kind)} is not a geometry type; expected one of "
        f"{', '.join(GEOMETRY_TYPES)}{hint}"
    )


def _build(kind: str, coords: Any) -> BaseGeometry:
    # GEOS' own GeoJSON reader is the fastest constructor for every type (one C call).
    return shapely.from_geojson(orjson.dumps({"type": kind, "coordinates": coords}))


def _check_valid(geom: BaseGeometry, kind: str, what: str) -> None:
    """Refuse what is no geometry at all (too few distinct points, a ring that is not closed);
    a ring that touches or crosses itself, or polygons of a MultiPolygon that overlap, are
    allowed (see validate_geojson_geometry)."""
    if not geom.is_valid:
        reason = shapely.is_valid_reason(geom)
        if not reason.startswith(("Self-intersection", "Ring Self-intersection")):
            raise BadRequestData(f"{what}: the {kind} is not a valid geometry ({reason})")


def validate_geojson_geometry(obj: Any) -> None:
    """Check a GeoProperty value (§4.7.1): a GeoJSON geometry of one of the six allowed types
    (not GeometryCollection) whose coordinates have the right shape, 2 or 3 numbers per position,
    longitudes in [-180, 180], latitudes in [-90, 90], closed rings of >= 4 positions. RFC 7946
    asks no more of a polygon: a ring that touches or crosses itself (not simple in the OGC
    sense) is accepted, as PostGIS and other brokers accept it, and related as GEOS relates it.
    Other members (``bbox``, foreign members) are allowed as RFC 7946 allows them. Raises
    BadRequestData with the reason."""
    what = "GeoProperty value"
    if not isinstance(obj, dict):
        raise BadRequestData(f"{what} must be a GeoJSON geometry object, got {_short(obj)}")
    if "type" not in obj:
        raise BadRequestData(f"{what}: the GeoJSON geometry has no 'type'")
    kind = _check_type(obj["type"], what)
    if "coordinates" not in obj:
        raise BadRequestData(f"{what}: the GeoJSON {kind} has no 'coordinates'")
    coords = obj["coordinates"]
    _check_coordinates(kind, coords, what)
    if kind != "Point":
        try:
            geom = _build(kind, coords)
        except GEOSException as exc:
            raise BadRequestData(f"{what}: the {kind} is not a valid geometry ({exc})") from None
        _check_valid(geom, kind, what)


def geometry_bbox(geojson: dict) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of a valid GeoJSON geometry, for the store's index.
    Reads the coordinates directly (no GEOS); raises ValueError on a malformed value."""
    try:
        kind = geojson["type"]
        coords = geojson["coordinates"]
        if kind == "Point":
            x, y = float(coords[0]), float(coords[1])
            return (x, y, x, y)
        if kind == "Polygon":
            coords = coords[:1]  # holes lie inside the exterior ring
        elif kind == "MultiPolygon":
            coords = [polygon[0] for polygon in coords]
            kind = "MultiLineString"
        xs: list[float] = []
        ys: list[float] = []
        for pos in _positions(coords, _DEPTH[kind] - 1):
            xs.append(pos[0])
            ys.append(pos[1])
        return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"not a GeoJSON geometry: {_short(geojson)}") from exc


def _positions(coords: Any, depth: int) -> Iterator[Any]:
    """Positions of a coordinates array whose positions sit ``depth`` levels below its items."""
    if depth <= 0:
        yield from coords
    else:
        for part in coords:
            yield from _positions(part, depth - 1)


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _aeqd(lon: float, lat: float) -> Transformer:
    """lon/lat degrees -> AEQD metres centred on (lon, lat). A PROJ pipeline string skips the
    CRS database, so building one costs ~70 µs; the cache keeps repeated centres (a query's
    point, a subscription's point) free."""
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=aeqd +lat_0={lat!r} +lon_0={lon!r} +ellps=WGS84"
    )


def _project(geom: BaseGeometry, transformer: Transformer) -> BaseGeometry:
    def forward(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack((x, y))

    return shapely.transform(geom, forward)


def _edges(geom: BaseGeometry) -> BaseGeometry:
    """The part of a geometry where the nearest point to something outside it lies: a polygon's
    rings, anything else itself. Measuring to rings (not areas) after a disjointness test also
    keeps a projection artefact (an area wrapping the centre) from reading as distance 0."""
    if geom.geom_type in _AREAL:
        return geom.boundary
    return geom


def _densify(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type in ("Point", "MultiPoint"):
        return geom
    return shapely.segmentize(geom, DENSIFY_DEG)


def _distance_point_geom(lon: float, lat: float, geom: BaseGeometry) -> float:
    """Minimum geodesic distance (m) from (lon, lat) to a shapely lon/lat geometry."""
    kind = geom.geom_type
    if kind == "Point":
        return _GEOD.inv(lon, lat, geom.x, geom.y)[2]
    if kind == "MultiPoint":
        return min(_GEOD.inv(lon, lat, p.x, p.y)[2] for p in geom.geoms)
    if kind in _AREAL and _intersects_xy(geom, lon, lat):
        return 0.0
    projected = _project(_densify(_edges(geom)), _aeqd(lon, lat))
    return float(projected.distance(_ORIGIN))


def _scaled(geom: BaseGeometry, k: float) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: xy * np.array([k, 1.0]))


def _distance_geoms(target: BaseGeometry, reference: BaseGeometry) -> float:
    """Minimum geodesic distance (m) between two shapely lon/lat geometries."""
    if reference.intersects(target):  # the reference is the prepared one
        return 0.0
    if target.geom_type == "Point":
        return _distance_point_geom(target.x, target.y, reference)
    if reference.geom_type == "Point":
        return _distance_point_geom(reference.x, reference.y, target)
    if target.geom_type == "MultiPoint":
        return min(_distance_point_geom(p.x, p.y, reference) for p in target.geoms)
    if reference.geom_type == "MultiPoint":
        return min(_distance_point_geom(p.x, p.y, target) for p in reference.geoms)
    # Two extended shapes: find the closest approach roughly in a locally scaled lon/lat plane,
    # then centre an AEQD on the reference's side of it and look again there. Both candidate
    # distances are lengths of real geodesics between the shapes; keep the shorter.
    # Longitudes shrink by cos(lat) on the ground; clamp so a polar reference stays invertible.
    k = max(math.cos(math.radians((reference.bounds[1] + reference.bounds[3]) / 2)), 1e-6)
    _, near_ref = nearest_points(_scaled(target, k), _scaled(reference, k))
    centre_lon, centre_lat = near_ref.x / k, near_ref.y
    transformer = _aeqd(centre_lon, centre_lat)
    t_proj = _project(_densify(_edges(target)), transformer)
    r_proj = _project(_densify(_edges(reference)), transformer)
    best = float(t_proj.distance(_ORIGIN))  # exact: the centre lies on the reference
    a, b = nearest_points(t_proj, r_proj)
    (lon_a, lon_b), (lat_a, lat_b) = transformer.transform(
        [a.x, b.x], [a.y, b.y], direction="INVERSE"
    )
    return min(best, _GEOD.inv(lon_a, lat_a, lon_b, lat_b)[2])


@lru_cache(maxsize=4096)
def _shape_from_json(text: str | bytes) -> BaseGeometry:
    return shapely.from_geojson(text)


def _shape_of(geojson: dict) -> BaseGeometry:
    return _build(geojson["type"], geojson["coordinates"])


def distance_m(geojson: dict, lon: float, lat: float) -> float:
    """Minimum geodesic distance in metres (WGS84) from (lon, lat) to a GeoJSON geometry; 0 for a
    point inside (or on) a polygon. Used to order ``near`` results."""
    if geojson["type"] == "Point":
        c = geojson["coordinates"]
        return _GEOD.inv(lon, lat, float(c[0]), float(c[1]))[2]
    return _distance_point_geom(lon, lat, _shape_of(geojson))


# --------------------------------------------------------------------------------------------
# The geo-query
# --------------------------------------------------------------------------------------------


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class GeoQuery:
    """A parsed, validated geo-query. ``georel`` is the relation name ("near", "within", ...);
    ``georel_text`` the expression as given (``near;maxDistance==2000``). The reference geometry
    is built and prepared once (``shape``)."""

    georel: str
    geometry: str
    coordinates: tuple
    geoproperty: str = CORE_LOCATION
    max_distance: float | None = None
    min_distance: float | None = None
    georel_text: str = ""
    shape: BaseGeometry = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # Nested tuples keep the query hashable (usable as a cache key) and immutable.
        object.__setattr__(self, "coordinates", _freeze(self.coordinates))
        if self.shape is None:
            object.__setattr__(self, "shape", _build(self.geometry, _thaw(self.coordinates)))
        # Prepared once: GEOS then answers the predicates against this shape with indexes.
        shapely.prepare(self.shape)

    # -- what the store and the hub use ----------------------------------------------------

    @property
    def point(self) -> tuple[float, float] | None:
        """(lon, lat) of a Point reference geometry, else None."""
        if self.geometry == "Point":
            return (float(self.coordinates[0]), float(self.coordinates[1]))
        return None

    def as_geoq(self) -> dict[str, Any]:
        """The GeoQuery object (§5.2.13) with the expanded geoproperty, e.g. to keep in a
        subscription; compaction of ``geoproperty`` is up to the caller."""
        return {
            "georel": self.georel_text or self.georel,
            "geometry": self.geometry,
            "coordinates": _thaw(self.coordinates),
            "geoproperty": self.geoproperty,
        }

    def bbox(self) -> tuple[float, float, float, float] | None:
        """(min_lon, min_lat, max_lon, max_lat) that every matching target geometry intersects,
        for an R*Tree prefilter; None when no box can be given (disjoint, minDistance).

        within: target ⊆ reference; contains: target ⊇ reference; intersects/equals/overlaps
        share points with the reference: the reference's own box is enough. near;maxDistance
        grows it by the distance in degrees, bounded conservatively (see ``_M_PER_DEG_*``) with
        the longitude step taken at the band's highest latitude; when the band reaches a pole or
        the box would cross the antimeridian, the full longitude range is returned."""
        if self.georel == "disjoint" or self.min_distance is not None:
            return None
        min_lon, min_lat, max_lon, max_lat = (float(v) for v in self.shape.bounds)
        if self.max_distance is None:
            return (min_lon, min_lat, max_lon, max_lat)
        d = self.max_distance
        dlat = d / _M_PER_DEG_LAT
        south, north = min_lat - dlat, max_lat + dlat
        if south <= -90 or north >= 90:
            return (-180.0, max(south, -90.0), 180.0, min(north, 90.0))
        # Every point of a geodesic of length <= d from the reference stays in [south, north],
        # where a parallel's radius is at least a·cos(phi_max): dlon <= d / (a·cos(phi_max)).
        cos_phi = math.cos(math.radians(max(abs(south), abs(north))))
        dlon = d / (_M_PER_DEG_LON_EQ * cos_phi)
        west, east = min_lon - dlon, max_lon + dlon
        if west < -180 or east > 180:
            west, east = -180.0, 180.0
        return (west, south, east, north)

    def matches(self, geometry: dict | str | bytes) -> bool:
        """Whether a target geometry (a GeoJSON geometry dict, or its JSON text as the store
        keeps it) satisfies the geo-query. A value that is not a usable geometry never matches."""
        try:
            if isinstance(geometry, str | bytes):
                return self._match_json(geometry)
            return self._match(geometry)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError, GEOSException):
            return False

    def entity_matches(self, entity: dict) -> bool:
        """Whether a stored entity (docs/stored-form.md) matches: any GeoProperty instance of the
        target attribute matches. An entity without it never matches (§4.10)."""
        instances = entity.get("attrs", {}).get(self.geoproperty)
        if not instances:
            return False
        if isinstance(instances, dict):
            instances = [instances]
        for inst in instances:
            if isinstance(inst, dict) and inst.get("type") == "GeoProperty":
                value = inst.get("value")
                if isinstance(value, dict) and self.matches(value):
                    return True
        return False

    def distance(self, geometry: dict) -> float:
        """Minimum geodesic distance (m) between a target GeoJSON geometry and the reference."""
        if geometry["type"] == "Point":
            c = geometry["coordinates"]
            return self._distance_xy(float(c[0]), float(c[1]))
        return self._distance_shape(_shape_of(geometry))

    # -- evaluation --------------------------------------------------------------------------

    def _match_json(self, text: str | bytes) -> bool:
        # Small values (points) are cheaper to read with orjson; larger shapes are parsed by
        # GEOS once and cached by their text, so a repeated scan does not rebuild them.
        if len(text) < 120:
            value = orjson.loads(text)
            if value.get("type") == "Point":
                return self._match(value)
        return self._match_shape(_shape_from_json(text))

    def _match(self, geometry: dict) -> bool:
        if geometry["type"] == "Point":
            c = geometry["coordinates"]
            x, y = float(c[0]), float(c[1])
            rel = self.georel
            if rel == "near":
                return self._compare(self._distance_xy(x, y))
            if rel == "within":  # a point is within G exactly when G contains it
                return bool(_contains_xy(self.shape, x, y))
            if rel == "intersects":
                return bool(_intersects_xy(self.shape, x, y))
            if rel == "disjoint":
                return not _intersects_xy(self.shape, x, y)
        return self._match_shape(_shape_of(geometry))

    def _match_shape(self, target: BaseGeometry) -> bool:
        rel = self.georel
        ref = self.shape
        # The prepared reference is the subject of each predicate: within(T, R) = contains(R, T).
        if rel == "near":
            return self._compare(self._distance_shape(target))
        if rel == "within":
            return ref.contains(target)
        if rel == "contains":
            return ref.within(target)
        if rel == "intersects":
            return ref.intersects(target)
        if rel == "disjoint":
            return ref.disjoint(target)
        if rel == "overlaps":
            return ref.overlaps(target)
        return ref.equals(target)

    def _compare(self, distance: float) -> bool:
        if self.max_distance is not None:
            return distance <= self.max_distance
        return distance >= self.min_distance  # type: ignore[operator]

    def _distance_xy(self, x: float, y: float) -> float:
        if self.geometry == "Point":
            return _GEOD.inv(self.coordinates[0], self.coordinates[1], x, y)[2]
        return _distance_point_geom(x, y, self.shape)

    def _distance_shape(self, target: BaseGeometry) -> float:
        if target.geom_type == "Point":
            return self._distance_xy(target.x, target.y)
        if self.geometry == "Point":
            return _distance_point_geom(self.coordinates[0], self.coordinates[1], target)
        return _distance_geoms(target, self.shape)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _parse_georel(text: Any) -> tuple[str, float | None, float | None]:
    if not isinstance(text, str):
        raise BadRequestData(f"georel must be a string, got {_short(text)}")
    if text in TOPOLOGICAL_GEORELS:
        return text, None, None
    rel, semicolon, modifier = text.partition(";")
    if rel != "near":
        raise BadRequestData(
            f"georel {_short(text)} is not valid; expected near;maxDistance==<m>, "
            f"near;minDistance==<m>, or one of {', '.join(TOPOLOGICAL_GEORELS)}"
        )
    if not semicolon:
        raise BadRequestData(
            "georel 'near' needs one distance modifier: near;maxDistance==<metres> "
            "or near;minDistance==<metres>"
        )
    if ";" in modifier:
        # §4.10 nearRel carries exactly one distance modifier.
        raise BadRequestData(f"georel {_short(text)}: 'near' takes exactly one distance modifier")
    name, equal, number = modifier.partition("==")
    if name not in ("maxDistance", "minDistance") or not equal:
        raise BadRequestData(
            f"georel {_short(text)}: the modifier must be maxDistance==<metres> or "
            "minDistance==<metres>"
        )
    value = float(number) if _POSITIVE_NUMBER.fullmatch(number) else math.nan
    if not (0 < value < math.inf):  # also false for NaN
        raise BadRequestData(
            f"georel {_short(text)}: {name} must be a positive, non-zero number of metres"
        )
    if name == "maxDistance":
        return "near", value, None
    return "near", None, value


def _load_coordinates(coordinates: Any) -> Any:
    if isinstance(coordinates, str | bytes):
        try:
            coordinates = orjson.loads(coordinates)
        except orjson.JSONDecodeError:
            text = coordinates.decode() if isinstance(coordinates, bytes) else coordinates
            try:
                # A JSON number never starts with "+": there it is a space that the client
                # encoded the HTML-form way ("[1,+2]" for "[1, 2]"), as Python's requests does,
                # while query strings keep "+" literal for q's times (http/middleware.py).
                coordinates = orjson.loads(text.replace("+", " "))
            except orjson.JSONDecodeError:
                raise BadRequestData(
                    f"coordinates {_short(coordinates)} is not a JSON array"
                ) from None
    if not isinstance(coordinates, list | tuple):
        raise BadRequestData(f"coordinates must be a JSON array, got {_short(coordinates)}")
    return coordinates


def parse_geoquery(
    georel: str | None,
    geometry: str | None,
    coordinates: str | list | None,
    geoproperty: str | None,
    expand: Callable[[str], str],
) -> GeoQuery | None:
    """Build a GeoQuery from the §4.10 parameters, as GET query parameters (``coordinates`` is the
    JSON text) or as a GeoQuery object from a body (``coordinates`` already parsed). Returns None
    when none of georel/geometry/coordinates is given (a lone ``geoproperty`` selects nothing);
    raises BadRequestData when only some are given or any is invalid. ``geoproperty`` is a term
    expanded with ``expand``; by default the core ``location``."""
    given = {"georel": georel, "geometry": geometry, "coordinates": coordinates}
    if all(v is None for v in given.values()):
        return None
    missing = [name for name, v in given.items() if v is None]
    if missing:
        raise BadRequestData(
            "a geo-query needs georel, geometry and coordinates together; missing: "
            + ", ".join(missing)
        )
    rel, max_distance, min_distance = _parse_georel(georel)
    what = "geo-query coordinates"
    kind = _check_type(geometry, "geo-query geometry")
    coords = _load_coordinates(coordinates)
    _check_coordinates(kind, coords, what)
    try:
        shape = _build(kind, coords)
    except GEOSException as exc:
        raise BadRequestData(f"{what}: the {kind} is not a valid geometry ({exc})") from None
    _check_valid(shape, kind, what)
    if geoproperty is None:
        iri = CORE_LOCATION
    elif isinstance(geoproperty, str) and geoproperty:
        iri = expand(geoproperty)
    else:
        raise BadRequestData(f"geoproperty must be an attribute name, got {_short(geoproperty)}")
    return GeoQuery(
        georel=rel,
        geometry=kind,
        coordinates=_freeze(coords),
        geoproperty=iri,
        max_distance=max_distance,
        min_distance=min_distance,
        georel_text=georel,  # type: ignore[arg-type]
        shape=shape,
    )


__all__ = [
    "CORE_LOCATION",
    "DENSIFY_DEG",
    "GEOMETRY_TYPES",
    "GEORELS",
    "GeoQuery",
    "distance_m",
    "geometry_bbox",
    "parse_geoquery",
    "validate_geojson_geometry",
]
