"""The demo city's devices, alive: provisioned on the platform, then publishing on a simulated clock.

A ``Simulator`` is given the running platform's services (device provisioning, the agent, the
commands). ``run()`` loads the city (``load_city``), places the devices (``plan_devices``),
provisions one service group per kind of device (its apikey, entity type, the mapping of the
short object ids to the Smart Data Model's attributes with their units, the commands) and every
device (its entity id and its static attributes, its place among them), then loops: every tick
(half a real second) each device whose time has come publishes ``measures(...)``, at most one
message per device per tick, so that the rate stays bounded whatever the speed.

The clock is simulated: real time times ``speed`` (60: a day passes in 24 minutes), from a chosen
local hour of the city or from now. Every device publishes once at the start, so the city is
populated within seconds.

Transports: through MQTT when a broker is given (``/json/<apikey>/<device_id>/attrs``, QoS 1, as
a device of the FIWARE IoT Agent for JSON; actuators listen on ``/<apikey>/<device_id>/cmd`` and
answer on ``/json/<apikey>/<device_id>/cmdexe``), else in-process: the batch goes straight to
``Agent.ingest``, and the simulator is the platform's command sink, answering after a short delay
through ``Agent.command_answers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from cidade.demo.city import City, load_city
from cidade.demo.devices import KINDS, DevicePlan, DeviceState, answer, measures, plan_devices
from cidade.devices.messages import CommandAnswer, Measure

log = logging.getLogger("cidade.demo")

SERVICE_PATH = "/"
TICK = 0.5  # real seconds between two looks at the clock
CHUNK = 500  # devices per provisioning call


def apikey_of(kind: str) -> str:
    """The service group's apikey of a kind of device: ``demo-vehicle-counter``, ..."""
    return "demo-" + kind.replace("_", "-")


def entity_types() -> list[str]:
    """The entity types the demo city's devices feed."""
    return sorted({k.entity_type for k in KINDS.values()})


def start_time(timezone: str, hour: float | None = None, now: datetime | None = None) -> datetime:
    """Where the simulated clock starts: now, or today at ``hour`` in the city's local time."""
    now = now or datetime.now(UTC)
    if hour is None:
        return now
    local = now.astimezone(ZoneInfo(timezone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight + timedelta(hours=hour)).astimezone(UTC)


class Clock:
    """Simulated time: ``start`` plus the real time elapsed since, times ``speed``."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)


@dataclass(slots=True)
class SimDevice:
    plan: DevicePlan
    apikey: str
    state: DeviceState
    due: datetime | None = None  # the next simulated instant it publishes at (None: at start)


# -- provisioning bodies -------------------------------------------------------------------------


def group_body(kind: str) -> dict[str, Any]:
    """The service group of one kind: the IoT Agent for JSON's provisioning format."""
    spec = KINDS[kind]
    attributes = []
    for m in spec.measures:
        a: dict[str, Any] = {"object_id": m.object_id, "name": m.name, "type": m.type}
        if m.unit_code:
            a["metadata"] = {"unitCode": {"type": "Text", "value": m.unit_code}}
        attributes.append(a)
    group: dict[str, Any] = {
        "apikey": apikey_of(kind),
        "entity_type": spec.entity_type,
        "description": f"demo city: {kind.replace('_', ' ')}s",
        "autoprovision": False,
        "explicitAttrs": True,
        "attributes": attributes,
    }
    if spec.commands:
        group["commands"] = [{"name": c, "type": "command"} for c in spec.commands]
    return group


def device_body(plan: DevicePlan) -> dict[str, Any]:
    """One device: its entity, its place (a fixed device's location is static) and the Smart
    Data Model's attributes that do not change."""
    static: list[dict[str, Any]] = []
    if plan.route is None:
        static.append(
            {
                "name": "location",
                "type": "geo:json",
                "value": {"type": "Point", "coordinates": [plan.lon, plan.lat]},
            }
        )
    for name, value in plan.static.items():
        kind = "Relationship" if name.startswith("ref") else "Property"
        static.append({"name": name, "type": kind, "value": value})
    return {
        "device_id": plan.device_id,
        "entity_name": plan.entity_id,
        "entity_type": plan.entity_type,
        "apikey": apikey_of(plan.kind),
        "protocol": "IoTA-JSON",
        "transport": "MQTT",
        "static_attributes": static,
    }


# -- the simulator -------------------------------------------------------------------------------


class Simulator:
    def __init__(
        self,
        *,
        provisioning: Any,
        agent: Any,
        commands: Any,
        osm: str = "helsinki",
        city: City | None = None,
        tenant: str = "",
        speed: float = 60.0,
        scale: float = 1.0,
        hour: float | None = None,
        mqtt: str = "",
        mqtt_ca_file: str = "",
        seed: int | str = "cidade-demo",
        tick: float = TICK,
    ) -> None:
        self.provisioning = provisioning
        self.agent = agent
        self.commands = commands
        self.osm = osm
        self.city = city
        self.tenant = tenant
        self.speed = speed
        self.scale = scale
        self.hour = hour
        self.mqtt = mqtt
        self.mqtt_ca_file = mqtt_ca_file
        self.rng = random.Random(seed)
        self.tick_seconds = tick
        self.devices: list[SimDevice] = []
        self.by_key: dict[tuple[str, str], SimDevice] = {}
        self.clock: Clock | None = None
        self.counts: Counter[str] = Counter()
        self.ready = asyncio.Event()  # provisioned and the first messages sent
        self.transport: InProcess | OverMqtt | None = None
        self._answering: set[asyncio.Task] = set()

    @classmethod
    def from_settings(
        cls, settings: Any, provisioning: Any, agent: Any, commands: Any
    ) -> Simulator:
        return cls(
            provisioning=provisioning,
            agent=agent,
            commands=commands,
            osm=settings.demo,
            tenant=settings.demo_tenant,
            speed=settings.demo_speed,
            scale=settings.demo_scale,
            hour=float(settings.demo_hour) if settings.demo_hour else None,
            mqtt=settings.mqtt,
            mqtt_ca_file=settings.mqtt_ca_file,
        )

    # -- set-up

    async def setup(self) -> None:
        if self.city is None:
            self.city = await asyncio.to_thread(load_city, self.osm)
        city = self.city
        plans = await asyncio.to_thread(plan_devices, city, random.Random(city.name), self.scale)
        self.devices = [SimDevice(p, apikey_of(p.kind), DeviceState()) for p in plans]
        self.by_key = {(d.apikey, d.plan.device_id): d for d in self.devices}
        await self.provision()
        self.clock = Clock(start_time(city.timezone, self.hour), self.speed)
        log.info(
            "demo city %s: %d devices in tenant %r, simulated clock from %s at %g× real time (%s)",
            city.name,
            len(self.devices),
            self.tenant,
            self.clock.start.astimezone(ZoneInfo(city.timezone)).strftime("%a %H:%M"),
            self.speed,
            "MQTT" if self.mqtt else "in-process",
        )

    async def provision(self) -> None:
        """Groups and devices, created when absent and brought up to date when present (a store
        kept from an earlier run)."""
        tenant, prov = self.tenant, self.provisioning
        kinds = sorted({d.plan.kind for d in self.devices})
        present = {g["apikey"] for g in await prov.list_groups(tenant)}
        new = [group_body(k) for k in kinds if apikey_of(k) not in present]
        if new:
            await prov.create_groups(tenant, SERVICE_PATH, {"services": new})
        for k in kinds:
            if apikey_of(k) in present:
                body = group_body(k)
                await prov.update_group(tenant, SERVICE_PATH, body["apikey"], "/iot/json", body)
        fresh = []
        for d in self.devices:
            body = device_body(d.plan)
            if await prov.store.get_device(tenant, d.plan.device_id) is None:
                fresh.append(body)
            else:
                body.pop("device_id")
                await prov.update_device(tenant, SERVICE_PATH, d.plan.device_id, body)
        for i in range(0, len(fresh), CHUNK):
            await prov.create_devices(tenant, SERVICE_PATH, {"devices": fresh[i : i + CHUNK]})
        self.counts["provisioned"] = len(self.devices)

    # -- running

    async def run(self) -> None:
        """Set up, then publish until cancelled."""
        await self.setup()
        if self.mqtt:
            self.transport = OverMqtt(self, self.mqtt, self.mqtt_ca_file)
        else:
            self.transport = InProcess(self)
        await self.transport.start()
        last_report = time.monotonic()
        try:
            while True:
                started = time.monotonic()
                await self.tick()
                self.ready.set()
                if started - last_report >= 60:
                    last_report = started
                    self._report()
                await asyncio.sleep(max(0.0, self.tick_seconds - (time.monotonic() - started)))
        finally:
            for task in list(self._answering):
                task.cancel()
            await self.transport.stop()

    def _report(self) -> None:
        assert self.clock is not None and self.city is not None
        local = self.clock.now().astimezone(ZoneInfo(self.city.timezone))
        log.info(
            "demo city %s, %s: %d messages sent, %d commands answered",
            self.city.name,
            local.strftime("%a %H:%M"),
            self.counts["messages"],
            self.counts["answers"],
        )

    def due(self, now: datetime) -> list[tuple[SimDevice, dict[str, Any]]]:
        """The messages of this tick: each device whose time has come publishes once, at the
        latest of its instants not after ``now`` (a device behind skips the instants between)."""
        out = []
        for d in self.devices:
            period = d.plan.period
            if d.due is None:  # the first message, at the start, then spread over a period
                at = now
                d.due = at + timedelta(seconds=period * self.rng.uniform(0.2, 1.0))
            elif d.due <= now:
                behind = int((now - d.due).total_seconds() // period)
                at = d.due + timedelta(seconds=behind * period)
                d.due = at + timedelta(seconds=period)
            else:
                continue
            payload = measures(d.plan, d.state, at, self.rng)
            if payload is None:  # silent, in fault
                self.counts["silent"] += 1
                continue
            out.append((d, payload))
        return out

    async def tick(self) -> None:
        assert self.clock is not None and self.transport is not None
        batch = self.due(self.clock.now())
        if batch:
            await self.transport.publish(batch)
            self.counts["messages"] += len(batch)
            self.counts["ticks"] += 1

    # -- commands

    def answer_payload(self, device: SimDevice, body: bytes) -> bytes:
        """The device's answer to ``{command: value}``: ``{command: info}`` when done, or
        ``{command: {"error": why}}``."""
        try:
            asked = orjson.loads(body)
        except orjson.JSONDecodeError:
            asked = None
        if not isinstance(asked, dict):
            return orjson.dumps({"error": "not a command"})
        out: dict[str, Any] = {}
        for name, value in asked.items():
            status, info = answer(device.plan, device.state, name, value, self.rng)
            out[name] = info if status == "OK" else {"error": info}
        return orjson.dumps(out)

    def answer_later(self, apikey: str, device_id: str, body: bytes, reply: Any) -> None:
        """Answer after the device's time to act: 2-8 simulated seconds, at least half a real
        second (the command's PENDING status is written first)."""
        device = self.by_key.get((apikey, device_id))
        if device is None:
            return

        async def later() -> None:
            await asyncio.sleep(min(3.0, max(0.5, self.rng.uniform(2, 8) / self.speed)))
            await reply(apikey, device_id, self.answer_payload(device, body))
            self.counts["answers"] += 1

        task = asyncio.create_task(later())
        self._answering.add(task)
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task) -> None:
        self._answering.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a simulated device's answer was lost: %s", task.exception())


# -- transports ----------------------------------------------------------------------------------


class InProcess:
    """Messages straight to the agent; the simulator is the platform's command sink."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def start(self) -> None:
        self.sim.commands.sink = self

    async def stop(self) -> None:
        if self.sim.commands.sink is self:
            self.sim.commands.sink = None

    async def publish(self, batch: Sequence[tuple[SimDevice, dict[str, Any]]]) -> None:
        messages = [
            Measure(d.apikey, d.plan.device_id, orjson.dumps(payload)) for d, payload in batch
        ]
        outcome = await self.sim.agent.ingest(messages)
        self.sim.counts["refused"] += sum(1 for o in outcome if o is not None)

    async def send_command(self, apikey: str, device_id: str, body: bytes) -> None:
        if (apikey, device_id) not in self.sim.by_key:
            raise RuntimeError(f"no simulated device {device_id!r} takes commands")
        self.sim.answer_later(apikey, device_id, body, self._reply)

    async def _reply(self, apikey: str, device_id: str, payload: bytes) -> None:
        await self.sim.agent.command_answers([CommandAnswer(apikey, device_id, payload)])


class OverMqtt:
    """The devices on a broker: one client publishes for all of them and listens to the
    command topics of the kinds that take commands."""

    def __init__(self, sim: Simulator, url: str, ca_file: str = "") -> None:
        from cidade.devices.mqtt import parse_broker_url

        self.sim = sim
        self.address = parse_broker_url(url, ca_file)
        self.client: Any = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._dropped_logged = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo devices on MQTT")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import aiomqtt

        delay = 0.5
        kinds = sorted({d.plan.kind for d in self.sim.devices if d.plan.commands})
        while True:
            try:
                async with aiomqtt.Client(
                    self.address.host,
                    self.address.port,
                    username=self.address.username,
                    password=self.address.password,
                    identifier=f"cidade-demo-{uuid.uuid4().hex[:12]}",
                    tls_context=self.address.ssl_context(),
                ) as client:
                    # A tick publishes many devices' messages at once, on purpose: aiomqtt
                    # would warn about every one of them past its 10 pending calls.
                    client.pending_calls_threshold = len(self.sim.devices) + 10
                    for kind in kinds:
                        await client.subscribe(f"/{apikey_of(kind)}/+/cmd", qos=1)
                    self.client = client
                    self.connected.set()
                    delay = 0.5
                    async for message in client.messages:
                        levels = str(message.topic).split("/")
                        if len(levels) == 4 and levels[3] == "cmd":
                            payload = message.payload
                            body = payload if isinstance(payload, bytes) else str(payload).encode()
                            self.sim.answer_later(levels[1], levels[2], body, self._reply)
            except aiomqtt.MqttError as exc:
                log.warning("demo devices: broker %s: %s", self.address.safe(), exc)
            finally:
                self.connected.clear()
                self.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def publish(self, batch: Sequence[tuple[SimDevice, dict[str, Any]]]) -> None:
        client = self.client
        if client is None or not self.connected.is_set():
            self.sim.counts["dropped"] += len(batch)
            if time.monotonic() - self._dropped_logged > 30:
                self._dropped_logged = time.monotonic()
                log.warning(
                    "demo devices: not connected to %s; messages dropped", self.address.safe()
                )
            return
        results = await asyncio.gather(
            *(
                client.publish(
                    f"/json/{d.apikey}/{d.plan.device_id}/attrs", orjson.dumps(payload), qos=1
                )
                for d, payload in batch
            ),
            return_exceptions=True,
        )
        self.sim.counts["dropped"] += sum(1 for r in results if isinstance(r, Exception))

    async def _reply(self, apikey: str, device_id: str, payload: bytes) -> None:
        if self.client is not None:
            await self.client.publish(f"/json/{apikey}/{device_id}/cmdexe", payload, qos=1)
