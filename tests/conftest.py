"""Shared fixtures: a real mosquitto on a free loopback port, per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import write_config

from edge_ml.localbroker import LocalBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private mosquitto on 127.0.0.1:<free port>; ``broker.restart()`` keeps the port."""
    with LocalBroker(workdir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
def daemon_env(tmp_path: Path, broker: LocalBroker) -> tuple[Path, Path]:
    """A daemon config (and its database path) on ``broker`` that reconnects within a second."""
    db = tmp_path / "state" / "edge-ml.db"
    config = write_config(tmp_path / "edge-ml.toml", broker, db,
                          "[alerts]\ndebounce = 1\ncooldown_s = 0\n")
    # Reconnect quickly after a broker restart (the default backoff grows to a minute).
    text = config.read_text().replace("[mqtt]\n", "[mqtt]\nreconnect_max_s = 1.0\n"
                                      "reconnect_min_s = 0.2\n", 1)
    config.write_text(text)
    return config, db
