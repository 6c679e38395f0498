"""Notifications to MQTT endpoints through the real Mosquitto on 127.0.0.1:1883 (§ MQTT
binding: the message payload is {"metadata": headers, "body": Notification})."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid

import pytest

from cidade.config import Settings
from tests.conftest import LOOPBACK, NGSI, make_settings, service_missing
from tests.hub.helpers import entity

BROKER = ("127.0.0.1", 1883)


@pytest.fixture
def settings(store_url: str) -> Settings:
    # The broker is on loopback, which a deployment allows as its own network would be.
    return make_settings(store=store_url, private_networks=LOOPBACK)


def broker_unavailable() -> str | None:
    try:
        with socket.create_connection(BROKER, timeout=2):
            return None
    except OSError as exc:
        return f"no MQTT broker at {BROKER[0]}:{BROKER[1]}: {exc}"


@pytest.fixture
def topic_messages():
    reason = broker_unavailable()
    if reason:
        service_missing(reason)
    import paho.mqtt.client as mqtt

    topic = f"cidade/test/{uuid.uuid4().hex}"
    received: queue.Queue = queue.Queue()
    ready = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, msg: received.put(msg)
    client.on_subscribe = lambda *a: ready.put(True)
    client.connect(*BROKER)
    client.loop_start()
    client.subscribe(topic, qos=1)
    ready.get(timeout=5)
    yield topic, received
    client.loop_stop()
    client.disconnect()


@pytest.mark.parametrize("qos", ["0", "1"])
def test_mqtt_notification(client, topic_messages, qos):
    topic, received = topic_messages
    body = {
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {
            "format": "keyValues",
            "endpoint": {
                "uri": f"mqtt://{BROKER[0]}:{BROKER[1]}/{topic}",
                "notifierInfo": [{"key": "MQTT-QoS", "value": qos}],
                "receiverInfo": [{"key": "X-Origin", "value": "cidade"}],
            },
        },
    }
    r = client.post(f"{NGSI}/subscriptions", json=body)
    assert r.status_code == 201, r.text
    sub_id = r.headers["location"].rsplit("/", 1)[1]
    r = client.post(
        f"{NGSI}/entities", json=entity("urn:ngsi-ld:Streetlight:1", "Streetlight", powerState="on")
    )
    assert r.status_code == 201
    msg = received.get(timeout=10)
    assert msg.topic == topic
    payload = json.loads(msg.payload)
    assert payload["metadata"]["Content-Type"] == "application/json"
    assert payload["metadata"]["X-Origin"] == "cidade"
    assert payload["metadata"]["Link"].startswith("<https://uri.etsi.org/ngsi-ld/")
    notification = payload["body"]
    assert notification["type"] == "Notification"
    assert notification["subscriptionId"] == sub_id
    assert notification["data"] == [
        {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": "on"}
    ]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        n = client.get(f"{NGSI}/subscriptions/{sub_id}").json()["notification"]
        if n.get("timesSent") == 1 and "lastSuccess" in n:
            break
        time.sleep(0.05)
    assert n["timesSent"] == 1 and n["status"] == "ok"


def test_mqtt_broker_down_is_retried(client):
    """A broker that refuses connections counts as a failure and is tried again later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    body = {
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": f"mqtt://127.0.0.1:{port}/nobody"}},
    }
    r = client.post(f"{NGSI}/subscriptions", json=body)
    sub_id = r.headers["location"].rsplit("/", 1)[1]
    client.post(
        f"{NGSI}/entities", json=entity("urn:ngsi-ld:Streetlight:2", "Streetlight", powerState="on")
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        n = client.get(f"{NGSI}/subscriptions/{sub_id}").json()["notification"]
        if n.get("timesFailed", 0) >= 2:
            break
        time.sleep(0.1)
    assert n["timesFailed"] >= 2 and n["status"] == "failed"


@pytest.fixture
def private_broker(tmp_path):
    """A mosquitto of this test's own on a port that is not 1883, refusing anonymous clients:
    (port, user, password)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not (os.path.exists(binary) and os.path.exists(passwd)):
        service_missing("no mosquitto or mosquitto_passwd to start a broker of the test's own")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    users = tmp_path / "passwords"
    subprocess.run([passwd, "-b", "-c", str(users), "sensor", "s3cret:x"], check=True)
    config = tmp_path / "mosquitto.conf"
    # Started by root, mosquitto becomes the user "mosquitto", who cannot read tmp_path.
    as_root = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {users}\n"
        f"persistence false\n{as_root}"
    )
    broker = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or broker.poll() is not None:
                broker.kill()
                raise AssertionError("the test's mosquitto did not start") from None
            time.sleep(0.05)
    yield port, "sensor", "s3cret:x"
    broker.terminate()
    broker.wait(10)


def test_mqtt_endpoint_with_credentials_and_a_port_of_its_own(client, private_broker):
    """mqtt://user:password@host:port/topic: the port and the credentials of the URI are used
    (the password percent-encoded, as a URI's userinfo is)."""
    import paho.mqtt.client as mqtt

    port, user, password = private_broker
    topic = f"cidade/test/{uuid.uuid4().hex}"
    received: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.username_pw_set(user, password)
    listener.on_message = lambda c, u, msg: received.put(msg)
    listener.on_subscribe = lambda *a: ready.put(True)
    listener.connect("127.0.0.1", port)
    listener.loop_start()
    try:
        listener.subscribe(topic, qos=1)
        ready.get(timeout=5)
        secret = urllib.parse.quote(password, safe="")
        body = {
            "type": "Subscription",
            "entities": [{"type": "Streetlight"}],
            "notification": {
                "format": "keyValues",
                "endpoint": {"uri": f"mqtt://{user}:{secret}@127.0.0.1:{port}/{topic}"},
            },
        }
        r = client.post(f"{NGSI}/subscriptions", json=body)
        assert r.status_code == 201, r.text
        r = client.post(
            f"{NGSI}/entities",
            json=entity("urn:ngsi-ld:Streetlight:3", "Streetlight", powerState="off"),
        )
        assert r.status_code == 201, r.text
        msg = received.get(timeout=10)
        assert json.loads(msg.payload)["body"]["data"] == [
            {"id": "urn:ngsi-ld:Streetlight:3", "type": "Streetlight", "powerState": "off"}
        ]
    finally:
        listener.loop_stop()
        listener.disconnect()
