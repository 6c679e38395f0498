"""scopeQ (§4.19): the parser, the evaluator, and both SQL translations agreeing with it on
random scopes and random scope queries (as q's translations are tested)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.scope import (
    ScopeAnd,
    ScopeNode,
    ScopeOr,
    ScopeTerm,
    evaluate_scope,
    parse_scope_q,
    render_scope_q,
)
from cidade.store.postgres.q import scope_to_postgres
from cidade.store.sqlite.q import install_sqlite_functions, scope_to_sqlite
from tests.conftest import service_missing
from tests.hub.test_q_postgres import Postgres

SCOPES = [
    "/Madrid/Gardens/ParqueNorte",
    "/Madrid/Gardens/ParqueSur",
    "/Madrid/Parks/ParqueNorte",
    "/CompanyA/OrganizationB/UnitC",
    "/CompanyA",
    "/Porto",
    "/a.b/x*y/[z]",
    "/é/\u0394\U0001f600",
]


def ent(*scopes: str) -> dict:
    doc: dict = {"id": "urn:x:1", "type": ["T"], "attrs": {}}
    if scopes:
        doc["scope"] = list(scopes)
    return doc


@pytest.mark.parametrize(
    ("scope_q", "expected"),
    [
        ("/Madrid/Gardens/ParqueNorte", [0, 2]),
        ("/Madrid/+/ParqueNorte", [0, 1, 2]),
        ("/CompanyA/#", [1, 2]),
        ("/#", [0, 1, 2, 3]),
        ("/Madrid/Gardens/ParqueNorte;/CompanyA/OrganizationB/UnitC", [2]),
        ("/Madrid/Gardens/ParqueNorte,/CompanyA/OrganizationB/UnitC", [0, 2]),
        ("/Madrid/Gardens/ParqueNorte|/CompanyA", [0, 1, 2]),
        ("(/Porto|/CompanyA);/Madrid/#", []),
        ("/+", [1]),
    ],
)
def test_scope_semantics(scope_q, expected):
    entities = [
        ent("/Madrid/Gardens/ParqueNorte"),
        ent("/CompanyA"),
        ent("/Madrid/Gardens/ParqueNorte", "/CompanyA/OrganizationB/UnitC"),
        ent("/Madrid/Parks/Sur/Deeper"),
        ent(),
    ]
    if scope_q == "/Madrid/+/ParqueNorte":
        entities[1] = ent("/Madrid/Parks/ParqueNorte")
    node = parse_scope_q(scope_q)
    assert [i for i, e in enumerate(entities) if evaluate_scope(node, e)] == expected


@pytest.mark.parametrize(
    "text", ["", "Madrid", "/", "//a", "/a/#/b", "/a#", "/a b", "(/a", "/a;", "/a,,/b", "/a/+b"]
)
def test_malformed_scope_queries_are_400(text):
    with pytest.raises(BadRequestData):
        parse_scope_q(text)


LEVELS = ["Madrid", "Gardens", "ParqueNorte", "CompanyA", "a.b", "x*y", "[z]", "é", "+"]


@st.composite
def terms(draw: st.DrawFn) -> ScopeTerm:
    levels = tuple(draw(st.lists(st.sampled_from(LEVELS), max_size=3)))
    deeper = draw(st.booleans()) or not levels
    return ScopeTerm(levels, deeper)


trees: st.SearchStrategy[ScopeNode] = st.recursive(
    terms(),
    lambda kids: (
        st.builds(ScopeAnd, st.lists(kids, min_size=2, max_size=3).map(tuple))
        | st.builds(ScopeOr, st.lists(kids, min_size=2, max_size=3).map(tuple))
    ),
    max_leaves=5,
)
scopes = st.lists(
    st.sampled_from(SCOPES)
    | st.lists(st.sampled_from([lv for lv in LEVELS if lv != "+"]), min_size=1, max_size=4).map(
        lambda ls: "/" + "/".join(ls)
    ),
    max_size=3,
)


def sqlite_select(node: ScopeNode, entities: list[dict]) -> set[int]:
    conn = sqlite3.connect(":memory:")
    install_sqlite_functions(conn)
    conn.execute("CREATE TABLE e (id INTEGER, doc TEXT)")
    conn.executemany(
        "INSERT INTO e VALUES (?, ?)", [(i, json.dumps(d)) for i, d in enumerate(entities)]
    )
    sql, params = scope_to_sqlite(node, "e.doc")
    return {r[0] for r in conn.execute(f"SELECT id FROM e WHERE {sql}", params)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, entity_scopes=st.lists(scopes, min_size=1, max_size=5))
def test_sqlite_selects_what_evaluate_accepts(tree, entity_scopes):
    entities = [ent(*s) for s in entity_scopes]
    expected = {i for i, e in enumerate(entities) if evaluate_scope(tree, e)}
    assert sqlite_select(tree, entities) == expected
    # Rendered and parsed back, the query means the same.
    again = parse_scope_q(render_scope_q(tree))
    assert {i for i, e in enumerate(entities) if evaluate_scope(again, e)} == expected


@pytest.fixture(scope="module")
def pg():
    try:
        db = Postgres()
    except Exception as exc:
        service_missing(f"PostgreSQL not reachable: {exc!r}")
    try:
        yield db
    finally:
        db.close()


@pytest.mark.parametrize("scope", ["/a.b", "/a.bc/d", "/x-1f", "/é/Δ😀", "/[z]/a.b"])
def test_postgres_reads_escaped_levels_as_written(pg, scope):
    """A level's punctuation followed by hex digits ("a.b") was read by PostgreSQL as one longer
    escape (\\x2eb, U+02EB): the scope matched nothing."""
    pg.load([json.dumps(ent(scope), ensure_ascii=False), json.dumps(ent("/other"))])
    for query in (scope, scope + "/#", "/#;" + scope + "/#"):
        sql, params = scope_to_postgres(parse_scope_q(query), "e.doc", 2)
        rows = pg.fetch(f"SELECT id FROM {pg.table} AS e WHERE e.id >= $1 AND ({sql})", 0, *params)
        assert {r["id"] for r in rows} == {0}, query


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, entity_scopes=st.lists(scopes, min_size=1, max_size=5))
def test_postgres_selects_what_evaluate_accepts(pg, tree, entity_scopes):
    entities = [ent(*s) for s in entity_scopes]
    expected = {i for i, e in enumerate(entities) if evaluate_scope(tree, e)}
    pg.load([json.dumps(e, ensure_ascii=False) for e in entities])
    sql, params = scope_to_postgres(tree, "e.doc", 2)
    rows = pg.fetch(f"SELECT id FROM {pg.table} AS e WHERE e.id >= $1 AND ({sql})", 0, *params)
    assert {r["id"] for r in rows} == expected
