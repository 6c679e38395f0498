"""The MQTT bridge in a process of its own, beside the one that writes.

One Python process runs one thread of Python at a time. With the bridge inside the server, its
work (MQTT packets, topics, mapping each message to its update) and the store's (entity
documents, history rows, the commit) took turns on one core, and Cidade kept about half the
rate the store reaches alone (docs/devices.md, Throughput). Here the bridge runs
``MqttBridge`` in a child process, with an agent (``_RemoteAgent``) that maps messages itself
and asks the server for what only the server has:

* ``profile``: a device's profile, found (and the device provisioned when its group allows) by
  the server's own ``Agent.profile``; the child keeps it as long as the server's agent would,
  and forgets it when the server tells it that groups or devices changed (``forget``);
* ``write``: a tenant's updates of a batch, written by ``Agent.write`` in one transaction; the
  child acknowledges the batch's messages (PUBACK) only after this returned, so a crash of
  either process loses nothing that was acknowledged;
* ``answers``: devices' answers to commands, for the server's ``Commands``.

The server asks the child to publish commands (``command``) and, at shutdown, to ``stop`` (the
batch in hand is committed and acknowledged first). The child reports whether it is connected,
its counters and the agent's counts (``status``). The two talk over a socket pair, in frames of
a length and a marshal or pickle: both ends are this module, started together by one Python,
never a peer on a network.

``BridgeProcess`` is the server's side, with ``MqttBridge``'s surface (``start``, ``stop``,
``connected``, ``send_command``, ``counters``). A child that dies is started again; one whose
server died exits, leaving its unacknowledged messages to the broker's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import marshal
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cidade.config import Settings, load_settings, settings_to_env, tune_collector
from cidade.devices.agent import Agent, Refused
from cidade.devices.mapping import Profile
from cidade.devices.messages import CommandAnswer
from cidade.devices.mqtt import ConnectedTask, MqttBridge, MqttCounters, MqttUnavailable
from cidade.store.base import Entity, WriteChain, WriteChainBroken

log = logging.getLogger("cidade.devices.mqtt")

_HEADER = struct.Struct("!I")  # a frame's length; then its kind (one byte) and its body
_MARSHAL, _PICKLE = b"m", b"p"
STATUS_EVERY = 0.2  # seconds between the child's reports, when something changed


class ChannelClosed(ConnectionError):
    """The other process is gone."""


class _Channel:
    """Calls both ways over one stream socket: ``call`` awaits the other side's answer, ``tell``
    does not. Each call is handled in a task of its own; an error crosses as its class name and
    message (MqttUnavailable is raised again as itself, anything else as a RuntimeError)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handlers: dict[str, Callable[..., Any]],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handlers = handlers
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def _send(self, frame: tuple[Any, ...]) -> None:
        if self.closed:
            raise ChannelClosed("the other process is gone")
        try:
            # A batch's updates are plain dicts, lists and strings: marshal writes and reads
            # them in a third of pickle's time. Profiles (dataclasses) and the like go as pickles.
            data = _MARSHAL + marshal.dumps(frame)
        except ValueError:
            data = _PICKLE + pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEADER.pack(len(data)) + data)

    async def call(self, method: str, *args: Any) -> Any:
        number = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        try:
            self._send(("call", number, method, args))
            await self._writer.drain()
            return await answer
        finally:
            self._waiting.pop(number, None)

    def tell(self, method: str, *args: Any) -> None:
        self._send(("tell", 0, method, args))

    async def serve(self) -> None:
        """Read and dispatch frames until the other side closes."""
        try:
            while True:
                try:
                    (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                    data = await self._reader.readexactly(size)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                kind, number, first, rest = (
                    marshal.loads(memoryview(data)[1:])
                    if data[:1] == _MARSHAL
                    else pickle.loads(memoryview(data)[1:])
                )
                if kind == "reply":
                    answer = self._waiting.get(number)
                    if answer is not None and not answer.done():
                        if first:
                            answer.set_result(rest)
                        else:
                            answer.set_exception(_error(*rest))
                elif kind == "tell":
                    self._handlers[first](*rest)
                else:
                    task = asyncio.create_task(self._answer(number, first, rest))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            self.close()

    async def _answer(self, number: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            value = await self._handlers[method](*args)
        except Exception as exc:
            frame: tuple[Any, ...] = ("reply", number, False, (type(exc).__name__, str(exc)))
        else:
            frame = ("reply", number, True, value)
        with contextlib.suppress(ChannelClosed, ConnectionError):
            self._send(frame)
            await self._writer.drain()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(ChannelClosed("the other process is gone"))
        self._writer.close()


def _error(name: str, message: str) -> Exception:
    if name == "MqttUnavailable":
        return MqttUnavailable(message)
    return RuntimeError(f"{name}: {message}")


# -- the server's side ----------------------------------------------------------------------------


class BridgeProcess(ConnectedTask):
    """The MQTT bridge, run in a child process (``python -m cidade.devices.mqtt_process``) that
    this object starts, serves and starts again if it dies."""

    _task_name = "cidade-mqtt-bridge-process"

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        *,
        restart_initial: float = 0.5,
        restart_max: float = 30.0,
    ) -> None:
        if not settings.mqtt:
            raise ValueError("CIDADE_MQTT is empty: no broker to connect to")
        self.settings = settings
        self.agent = agent
        self.restart_initial = restart_initial
        self.restart_max = restart_max
        self.counters = MqttCounters()
        self.starts = 0  # child processes started
        self._before = MqttCounters()  # totals of the children that exited
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: _Channel | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._chain: WriteChain | None = None  # the child's current chain of writes

    @property
    def pid(self) -> int | None:
        """The child's process id, while one runs."""
        return self._process.pid if self._process is not None else None

    async def stop(self, timeout: float = 30.0) -> None:
        """The child finishes the batch in hand (written, then acknowledged) and exits."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed, ConnectionError):
                self._channel.tell("stop", timeout)
        # The task ends once the child has exited (``_serve_child`` waits for it).
        done, _ = await asyncio.wait({task}, timeout=timeout + 5)
        if not done:
            log.warning("MQTT: the bridge process did not stop in time; killing it")
            if self._process is not None:
                self._process.kill()
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                task.cancel()

    def forget(self) -> None:
        """Service groups or devices changed: the child reads profiles again."""
        if self._channel is not None:
            with contextlib.suppress(ChannelClosed, ConnectionError):
                self._channel.tell("forget")

    async def send_command(self, apikey: str, device_id: str, body: bytes) -> None:
        """Published by the child with QoS 1, once the broker acknowledged it (CommandSink)."""
        channel = self._channel
        if channel is None or not self._connected.is_set():
            raise MqttUnavailable("the MQTT bridge is not connected")
        try:
            await channel.call("command", apikey, device_id, body)
        except ChannelClosed:
            raise MqttUnavailable("the MQTT bridge process stopped") from None

    # -- the child

    async def _run(self) -> None:
        delay = self.restart_initial
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                code = await self._serve_child()
            except Exception:
                log.exception("MQTT: the bridge process failed")
                code = None
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay = self.restart_initial
            log.error(
                "MQTT: the bridge process exited (code %s); starting it again in %.1f s",
                code,
                delay,
            )
            if await self._pause(delay):
                return
            delay = min(delay * 2, self.restart_max)

    async def _serve_child(self) -> int | None:
        ours, theirs = socket.socketpair()
        try:
            env = {**os.environ, **settings_to_env(self.settings)}
            process = subprocess.Popen(
                [sys.executable, "-m", "cidade.devices.mqtt_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        finally:
            theirs.close()
        self._process = process
        self._chain = None  # a new child counts its chains from 1 again
        self.starts += 1
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            channel = _Channel(
                reader,
                writer,
                {
                    "profile": self._profile,
                    "write": self._write,
                    "answers": self.agent.command_answers,
                    "status": self._status,
                },
            )
            self._channel = channel
            await channel.serve()
        finally:
            self._channel = None
            self._connected.clear()
            self._before = self.counters
            self._process = None
            try:
                code = await asyncio.wait_for(asyncio.to_thread(process.wait), 10)
            except TimeoutError:
                process.kill()
                code = await asyncio.to_thread(process.wait)
        return code

    async def _profile(
        self, apikey: str, device_id: str
    ) -> tuple[str, Profile] | tuple[str, str, str]:
        try:
            return ("profile", await self.agent.profile(apikey, device_id))
        except Refused as exc:
            return ("refused", exc.reason, exc.kind)

    async def _write(
        self, tenant: str, updates: Sequence[Entity], chain: int | None
    ) -> list[tuple[str, str] | None]:
        """The child's bridge hands a batch's writes over while the one before is being
        written, each on its chain (by number: they count up, a new one after a failure)."""
        if chain is None:
            return await self.agent.write(tenant, updates)
        if self._chain is None or chain > self._chain.number:
            self._chain = WriteChain(chain)
        elif chain < self._chain.number:
            raise WriteChainBroken("not tried: a later chain took over")
        return await self.agent.write(tenant, updates, chain=self._chain)

    def _status(self, connected: bool, counters: dict[str, int], counts: dict[str, int]) -> None:
        if connected:
            self._connected.set()
        else:
            self._connected.clear()
        before = self._before.snapshot()
        self.counters = MqttCounters(**{k: before[k] + v for k, v in counters.items()})
        self.agent.counts.update(counts)


# -- the child's side -----------------------------------------------------------------------------


class _RemoteAgent(Agent):
    """The agent in the child: maps messages here, asks the server for profiles, writes and
    commands' answers. Its counts travel to the server's agent with each status report."""

    def __init__(self, channel: _Channel) -> None:
        from cidade.hub.jsonld import ContextResolver

        super().__init__(None, ContextResolver(allow_fetch=False).core)  # type: ignore[arg-type]
        self.channel = channel
        self._reported: Counter[str] = Counter()

    async def find_profile(
        self, apikey: str, device_id: str, resource: str | None = None
    ) -> Profile:
        answer = await self.channel.call("profile", apikey, device_id)
        if answer[0] == "refused":
            raise Refused(answer[1], answer[2])
        return answer[1]  # type: ignore[no-any-return]

    async def write(
        self, tenant: str, updates: Sequence[Entity], *, chain: WriteChain | None = None
    ) -> list[tuple[str, str] | None]:
        number = chain.number if chain is not None else None
        return await self.channel.call("write", tenant, updates, number)  # type: ignore[no-any-return]

    async def command_answers(self, answers: Sequence[CommandAnswer]) -> None:
        await self.channel.call("answers", answers)  # counted by the server's agent

    def unreported(self) -> dict[str, int]:
        """The counts since the last call."""
        delta = self.counts - self._reported
        self._reported = self.counts.copy()
        return dict(delta)


async def _child(fd: int) -> None:
    settings = load_settings()
    # As the server does (app.py): what is built now lives as long as the process, and the
    # young generation is collected every GC_YOUNG_THRESHOLD allocations, not every 700.
    tune_collector()
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    stopped = asyncio.Event()
    handlers: dict[str, Callable[..., Any]] = {}
    channel = _Channel(reader, writer, handlers)
    agent = _RemoteAgent(channel)
    bridge = MqttBridge(settings, agent)

    async def stop(timeout: float) -> None:
        await bridge.stop(timeout)
        stopped.set()

    stopping: list[asyncio.Task[None]] = []
    handlers.update(
        {
            "command": bridge.send_command,
            "forget": agent.forget,
            "stop": lambda timeout: stopping.append(asyncio.create_task(stop(timeout))),
        }
    )
    serving = asyncio.create_task(channel.serve())
    await bridge.start()
    last: tuple[Any, ...] = ()
    while not serving.done() and not stopped.is_set():
        state = (bridge.connected, bridge.counters.snapshot())
        counts = agent.unreported()
        if state != last or counts:
            with contextlib.suppress(ChannelClosed, ConnectionError):
                channel.tell("status", *state, counts)
            last = state
        await _first(serving, stopped.wait(), STATUS_EVERY)
    if serving.done():
        # The server is gone: nothing more can be written, so nothing more is acknowledged;
        # the broker keeps the rest in the session for the next bridge.
        log.warning("MQTT: the server is gone; the bridge process exits")
        os._exit(0)
    with contextlib.suppress(ChannelClosed, ConnectionError):
        channel.tell("status", False, bridge.counters.snapshot(), agent.unreported())
        await writer.drain()
    channel.close()


async def _first(task: asyncio.Task[None], other: Awaitable[Any], timeout: float) -> None:
    waiting = asyncio.ensure_future(other)
    await asyncio.wait({task, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()


def main() -> None:
    # Ctrl-C in a terminal, or a service manager stopping the whole group, signals this process
    # too: it leaves stopping to its server, which has it finish the batch in hand first (and
    # it exits by itself when the server is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Logging as in the server's worker, which granian leaves unconfigured: warnings and
    # errors on stderr.
    asyncio.run(_child(int(sys.argv[1])))


if __name__ == "__main__":
    main()
