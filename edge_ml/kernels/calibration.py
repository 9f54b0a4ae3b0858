"""Raw Half-Space-Trees scores to anomaly levels in [0, 1] that compare across streams.

A raw HST score depends on the stream's spread and on the trees; a fixed threshold on it means
different things on different streams. Each stream keeps an exponentially weighted mean and
variance of its own recent raw scores; the level of a new score is the Gaussian tail position of
that score against them (computed before the score is folded in, so an anomaly is judged against
history it is not part of).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Scores seen before a level is trusted; until then the level is 0 (warming up).
MIN_SCORES = 30
_SQRT2 = math.sqrt(2.0)
# Floor on the score deviation: HST scores are quantised by window masses, and a stream whose
# scores have been constant would otherwise turn the smallest wobble into a certain anomaly.
MIN_STD = 1e-3


@njit(cache=True)
def calibrate(cal_mean, cal_var, cal_n, s, raw, horizon):
    """Level of raw score ``raw`` for slot ``s``, then learn it (EWMA over ``horizon`` scores)."""
    n = cal_n[s]
    if n >= MIN_SCORES:
        std = math.sqrt(cal_var[s])
        if std < MIN_STD:
            std = MIN_STD
        z = (raw - cal_mean[s]) / std
        level = 0.5 * (1.0 + math.erf(z / _SQRT2))
    else:
        level = 0.0
    # Equal weights until the horizon is reached, then exponential forgetting.
    alpha = 1.0 / (n + 1) if n + 1 < horizon else 1.0 / horizon
    delta = raw - cal_mean[s]
    cal_mean[s] += alpha * delta
    cal_var[s] = (1.0 - alpha) * (cal_var[s] + alpha * delta * delta)
    cal_n[s] = n + 1
    return level


@njit(cache=True)
def calibrate_batch(slots, raw, active, cal_mean, cal_var, cal_n, horizon):
    """Levels for a micro-batch; readings with ``active[i] == 0`` (model warming up) give 0."""
    levels = np.zeros(raw.shape[0], dtype=np.float64)
    for i in range(raw.shape[0]):
        if active[i]:
            levels[i] = calibrate(cal_mean, cal_var, cal_n, slots[i], raw[i], horizon)
    return levels
