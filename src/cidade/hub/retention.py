"""History retention per entity type (setting ``CIDADE_HISTORY_RETENTION``) and the task that
enforces it.

The setting is a comma-separated list of ``TYPE=DURATION`` rules::

    TrafficFlowObserved=P90D,https://smartdatamodels.org/dataModel.Environment/NoiseLevelObserved=P1Y,*=P5Y

* ``TYPE`` is a compact entity type name, expanded against the NGSI-LD core @context (a name the
  core context does not define gets its default vocabulary,
  ``https://uri.etsi.org/ngsi-ld/default-context/``, as it does in an API request without a
  Link header), or a full IRI (anything with a ``:``). ``*`` stands for every other type.
* ``DURATION`` is an ISO 8601 duration, ``P[n]Y[n]M[n]DT[n]H[n]M[n]S`` or ``P[n]W``; years and
  months are calendar ones.

An attribute instance expires when its time index (observedAt, else modifiedAt) is older than
now minus the retention of its entity's type. An entity with several types keeps its history as
long as the longest of their retentions; a type without a rule takes ``*``'s, and without ``*``
it is kept for ever. Deleted entities whose history is kept (``CIDADE_HISTORY_AFTER_DELETE``)
follow the rules of the types they had.

``Purger.run`` is the periodic task: started in the application's lifespan, it purges once at
start and then every ``CIDADE_HISTORY_PURGE_INTERVAL`` seconds, until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from dateutil.relativedelta import relativedelta

from cidade.hub.model import Terms, check_name
from cidade.hub.temporal import AggrPeriod, parse_aggr_period
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData

log = logging.getLogger("cidade.retention")

DEFAULT = "*"


@dataclass(frozen=True)
class Rule:
    type: str  # as written in the setting: a compact name, an IRI, or "*"
    duration: AggrPeriod

    def cutoff(self, now: datetime) -> str:
        """The time before which instances have expired, in the stored timestamp format."""
        limit = now - relativedelta(months=self.duration.months) - self.duration.fixed
        return timefmt.from_datetime(limit)


def parse_retention(text: str) -> list[Rule]:
    """The rules of a ``CIDADE_HISTORY_RETENTION`` value; ValueError, saying why, when invalid."""
    rules: list[Rule] = []
    seen: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, duration = item.rpartition("=")
        name, duration = name.strip(), duration.strip()
        if not sep or not name or not duration:
            raise ValueError(f"{item!r} is not TYPE=DURATION (e.g. TrafficFlowObserved=P90D)")
        if name != DEFAULT:
            try:
                check_name(name, "entity type")
            except BadRequestData:
                raise ValueError(f"{name!r} is not an entity type name or IRI") from None
        if name in seen:
            raise ValueError(f"entity type {name!r} has two retention rules")
        seen.add(name)
        try:
            period = parse_aggr_period(duration)  # None for a zero duration
        except BadRequestData:
            period = None
        if period is None:
            raise ValueError(
                f"{duration!r} (for {name}) is not a non-zero ISO 8601 duration such as P90D, "
                "P6M, P5Y or P2W"
            )
        rules.append(Rule(name, period))
    return rules


@dataclass(frozen=True)
class RetentionPolicy:
    """The rules with their types expanded to IRIs."""

    by_type: dict[str, Rule]
    default: Rule | None

    @classmethod
    def build(cls, rules: list[Rule], terms: Terms) -> RetentionPolicy:
        by_type: dict[str, Rule] = {}
        default = None
        for rule in rules:
            if rule.type == DEFAULT:
                default = rule
            else:
                by_type[terms.expand(rule.type)] = rule
        return cls(by_type, default)

    @property
    def active(self) -> bool:
        return bool(self.by_type) or self.default is not None

    def cutoffs(self, now: datetime) -> tuple[dict[str, str], str | None]:
        """({type IRI: cutoff}, cutoff of every other type or None) at ``now``."""
        default = self.default.cutoff(now) if self.default is not None else None
        return {t: r.cutoff(now) for t, r in self.by_type.items()}, default


class Purger:
    """Deletes expired history, now and then (one per application, owned by its lifespan)."""

    def __init__(self, store: object, policy: RetentionPolicy, interval: float) -> None:
        self.store = store
        self.policy = policy
        self.interval = interval
        self.runs = 0  # purges done (or failed) since start

    async def purge(self, now: datetime | None = None) -> int:
        """One purge; the number of history instances deleted."""
        by_type, default = self.policy.cutoffs(now or datetime.now(UTC))
        return await self.store.purge_history(by_type, default)  # type: ignore[attr-defined]

    async def run(self) -> None:
        while True:
            try:
                deleted = await self.purge()
                if deleted:
                    log.info("history retention: %d expired instances deleted", deleted)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed purge (database away, lock timeout) is retried at the next interval.
                log.exception("history retention: the purge failed")
            self.runs += 1
            await asyncio.sleep(self.interval)


__all__ = ["DEFAULT", "Purger", "RetentionPolicy", "Rule", "parse_retention"]
