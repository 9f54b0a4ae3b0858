"""Each Numba kernel against its plain reference in tests/naive.py, over edge cases."""

from __future__ import annotations

import naive
import numpy as np
import pytest

from edge_ml.features import FeatureState
from edge_ml.kernels.alerting import NEVER, alert_batch
from edge_ml.kernels.calibration import (
    CAL_SHORT,
    N_SHOULDER,
    N_TAIL,
    SH_COUNT,
    SH_SEEN,
    T_EPISODES,
    T_LOG_EXCESS,
    T_N,
    TAIL_DEAD,
    TAIL_PRIOR,
    TAIL_RATE,
    TAIL_Z0,
    TAIL_Z_ALERT,
    calibrate,
    level_z,
    neglog_tail,
    persistent_tail,
    persistent_z,
    seasonal_views,
    shoulder_learn,
    shoulder_scale,
    tail_learn,
    tail_level,
    tail_scale,
)
from edge_ml.kernels.discrete import N_DISCRETE, discrete_rescale

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

rng = np.random.default_rng(0)
CASES = {
    "noise": rng.normal(20.0, 1.0, 700),
    "daily": 10 + 5 * np.sin(np.arange(2000) * 2 * np.pi / 288) + rng.normal(0, 0.3, 2000),
    "constant": np.full(300, 3.25),
    "huge_offset": 1e9 + rng.normal(0.0, 0.01, 500),
    "steps": np.repeat([0.0, 5.0, -5.0, 1e-3], 90),
    "single": np.array([42.0]),
    # noise that freezes on one value for 80 readings, then moves again
    "stuck": np.concatenate([rng.normal(20.0, 1.0, 400), np.full(80, 20.3),
                             rng.normal(20.0, 1.0, 200)]),
}


def _ts(n: int, step_s: float = 300.0) -> np.ndarray:
    return 1.7e9 + step_s * np.arange(n)  # 5-minute readings by default, like NAB


def one_stream(values: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, ...]:
    """z-scores, tree features and residuals of one new stream (daily profile of 48 slots)."""
    return FeatureState(86400.0, 48).update(np.zeros(len(values), np.int64), values, ts,
                                            np.full(1, np.nan), np.zeros(1))


# An hourly stream reads young slots as t; a 20 Hz one's slots learn per second, not per reading.
@pytest.mark.parametrize("step_s", [300.0, 3600.0, 0.05])
@pytest.mark.parametrize("bins", [1, 48])
@pytest.mark.parametrize("case", sorted(CASES))
def test_features_match_reference(case: str, bins: int, step_s: float) -> None:
    values = CASES[case]
    ts = _ts(len(values), step_s)
    expected = np.array(naive.features(values.tolist(), ts.tolist(), 86400.0, bins))
    streams = 3  # interleaved copies must not disturb each other
    state = FeatureState(86400.0, bins, capacity=1)
    state.arrays.grow(streams)
    slots = np.tile(np.arange(streams, dtype=np.int64), len(values))
    Z, X, _ = state.update(slots, np.repeat(values, streams), np.repeat(ts, streams),
                           np.full(streams, np.nan), np.zeros(streams))
    for s in range(streams):
        np.testing.assert_allclose(Z[slots == s, :4], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(X[slots == 0], np.vectorize(naive.squash)(expected[:, :3]),
                               atol=1e-12)
    assert np.all((X >= 0.0) & (X <= 1.0))


def test_a_reading_off_its_daily_profile_stands_out() -> None:
    values = CASES["daily"].copy()
    values[1900] += 3.0  # ordinary for the day's range, not for that time of day
    Z, _, _ = one_stream(values, _ts(2000))
    assert abs(Z[1900, 0]) > 4 * np.abs(Z[1600:1899, 0]).std()


def test_young_profile_slots_do_not_turn_noise_into_anomalies() -> None:
    # Pure noise once a minute: each half-hour slot is young (a few readings) for its first
    # day. Its own deviation alone, from 2-3 residuals, gave seasonal z-scores of 5.5-11 on
    # every one of these seeds (5-7 readings past the 1e-5 tail each); shrunk toward the
    # stream's pooled slot deviation, the tail is about what Gaussian noise should give.
    beyond = 0
    for seed in range(8):
        values = np.random.default_rng(seed).normal(20.0, 0.1, 5000)
        ts = 1.7e9 + 60.0 * np.arange(5000)
        Z, _, _ = one_stream(values, ts)
        assert np.abs(Z[:, 0]).max() < 6.0
        beyond += int((np.abs(Z[:, 0]) > 4.42).sum())
    assert beyond <= 8  # 46 before; 4 now, 0.4 expected of exact Gaussian z-scores


@pytest.mark.needs_jit  # 264,000 readings: 45 s as plain Python (the JIT run has it)
def test_a_fast_streams_new_slot_scores_noise_as_noise() -> None:
    # 1 Hz Gaussian noise on a stream's first day, crossing into a new half-hour slot: the
    # slot's first readings all come from its first seconds, and their own deviation (two or
    # three residuals) gave z-scores with tails 100-3,600 times a Gaussian's; the daemon raised
    # a false alert on ~3 % of 1,000 such streams at every half hour of their first day.
    streams, before, after = 400, 600, 60
    boundary = 1.7e9 - 1.7e9 % 1800 + 1800  # a half-hour slot starts here
    k = np.arange(-before, after, dtype=np.float64)
    values = np.random.default_rng(3).normal(20.0, 1.0, (len(k), streams))
    slots = np.tile(np.arange(streams, dtype=np.int64), len(k))
    Z, _, _ = FeatureState(86400.0, 48, capacity=streams).update(
        slots, values.ravel(), np.repeat(boundary + k, streams), np.full(streams, np.nan),
        np.zeros(streams))
    z = np.abs(Z[:, 0].reshape(len(k), streams))
    first = z[(k >= 3) & (k < 6)]  # the new slot's third to fifth readings: it scores them
    assert np.sqrt(np.mean(first * first)) < 1.07  # 1.11-1.13 before the fix (1 for Gaussian)
    young = z[(k >= 3) & (k < 12)]
    assert int((young > 3.0).sum()) <= 20  # 9.7 expected of Gaussian z; 26-40 before the fix


def test_an_hourly_streams_young_slots_score_noise_as_noise() -> None:
    # An hourly metric visits each half-hour slot once a day, so a slot's deviation for its
    # first weeks comes from a few days' residuals, and the seasonal z-score of its noise had
    # the tails of a Student t: 20 of these readings past |z| 4 (7 past 4.5) as Gaussian
    # z-scores, where 1.6 are expected. Read as a t with the slot's degrees of freedom:
    residuals = 0
    beyond = 0
    for seed in range(40):
        noise = np.random.default_rng(seed).lognormal(0.0, 0.1, 24 * 30)
        ts = 1.7e9 + 3600.0 * np.arange(24 * 30)
        daily = 50.0 + 30.0 * np.sin(2 * np.pi * ((ts % 86400.0) / 3600.0 - 9.0) / 24.0)
        Z, _, _ = one_stream(daily * noise, ts)
        days = np.arange(24 * 30) // 24  # readings each slot had before this one
        young = np.abs(Z[days >= 3, 0])
        residuals += len(young)
        beyond += int((young > 4.0).sum())
    assert residuals == 40 * 24 * 27
    assert beyond <= 4  # 1 now, 20 before


@pytest.mark.parametrize("nu", [3.0, 4.5, 10.0, 30.0, 100.0, 1000.0])
def test_a_t_score_is_read_at_its_own_tail(nu: float) -> None:
    from scipy.stats import norm
    from scipy.stats import t as student

    from edge_ml.kernels.window import student_as_gaussian

    for t in (0.3, 1.0, 2.0, 4.0, 6.0, 10.0, 40.0, 100.0):
        exact = norm.isf(student.sf(t, nu))
        assert abs(student_as_gaussian(t, nu) - exact) <= 0.036 * exact
        assert student_as_gaussian(-t, nu) == -student_as_gaussian(t, nu)
        assert student_as_gaussian(t, nu) < t  # a t's tail is heavier: never a larger z
    assert student_as_gaussian(0.0, nu) == 0.0


def test_value_scale_is_robust_to_one_outlier() -> None:
    # The scale is a mean absolute deviation (x1.25): about the sd on Gaussian noise, and one
    # huge reading does not squeeze every later z-score towards 0 as a variance would (a
    # variance with forgetting 1/600 would put the sd near 40 after this outlier).
    values = np.random.default_rng(5).normal(0.0, 1.0, 4000)
    Z, _, _ = one_stream(values.copy(), _ts(4000))
    assert 0.9 < Z[3000:3500, 1].std() < 1.1
    values[3500] = 1e3
    Z, _, _ = one_stream(values, _ts(4000))
    assert Z[3500, 1] > 100
    assert Z[3501:3700, 1].std() > 0.2  # ~0.3 here; ~0.025 with a variance


def test_a_stuck_sensor_stands_out() -> None:
    values = np.random.default_rng(6).normal(20.0, 0.5, 3000)
    values[2500:2540] = values[2500]  # the sensor freezes on one value
    Z, _, _ = one_stream(values, _ts(3000))
    assert Z[1000:2500, 3].min() > -6  # ordinary noise: no collapse
    assert Z[2525:2540, 3].max() < -9  # frozen for 25 readings: far in the lower tail


def test_calibration_matches_reference() -> None:
    rng = np.random.default_rng(3)
    raw = np.concatenate([np.zeros(50), rng.uniform(0.6, 0.8, 1200), [0.99] * 5,
                          rng.uniform(0.6, 0.8, 100)])
    z_season = rng.normal(0, 1, len(raw))
    z_season[300] = 8.0
    z_volatility = rng.normal(0, 1, len(raw))
    z_volatility[600] = -12.0  # the readings stopped moving
    z_volatility[700] = +12.0  # a burst of noise: left to the other views
    mean, var, n = np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64)
    short, short_sum, mtail = np.zeros((1, CAL_SHORT)), np.zeros(1), np.zeros((1, N_TAIL))
    got = [calibrate(mean, var, n, short, short_sum, mtail, 0, r, tail_level(zs), zv, 50, False)
           for r, zs, zv in zip(raw, z_season, z_volatility, strict=True)]
    expected = naive.levels(raw.tolist(), z_season.tolist(), z_volatility.tolist(), 50)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[300] > 0.5  # a far seasonal residual alone raises the level
    assert got[600] > 0.5 and got[700] < 0.5  # a volatility collapse does, a burst does not
    assert max(got[1250:1258]) > 5 * np.median(got[100:1250])  # so do high HST scores
    assert all(0.0 <= v <= 1.0 for v in got)


def test_persistent_view_matches_reference() -> None:
    rng = np.random.default_rng(8)
    z = rng.normal(0.0, 1.0, 3000)
    z[:40] = 0.0  # a young profile: not scored, not learned
    z[1000] = 30.0  # one spike: clipped, it cannot carry the view
    z[2000:2100] += 2.5  # a held shift of 2.5 deviations: no single reading is rare
    z[2500:2520] = 0.0
    persist = np.zeros((1, 4))
    got = [persistent_tail(persistent_z(persist, 0, v)) for v in z]
    np.testing.assert_allclose(got, naive.persistent_levels(z.tolist()), atol=1e-12)
    assert max(got[:140]) == 0.0  # nothing scored before 100 learned readings
    assert got[1000] < 0.3 and max(got[1001:1010]) < 0.3  # a lone spike is not persistent
    assert np.median([tail_level(v) for v in z[2000:2100]]) < 0.3  # readings: unremarkable...
    assert max(got[2000:2100]) > 0.5  # ...their run is not
    assert all(0.0 <= v <= 1.0 for v in got)
    # its tail: the asymptotic series takes over from erfc at |z| = 8 without a jump
    assert abs(neglog_tail(8.0 - 1e-9) - neglog_tail(8.0)) < 1e-4
    assert neglog_tail(40.0) > neglog_tail(39.0) > 700.0  # past where erfc underflows


def _tail_run(z: np.ndarray, warming: np.ndarray,
              floor: float = 1.0) -> tuple[list[float], list[float]]:
    """The seasonal views of one stream through the kernels: (scaled, unscaled) levels, the
    reading's z scaled by its shoulder too, never below ``floor`` (1: not at all)."""
    persist, tail, ptail = np.zeros((1, 4)), np.zeros((1, N_TAIL)), np.zeros((1, N_TAIL))
    shoulder = np.zeros((1, N_SHOULDER))
    scaled, unscaled = [], []
    for v, warm in zip(z.tolist(), warming.tolist(), strict=True):
        season, raw, _ = seasonal_views(persist, tail, ptail, shoulder, 0, v, bool(warm), floor)
        if not warm:
            tail_learn(tail, 0, raw, v)
        scaled.append(season)
        unscaled.append(raw)
    return scaled, unscaled


TAIL_CASES = {
    "gaussian": lambda r: r.normal(0.0, 1.0, 30000),
    "student_t3": lambda r: r.standard_t(3, 30000),
    "runs": lambda r: np.where(np.arange(30000) % 700 < 30, 6.0, r.normal(0.0, 1.0, 30000)),
}


@pytest.mark.parametrize("case", sorted(TAIL_CASES))
def test_own_tail_matches_reference(case: str) -> None:
    z = TAIL_CASES[case](np.random.default_rng(11))
    z[:200] = 0.0  # a young profile
    warming = np.zeros(len(z), dtype=np.uint8)
    warming[:300] = 1
    scaled, unscaled = _tail_run(z, warming)
    want_scaled, want_unscaled = naive.own_tail_levels(z.tolist(), warming.tolist())
    np.testing.assert_allclose(unscaled, want_unscaled, atol=1e-12)
    np.testing.assert_allclose(scaled, want_scaled, atol=1e-9)
    assert all(a <= b for a, b in zip(scaled, unscaled, strict=True))  # never raised


def test_a_heavy_tailed_stream_learns_its_own_extremes() -> None:
    """Student-t (3 degrees of freedom) z-scores: read as Gaussian, 0.9 % of them reach level
    0.5; scaled by the stream's own tail, 0.065 % (0.085 % before the tail's rate was corrected
    for the dead time of its episode counter, round 14). A Gaussian stream keeps every level,
    and one whose extremes come as runs (as NAB's anomalies do) keeps every reading of every
    run."""
    rng = np.random.default_rng(5)
    flagged, runs = {}, None
    for case, make in TAIL_CASES.items():
        z = make(rng) / (1.38 if case == "student_t3" else 1.0)  # t3 over 1.25 x its MAD
        scaled, unscaled = _tail_run(z, np.zeros(len(z), dtype=np.uint8))
        late = slice(10000, None)  # after the stream has met its tail
        flagged[case] = (np.mean(np.array(unscaled[late]) >= 0.5),
                         np.mean(np.array(scaled[late]) >= 0.5))
        if case == "runs":
            runs = np.array(scaled[late])[z[late] == 6.0]
    before, after = flagged["student_t3"]
    assert before > 5e-3 and after < 7.5e-4
    assert flagged["gaussian"][1] == flagged["gaussian"][0]  # untouched
    assert runs is not None and len(runs) > 800 and runs.min() >= 0.5  # runs are not learned
    assert abs(level_z(0.5) - TAIL_Z_ALERT) < 1e-12
    assert abs(tail_level(TAIL_Z_ALERT) - 0.5) < 1e-6


@pytest.mark.parametrize("floor", [0.0, 0.5])
@pytest.mark.parametrize("case", sorted(TAIL_CASES))
def test_shoulder_matches_reference(case: str, floor: float) -> None:
    z = TAIL_CASES[case](np.random.default_rng(13))[:8000]
    z[:200] = 0.0  # a young profile: no shoulder evidence
    warming = np.zeros(len(z), dtype=np.uint8)
    warming[:300] = 1
    scaled, unscaled = _tail_run(z, warming, floor)
    want_scaled, want_unscaled = naive.own_tail_levels(z.tolist(), warming.tolist(), floor)
    np.testing.assert_allclose(unscaled, want_unscaled, atol=1e-12)
    np.testing.assert_allclose(scaled, want_scaled, atol=1e-9)


def test_a_heavy_tailed_stream_is_told_by_its_shoulder() -> None:
    """Student-t3 z-scores in their first 5,000 scored readings, while the episode tail's prior
    still reads them as Gaussian: 0.32 % reach level 0.5; scaled by the shoulder without a
    floor, 0.06 %, and at floor 0.5, 0.18 %. A Gaussian stream's shoulder leaves every level
    as it was."""
    rng = np.random.default_rng(5)
    t3 = rng.standard_t(3, 5000) / 1.38  # t3 over 1.25 x its MAD, as above
    gauss = rng.normal(0.0, 1.0, 5000)
    none = np.zeros(5000, dtype=np.uint8)

    def flagged(z: np.ndarray, floor: float) -> float:
        return float(np.mean(np.array(_tail_run(z, none, floor)[0]) >= 0.5))

    shipped, halved, free = flagged(t3, 1.0), flagged(t3, 0.5), flagged(t3, 0.0)
    assert shipped > 2.5e-3 and free < 0.25 * shipped and free < halved < shipped
    scaled, unscaled = _tail_run(gauss, none, 0.0)
    assert np.mean(np.array(scaled) == np.array(unscaled)) > 0.999


def test_shoulder_scale_keeps_its_floor_and_a_young_stream_at_one() -> None:
    row = np.zeros((1, N_SHOULDER))
    assert shoulder_scale(row[0], 0.0) == 1.0  # the prior alone: a Gaussian stream
    for z in np.random.default_rng(3).standard_t(2, 3000):
        shoulder_learn(row[0], z)
    assert row[0, SH_SEEN] == 3000 and row[0, SH_COUNT] > 60
    assert shoulder_scale(row[0], 0.0) < 0.5
    assert shoulder_scale(row[0], 0.5) == 0.5
    before = row.copy()
    shoulder_learn(row[0], 0.0)  # a slot too young to score: not evidence
    np.testing.assert_array_equal(row, before)


def test_a_bursty_stream_learns_its_persistent_episodes() -> None:
    """A sparse counter's bursts (4 readings at z = 3 every 97, each reading unremarkable, the
    run not): the persistent view flags every burst; scaled by the view's own tail of episodes,
    none once the stream has met them. A Gaussian stream's level shift after 20,000 quiet
    readings is still found (its persistent episodes never outran the prior)."""
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 0.3, 30000)
    starts = np.arange(300, len(z), 97)
    for b in starts:
        z[b:b + 4] = 3.0
    scaled, unscaled = (np.array(v) for v in _tail_run(z, np.zeros(len(z), dtype=np.uint8)))
    late = starts[starts > 10000]
    assert all(unscaled[b:b + 12].max() >= 0.5 for b in late)
    assert not any(scaled[b:b + 12].max() >= 0.5 for b in late)
    shifted = rng.normal(0.0, 1.0, 30000)
    shifted[20000:] += 2.0
    scaled, unscaled = (np.array(v) for v in _tail_run(shifted, np.zeros(30000, dtype=np.uint8)))
    assert scaled[20000:20100].max() == unscaled[20000:20100].max() > 0.6
    assert not (scaled[5000:20000] >= 0.5).any()


def test_a_stream_whose_model_view_bursts_learns_it() -> None:
    """Raw HST scores that jump to 0.99 for 6 readings every 97 (a sparse counter's bursts, as
    the trees see them): the HST view's likelihood flags the first jumps; scaled by the view's
    own tail of episodes, none once the stream has met them. The reference holds every level,
    and a stream with one such jump keeps it."""
    rng = np.random.default_rng(9)
    raw = rng.uniform(0.65, 0.75, 30000)
    starts = np.arange(400, len(raw), 97)
    for b in starts:
        raw[b:b + 6] = 0.99
    zeros = [0.0] * len(raw)

    def run(raw: np.ndarray) -> np.ndarray:
        mean, var, n = np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64)
        short, short_sum, mtail = np.zeros((1, CAL_SHORT)), np.zeros(1), np.zeros((1, N_TAIL))
        return np.array([calibrate(mean, var, n, short, short_sum, mtail, 0, r, 0.0, 0.0, 250,
                                   False) for r in raw])

    got = run(raw)
    np.testing.assert_allclose(got, naive.levels(raw.tolist(), zeros, zeros, 250), atol=1e-9)
    assert got[starts[0]:starts[0] + 10].max() > 0.5  # the first jump is news
    late = starts[starts > 10000]
    assert not any(got[b:b + 10].max() >= 0.5 for b in late)
    once = rng.uniform(0.65, 0.75, 30000)
    once[20000:20006] = 0.99
    assert run(once)[20000:20010].max() > 0.5


@pytest.mark.parametrize("debounce,cooldown_s,cooldown_n", [(1, 0.0, 0), (3, 0.0, 40),
                                                            (2, 50.0, 0), (1, 10.0, 150)])
def test_alert_state_machine_matches_reference(debounce: int, cooldown_s: float,
                                               cooldown_n: int) -> None:
    rng = np.random.default_rng(4)
    levels = np.clip(rng.normal(0.3, 0.15, 2000), 0, 1)
    levels[rng.integers(0, 2000, 60)] = 0.9
    levels[500:520] = 0.7
    ts = np.arange(2000, dtype=np.float64)
    warming = (ts < 100).astype(np.uint8)
    slots = np.zeros(2000, dtype=np.int64)
    above, below = np.zeros(1, np.int32), np.zeros(1, np.int32)
    is_open, peak, closed = np.zeros(1, np.uint8), np.zeros(1), np.full(1, np.nan)
    since_open = np.full(1, NEVER, dtype=np.int64)
    codes, _ = alert_batch(slots, levels, ts, warming, above, below, is_open, peak, closed,
                           since_open, 0.5, 0.4, debounce, cooldown_s, cooldown_n)
    expected = naive.alert_codes(levels.tolist(), ts.tolist(), warming.tolist(), 0.5, 0.4,
                                 debounce, cooldown_s, cooldown_n)
    assert codes.tolist() == expected
    assert 1 in expected and 2 in expected
    assert not codes[:100].any()  # warming up never alerts


def test_the_first_scored_window_is_not_an_anomaly() -> None:
    # The model does not score its first window (raw 0). Learned as scores, those zeros made the
    # first real score ~1e9 deviations high: level 1.0 on every stream when warm-up < window.
    rng = np.random.default_rng(4)
    raw = np.concatenate([np.zeros(250), rng.uniform(0.45, 0.55, 400)])
    mean, var, n = np.zeros(1), np.zeros(1), np.zeros(1, dtype=np.int64)
    short, short_sum = np.zeros((1, CAL_SHORT)), np.zeros(1)
    mtail = np.zeros((1, N_TAIL))
    levels = [calibrate(mean, var, n, short, short_sum, mtail, 0, r, 0.0, 0.0, 250, False)
              for r in raw]
    assert max(levels) < 0.3


def _discrete_case(values: np.ndarray, level: float, scale: float) -> tuple[list, list, list]:
    """Residuals against ``level`` and their z-scores at a too-small slot ``scale``."""
    r = (values - level).tolist()
    return values.tolist(), r, [x / scale for x in r]


@pytest.mark.parametrize("case", ["poisson", "quantised", "sparse", "continuous"])
def test_discrete_floors_match_reference(case: str) -> None:
    """Counts, grid sensors and mostly-zero counters: a collapsed slot scale is floored by what
    the stream's discrete structure shows; a continuous stream is left alone."""
    rng = np.random.default_rng(13)
    n = 2000
    if case == "poisson":
        values, level, scale = rng.poisson(0.7, n).astype(float), 0.7, 0.3
        values[1500] = 5.0  # P(X >= 5) = 8e-4 at mean 0.7: ordinary over 10,000 readings
    elif case == "quantised":
        values = np.round(rng.normal(20.0, 0.2, n) / 0.5) * 0.5
        level, scale = 20.0, 0.05  # a slot that saw mostly one grid value
    elif case == "sparse":
        bursts = rng.poisson(rng.uniform(5.0, 50.0, n))  # bursts of 5-50 counts
        values = np.where(rng.random(n) < 0.03, bursts, 0).astype(float)
        level, scale = 0.5, 0.5  # the slot deviation of a stream that is mostly 0
    else:
        values, level, scale = rng.normal(20.0, 1.0, n), 20.0, 1.0
    values[:10] = values[10:20]  # the floors start after 10 readings
    v, r, z = _discrete_case(values, level, scale)
    z[5] = 0.0  # an unscored reading stays unscored
    discrete = np.zeros((2, N_DISCRETE))
    got = [discrete_rescale(discrete, 1, v[i], r[i], z[i]) for i in range(n)]
    np.testing.assert_allclose(got, naive.discrete_rescaled(v, r, z), rtol=1e-12, atol=1e-12)
    assert not discrete[0].any()  # one stream's state only
    assert got[5] == 0.0
    assert np.array_equal(np.sign(got), np.sign(z))  # never flips a residual's direction
    assert np.all(np.abs(got) <= np.abs(z) + 1e-12)  # only ever less alarming
    if case == "poisson":
        assert abs(z[1500]) > 10.0 and abs(got[1500]) < 3.0
    elif case == "quantised":
        one_step = [i for i in range(100, n) if abs(r[i]) == 0.5]
        assert one_step and max(abs(got[i]) for i in one_step) <= 2.0 + 1e-12  # q / 2
    elif case == "sparse":
        bursts = [i for i in range(500, n) if v[i] > 0]
        assert max(abs(z[i]) for i in bursts) > 50 and max(abs(got[i]) for i in bursts) < 5
    else:
        np.testing.assert_array_equal(got[100:], z[100:])  # a continuous grid step is ~0


def test_a_negative_reading_on_a_count_stream_is_no_count() -> None:
    """Found by hypothesis under NUMBA_DISABLE_JIT: ten zeros, then -1. The count's Poisson z
    took the square root of -0.625 (a ValueError in Python, NaN quietly skipped in Numba);
    a negative reading is scored as it is, and the stream stops being a count."""
    discrete = np.zeros((1, N_DISCRETE))
    for _ in range(12):
        discrete_rescale(discrete, 0, 0.0, -0.1, -1.0)
    got = discrete_rescale(discrete, 0, -1.0, -1.1, -11.0)
    assert got == -11.0 == naive.discrete_rescaled([0.0] * 12 + [-1.0], [-0.1] * 12 + [-1.1],
                                                   [-1.0] * 12 + [-11.0])[-1]


def test_slot_coverage_matches_reference() -> None:
    from edge_ml.kernels.window import slot_covered

    gen = np.random.default_rng(5)
    t_first = 1.7e9 + gen.uniform(0, 86400.0, 400)
    ts = t_first + np.concatenate([gen.uniform(0, 2 * 86400.0, 390), np.zeros(5),
                                   np.full(5, 86400.0)])
    for bins in (1, 7, 48):
        for back in (0, 1):
            pairs = list(zip(ts.tolist(), t_first.tolist(), strict=True))
            got = [slot_covered(t, f, 86400.0, bins, back) for t, f in pairs]
            want = [naive._covered(t, f, 86400.0, bins, back) for t, f in pairs]
            np.testing.assert_allclose(got, want, atol=1e-9)
    assert slot_covered(1.7e9, np.nan, 86400.0, 48, 0) == 1.0  # no first reading known: old


def test_a_fast_streams_profile_learns_per_second_not_per_reading() -> None:
    from edge_ml.kernels.window import ALPHA_BIN, slot_alpha

    t0 = 1.7e9
    assert slot_alpha(t0 + 600.0, t0, 10.0) == ALPHA_BIN  # a minute between readings
    assert slot_alpha(t0 + 10.0, t0, 10.0) == ALPHA_BIN  # 1 Hz: as before
    assert slot_alpha(t0 + 10.0, t0, 200.0) == pytest.approx(ALPHA_BIN / 20.0)  # 20 Hz
    # Too young to know an interval, no first reading (NaN) or a clock that went back:
    # per reading.
    assert slot_alpha(t0 + 0.05, t0, 1.0) == ALPHA_BIN
    assert slot_alpha(t0, np.nan, 500.0) == ALPHA_BIN
    assert slot_alpha(t0 - 5.0, t0, 500.0) == ALPHA_BIN


def test_the_readings_tail_corrects_its_rate_for_the_counters_dead_time() -> None:
    """Episodes open at least TAIL_COOL + 1 readings apart, so a stream whose extremes come
    every ~80 readings is counted every ~250: the reading's tail reads the rate as
    m / (1 - m D), the views' tails (``dead`` 0) as counted."""
    row = np.zeros((1, N_TAIL))
    row[0, T_N], row[0, T_EPISODES] = 39_999.0, 120.0
    row[0, T_LOG_EXCESS] = 120.0 * 0.35  # a Hill gamma of ~0.35, as Student-t3's
    counted = (120.0 + TAIL_PRIOR) / (40_000.0 + TAIL_PRIOR / TAIL_RATE)
    gamma = (120.0 * 0.35 + TAIL_PRIOR / TAIL_Z0 ** 2) / (120.0 + TAIL_PRIOR)
    for dead, lam in ((0.0, counted), (TAIL_DEAD, counted / (1.0 - counted * TAIL_DEAD))):
        state = row.copy()
        want = TAIL_Z_ALERT / (TAIL_Z0 * (lam / TAIL_RATE) ** gamma)
        assert tail_scale(state, 0, dead) == pytest.approx(want, rel=1e-12)
        assert state[0, T_N] == 40_000.0  # the reading is counted
    corrected = tail_scale(row.copy(), 0, TAIL_DEAD)
    assert corrected < 0.9 * tail_scale(row.copy(), 0, 0.0)  # 0.32 against 0.375
    young = np.zeros((1, N_TAIL))  # no episode yet: a Gaussian's scale, whatever the dead time
    assert tail_scale(young, 0, TAIL_DEAD) == 1.0
