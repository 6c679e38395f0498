"""q on PostgreSQL: ``postgres_q.to_postgres`` selects exactly what ``q.evaluate`` accepts.

Against a real PostgreSQL 15 (``CIDADE_TEST_POSTGRES``, default
postgresql://postgres@127.0.0.1:5432/test), in a schema of its own that is dropped at the end;
skipped, saying why, when the server cannot be reached.

1. Random q trees over random stored entities (the strategies of test_q_property), inserted as
   ``jsonb`` rows: the rows the fragment selects are the entities ``evaluate`` accepts.
2. The same on a small universe where types collide, randomly and exhaustively.
3. Hand-written cases for each operator, with the expected answer written out.
4. The pieces PostgreSQL cannot take from Python as they are, checked directly against Python:
   temporal normalization (``q.temporal``) and regular expressions (``re.search``).
5. The prefilters reach the GIN indexes they are written for.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import uuid
import warnings
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.q import (
    Compare,
    InList,
    Path,
    Pattern,
    QNode,
    Range,
    evaluate,
    parse_q,
    render_q,
    temporal,
)
from cidade.store.postgres.q import GinIndex, to_postgres, translate_regex
from tests.conftest import PG_URL, service_missing
from tests.hub.test_q_property import (
    DATETIMES,
    FIXED,
    Q_ALPHABET,
    D,
    _exhaustive_entities,
    _exhaustive_terms,
    entity,
    expand,
    small_entities,
    small_terms,
    trees,
)


class Postgres:
    """One connection on a private event loop (the tests are synchronous) and a private schema."""

    def __init__(self) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.schema = f"q_test_{uuid.uuid4().hex[:12]}"
        self.table = f'"{self.schema}".entities'
        try:
            # JIT off, as the store should have it: the fragment's nested set-returning
            # functions make PostgreSQL's cost estimates large, and compiling them takes seconds.
            self.conn = self.run(asyncpg.connect(PG_URL, timeout=5, server_settings={"jit": "off"}))
        except BaseException:
            self.loop.close()
            raise
        self.run(
            self.conn.execute(
                f'CREATE SCHEMA "{self.schema}";'
                f" CREATE TABLE {self.table} (id int PRIMARY KEY, doc jsonb NOT NULL)"
            )
        )

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
            self.run(self.conn.close())
        finally:
            self.loop.close()

    def fetch(self, sql: str, *params: Any) -> list[Any]:
        return self.run(self.conn.fetch(sql, *params))

    def load(self, docs: list[str], table: str | None = None) -> None:
        table = table or self.table

        async def go() -> None:
            async with self.conn.transaction():
                await self.conn.execute(f"DELETE FROM {table}")
                await self.conn.execute(
                    f"INSERT INTO {table} (id, doc)"
                    " SELECT n - 1, d::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n)",
                    docs,
                )

        self.run(go())

    def select(
        self, node: QNode, table: str | None = None, index: GinIndex = "jsonb_ops"
    ) -> set[int]:
        # A parameter ahead of the fragment's, as the store has (the tenant). The prefilters
        # are part of the SQL whatever index the table has: "jsonb_ops" writes them all.
        sql, params = to_postgres(node, "e.doc", 2, index=index)
        rows = self.fetch(
            f"SELECT id FROM {table or self.table} AS e WHERE e.id >= $1 AND ({sql})", 0, *params
        )
        return {row["id"] for row in rows}


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    try:
        db = Postgres()
    except Exception as exc:  # whatever keeps us from the server is a reason to skip, printed
        where = urllib.parse.urlsplit(PG_URL)
        service_missing(
            f"PostgreSQL not reachable at {where.hostname}:{where.port or 5432}: {exc!r}"
        )
    try:
        yield db
    finally:
        db.close()


def docs_of(entities: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e, ensure_ascii=False) for e in entities]


def agree(
    pg: Postgres, node: QNode, entities: list[dict[str, Any]], index: GinIndex = "jsonb_ops"
) -> tuple[set[int], set[int]]:
    docs = docs_of(entities)
    # jsonb cannot hold NUL in a string; the hub's stored form never has it there either.
    assume(not any("\\u0000" in d for d in docs))
    pg.load(docs)
    return pg.select(node, index=index), {i for i, e in enumerate(entities) if evaluate(node, e)}


indexes = st.sampled_from(["jsonb_ops", "jsonb_path_ops", None])


# -- 1, 2: the fragment selects what evaluate accepts ---------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, entities=st.lists(entity(), min_size=2, max_size=5), index=indexes)
def test_postgres_selects_what_evaluate_accepts(
    pg: Postgres, tree: QNode, entities: list[dict[str, Any]], index: GinIndex
) -> None:
    node = parse_q(render_q(tree), expand)
    by_sql, by_eval = agree(pg, node, entities, index)
    assert by_sql == by_eval, render_q(node)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(term=small_terms(), entities=small_entities, index=indexes)
def test_single_terms_agree_on_colliding_types(
    pg: Postgres, term: QNode, entities: list[dict[str, Any]], index: GinIndex
) -> None:
    by_sql, by_eval = agree(pg, parse_q(render_q(term), expand), entities, index)
    assert by_sql == by_eval, render_q(term)


def test_exhaustive_small_universe(pg: Postgres) -> None:
    entities = _exhaustive_entities()
    pg.load(docs_of(entities))
    for term in _exhaustive_terms():
        by_eval = {i for i, e in enumerate(entities) if evaluate(term, e)}
        for index in ("jsonb_ops", "jsonb_path_ops"):
            by_sql = pg.select(term, index=index)  # type: ignore[arg-type]
            assert by_sql == by_eval, (render_q(term), [entities[i] for i in by_sql ^ by_eval])


def test_fixed_entities(pg: Postgres) -> None:
    pg.load(docs_of(FIXED))
    for text in ["a", "!a", "a==1", "a!=1", "a==2;b==urn:a:1", 'ex:c=="y"', "a.s>2", "a[k.m]"]:
        node = parse_q(text, expand)
        assert pg.select(node) == {i for i, e in enumerate(FIXED) if evaluate(node, e)}, text


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(Q_ALPHABET), max_size=25).map("".join))
def test_any_q_text_runs_and_agrees(pg: Postgres, text: str) -> None:
    """Whatever q parses, the fragment is valid SQL that agrees (or a regex is a clean 400)."""
    try:
        node = parse_q(text, expand)
        sql, params = to_postgres(node, "e.doc", 2)
    except BadRequestData as exc:
        assert exc.status == 400 and exc.detail
        return
    pg.load(docs_of(FIXED))
    rows = pg.fetch(f"SELECT id FROM {pg.table} AS e WHERE e.id >= $1 AND ({sql})", 0, *params)
    assert {r["id"] for r in rows} == {i for i, e in enumerate(FIXED) if evaluate(node, e)}, text


# -- 3: each operator, the answer written out -----------------------------------------------------


def inst(value: Any, kind: str = "Property", **extra: Any) -> dict[str, Any]:
    member = {
        "Property": "value",
        "Relationship": "object",
        "LanguageProperty": "languageMap",
        "VocabProperty": "vocab",
        "ListProperty": "valueList",
        "ListRelationship": "objectList",
        "JsonProperty": "json",
    }[kind]
    return {"type": kind, member: value, **extra}


def ent(**attrs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "urn:e", "type": [D + "T"], "attrs": {expand(k): v for k, v in attrs.items()}}


OPERATOR_ENTITIES = [
    ent(a=[inst(5)]),  # 0
    ent(a=[inst("5")]),  # 1
    ent(a=[inst(True)]),  # 2
    ent(a=[inst([1, 7, "x"])]),  # 3
    ent(a=[inst({"@type": "DateTime", "@value": "2020-01-01T01:00:00+01:00"})]),  # 4
    ent(a=[inst({"en": "street", "pt": ["rua", "via"]}, "LanguageProperty")]),  # 5
    ent(a=[inst("urn:a:1", "Relationship")]),  # 6
    ent(a=[inst({"k": {"m": 3}, "@value": 9}, "JsonProperty")]),  # 7
    ent(a=[inst(5.5, observedAt="2020-06-15T08:00:00.000000Z", datasetId="urn:ds:1")]),  # 8
    ent(b=[inst(5)]),  # 9
    ent(a=[inst(None)]),  # 10
    ent(a=[inst("Zürich"), inst("zebra", datasetId="urn:ds:2")]),  # 11
    ent(a=[inst(5, **{expand("s"): inst(10)})]),  # 12
    ent(a=[inst("line one\nline two")]),  # 13
]

OPERATOR_CASES: list[tuple[str, set[int]]] = [
    ("a", {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13}),
    ("!a", {9}),
    ("a.s", {12}),
    ("a[k]", {7}),
    ("a[k.m]", {7}),
    ("a.observedAt", {8}),
    ("a==5", {0, 12}),  # 5 is not "5", not 5.5; the sub-attribute is not the value
    ('a=="5"', {1}),
    ("a==true", {2}),
    ("a==7", {3}),  # any element of an array
    ("a!=7", {0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13}),  # no element equal; types differ
    ("a==2020-01-01T00:00:00Z", {4}),  # typed literal, compared in UTC
    ('a=="rua"', {5}),  # any language
    ('a[pt]=="via"', {5}),
    ('a[en]=="via"', set()),
    ("a==urn:a:1", {6}),
    ("a[k.m]==3", {7}),
    ("a==9", set()),  # a JsonProperty's "@value" is opaque
    ("a.s==10", {12}),
    ("a.s>=10", {12}),
    ("a>5", {3, 8}),  # 7 in the array, 5.5
    ("a>=5", {0, 3, 8, 12}),
    ("a<1", set()),
    ("a<=1", {3}),
    ('a>"y"', {11}),  # "zebra"; code points: "Z" < "a" < "y" < "z"
    ('a<"a"', {1, 4, 11}),  # "5", the typed literal's "2020-...", "Zürich"
    ("a==1..5", {0, 3, 12}),
    ("a!=1..5", {1, 2, 4, 5, 6, 7, 8, 10, 11, 13}),
    ('a=="a".."zz"', {3, 5, 6, 11, 13}),  # ranges do answer relationships
    ("a.observedAt==2020-06-15T05:00:00-03:00", {8}),
    ("a.observedAt>=2020-06-15", {8}),  # the Date of a DateTime
    ("a.observedAt>2020-06-15", set()),
    ("a.observedAt<08:00:01Z", {8}),  # the Time of a DateTime
    ("a.datasetId==urn:ds:1", {8}),
    ("a==5,true", {0, 2, 12}),
    ('a!="street","rua","via"', {0, 1, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13}),
    ('a~="^Z"', {11}),
    ('a~="(?i)^z"', {11}),
    ('a~="one$"', set()),  # '$' is the end (or before a final newline), not any line end
    ('a~="(?m)one$"', {13}),
    ('a~="one.line"', set()),  # '.' does not match a newline
    ('a~="(?s)one.line"', {13}),
    ('a~="\\\\bvia\\\\b"', {5}),
    ('a~="urn"', set()),  # relationships do not answer patterns
    ('a!~="^Z"', {1, 4, 5, 11, 13}),  # a non-string candidate counts as found; 11: "zebra"
    ('a!~="e"', {1, 4, 11}),
]


def test_operator_cases(pg: Postgres) -> None:
    pg.load(docs_of(OPERATOR_ENTITIES))
    for text, expected in OPERATOR_CASES:
        node = parse_q(text, expand)
        for index in ("jsonb_ops", "jsonb_path_ops", None):
            assert pg.select(node, index=index) == expected, (text, index)  # type: ignore[arg-type]


def test_operator_cases_are_evaluates_answers() -> None:
    """The written-out answers are evaluate's (so the table above documents the semantics)."""
    for text, expected in OPERATOR_CASES:
        node = parse_q(text, expand)
        by_eval = {i for i, e in enumerate(OPERATOR_ENTITIES) if evaluate(node, e)}
        assert by_eval == expected, text


NUL_AND_NUMBER_CASES = [
    Compare(Path(D + "a", names=("a",)), "==", "x\x00"),
    Compare(Path(D + "a", names=("a",)), "!=", "x\x00"),
    Compare(Path(D + "a", names=("a",)), "<", "x\x00y"),
    Compare(Path(D + "a", names=("a",)), "<=", "x\x00"),
    Compare(Path(D + "a", names=("a",)), ">", "x\x00"),
    Compare(Path(D + "a", names=("a",)), ">=", "x\x00"),
    Range(Path(D + "a", names=("a",)), "x\x00", "y\x00"),
    InList(Path(D + "a", names=("a",)), ("x\x00", "x")),
    Pattern(Path(D + "a", names=("a",)), "x\x00?"),
    Compare(Path(D + "a", names=("a",)), "<", float("inf")),
    Compare(Path(D + "a", names=("a",)), ">", float("-inf")),
    Compare(Path(D + "a", names=("a",)), "==", float("inf")),
    Compare(Path(D + "a", names=("a",)), "!=", float("inf")),
    Compare(Path(D + "a", names=("a",)), "==", float("nan")),
    Range(Path(D + "a", names=("a",)), float("-inf"), 1),
    Compare(Path(D + "a", names=("a",)), "==", 2**70),
    Compare(Path(D + "a", names=("a",)), "<", 2**70 + 1),
    Compare(Path(D + "a", names=("a",)), "==", -0.0),
    Compare(Path(D + "a", names=("a",)), "==", 0.1),
    Compare(Path(D + "a", names=("a",)), ">", 1e-300),
]


ODD_VALUES: list[Any] = ["x", "x\x01", "xy", "w", "y", "", 0, 0.1, 2**70, 2**70 + 1, -1e300]
ODD_VALUES += [5e-324, 10**400, -0.0, 'q"uo\\te', "\x7f", "\u2028", "\U0001f600", "$.a ? (@)", "'"]


def test_nul_strings_odd_strings_and_extreme_numbers(pg: Postgres) -> None:
    entities = [ent(a=[inst(v)], b=[inst({"k": v})]) for v in ODD_VALUES]
    pg.load(docs_of(entities))
    nodes = NUL_AND_NUMBER_CASES + [
        InList(Path(D + p, (), None, keys, names), ODD_VALUES[i : i + 3])  # type: ignore[arg-type]
        for p, keys, names in (("a", (), ("a",)), ("b", ("k",), ("b",)))
        for i in range(len(ODD_VALUES))
    ]
    for node in nodes:
        by_eval = {i for i, e in enumerate(entities) if evaluate(node, e)}
        for index in ("jsonb_ops", "jsonb_path_ops"):
            assert pg.select(node, index=index) == by_eval, node  # type: ignore[arg-type]


# -- 4a: temporal normalization -------------------------------------------------------------------

TEMPORAL_PIECES = {
    "year": ["0000", "0001", "1900", "2000", "2020", "2024", "9999"],
    "month": ["00", "01", "02", "06", "12", "13"],
    "day": ["00", "01", "15", "28", "29", "30", "31", "32"],
    "hour": ["00", "08", "23", "24"],
    "minute": ["00", "30", "59", "60"],
    "second": ["", ":00", ":59", ":60", ":5"],
    "fraction": ["", ".5", ".123456", ".1234567", ".999999999", "."],
    "zone": [
        *("", "Z", "+00:00", "-00:00", "+01:00", "-03:00", "+0530", "+23:59", "-23:59"),
        *("+24:00", "+05:99", "+2359", "+1", "z", "+01:00:00"),
    ],
}


@st.composite
def temporal_texts(draw: st.DrawFn) -> str:
    pick = {k: draw(st.sampled_from(v)) for k, v in TEMPORAL_PIECES.items()}
    date = f"{pick['year']}-{pick['month']}-{pick['day']}"
    time = f"{pick['hour']}:{pick['minute']}{pick['second']}"
    if pick["second"]:
        time += pick["fraction"]
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return date
    if shape == 1:
        return time + draw(st.sampled_from(["", "Z", "+01:00"]))
    if shape == 2:
        return draw(st.text(alphabet="0123456789-:T.Z+ \n", max_size=22))
    return f"{date}T{time}{pick['zone']}"


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(temporal_texts(), min_size=20, max_size=40))
def test_temporal_normalization_is_qs(pg: Postgres, texts: list[str]) -> None:
    from cidade.store.postgres.q import _temporal_sql

    for kind in ("DateTime", "Date", "Time"):
        rows = pg.fetch(
            f"SELECT {_temporal_sql(kind, 'u.s')} AS t"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY u.n",
            texts,
        )
        for text, row in zip(texts, rows, strict=True):
            assert row["t"] == temporal(kind, text), (kind, text)


def test_temporal_edges(pg: Postgres) -> None:
    from cidade.store.postgres.q import _temporal_sql

    texts = [
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC: None
        "0001-01-01T00:00:00-00:01",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:00-00:01",  # after year 9999 in UTC: None
        "2024-02-29T12:00Z",
        "2023-02-29T12:00Z",
        "2000-02-29",
        "1900-02-29",
        "2020-01-01T00:00:00+05:99",
        "2020-01-01T00:00:00+23:99",
        *DATETIMES,
    ]
    for kind in ("DateTime", "Date", "Time"):
        rows = pg.fetch(
            f"SELECT {_temporal_sql(kind, 'u.s')} AS t"
            " FROM unnest($1::text[]) WITH ORDINALITY AS u(s, n) ORDER BY u.n",
            texts,
        )
        assert [r["t"] for r in rows] == [temporal(kind, t) for t in texts], kind


# -- 4b: regular expressions ----------------------------------------------------------------------

CHARS = ["a", "b", "K", "k", "\u212a", "\u017f", "s", "S", "é", "É", "1", "\u0663", "_", " ", "\n"]
CHARS += ["-", ".", "ß", "İ", "i", "ı", "\u00b5", "\u03bc", "\U0001f600"]
ATOMS = [re.escape(c) for c in CHARS] + [
    ".",
    "[ab]",
    "[^a]",
    "[a-z]",
    "[K-k]",
    r"\d",
    r"\w",
    r"\s",
    r"\W",
    r"\D",
    r"\S",
    r"[\w-]",
    r"[^\W\d]",
    r"[\s\S]",
    r"\x41",
    r"\u00e9",
    r"\n",
    r"\t",
    r"[\]]",
    r"[\^-]",
    r"[.*+?]",
    r"\$",
    r"\(",
]
ANCHORS = ["^", "$", r"\A", r"\Z", r"\b", r"\B"]
QUANTIFIERS = ["*", "+", "?", "{2}", "{1,3}", "*?", "+?", "??", "{,2}", "{2,}", "{0}"]
FLAGS = ["(?i)", "(?m)", "(?s)", "(?a)", "(?x)", "(?is)", "(?im)"]


def regexes() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(QUANTIFIERS)).map("".join),
            st.lists(inner, min_size=2, max_size=3).map("".join),
            st.lists(inner, min_size=2, max_size=3).map("|".join),
            inner.map(lambda x: f"({x})"),
            inner.map(lambda x: f"(?:{x})"),
            inner.map(lambda x: f"(?={x})"),
            inner.map(lambda x: f"(?!{x})"),
            inner.map(lambda x: f"(?i:{x})"),
            inner.map(lambda x: f"(?-i:{x})"),
            inner.map(lambda x: f"(?s:{x})"),
            inner.map(lambda x: f"({x})\\1"),
            inner.map(lambda x: f"(?P<g>{x})(?P=g)"),
        )

    base = st.one_of(
        st.sampled_from(ATOMS),
        st.sampled_from(ANCHORS),
        st.sampled_from(ATOMS).map(lambda x: f"(?<={x})"),
        st.sampled_from(ATOMS).map(lambda x: f"(?<!{x})"),
    )
    body = st.recursive(base, extend, max_leaves=6)
    return st.tuples(st.sampled_from(["", "", "", *FLAGS]), body).map("".join)


subjects = st.lists(
    st.lists(st.sampled_from(CHARS), max_size=6).map("".join), min_size=10, max_size=25
)


def compiles(pattern: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set" and the like
            re.compile(pattern)
    except re.error:
        return False
    return True


def translated(pattern: str) -> str | None:
    try:
        return translate_regex(pattern)
    except BadRequestData:
        return None


def pg_search(pg: Postgres, are: str, texts: list[str]) -> list[bool]:
    rows = pg.fetch(
        "SELECT u.s ~ $1::text AS m FROM unnest($2::text[]) WITH ORDINALITY AS u(s, n)"
        " ORDER BY u.n",
        are,
        texts,
    )
    return [row["m"] for row in rows]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=regexes(), texts=subjects)
def test_translated_regex_finds_what_python_finds(
    pg: Postgres, pattern: str, texts: list[str]
) -> None:
    assume(compiles(pattern))
    are = translated(pattern)
    assume(are is not None)
    expected = [re.search(pattern, t) is not None for t in texts]
    assert pg_search(pg, are, texts) == expected, (pattern, are[:300])


@settings(max_examples=150, deadline=None)
@given(pattern=st.text(alphabet="ab\\()[]{}|?*+.^$-,:=!<>PgiIsmx0129dwWsSbBAZ", max_size=12))
def test_any_python_regex_translates_or_is_a_400(pg: Postgres, pattern: str) -> None:
    assume(compiles(pattern))
    try:
        are = translate_regex(pattern)
    except BadRequestData as exc:
        assert exc.status == 400
        return
    texts = ["", "a", "ab", "ba", "aab", "a\nb", "0", "A b", "(ab)", "a-b"]
    expected = [re.search(pattern, t) is not None for t in texts]
    assert pg_search(pg, are, texts) == expected, (pattern, are[:300])


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a)(?(1)b|c)",
        r"(?>a)",
        r"a*+",
        r"(?i)(a)\1",
        r"(?=(a))\1",
        r"(a)(?=\1)",
        r"((a)|(b))+\2",
        r"(?:(a)|b)*\1",
        r"a{256}",
        r"a{1,300}",
        r"(?:a{255}){255}",
        r"(?:ab|cd){1000}",
        "\\b" * 500,
        "\\w" * 200,
    ],
)
def test_untranslatable_regex_is_a_400(pattern: str) -> None:
    with pytest.raises(BadRequestData) as info:
        translate_regex(pattern)
    assert info.value.status == 400 and "PostgreSQL" in info.value.detail


def test_regex_edges(pg: Postgres) -> None:
    cases = [
        ("", ["", "a"]),
        (r"\b", ["", "a", " ", "é"]),
        (r"\B", ["", "a", " ", "ab"]),
        (r"(?a)\w\b", ["é", "ab", "aé"]),
        (r"(?i)\u212a", ["k", "K", "\u212a", "x"]),
        (r"(?i)ß", ["ß", "ẞ", "ss", "SS"]),
        (r"(?i)[^k]", ["K", "k", "\u212a", "x"]),
        (r"x$", ["x", "x\n", "x\n\n", "x\ny"]),
        (r"(?m)^b", ["a\nb", "ab", "b"]),
        (r"(a)|b\1", ["b", "a", "ba"]),
        (r"(?<=(a))b", ["ab", "b"]),
        (r"((a)|(b))?\2", ["aba", "ab", "aa"]),
        (r"(?:(a)|b)(?:c\1)*", ["ac", "aca", "bc"]),
        (r"\x00|a", ["a", "b"]),
        (r"[\x00-\x01]", ["\x01", "a"]),
        (r"\ud800|a", ["a", "b"]),
        ("a{255}", ["a" * 255, "a" * 254]),
        (r"(?:a{250}){7}", ["a" * 1750, "a" * 1749]),
        (r"(?:\b\w){12}", ["a b c d e f g h i j k l", "a b c d e f g h i j k"]),
        ("\\w" * 90, ["é" * 90, "é" * 89]),
        (r"[\W\d]+$", ["a1", "a-", "ab"]),
    ]
    for pattern, texts in cases:
        are = translate_regex(pattern)
        expected = [re.search(pattern, t) is not None for t in texts]
        assert pg_search(pg, are, texts) == expected, (pattern, are[:300])


# -- 5: indexes -----------------------------------------------------------------------------------


def index_rows(pg: Postgres, table: str, node: QNode, index: Any) -> int | None:
    """How many rows the GIN index scan returned (None: the plan used no index)."""
    sql, params = to_postgres(node, "e.doc", 1, index=index)
    rows = pg.fetch(
        f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM {table} AS e WHERE {sql}", *params
    )

    def scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if plan["Node Type"] == "Bitmap Index Scan":
            yield plan
        for child in plan.get("Plans", []):
            yield from scans(child)

    found = list(scans(json.loads(rows[0][0])[0]["Plan"]))
    return sum(p["Actual Rows"] for p in found) if found else None


def test_prefilters_use_gin_indexes(pg: Postgres) -> None:
    """Each prefilter, on the index it is written for, reads only the rows it names."""
    entities = [
        ent(
            a=[inst(i, datasetId=f"urn:ds:{i}"), inst({"k": i})],
            **({"b": [inst(f"w{i}")]} if i % 50 == 0 else {}),
        )
        for i in range(3000)
    ]
    docs = docs_of(entities)
    tables = {}
    for opclass in ("jsonb_path_ops", "jsonb_ops"):
        table = tables[opclass] = f'"{pg.schema}".{opclass}'
        pg.run(
            pg.conn.execute(
                f"CREATE TABLE {table} (id int PRIMARY KEY, doc jsonb NOT NULL);"
                f" CREATE INDEX ON {table} USING gin (doc {opclass})"
            )
        )
        pg.load(docs, table)
        pg.run(pg.conn.execute(f"ANALYZE {table}"))

    def read(opclass: str, q: str) -> int | None:
        node = parse_q(q, expand)
        sql, params = to_postgres(node, "e.doc", 1, index=opclass)  # type: ignore[arg-type]
        rows = pg.fetch(f"SELECT id FROM {tables[opclass]} AS e WHERE {sql}", *params)
        assert {r["id"] for r in rows} == {i for i, e in enumerate(entities) if evaluate(node, e)}
        return index_rows(pg, tables[opclass], node, opclass)

    assert read("jsonb_path_ops", "a[k]==7") == 1
    assert read("jsonb_path_ops", "a[k]==7,8,9") == 3
    assert read("jsonb_path_ops", "a.datasetId==urn:ds:7") == 1
    assert read("jsonb_path_ops", "a==7") is None  # the languageMap wildcard: jsonb_ops only
    assert read("jsonb_path_ops", 'b=="w50"') is None
    assert read("jsonb_path_ops", "b") is None
    for q, rows in [
        ("a[k]==7", 1),
        ("a==7", 1),
        ('b=="w50"', 1),
        ('b=="w50","w100"', 2),
        ("b", 60),
        ('b>"w5"', 60),
        ('b!="w50"', 60),
    ]:
        assert read("jsonb_ops", q) == rows, q


def test_first_param_and_no_index() -> None:
    node = parse_q('a[k]==5;b=="x"', expand)
    sql, params = to_postgres(node, "t.doc", 7, index=None)
    assert params == [Decimal(5), "x"]
    assert "$7::numeric" in sql and "$8::text" in sql and "@?" not in sql and "@>" not in sql
    sql, params = to_postgres(node, "t.doc", 3)
    assert "$3::" in sql and "$5::" in sql and "$6" not in sql and len(params) == 3
