"""Shared pieces of the occurrences tests: a service over a real store of either kind, actors,
a clock the test moves, photos made with Pillow."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from cidade.auth.roles import ROLES
from cidade.occurrences.service import Actor


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def actor(role: str, *departments: str, subject: str | None = None) -> Actor:
    return Actor(subject or f"account:{role}", ROLES[role], frozenset(departments))


OPERATOR = actor("operator")
CITIZEN = actor("citizen", subject="anonymous")
ADMIN = actor("admin")


def photo(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), exif: bool = False) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if exif:
        data = Image.Exif()
        data[0x010F] = "PhoneMaker"  # Make
        data[0x8825] = {2: (41.0, 9.0, 0.0), 1: "N"}  # GPS
        kwargs["exif"] = data
    image.save(out, fmt, **kwargs)
    return out.getvalue()
