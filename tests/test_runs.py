"""Runs of equal readings (kernels.runs): against a plain-Python reference, and on the streams it
is for (a frozen sensor) and against (a quantised sensor's dwells, a counter's zeros), through
the real pipeline where a view is asserted. A checkpoint from before them: test_state.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.kernels.calibration import probability_level
from edge_ml.kernels.runs import (
    N_RUNS,
    RUN_MIN_CHANGES,
    RUN_PRIOR_CHANGES,
    RUN_PRIOR_REPEATS,
    run_level,
)
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

THRESHOLD = 0.5  # [alerts] threshold's default


def reference_levels(values: list[float]) -> list[float]:
    """The run view, written plainly: statistics of finished runs, the run in progress scored."""
    prev, run, seen = math.nan, 0, 0
    changes = repeated = repeats = continued = longest = 0
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append(0.0)
            continue
        if seen and v == prev:
            run += 1
        else:
            if seen:
                changes += 1
                if run:
                    repeated, repeats, continued = repeated + 1, repeats + run, continued + run - 1
                    longest = max(longest, run)
            run = 0
        prev, seen = v, seen + 1
        if run == 0 or run <= longest or prev == 0.0 or changes < RUN_MIN_CHANGES:
            out.append(probability_level(1.0))
            continue
        r = (repeated + 1) / (changes + RUN_PRIOR_CHANGES)
        q = (continued + 1) / (repeats + RUN_PRIOR_REPEATS)
        p = r * q ** (run - 1) if longest == 0 else r * q ** (run - longest - 1) / (repeated + 1)
        out.append(probability_level(p))
    return out


def kernel_levels(values: np.ndarray) -> np.ndarray:
    runs = np.zeros((1, N_RUNS))
    return np.array([run_level(runs, 0, float(v)) for v in values])


def _mixed(seed: int) -> np.ndarray:
    """Continuous readings with held values, a quantised stretch, zeros and NaN in it."""
    rng = np.random.default_rng(seed)
    values = rng.normal(20.0, 1.0, 3000)
    values[1000:1400] = np.round(values[1000:1400] * 2.0) / 2.0
    for start in rng.integers(200, 2900, 12):
        values[start:start + int(rng.integers(2, 40))] = values[start]
    values[2500:2560] = 0.0
    values[rng.integers(0, 3000, 20)] = np.nan
    return values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_run_levels_match_the_plain_python_reference(seed: int) -> None:
    values = _mixed(seed)
    np.testing.assert_allclose(kernel_levels(values), reference_levels(values.tolist()),
                               rtol=1e-12, atol=0.0)
    assert (kernel_levels(values) >= THRESHOLD).any()  # the held values are found


def _frozen_csv(path: Path, freeze_at: int | None) -> Path:
    """A 1-minute Gaussian sensor, 3,000 readings; frozen for 60 readings from ``freeze_at``."""
    rng = np.random.default_rng(7)
    values = rng.normal(20.0, 1.0, 3000)
    if freeze_at is not None:
        values[freeze_at:freeze_at + 60] = values[freeze_at]
    lines = ["timestamp,value"] + [f"{1_700_000_000 + 60 * i},{v!r}"
                                   for i, v in enumerate(values.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _alerts(source: Path, out: Path) -> list[tuple[int, str]]:
    replay_csv(Pipeline(parse_config({})), source, out)
    rows = out.read_text().splitlines()[1:]
    return [(i, row.split(",")[5]) for i, row in enumerate(rows) if row.split(",")[3] == "1"]


def test_a_frozen_sensor_is_found_within_a_few_readings(tmp_path: Path) -> None:
    """Before the run view, the volatility tail found such a freeze 14-30 readings in, if at
    all (docs/benchmarks.md, round 19); a continuous sensor's repeats are rare from its start."""
    frozen = _alerts(_frozen_csv(tmp_path / "frozen.csv", 2000), tmp_path / "frozen.out.csv")
    clean = _alerts(_frozen_csv(tmp_path / "clean.csv", None), tmp_path / "clean.out.csv")
    found = [(i, view) for i, view in frozen if 2000 <= i < 2060]
    assert found and found[0][0] <= 2000 + 10 and found[0][1] == "stuck", frozen
    assert not [i for i, _ in clean if 2000 <= i < 2060]


def test_a_constant_stream_is_not_a_frozen_sensor() -> None:
    """A stream that never changed value (a status channel) has no run to score: a frozen
    sensor is one that was moving."""
    assert kernel_levels(np.full(5000, 45.0)).max() == 0.0
    moving_then_frozen = np.r_[np.random.default_rng(1).normal(0.0, 1.0, 300), np.full(50, 0.5)]
    assert kernel_levels(moving_then_frozen).max() >= THRESHOLD


def test_a_quantised_sensors_dwells_and_a_counters_zeros_raise_no_run_level() -> None:
    """A 0.5-step sensor on a slow cycle repeats a reading for dozens of readings at the top of
    its cycle; a counter rests at 0 between bursts. Neither is a frozen sensor."""
    rng = np.random.default_rng(3)
    t = np.arange(20000)
    quantised = np.round((20.0 + np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.2, t.size))
                         * 2.0) / 2.0
    levels = kernel_levels(quantised)
    assert (levels > 0.0).any()  # its runs are scored
    assert levels[1440:].max() < THRESHOLD  # after its first day, none is rare
    counter = np.where(rng.random(20000) < 0.02, rng.poisson(20.0, 20000), 0).astype(float)
    assert kernel_levels(counter).max() < THRESHOLD
    # A machine that starts to idle at 0 (NAB's rogue_agent_key_hold): its profile sees it.
    idling = np.r_[rng.normal(20.0, 1.0, 1000), np.zeros(60), rng.normal(20.0, 1.0, 100)]
    assert kernel_levels(idling).max() < THRESHOLD
