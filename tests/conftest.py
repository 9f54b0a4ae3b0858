"""Shared fixtures: a real mosquitto on a free loopback port, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_ml.localbroker import LocalBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private mosquitto on 127.0.0.1:<free port>; ``broker.restart()`` keeps the port."""
    with LocalBroker(workdir=tmp_path / "broker") as running:
        yield running
