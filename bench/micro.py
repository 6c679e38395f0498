"""The hub's innermost loops, each next to the bare operation it wraps, in one process.

- term lookups: ``TermMap.expand`` / ``compact`` of a cached user @context, per lookup, next to a
  plain dict lookup of the same names (the floor a cache can reach);
- geo checks: ``GeoQuery.matches`` of a point against a polygon with a hole (``within``) and
  against a 2 km ``near`` (geodesic), per check, next to shapely's own ``contains`` of a
  prepared polygon (the layer ``within`` stands on).

These were timed assertions in the tests; a timing is a figure to report, not a test to fail
on a busy machine.

    .venv/bin/python bench/micro.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import shapely

from cidade.hub.jsonld import ContextResolver
from cidade.ngsild.query.geo import parse_geoquery

USER = {
    "ex": "http://example.org/ns#",
    "schema": "https://schema.org/",
    "powerState": "ex:powerState",
    "brand": {"@id": "schema:brand"},
}
NAMES = ["powerState", "brand", "location", "luminosity", "ex:lampType"]
SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
HOLE = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
CLERIGOS = (-8.6146, 41.1456)


def best_per_call(rounds: int, calls: int, body: Callable[[], None]) -> float:
    """The fastest of ``rounds`` runs of ``body``, in nanoseconds per one of its ``calls``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        body()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e9


def terms(rounds: int) -> None:
    resolver = ContextResolver(allow_fetch=False)
    tm = asyncio.run(resolver.term_map(USER))
    iris = [tm.expand(n) for n in NAMES]
    plain = dict(zip(NAMES, iris, strict=True))
    loops = 40_000

    def ours() -> None:
        for _ in range(loops):
            for n in NAMES:
                tm.expand(n)
            for i in iris:
                tm.compact(i)

    def floor() -> None:
        for _ in range(loops):
            for n in NAMES:
                plain.get(n)
            for n in NAMES:
                plain.get(n)

    calls = loops * 2 * len(NAMES)
    ns, base = best_per_call(rounds, calls, ours), best_per_call(rounds, calls, floor)
    print(f"term lookup        {ns:8.0f} ns   dict.get {base:6.0f} ns   ratio {ns / base:5.1f}")


def geo(rounds: int) -> None:
    within = parse_geoquery(
        "within", "Polygon", str([SQUARE, HOLE]).replace(" ", ""), None, lambda n: n
    )
    near = parse_geoquery("near;maxDistance==2000", "Point", str(list(CLERIGOS)), None, lambda n: n)
    assert within is not None and near is not None
    points = [
        {"type": "Point", "coordinates": [i % 10 + 0.5, (i * 7) % 10 + 0.5]} for i in range(2000)
    ]
    nearby = [
        {"type": "Point", "coordinates": [CLERIGOS[0] + i * 1e-4, CLERIGOS[1] + i * 1e-4]}
        for i in range(2000)
    ]
    polygon = shapely.Polygon(SQUARE, [HOLE])
    shapely.prepare(polygon)
    bare = [shapely.Point(p["coordinates"]) for p in points]

    def check_within() -> None:
        for p in points:
            within.matches(p)

    def check_near() -> None:
        for p in nearby:
            near.matches(p)

    def floor() -> None:
        for p in bare:
            polygon.contains(p)

    w = best_per_call(rounds, len(points), check_within)
    n = best_per_call(rounds, len(nearby), check_near)
    base = best_per_call(rounds, len(bare), floor)
    print(
        f"geo within         {w:8.0f} ns   shapely contains {base:6.0f} ns   ratio {w / base:5.1f}"
    )
    print(
        f"geo near 2 km      {n:8.0f} ns   shapely contains {base:6.0f} ns   ratio {n / base:5.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    terms(args.rounds)
    geo(args.rounds)


if __name__ == "__main__":
    main()
