"""Drift detection on block means of the level, and the reset reaction (edge_ml.drift)."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import wandering_temperature

from edge_ml.config import parse_config
from edge_ml.drift import DriftMonitor, DriftParams
from edge_ml.kernels.alerting import OPENED
from edge_ml.kernels.page_hinkley import SPREAD_ALPHA
from edge_ml.pipeline import Pipeline
from edge_ml.storage import Storage

pytestmark = pytest.mark.kernels  # also run without the JIT (make test)

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
    # Documented bound: ~5 blocks of 50 readings after the change; the reset applies from the
    # next reading, wherever the micro-batch ends.
    assert shift_at <= event.ts <= shift_at + 5 * 50
    (stored,) = storage.db.query("SELECT stream, reaction FROM drift_events")
    assert stored == {"stream": "s", "reaction": "reset"}
    last_open = np.flatnonzero(codes == OPENED).max(initial=-1)
    assert last_open <= event.ts  # nothing opens in the new regime after the reset
    assert not pipeline.alerts.open_alerts  # any alert open at the change has resolved


def test_reaction_none_records_but_keeps_the_model() -> None:
    pipeline, _, _, shift_at = _run("none", Storage(":memory:"))
    (event,) = pipeline.pending.drift
    assert event.reaction == "none" and event.ts >= shift_at
    assert pipeline.features.arrays.seen[0] == 6000  # never reset


@pytest.mark.needs_jit
def test_stable_streams_do_not_drift() -> None:
    config = parse_config(CONFIG)
    pipeline = Pipeline(config)
    rng = np.random.default_rng(5)
    n = 20_000
    names = [f"s{i % 4}" for i in range(n)]
    pipeline.process_readings(names, np.arange(n, dtype=np.float64), rng.normal(0, 1, n))
    assert not pipeline.pending.drift


def _steps(n: int = 10_000) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stream "a" steps up three times, each a drift (a stream scores 1,150 readings after a
    reset before it can drift again); "b" stays put; readings interleaved."""
    rng = np.random.default_rng(11)
    a = rng.normal(10.0, 1.0, n // 2)
    for at in (1300, 2600, 3900):
        a[at:] += 12.0
    b = rng.normal(0.0, 1.0, n // 2)
    values = np.empty(n)
    values[0::2], values[1::2] = a, b
    return ["a", "b"] * (n // 2), np.arange(n, dtype=np.float64), values


def _replay(reaction: str, size: int) -> tuple[np.ndarray, np.ndarray, list]:
    config = parse_config({**CONFIG, "model": {**CONFIG["model"], "drift_reaction": reaction}})
    pipeline = Pipeline(config, Storage(":memory:"))
    names, ts, values = _steps()
    levels, codes = [], []
    for lo in range(0, len(names), size):
        out = pipeline.process_readings(names[lo:lo + size], ts[lo:lo + size],
                                        values[lo:lo + size])
        levels.append(out.levels)
        codes.append(out.codes)
    drifts = [(e.stream, e.ts, e.statistic) for e in pipeline.pending.drift]
    return np.concatenate(levels), np.concatenate(codes), drifts


@pytest.mark.needs_jit
@pytest.mark.parametrize("reaction", ["reset", "none"])
def test_drift_and_its_reaction_do_not_depend_on_batching(reaction: str) -> None:
    """The reaction takes effect after the reading that completed the drifting block: a replay
    chunk of thousands of readings gives the daemon's levels, alerts and drift events (the
    reset used to wait for the end of the batch, and the batch's later blocks went untested)."""
    levels, codes, drifts = _replay(reaction, 10_000)
    assert [stream for stream, _, _ in drifts] == ["a", "a", "a"]
    for size in (1, 7, 64):
        got_levels, got_codes, got_drifts = _replay(reaction, size)
        assert got_drifts == drifts, size
        np.testing.assert_array_equal(got_levels, levels, err_msg=str(size))
        np.testing.assert_array_equal(got_codes, codes, err_msg=str(size))


@pytest.mark.needs_jit
def test_a_wandering_stream_scores_the_same_in_any_batching() -> None:
    """A slowly wandering temperature read once a minute drifts (falsely) now and then, and
    each reset keeps the state of its slot visits (model.detector.KEPT_THROUGH_DRIFT). That
    state must be the one at the drift: a batch scored past the drift and then again would
    learn its later readings twice."""
    n = 8000
    ts, values = wandering_temperature(n)
    names = ["room"] * n
    runs = []
    for size in (n, 1, 7, 64):
        pipeline = Pipeline(parse_config({}))
        outs = [pipeline.process_readings(names[lo:lo + size], ts[lo:lo + size],
                                          values[lo:lo + size]) for lo in range(0, n, size)]
        runs.append((np.concatenate([o.levels for o in outs]),
                     np.concatenate([o.codes for o in outs]),
                     pipeline.detector.state.visit[0].copy(), pipeline.drifts_seen))
    levels, codes, visit, drifts = runs[0]
    assert drifts >= 2
    for got_levels, got_codes, got_visit, got_drifts in runs[1:]:
        assert got_drifts == drifts
        np.testing.assert_array_equal(got_levels, levels)
        np.testing.assert_array_equal(got_codes, codes)
        np.testing.assert_array_equal(got_visit, visit)


def test_a_reset_part_way_through_a_slot_visit_scores_on() -> None:
    """A drift reset keeps the visit state while the profile starts afresh: a stream that
    drifts in the middle of a slot's visit must not look as if it were on that slot's second
    day (it did, and divided by its count of zero earlier visits: ZeroDivisionError).
    Found by the replay property test with 3-reading blocks."""
    config = parse_config({"model": {"n_trees": 5, "height": 4, "window_size": 10,
                                     "warmup": 5, "drift_block": 3, "drift_min_blocks": 2}})
    pipeline = Pipeline(config)
    values = np.zeros(36)
    values[31:33] = 1.0
    ts = 1_704_067_200.0 + 60.0 * np.arange(36)
    for i in range(36):
        pipeline.process_readings(["in"], ts[i:i + 1], values[i:i + 1])
    assert pipeline.drifts_seen >= 1


def test_an_empty_batch_is_one_empty_piece() -> None:
    """Replay can hand over a chunk with no finite value: no piece to cut, nothing to
    concatenate."""
    out = Pipeline(parse_config({})).process_readings([], np.zeros(0), np.zeros(0))
    assert len(out.levels) == 0 and not out.events


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


def _river_monitor(params: DriftParams, batches: list[tuple], names: list[str]) -> tuple:
    """The monitor as it was written with river's own PageHinkley, one per stream."""
    import importlib.util
    import math
    import statistics
    from pathlib import Path

    import river

    spec = importlib.util.spec_from_file_location(
        "_river_page_hinkley_test", Path(river.__file__).parent / "drift" / "page_hinkley.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = DriftMonitor(params).state
    detectors: dict[int, object] = {}
    means: dict[int, list[float]] = {}
    spread: dict[int, tuple[float, float, int]] = {}
    events = []
    for slots, values, warming, ts in batches:
        from edge_ml.kernels.page_hinkley import block_batch

        block_slots, sums, sumsqs, last_ts = block_batch(
            slots, values, warming, ts, state.block_sum, state.block_sumsq, state.block_n,
            params.block)
        drifted: set[int] = set()
        for k, slot in enumerate(block_slots.tolist()):
            if slot in drifted:
                continue
            mean = float(sums[k]) / params.block
            var = max(float(sumsqs[k]) / params.block - mean * mean, 0.0)
            if state.ref_blocks[slot] < params.min_blocks:
                state.ref_var[slot] += (var - state.ref_var[slot]) / (state.ref_blocks[slot] + 1)
                means.setdefault(slot, []).append(mean)
                state.ref_blocks[slot] += 1
                continue
            # The spread of the block means: the reference's by the textbook formula (the
            # kernel keeps a running Welford sum instead), then an exponentially weighted
            # variance of every later block mean, learned after the block is scored.
            if slot not in spread:
                history = means[slot]
                spread[slot] = (statistics.fmean(history),
                                statistics.variance(history) if len(history) > 1 else 0.0,
                                len(history))
            spread_mean, means_var, seen = spread[slot]
            scale = max(math.sqrt(max(state.ref_var[slot], means_var)), 1e-9)
            rate = max(SPREAD_ALPHA, 1.0 / (seen + 1))
            step = mean - spread_mean
            spread[slot] = (spread_mean + rate * step,
                            (1.0 - rate) * (means_var + rate * step * step), seen + 1)
            state.ref_blocks[slot] = seen + 1
            # The kernel's form of the same spread, for the comparison of states.
            state.ref_mean[slot] = spread[slot][0]
            state.ref_mean_m2[slot] = spread[slot][1] * seen
            ph = detectors.setdefault(slot, module.PageHinkley(
                min_instances=params.min_blocks, delta=params.delta,
                threshold=params.threshold, mode="both"))
            ph.update(mean / scale)
            state.ph_n[slot] = ph._x_mean.n
            state.ph_mean[slot] = ph._x_mean._mean
            state.ph_inc[slot] = ph._sum_increase
            state.ph_min_inc[slot] = ph._min_increase
            state.ph_dec[slot] = ph._sum_decrease
            state.ph_max_dec[slot] = ph._max_decrease
            if ph.drift_detected:
                drifted.add(slot)
                state.reset(slot)
                detectors.pop(slot)
                means.pop(slot)
                spread.pop(slot)
                events.append((slot, names[slot], float(last_ts[k]),
                               f"block mean {mean:.6g} over {params.block} readings = "
                               f"{mean / scale:.2f} sd (running mean {ph._x_mean.get():.2f} sd)"))
    return state, events


def test_kernel_is_rivers_page_hinkley_exactly() -> None:
    params = DriftParams(block=5, threshold=3.0, delta=0.2, min_blocks=3)
    rng = np.random.default_rng(11)
    names = ["a", "b", "c", "d"]
    n = 40_000
    slots = rng.integers(0, 4, n)
    values = rng.normal(0, 1, n) + np.repeat(rng.normal(0, 3, n // 500), 500)  # level steps
    # A wander slower than a block, so that many references take the block means' spread
    values += 3.0 * np.sin(np.arange(n) * 2 * np.pi / 400)
    values[::997] = 0.0  # some constant stretches: var 0, the scale floor
    warming = (rng.random(n) < 0.05).astype(np.uint8)
    ts = np.arange(n, dtype=np.float64)
    batches = [(slots[lo:lo + 300], values[lo:lo + 300], warming[lo:lo + 300], ts[lo:lo + 300])
               for lo in range(0, n, 300)]
    reference, expected = _river_monitor(params, batches, names)
    monitor = DriftMonitor(params)
    got = []
    for batch in batches:
        got += [(slot, e.stream, e.ts, e.statistic) for slot, e in monitor.update(*batch, names)]
    assert len(expected) > 20
    assert got == expected
    learning = reference.ref_blocks[:4] > params.min_blocks  # past the reference's list
    assert learning.any()
    for name, array in reference.export(4).items():
        if name in ("ref_mean", "ref_mean_m2"):  # the reference keeps a list at first
            np.testing.assert_allclose(monitor.state.export(4)[name][learning], array[learning],
                                       rtol=1e-9, err_msg=name)
            continue
        np.testing.assert_array_equal(monitor.state.export(4)[name], array, err_msg=name)


def _sine(n: int, seed: int) -> np.ndarray:
    """A 10-minute cycle read at 1 Hz: each 50-reading block sees a twelfth of it."""
    rng = np.random.default_rng(seed)
    return 5.0 * np.sin(np.arange(n) * 2 * np.pi / 600) + rng.normal(0.0, 0.3, n)


def _drifts(values: np.ndarray) -> list[float]:
    monitor = DriftMonitor(DriftParams())
    n = len(values)
    found = []
    for lo in range(0, n, 256):
        hi = min(lo + 256, n)
        found += [event.ts for _, event in monitor.update(
            np.zeros(hi - lo, dtype=np.int64), values[lo:hi], np.zeros(hi - lo, np.uint8),
            np.arange(lo, hi, dtype=np.float64), ["sine"])]
    return found


def test_a_wander_slower_than_a_block_is_not_drift_but_a_step_on_it_is() -> None:
    """Tight blocks whose means swing with the cycle: the scale is the swing (the block means'
    spread in the reference), not the within-block spread, which made the cycle a drift."""
    for seed in range(3):
        assert _drifts(_sine(30_000, seed)) == []
    stepped = _sine(30_000, 7)
    stepped[20_000:] += 40.0  # far outside the cycle's +-5
    (at,) = _drifts(stepped)
    assert 20_000 <= at <= 20_000 + 5 * 50


def test_the_block_means_spread_keeps_learning_after_the_reference() -> None:
    # A stream whose first blocks swing widely (a young profile's residuals) and then settle:
    # frozen at the reference, the spread of the block means stayed ~3 sd wide, and a later
    # step of 2 sd took ~40 blocks to report. Learned from every block, it is found in a few.
    params = DriftParams(block=50, threshold=5.0, delta=0.5, min_blocks=10)
    rng = np.random.default_rng(4)
    swings = np.repeat(np.tile([3.0, -3.0], 5), 50)  # the reference: block means +-3
    settled = np.zeros(300 * 50)
    step = np.full(20 * 50, 2.0)
    values = np.concatenate([swings, settled, step]) + rng.normal(0.0, 1.0, 320 * 50 + 500)
    n = len(values)
    monitor = DriftMonitor(params)
    found = [e.ts for _, e in monitor.update(np.zeros(n, np.int64), values,
                                             np.zeros(n, np.uint8), np.arange(n, dtype=float),
                                             ["s"])]
    start = 310 * 50  # the step's first reading
    assert len(found) == 1
    assert start < found[0] < start + 5 * 50


def test_a_reset_stream_that_has_run_for_days_warms_up_briefly() -> None:
    # A drift reset restarts the stream's profile, but the stream is not new: it keeps the time
    # of its first reading (model.detector.KEPT_THROUGH_DRIFT), so it has the warm-up time
    # span behind it and scores again after the early share of the warm-up (100 of 300
    # readings), not after all 300 (25 hours at 5-minute sampling).
    pipeline = Pipeline(parse_config({"alerts": {"cooldown_s": 0.0}}), Storage(":memory:"))
    rng = np.random.default_rng(5)
    n, shift_at = 4 * 288 + 600, 4 * 288  # four days of 5-minute readings, then a new level
    ts = 1.7e9 + 300.0 * np.arange(n)
    values = 20.0 + 3.0 * np.sin(2 * np.pi * ts / 86400.0) + rng.normal(0.0, 0.3, n)
    values[shift_at:] += 15.0
    warming = []
    for lo in range(0, n, 64):
        out = pipeline.process_readings(["s"] * len(ts[lo:lo + 64]), ts[lo:lo + 64],
                                        values[lo:lo + 64])
        warming.append(out.warming)
    drift = pipeline.pending.drift
    assert len(drift) == 1
    reset_at = int(np.searchsorted(ts, drift[0].ts)) + 1  # the reset applies from here
    after = np.concatenate(warming)[reset_at:]
    warm = int(after.sum())
    assert 100 <= warm <= 110, warm  # 300 when the reset forgot the stream's first reading
    assert not after[warm:].any()
    # And its age in readings, so a fast stream's profile still learns by its sampling interval
    # (kernels.window.slot_alpha), not by the readings since the reset.
    assert pipeline.detector.state.age_readings[0] == n


def test_a_drift_reset_keeps_the_streams_own_tails() -> None:
    # Heavy-tailed noise read once a minute, then a level step: the drift restarts the model
    # and profile, but how often this stream's own extremes come (its seasonal and persistent
    # z-scores' tails, in units of its own spread) is the shape of its noise, not its level.
    # The HST view's tail restarts with the forest whose scores it describes.
    from edge_ml.kernels.calibration import T_EPISODES, T_N

    rng = np.random.default_rng(8)
    n, step_at = 9000, 6000
    values = 20.0 + rng.standard_t(3, n)
    values[step_at:] += 25.0
    ts = 1_700_000_000.0 + 60.0 * np.arange(n)
    pipeline = Pipeline(parse_config({}))
    pipeline.process_readings(["room"] * step_at, ts[:step_at], values[:step_at])
    state = pipeline.detector.state
    before = {name: getattr(state, name)[0].copy() for name in ("tail", "ptail", "mtail")}
    assert before["tail"][T_EPISODES] > 0 and before["ptail"][T_EPISODES] > 0
    pipeline.process_readings(["room"] * (n - step_at), ts[step_at:], values[step_at:])
    assert pipeline.drifts_seen == 1
    assert state.cal_n[0] < n - step_at  # the model did restart
    for name in ("tail", "ptail"):  # kept: still counting from before the step
        assert getattr(state, name)[0, T_N] > before[name][T_N], name
        assert getattr(state, name)[0, T_EPISODES] >= before[name][T_EPISODES], name
    assert state.mtail[0, T_N] < n - step_at  # restarted
