"""Shared fixtures: an application over a real SQLite file, driven in-process through httpx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cidade.app import build_app
from cidade.config import Settings

NGSI = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path}/cidade.db", max_page_size=1000)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build_app(settings), raise_server_exceptions=False) as c:
        yield c


def problem_type(response) -> str:
    """The NGSI-LD error type of a ProblemDetails response (without the URI prefix)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["type"].startswith("https://uri.etsi.org/ngsi-ld/errors/"), body
    assert body["title"]
    return body["type"].removeprefix("https://uri.etsi.org/ngsi-ld/errors/")
