"""Drift detection on block means of the level, and the reset reaction (edge_ml.drift)."""

from __future__ import annotations

import numpy as np

from edge_ml.config import parse_config
from edge_ml.drift import DriftMonitor, DriftParams
from edge_ml.kernels.alerting import OPENED
from edge_ml.pipeline import Pipeline
from edge_ml.storage import Storage

CONFIG = {"model": {"n_trees": 10, "height": 8, "window_size": 100, "warmup": 150},
          "alerts": {"cooldown_s": 0.0}}


def _run(reaction: str, storage: Storage | None = None):
    config = parse_config({**CONFIG, "model": {**CONFIG["model"], "drift_reaction": reaction}})
    pipeline = Pipeline(config, storage)
    rng = np.random.default_rng(3)
    n, shift_at = 6000, 2500
    values = rng.normal(10.0, 1.0, n)
    values[shift_at:] += 12.0  # a permanent new regime
    ts = np.arange(n, dtype=np.float64)
    levels, codes = [], []
    for lo in range(0, n, 256):  # micro-batches, as the daemon feeds them
        out = pipeline.process_readings(["s"] * len(values[lo:lo + 256]), ts[lo:lo + 256],
                                        values[lo:lo + 256])
        levels.append(out.levels)
        codes.append(out.codes)
    return pipeline, np.concatenate(levels), np.concatenate(codes), shift_at


def test_level_shift_gives_one_drift_and_alerts_stop_within_the_bound() -> None:
    storage = Storage(":memory:")
    pipeline, _levels, codes, shift_at = _run("reset", storage)
    drift = pipeline.pending.drift
    pipeline.flush()
    assert len(drift) == 1
    event = drift[0]
    assert event.stream == "s" and event.reaction == "reset"
    # Documented bound: ~5 blocks of 50 readings after the change (+ one micro-batch, as the
    # reset applies at the end of the batch that found it).
    assert shift_at <= event.ts <= shift_at + 5 * 50 + 256
    assert storage.drift_events()[0]["reaction"] == "reset"
    last_open = np.flatnonzero(codes == OPENED).max(initial=-1)
    assert last_open <= event.ts + 256  # nothing opens in the new regime after the reset
    assert not pipeline.alerts.open_alerts  # any alert open at the change has resolved


def test_reaction_none_records_but_keeps_the_model() -> None:
    pipeline, _, _, shift_at = _run("none", Storage(":memory:"))
    (event,) = pipeline.pending.drift
    assert event.reaction == "none" and event.ts >= shift_at
    assert pipeline.features.arrays.seen[0] == 6000  # never reset


def test_stable_streams_do_not_drift() -> None:
    config = parse_config(CONFIG)
    pipeline = Pipeline(config)
    rng = np.random.default_rng(5)
    n = 20_000
    names = [f"s{i % 4}" for i in range(n)]
    pipeline.process_readings(names, np.arange(n, dtype=np.float64), rng.normal(0, 1, n))
    assert not pipeline.pending.drift


def test_block_means_do_not_depend_on_batching() -> None:
    params = DriftParams(block=7, threshold=1e9, min_blocks=1)
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 3, 500)
    levels = rng.random(500)
    warming = (rng.random(500) < 0.1).astype(np.uint8)
    ts = np.arange(500.0)
    whole, parts = DriftMonitor(params), DriftMonitor(params)
    whole.update(slots, levels, warming, ts, ["a", "b", "c"])
    for lo in range(0, 500, 33):
        parts.update(slots[lo:lo + 33], levels[lo:lo + 33], warming[lo:lo + 33], ts[lo:lo + 33],
                     ["a", "b", "c"])
    for name, array in whole.state.export(3).items():
        np.testing.assert_allclose(parts.state.export(3)[name], array, rtol=1e-12, err_msg=name)
