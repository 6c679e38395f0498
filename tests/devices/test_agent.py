"""Measures in, entities out; commands out, answers in: the agent through the real app."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from cidade.app import build_app
from cidade.devices import commands as commands_module
from cidade.devices.messages import CommandAnswer, Measure
from tests.auth.helpers import account_with_key, bearer, key_of
from tests.conftest import NGSI, admin_client, problem_type
from tests.devices.test_provisioning import agent_error

AQ = "urn:ngsi-ld:AirQualityObserved:aq1"
BOLLARD = "urn:ngsi-ld:Device:bollard-1"
CITY = {"Fiware-Service": "city", "NGSILD-Tenant": "city"}


def provision(client: Any, **group: Any) -> None:
    body = {
        "apikey": "k1",
        "entity_type": "AirQualityObserved",
        "attributes": [
            {
                "object_id": "n",
                "name": "no2",
                "type": "Number",
                "metadata": {"unitCode": {"type": "Text", "value": "GQ"}},
            },
            {"object_id": "l", "name": "location", "type": "geo:point"},
        ],
        **group,
    }
    r = client.post("/iot/services", json={"services": [body]}, headers=CITY)
    assert r.status_code == 201, r.text


def send(client: Any, device: str, body: Any, apikey: str = "k1", **params: str) -> Any:
    return client.post("/iot/json", params={"k": apikey, "i": device, **params}, json=body)


def entity(client: Any, eid: str) -> Any:
    return client.get(f"{NGSI}/entities/{eid}", headers={"NGSILD-Tenant": "city"})


def no2_history(client: Any) -> list[Any]:
    history = client.get(
        f"{NGSI}/temporal/entities/{AQ}",
        headers={"NGSILD-Tenant": "city"},
        params={"attrs": "no2", "options": "temporalValues"},
    ).json()
    return [v[0] for v in history["no2"]["values"]]


def test_measures_over_http_update_the_devices_entity(client):
    provision(client)
    r = send(client, "aq1", {"n": 41.5, "l": "41.15, -8.61", "TimeInstant": "2026-11-26T10:00:00Z"})
    assert r.status_code == 200, r.text
    got = entity(client, AQ).json()
    assert got["type"] == "AirQualityObserved"
    assert got["no2"] == {
        "type": "Property",
        "value": 41.5,
        "unitCode": "GQ",
        "observedAt": "2026-11-26T10:00:00Z",
    }
    assert got["location"]["value"] == {"type": "Point", "coordinates": [-8.61, 41.15]}
    # Auto-provisioned in its group's tenant.
    device = client.get("/iot/devices/aq1", headers=CITY)
    assert device.status_code == 200 and device.json()["entity_type"] == "AirQualityObserved"
    assert send(client, "aq1", {"n": 40}, t="2026-11-26T10:15:00Z").status_code == 200
    history = client.get(
        f"{NGSI}/temporal/entities/{AQ}",
        headers={"NGSILD-Tenant": "city"},
        params={"attrs": "no2", "options": "temporalValues"},
    ).json()
    assert [v[0] for v in history["no2"]["values"]] == [41.5, 40]


def test_the_t_parameter_times_every_measure_object_of_a_message(client):
    provision(client)
    at = "2026-11-26T11:00:00Z"
    r = client.post("/iot/json", params={"k": "k1", "i": "aq1", "t": at}, json=[{"n": 1}, {"n": 2}])
    assert r.status_code == 200, r.text
    history = client.get(
        f"{NGSI}/temporal/entities/{AQ}",
        headers={"NGSILD-Tenant": "city"},
        params={"attrs": "no2", "options": "temporalValues"},
    ).json()
    stored = "2026-11-26T11:00:00Z"
    assert sorted(history["no2"]["values"]) == [[1, stored], [2, stored]]
    bad = client.post(
        "/iot/json",
        params={"k": "k1", "i": "aq1", "t": at},
        content=b'{"n": 3',
        headers={"Content-Type": "application/json"},
    )
    agent_error(bad, 400, "BAD_REQUEST")
    assert entity(client, AQ).json()["no2"]["value"] == 2


def test_an_autoprovisioned_device_reads_back_as_a_provisioned_one(client):
    """With the members the API documents (IotDeviceOut): its entity's name too (the served
    fuzz session found GET /iot/devices without entity_name)."""
    provision(client)
    assert send(client, "aq1", {"n": 1}).status_code == 200
    device = client.get("/iot/devices/aq1", headers=CITY).json()
    assert device["entity_name"] == AQ and device["entity_type"] == "AirQualityObserved"
    listed = client.get("/iot/devices", headers=CITY).json()["devices"]
    assert [d["entity_name"] for d in listed] == [AQ]
    assert entity(client, AQ).json()["no2"]["value"] == 1


def test_refused_messages_write_nothing(client):
    provision(client)
    assert send(client, "aq1", {"n": 1}).status_code == 200
    agent_error(send(client, "aq1", {"n": 2}, apikey="nope"), 404, "DEVICE_GROUP_NOT_FOUND")
    agent_error(send(client, "aq1", {"n": "high", "l": "41.1, -8.6"}), 400, "BAD_REQUEST")
    agent_error(send(client, "aq1", {"n": 3, "l": "north"}), 400, "BAD_REQUEST")
    agent_error(send(client, "aq1", {"n": 3, "l": "91, 500"}), 400, "BAD_REQUEST")
    agent_error(
        client.post("/iot/json", params={"k": "k1"}, json={"n": 1}),
        400,
        "MANDATORY_PARAMS_NOT_FOUND",
    )
    agent_error(
        client.post(
            "/iot/json",
            params={"k": "k1", "i": "aq1"},
            content=b"n=1",
            headers={"Content-Type": "text/plain"},
        ),
        415,
        "UNSUPPORTED_CONTENT_TYPE",
    )
    got = entity(client, AQ).json()
    assert got["no2"]["value"] == 1 and "location" not in got
    counts = client.app.state.agent.counts
    assert counts["refused_unknown_apikey"] == 1 and counts["refused_invalid"] == 3


def test_a_group_without_autoprovisioning_takes_only_its_devices(client):
    provision(client, autoprovision=False)
    agent_error(send(client, "aq9", {"n": 1}), 404, "DEVICE_NOT_FOUND")
    assert client.get("/iot/devices/aq9", headers=CITY).status_code == 404
    r = client.post(
        "/iot/devices",
        json={
            "devices": [
                {
                    "device_id": "aq9",
                    "apikey": "k1",
                    "entity_type": "AirQualityObserved",
                    "entity_name": "urn:ngsi-ld:AirQualityObserved:boavista",
                }
            ]
        },
        headers=CITY,
    )
    assert r.status_code == 201, r.text
    assert send(client, "aq9", {"n": 7}).status_code == 200
    assert entity(client, "urn:ngsi-ld:AirQualityObserved:boavista").json()["no2"]["value"] == 7


def test_one_batch_two_messages_of_one_device_both_in_history(client):
    provision(client)
    agent = client.app.state.agent
    batch = [
        Measure("k1", "aq1", b'{"n": 1, "TimeInstant": "2026-11-26T10:00:00Z"}'),
        Measure("k1", "aq2", b'{"n": 5}'),
        Measure("k1", "aq1", b'{"n": 2, "TimeInstant": "2026-11-26T10:01:00Z"}'),
        Measure("k1", "aq1", b"not json"),
        Measure("k1", "aq1", b"3", object_id="n"),
    ]
    outcome = client.portal.call(agent.ingest, batch)
    assert outcome[:3] == [None, None, None] and outcome[3] and outcome[4] is None
    history = client.get(
        f"{NGSI}/temporal/entities/{AQ}",
        headers={"NGSILD-Tenant": "city"},
        params={"attrs": "no2", "options": "temporalValues"},
    ).json()
    assert sorted(v[0] for v in history["no2"]["values"]) == [1, 2, 3]


# -- commands -------------------------------------------------------------------------------------


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []

    async def send_command(self, apikey: str, device_id: str, body: bytes) -> None:
        self.sent.append((apikey, device_id, body))


@pytest.fixture
def bollard(client):
    return provision_bollard(client)


def provision_bollard(client: Any) -> RecordingSink:
    r = client.post(
        "/iot/services",
        json={
            "services": [
                {
                    "apikey": "kb",
                    "entity_type": "Device",
                    "commands": [
                        {"name": "raise", "type": "command"},
                        {"name": "lower", "type": "command"},
                    ],
                }
            ]
        },
        headers=CITY,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/iot/devices",
        json={"devices": [{"device_id": "bollard-1", "apikey": "kb", "entity_type": "Device"}]},
        headers=CITY,
    )
    assert r.status_code == 201, r.text
    assert send(client, "bollard-1", {"deviceState": "raised"}, apikey="kb").status_code == 200
    sink = RecordingSink()
    client.app.state.commands.sink = sink
    return sink


def command(client: Any, name: str, value: Any, headers: dict[str, str] | None = None) -> Any:
    return client.patch(
        f"{NGSI}/entities/{BOLLARD}/attrs",
        json={name: {"type": "Property", "value": value}},
        headers={"NGSILD-Tenant": "city", **(headers or {})},
    )


def test_a_command_goes_to_the_device_and_its_answer_comes_back(client, bollard):
    r = command(client, "lower", {"reason": "delivery"})
    assert r.status_code == 204, r.text
    assert bollard.sent == [("kb", "bollard-1", b'{"lower":{"reason":"delivery"}}')]
    assert entity(client, BOLLARD).json()["lower_status"]["value"] == "PENDING"
    answer = CommandAnswer("kb", "bollard-1", b'{"lower": "lowered in 4 s"}')
    client.portal.call(client.app.state.agent.command_answers, [answer])
    got = entity(client, BOLLARD).json()
    assert got["lower_status"]["value"] == "OK" and got["lower_info"]["value"] == "lowered in 4 s"
    client.portal.call(
        client.app.state.agent.command_answers,
        [CommandAnswer("kb", "bollard-1", b'{"raise": {"error": "obstacle"}}')],
    )
    assert entity(client, BOLLARD).json()["raise_status"]["value"] == "ERROR"
    audit = client.get("/auth/audit", params={"tenant": "city"}).json()
    sent = [e for e in audit if e["event"] == "command.sent"]
    assert sent and sent[0]["target"] == BOLLARD and sent[0]["detail"]["command"] == "lower"
    assert sent[0]["actor"].startswith("key:")
    results = sorted(e["outcome"] for e in audit if e["event"] == "command.result")
    assert results == ["error", "ok"]


def test_only_operators_and_admins_send_commands(client, bollard):
    app = client.app
    client.portal.call(account_with_key, app, "op", ["operator"], ["city"])
    device = client.portal.call(lambda: key_of(app, "op", roles=["device"], entities=[BOLLARD]))
    refused = command(client, "raise", True, bearer(device))
    assert refused.status_code == 403 and problem_type(refused) == "AccessDenied"
    assert bollard.sent == []
    assert "raise_status" not in entity(client, BOLLARD).json()


def test_an_unanswered_command_expires(client, bollard):
    client.app.state.commands.timeout = 0.3
    assert command(client, "raise", True).status_code == 204
    deadline = time.monotonic() + 5
    while entity(client, BOLLARD).json()["raise_status"]["value"] != "EXPIRED":
        assert time.monotonic() < deadline, "the command did not expire"
        time.sleep(0.1)
    assert (
        client.get("/auth/audit", params={"event": "command.result"}).json()[0]["outcome"]
        == "expired"
    )


def test_a_command_pending_when_cidade_stops_expires_after_the_restart(settings):
    with admin_client(build_app(settings), raise_server_exceptions=False) as first:
        provision_bollard(first)
        assert command(first, "raise", True).status_code == 204
        assert entity(first, BOLLARD).json()["raise_status"]["value"] == "PENDING"
    again = dataclasses.replace(settings, command_timeout=0.3)
    with admin_client(build_app(again), raise_server_exceptions=False) as second:
        deadline = time.monotonic() + 5
        while entity(second, BOLLARD).json()["raise_status"]["value"] != "EXPIRED":
            assert time.monotonic() < deadline, "the command did not expire after the restart"
            time.sleep(0.1)
        (result,) = second.get("/auth/audit", params={"event": "command.result"}).json()
        assert result["outcome"] == "expired" and result["target"] == BOLLARD


def test_a_command_pending_at_a_restart_can_still_be_answered(settings):
    with admin_client(build_app(settings), raise_server_exceptions=False) as first:
        provision_bollard(first)
        assert command(first, "lower", 1).status_code == 204
    with admin_client(build_app(settings), raise_server_exceptions=False) as second:
        commands = second.app.state.commands
        deadline = time.monotonic() + 5
        while ("city", BOLLARD, "lower") not in commands.pending:
            assert time.monotonic() < deadline, "the pending command was not found again"
            time.sleep(0.05)
        answer = CommandAnswer("kb", "bollard-1", b'{"lower": "done"}')
        second.portal.call(second.app.state.agent.command_answers, [answer])
        assert entity(second, BOLLARD).json()["lower_status"]["value"] == "OK"
        assert commands.pending == {}


def test_commands_pending_at_a_restart_are_found_on_every_page(settings, monkeypatch):
    """Looking for pending commands reads the commandable entities a page at a time: every
    page counts, and a device with no pending command is left alone."""
    with admin_client(build_app(settings), raise_server_exceptions=False) as first:
        provision_bollard(first)
        bollards = [f"bollard-{n}" for n in range(2, 8)]
        r = first.post(
            "/iot/devices",
            json={"devices": [{"device_id": d, "apikey": "kb"} for d in bollards]},
            headers=CITY,
        )
        assert r.status_code == 201, r.text
        for device in bollards:
            assert send(first, device, {"deviceState": "up"}, apikey="kb").status_code == 200
        for device in ["bollard-1", *bollards[:-1]]:  # the last one is never commanded
            r = first.patch(
                f"{NGSI}/entities/urn:ngsi-ld:Device:{device}/attrs",
                json={"raise": {"type": "Property", "value": True}},
                headers={"NGSILD-Tenant": "city"},
            )
            assert r.status_code == 204, r.text
    monkeypatch.setattr(commands_module, "RESUME_PAGE", 2)
    with admin_client(build_app(settings), raise_server_exceptions=False) as second:
        commands = second.app.state.commands
        expected = {("city", f"urn:ngsi-ld:Device:bollard-{n}", "raise") for n in range(1, 7)}
        deadline = time.monotonic() + 5
        while set(commands.pending) != expected:
            assert time.monotonic() < deadline, f"found {sorted(commands.pending)}"
            time.sleep(0.05)


def test_an_expiry_does_not_overwrite_an_answer_it_did_not_see(client, bollard):
    commands = client.app.state.commands
    assert command(client, "raise", True).status_code == 204
    pending = commands.pending[("city", BOLLARD, "raise")]
    # Another writer settles it (as another process's bridge would), behind this one's back.
    client.patch(
        f"{NGSI}/entities/{BOLLARD}/attrs",
        json={"raise_status": {"type": "Property", "value": "OK"}},
        headers={"NGSILD-Tenant": "city"},
    )
    pending.deadline = 0.0
    deadline = time.monotonic() + 5
    while ("city", BOLLARD, "raise") in commands.pending:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert entity(client, BOLLARD).json()["raise_status"]["value"] == "OK"


def test_without_a_transport_the_command_is_an_error(client, bollard):
    client.app.state.commands.sink = None
    assert command(client, "raise", True).status_code == 204
    got = entity(client, BOLLARD).json()
    assert got["raise_status"]["value"] == "ERROR" and "not sent" in got["raise_info"]["value"]


def test_an_array_of_measures_is_all_or_nothing(client):
    provision(client)
    both = [
        {"n": 1, "TimeInstant": "2026-11-26T09:00:00Z"},
        {"n": 2, "TimeInstant": "2026-11-26T09:05:00Z"},
    ]
    assert send(client, "aq1", both).status_code == 200
    bad = [{"n": 3, "TimeInstant": "2026-11-26T09:10:00Z"}, {"n": "lots"}]
    agent_error(send(client, "aq1", bad), 400, "BAD_REQUEST")
    assert no2_history(client) == [1, 2]
    assert entity(client, AQ).json()["no2"]["value"] == 2


def test_a_device_that_provisioned_itself_takes_commands_at_once(client):
    r = client.post(
        "/iot/services",
        json={
            "services": [
                {
                    "apikey": "kl",
                    "entity_type": "Streetlight",
                    "commands": [{"name": "switch", "type": "command"}],
                }
            ]
        },
        headers=CITY,
    )
    assert r.status_code == 201, r.text
    sink = RecordingSink()
    client.app.state.commands.sink = sink
    # The commands index is read before the device exists...
    assert command(client, "switch", "on").status_code == 404
    # ...and the device's first message makes it commandable without waiting for a refresh.
    assert send(client, "lamp-7", {"powerState": "off"}, apikey="kl").status_code == 200
    r = client.patch(
        f"{NGSI}/entities/urn:ngsi-ld:Streetlight:lamp-7/attrs",
        json={"switch": {"type": "Property", "value": "on"}},
        headers={"NGSILD-Tenant": "city"},
    )
    assert r.status_code == 204, r.text
    assert sink.sent == [("kl", "lamp-7", b'{"switch":"on"}')]


def test_a_batch_is_one_write_per_tenant_each_message_its_own_change(client):
    provision(client)
    agent = client.app.state.agent
    store = agent.store
    real_write, calls = store.write, []

    async def counting_write(tenant, ops, chain=None):
        calls.append((tenant, len(ops)))
        return await real_write(tenant, ops, chain=chain)

    store.write = counting_write
    try:
        # Three messages of one device in one batch: one write, three history instances.
        batch = [
            Measure("k1", "aq1", b'{"n": %d, "TimeInstant": "2026-11-26T09:0%d:00Z"}' % (n, n))
            for n in (1, 2, 3)
        ]
        assert client.portal.call(agent.ingest, batch) == [None, None, None]
    finally:
        store.write = real_write
    assert calls == [("city", 3)]
    assert no2_history(client) == [1, 2, 3]
    assert entity(client, AQ).json()["no2"]["value"] == 3


def test_a_commit_that_failed_is_taken_again_without_writing_twice(client):
    provision(client)
    town = {"Fiware-Service": "town", "NGSILD-Tenant": "town"}
    r = client.post(
        "/iot/services",
        json={"services": [{"apikey": "k2", "entity_type": "AirQualityObserved"}]},
        headers=town,
    )
    assert r.status_code == 201, r.text
    agent = client.app.state.agent
    store = agent.store
    real_write, calls = store.write, []

    async def flaky_write(tenant, ops, chain=None):
        calls.append((tenant, len(ops)))
        if len(calls) == 2:  # the second tenant's transaction fails
            raise RuntimeError("disk full")
        return await real_write(tenant, ops, chain=chain)

    store.write = flaky_write
    try:
        batch = [
            Measure("k1", "aq1", b'{"n": 1, "TimeInstant": "2026-11-26T09:00:00Z"}'),
            Measure("k2", "aq9", b'{"no2": 5}'),
            Measure("k1", "aq1", b'{"n": 2, "TimeInstant": "2026-11-26T09:05:00Z"}'),
        ]
        prepared = client.portal.call(agent.prepare, batch)
        with pytest.raises(RuntimeError, match="disk full"):
            client.portal.call(agent.commit, prepared)
        assert client.portal.call(agent.commit, prepared) == [None, None, None]
    finally:
        store.write = real_write
    # The city's write is not made again: its history holds each message once.
    assert calls == [("city", 2), ("town", 1), ("town", 1)]
    assert no2_history(client) == [1, 2]
    assert entity(client, AQ).json()["no2"]["value"] == 2
    town_entity = client.get(
        f"{NGSI}/entities/urn:ngsi-ld:AirQualityObserved:aq9", headers={"NGSILD-Tenant": "town"}
    )
    assert town_entity.json()["no2"]["value"] == 5


@pytest.mark.parametrize(
    ("operation", "params"),
    [("update", {}), ("upsert", {"options": "update"}), ("merge", {})],
)
def test_batch_operations_send_commands_too(client, bollard, operation, params):
    r = client.post(
        f"{NGSI}/entityOperations/{operation}",
        params=params,
        json=[{"id": BOLLARD, "type": "Device", "lower": {"type": "Property", "value": 2}}],
        headers={"NGSILD-Tenant": "city"},
    )
    assert r.status_code == 204, r.text
    assert bollard.sent == [("kb", "bollard-1", b'{"lower":2}')]
    assert entity(client, BOLLARD).json()["lower_status"]["value"] == "PENDING"


def test_batch_commands_need_the_permission_like_the_rest(client, bollard):
    app = client.app
    client.portal.call(account_with_key, app, "viewer", ["operator"], ["city"])
    device = client.portal.call(lambda: key_of(app, "viewer", roles=["device"], entities=[BOLLARD]))
    r = client.post(
        f"{NGSI}/entityOperations/update",
        json=[{"id": BOLLARD, "type": "Device", "raise": {"type": "Property", "value": True}}],
        headers={"NGSILD-Tenant": "city", **bearer(device)},
    )
    assert r.status_code == 403 and problem_type(r) == "AccessDenied"
    assert bollard.sent == []
