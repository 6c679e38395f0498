"""The OpenAPI document: valid OpenAPI 3.1, served at /openapi.json, and describing exactly the
routes the app serves (a route added without documentation fails here)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.config import Settings
from cidade.openapi import build_document

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    folder: Path = tmp_path_factory.mktemp("openapi")
    return build_app(Settings(store=f"sqlite:///{folder}/x.db"))


def template(path: str) -> str:
    """Starlette's `{name:convertor}` -> OpenAPI's `{name}`."""
    return re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", path)


def served(app) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        assert isinstance(route, Route), f"unexpected route kind {route!r}: describe it here"
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD wherever there is GET
                out.add((template(route.path), method.lower()))
    return out


def documented(document: dict) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_documented_and_nothing_else(app) -> None:
    routes = served(app)
    described = documented(build_document())
    assert routes - described == set(), "routes the document does not describe"
    assert described - routes == set(), "operations the app does not serve"


def test_document_is_valid_openapi_31() -> None:
    document = build_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_path_parameters_match_the_templates() -> None:
    for path, item in build_document()["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
            assert declared == names, (method, path)


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for item in build_document()["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_errors_are_problem_details_in_json() -> None:
    document = build_document()
    for name, response in document["components"]["responses"].items():
        assert list(response["content"]) == ["application/json"], name
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ProblemDetails"
        }
    problem = document["components"]["schemas"]["ProblemDetails"]
    assert set(problem["required"]) == {"type", "title", "status"}


def test_served_at_openapi_json(app) -> None:
    with TestClient(app) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert orjson.loads(response.content) == orjson.loads(orjson.dumps(build_document()))


def test_an_undocumented_route_is_caught(tmp_path: Path) -> None:
    async def handler(request):  # pragma: no cover - never called
        raise AssertionError

    other = build_app(Settings(store=f"sqlite:///{tmp_path}/y.db"))
    other.router.routes.append(Route("/ngsi-ld/v1/things/{thing_id:path}", handler))
    missing = served(other) - documented(build_document())
    assert missing == {("/ngsi-ld/v1/things/{thing_id}", "get")}
