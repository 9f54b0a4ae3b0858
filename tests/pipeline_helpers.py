"""Small pipelines, readings and a recording MQTT link for the state and checkpoint tests.

Shared by test_checkpoint_format.py, test_state.py and test_checkpointer.py (and the
wandering temperature by test_drift.py and test_visits.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.checkpointer import Checkpointer
from edge_ml.config import parse_config
from edge_ml.pipeline import BatchOutput, Pipeline
from edge_ml.publish import AlertPublisher
from edge_ml.storage import Storage

# A small model that warms up slowly: state round trips without alerts in the way.
CONFIG = {"model": {"n_trees": 5, "height": 6, "window_size": 50, "warmup": 60},
          "features": {"season_bins": 24}}
# The same model warming up sooner, for the alert tests.
ALERT_CONFIG = {"model": {"n_trees": 5, "height": 6, "window_size": 50, "warmup": 20}}
STREAM = "sensors/a"
T0 = 1_700_000_000.0


def wandering_temperature(n: int, seed: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A room temperature read once a minute: a slow AR(1) wander, no daily cycle, no anomaly
    (the calibration suite's ``ar1_temperature``). Returns ``(ts, values)``."""
    rng = np.random.default_rng(seed)
    wander = np.zeros(n)
    for i in range(1, n):
        wander[i] = 0.999 * wander[i - 1] + rng.normal(0.0, 0.05)
    return T0 + 60.0 * np.arange(n), 21.0 + wander + rng.normal(0.0, 0.05, n)


def readings(n: int, streams: int = 3, seed: int = 0, start: float = 0.0):
    rng = np.random.default_rng(seed)
    names = [f"sensors/s{i % streams}" for i in range(n)]
    ts = start + np.arange(n, dtype=np.float64)
    values = rng.normal(20.0, 1.0, n)
    values[n // 2 :: 97] += 15.0  # some spikes so alerts open and resolve
    return names, ts, values


def make_pipeline(storage: Storage | None = None, **model: object) -> Pipeline:
    data = {**CONFIG, "model": {**CONFIG["model"], **model}}
    return Pipeline(parse_config(data), storage)


class Link:
    """Records publishes instead of sending them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        self.sent.append((topic, json.loads(payload)))

    def alerts(self) -> list[dict[str, Any]]:
        return [body for topic, body in self.sent if "/alerts/" in topic]


def daemon_side(db: Path) -> tuple[Pipeline, Checkpointer, Link, Storage]:
    """What a daemon start builds: pipeline, storage, publisher, and the resume."""
    storage = Storage(db)
    link = Link()
    pipeline = Pipeline(parse_config(ALERT_CONFIG), storage, AlertPublisher(link, "edge-ml"))
    saver = Checkpointer(pipeline, interval_s=3600, retention=10)
    saver.resume()
    return pipeline, saver, link, storage


def normal(p: Pipeline, n: int, start: int, stream: str = STREAM) -> BatchOutput:
    rng = np.random.default_rng(start)
    return p.process_readings([stream] * n, T0 + start + np.arange(n, dtype=np.float64),
                              np.round(rng.normal(20.0, 1.0, n), 3))


def spike(p: Pipeline, at: int, stream: str = STREAM) -> str:
    out = p.process_readings([stream], np.array([T0 + at]), np.array([500.0]))
    (event,) = out.events
    assert event.state == "open"
    return event.alert_id
