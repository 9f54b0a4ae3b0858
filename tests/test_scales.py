"""Each stream's value scale (kernels.scale, edge_ml.scales): the decision against a plain-NumPy
reference, and on the streams it exists for, through the real pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_ml.checkpoint_format import decode, encode
from edge_ml.config import parse_config
from edge_ml.errors import CheckpointError
from edge_ml.kernels.scale import (
    LOG,
    LOG_FLOOR_SDS,
    LOG_SKEW_MAX,
    N_SCALE,
    RAW,
    RAW_PENDING,
    RAW_SKEW_MIN,
    ROOT,
    ROOT_SKEW_MIN,
    S_LM2,
    S_M2,
    S_M3,
    S_MEAN,
    S_MODE,
    S_N,
    SCALE_READINGS,
    SECOND_LOOK_READINGS,
    UNDECIDED,
    count_root,
    count_unroot,
    scale_batch,
    unscale_range,
)
from edge_ml.pipeline import Pipeline
from edge_ml.replay import replay_csv
from edge_ml.state import compatibility, export_state, restore_state
from edge_ml.storage import Storage
from tests.test_cli import edge_ml

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

T0 = 1_700_000_000.0


def _skew(x: np.ndarray) -> float:
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    return 0.0 if m2 <= 0.0 else float(np.mean(d ** 3) / m2 ** 1.5)


def _anscombe(v: float) -> float:
    """A count's root, in plain Python: 2 sqrt(v + 3/8), shifted to 0 at 0, odd below."""
    root = 2.0 * (math.sqrt(abs(v) + 0.375) - math.sqrt(0.375))
    return root if v >= 0.0 else -root


def _reference(values: list[float]) -> tuple[float, int | None, list[float]]:
    """The rule in plain Python: (mode, index of the switch, the values as scored). A
    fractional stream that stays raw at SCALE_READINGS takes the log test again at
    SECOND_LOOK_READINGS, over every reading it learned."""
    learned: list[float] = []
    mode, switched, floor = UNDECIDED, None, 0.0
    out = []
    for i, v in enumerate(values):
        if mode in (UNDECIDED, RAW_PENDING) and math.isfinite(v):
            seen = np.array([*learned, v])
            fractional = bool(np.any(seen != np.floor(seen)))
            if v < 0.0 or (fractional and bool(np.any(seen == 0.0))):
                mode = RAW  # neither scale can hold it
            else:
                learned.append(v)
                look = SCALE_READINGS if mode == UNDECIDED else SECOND_LOOK_READINGS
                if len(learned) == look:
                    x = np.array(learned)
                    if fractional:
                        if _skew(x) > RAW_SKEW_MIN and abs(_skew(np.log(x))) < LOG_SKEW_MAX:
                            logs = np.log(x)
                            floor = float(logs.min() - LOG_FLOOR_SDS * logs.std())
                            mode, switched = LOG, i
                        else:
                            mode = RAW_PENDING if mode == UNDECIDED else RAW
                    elif (np.mean(x == 0.0) < 0.5 and _skew(x) > ROOT_SKEW_MIN
                          and abs(_skew(np.array([_anscombe(c) for c in x]))) < _skew(x)):
                        mode, switched = ROOT, i
                    else:
                        mode = RAW
        if mode == LOG and math.isfinite(v):
            out.append(max(math.log(v), floor) if v > 0.0 else floor)
        elif mode == ROOT and math.isfinite(v):
            out.append(_anscombe(v))
        else:
            out.append(v)
    return mode, switched, out


def _run(values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """The kernel over one stream (slot 1 of 3) in micro-batches of random sizes."""
    state = np.zeros((3, N_SCALE))
    out, switched, at = [], [], 0
    while at < len(values):
        size = int(rng.integers(1, 40))
        chunk = values[at:at + size]
        scaled = np.empty_like(chunk)
        switched += (at + scale_batch(state, np.ones(len(chunk), dtype=np.int64), chunk,
                                      scaled)).tolist()
        out.append(scaled)
        at += size
    return state[1], np.concatenate(out), switched


STREAMS = {
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "gaussian": lambda rng, n: 20.0 + rng.normal(0.0, 1.0, n),
    "exponential": lambda rng, n: rng.exponential(1.0, n),
    "poisson": lambda rng, n: rng.poisson(3.0, n).astype(float),  # has zeros
    # Whole numbers, skewed like a log-normal stream: a counter, its roots nearly symmetric.
    "counts": lambda rng, n: np.round(rng.lognormal(3.0, 1.0, n)) + 1.0,
    # Overdispersed counts (a gamma rate, then Poisson): the social-media mentions' kind.
    "mentions": lambda rng, n: rng.poisson(rng.gamma(2.0, 15.0, n)).astype(float),
    # Mostly 0, a burst now and then: raw (a burst's sizes must not be squeezed together).
    "sparse": lambda rng, n: np.where(rng.random(n) < 0.1, rng.poisson(20.0, n), 0.0),
    # Whole numbers and zeros, then a fraction: raw for good, as a negative count is.
    "mixed": lambda rng, n: np.concatenate([[0.0, 3.0, 2.5], rng.poisson(5.0, n - 3)]),
    "constant": lambda rng, n: np.full(n, 7.0),
    "far_from_zero": lambda rng, n: 1e6 + rng.lognormal(0.0, 1.0, n),
}


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_the_decision_matches_the_reference(kind: str) -> None:
    modes = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        values = STREAMS[kind](rng, 400)
        values[rng.random(400) < 0.05] = np.nan  # not learned, passed through
        if kind == "lognormal" and seed % 3 == 0:
            values[300] = 0.0  # after the second look: scored at the floor
            values[301] = -4.0
        state, got, switched = _run(values, rng)
        mode, at, want = _reference(values.tolist())
        assert state[S_MODE] == mode
        assert switched == ([] if at is None else [at])
        np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
        modes.add(mode)
    if kind in ("gaussian", "constant", "far_from_zero", "sparse", "mixed"):
        assert modes == {RAW}  # symmetric, mostly zero, or neither scale can hold it
    if kind == "lognormal":  # 87 % at 50 readings; over 99 % with the second look at 200
        assert modes == {LOG}
    if kind in ("counts", "mentions"):
        assert ROOT in modes and LOG not in modes


def test_a_counts_root_against_numpy_and_back() -> None:
    """Anscombe's root (shifted to 0 at 0, odd below) and its inverse, over the whole line."""
    v = np.concatenate([np.arange(0.0, 200.0), [1e6, 1e12, 0.5, -1.0, -7.0, -1e6]])
    want = np.sign(v) * 2.0 * (np.sqrt(np.abs(v) + 0.375) - np.sqrt(0.375))
    got = np.array([count_root(x) for x in v.tolist()])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.all(np.diff(got[np.argsort(v)]) > 0.0)  # monotone: the order of readings kept
    np.testing.assert_allclose([count_unroot(y) for y in got.tolist()], v, rtol=1e-9,
                               atol=1e-9)
    state = np.zeros((2, N_SCALE))
    state[0, S_MODE], state[1, S_MODE] = ROOT, RAW
    expected = np.array([[got[4], got[9]], [4.0, 9.0], [-3.0, 1.0]])
    unscale_range(state, np.array([0, 1, 0]), expected)
    np.testing.assert_allclose(expected, [[4.0, 9.0], [4.0, 9.0], [0.0, count_unroot(1.0)]],
                               rtol=1e-12)  # a count's usual range ends at 0


def test_the_moments_are_central_far_from_zero() -> None:
    """Values near 1e6 with a spread of 1: power sums would lose the skewness to rounding."""
    rng = np.random.default_rng(5)
    values = 1e6 + rng.lognormal(0.0, 0.7, SCALE_READINGS - 1)
    state = np.zeros((1, N_SCALE))
    scale_batch(state, np.zeros(len(values), dtype=np.int64), values, np.empty_like(values))
    row = state[0]
    assert row[S_N] == len(values) and row[S_MODE] == UNDECIDED
    d = values - values.mean()
    assert row[S_MEAN] == pytest.approx(values.mean(), rel=1e-15)
    assert row[S_M2] == pytest.approx(float(np.sum(d * d)), rel=1e-9)
    assert row[S_M3] == pytest.approx(float(np.sum(d ** 3)), rel=1e-6)
    logs = np.log(values)
    assert row[S_LM2] == pytest.approx(float(np.sum((logs - logs.mean()) ** 2)), rel=1e-6)


def _lognormal_csv(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    ts = T0 + 60.0 * np.arange(n)
    values = rng.lognormal(0.0, 1.0, n)
    path.write_text("timestamp,value\n" + "".join(
        f"{t:.0f},{v!r}\n" for t, v in zip(ts.tolist(), values.tolist(), strict=True)))
    return path


def _alerts(out: Path) -> int:
    return int(np.loadtxt(out, delimiter=",", skiprows=1, usecols=3, dtype=np.int64).sum())


@pytest.mark.needs_jit
def test_a_log_normal_stream_is_calm_on_its_logarithms(tmp_path: Path) -> None:
    """Log-normal noise once a minute, no anomaly, shipped defaults (the calibration suite's
    ``lognormal``): scored raw it alerts every few hundred readings, on its logarithms not."""
    source = _lognormal_csv(tmp_path / "ln.csv", 8000, seed=11)
    logs = Pipeline(parse_config({}))
    replay_csv(logs, source, tmp_path / "log.out.csv")
    assert logs.scales.logarithmic(0)
    raw = Pipeline(parse_config({}))
    raw.scales.settle(raw.scales.arrays.capacity)  # every slot raw for good: the old build
    replay_csv(raw, source, tmp_path / "raw.out.csv")
    assert not raw.scales.logarithmic(0)
    assert _alerts(tmp_path / "raw.out.csv") >= 5
    assert _alerts(tmp_path / "log.out.csv") <= 1


@pytest.mark.needs_jit
def test_a_log_normal_stream_misjudged_at_50_readings_turns_at_its_second_look(
        tmp_path: Path) -> None:
    """Seed 13's first 50 readings fail the log test by chance (one stream in eight does): it
    is scored raw, then turns logarithmic at its 200th reading, and its 8,000 anomaly-free
    readings raise at most one alert (without the second look, raw for good: 18)."""
    source = _lognormal_csv(tmp_path / "ln.csv", 8000, seed=13)
    values = np.loadtxt(source, delimiter=",", skiprows=1, usecols=1)
    names, ts = ["plant/flow"] * len(values), T0 + 60.0 * np.arange(len(values))
    pipeline = Pipeline(parse_config({}))
    pipeline.process_readings(names[:SCALE_READINGS], ts[:SCALE_READINGS],
                              values[:SCALE_READINGS])
    assert pipeline.scales.arrays.scale[0, S_MODE] == RAW_PENDING
    assert pipeline.scales.names(np.array([0])) == [None]  # still deciding, scored raw
    pipeline.process_readings(names[SCALE_READINGS:SECOND_LOOK_READINGS - 1],
                              ts[SCALE_READINGS:SECOND_LOOK_READINGS - 1],
                              values[SCALE_READINGS:SECOND_LOOK_READINGS - 1])
    assert not pipeline.scales.logarithmic(0)
    pipeline.process_readings(names[SECOND_LOOK_READINGS - 1:SECOND_LOOK_READINGS],
                              ts[SECOND_LOOK_READINGS - 1:SECOND_LOOK_READINGS],
                              values[SECOND_LOOK_READINGS - 1:SECOND_LOOK_READINGS])
    assert pipeline.scales.logarithmic(0)
    assert pipeline.features.arrays.seen[0] == SECOND_LOOK_READINGS  # its age kept

    replay_csv(Pipeline(parse_config({})), source, tmp_path / "ln.out.csv")
    assert _alerts(tmp_path / "ln.out.csv") <= 1


def test_a_stream_awaiting_its_second_look_takes_it_after_a_checkpoint() -> None:
    """The pending decision is state like any other: restored mid-way, the stream turns at
    the same reading and scores every reading as the uninterrupted pipeline does."""
    rng = np.random.default_rng(13)
    values = rng.lognormal(0.0, 1.0, 600)
    names, ts = ["plant/flow"] * len(values), T0 + 60.0 * np.arange(len(values))
    whole = Pipeline(parse_config({}))
    expected = whole.process_readings(names, ts, values)
    first = Pipeline(parse_config({}))
    head = first.process_readings(names[:120], ts[:120], values[:120])
    assert first.scales.arrays.scale[0, S_MODE] == RAW_PENDING
    restored = Pipeline(parse_config({}))
    restore_state(restored, decode(encode(export_state(first)).blob, compatibility(restored)))
    tail = restored.process_readings(names[120:], ts[120:], values[120:])
    assert restored.scales.logarithmic(0) and whole.scales.logarithmic(0)
    np.testing.assert_array_equal(np.concatenate([head.levels, tail.levels]), expected.levels)


def _stream(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(2.0, 0.8, n)
    values[700] = 5000.0  # far beyond anything the stream does: an alert
    return ["plant/pm25"] * n, T0 + 60.0 * np.arange(n), values


@pytest.mark.parametrize("size", [1, 7, 64])
def test_the_switch_does_not_depend_on_the_batching(size: int) -> None:
    """The stream restarts its learning at the reading where it turned logarithmic, however the
    readings were batched: every level is the same as in one batch."""
    names, ts, values = _stream(1000, seed=3)
    whole = Pipeline(parse_config({}))
    expected = whole.process_readings(names, ts, values)
    assert whole.scales.logarithmic(0)
    cut = Pipeline(parse_config({}))
    levels = np.concatenate([cut.process_readings(names[i:i + size], ts[i:i + size],
                                                  values[i:i + size]).levels
                             for i in range(0, len(names), size)])
    np.testing.assert_array_equal(levels, expected.levels)
    assert expected.levels[700] >= 0.5


def test_the_switch_restarts_the_learning_but_keeps_the_streams_age() -> None:
    """What the stream learned in raw units is forgotten at the switch, but not how old it is:
    its warm-up ends when it would have."""
    names, ts, values = _stream(1000, seed=3)
    pipeline = Pipeline(parse_config({}))
    pipeline.process_readings(names, ts, values)
    assert pipeline.scales.logarithmic(0)
    assert pipeline.detector.state.cal_n[0] < len(values)  # the model restarted
    assert pipeline.features.arrays.seen[0] == len(values)  # its age did not
    assert pipeline.detector.state.first_ts[0] == ts[0]


def test_an_alert_on_a_log_stream_reports_raw_values() -> None:
    """The value, and the usual range beside it, are in the stream's own units."""
    names, ts, values = _stream(1000, seed=3)
    pipeline = Pipeline(parse_config({}))
    out = pipeline.process_readings(names, ts, values)
    (event,) = [e for e in out.events if e.state == "open" and e.value == 5000.0]
    low, high = event.expected
    median = float(np.exp(2.0))
    assert 0.0 < low < median < high < 5000.0


def test_a_reading_at_or_below_zero_on_a_log_stream_is_an_anomaly_not_an_error() -> None:
    names, ts, values = _stream(2000, seed=4)
    values[700] = 20.0  # ordinary there
    values[800] = 0.0
    values[1700] = -3.0  # past the first one's cooldown
    pipeline = Pipeline(parse_config({}))
    out = pipeline.process_readings(names, ts, values)
    assert pipeline.scales.logarithmic(0)
    opened = {round(float(e.value), 6) for e in out.events if e.state == "open"}
    assert {0.0, -3.0} <= opened
    assert np.isfinite(out.levels).all()


def test_the_scale_survives_a_checkpoint_and_an_older_one_stays_raw() -> None:
    names, ts, values = _stream(1000, seed=5)
    trained = Pipeline(parse_config({}))
    trained.process_readings(names, ts, values)
    trained.process_readings(["plant/temperature"] * 200, ts[:200], 20.0 + np.sin(ts[:200]))
    document = export_state(trained)
    restored = Pipeline(parse_config({}))
    restore_state(restored, decode(encode(document).blob, compatibility(restored)))
    np.testing.assert_array_equal(restored.scales.arrays.scale[:2],
                                  trained.scales.arrays.scale[:2])
    assert restored.scales.logarithmic(0) and not restored.scales.logarithmic(1)

    document["header"]["schema_version"] = 9  # before scales: learned raw, stays raw
    del document["state"]["scales"]
    old = Pipeline(parse_config({}))
    restore_state(old, decode(encode(document).blob, compatibility(old)))
    assert not old.scales.logarithmic(0)
    np.testing.assert_array_equal(old.features.arrays.prof_mean[0],
                                  trained.features.arrays.prof_mean[0])
    more = old.process_readings(names[:300], ts[:300] + 1e5, values[:300])
    assert not old.scales.logarithmic(0) and np.isfinite(more.levels).all()
    old.process_readings(["plant/new"] * 100, ts[:100], values[:100])  # a new stream decides
    assert old.scales.logarithmic(old.streams.slot_of["plant/new"])


def test_a_drift_reset_keeps_the_streams_scale() -> None:
    """A drift restarts what the stream learned, not how its readings are read: the
    distribution's shape outlives a change of level."""
    rng = np.random.default_rng(8)
    n = 6000
    values = rng.lognormal(1.0, 1.0, n)
    values[3000:] *= 1000.0  # the level jumps and stays
    ts = T0 + 60.0 * np.arange(n)
    pipeline = Pipeline(parse_config({}))
    pipeline.process_readings(["line/flow"] * 3000, ts[:3000], values[:3000])
    assert pipeline.scales.logarithmic(0) and pipeline.drifts_seen == 0
    pipeline.process_readings(["line/flow"] * 3000, ts[3000:], values[3000:])
    assert pipeline.drifts_seen >= 1
    assert pipeline.scales.logarithmic(0)


def test_status_shows_each_streams_scale(tmp_path: Path) -> None:
    """The stream rows say how each stream is scored, and ``edge-ml status`` shows it."""
    db = tmp_path / "state.db"
    storage = Storage(db)
    pipeline = Pipeline(parse_config({}), storage)
    names, ts, values = _stream(1000, seed=6)
    pipeline.process_readings(names, ts, values)
    pipeline.process_readings(["plant/temperature"] * 400, ts[:400], 20.0 + np.sin(ts[:400]))
    pipeline.process_readings(["plant/new"] * 10, ts[:10], values[:10])  # still deciding
    counts_ts, counts = _mentions(400, 2)
    pipeline.process_readings(["plant/visits"] * 400, counts_ts, counts)
    assert pipeline.flush()
    storage.close()
    doc = json.loads(edge_ml("status", "--db", str(db), "--json").stdout)
    scales = {s["stream"]: s["scale"] for s in doc["streams"]}
    assert scales == {"plant/pm25": "log", "plant/temperature": "raw", "plant/new": None,
                      "plant/visits": "root"}
    text = edge_ml("status", "--db", str(db)).stdout
    rows = {line.split()[0]: line.split()[3] for line in text.splitlines()
            if line.startswith("plant/")}
    assert rows == {"plant/pm25": "log", "plant/temperature": "raw", "plant/new": "-",
                    "plant/visits": "root"}


def _mentions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mentions counted every 5 minutes: a daily cycle, a gamma-distributed rate (shape 3),
    then Poisson (the calibration suite's ``mention_counts_5min``)."""
    rng = np.random.default_rng(seed)
    ts = T0 + 300.0 * np.arange(n)
    hour = (ts % 86400.0) / 3600.0
    mu = 30.0 * (1.0 + 0.8 * np.sin(2.0 * np.pi * (hour - 14.0) / 24.0))
    return ts, rng.poisson(rng.gamma(3.0, mu / 3.0)).astype(float)


@pytest.mark.needs_jit
def test_an_overdispersed_counter_is_calm_on_its_roots_and_a_burst_still_alerts() -> None:
    """Anomaly-free mention counts, shipped defaults: raw, their gamma-shaped upper tail alerts
    every day or two; on their roots (decided from the first 50 readings) about as often as
    the bar allows. A burst far above the hour's usual count still opens an alert."""
    opened = {"root": 0, "raw": 0}
    for seed in (2, 3, 9):  # streams whose first 50 readings turn them
        ts, values = _mentions(12000, seed)
        for mode in opened:
            pipeline = Pipeline(parse_config({}))
            if mode == "raw":
                pipeline.scales.settle(pipeline.scales.arrays.capacity)
            out = pipeline.process_readings(["site/mentions"] * len(values), ts, values)
            assert pipeline.scales.names(np.array([0])) == [mode]
            opened[mode] += sum(e.state == "open" for e in out.events)
    assert opened["raw"] >= 20
    assert opened["root"] <= 3

    ts, values = _mentions(6000, 2)
    values[5000] = 8.0 * max(values[4990:5000].mean(), 10.0)
    pipeline = Pipeline(parse_config({}))
    out = pipeline.process_readings(["site/mentions"] * len(values), ts, values)
    assert out.levels[5000] >= 0.5
    (event,) = [e for e in out.events if e.state == "open" and e.value == values[5000]]
    low, high = event.expected  # the usual range, back in counts
    assert 0.0 <= low < values[4990:5000].mean() < high < values[5000]


def test_a_schema_10_checkpoint_keeps_its_decisions_and_restarts_the_undecided() -> None:
    """Schema 10 rows had 11 columns (no count roots): a decided stream keeps its scale; one
    still deciding starts its decision again, since its moments stopped at any zero."""
    names, ts, values = _stream(1000, seed=5)
    trained = Pipeline(parse_config({}))
    trained.process_readings(names, ts, values)
    trained.process_readings(["plant/temperature"] * 200, ts[:200], 20.0 + np.sin(ts[:200]))
    trained.process_readings(["plant/new"] * 20, ts[:20], values[:20])
    document = export_state(trained)
    document["header"]["schema_version"] = 10
    document["state"]["scales"]["scale"] = document["state"]["scales"]["scale"][:, :11].copy()
    old = Pipeline(parse_config({}))
    restore_state(old, decode(encode(document).blob, compatibility(old)))
    assert old.scales.names(np.arange(3)) == ["log", "raw", None]
    np.testing.assert_array_equal(old.scales.arrays.scale[:2, :11],
                                  trained.scales.arrays.scale[:2, :11])
    assert not old.scales.arrays.scale[2].any()  # deciding again, from its next reading
    old.process_readings(["plant/new"] * 60, ts[20:80], values[20:80])
    assert old.scales.names(np.arange(3))[2] is not None

    document["state"]["scales"]["scale"] = document["state"]["scales"]["scale"][:, :9].copy()
    with pytest.raises(CheckpointError, match="scale"):
        restore_state(old, decode(encode(document).blob, compatibility(old)))
