"""q semantics on hand-made stored entities (§4.9), checked in memory and in SQLite alike."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from cidade.ngsild.query.q import evaluate, parse_q, temporal
from cidade.store.sqlite.q import install_sqlite_functions, to_sqlite

D = "https://uri.etsi.org/ngsi-ld/default-context/"


def expand(term: str) -> str:
    return term if ":" in term else D + term


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


CAR = {
    "id": "urn:ngsi-ld:Car:1",
    "type": [D + "Car"],
    "createdAt": "2026-01-01T00:00:00.000000Z",
    "modifiedAt": "2026-01-02T00:00:00.000000Z",
    "attrs": {
        D + "speed": [
            prop(80, observedAt="2026-01-01T10:00:00.000000Z", unitCode="KMH"),
            prop(
                95.5, datasetId="urn:ngsi-ld:Dataset:gps", observedAt="2026-01-01T11:00:00.000000Z"
            ),
        ],
        D + "brandName": [prop("Mercedes")],
        D + "zero": [prop("0")],
        D + "flag": [prop(True)],
        D + "nothing": [prop(None)],
        D + "sizes": [prop([1, 5, 9])],
        D + "words": [prop(["blue", "black", "green"])],
        D + "empty": [prop([])],
        D + "mixed": [prop([7, "7", False])],
        D + "address": [
            prop(
                {"city": "Berlin", "street": "Ulrich Strasse", "geo": {"zip": 10115, "n": None}},
                **{D + "verified": prop(True, observedAt="2025-12-31T23:00:00.000000Z")},
            )
        ],
        D + "sensor": [
            prop(
                40,
                **{
                    D + "rawdata": prop({"airquality": {"particulate": 40, "PM20": 85}}),
                    D + "calibration": {
                        "type": "Relationship",
                        "object": "urn:ngsi-ld:Lab:2",
                        D + "validUntil": prop("2027-01-01"),
                    },
                },
            )
        ],
        D + "dateObserved": [prop({"@type": "DateTime", "@value": "2026-03-01T12:00:00+02:00"})],
        D + "dates": [prop([{"@type": "Date", "@value": "2026-03-01"}, "2026-04-01"])],
        D + "opening": [prop("08:30:00Z")],
        D + "isParked": [
            {"type": "Relationship", "object": "urn:ngsi-ld:OffStreetParking:Downtown1"}
        ],
        D + "owners": [
            {"type": "Relationship", "object": ["urn:ngsi-ld:Person:1", "urn:ngsi-ld:Person:2"]}
        ],
        D + "route": [
            {"type": "ListRelationship", "objectList": ["urn:ngsi-ld:Stop:1", "urn:ngsi-ld:Stop:2"]}
        ],
        D + "color": [
            {"type": "LanguageProperty", "languageMap": {"fr": "rouge", "en": "red", "de": "rot"}}
        ],
        D + "names": [
            {
                "type": "LanguageProperty",
                "languageMap": {"fr": ["chat", "rouge"], "en": ["red", "cat"]},
            }
        ],
        D + "category": [{"type": "VocabProperty", "vocab": D + "commercial"}],
        D + "readings": [{"type": "ListProperty", "valueList": [3, 4, 5]}],
        D + "parkingTickets": [
            {
                "type": "JsonProperty",
                "json": {"id": "85a6cc52", "value": "Overstay 60 minutes", "n": 2},
            }
        ],
        D + "rawJson": [{"type": "JsonProperty", "json": {"@value": 5}}],
        D + "location": [
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-8.61, 41.15]}}
        ],
    },
}


@pytest.fixture(scope="module")
def conn() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    install_sqlite_functions(db)
    db.execute("CREATE TABLE entities(doc TEXT)")
    db.execute("INSERT INTO entities VALUES (?)", (json.dumps(CAR, ensure_ascii=False),))
    yield db
    db.close()


def check(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    node = parse_q(q, expand)
    assert evaluate(node, CAR) is expected, f"evaluate: {q}"
    sql, params = to_sqlite(node, "doc")
    (count,) = conn.execute(f"SELECT count(*) FROM entities WHERE {sql}", params).fetchone()
    assert bool(count) is expected, f"sqlite: {q}"


def cases(*pairs: tuple[str, bool]) -> Any:
    return pytest.mark.parametrize(("q", "expected"), pairs, ids=[q for q, _ in pairs])


@cases(
    ("speed", True),
    ("!speed", False),
    ("unknown", False),
    ("!unknown", True),
    ("nothing", True),
    ("address.verified", True),
    ("address.missing", False),
    ("!address.missing", True),
    ("speed.observedAt", True),
    ("speed.unitCode", True),
    ("brandName.observedAt", False),
    ("address[city]", True),
    ("address[postcode]", False),
    ("address[geo.n]", True),  # present with a JSON null: defined
    ("address[city.x]", False),  # cannot walk into a string
    ("sizes[0]", False),  # brackets walk objects, not arrays
    ("color[en]", True),
    ("color[pt]", False),
    ("color[*]", True),
)
def test_existence(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # any instance (datasetId) may match
    ("speed==80", True),
    ("speed==95.5", True),
    ("speed==80.0", True),
    ("speed>90", True),
    ("speed>100", False),
    ("speed<81", True),
    ("speed>=95.5", True),
    ("speed<=79", False),
    ("speed!=80", True),  # the gps instance is not 80
    ("speed!=80,95.5", False),
    ("speed==1,80", True),
    ("speed==81..96", True),
    ("speed==81..95", False),
    ("speed==96..100", False),
    ("speed!=0..100", False),
    ("speed!=81..90", True),
    ("speed.datasetId==urn:ngsi-ld:Dataset:gps", True),
    ('speed.unitCode=="KMH"', True),
    ("speed.observedAt>2026-01-01T10:30:00Z", True),
    ("speed.observedAt>2026-01-01T11:00:00Z", False),
    ("speed.observedAt>=2026-01-01T12:00:00+01:00", True),  # = 11:00Z
    ("speed.observedAt==2026-01-01T10:00:00.000Z", True),
    ("speed.observedAt==2026-01-01", True),  # the UTC date of the date-time
    ("speed.observedAt>2026-01-01", False),
    ("speed.observedAt<10:30:00Z", True),  # the UTC time of the date-time
    ("speed.observedAt==2026-01-01T00:00:00Z..2026-01-01T10:00:00Z", True),
    ("speed.observedAt!=2026-01-01T00:00:00Z..2026-01-01T12:00:00Z", False),
)
def test_numbers_instances_and_members(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # types never mix: == and ordering do not match, != does (§4.9 "considered unequal")
    ('speed=="80"', False),
    ('speed!="80"', True),
    ('speed>"1"', False),
    ("zero==0", False),
    ("zero!=0", True),
    ('zero=="0"', True),
    ("flag==true", True),
    ("flag==1", False),
    ("flag!=1", True),
    ("flag!=true", False),
    ("flag!=false", True),
    ('flag=="true"', False),
    ("nothing==0", False),
    ("nothing!=0", True),
    ('nothing=="null"', False),
    ("brandName>2020-01-01T00:00:00Z", False),  # not a date-time: another data type
    ("brandName!=2020-01-01T00:00:00Z", True),
    ("location==1", False),
    ("location!=1", True),
    ('location[type]=="Point"', True),
    ("location[coordinates]>41", True),
    ("location[coordinates]==-8.61", True),
)
def test_type_discipline(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # §4.9 Equal: "Is included in the target value, if the latter is an array"
    ("sizes==5", True),
    ("sizes==4", False),
    ("sizes>8", True),
    ("sizes<1", False),
    ("sizes==6..8", False),
    ("sizes==2..6", True),
    ("sizes==4,9", True),
    ('words=="red"', False),
    ('words=="black"', True),
    # §4.9 Unequal: "Is not included in the target value, if the latter is an array"
    ('words!="red"', True),
    ('words!="black"', False),
    ('words!="red","yellow"', True),
    ('words!="red","green"', False),
    ("sizes!=2..4", True),
    ("sizes!=4..5", False),
    ("empty==1", False),
    ("empty!=1", True),
    ("mixed==7", True),
    ('mixed=="7"', True),
    ("mixed==false", True),
    ("mixed!=7", False),
    ("mixed!=8", True),
    ("readings==4", True),
    ("readings!=4", False),
    ("readings>4", True),
)
def test_array_targets(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    ('brandName=="Mercedes"', True),
    ('brandName!="Mercedes"', False),
    ('brandName!="Volvo"', True),
    ('brandName>"M"', True),
    ('brandName<"M"', False),
    ('brandName=="A".."N"', True),
    ('brandName=="Mercedes-Benz"', False),
    # ~= finds the pattern anywhere (POSIX regexec / re.search); anchors ask for more
    ('brandName~="rced"', True),
    ('brandName~="^Merc"', True),
    ('brandName~="^rced"', False),
    ('brandName~="^Mercedes$"', True),
    ("brandName~=(?i)^MERC", True),
    ('brandName!~="^Merc"', False),
    ('brandName!~="^Volvo"', True),
    # non-strings never match either pattern operator (§4.9)
    ("speed~=8", False),
    ("speed!~=8", False),
    ("speed!~=x", False),
    ('words~="^bl"', True),
    ('words!~="^bl"', False),
    ('words!~="^r"', True),
    ('mixed!~="x"', False),  # 7 and false are not strings
    ("empty!~=x", True),
    ("unknown!~=x", False),
)
def test_strings_and_patterns(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # sub-attributes and the §4.9 EXAMPLE 9/10/11 bracket paths
    ("address.verified==true", True),
    ("address.verified.observedAt<2026-01-01T00:00:00Z", True),
    ('address[city]=="Berlin"', True),
    ('address[city]=="Paris"', False),
    ('address[postcode]!="Berlin"', False),  # the target must exist, even for !=
    ("address[geo.zip]==10115", True),
    ("address[geo][zip]==10115", True),
    ("address[geo.n]==0", False),
    ("address[geo.n]!=0", True),
    ("sensor==40", True),
    ("sensor.rawdata[airquality.particulate]==40", True),
    ("sensor.rawdata[airquality.missing]==40", False),
    ("sensor.calibration==urn:ngsi-ld:Lab:2", True),
    ("sensor.calibration.validUntil==2027-01-01", True),
    ('parkingTickets[value]=="Overstay 60 minutes"', True),
    ("parkingTickets[n]>1", True),
    ("parkingTickets==1", False),
    ("parkingTickets!=1", True),
    # a JsonProperty's JSON is opaque: {"@value": 5} is not a typed literal there
    ("rawJson==5", False),
    ("rawJson[@value]==5", True),
)
def test_paths(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # typed literals compare as their @value, temporally when the q literal is temporal
    ("dateObserved==2026-03-01T10:00:00Z", True),
    ("dateObserved>2026-03-01T10:00:00Z", False),
    ("dateObserved<2026-03-01T10:00:01Z", True),
    ('dateObserved=="2026-03-01T12:00:00+02:00"', True),  # as a plain string: as written
    ("dateObserved==2026-03-01", True),
    ("dateObserved==2026-03-01..2026-03-31", True),
    ("dates==2026-03-01", True),
    ("dates>2026-03-15", True),
    ("dates>2026-04-01", False),
    ("opening<09:00:00Z", True),
    ("opening==08:30:00.000Z", True),
    ("opening==08:30", True),
    ("opening>2026-01-01T00:00:00Z", False),
)
def test_temporal(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    ("isParked==urn:ngsi-ld:OffStreetParking:Downtown1", True),
    ('isParked=="urn:ngsi-ld:OffStreetParking:Downtown1"', True),
    ("isParked!=urn:ngsi-ld:OffStreetParking:Downtown1", False),
    ("isParked!=urn:ngsi-ld:OffStreetParking:Other", True),
    ("isParked==urn:a:b,urn:ngsi-ld:OffStreetParking:Downtown1", True),
    # §4.9: a Relationship only answers equal and unequal
    ('isParked>"urn:a"', False),
    ('isParked<"urn:z"', False),
    ('isParked~="Downtown"', False),
    ('isParked!~="Downtown"', False),
    ('isParked=="urn:a".."urn:z"', True),  # a range is an equal
    ("isParked.observedAt", False),
    ("owners==urn:ngsi-ld:Person:2", True),
    ("owners!=urn:ngsi-ld:Person:2", False),
    ("owners!=urn:ngsi-ld:Person:3", True),
    ("route==urn:ngsi-ld:Stop:1", True),
    ("route!=urn:ngsi-ld:Stop:3,urn:ngsi-ld:Stop:4", True),
    ('route>"urn"', False),
    # VocabProperty values are stored expanded
    ("category==https://uri.etsi.org/ngsi-ld/default-context/commercial", True),
    ('category=="commercial"', False),
    ('category~="commercial$"', True),
)
def test_relationships_and_vocab(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    # §4.9 LanguageProperty examples
    ('color[en]=="red"', True),
    ('color[en]=="rouge"', False),
    ('color[*]=="rouge"', True),
    ('color=="rot"', True),
    ('color[*]=="blau"', False),
    ('color[en]!="rouge"', True),
    ('color[en]!="red"', False),
    ('color[*]!="red"', False),
    ('color[*]!="blau"', True),
    ('color[pt]!="red"', False),
    ('names[en]=="cat"', True),
    ('names[fr]=="cat"', False),
    ('names=="chat"', True),
    ('names!="chat"', False),
    ('names[en]!="chat"', True),
    ('color~="^ro"', True),
    ('color[en]~="^ro"', False),
    ('color>"s"', False),
    ('names>"q"', True),
)
def test_language_properties(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


@cases(
    ("speed>90;brandName", True),
    ("speed>100;brandName", False),
    ("speed>100|brandName", True),
    ("speed>100|unknown", False),
    ("unknown;speed>100|brandName", True),
    ("unknown;(speed>100|brandName)", False),
    ('((speed>50|rpm>3000);brandName=="Mercedes")', True),
    ("(speed>=20;speed<=25)|capacity<=10", False),
    ("!unknown;!brandName|flag==true", True),
)
def test_logic(conn: sqlite3.Connection, q: str, expected: bool) -> None:
    check(conn, q, expected)


def test_entity_without_attrs(conn: sqlite3.Connection) -> None:
    bare = {"id": "urn:x", "type": [D + "T"]}
    assert evaluate(parse_q("!a", expand), bare)
    assert not evaluate(parse_q("a!=1", expand), bare)
    assert not evaluate(parse_q("a", expand), bare)


def test_temporal_normalization() -> None:
    assert temporal("DateTime", "2026-01-01T01:00:00+01:00") == "2026-01-01T00:00:00.000000Z"
    assert temporal("DateTime", "2026-01-01T00:00:00") == "2026-01-01T00:00:00.000000Z"
    assert temporal("DateTime", "2026-01-01T00:00Z") == "2026-01-01T00:00:00.000000Z"
    assert temporal("DateTime", "0099-01-01T00:00:00Z") == "0099-01-01T00:00:00.000000Z"
    assert temporal("DateTime", "2026-01-01") is None
    assert temporal("DateTime", "0001-01-01T00:00:00+01:00") is None  # before year 1 in UTC
    assert temporal("Date", "2026-01-01T23:30:00-01:00") == "2026-01-02"
    assert temporal("Date", "2026-02-30") is None
    assert temporal("Time", "2026-01-01T23:30:00-01:00") == "00:30:00.000000Z"
    assert temporal("Time", "23:59:60") is None
    assert temporal("Time", 5) is None
    assert temporal("Decade", "2020") is None


def test_compiled_tests_are_per_term_not_per_equal_term() -> None:
    # Compare(p, "==", 1) == Compare(p, "==", True) as dataclasses; their tests must differ.
    entity = {"id": "urn:x", "type": [D + "T"], "attrs": {D + "f": [prop(True)]}}
    one, true = parse_q("f==1", expand), parse_q("f==true", expand)
    assert one == true  # dataclass equality: True == 1
    assert not evaluate(one, entity)
    assert evaluate(true, entity)
    assert not evaluate(one, entity)


def test_largest_queries_run_in_sqlite(conn: sqlite3.Connection) -> None:
    from cidade.ngsild.query.q import MAX_DEPTH, MAX_LENGTH, MAX_TERMS

    queries = [
        ";".join(["speed==1..100"] * MAX_TERMS),
        "|".join(['brandName~="^x"'] * MAX_TERMS),
        "(" * MAX_DEPTH + "speed>1" + ")" * MAX_DEPTH,
        ("speed==" + ",".join(["1"] * (MAX_LENGTH // 2)))[: MAX_LENGTH - 1] + "0",
        'brandName=="' + "x" * (MAX_LENGTH - 13) + '"',
    ]
    for q in queries:
        node = parse_q(q, expand)
        sql, params = to_sqlite(node)
        sql = sql.replace("e.doc", "doc")
        (count,) = conn.execute(f"SELECT count(*) FROM entities WHERE {sql}", params).fetchone()
        assert bool(count) is evaluate(node, CAR), q[:40]


def test_non_ascii_names_and_keys(conn: sqlite3.Connection) -> None:
    # SQLite matches path labels against the raw JSON text: documents are written unescaped.
    entity = {
        "id": "urn:x",
        "type": [D + "T"],
        "attrs": {D + "temperatura_média": [prop({"órgão": "ção"})]},
    }
    db = sqlite3.connect(":memory:")
    install_sqlite_functions(db)
    db.execute("CREATE TABLE entities(doc TEXT)")
    db.execute("INSERT INTO entities VALUES (?)", (json.dumps(entity, ensure_ascii=False),))
    for q in [
        "temperatura_média",
        'temperatura_média[órgão]=="ção"',
        "temperatura_média[órgão]~=ç",
    ]:
        node = parse_q(q, expand)
        assert evaluate(node, entity)
        sql, params = to_sqlite(node, "doc")
        assert db.execute(f"SELECT count(*) FROM entities WHERE {sql}", params).fetchone() == (1,)


def test_sqlite_functions_never_raise(conn: sqlite3.Connection) -> None:
    rows = conn.execute(
        "SELECT regexp('^a', 'abc'), regexp('^b', 'abc'), regexp('(', 'abc'), regexp(1, 'a'),"
        " regexp('a', NULL), 'abc' REGEXP 'b', ngsi_temporal('DateTime', '2020-01-01T01:00:00+01:00'),"
        " ngsi_temporal('Date', 5), ngsi_temporal(NULL, 'x'), ngsi_temporal('Time', 'noon')"
    ).fetchone()
    assert rows == (1, 0, 0, 0, 0, 1, "2020-01-01T00:00:00.000000Z", None, None, None)
