"""Each Numba kernel against its plain reference in tests/naive.py, over edge cases."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge_ml.features import FeatureState
from edge_ml.kernels.alerting import alert_batch
from edge_ml.kernels.calibration import calibrate_batch

CASES = {
    "noise": np.random.default_rng(0).normal(20.0, 1.0, 700),
    "constant": np.full(300, 3.25),
    "huge_offset": 1e9 + np.random.default_rng(1).normal(0.0, 0.01, 500),
    "steps": np.repeat([0.0, 5.0, -5.0, 1e-3], 90),
    "single": np.array([42.0]),
}


def _features(values: np.ndarray, window: int, streams: int = 1) -> list[np.ndarray]:
    """Run ``streams`` interleaved copies of ``values`` through the batch kernel."""
    state = FeatureState(window, capacity=2)
    state.arrays.grow(streams)
    slots = np.tile(np.arange(streams, dtype=np.int64), len(values))
    X = state.update(slots, np.repeat(values, streams))
    return [X[slots == s] for s in range(streams)]


@pytest.mark.parametrize("window", [2, 5, 32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_window_features_match_numpy(case: str, window: int) -> None:
    values = CASES[case]
    raw = naive.window_features(values.tolist(), window)
    expected = naive.standard_scale(raw)
    for got in _features(values, window, streams=3):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        assert np.all((got >= 0.0) & (got <= 1.0))


def test_huge_offsets_keep_their_variance() -> None:
    values = CASES["huge_offset"]
    raw = naive.window_features(values.tolist(), 32)
    assert raw[100:, 2].min() > 0.004  # the reference sees the 0.01 noise
    state = FeatureState(32)
    from edge_ml.kernels.window import window_update

    out = np.zeros(4)
    a = state.arrays
    stds = []
    for v in values:
        window_update(a.ring, a.ring_pos, a.ring_n, a.win_sum, a.win_sumsq, a.prev, a.shift, 0,
                      v, out)
        stds.append(out[2])
    np.testing.assert_allclose(stds[100:], raw[100:, 2], rtol=1e-6)


def test_calibration_matches_reference() -> None:
    rng = np.random.default_rng(3)
    raw = np.concatenate([rng.uniform(0.6, 0.8, 400), [0.99], rng.uniform(0.6, 0.8, 100)])
    slots = np.zeros(len(raw), dtype=np.int64)
    mean, var, n = np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64)
    levels = calibrate_batch(slots, raw, np.ones(len(raw), dtype=np.uint8), mean, var, n, 200)
    np.testing.assert_allclose(levels, naive.calibrate(raw.tolist(), 200), atol=1e-12)
    assert levels[400] > 0.999  # the outlier score sits far in the tail


@pytest.mark.parametrize("debounce,cooldown", [(1, 0.0), (3, 0.0), (2, 50.0)])
def test_alert_state_machine_matches_reference(debounce: int, cooldown: float) -> None:
    rng = np.random.default_rng(4)
    levels = np.clip(rng.normal(0.5, 0.3, 2000), 0, 1)
    levels[rng.integers(0, 2000, 60)] = 0.999
    levels[500:520] = 0.995
    ts = np.arange(2000, dtype=np.float64)
    warming = (ts < 100).astype(np.uint8)
    slots = np.zeros(2000, dtype=np.int64)
    above, below = np.zeros(1, np.int32), np.zeros(1, np.int32)
    is_open, peak, closed = np.zeros(1, np.uint8), np.zeros(1), np.full(1, np.nan)
    codes = alert_batch(slots, levels, ts, warming, above, below, is_open, peak, closed,
                        0.99, 0.9, debounce, cooldown)
    expected = naive.alert_codes(levels.tolist(), ts.tolist(), warming.tolist(), 0.99, 0.9,
                                 debounce, cooldown)
    assert codes.tolist() == expected
    assert 1 in expected and 2 in expected
    assert not codes[:100].any()  # warming up never alerts
