"""The application's life cycle, beyond any one API."""

from __future__ import annotations

import gc

from cidade.app import build_app
from cidade.config import GC_YOUNG_THRESHOLD
from tests.conftest import admin_client


def test_the_collector_is_tuned_while_serving_and_restored_after(settings):
    before = gc.get_threshold()
    assert before[0] != GC_YOUNG_THRESHOLD
    with admin_client(build_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    assert gc.get_threshold() == before
