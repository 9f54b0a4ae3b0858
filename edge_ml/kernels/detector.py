"""The fused per-batch kernel: window -> features -> scaling -> HST score+learn -> calibration.

One call per micro-batch, readings in arrival order, no Python per reading. The stages are the
same njit functions the separate kernels use, so the fused path and the staged one (used with the
river backend and in tests) compute the same numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edge_ml.kernels.calibration import MIN_SCORES, calibrate
from edge_ml.kernels.hst import hst_step
from edge_ml.kernels.window import N_FEATURES, standard_scale, window_update


@njit(cache=True)
def detect_batch(
    slots, values,
    ring, ring_pos, ring_n, win_sum, win_sumsq, prev, shift, smean, svar, sn,
    split_feature, split_threshold, mass, ref, count, first_window, height, window_size,
    paper_score,
    cal_mean, cal_var, cal_n, horizon,
    seen, warmup,
):
    """Anomaly levels, raw HST scores and warm-up flags of a micro-batch.

    A reading is ``warming`` when its stream is still in the model's first window, has seen
    fewer than ``warmup`` readings, or its calibration has too few scores; its level is then 0.
    """
    n_readings = slots.shape[0]
    levels = np.zeros(n_readings, dtype=np.float64)
    raw = np.zeros(n_readings, dtype=np.float64)
    warming = np.zeros(n_readings, dtype=np.uint8)
    x = np.empty(N_FEATURES, dtype=np.float64)
    for i in range(n_readings):
        s = slots[i]
        window_update(ring, ring_pos, ring_n, win_sum, win_sumsq, prev, shift, s, values[i], x)
        standard_scale(smean, svar, sn, s, x)
        modelled = first_window[s] == 0
        score = hst_step(
            split_feature, split_threshold, mass, ref, count, first_window, s, x, height,
            window_size, paper_score,
        )
        raw[i] = score
        if modelled:
            levels[i] = calibrate(cal_mean, cal_var, cal_n, s, score, horizon)
        seen[s] += 1
        if not modelled or seen[s] <= warmup or cal_n[s] <= MIN_SCORES:
            warming[i] = 1
            levels[i] = 0.0
    return levels, raw, warming
