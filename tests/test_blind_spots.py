"""Anomalies the shipped defaults once missed, found by hand (issue 13): each replayed through
the real pipeline, scored by the level it gives the anomalous reading."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.pipeline import Pipeline

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC: 1,000 s into a half-hour profile slot
SLOT_S = 1800.0  # default profile: 48 slots a day


def _sine_1hz(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 1 Hz sensor on its first day: sine between 15 and 25 (10-minute period), noise 0.3."""
    ts = T0 + np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return ts, 20.0 + 5.0 * np.sin(2 * np.pi * ts / 600.0) + rng.normal(0.0, 0.3, n)


def _level(ts: np.ndarray, values: np.ndarray, at: int) -> float:
    logging.getLogger("edge_ml").setLevel(logging.ERROR)  # no drift chatter
    out = Pipeline(parse_config({})).process_readings(["sensors/sine"] * len(ts), ts, values)
    assert not out.warming[at]
    return float(out.levels[at])


@pytest.mark.parametrize("k", [0, 1, 2, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_dip_at_the_first_readings_of_a_new_profile_slot_is_found(k: int, seed: int) -> None:
    # The k-th reading of the stream's third half-hour slot. A slot with fewer than three
    # readings was not scored at all: the dip's level was 0.03-0.06 for k = 0-2 and 1.0 from
    # k = 3 on. Now a young slot is judged by the grown slot just before it.
    first = int(SLOT_S - T0 % SLOT_S) + int(SLOT_S)
    ts, values = _sine_1hz(first + 10, seed)
    values[first + k] -= 20.0
    assert _level(ts, values, first + k) >= 0.9


@pytest.mark.parametrize("at", [1500, 3000, 3450, 5000])
def test_a_single_dip_of_twelve_on_a_fast_sine_is_found(at: int) -> None:
    # 40 noise sd below the sine: found at the threshold (0.5) wherever it falls in the cycle,
    # though nearer to it than a +15 spike where the profile lags the sine (0.55 at 3,450).
    ts, values = _sine_1hz(at + 10, 0)
    values[at] -= 12.0
    assert _level(ts, values, at) >= 0.5


def _hourly(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An hourly business metric with a daily cycle and multiplicative noise."""
    ts = T0 + 3600.0 * np.arange(n, dtype=np.float64)
    hour = (ts % 86400.0) / 3600.0
    rng = np.random.default_rng(seed)
    return ts, (50.0 + 30.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)) * rng.lognormal(0, 0.1, n)


@pytest.fixture(autouse=True)
def _quiet_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    # Through caplog, so the level is put back after each test: a bare setLevel here stayed on
    # for the rest of the session and hid the warning test_mqtt_link waits for (CI failure).
    caplog.set_level(logging.ERROR, logger="edge_ml")


def _run(ts: np.ndarray, values: np.ndarray):
    return Pipeline(parse_config({})).process_readings(["sensors/m"] * len(ts), ts, values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_hourly_stream_is_scored_within_its_first_week(seed: int) -> None:
    # 300 readings of warm-up were 12.5 days of an hourly stream: a spike on day 7 (reading
    # 160) raised nothing. The warm-up now ends after 100 readings once the stream spans two
    # days and the reading's time-of-day slot is grown.
    ts, values = _hourly(400, seed)
    values[160] *= 3.0
    out = _run(ts, values)
    assert np.flatnonzero(out.warming == 0)[0] == 100
    assert out.codes[160] == 1  # an alert opens on the spike


def test_a_fast_stream_keeps_its_warm_up_in_readings() -> None:
    # A 5-minute stream reaches the 300 readings of [model] warmup before it spans two days:
    # scoring it from reading 100 cost NAB (an early alert whose cooldown hid a labelled one).
    ts = T0 + 300.0 * np.arange(400, dtype=np.float64)
    values = np.random.default_rng(3).normal(20.0, 1.0, 400)
    out = _run(ts, values)
    assert np.flatnonzero(out.warming == 0)[0] == 300


def _vibration_20hz(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 20 Hz vibration sensor, as the demo fleet's: level 0.02, noise 0.003, floor 0."""
    ts = T0 + np.arange(n, dtype=np.float64) / 20.0
    rng = np.random.default_rng(seed)
    return ts, np.maximum(0.02 + rng.normal(0.0, 0.003, n), 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("sigmas", [6.0, 8.0])
def test_a_slow_fault_on_a_fast_sensor_is_found(seed: int, sigmas: float) -> None:
    # A ramp down by 6-8 noise sd over 5.6 s (112 readings) in the sensor's first minute, held
    # at its floor: the demo's missed drift. A profile slot that learned 2 % a reading was a
    # 2.5 s moving average on a 20 Hz stream and followed the ramp (levels 0.37-0.69, four of
    # these eight missed); it now learns 2 % a second, as a 1 Hz stream's does
    # (kernels.window.slot_alpha), and finds all eight at 0.82-1.0.
    ts, values = _vibration_20hz(1400, seed)
    start, ramp = 700, 112
    values[start:start + ramp] -= 0.003 * sigmas * np.arange(1, ramp + 1) / ramp
    values = np.maximum(values, 0.0)
    out = _run(ts, values)
    assert out.levels[:start].max() < 0.5  # no false alert before it
    assert out.levels[start:start + ramp].max() >= 0.5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_stuck_value_on_a_young_fast_sensor_is_found(seed: int) -> None:
    # The sensor freezes 10 s into its life for 4 s (80 readings), scored from its 150th
    # reading as in the demo's configuration: the demo's stuck values. The log ratio's
    # statistics learned the collapse as it came and widened within seconds, so the stuck
    # view's level turned back at 0.42-0.64 (three of these four missed); what a quiet stretch
    # teaches them is now winsorised (kernels.window.VOL_CLIP_Z): 0.70-0.88.
    ts, values = _vibration_20hz(500, seed)
    start = 200
    values[start:start + 80] = values[start - 1]
    out = Pipeline(parse_config({"model": {"warmup": 150}})).process_readings(
        ["sensors/v"] * len(ts), ts, values)
    assert out.levels[:start].max() < 0.5
    assert out.levels[start:start + 80].max() >= 0.5
