"""CIDADE_HISTORY_RETENTION through the application: the lifespan starts the purge task, which
expires history by entity type on both stores; without rules no task runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from cidade.app import build_app
from tests.conftest import NGSI, admin_client, make_settings

TEMPORAL = f"{NGSI}/temporal/entities"


def ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def observed(eid: str, kind: str) -> dict:
    return {
        "id": eid,
        "type": kind,
        "intensity": [
            {"type": "Property", "value": days, "observedAt": ago(days)} for days in (400, 60, 1)
        ],
    }


def wait_for_purge(app, runs: int = 1) -> None:
    deadline = time.monotonic() + 10
    while app.state.purger.runs < runs:
        assert time.monotonic() < deadline, "the purge never ran"
        time.sleep(0.02)


def values(client, eid: str) -> list[int]:
    return [i["value"] for i in client.get(f"{TEMPORAL}/{eid}").json().get("intensity", [])]


def test_the_lifespan_purges_expired_history(store_url):
    with admin_client(build_app(make_settings(store=store_url))) as c:
        assert (
            c.post(TEMPORAL, json=observed("urn:x:flow", "TrafficFlowObserved")).status_code == 201
        )
        assert c.post(TEMPORAL, json=observed("urn:x:light", "Streetlight")).status_code == 201
        assert values(c, "urn:x:flow") == [400, 60, 1]
        assert c.app.state.purger.runs == 0  # no rules: no task
    settings = make_settings(
        store=store_url,
        history_retention="TrafficFlowObserved=P30D,*=P1Y",
        history_purge_interval=3600,
    )
    app = build_app(settings)
    with admin_client(app) as c:
        wait_for_purge(app)
        assert values(c, "urn:x:flow") == [1]
        assert values(c, "urn:x:light") == [60, 1]
        # The current state is not history: the entity itself is untouched.
        assert c.get(f"{NGSI}/entities/urn:x:flow").json()["intensity"]["value"] == 1
