"""The real thing: `cidade serve` under granian on loopback, and writes that survive kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import LOOPBACK, PG_URL, drop_schema, postgres_unavailable, service_missing
from tests.receiver import Receiver

pytestmark = pytest.mark.server

NGSI = "/ngsi-ld/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: Path | str, port: int, **env_extra: str) -> subprocess.Popen:
    """``cidade serve`` on ``port`` over a SQLite file (a path) or any store URL (a str)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIDADE_")}
    # These tests are about serving and durability; access control through a real server has
    # its own test below.
    env["CIDADE_AUTH"] = "false"
    env.update(env_extra)
    store = db if isinstance(db, str) else f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cidade.cli", "serve", "--port", str(port), "--store", store],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc, signal.SIGKILL)
    raise AssertionError("server did not become ready in 30 s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_serve_health_and_ngsi_ld(tmp_path):
    port = free_port()
    proc = start(tmp_path / "c.db", port)
    try:
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        r = httpx.post(
            f"{base}{NGSI}/entities",
            json={"id": "urn:ngsi-ld:T:1", "type": "T", "a": {"type": "Property", "value": 1}},
        )
        assert r.status_code == 201
        assert r.headers["location"] == f"{NGSI}/entities/urn:ngsi-ld:T:1"
        assert httpx.get(f"{base}{NGSI}/entities/urn:ngsi-ld:T:1").json()["a"]["value"] == 1
    finally:
        stop(proc)


def create_until_killed(proc: subprocess.Popen, base: str, writers: int = 4) -> list[str]:
    """Writers create entities as fast as they can; after 2 s the server gets SIGKILL. The ids
    whose creation was answered 201."""
    acknowledged: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        with httpx.Client(timeout=5) as http:
            for n in range(100_000):
                eid = f"urn:ngsi-ld:T:{w}-{n}"
                body = {"id": eid, "type": "T", "v": {"type": "Property", "value": n}}
                try:
                    r = http.post(f"{base}/entities", json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        acknowledged.append(eid)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)
    finally:
        stop(proc, signal.SIGKILL)
        for t in threads:
            t.join()
    assert len(acknowledged) > 50, "the load did not get going"
    return acknowledged


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_loses_no_write_history_or_notification(tmp_path, kind):
    """Writers create entities, each of which a subscription notifies, while the server is
    killed with SIGKILL; after a restart every acknowledged write is in the current state and in
    the history, and every notification it caused reaches the endpoint (at least once)."""
    schema = None
    if kind == "postgres":
        reason = postgres_unavailable()
        if reason:
            service_missing(reason)
        schema = f"k_{uuid.uuid4().hex[:12]}"
        store: Path | str = f"{PG_URL}?schema={schema}"
    else:
        store = tmp_path / "c.db"
    env = {
        "CIDADE_NOTIFICATION_LEASE": "2",
        "CIDADE_NOTIFICATION_POLL": "0.2",
        "CIDADE_PRIVATE_NETWORKS": LOOPBACK,  # the receiver is on loopback
    }
    receiver = Receiver()
    port = free_port()
    proc = start(store, port, **env)
    base = f"http://127.0.0.1:{port}{NGSI}"
    try:
        r = httpx.post(
            f"{base}/subscriptions",
            json={
                "type": "Subscription",
                "entities": [{"type": "T"}],
                "notification": {"endpoint": {"uri": receiver.url}, "format": "keyValues"},
            },
        )
        assert r.status_code == 201, r.text

        acknowledged = create_until_killed(proc, base)
        proc = start(store, port, **env)
        with httpx.Client(timeout=10) as http:
            for eid in acknowledged:
                assert http.get(f"{base}/entities/{eid}").status_code == 200, eid
            in_history: set[str] = set()
            offset = 0
            while True:
                page = http.get(
                    f"{base}/temporal/entities?type=T&attrs=v&limit=1000&offset={offset}"
                ).json()
                in_history.update(e["id"] for e in page if e.get("v"))
                if len(page) < 1000:
                    break
                offset += 1000
            assert set(acknowledged) <= in_history
        wanted = set(acknowledged)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            notified = {e["id"] for body in receiver.bodies() for e in body["data"]}
            if wanted <= notified:
                break
            time.sleep(0.2)
        missing = wanted - notified
        assert not missing, f"{len(missing)} acknowledged writes never notified"
        # At least once, and re-sent no more than the batch that was in flight at the kill.
        sent = [e["id"] for body in receiver.bodies() for e in body["data"]]
        assert len(sent) - len(set(sent)) <= 100
    finally:
        stop(proc)
        receiver.close()
        if schema:
            drop_schema(schema)
