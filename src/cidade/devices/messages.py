"""What the transports (MQTT, HTTP) hand the agent, and what the agent hands them back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from cidade.store.base import WriteChain


class Measure(NamedTuple):
    """One message of a device as received, before any check: the agent parses and maps it.

    ``/<apikey>/<device_id>/attrs`` (or ``/json/...``) carries a JSON object of measures;
    ``.../attrs/<object_id>`` a single value (``object_id`` set); ``POST /iot/json?k=&i=`` the
    same object over HTTP. A named tuple: the bridge makes one per message, and a frozen
    dataclass's __init__ cost five times a tuple's."""

    apikey: str
    device_id: str
    payload: bytes
    object_id: str | None = None
    received_at: str = ""  # stored timestamp format (hub/timefmt.py)
    transport: str = "mqtt"  # "mqtt" | "http"
    # HTTP's ?t=: the TimeInstant of every measure object of the message, over its own.
    time_instant: str | None = None


class CommandAnswer(NamedTuple):
    """A device's answer on ``/json/<apikey>/<device_id>/cmdexe``: {command: result}."""

    apikey: str
    device_id: str
    payload: bytes
    received_at: str = ""


class Ingest(Protocol):
    """The agent, as the transports see it."""

    async def ingest(self, measures: Sequence[Measure]) -> list[str | None]:
        """Apply a batch of messages: per message, None when it was written, else why it was
        refused (counted and logged by the agent; a refused message writes nothing)."""
        ...

    async def prepare(self, measures: Sequence[Measure]) -> Any:
        """``ingest`` in two steps, so that a transport can prepare a batch (profiles, mapping:
        this thread's work) while the previous one is committed (the store's)."""
        ...

    async def commit(self, prepared: Any, *, chain: WriteChain | None = None) -> list[str | None]:
        """Write what ``prepare`` made; with a ``chain``, after the chain's earlier commits and
        only if they were written (store/base.py, WriteChain): a transport may commit a batch
        before the previous one returned."""
        ...

    async def command_answers(self, answers: Sequence[CommandAnswer]) -> None: ...


class CommandSink(Protocol):
    """The transport commands leave through."""

    async def send_command(self, apikey: str, device_id: str, body: bytes) -> None:
        """Publish ``body`` ({command: value} as JSON) to ``/<apikey>/<device_id>/cmd``, QoS 1."""
        ...
