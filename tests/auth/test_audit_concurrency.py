"""Many concurrent requests, refused and accepted: every one is answered as it should be, and
every refusal is in the audit log (the SQLite writer once handed a write's cursor back to the
event loop, which finalised it while the writer reused its statement: 500s, audit rows lost)."""

from __future__ import annotations

import asyncio
import secrets

import httpx

from cidade.app import build_app
from cidade.store.base import AuditQuery
from tests.conftest import NGSI, admin_client, make_settings

REFUSED = 600  # requests with keys that do not hold: one auth.failed event each
ACCEPTED = 150  # entity creations by an administrator
ROUNDS = 1


def test_concurrent_refused_and_accepted_requests_are_all_audited(store_url):
    app = build_app(make_settings(store=store_url))
    with admin_client(app) as client:
        admin = {"Authorization": client.headers["Authorization"]}

        async def burst(round_: int) -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:

                def refused(i: int):  # a key that does not hold: 401, one auth.failed event
                    bad = {"Authorization": f"Bearer cdk_{secrets.token_hex(16)}"}
                    return http.get(f"{NGSI}/entities/urn:ngsi-ld:T:{i}", headers=bad)

                def accepted(i: int):
                    entity = {"id": f"urn:ngsi-ld:T:{round_}-{i}", "type": "T"}
                    return http.post(f"{NGSI}/entities", json=entity, headers=admin)

                calls = [refused(i) for i in range(REFUSED)]
                step = REFUSED // ACCEPTED + 1
                for i in range(ACCEPTED):  # spread among the refused ones
                    calls.insert(i * step, accepted(i))
                return await asyncio.gather(*calls)

        for round_ in range(ROUNDS):
            answers = client.portal.call(burst, round_)
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [201] * ACCEPTED + [401] * REFUSED, {
                s: statuses.count(s) for s in set(statuses)
            }

        async def failures() -> int:
            events = await app.state.store.audit_events(
                AuditQuery(event="auth.failed", limit=ROUNDS * REFUSED + 10)
            )
            return len(events)

        assert client.portal.call(failures) == ROUNDS * REFUSED
        listed = client.get(f"{NGSI}/entities", params={"type": "T", "count": "true", "limit": 1})
        assert listed.headers["ngsild-results-count"] == str(ROUNDS * ACCEPTED)
