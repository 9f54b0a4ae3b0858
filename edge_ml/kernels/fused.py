"""The fused per-batch kernel: features -> scaling -> HST score+learn -> calibration.

One call per micro-batch, readings in arrival order, no Python per reading. The stages are the
same njit functions the staged path uses (river backend, tests), so both compute the same
numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edge_ml.kernels.calibration import calibrate, seasonal_views, tail_learn, warming_up
from edge_ml.kernels.discrete import discrete_rescale, discrete_z
from edge_ml.kernels.explain import expected_range, level_view
from edge_ml.kernels.hst import hst_step_into, hst_unlearn
from edge_ml.kernels.runs import run_level
from edge_ml.kernels.visits import judged_by_slot_before, visit_rescale
from edge_ml.kernels.window import (
    N_FEATURES,
    N_Z,
    Z_RESIDUAL,
    feature_update,
    season_bin,
    slot_before_z,
    slot_floor_sd,
    squash,
)

# A scored reading at this level or above (the alert threshold's default) is taken back out
# of its stream's trees: an anomaly must not teach them that it is normal (issue 13; river's
# ThresholdFilter idea). The profile still learns it: gating the profile cost NAB 5-13 points
# (docs/benchmarks.md, round 12), the trees' gate changes no NAB alert (round 13).
NOT_LEARNED_LEVEL = 0.5


@njit(cache=True)
def young_visit_slot_before(visit, discrete, prof_mean, prof_mean_dev, prof_n, offset, mean,
                            dev, s, b, v, ts, period_s, t_first):
    """``(judged, z, residual)``: whether value ``v`` of stream ``s`` (profile slot ``b``) is
    also judged by the slot before its own (a young visit's start on a fast stream,
    :func:`edge_ml.kernels.visits.judged_by_slot_before`), and its seasonal z-score and
    residual against that slot, floored as its own slot's z-score is. Call it before the
    reading is learned; it learns nothing. The caller keeps the less alarming z-score."""
    if not judged_by_slot_before(visit, s, b, prof_n[s, b]):
        return False, 0.0, 0.0
    grown, z, res = slot_before_z(prof_mean, prof_mean_dev, prof_n, offset, s, b, v, ts,
                                  period_s, t_first, slot_floor_sd(mean, dev, s), False)
    if not grown:
        return False, 0.0, 0.0
    return True, discrete_z(discrete, s, v, res, z), res


@njit(cache=True, nogil=True)
def detect_batch(
    slots, values, ts, period_s,
    prof_mean, prof_mean_dev, prof_n, offset, mean, dev, dmean, ddev, vol, lr_mean, lr_dev, prev,
    seen,
    split_feature, split_threshold, mass, ref, count, first_window, height, window_size,
    paper_score,
    cal_mean, cal_var, cal_n, short, short_sum, persist, tail, ptail, mtail,
    first_ts, age, warmup, warm_early, warm_span_s, discrete, visit, shoulder, shoulder_floor,
    runs,
):
    """Anomaly levels, raw HST scores, warm-up flags, profile residuals, and per reading the
    view that gave the level and the usual range ``expected[i] = [low, high]`` of a micro-batch.

    A reading is ``warming`` while its stream has seen at most ``warmup`` readings, unless it
    has seen more than ``warm_early``, spans ``warm_span_s`` since its first reading (kept in
    ``first_ts``) and the reading's time-of-day slot is grown enough to score it: a slow
    stream's warm-up then ends after days, not after a fixed number of readings (see
    :func:`warming_up`). Its level is then reported as 0 (unknown, not normal) although every
    stage keeps learning. ``age`` counts each stream's readings since its first (through drift
    resets, as ``first_ts``): the two give its mean sampling interval. ``runs`` holds each
    stream's runs of equal readings (:mod:`edge_ml.kernels.runs`): a run rare for the stream
    is a level of its own, the stuck view's.
    """
    n_readings = slots.shape[0]
    levels = np.zeros(n_readings, dtype=np.float64)
    raw = np.zeros(n_readings, dtype=np.float64)
    warming = np.zeros(n_readings, dtype=np.uint8)
    residual = np.zeros(n_readings, dtype=np.float64)
    view = np.zeros(n_readings, dtype=np.int8)  # issue 14: kernels.explain view codes
    expected = np.empty((n_readings, 2), dtype=np.float64)
    z = np.empty(N_Z, dtype=np.float64)
    x = np.empty(N_FEATURES, dtype=np.float64)
    walk = np.empty((height + 2, split_feature.shape[0]), dtype=np.int64)  # HST scratch
    for i in range(n_readings):
        s = slots[i]
        if math.isnan(first_ts[s]):
            first_ts[s] = ts[i]
        b = season_bin(ts[i], period_s, prof_n.shape[1])
        before, z_before, res_before = young_visit_slot_before(
            visit, discrete, prof_mean, prof_mean_dev, prof_n, offset, mean, dev, s, b,
            values[i], ts[i], period_s, first_ts[s])
        residual[i] = feature_update(prof_mean, prof_mean_dev, prof_n, offset, mean, dev, dmean,
                                     ddev, vol, lr_mean, lr_dev, prev, seen, s, values[i], ts[i],
                                     b, period_s, first_ts[s], age[s], z)
        age[s] += 1.0
        # The trees see the features as the staged path computes them; the seasonal view's
        # scale is floored by the stream's discrete structure (kernels.discrete) and by how
        # its slot visits begin (kernels.visits).
        squash(z, x)
        z[0] = discrete_rescale(discrete, s, values[i], z[Z_RESIDUAL], z[0])
        z[0] = visit_rescale(visit, s, b, z[0], prof_n[s, b])
        if before and z[0] != 0.0 and abs(z_before) < abs(z[0]):  # the less alarming
            z[0] = z_before
            z[Z_RESIDUAL] = res_before
        # Issue 14 hook: the usual range, from the z-score and residual before learning.
        expected_range(values[i], z[Z_RESIDUAL], z[0], expected[i])
        score = hst_step_into(split_feature, split_threshold, mass, ref, count, first_window, s,
                              x, height, window_size, paper_score, walk)
        raw[i] = score
        warm = warming_up(seen[s], z[0], ts[i] - first_ts[s], warmup, warm_early, warm_span_s)
        season, unscaled, shift = seasonal_views(persist, tail, ptail, shoulder, s, z[0], warm,
                                                 shoulder_floor)
        run = run_level(runs, s, values[i])
        level = max(calibrate(cal_mean, cal_var, cal_n, short, short_sum, mtail, s, score,
                              season, z[3], window_size, warm), run)
        # Issue 14 hook: which view's tail it is.
        view[i] = level_view(level, season, shift, z[3], run)
        if not warm and level >= NOT_LEARNED_LEVEL:
            hst_unlearn(mass, ref, count, s, walk, height)
        if warm:
            warming[i] = 1
        else:
            levels[i] = level
            tail_learn(tail, s, max(level, unscaled), z[0])
    return levels, raw, warming, residual, view, expected
