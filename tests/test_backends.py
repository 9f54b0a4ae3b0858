"""Contracts between the model's implementations: what makes one a drop-in for the other.

- The ``river`` and ``numba`` backends (``[model] backend``) give identical levels, raw
  scores, warm-up flags, residuals and alerts on the same readings through the whole
  ``Pipeline``: several interleaved streams, a daily pattern, spikes, gaps, uneven batches.
- The fused kernel (``kernels.fused.detect_batch``, one call per batch) gives what its stages
  give when called one after another: features (``kernels.window`` through
  ``FeatureState.update``), then Half-Space Trees (``kernels.hst.hst_step_into``), then the
  calibration (``kernels.calibration.calibrate``).

A missing reading (NaN in a replayed CSV, a sensor that skipped a beat) reaches the pipeline as
a gap in time: replay skips NaN and the daemon rejects it (``non_finite``), so the gaps here are
stretches of absent readings. NaN inside the model (tree features not defined yet) is covered by
the first readings of every stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_ml.config import parse_config
from edge_ml.features import FeatureState
from edge_ml.kernels.calibration import (
    WARM_SPAN_S,
    calibrate,
    seasonal_views,
    tail_learn,
    warm_early,
    warming_up,
)
from edge_ml.kernels.discrete import discrete_rescale
from edge_ml.kernels.explain import expected_range, level_view
from edge_ml.kernels.fused import NOT_LEARNED_LEVEL, young_visit_slot_before
from edge_ml.kernels.hst import hst_step_into, hst_unlearn
from edge_ml.kernels.runs import run_level
from edge_ml.kernels.visits import visit_rescale
from edge_ml.kernels.window import Z_RESIDUAL, season_bin
from edge_ml.model.detector import Detection, NumbaDetector, make_detector
from edge_ml.pipeline import Pipeline, model_params

pytestmark = pytest.mark.kernels

MODEL = {"n_trees": 5, "height": 6, "window_size": 40, "warmup": 30}
ALERTS = {"debounce": 1, "cooldown_readings": 20}
# A fast wandering stream (1-minute readings for 2.5 days) reaches the start of its second
# day, where a young visit's first readings are also judged by the slot before (kernels.visits).
FAST = {"per_stream": 3600, "streams": 2, "step_s": 60.0, "wander": 0.05}


def readings(seed: int, per_stream: int = 700, streams: int = 4, step_s: float = 300.0,
             wander: float = 0.0):
    """Interleaved readings of ``streams`` streams every ``step_s`` seconds, in arrival order.

    A daily sine with noise, a level per stream, a random walk of steps of sd ``wander``, a
    spike every 97th reading and a stuck stretch on stream 1; each stream loses a random tenth
    of its readings and one stretch of 40 (gaps).
    """
    rng = np.random.default_rng(seed)
    names, ts, values = [], [], []
    for s in range(streams):
        t = 1_700_000_000.0 + step_s * np.arange(per_stream) + 17.0 * s
        v = 10.0 * s + 5.0 * np.sin(2 * np.pi * np.arange(per_stream) * step_s / 86400.0) \
            + rng.normal(0.0, 0.4, per_stream)
        if wander:
            v += np.cumsum(rng.normal(0.0, wander, per_stream))
        v[150 + s::97] += 8.0
        if s == 1:
            v[400:460] = v[400]
        keep = rng.random(per_stream) > 0.1
        start = int(rng.integers(200, 500))
        keep[start:start + 40] = False
        names += [f"sensors/b{s}"] * int(keep.sum())
        ts += t[keep].tolist()
        values += v[keep].tolist()
    order = np.argsort(np.array(ts), kind="stable")
    return ([names[i] for i in order], np.array(ts)[order], np.round(np.array(values)[order], 6))


def batches(n: int, seed: int) -> list[slice]:
    """Uneven micro-batches, from single readings to a few hundred."""
    rng = np.random.default_rng(seed)
    cuts, at = [], 0
    while at < n:
        size = int(rng.choice([1, 2, 7, 50, 300]))
        cuts.append(slice(at, min(n, at + size)))
        at += size
    return cuts


def run(backend: str, names, ts, values, cuts):
    config = parse_config({"model": {**MODEL, "backend": backend}, "alerts": ALERTS})
    pipeline = Pipeline(config)
    outs = [pipeline.process_readings(names[c], ts[c], values[c]) for c in cuts]
    events = [(e.stream, e.state, e.ts, e.score) for o in outs for e in o.events]
    return {
        "levels": np.concatenate([o.levels for o in outs]),
        "raw": np.concatenate([o.raw for o in outs]),
        "warming": np.concatenate([o.warming for o in outs]),
        "codes": np.concatenate([o.codes for o in outs]),
    }, events, pipeline


@pytest.mark.parametrize("seed, data", [(0, {}), (1, {}), (2, FAST)])
def test_river_and_numba_backends_give_identical_levels(seed: int, data: dict) -> None:
    names, ts, values = readings(seed, **data)
    cuts = batches(len(names), seed)
    river, river_events, _ = run("river", names, ts, values, cuts)
    numba, numba_events, pipeline = run("numba", names, ts, values, cuts)
    # The data must exercise what is compared: scored readings, alerts, a stuck sensor.
    assert (numba["warming"] == 0).sum() > 2000
    assert len(numba_events) >= 10
    for key in ("warming", "raw", "levels", "codes"):
        np.testing.assert_array_equal(river[key], numba[key], err_msg=key)
    assert river_events == numba_events
    assert len(pipeline.streams.names) == len(set(names))


def staged(detector: NumbaDetector, features: FeatureState, slots: np.ndarray,
           values: np.ndarray, ts: np.ndarray, judged_before: list[int],
           unlearned: list[int]) -> Detection:
    """The fused kernel's stages called one at a time, reading by reading, in arrival order;
    counts in ``judged_before`` the readings a young visit's slot before judged, and in
    ``unlearned`` the anomalous readings the trees took back."""
    p, f, s = detector.params, detector.forest, detector.state
    st = detector.structure
    n = len(slots)
    levels, raw = np.zeros(n), np.zeros(n)
    warming, residual = np.zeros(n, dtype=np.uint8), np.zeros(n)
    view, expected = np.zeros(n, dtype=np.int8), np.empty((n, 2))
    walk = np.empty((p.height + 2, st.split_feature.shape[0]), dtype=np.int64)
    for i in range(n):
        slot = int(slots[i])
        a = features.arrays
        b = season_bin(ts[i], features.period_s, features.bins)
        t_first = ts[i] if np.isnan(s.first_ts[slot]) else s.first_ts[slot]
        before, z_before, res_before = young_visit_slot_before(
            s.visit, s.discrete, a.prof_mean, a.prof_mean_dev, a.prof_n, a.offset, a.mean,
            a.dev, slot, b, values[i], ts[i], features.period_s, t_first)
        Z, X, R = features.update(slots[i:i + 1], values[i:i + 1], ts[i:i + 1],
                                  s.first_ts, s.age_readings)
        residual[i] = R[0]
        Z[0, 0] = discrete_rescale(s.discrete, slot, values[i], Z[0, Z_RESIDUAL], Z[0, 0])
        Z[0, 0] = visit_rescale(s.visit, slot, b, Z[0, 0], a.prof_n[slot, b])
        if before and Z[0, 0] != 0.0 and abs(z_before) < abs(Z[0, 0]):
            Z[0, 0], Z[0, Z_RESIDUAL] = z_before, res_before
            judged_before[0] += 1
        expected_range(values[i], Z[0, Z_RESIDUAL], Z[0, 0], expected[i])
        raw[i] = hst_step_into(st.split_feature, st.split_threshold, f.mass, f.ref, f.count,
                               f.first_window, slot, np.ascontiguousarray(X[0]), p.height,
                               p.window_size, p.paper_score, walk)
        warm = warming_up(features.arrays.seen[slot], Z[0, 0], ts[i] - s.first_ts[slot],
                          p.warmup, warm_early(p.warmup), WARM_SPAN_S)
        season, unscaled, shift = seasonal_views(s.persist, s.tail, s.ptail, s.shoulder, slot,
                                                 Z[0, 0], warm, p.heavy_tail_floor)
        run = run_level(s.runs, slot, values[i])
        level = max(calibrate(s.cal_mean, s.cal_var, s.cal_n, s.short, s.short_sum, s.mtail,
                              slot, raw[i], season, Z[0, 3], p.window_size, warm), run)
        view[i] = level_view(level, season, shift, Z[0, 3], run)
        if not warm and level >= NOT_LEARNED_LEVEL:
            unlearned[0] += hst_unlearn(f.mass, f.ref, f.count, slot, walk, p.height)
        if warm:
            warming[i] = 1
        else:
            levels[i] = level
            tail_learn(s.tail, slot, max(level, unscaled), Z[0, 0])
    return Detection(levels, raw, warming, residual, view, expected)


@pytest.mark.parametrize("seed, data", [(0, {"per_stream": 600}), (3, {"per_stream": 600}),
                                        (5, FAST)])
def test_fused_kernel_matches_its_stages_called_one_by_one(seed: int, data: dict) -> None:
    names, ts, values = readings(seed, **data)
    lookup = {name: i for i, name in enumerate(sorted(set(names)))}
    slots = np.array([lookup[n] for n in names], dtype=np.int64)
    config = parse_config({"model": MODEL})
    results = []
    for fused in (True, False):
        features = FeatureState(config.features.season_s, config.features.season_bins,
                                capacity=len(lookup))
        features.arrays.grow(len(lookup))
        params = model_params(config, features.n_features)
        detector = make_detector(params, capacity=len(lookup))
        assert isinstance(detector, NumbaDetector)
        judged_before, unlearned = [0], [0]
        parts = [detector.process(features, slots[c], values[c], ts[c]) if fused
                 else staged(detector, features, slots[c], values[c], ts[c], judged_before,
                             unlearned)
                 for c in batches(len(slots), seed)]
        results.append({k: np.concatenate([getattr(d, k) for d in parts])
                        for k in ("levels", "raw", "warming", "residual", "view", "expected")})
        results[-1]["mass"] = detector.forest.mass.copy()
    fused_out, staged_out = results
    assert (fused_out["warming"] == 0).sum() > 1500
    if data is FAST:
        assert judged_before[0] >= 20  # the slot before did judge (staged, the last run)
    assert unlearned[0] >= 5  # anomalous readings were taken out of the trees
    assert (fused_out["levels"] > 0.5).sum() >= 5  # alert-worthy levels are compared too
    for key in ("warming", "residual", "raw", "levels", "view", "expected", "mass"):
        np.testing.assert_array_equal(fused_out[key], staged_out[key], err_msg=key)
