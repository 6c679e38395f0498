"""The stored @contexts (§5.13) on both stores: saved, replaced with their usage counts kept,
usage added in batches, deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """(store, run): ``run(coroutine)`` drives it to completion on the store's event loop."""
    with running_store(request.param, tmp_path) as (backend, loop):
        yield backend, loop.run_until_complete


def info(local_id: str, kind: str = "Cached") -> dict[str, Any]:
    return {
        "URL": f"http://ctx.example/{local_id}",
        "localId": local_id,
        "kind": kind,
        "createdAt": "2026-03-01T00:00:00.000000Z",
        "numberOfHits": 0,
    }


def test_usage_is_added_in_batches_and_survives_replacement(store):
    s, run = store
    run(s.save_context("urn:a", info("urn:a"), {"@context": {"a": "http://a/"}}))
    run(s.save_context("urn:b", info("urn:b", "Hosted"), {"@context": {"b": "http://b/"}}))
    rows = {r["local_id"]: r for r in run(s.context_entries())}
    assert rows["urn:a"]["hits"] == 0 and rows["urn:a"]["last_used"] is None
    assert "body" not in rows["urn:b"]
    assert run(s.context_bodies(["urn:b", "urn:nothing"])) == {
        "urn:b": {"@context": {"b": "http://b/"}}
    }
    assert run(s.context_bodies([])) == {}
    assert rows["urn:b"]["info"]["kind"] == "Hosted"

    run(
        s.add_context_usage(
            [
                ("urn:a", 3, "2026-03-02T10:00:00.000000Z"),
                ("urn:b", 1, "2026-03-02T09:00:00.000000Z"),
                ("urn:unknown", 5, "2026-03-02T09:00:00.000000Z"),  # deleted meanwhile: ignored
            ]
        )
    )
    # A later batch adds up; an older lastUsage does not move it back.
    run(s.add_context_usage([("urn:a", 2, "2026-03-01T10:00:00.000000Z")]))
    run(s.add_context_usage([]))
    rows = {r["local_id"]: r for r in run(s.context_entries())}
    assert (
        rows["urn:a"]["hits"] == 5 and rows["urn:a"]["last_used"] == "2026-03-02T10:00:00.000000Z"
    )
    assert rows["urn:b"]["hits"] == 1
    assert set(rows) == {"urn:a", "urn:b"}

    # Saved again (a reload, or another worker's copy): new body, same counts.
    run(s.save_context("urn:a", info("urn:a"), {"@context": {"a": "http://a/v2"}}))
    rows = {r["local_id"]: r for r in run(s.context_entries())}
    assert run(s.context_bodies(["urn:a"]))["urn:a"] == {"@context": {"a": "http://a/v2"}}
    assert rows["urn:a"]["hits"] == 5

    run(s.delete_context("urn:a"))
    run(s.delete_context("urn:gone"))
    assert [r["local_id"] for r in run(s.context_entries())] == ["urn:b"]
