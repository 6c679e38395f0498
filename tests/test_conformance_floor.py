"""scripts/conformance.py: the floor (read, checked, raised, never lowered; the committed one)
and the MQTT broker a run in a network namespace starts for the suite."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import service_missing

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "conformance.py"
spec = importlib.util.spec_from_file_location("conformance_script", SCRIPT)
assert spec and spec.loader
conformance = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = conformance  # its dataclass looks its module up
spec.loader.exec_module(conformance)


def test_the_committed_floor_names_every_store_and_group():
    floor = conformance.read_floor(conformance.FLOOR)
    assert set(floor) == {(s, g) for s in conformance.STORES for g in conformance.GROUPS}


def test_below_the_floor_fails_and_at_or_above_passes(tmp_path):
    path = tmp_path / "floor.txt"
    path.write_text("# comment\nsqlite core 240  # why\npostgres core 240\n")
    floor = conformance.read_floor(path)
    assert floor == {("sqlite", "core"): 240, ("postgres", "core"): 240}
    assert (
        conformance.below_floor(floor, {("sqlite", "core"): 240, ("postgres", "core"): 300}) == []
    )
    assert conformance.below_floor(floor, {("sqlite", "core"): 239, ("postgres", "core"): 240}) == [
        "sqlite core: 239 passed, floor 240"
    ]
    # A run with no floor yet has none to fall below.
    assert conformance.below_floor(floor, {("sqlite", "temporal-subscriptions"): 0}) == []


def test_raising_never_lowers_and_keeps_comments(tmp_path):
    text = "# the floor\nsqlite core 240  # why\npostgres core 240\n"
    raised = conformance.raised_floor(
        text, {("sqlite", "core"): 250, ("postgres", "core"): 200, ("sqlite", "other"): 3}
    )
    assert raised == "# the floor\nsqlite core 250  # why\npostgres core 240\nsqlite other 3\n"


def test_a_malformed_floor_is_refused(tmp_path):
    path = tmp_path / "floor.txt"
    path.write_text("sqlite core many\n")
    with pytest.raises(SystemExit, match="expected 'STORE GROUP PASSED'"):
        conformance.read_floor(path)


def test_postgres_on_loopback_is_reached_through_its_socket(tmp_path, monkeypatch):
    (tmp_path / ".s.PGSQL.5432").touch()
    monkeypatch.setattr(conformance, "SOCKET_DIRS", (str(tmp_path / "none"), str(tmp_path)))
    assert (
        conformance.socket_url("postgresql://postgres@127.0.0.1:5432/test")
        == f"postgresql://postgres@/test?host={str(tmp_path).replace('/', '%2F')}&port=5432"
    )
    assert conformance.socket_url("postgresql://postgres@db.example:5432/test") is None
    assert conformance.socket_url("postgresql://u@127.0.0.1:6000/test") is None  # no socket


def test_the_namespace_broker_answers_on_every_port_the_suite_uses(tmp_path):
    """The suite's MQTT tests connect to its broker host on 1883 and on its
    mqtt_broker_non_default_port (8085, 058_01_02 and 058_01_05), and its HTTP receiver takes
    127.0.0.1:8085: the broker of a run listens on both ports at another loopback address."""
    assert conformance.MQTT_HOST != "127.0.0.1"
    assert set(conformance.MQTT_PORTS) == {1883, 8085}
    # The same on free ports of a loopback address of the test's own (not 1883 and 8085, which
    # a broker or receiver of this machine may hold).
    host = "127.0.0.3"
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        service_missing("no mosquitto to start")
    with conformance.own_mqtt_broker(tmp_path, host, tuple(ports)) as answering:
        assert answering
        for port in ports:
            with socket.create_connection((host, port), timeout=2):
                pass
